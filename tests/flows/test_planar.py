"""PlanarFlow: constraint, exact inverse by root solve, log-dets and implicit gradients.

Ground truth: the planar map itself (the cheap direction), autograd Jacobians
with ``slogdet`` in float64, and finite differences (``gradcheck``) for the
gradients through the root solve.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian
from torch.func import functional_call

from skflow.flows import Chain, InversePlanarFlow, PlanarFlow
from skflow.flows.planar import solve_planar_equation


def _layer(n_features: int, preactivation: float, seed: int = 0, dtype: torch.dtype = torch.float64) -> PlanarFlow:
    """A layer with random ``w``, ``b`` and ``w^T u`` set to ``preactivation``.

    ``w^T u_hat = softplus(preactivation) - 1``: -5 gives -0.993 (nearly
    degenerate), 0 gives -0.31, 4 gives 3.0.
    """
    torch.manual_seed(seed)
    layer = PlanarFlow(n_features).to(dtype)
    with torch.no_grad():
        weight = torch.randn(n_features, dtype=dtype)
        direction = torch.randn(n_features, dtype=dtype)
        direction += (preactivation - weight @ direction) / (weight @ weight) * weight
        layer.weight.copy_(weight)
        layer.raw_direction.copy_(direction)
        layer.bias.copy_(torch.randn((), dtype=dtype))
    return layer


def _coefficient(layer: PlanarFlow) -> float:
    return float((layer.weight @ layer.direction()).detach())


PREACTIVATIONS = [-5.0, -1.0, 0.0, 4.0]


@pytest.mark.parametrize("preactivation", [-700.0, -40.0, -5.0, 0.0, 3.0, 60.0])
@pytest.mark.parametrize("seed", range(3))
def test_direction_satisfies_the_invertibility_constraint(preactivation, seed):
    layer = _layer(4, preactivation, seed)
    raw_coefficient = float((layer.weight @ layer.raw_direction).detach())
    assert raw_coefficient == pytest.approx(preactivation)
    # u_hat^T w = -1 + softplus(w^T u) >= -1, up to the rounding of one dot product.
    assert _coefficient(layer) >= -1.0 - 1e-12
    assert _coefficient(layer) == pytest.approx(-1.0 + math.log1p(math.exp(min(preactivation, 700.0))), abs=1e-9)


def test_constraint_only_moves_u_along_w():
    layer = _layer(5, -8.0)
    weight = layer.weight.detach()
    change = (layer.direction() - layer.raw_direction).detach()
    # The change is parallel to w: its component orthogonal to w vanishes.
    orthogonal = change - (change @ weight) / (weight @ weight) * weight
    assert orthogonal.abs().max() < 1e-12


def test_zero_weight_is_a_translation_not_a_division_by_zero():
    layer = _layer(3, 0.0)
    with torch.no_grad():
        layer.weight.zero_()
    x = torch.randn(6, 3, dtype=torch.float64)
    z, log_abs_det = layer(x)
    expected = x - torch.tanh(layer.bias) * layer.raw_direction
    torch.testing.assert_close(z, expected.detach(), rtol=0, atol=1e-14)
    assert torch.equal(log_abs_det, torch.zeros(6, dtype=torch.float64))


@pytest.mark.parametrize("preactivation", PREACTIVATIONS)
@pytest.mark.parametrize("scale", [1.0, 100.0])
@pytest.mark.parametrize("n_features", [1, 2, 5])
def test_forward_inverts_the_planar_map(preactivation, scale, n_features):
    layer = _layer(n_features, preactivation, seed=n_features)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        # Data far from anything seen: both x -> z -> x and z -> x -> z.
        x = scale * torch.randn(500, n_features, generator=generator, dtype=torch.float64)
        z, _ = layer(x)
        x_again, _ = layer.inverse(z)
        z_again, _ = layer(layer.inverse(x)[0])
    assert (x_again - x).abs().max() < 1e-6 * scale
    assert (z_again - x).abs().max() < 1e-6 * scale


def test_inverse_is_the_planar_map():
    layer = _layer(3, 1.5)
    z = torch.randn(7, 3, dtype=torch.float64)
    u_hat, w, b = layer.direction(), layer.weight, layer.bias
    expected = z + torch.tanh(z @ w + b)[:, None] * u_hat
    torch.testing.assert_close(layer.inverse(z)[0], expected, rtol=0, atol=1e-14)


def _autograd_log_abs_det(function, points: torch.Tensor) -> torch.Tensor:
    values = []
    for point in points:
        matrix = jacobian(lambda row: function(row.unsqueeze(0))[0].squeeze(0), point)
        values.append(torch.linalg.slogdet(matrix).logabsdet)
    return torch.stack(values)


@pytest.mark.parametrize("preactivation", PREACTIVATIONS)
@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_log_dets_match_autograd_jacobians(preactivation, scale):
    layer = _layer(3, preactivation, seed=4)
    points = scale * torch.randn(6, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    # Points near the hyperplane w^T z + b = 0, where the map bends the most.
    weight = layer.weight.detach()
    points[:3] -= ((points[:3] @ weight + layer.bias.detach()) / (weight @ weight))[:, None] * weight
    with torch.no_grad():
        forward_log_det = layer(points)[1]
        inverse_log_det = layer.inverse(points)[1]
    torch.testing.assert_close(forward_log_det, _autograd_log_abs_det(layer, points), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(inverse_log_det, _autograd_log_abs_det(layer.inverse, points), rtol=1e-9, atol=1e-9)


def test_chain_log_det_matches_autograd_and_round_trips():
    chain = Chain([_layer(2, preactivation, seed=index) for index, preactivation in enumerate([-4.0, 2.0, 0.5, -1.0])])
    points = 3 * torch.randn(8, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        latent, log_det = chain(points)
        recovered, inverse_log_det = chain.inverse(latent)
    torch.testing.assert_close(log_det, _autograd_log_abs_det(chain, points), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(recovered, points, rtol=0, atol=1e-10)
    torch.testing.assert_close(inverse_log_det, -log_det, rtol=0, atol=1e-10)


@pytest.mark.parametrize("preactivation", [-3.0, 0.0, 2.0])
def test_gradients_through_the_root_solve(preactivation):
    layer = _layer(3, preactivation, seed=5)
    names = ("weight", "raw_direction", "bias")
    parameters = tuple(getattr(layer, name).detach().clone().requires_grad_(True) for name in names)
    x = (2 * torch.randn(5, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)).requires_grad_(True)

    def forward(inputs, *values):
        return functional_call(layer, dict(zip(names, values)), (inputs,))

    # Finite differences re-run the whole solve, so they are independent ground truth.
    assert torch.autograd.gradcheck(forward, (x, *parameters), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_solver_reaches_machine_precision_inside_the_bracket():
    targets = torch.cat([torch.linspace(-50, 50, 201), torch.tensor([1e6, -1e6, 0.0])]).double()
    for one_plus_coefficient in [1e-12, 1e-6, 0.02, 0.7, 1.0, 5.0, 50.0, 1e4]:
        coefficient = one_plus_coefficient - 1.0
        bias = torch.tensor(0.3, dtype=torch.float64)
        root = solve_planar_equation(targets, torch.tensor(one_plus_coefficient, dtype=torch.float64), bias)
        residual = root + coefficient * torch.tanh(root + bias) - targets
        assert (residual.abs() <= 8 * np.finfo(np.float64).eps * targets.abs().clamp_min(1 + abs(coefficient))).all()
        assert ((root - targets).abs() <= abs(coefficient) + 1e-9).all()


@pytest.mark.parametrize("one_plus_coefficient", [1e-6, 5.0, 50.0, 1e4])
def test_solver_converges_quickly_where_plain_newton_oscillates(one_plus_coefficient):
    """On a steep tanh (large w^T u_hat) undamped Newton bounces between the flat arms."""
    targets = torch.linspace(-60, 60, 1201, dtype=torch.float64)
    arguments = (
        targets,
        torch.tensor(one_plus_coefficient, dtype=torch.float64),
        torch.tensor(-0.7, dtype=torch.float64),
    )
    torch.testing.assert_close(
        solve_planar_equation(*arguments, max_iter=30), solve_planar_equation(*arguments), rtol=0, atol=1e-12
    )


def test_solver_propagates_non_finite_targets_without_looping_forever():
    targets = torch.tensor([float("nan"), float("inf"), 1.0], dtype=torch.float64)
    root = solve_planar_equation(
        targets, torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    )
    assert torch.isnan(root[0]) and not torch.isfinite(root[1]) and torch.isfinite(root[2])


def test_float32_round_trip_far_from_the_data():
    layer = _layer(2, -2.0, dtype=torch.float32)
    x = 100 * torch.randn(300, 2, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        z, log_det = layer(x)
        x_again, inverse_log_det = layer.inverse(z)
    assert (x_again - x).abs().max() < 1e-5 * 100
    assert (log_det + inverse_log_det).abs().max() < 1e-5


def test_every_parameter_gets_a_gradient_through_the_forward_direction():
    layer = _layer(3, 0.5)
    x = torch.randn(16, 3, dtype=torch.float64)
    z, log_abs_det = layer(x)
    (z.pow(2).sum() - log_abs_det.sum()).backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_initialisation_is_a_near_identity_shear():
    torch.manual_seed(0)
    layer = PlanarFlow(4)
    assert abs(_coefficient(layer)) < 1e-6
    x = torch.randn(32, 4)
    z, log_abs_det = layer(x)
    assert log_abs_det.abs().max() < 1e-5
    assert (z - x).abs().max() < 0.1


@pytest.mark.parametrize("shape", [(5,), (5, 2), (5, 4)])
def test_wrong_shape_raises(shape):
    layer = PlanarFlow(3)
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        layer(torch.zeros(shape))
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        layer.inverse(torch.zeros(shape))


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="n_features"):
        PlanarFlow(0)
    with pytest.raises(ValueError, match="max_iter"):
        PlanarFlow(2, max_iter=0)


def test_log_det_is_accurate_at_the_bend_of_a_nearly_degenerate_layer():
    """At w^T z + b = 0 the slope is 1 + w^T u_hat = softplus(w^T u), here ~e^-30.

    Computed naively as 1 + c with c = -1 + 9.4e-14 it loses about three
    digits to cancellation; the layer must not.
    """
    layer = _layer(2, -30.0)
    weight, bias = layer.weight.detach(), layer.bias.detach()
    on_bend = torch.tensor([[0.3, -1.1]], dtype=torch.float64)
    on_bend -= ((on_bend @ weight + bias) / (weight @ weight))[:, None] * weight
    expected = math.log(math.log1p(math.exp(-30.0)))
    with torch.no_grad():
        _, inverse_log_det = layer.inverse(on_bend)
        _, forward_log_det = layer(layer.inverse(on_bend)[0])
    assert inverse_log_det.item() == pytest.approx(expected, abs=1e-9)
    assert forward_log_det.item() == pytest.approx(-expected, abs=1e-6)


def test_inverse_planar_flow_is_the_same_layer_swapped():
    layer = _layer(3, 2.0)
    swapped = InversePlanarFlow(3).double()
    swapped.load_state_dict(layer.state_dict())
    points = 5 * torch.randn(9, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    for produced, expected in zip(swapped(points), layer.inverse(points)):
        torch.testing.assert_close(produced, expected, rtol=0, atol=0)
    for produced, expected in zip(swapped.inverse(points), layer(points)):
        torch.testing.assert_close(produced, expected, rtol=0, atol=0)
