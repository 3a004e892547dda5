"""Tests of MADE and the autoregressive (MAF / IAF) layers against autograd."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.autograd.functional import jacobian

from skflow.flows.autoregressive import MADE, InverseAutoregressive, MaskedAffineAutoregressive
from skflow.flows.core import Bijection


def _randomise(module: torch.nn.Module, std: float = 0.5) -> torch.nn.Module:
    """Random float64 weights, so no layer is tested at its zero initialisation."""
    module = module.double()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, std)
    return module


def _assert_close(actual: Tensor, expected: Tensor, atol: float) -> None:
    # A plain max-error check: torch.testing's first call costs seconds of imports.
    assert actual.shape == expected.shape
    error = float((actual - expected).detach().abs().max())
    assert error <= atol, f"max abs error {error:.3g} > {atol:g}"


def _made_jacobian(made: MADE, x: Tensor) -> Tensor:
    """d params[p, i] / d x[j] at one point, shape (P, d, d)."""
    return jacobian(lambda row: made(row[None])[0], x)


@pytest.mark.parametrize(
    ("order", "hidden_dims"),
    [(None, (12, 12)), ([2, 0, 4, 1, 3], (8, 9, 7)), ([4, 3, 2, 1, 0], (16,)), ([1, 3, 0, 2, 4], ())],
)
def test_made_jacobian_is_strictly_triangular_under_the_order(order, hidden_dims):
    torch.manual_seed(0)
    n_features, params_per_feature = 5, 3
    made = _randomise(MADE(n_features, params_per_feature, hidden_dims, "tanh", order=order))
    order_list = list(range(n_features)) if order is None else order
    rank = {feature: position for position, feature in enumerate(order_list)}
    for x in torch.randn(3, n_features, dtype=torch.float64):
        jac = _made_jacobian(made, x)
        assert jac.shape == (params_per_feature, n_features, n_features)
        for i in range(n_features):
            for j in range(n_features):
                entries = jac[:, i, j].abs()
                if rank[j] >= rank[i]:
                    # Not even a rounding-level dependency may exist.
                    assert torch.all(entries == 0), (i, j)
                else:
                    # Hidden widths >= d - 1: every allowed dependency is wired.
                    assert torch.all(entries > 1e-8), (i, j)


def test_made_with_one_feature_has_constant_outputs():
    made = _randomise(MADE(1, 2, (8, 8), "tanh"))
    jac = _made_jacobian(made, torch.randn(1, dtype=torch.float64))
    assert torch.all(jac == 0)


def test_made_context_reaches_every_output():
    torch.manual_seed(1)
    made = _randomise(MADE(3, 2, (10, 10), "tanh", n_context=2))
    x = torch.randn(1, 3, dtype=torch.float64)
    context = torch.randn(1, 2, dtype=torch.float64)
    jac = jacobian(lambda c: made(x, c[None])[0], context[0])
    assert torch.all(jac.abs() > 1e-8)
    with pytest.raises(ValueError, match="context"):
        made(x)


@pytest.mark.parametrize("order", [[0, 0, 1], [0, 1], [0, 1, 3]])
def test_made_rejects_an_order_that_is_not_a_permutation(order):
    with pytest.raises(ValueError, match="permutation"):
        MADE(3, 2, order=order)


def test_layer_rejects_a_conditioner_with_the_wrong_output_count():
    with pytest.raises(ValueError, match="params_per_feature=2"):
        MaskedAffineAutoregressive(MADE(3, 3))
    with pytest.raises(ValueError, match="scale_bound"):
        MaskedAffineAutoregressive(MADE(3, 2), scale_bound=0.0)


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]

    def hook(*_):
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


def _autograd_log_abs_det(bijection: Bijection, x: Tensor) -> Tensor:
    jacobians = torch.stack([jacobian(lambda row: bijection(row[None])[0][0], row) for row in x])
    return torch.linalg.slogdet(jacobians)[1]


def test_maf_density_is_one_pass_and_sampling_is_d_passes():
    torch.manual_seed(2)
    n_features = 6
    layer = _randomise(MaskedAffineAutoregressive(MADE(n_features, 2, (16, 16), "tanh", order=[3, 5, 0, 2, 1, 4])))
    calls = _count_calls(layer.conditioner)
    x = torch.randn(20, n_features, dtype=torch.float64)
    z, log_abs_det = layer(x)
    assert calls[0] == 1
    x_back, inverse_log_abs_det = layer.inverse(z)
    assert calls[0] == 1 + n_features
    _assert_close(x_back, x, 1e-12)
    _assert_close(inverse_log_abs_det, -log_abs_det, 1e-12)


def test_maf_matches_its_closed_form_and_autograd():
    torch.manual_seed(3)
    n_features, bound = 4, 2.0
    layer = _randomise(MaskedAffineAutoregressive(MADE(n_features, 2, (12,), "tanh"), scale_bound=bound), std=1.0)
    x = torch.randn(5, n_features, dtype=torch.float64)
    z, log_abs_det = layer(x)
    shift, raw = layer.conditioner(x).unbind(dim=1)
    log_scale = bound * torch.tanh(raw / bound)
    _assert_close(z, (x - shift) * torch.exp(-log_scale), 1e-12)
    _assert_close(log_abs_det, -log_scale.sum(dim=1), 1e-12)
    _assert_close(log_abs_det, _autograd_log_abs_det(layer, x), 1e-10)


def test_scale_bound_limits_every_log_scale():
    n_features, bound = 3, 1.5
    layer = _randomise(MaskedAffineAutoregressive(MADE(n_features, 2, (8,), "tanh"), scale_bound=bound), std=50.0)
    _, log_abs_det = layer(torch.randn(100, n_features, dtype=torch.float64))
    assert torch.all(log_abs_det.abs() <= n_features * bound)


def test_iaf_samples_in_one_pass_and_scores_arbitrary_data_in_d_passes():
    torch.manual_seed(4)
    n_features = 5
    made = MADE(n_features, 2, (16, 16), "tanh", order=[4, 3, 2, 1, 0])
    layer = _randomise(InverseAutoregressive(MaskedAffineAutoregressive(made)))
    calls = _count_calls(made)
    # Arbitrary data, far from anything the layer would sample.
    x = 4 * torch.randn(10, n_features, dtype=torch.float64)
    u, log_abs_det = layer(x)
    assert calls[0] == n_features
    x_back, inverse_log_abs_det = layer.inverse(u)
    assert calls[0] == n_features + 1
    _assert_close(x_back, x, 1e-10)
    _assert_close(inverse_log_abs_det, -log_abs_det, 1e-10)
    _assert_close(log_abs_det, _autograd_log_abs_det(layer, x), 1e-10)


def test_zero_initialised_layers_start_as_the_identity():
    layer = MaskedAffineAutoregressive(MADE(3, 2, (8,), zero_init_last=True))
    x = torch.randn(7, 3)
    z, log_abs_det = layer(x)
    assert torch.equal(z, x)
    assert torch.equal(log_abs_det, torch.zeros(7))


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(5)
    layer = _randomise(InverseAutoregressive(MaskedAffineAutoregressive(MADE(3, 2, (8, 8), "tanh"))))
    z, log_abs_det = layer(torch.randn(16, 3, dtype=torch.float64))
    (z.pow(2).sum() - log_abs_det.sum()).backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("inverted", [False, True])
def test_context_is_threaded_through_both_directions(inverted):
    torch.manual_seed(6)
    n_features = 3
    layer: Bijection = MaskedAffineAutoregressive(MADE(n_features, 2, (12, 12), "tanh", n_context=2))
    if inverted:
        layer = InverseAutoregressive(layer)
    layer = _randomise(layer)
    assert layer.n_context == 2
    x = torch.randn(4, n_features, dtype=torch.float64)
    context = torch.randn(4, 2, dtype=torch.float64)
    z, log_abs_det = layer(x, context)
    for row in range(4):
        row_context = context[row : row + 1]
        jac = jacobian(lambda r, c=row_context: layer(r[None], c)[0][0], x[row])
        _assert_close(log_abs_det[row], torch.linalg.slogdet(jac)[1], 1e-10)
    x_back, _ = layer.inverse(z, context)
    _assert_close(x_back, x, 1e-10)
    # Every feature, the first in the order included, depends on the context.
    assert torch.all((layer(x, -context)[0] - z).abs() > 1e-8)
