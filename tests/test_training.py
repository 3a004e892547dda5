"""Tests of the training engine (skflow.training) on toy models whose
optimum and failure modes are known in advance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from skorch.dataset import Dataset
from torch import nn

from skflow.flows import ActNorm, Chain, ExactFlow, StandardNormal
from skflow.training import TensorBatches, TrainingDivergedError, gaussian_reference_loss, train_model
from tests.helpers import DensityOnlyModel, RecordLearningRates


def _gaussian_rows(n: int = 200, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 2.0 + 0.5 * torch.randn(n, 2, generator=generator)


class PoisonAfter(DensityOnlyModel):
    """A Gaussian location model whose training loss becomes NaN after ``n_calls`` training calls."""

    def __init__(self, n_calls: int) -> None:
        super().__init__()
        self.location = nn.Parameter(torch.zeros(2))
        self.n_calls = n_calls
        self.calls = 0

    def log_prob(self, x, context=None):
        return -0.5 * (x - self.location).pow(2).sum(dim=1) - math.log(2 * math.pi)

    def loss(self, x, context=None):
        self.calls += 1
        loss = -self.log_prob(x)
        return loss * float("nan") if self.calls > self.n_calls else loss


class RecordInputs(PoisonAfter):
    """Records what the engine feeds to ``loss`` and ``log_prob``."""

    def __init__(self) -> None:
        super().__init__(n_calls=10**9)
        self.train_inputs: list[torch.Tensor] = []
        self.eval_inputs: list[torch.Tensor] = []

    def loss(self, x, context=None):
        self.train_inputs.append(x.detach().clone())
        return super().loss(x)

    def log_prob(self, x, context=None):
        if not self.training:
            self.eval_inputs.append(x.detach().clone())
        return super().log_prob(x)


def test_gaussian_location_converges_to_sample_mean() -> None:
    rows = _gaussian_rows()
    model = PoisonAfter(n_calls=10**9)
    result = train_model(model, rows, max_epochs=60, batch_size=50, lr=0.1, validation_fraction=None, patience=None)
    # The maximum-likelihood location of a unit-variance Gaussian is the sample mean.
    torch.testing.assert_close(model.location.detach(), rows.mean(dim=0), rtol=0, atol=0.05)
    assert result.n_epochs == 60 and len(result.history) == 60 and not result.diverged
    assert not model.training, "the engine must hand back the model in evaluation mode"


def test_nan_in_first_epoch_raises_training_diverged() -> None:
    with pytest.raises(TrainingDivergedError, match="diverged"):
        train_model(PoisonAfter(n_calls=1), _gaussian_rows(), max_epochs=5, batch_size=50, lr=0.1)


def test_nan_later_restores_best_weights_with_a_warning() -> None:
    model = PoisonAfter(n_calls=4 * 3)  # 4 batches per epoch: NaN in epoch 4
    with pytest.warns(RuntimeWarning, match="restored the weights of epoch"):
        result = train_model(
            model, _gaussian_rows(), max_epochs=10, batch_size=50, lr=0.1, validation_fraction=None, patience=None
        )
    assert result.diverged and result.n_epochs == 4 and 1 <= result.best_epoch <= 3
    assert torch.isfinite(model.location).all()


class NoisyObjective(PoisonAfter):
    """A loss whose epoch means jump: 100 higher in odd epochs (4 batches per epoch)."""

    def loss(self, x, context=None):
        epoch = self.calls // 4 + 1
        return super().loss(x) + (100.0 if epoch % 2 == 1 else 0.0)


class FinalWeights(Callback):
    def on_train_end(self, net, **kwargs):
        self.location = net.module_.location.detach().clone()


def test_without_validation_the_last_weights_are_kept() -> None:
    model, final = NoisyObjective(n_calls=10**9), FinalWeights()
    result = train_model(
        model, _gaussian_rows(), max_epochs=5, batch_size=50, lr=0.1, validation_fraction=None, callbacks=[final]
    )
    train = [row["train_loss"] for row in result.history]
    assert int(np.argmin(train)) + 1 == 4, "the lowest training loss must fall before the last epoch"
    assert result.best_epoch == result.n_epochs == 5
    torch.testing.assert_close(model.location.detach(), final.location, rtol=0, atol=0)


def test_early_stopping_and_best_epoch() -> None:
    model = ExactFlow(Chain([ActNorm(2)]), StandardNormal(2))
    rows = _gaussian_rows(400)
    result = train_model(model, rows, max_epochs=200, batch_size=400, lr=1e-3, validation_fraction=0.25, patience=3)
    valid = [row["valid_loss"] for row in result.history]
    assert result.n_epochs < 200, "ActNorm starts at the optimum, so patience must stop training early"
    assert result.best_epoch == int(np.argmin(valid)) + 1
    # The last `patience` epochs improved on the earlier best by less than the threshold.
    assert min(valid[-3:]) > min(valid[:-3]) - 1e-4


class ConstantLoss(PoisonAfter):
    """A model whose loss never changes: early stopping must fire after exactly ``patience`` epochs."""

    def __init__(self, value: float) -> None:
        super().__init__(n_calls=10**9)
        self.value = value

    def log_prob(self, x, context=None):
        return -self.value + 0.0 * self.location.sum() + x.new_zeros(x.shape[0])


@pytest.mark.parametrize("value", [5.0, -5.0])
def test_early_stopping_fires_for_positive_and_negative_losses(value: float) -> None:
    # Densities can exceed 1, so negative NLLs are ordinary; stopping must not depend on the sign.
    result = train_model(
        ConstantLoss(value), _gaussian_rows(), max_epochs=30, batch_size=50, lr=0.1, validation_fraction=0.2, patience=4
    )
    assert result.n_epochs == 1 + 4 and result.best_epoch == 1


class CountEpochs(Callback):
    def initialize(self):
        self.epochs = 0
        return self

    def on_epoch_end(self, net, **kwargs):
        self.epochs += 1


def test_user_callbacks_are_called() -> None:
    counter = CountEpochs()
    train_model(PoisonAfter(10**9), _gaussian_rows(), max_epochs=4, batch_size=50, lr=0.1, callbacks=[counter])
    assert counter.epochs == 4


def _rates_under(schedule: str, epochs: int, lr: float) -> list[float]:
    """The learning rate at the start of each epoch of a fit under ``schedule``."""
    recorder = RecordLearningRates()
    train_model(
        PoisonAfter(10**9),
        _gaussian_rows(),
        max_epochs=epochs,
        batch_size=50,
        lr=lr,
        patience=None,
        callbacks=[recorder],
        lr_schedule=schedule,
    )
    return recorder.rates


def test_cosine_schedule_decays_the_learning_rate_each_epoch() -> None:
    epochs, lr = 6, 0.05
    rates = _rates_under("cosine", epochs, lr)
    expected = [lr * (1 + math.cos(math.pi * epoch / epochs)) / 2 for epoch in range(epochs)]
    np.testing.assert_allclose(rates, expected, rtol=1e-12)
    assert rates[-1] < 0.1 * lr
    # The default keeps the rate; one epoch (partial_fit) trains at lr; a typo is refused.
    assert _rates_under("constant", 3, lr) == [lr] * 3
    assert _rates_under("cosine", 1, lr) == [lr]
    with pytest.raises(ValueError, match="lr_schedule"):
        train_model(PoisonAfter(10**9), _gaussian_rows(), max_epochs=2, batch_size=50, lr=lr, lr_schedule="linear")


def test_jitter_only_in_training_and_within_half_width() -> None:
    rows = torch.round(_gaussian_rows(100) * 4)  # integer valued
    model = RecordInputs()
    jitter = torch.tensor([1.0, 0.0])
    train_model(model, rows, max_epochs=2, batch_size=100, lr=1e-3, validation_fraction=0.2, jitter=jitter)
    train_batch = torch.cat(model.train_inputs)
    offsets = train_batch - torch.round(train_batch)
    assert offsets[:, 0].abs().max() <= 0.5 and offsets[:, 0].abs().max() > 0.1
    assert torch.equal(offsets[:, 1], torch.zeros(len(offsets))), "a zero width must leave the feature alone"
    valid_batch = torch.cat(model.eval_inputs)
    assert torch.equal(valid_batch, torch.round(valid_batch)), "validation rows must stay at the bin centres"


def test_noise_only_in_training_with_the_requested_spread() -> None:
    rows = torch.zeros(400, 2)
    model = RecordInputs()
    train_model(model, rows, max_epochs=2, batch_size=400, lr=1e-3, validation_fraction=0.2, noise_std=0.5)
    train_batch = torch.cat(model.train_inputs)
    assert abs(train_batch.std().item() - 0.5) < 0.03 and abs(train_batch.mean().item()) < 0.03
    assert (torch.cat(model.eval_inputs) == 0).all(), "validation rows must stay noiseless"


@pytest.mark.parametrize("shuffle", [False, True])
def test_tensor_batches_cover_every_row_once(shuffle: bool) -> None:
    rows = torch.arange(23.0).unsqueeze(1)
    batches = TensorBatches(Dataset(rows, None), batch_size=5, shuffle=shuffle)
    seen = torch.cat([batch for batch, _ in batches])
    assert len(batches) == 5 and sorted(seen.squeeze(1).tolist()) == list(range(23))
    # A Subset (skorch's validation split) yields exactly its own rows.
    subset = torch.utils.data.Subset(Dataset(rows, None), [3, 7, 20])
    seen = torch.cat([batch for batch, _ in TensorBatches(subset, batch_size=2, shuffle=shuffle)])
    assert sorted(seen.squeeze(1).tolist()) == [3.0, 7.0, 20.0]


def test_verbose_zero_prints_nothing_one_a_report_and_two_skorchs_table(capsys) -> None:
    train_model(PoisonAfter(10**9), _gaussian_rows(), max_epochs=2, batch_size=50, lr=0.1, verbose=0)
    assert capsys.readouterr().out == ""
    train_model(PoisonAfter(10**9), _gaussian_rows(), max_epochs=2, batch_size=50, lr=0.1, verbose=1)
    assert "ran all 2 epochs" in capsys.readouterr().out
    train_model(PoisonAfter(10**9), _gaussian_rows(), max_epochs=2, batch_size=50, lr=0.1, verbose=2)
    assert "train_loss" in capsys.readouterr().out


class ExplodeAfter(PoisonAfter):
    """Like PoisonAfter, but the loss becomes huge and finite (x 1e25) instead of NaN."""

    def loss(self, x, context=None):
        self.calls += 1
        loss = -self.log_prob(x)
        return loss * 1e25 if self.calls > self.n_calls else loss


class HeldOutExplodesAfter(PoisonAfter):
    """Training loss stays sane; the held-out log-likelihood collapses after ``n_calls`` evaluations."""

    def __init__(self, n_evaluations: int) -> None:
        super().__init__(n_calls=10**9)
        self.n_evaluations = n_evaluations
        self.evaluations = 0

    def log_prob(self, x, context=None):
        log_prob = super().log_prob(x)
        if not self.training:
            self.evaluations += 1
            if self.evaluations > self.n_evaluations:
                return log_prob - 1e6
        return log_prob


@pytest.mark.parametrize("validation_fraction", [None, 0.2])
def test_a_finite_explosion_later_restores_best_weights_with_a_warning(validation_fraction) -> None:
    model = ExplodeAfter(n_calls=4 * 3)  # 4 batches of 50 training rows per epoch: explodes in epoch 4
    with pytest.warns(RuntimeWarning, match=r"diverged in epoch 4 \(training loss .* above the bound"):
        result = train_model(
            model,
            _gaussian_rows(200 if validation_fraction is None else 250),
            max_epochs=10,
            batch_size=50,
            lr=0.1,
            validation_fraction=validation_fraction,
            patience=None,
        )
    assert result.diverged and result.n_epochs == 4 and 1 <= result.best_epoch <= 3
    assert result.history[-1]["train_loss"] > 1e20 and math.isfinite(result.history[-1]["train_loss"])


def test_a_collapsing_held_out_likelihood_counts_as_divergence() -> None:
    model = HeldOutExplodesAfter(n_evaluations=2)  # one validation batch per epoch: collapses in epoch 3
    with pytest.warns(RuntimeWarning, match=r"diverged in epoch 3 \(held-out loss .* above the bound"):
        result = train_model(
            model, _gaussian_rows(), max_epochs=10, batch_size=200, lr=0.1, validation_fraction=0.2, patience=None
        )
    assert result.diverged and result.best_epoch in (1, 2)


def test_a_finite_explosion_in_the_first_epoch_raises() -> None:
    with pytest.raises(TrainingDivergedError, match=r"diverged \(training loss .* above the bound"):
        train_model(ExplodeAfter(n_calls=1), _gaussian_rows(), max_epochs=5, batch_size=50, lr=0.1)


def test_the_explosion_bound_is_far_above_any_fit() -> None:
    # A standard normal's loss on the rows is the reference: a model that
    # starts there and improves never comes near the bound.
    rows = _gaussian_rows(400)
    expected = float(np.mean(0.5 * (rows.double() ** 2).sum(dim=1).numpy() + math.log(2 * math.pi)))
    assert gaussian_reference_loss(rows) == pytest.approx(expected, rel=1e-12)
    result = train_model(
        PoisonAfter(n_calls=10**9), rows, max_epochs=30, batch_size=50, lr=0.1, validation_fraction=0.2, patience=None
    )
    assert not result.diverged and result.n_epochs == 30
