"""Tests of skflow.flows.coupling against hand-computed formulas and autograd."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from skflow.flows import AdditiveCoupling, AffineCoupling, Coupling
from skflow.nn import MLP


class FixedLinear(nn.Linear):
    """A conditioner with known weights, so the layer's output can be computed by hand."""

    def __init__(self, weight: list[list[float]], bias: list[float]) -> None:
        super().__init__(len(weight[0]), len(weight), dtype=torch.float64)
        with torch.no_grad():
            self.weight.copy_(torch.tensor(weight, dtype=torch.float64))
            self.bias.copy_(torch.tensor(bias, dtype=torch.float64))


def test_affine_coupling_matches_its_formula() -> None:
    # d = 3, first feature kept; the conditioner outputs (t1, t2, s1, s2).
    conditioner = FixedLinear([[1.0], [0.0], [0.5], [-0.2]], [0.1, 0.2, 0.0, 0.3])
    layer = AffineCoupling(3, 1, conditioner, scale_bound=3.0)
    x = torch.tensor([[0.7, -1.0, 2.0], [-0.4, 0.5, 0.0]], dtype=torch.float64)
    y, log_abs_det = layer(x)
    a = x[:, :1]
    shift = torch.cat([a * 1.0 + 0.1, a * 0.0 + 0.2], dim=1)
    log_scale = 3.0 * torch.tanh(torch.cat([0.5 * a, -0.2 * a + 0.3], dim=1) / 3.0)
    torch.testing.assert_close(y[:, :1], a)
    torch.testing.assert_close(y[:, 1:], x[:, 1:] * log_scale.exp() + shift)
    torch.testing.assert_close(log_abs_det, log_scale.sum(dim=1))


def test_flip_keeps_the_last_features() -> None:
    torch.manual_seed(0)
    layer = AffineCoupling(5, 2, MLP(2, 6, (8,)), flip=True)
    nn.init.normal_(layer.conditioner[-1].weight)
    x = torch.randn(4, 5)
    y, _ = layer(x)
    torch.testing.assert_close(y[:, 3:], x[:, 3:])
    assert not torch.allclose(y[:, :3], x[:, :3])


def test_zero_initialised_conditioner_starts_as_identity() -> None:
    layer = AffineCoupling(4, 2, MLP(2, 4, (8,), zero_init_last=True))
    x = torch.randn(6, 4)
    y, log_abs_det = layer(x)
    assert torch.equal(y, x) and torch.equal(log_abs_det, torch.zeros(6))


def test_scale_is_bounded_even_for_huge_conditioner_outputs() -> None:
    bound = 2.0
    conditioner = FixedLinear([[0.0], [1e6]], [0.0, 1e6])  # raw log-scale ~ 1e6
    layer = AffineCoupling(2, 1, conditioner, scale_bound=bound)
    x = torch.tensor([[1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    y, log_abs_det = layer(x)
    assert torch.all(log_abs_det.abs() <= bound)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(layer.inverse(y)[0], x)


def test_additive_coupling_is_volume_preserving_shift() -> None:
    conditioner = FixedLinear([[2.0], [-1.0]], [0.5, 0.0])
    layer = AdditiveCoupling(3, 1, conditioner)
    x = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    y, log_abs_det = layer(x)
    torch.testing.assert_close(y, torch.tensor([[1.0, 2.0 + 2.5, 3.0 - 1.0]], dtype=torch.float64))
    assert torch.equal(log_abs_det, torch.zeros(1, dtype=torch.float64))
    jacobian = torch.autograd.functional.jacobian(lambda r: layer(r.unsqueeze(0))[0].squeeze(0), x[0])
    assert torch.linalg.det(jacobian).item() == pytest.approx(1.0)


@pytest.mark.parametrize("n_identity", [0, 3, -1])
def test_invalid_split_raises(n_identity: int) -> None:
    with pytest.raises(ValueError, match="n_identity"):
        AffineCoupling(3, n_identity, nn.Identity())


def test_coupling_needs_an_elementwise_map() -> None:
    with pytest.raises(TypeError, match="ElementwiseMap"):
        Coupling(2, 1, nn.Linear(1, 1), nn.Identity())  # type: ignore[arg-type]


def test_context_conditions_the_map() -> None:
    torch.manual_seed(0)
    n_context = 2
    layer = AffineCoupling(4, 2, MLP(2 + n_context, 4, (8,), "tanh")).double()
    for parameter in layer.parameters():
        nn.init.normal_(parameter, std=0.5)
    x = torch.randn(3, 4, dtype=torch.float64)
    context = torch.randn(3, n_context, dtype=torch.float64)
    y, log_abs_det = layer(x, context)
    assert not torch.allclose(layer(x, context + 1.0)[0], y)
    torch.testing.assert_close(layer.inverse(y, context)[0], x)
    for row in range(3):
        row_context = context[row : row + 1]
        jacobian = torch.autograd.functional.jacobian(
            lambda r, c=row_context: layer(r.unsqueeze(0), c)[0].squeeze(0), x[row]
        )
        assert log_abs_det[row].item() == pytest.approx(torch.linalg.slogdet(jacobian)[1].item(), abs=1e-10)
    assert math.isfinite(log_abs_det.sum().item())
