"""Layer-level battery over every registered bijection (tests/registry.py).

Ground truth is autograd: the log-det each layer reports must equal
``slogdet`` of its Jacobian computed by ``torch.autograd.functional.jacobian``,
in float64, with parameters randomised away from the identity initialisation.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers import randomise_parameters
from tests.registry import BIJECTIONS

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


@pytest.mark.parametrize("name", list(BIJECTIONS))
def test_context_is_threaded_through(name: str) -> None:
    """Layers that declare ``n_context`` are checked with a fixed context."""
    n_features = 4
    torch.manual_seed(0)
    bijection = BIJECTIONS[name](n_features)
    n_context = getattr(bijection, "n_context", 0)
    if not n_context:
        pytest.skip(f"{name} does not accept a context (no n_context attribute)")
    bijection = randomise_parameters(bijection.double(), n_features, scale=0.5)
    x = _inputs(n_features)
    context = _inputs(n_context, seed=5)
    y, log_abs_det = bijection(x, context)
    expected = _autograd_log_abs_det(lambda rows: bijection(rows, context[:1].expand(len(rows), -1))[0], x[:1])
    torch.testing.assert_close(log_abs_det[:1], expected, rtol=0, atol=1e-8)
    torch.testing.assert_close(bijection.inverse(y, context)[0], x, rtol=0, atol=1e-5)
    assert not torch.allclose(bijection(x, -context)[0], y), "the context has no effect on the output"
