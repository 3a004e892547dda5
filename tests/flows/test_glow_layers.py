"""Glow's layers (skflow/flows/linear.py LU layers, skflow/flows/multiscale.py).

Ground truth is independent of the code under test: ``slogdet`` of the
matrix or of the autograd Jacobian in float64, explicit index loops for the
squeeze, ``torch.nn.functional.conv2d`` for the 1x1 convolution, and a
brute-force change of variables for the whole multiscale model.
"""

from __future__ import annotations

import math

import pytest
import torch

from skflow.flows import ExactFlow, StandardNormal
from skflow.flows.linear import DiagonalScaling, InvertibleConv1x1, LULinear
from skflow.flows.multiscale import (
    ChannelActNorm,
    OnLeadingFeatures,
    Squeeze,
    conv_affine_coupling,
    multiscale_glow,
)
from tests.helpers import randomise_parameters


def _rows(n: int, d: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, d, generator=generator, dtype=torch.float64)


def _jacobian_log_abs_det(function, x: torch.Tensor) -> torch.Tensor:
    values = []
    for row in x:
        jacobian = torch.autograd.functional.jacobian(lambda r: function(r[None])[0], row)
        values.append(torch.linalg.slogdet(jacobian)[1])
    return torch.stack(values)


def _perturbed(module: torch.nn.Module, scale: float = 0.3, seed: int = 1) -> torch.nn.Module:
    """Add noise to every parameter (keeps LU's random rotation, leaves the identity init)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return module


# --------------------------------------------------------------------- #
# Dense LU linear map and diagonal scaling
# --------------------------------------------------------------------- #
def test_lu_linear_log_det_is_slogdet_of_its_matrix() -> None:
    torch.manual_seed(0)
    layer = _perturbed(LULinear(6).double())
    weight = layer.weight()
    x = _rows(4, 6)
    y, log_abs_det = layer(x)
    torch.testing.assert_close(y, x @ weight.T)
    expected = torch.linalg.slogdet(weight)[1]
    torch.testing.assert_close(log_abs_det, expected.expand(4), rtol=0, atol=1e-10)
    x_back, inverse_log_abs_det = layer.inverse(y)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(inverse_log_abs_det, -log_abs_det)


def test_lu_linear_starts_as_a_rotation_and_stays_invertible() -> None:
    torch.manual_seed(0)
    layer = LULinear(5).double()
    weight = layer.weight()
    torch.testing.assert_close(weight @ weight.T, torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-6)
    assert abs(layer.log_abs_det_weight().item()) < 1e-5
    # Parameters masked out of the triangles cannot move W.
    with torch.no_grad():
        layer.lower.add_(torch.triu(torch.ones(5, 5, dtype=torch.float64)))
    torch.testing.assert_close(layer.weight(), weight)


def test_diagonal_scaling_log_det_and_inverse() -> None:
    layer = DiagonalScaling(3).double()
    with torch.no_grad():
        layer.log_scale.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = _rows(2, 3)
    y, log_abs_det = layer(x)
    torch.testing.assert_close(y, x * torch.tensor([math.exp(0.5), math.exp(-1.0), math.exp(2.0)], dtype=torch.float64))
    torch.testing.assert_close(log_abs_det, torch.full((2,), 1.5, dtype=torch.float64))
    torch.testing.assert_close(layer.inverse(y)[0], x)


# --------------------------------------------------------------------- #
# Squeeze
# --------------------------------------------------------------------- #
def test_squeeze_matches_explicit_space_to_depth_and_inverts_exactly() -> None:
    channels, height, width = 2, 4, 6
    squeeze = Squeeze((channels, height, width))
    x = _rows(3, channels * height * width)
    y, log_abs_det = squeeze(x)
    assert squeeze.output_shape == (8, 2, 3)
    image = x.reshape(3, channels, height, width)
    expected = torch.empty(3, 4 * channels, height // 2, width // 2, dtype=torch.float64)
    for c in range(channels):
        for i in range(2):
            for j in range(2):
                for h in range(height // 2):
                    for w in range(width // 2):
                        expected[:, 4 * c + 2 * i + j, h, w] = image[:, c, 2 * h + i, 2 * w + j]
    assert torch.equal(y, expected.reshape(3, -1))
    assert torch.equal(log_abs_det, torch.zeros(3, dtype=torch.float64))
    x_back, inverse_log_abs_det = squeeze.inverse(y)
    assert torch.equal(x_back, x)
    assert torch.equal(inverse_log_abs_det, torch.zeros(3, dtype=torch.float64))


def test_squeeze_rejects_odd_sizes() -> None:
    with pytest.raises(ValueError, match="even height and width"):
        Squeeze((1, 3, 4))


# --------------------------------------------------------------------- #
# 1x1 convolution and per-channel ActNorm
# --------------------------------------------------------------------- #
def test_conv1x1_equals_conv2d_and_log_det_is_hw_times_log_det_w() -> None:
    torch.manual_seed(0)
    shape = (3, 2, 2)
    layer = _perturbed(InvertibleConv1x1(shape).double())
    x = _rows(4, 12)
    y, log_abs_det = layer(x)
    weight = layer.weight()
    reference = torch.nn.functional.conv2d(x.reshape(4, *shape), weight[:, :, None, None]).reshape(4, -1)
    torch.testing.assert_close(y, reference)
    torch.testing.assert_close(log_abs_det, 4 * torch.linalg.slogdet(weight)[1].expand(4), rtol=0, atol=1e-10)
    torch.testing.assert_close(log_abs_det, _jacobian_log_abs_det(lambda r: layer(r)[0], x), rtol=0, atol=1e-8)
    x_back, inverse_log_abs_det = layer.inverse(y)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(inverse_log_abs_det, _jacobian_log_abs_det(lambda r: layer.inverse(r)[0], y))


def test_channel_actnorm_initialises_per_channel_and_log_det_matches_autograd() -> None:
    shape = (2, 3, 3)
    layer = ChannelActNorm(shape).double()
    x = _rows(50, 18, scale=3.0) + 5.0
    y, _ = layer(x)  # training mode: data-dependent initialisation
    per_channel = y.reshape(50, 2, 9).transpose(0, 1).reshape(2, -1)
    torch.testing.assert_close(per_channel.mean(dim=1), torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-10)
    # eps = 1e-6 is added to the std at initialisation.
    torch.testing.assert_close(
        per_channel.std(dim=1, unbiased=False), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-6
    )
    layer = _perturbed(layer.eval())
    x = _rows(3, 18, seed=4)
    y, log_abs_det = layer(x)
    torch.testing.assert_close(log_abs_det, _jacobian_log_abs_det(lambda r: layer(r)[0], x), rtol=0, atol=1e-8)
    torch.testing.assert_close(layer.inverse(y)[0], x)


# --------------------------------------------------------------------- #
# Convolutional coupling
# --------------------------------------------------------------------- #
@pytest.mark.parametrize("flip", [False, True])
def test_conv_coupling_log_det_matches_autograd(flip: bool) -> None:
    torch.manual_seed(0)
    shape = (3, 2, 2)
    layer = conv_affine_coupling(shape, hidden_channels=4, activation="tanh", flip=flip).double()
    x = _rows(3, 12)
    torch.testing.assert_close(layer(x)[0], x)  # zero-initialised last conv: identity at start
    layer = _perturbed(layer)
    y, log_abs_det = layer(x)
    assert not torch.allclose(y, x)
    torch.testing.assert_close(log_abs_det, _jacobian_log_abs_det(lambda r: layer(r)[0], x), rtol=0, atol=1e-8)
    torch.testing.assert_close(layer.inverse(y)[0], x, rtol=0, atol=1e-10)
    # The kept channels (first 1 of 3, or last 1 with flip) pass unchanged.
    kept = slice(8, 12) if flip else slice(0, 4)
    assert torch.equal(y[:, kept], x[:, kept])


def test_conv_coupling_refuses_a_context() -> None:
    layer = conv_affine_coupling((2, 2, 2), hidden_channels=4).double()
    with pytest.raises(ValueError, match="take no context"):
        layer(_rows(2, 8), _rows(2, 3))


def test_on_leading_features_passes_the_rest_through() -> None:
    inner = _perturbed(LULinear(3).double())
    layer = OnLeadingFeatures(inner, 3)
    x = _rows(4, 5)
    y, log_abs_det = layer(x)
    assert torch.equal(y[:, 3:], x[:, 3:])
    torch.testing.assert_close(log_abs_det, _jacobian_log_abs_det(lambda r: layer(r)[0], x), rtol=0, atol=1e-8)
    torch.testing.assert_close(layer.inverse(y)[0], x)


# --------------------------------------------------------------------- #
# The whole multiscale model: brute-force change of variables
# --------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("image_shape", "n_levels", "learned_prior"),
    [((1, 4, 4), 2, True), ((1, 4, 4), 2, False), ((2, 4, 4), 1, True), ((1, 8, 4), 2, True)],
)
def test_multiscale_log_prob_is_the_change_of_variables(image_shape, n_levels, learned_prior) -> None:
    torch.manual_seed(0)
    n_features = math.prod(image_shape)
    transform = multiscale_glow(
        image_shape, n_levels=n_levels, n_steps=2, hidden_channels=4, activation="tanh", learned_prior=learned_prior
    )
    model = ExactFlow(transform, StandardNormal(n_features)).double()
    randomise_parameters(model.transform, n_features, scale=0.3, seed=1)
    x = _rows(3, n_features, seed=5)
    log_prob = model.log_prob(x)
    z = model.encode(x)
    assert z.shape == (3, n_features)
    # log p(x) = log N(f(x); 0, I) + log |det df/dx|, with the Jacobian of encode by autograd.
    gaussian = -0.5 * (z.pow(2).sum(dim=1) + n_features * math.log(2 * math.pi))
    expected = gaussian + _jacobian_log_abs_det(model.encode, x)
    torch.testing.assert_close(log_prob, expected, rtol=0, atol=1e-8)
    torch.testing.assert_close(model.decode(z), x, rtol=0, atol=1e-8)
    samples = model.sample(5, torch.Generator().manual_seed(0))
    assert samples.shape == (5, n_features) and torch.isfinite(samples).all()


def test_multiscale_latent_factors_out_half_per_level() -> None:
    """With 2 levels on (1, 4, 4), the last 8 latent features leave after level 1."""
    torch.manual_seed(0)
    transform = multiscale_glow((1, 4, 4), n_levels=2, n_steps=1, hidden_channels=4, learned_prior=False).double()
    randomise_parameters(transform, 16, scale=0.3, seed=1)
    x = _rows(2, 16)
    first_level, second_level = transform.bijections
    after_first = first_level(x)[0]
    # Level 2 acts on the 8 kept features only; the factored 8 reach the latent unchanged.
    assert isinstance(second_level, OnLeadingFeatures) and second_level.n_active == 8
    assert torch.equal(transform(x)[0][:, 8:], after_first[:, 8:])
    assert not torch.allclose(transform(x)[0][:, :8], after_first[:, :8])


def test_multiscale_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        multiscale_glow((1, 6, 6), n_levels=2)
    with pytest.raises(ValueError, match="three positive integers"):
        multiscale_glow((1, 8), n_levels=1)
    with pytest.raises(ValueError, match="three positive integers"):
        multiscale_glow((1, 8, 8.5), n_levels=1)
