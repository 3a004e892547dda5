"""Layer-level battery over every registered bijection (tests/registry.py).

Ground truth is autograd: the log-det each layer reports must equal
``slogdet`` of its Jacobian computed by ``torch.autograd.functional.jacobian``,
in float64, with parameters randomised away from the identity initialisation.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from tests.helpers import randomise_parameters
from tests.registry import BIJECTIONS, CONDITIONAL_BIJECTIONS

N_SAMPLES = 6
WIDTHS = [2, 5]  # even and odd: uneven coupling splits


def _build(name: str, n_features: int) -> torch.nn.Module:
    torch.manual_seed(0)
    bijection = BIJECTIONS[name](n_features).double()
    return randomise_parameters(bijection, n_features, scale=0.5, seed=1)


def _inputs(n_features: int, scale: float = 1.0, seed: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(N_SAMPLES, n_features, generator=generator, dtype=torch.float64)


def _autograd_log_abs_det(function, x: torch.Tensor) -> torch.Tensor:
    """Per-sample ``log |det J|`` of a row-wise map, by brute force."""
    values = []
    for row in x:
        jacobian = torch.autograd.functional.jacobian(lambda r: function(r.unsqueeze(0))[0].squeeze(0), row)
        sign, log_abs = torch.linalg.slogdet(jacobian)
        assert sign != 0, "the Jacobian is singular: the layer is not a bijection here"
        values.append(log_abs)
    return torch.stack(values)


@pytest.mark.parametrize("n_features", WIDTHS)
@pytest.mark.parametrize("name", list(BIJECTIONS))
def test_forward_log_det_matches_autograd_jacobian(name: str, n_features: int) -> None:
    bijection = _build(name, n_features)
    x = _inputs(n_features)
    y, log_abs_det = bijection(x)
    assert y.shape == x.shape and y.dtype == torch.float64
    assert log_abs_det.shape == (N_SAMPLES,)
    expected = _autograd_log_abs_det(lambda rows: bijection(rows)[0], x)
    torch.testing.assert_close(log_abs_det, expected, rtol=0, atol=1e-8)


@pytest.mark.parametrize("n_features", WIDTHS)
@pytest.mark.parametrize("name", list(BIJECTIONS))
def test_inverse_log_det_matches_autograd_jacobian(name: str, n_features: int) -> None:
    bijection = _build(name, n_features)
    y = _inputs(n_features, seed=3)
    x, log_abs_det = bijection.inverse(y)
    assert x.shape == y.shape and log_abs_det.shape == (N_SAMPLES,)
    expected = _autograd_log_abs_det(lambda rows: bijection.inverse(rows)[0], y)
    torch.testing.assert_close(log_abs_det, expected, rtol=0, atol=1e-8)
    # ... and it is the negative of the forward log-det at the preimage.
    torch.testing.assert_close(bijection(x)[1], -log_abs_det, rtol=0, atol=1e-8)


@pytest.mark.parametrize("scale", [1.0, 10.0])
@pytest.mark.parametrize("name", list(BIJECTIONS))
def test_inverse_undoes_forward(name: str, scale: float) -> None:
    n_features = 5
    bijection = _build(name, n_features)
    x = _inputs(n_features, scale=scale)
    y, _ = bijection(x)
    assert torch.isfinite(y).all()
    x_back, _ = bijection.inverse(y)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-5)
    z = _inputs(n_features, scale=scale, seed=4)
    torch.testing.assert_close(bijection(bijection.inverse(z)[0])[0], z, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", list(BIJECTIONS))
def test_every_parameter_receives_a_gradient(name: str) -> None:
    n_features = 5
    bijection = _build(name, n_features)
    parameters = dict(bijection.named_parameters())
    if not parameters:
        pytest.skip(f"{name} has no trainable parameters")
    x = _inputs(n_features)
    y, log_abs_det = bijection(x)
    x_back, inverse_log_abs_det = bijection.inverse(x)
    (y.pow(2).sum() + log_abs_det.sum() + x_back.pow(2).sum() + inverse_log_abs_det.sum()).backward()
    for parameter_name, parameter in parameters.items():
        assert parameter.grad is not None, f"{parameter_name} received no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{parameter_name} has a non-finite gradient"
        assert parameter.grad.abs().sum() > 0, f"{parameter_name} has an identically zero gradient"


@pytest.mark.parametrize("n_features", [1, 4])
@pytest.mark.parametrize("name", list(CONDITIONAL_BIJECTIONS))
def test_context_is_threaded_through(name: str, n_features: int) -> None:
    """Every layer that takes a context: log-det, inverse and effect at a fixed context."""
    n_context = 3
    torch.manual_seed(0)
    bijection = CONDITIONAL_BIJECTIONS[name](n_features, n_context)
    bijection = randomise_parameters(bijection.double(), n_features, scale=0.5, n_context=n_context)
    x = _inputs(n_features)
    context = _inputs(n_context, seed=5)
    y, log_abs_det = bijection(x, context)
    for row in range(2):  # each row at its own fixed context
        fixed = context[row : row + 1]
        jacobian = torch.autograd.functional.jacobian(
            lambda r, c=fixed: bijection(r.view(1, -1), c)[0].view(-1), x[row]
        )
        torch.testing.assert_close(log_abs_det[row], torch.linalg.slogdet(jacobian)[1], rtol=0, atol=1e-8)
    x_back, inverse_log_abs_det = bijection.inverse(y, context)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-5)
    torch.testing.assert_close(inverse_log_abs_det, -log_abs_det, rtol=0, atol=1e-6)
    changed = (bijection(x, -context)[0] - y).abs().amax(dim=1)
    assert torch.all(changed > 1e-6), "the context has no effect on some rows' output"
    # The context's gradient reaches the output (so training can use it).
    context_leaf = context.clone().requires_grad_(True)
    bijection(x, context_leaf)[0].sum().backward()
    assert context_leaf.grad is not None and context_leaf.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="context"):
        bijection(x, context[:, :2])


def test_every_contextual_layer_class_is_in_the_context_battery() -> None:
    """A layer class whose constructor takes n_context must have a conditional registry entry."""
    covered = {
        type(layer)
        for factory in CONDITIONAL_BIJECTIONS.values()
        for layer in factory(4, 2).modules()
        if isinstance(layer, torch.nn.Module)
    }
    for factory in BIJECTIONS.values():
        for layer in factory(4).modules():
            if "n_context" in inspect.signature(type(layer).__init__).parameters:
                assert any(issubclass(kind, type(layer)) for kind in covered), (
                    f"{type(layer).__name__} takes a context but is not in the context battery"
                )
