"""Tests of the rational-quadratic spline and the neural spline layers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.autograd.functional import jacobian
from torch.nn import functional as F

from skflow.flows.autoregressive import MADE
from skflow.flows.splines import (
    MaskedRationalQuadraticAutoregressive,
    RationalQuadraticCoupling,
    rational_quadratic_spline,
    spline_params_per_feature,
)
from skflow.nn import MLP

BOUND = 2.5
N_BINS = 6


def _assert_close(actual: Tensor, expected: Tensor, atol: float) -> None:
    # A plain max-error check: torch.testing's first call costs seconds of imports.
    assert actual.shape == expected.shape
    error = float((actual - expected).detach().abs().max())
    assert error <= atol, f"max abs error {error:.3g} > {atol:g}"


def _raw_params(shape: tuple[int, ...], seed: int = 0, scale: float = 2.0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    widths = scale * torch.randn(*shape, N_BINS, generator=generator, dtype=dtype)
    heights = scale * torch.randn(*shape, N_BINS, generator=generator, dtype=dtype)
    derivatives = scale * torch.randn(*shape, N_BINS - 1, generator=generator, dtype=dtype)
    return widths, heights, derivatives


def _spline(x: Tensor, params, inverse: bool = False) -> tuple[Tensor, Tensor]:
    return rational_quadratic_spline(x, *params, tail_bound=BOUND, inverse=inverse)


def test_strictly_increasing_on_the_whole_line():
    x = torch.linspace(-2 * BOUND, 2 * BOUND, 20001, dtype=torch.float64)
    params = tuple(p.expand(len(x), -1) for p in _raw_params((1,), seed=1, scale=3.0))
    y, log_derivative = _spline(x, params)
    assert torch.all(torch.diff(y) > 0)
    assert torch.all(torch.isfinite(log_derivative))


def test_interpolates_its_knots_with_the_given_slopes():
    # Ground truth built independently from the parameterisation's definition.
    widths, heights, derivatives = _raw_params((1,), seed=2)
    min_size, min_slope = 1e-3, 1e-3
    bin_widths = min_size + (1 - min_size * N_BINS) * torch.softmax(widths[0], -1)
    bin_heights = min_size + (1 - min_size * N_BINS) * torch.softmax(heights[0], -1)
    x_knots = -BOUND + 2 * BOUND * torch.cat([torch.zeros(1, dtype=torch.float64), bin_widths.cumsum(0)])
    y_knots = -BOUND + 2 * BOUND * torch.cat([torch.zeros(1, dtype=torch.float64), bin_heights.cumsum(0)])
    slopes = torch.cat(
        [
            torch.ones(1, dtype=torch.float64),
            min_slope + F.softplus(derivatives[0] + math.log(math.expm1(1 - min_slope))),
            torch.ones(1, dtype=torch.float64),
        ]
    )
    params = tuple(p.expand(N_BINS + 1, -1) for p in (widths, heights, derivatives))
    y, log_derivative = _spline(x_knots, params)
    _assert_close(y, y_knots, 1e-12)
    _assert_close(log_derivative, torch.log(slopes), 1e-9)


def test_inverse_recovers_inputs_in_float64():
    x = torch.cat([torch.linspace(-BOUND, BOUND, 501, dtype=torch.float64), 3 * torch.randn(500, dtype=torch.float64)])
    params = _raw_params((len(x),), seed=3, scale=3.0)
    y, log_derivative = _spline(x, params)
    x_back, inverse_log_derivative = _spline(y, params, inverse=True)
    # Random parameters this wide make slopes as small as 1e-6, where an x
    # error is a y rounding error divided by the slope; 1e-8 is that bound.
    _assert_close(x_back, x, 1e-8)
    # Backward stability: the recovered x maps onto y to rounding accuracy.
    _assert_close(_spline(x_back, params)[0], y, 1e-13)
    _assert_close(inverse_log_derivative, -log_derivative, 1e-8)


@pytest.mark.parametrize("inverse", [False, True])
def test_log_derivative_matches_autograd_and_finite_differences(inverse):
    x = torch.linspace(-BOUND + 1e-3, BOUND - 1e-3, 400, dtype=torch.float64).requires_grad_(True)
    params = _raw_params((len(x),), seed=4)
    y, log_derivative = _spline(x, params, inverse=inverse)
    # Elementwise map: the gradient of the sum is the vector of derivatives.
    (derivative,) = torch.autograd.grad(y.sum(), x)
    _assert_close(log_derivative, torch.log(derivative), 1e-9)
    step = 1e-6
    with torch.no_grad():
        y_plus, _ = _spline(x + step, params, inverse=inverse)
        y_minus, _ = _spline(x - step, params, inverse=inverse)
        finite_difference = (y_plus - y_minus) / (2 * step)
    # Compared as slopes, not logs: the difference quotient's rounding error
    # (~1e-16 / step) is absolute, and the slopes here reach down to ~1e-5.
    _assert_close(torch.exp(log_derivative), finite_difference, 1e-6)


def test_identity_outside_the_bounds_and_slope_one_at_them():
    x = torch.tensor([-1e3, -7.0, -BOUND - 1e-9, BOUND + 1e-9, 4.0, 1e3], dtype=torch.float64)
    params = _raw_params((len(x),), seed=5)
    for inverse in (False, True):
        y, log_derivative = _spline(x, params, inverse=inverse)
        assert torch.equal(y, x)
        assert torch.equal(log_derivative, torch.zeros_like(x))
    # Continuity of value and slope at +-B: the spline meets the identity tails.
    edges = torch.tensor([-BOUND, BOUND], dtype=torch.float64)
    y, log_derivative = _spline(edges, _raw_params((2,), seed=5))
    _assert_close(y, edges, 1e-12)
    _assert_close(log_derivative, torch.zeros(2, dtype=torch.float64), 1e-9)


def test_zero_parameters_give_the_identity():
    x = torch.linspace(-BOUND, BOUND, 101, dtype=torch.float64)
    zeros = (torch.zeros(101, N_BINS, dtype=torch.float64),) * 2 + (torch.zeros(101, N_BINS - 1, dtype=torch.float64),)
    y, log_derivative = _spline(x, zeros)
    _assert_close(y, x, 1e-12)
    _assert_close(log_derivative, torch.zeros_like(x), 1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("inverse", [False, True])
def test_finite_values_and_gradients_far_outside_the_bounds(dtype, inverse):
    x = torch.tensor([-1e6, -1e3, 1e3, 1e6, 0.3], dtype=dtype, requires_grad=True)
    params = tuple(p.requires_grad_(True) for p in _raw_params((5,), seed=6, dtype=dtype))
    y, log_derivative = _spline(x, params, inverse=inverse)
    (y.sum() + log_derivative.sum()).backward()
    assert torch.isfinite(y).all() and torch.isfinite(log_derivative).all()
    assert torch.equal(y[:4].detach(), x[:4].detach())
    assert torch.isfinite(x.grad).all()
    assert torch.equal(x.grad[:4], torch.ones(4, dtype=dtype))
    for parameter in params:
        assert torch.isfinite(parameter.grad).all()
        # Points in the identity tails do not move the spline's parameters.
        assert torch.all(parameter.grad[:4] == 0)


def test_rejects_inconsistent_parameters():
    widths, heights, derivatives = _raw_params((3,))
    with pytest.raises(ValueError, match="K - 1 derivatives"):
        rational_quadratic_spline(torch.zeros(3), widths, heights, derivatives[..., :-1])
    with pytest.raises(ValueError, match="min_bin_width"):
        rational_quadratic_spline(torch.zeros(3), widths, heights, derivatives, min_bin_width=0.2)
    with pytest.raises(ValueError, match="n_bins"):
        RationalQuadraticCoupling(3, 1, MLP(1, 2, (4,)), n_bins=1)
    with pytest.raises(ValueError, match="tail_bound"):
        MaskedRationalQuadraticAutoregressive(MADE(3, spline_params_per_feature(4)), n_bins=4, tail_bound=0.0)


def _spline_layers(n_features: int):
    n_params = spline_params_per_feature(N_BINS)
    kept = n_features // 2
    coupling = RationalQuadraticCoupling(
        n_features, kept, MLP(kept, (n_features - kept) * n_params, (16,), "tanh"), True, N_BINS, BOUND
    )
    autoregressive = MaskedRationalQuadraticAutoregressive(
        MADE(n_features, n_params, (16, 16), "tanh", order=[1, 3, 0, 2]), N_BINS, BOUND
    )
    return {"coupling": coupling, "autoregressive": autoregressive}


@pytest.mark.parametrize("kind", ["coupling", "autoregressive"])
def test_spline_layers_log_det_and_inverse(kind):
    torch.manual_seed(7)
    layer = _spline_layers(4)[kind].double()
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.normal_(0.0, 0.7)
    x = 1.5 * torch.randn(6, 4, dtype=torch.float64)
    y, log_abs_det = layer(x)
    jacobians = torch.stack([jacobian(lambda row: layer(row[None])[0][0], row) for row in x])
    _assert_close(log_abs_det, torch.linalg.slogdet(jacobians)[1], 1e-9)
    x_back, inverse_log_abs_det = layer.inverse(y)
    _assert_close(x_back, x, 1e-10)
    _assert_close(inverse_log_abs_det, -log_abs_det, 1e-9)


@pytest.mark.parametrize("kind", ["coupling", "autoregressive"])
def test_spline_layers_are_finite_far_outside_and_start_as_identity(kind):
    torch.manual_seed(8)
    layer = _spline_layers(4)[kind]
    x = torch.tensor([[1e6, -1e6, 1e3, -0.5], [0.1, 0.2, -1e3, 1e6]], requires_grad=True)
    y, log_abs_det = layer(x)
    (y.sum() + log_abs_det.sum()).backward()
    assert torch.isfinite(y).all() and torch.isfinite(log_abs_det).all()
    assert torch.isfinite(x.grad).all()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is None or torch.isfinite(parameter.grad).all(), name
    # Untrained layers are spline-free: y == x (zero-initialised last layer).
    zero_last = _spline_layers(4)[kind]
    last = zero_last.conditioner[-1] if kind == "coupling" else zero_last.conditioner.network[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    inside = torch.randn(5, 4)
    y, log_abs_det = zero_last(inside)
    _assert_close(y, inside, 1e-5)
    _assert_close(log_abs_det, torch.zeros(5), 1e-5)
