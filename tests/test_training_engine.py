"""Tests of the training engine's fast paths (skflow/training.py).

The engine skips redundant ``Module.train()`` calls, snapshots the best
weights with tensor clones and uses torch's fused AdamW kernel. Each shortcut
must leave behaviour unchanged: modes seen by the model, the weights restored
and the optimiser's update.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from skflow.training import _BestWeights, fused_optimizer_supported, train_model
from tests.helpers import DensityOnlyModel


class _ModeRecordingGaussian(DensityOnlyModel):
    """Unit-variance Gaussian with a learnable mean that records the modes it runs in."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(n_features))
        self.child = nn.Identity()  # a submodule, whose mode must follow the parent's
        self.loss_modes: list[tuple[bool, bool]] = []
        self.log_prob_modes: list[tuple[bool, bool]] = []

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        self.log_prob_modes.append((self.training, self.child.training))
        z = self.child(x) - self.mean
        return -0.5 * (z.pow(2).sum(dim=1) + x.shape[1] * math.log(2 * math.pi))

    def loss(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        self.loss_modes.append((self.training, self.child.training))
        z = self.child(x) - self.mean
        return 0.5 * (z.pow(2).sum(dim=1) + x.shape[1] * math.log(2 * math.pi))


def test_model_trains_in_train_mode_and_validates_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = _ModeRecordingGaussian(2)
    rows = torch.randn(200, 2) + 3.0
    train_model(model, rows, max_epochs=3, batch_size=50, lr=0.1, validation_fraction=0.2, patience=None)
    # Every epoch alternates training and validation: both switches must happen.
    assert model.loss_modes and all(modes == (True, True) for modes in model.loss_modes)
    assert model.log_prob_modes and all(modes == (False, False) for modes in model.log_prob_modes)
    assert not model.training and not model.child.training
    # And the model learned: the mean moved towards the data's mean of 3.
    assert torch.all(model.mean > 0.5)


class _ValidatesOnItsOwnScore(DensityOnlyModel):
    """Trains on a Gaussian NLL but declares a different, constant validation score."""

    def __init__(self) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(2))

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return -0.5 * (x - self.mean).pow(2).sum(dim=1)

    def validation_log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return x.new_full((x.shape[0],), -7.25) + 0.0 * self.mean.sum()


def test_engine_validates_with_the_models_validation_log_prob() -> None:
    torch.manual_seed(0)
    result = train_model(
        _ValidatesOnItsOwnScore(), torch.randn(100, 2), max_epochs=3, batch_size=20, lr=0.1, validation_fraction=0.2
    )
    assert [row["valid_loss"] for row in result.history] == [7.25, 7.25, 7.25]
    assert all(row["train_loss"] != 7.25 for row in result.history)


def test_engine_refuses_a_module_that_is_not_a_flow_model() -> None:
    class LooksLikeAFlow(nn.Module):
        def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
            return -x.pow(2).sum(dim=1)

        def loss(self, x: Tensor, context: Tensor | None = None) -> Tensor:
            return x.pow(2).sum(dim=1)

    with pytest.raises(TypeError, match="FlowModel"):
        train_model(LooksLikeAFlow(), torch.randn(10, 2), max_epochs=1, batch_size=5, lr=0.1)


class _FakeNet:
    """The two attributes of a skorch net that _BestWeights reads."""

    def __init__(self, module: nn.Module, losses: list[float]) -> None:
        self.module_ = module
        self.history = _FakeHistory(losses)


class _FakeHistory(list):
    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        if isinstance(key, tuple):
            index, name = key
            return list.__getitem__(self, index)[name]
        return list.__getitem__(self, key)


def test_best_weights_snapshot_is_a_copy_and_restores_the_best_epoch() -> None:
    module = nn.Linear(3, 2)
    callback = _BestWeights("train_loss").initialize()
    net = _FakeNet(module, [{"train_loss": 1.0}])
    callback.on_epoch_end(net)
    best = {name: value.clone() for name, value in module.state_dict().items()}
    # Later, worse epoch with different weights: the snapshot must not follow them.
    with torch.no_grad():
        module.weight.add_(1.0)
    net.history.append({"train_loss": 2.0})
    callback.on_epoch_end(net)
    assert callback.best_epoch_ == 1
    callback.restore(module)
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, best[name], rtol=0, atol=0)


def test_fused_adamw_matches_the_reference_update() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    assert fused_optimizer_supported(model, "cpu")
    reference = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    reference.load_state_dict(model.state_dict())
    fused = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1, fused=True)
    plain = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.1, foreach=False)
    x = torch.randn(32, 4)
    for _ in range(5):
        for network, optimizer in ((model, fused), (reference, plain)):
            optimizer.zero_grad()
            network(x).pow(2).mean().backward()
            optimizer.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fused_optimizer_not_used_without_floating_parameters() -> None:
    assert not fused_optimizer_supported(nn.Identity(), "cpu")
