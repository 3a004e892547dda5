"""Tests of the elementwise monotone maps (skflow.flows.elementwise and the
spline map) on their own, and of the settings each validates once for every
structure that uses it.

Ground truth: hand-written formulas and autograd derivatives. The maps inside
the coupling and autoregressive structures go through the layer battery
(tests/flows/test_bijections.py, every combination registered in
tests/registry.py).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from skflow.flows import (
    MADE,
    Additive,
    Affine,
    AffineCoupling,
    Autoregressive,
    Coupling,
    ElementwiseMap,
    Inverted,
    MaskedAffineAutoregressive,
    MaskedRationalQuadraticAutoregressive,
    RationalQuadraticCoupling,
    RationalQuadraticSpline,
)
from skflow.nn import MLP

N_ROWS, N_FEATURES = 7, 3

MAPS = {
    "affine": lambda: Affine(scale_bound=2.0),
    "additive": Additive,
    "spline": lambda: RationalQuadraticSpline(n_bins=5, tail_bound=2.5),
    "inverted_affine": lambda: Inverted(Affine()),
    "inverted_spline": lambda: Inverted(RationalQuadraticSpline(n_bins=4)),
}


def _params(elementwise: ElementwiseMap, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (N_ROWS, elementwise.n_params, N_FEATURES)
    return 1.5 * torch.randn(*shape, generator=generator, dtype=torch.float64)


def _points(seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(N_ROWS, N_FEATURES, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("name", list(MAPS))
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_log_det_is_the_sum_of_autograd_derivatives(name: str, direction: str) -> None:
    elementwise = MAPS[name]()
    apply = getattr(elementwise, direction)
    params = _params(elementwise)
    x = _points().requires_grad_(True)
    y, log_abs_det = apply(x, params)
    assert y.shape == x.shape and log_abs_det.shape == (N_ROWS,)
    # Elementwise: output i depends on input i only, so d(sum y)/dx is the
    # diagonal of the Jacobian; check the zero off-diagonal on one row too.
    (derivative,) = torch.autograd.grad(y.sum(), x)
    assert torch.all(derivative > 0), "the map is not strictly increasing"
    torch.testing.assert_close(log_abs_det, derivative.log().sum(dim=1), rtol=0, atol=1e-9)
    jacobian = torch.autograd.functional.jacobian(lambda row: apply(row[None], params[:1])[0][0], x[0].detach())
    torch.testing.assert_close(jacobian, torch.diag(torch.diagonal(jacobian)), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(MAPS))
def test_inverse_undoes_forward(name: str) -> None:
    elementwise = MAPS[name]()
    params, x = _params(elementwise), _points()
    y, log_abs_det = elementwise(x, params)
    x_back, inverse_log_abs_det = elementwise.inverse(y, params)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(inverse_log_abs_det, -log_abs_det, rtol=0, atol=1e-10)


def test_affine_and_additive_match_their_formulas() -> None:
    params, x = _params(Affine()), _points()
    y, log_abs_det = Affine(scale_bound=2.0)(x, params)
    log_scale = 2.0 * torch.tanh(params[:, 1] / 2.0)
    torch.testing.assert_close(y, x * log_scale.exp() + params[:, 0], rtol=0, atol=1e-12)
    torch.testing.assert_close(log_abs_det, log_scale.sum(dim=1), rtol=0, atol=1e-12)
    shift = _params(Additive())
    y, log_abs_det = Additive()(x, shift)
    torch.testing.assert_close(y, x + shift[:, 0], rtol=0, atol=0)
    assert torch.equal(log_abs_det, torch.zeros(N_ROWS, dtype=torch.float64))


def test_inverted_swaps_the_directions() -> None:
    affine, params, x = Affine(), _params(Affine()), _points()
    inverted = Inverted(affine)
    assert inverted.n_params == affine.n_params
    for got, expected in zip(inverted(x, params), affine.inverse(x, params), strict=True):
        assert torch.equal(got, expected)
    for got, expected in zip(inverted.inverse(x, params), affine(x, params), strict=True):
        assert torch.equal(got, expected)


def test_maps_hold_no_weights() -> None:
    # The weights belong to the conditioner: state_dicts keep their layout.
    for factory in MAPS.values():
        assert not list(factory().state_dict())


@pytest.mark.parametrize("bound", [0.0, -1.0, math.inf, math.nan, True, "3"])
def test_scale_bound_is_validated_once_for_every_structure(bound) -> None:
    with pytest.raises(ValueError, match="scale_bound"):
        Affine(scale_bound=bound)
    # Both structures build the affine map, so both reject the same values.
    with pytest.raises(ValueError, match="scale_bound"):
        AffineCoupling(2, 1, MLP(1, 2, (4,)), scale_bound=bound)
    with pytest.raises(ValueError, match="scale_bound"):
        MaskedAffineAutoregressive(MADE(2, 2), scale_bound=bound)


@pytest.mark.parametrize(
    ("n_bins", "tail_bound", "match"),
    [(1, 3.0, "n_bins"), (2.5, 3.0, "n_bins"), (4, 0.0, "tail_bound"), (4, math.inf, "tail_bound")],
)
def test_spline_settings_are_validated_once_for_every_structure(n_bins, tail_bound, match) -> None:
    with pytest.raises(ValueError, match=match):
        RationalQuadraticSpline(n_bins=n_bins, tail_bound=tail_bound)
    with pytest.raises(ValueError, match=match):
        RationalQuadraticCoupling(3, 1, MLP(1, 22, (4,)), n_bins=n_bins, tail_bound=tail_bound)
    with pytest.raises(ValueError, match=match):
        MaskedRationalQuadraticAutoregressive(MADE(3, 11), n_bins=n_bins, tail_bound=tail_bound)


def test_structures_reject_what_is_not_a_map_or_does_not_fit_it() -> None:
    with pytest.raises(TypeError, match="ElementwiseMap"):
        Coupling(3, 1, nn.Identity(), nn.Identity())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ElementwiseMap"):
        Autoregressive(MADE(3, 2), nn.Identity())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="params_per_feature=11"):
        Autoregressive(MADE(3, 2), RationalQuadraticSpline(n_bins=4))
