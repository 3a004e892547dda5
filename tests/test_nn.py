"""Tests of skflow.nn: the conditioner MLP and activation lookup."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from torch import nn

from skflow.nn import ACTIVATIONS, MLP, Tanh, resolve_activation, tanh


def test_mlp_shapes_and_layers() -> None:
    net = MLP(3, 5, (7, 11), "silu")
    assert net(torch.randn(4, 3)).shape == (4, 5)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3, 7), (7, 11), (11, 5)]
    assert sum(isinstance(m, nn.SiLU) for m in net) == 2


def test_mlp_without_hidden_layers_is_linear() -> None:
    net = MLP(2, 3, ())
    assert len(net) == 1 and isinstance(net[0], nn.Linear)


def test_zero_init_last_outputs_zeros() -> None:
    net = MLP(3, 4, (8,), zero_init_last=True)
    assert torch.equal(net(torch.randn(5, 3)), torch.zeros(5, 4))
    # ... while the hidden layers are not zero, so gradients can flow.
    assert net[0].weight.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_names_resolve_and_pickle(name: str) -> None:
    assert resolve_activation(name) is ACTIVATIONS[name]
    net = MLP(2, 2, (4,), name)
    x = torch.randn(3, 2)
    torch.testing.assert_close(pickle.loads(pickle.dumps(net))(x), net(x))


def test_activation_class_is_accepted() -> None:
    assert resolve_activation(nn.Hardtanh) is nn.Hardtanh


@pytest.mark.parametrize("bad", ["relu6x", 3, nn.ReLU(), lambda x: x])
def test_unknown_activation_raises(bad) -> None:
    with pytest.raises(ValueError, match="activation|Unknown"):
        resolve_activation(bad)


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 3e-7), (torch.float64, 1e-15)])
def test_fast_tanh_matches_the_exact_function(dtype, atol) -> None:
    # Ground truth: tanh in float64 from its definition through exp, away from
    # cancellation (|x| >= 0.5), and math.tanh's value near zero.
    x = torch.cat(
        [torch.linspace(-30, 30, 200_001, dtype=dtype), torch.tensor([0.0, 1e-30, -1e-8, 80.0, -80.0], dtype=dtype)]
    )
    with torch.no_grad():
        fast = tanh(x)
    wide = x.double()
    truth = torch.where(
        wide.abs() >= 0.5,
        torch.sign(wide) * (1 - 2 / (torch.exp(2 * wide.abs()) + 1)),
        torch.tensor([math.tanh(v) for v in wide.tolist()], dtype=torch.float64),
    )
    assert fast.dtype == dtype and fast.shape == x.shape
    assert (fast.double() - truth).abs().max().item() <= atol
    assert fast.abs().max().item() <= 1.0
    assert torch.isnan(tanh(torch.tensor([math.nan]))).all()
    assert torch.equal(tanh(torch.tensor([math.inf, -math.inf])), torch.tensor([1.0, -1.0]))


def test_fast_tanh_keeps_torch_tanh_where_autograd_records() -> None:
    # With a recorded graph the result must be torch.tanh's own (its
    # gradient, and second derivatives for continuous flows, come with it).
    x = torch.randn(64, 8, dtype=torch.float64, requires_grad=True)
    y = Tanh()(x)
    assert torch.equal(y, torch.tanh(x))
    (grad,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    torch.testing.assert_close(grad, 1 - torch.tanh(x) ** 2, rtol=0, atol=1e-14)
    with torch.no_grad():
        torch.testing.assert_close(Tanh()(x), torch.tanh(x), rtol=0, atol=1e-15)
    assert isinstance(MLP(2, 2, (4,), "tanh")[1], Tanh)
