"""Tests of skflow.nn: the conditioner MLP and activation lookup."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from skflow.nn import ACTIVATIONS, MLP, resolve_activation


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
