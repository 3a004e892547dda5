"""NICEDensity and GlowDensity at the estimator level, and bits per dimension.

Ground truth: autograd Jacobians (float64) for the change of variables,
Glow's own [0, 1)-scaled bits/dim formula for our unit-bin formula, closed
form Gaussian densities for the metric. Digits come from scikit-learn.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.datasets import load_digits

from skflow import GlowDensity, NICEDensity
from skflow.flows.coupling import AdditiveCoupling
from skflow.flows.linear import DiagonalScaling
from skflow.metrics import bits_per_dim
from tests.helpers import correlated_data, randomise_parameters, two_blobs_2d

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_digits().data


# --------------------------------------------------------------------- #
# NICE
# --------------------------------------------------------------------- #
def test_nice_is_volume_preserving_up_to_its_final_scaling() -> None:
    torch.manual_seed(0)
    model = NICEDensity(n_layers=3, hidden_dims=(8,)).build_model(4).double()
    layers = list(model.transform.bijections)
    assert sum(isinstance(layer, AdditiveCoupling) for layer in layers) == 3
    assert isinstance(layers[-1], DiagonalScaling)
    randomise_parameters(model.transform, 4, scale=0.5, seed=1)
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    _, log_abs_det = model.transform(x)
    # The whole log-det is the scaling's, and it is the autograd Jacobian's.
    torch.testing.assert_close(log_abs_det, layers[-1].log_scale.sum().expand(3))
    for row, value in zip(x, log_abs_det):
        jacobian = torch.autograd.functional.jacobian(lambda r: model.encode(r[None])[0], row)
        torch.testing.assert_close(value, torch.linalg.slogdet(jacobian)[1], rtol=0, atol=1e-8)


def test_nice_and_glow_beat_a_single_gaussian_on_bimodal_data() -> None:
    """A fit must improve on the best Gaussian (closed form) on held-out rows."""
    X = two_blobs_2d(n_samples=1200, seed=0)
    X_train, X_test = X[:1000], X[1000:]
    gaussian = multivariate_normal(X_train.mean(axis=0), np.cov(X_train, rowvar=False))
    gaussian_score = gaussian.logpdf(X_test).mean()
    common = {"max_epochs": 30, "batch_size": 128, "lr": 3e-3, "random_state": 0, "patience": None}
    nice = NICEDensity(n_layers=4, hidden_dims=(32,), **common).fit(X_train)
    glow = GlowDensity(n_steps=3, hidden_dims=(32,), **common).fit(X_train)
    assert nice.score(X_test) > gaussian_score + 0.2, (nice.score(X_test), gaussian_score)
    assert glow.score(X_test) > gaussian_score + 0.2, (glow.score(X_test), gaussian_score)


# --------------------------------------------------------------------- #
# Glow in image mode
# --------------------------------------------------------------------- #
def test_glow_image_mode_uses_one_global_standardisation(digits: np.ndarray) -> None:
    X = digits[:200]
    fixed = GlowDensity(
        image_shape=(1, 8, 8),
        n_levels=1,
        n_steps=1,
        hidden_channels=4,
        n_intensity_levels=17,
        max_epochs=1,
        random_state=0,
    ).fit(X)
    np.testing.assert_array_equal(fixed.mean_, np.full(64, -0.5))
    np.testing.assert_array_equal(fixed.scale_, np.full(64, 17.0))
    fitted = GlowDensity(
        image_shape=(1, 8, 8), n_levels=1, n_steps=1, hidden_channels=4, max_epochs=1, random_state=0
    ).fit(X)
    np.testing.assert_allclose(fitted.mean_, np.full(64, X.mean()))
    np.testing.assert_allclose(fitted.scale_, np.full(64, X.std()))
    assert fitted.transform(X[:5]).shape == (5, 64)
    np.testing.assert_allclose(fitted.inverse_transform(fitted.transform(X[:5])), X[:5], atol=1e-3)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"image_shape": (1, 4, 4)}, "describes 16 pixels"),
        ({"image_shape": (1, 8, 8), "n_levels": 4}, "divisible by 16"),
        ({"image_shape": (1, 8, 8), "n_intensity_levels": 10}, r"must lie in \[0, 9\]"),
        ({"image_shape": (1, 8)}, "three positive integers"),
    ],
)
def test_glow_image_mode_rejects_inconsistent_settings(digits: np.ndarray, params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GlowDensity(max_epochs=1, **params).fit(digits[:50])


def test_glow_image_fit_improves_and_bits_per_dim_matches_glow_formula(digits: np.ndarray) -> None:
    X_train, X_test = digits[:600], digits[1500:1600]
    glow = GlowDensity(
        image_shape=(1, 8, 8),
        n_levels=2,
        n_steps=1,
        hidden_channels=8,
        n_intensity_levels=17,
        max_epochs=6,
        batch_size=64,
        lr=3e-3,
        patience=None,
        random_state=0,
    ).fit(X_train)
    valid = [row["valid_loss"] for row in glow.history_]
    assert valid[-1] < valid[0] - 5.0, valid  # nats per image, on held-out rows
    assert glow.dequantized_features_.all()

    bpd = glow.bits_per_dim(X_test)
    # Glow's convention: pixels scaled to [0, 1) by u = (x + 1/2) / K, the model's own units here,
    # bpd = -log p_01(u) / (D ln 2) + log2(K), averaged over images.
    D, K = 64, 17
    with torch.no_grad():
        units = torch.as_tensor((X_test + 0.5) / K, dtype=torch.float32, device=glow.device_)
        log_p01 = glow.model_.log_prob(units).double().cpu().numpy()
    glow_formula = float(np.mean(-log_p01 / (D * math.log(2)) + math.log2(K)))
    assert bpd == pytest.approx(glow_formula, abs=1e-6)
    assert bpd == pytest.approx(-glow.score(X_test) / (D * math.log(2)), abs=1e-9)
    # Sanity range: better than uniform over 17 levels (log2 17 = 4.09 bits), and positive.
    assert 0 < bpd < math.log2(K)
    assert np.isfinite(glow.sample(4, random_state=0)).all()


def test_bits_per_dim_of_a_closed_form_density() -> None:
    """Unit and non-unit bins against -log2 of the bin probability, by hand."""

    class Gaussian:
        def __init__(self, cov: np.ndarray) -> None:
            self.density = multivariate_normal(np.zeros(len(cov)), cov)

        def score_samples(self, X: np.ndarray) -> np.ndarray:
            return self.density.logpdf(X)

    cov = np.array([[4.0, 1.0], [1.0, 9.0]])
    X = np.array([[0.0, 1.0], [2.0, -3.0], [1.0, 1.0]])
    estimator = Gaussian(cov)
    by_hand = -np.mean(estimator.density.logpdf(X)) / (2 * math.log(2))
    assert bits_per_dim(estimator, X) == pytest.approx(by_hand)
    widths = np.array([0.5, 0.25])
    by_hand_binned = -np.mean(estimator.density.logpdf(X) + np.log(widths).sum()) / (2 * math.log(2))
    assert bits_per_dim(estimator, X, widths) == pytest.approx(by_hand_binned)
    with pytest.raises(ValueError, match="positive"):
        bits_per_dim(estimator, X, np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        bits_per_dim(estimator, X, np.ones(3))


def test_bits_per_dim_refuses_continuous_columns() -> None:
    X = correlated_data(n_samples=200, n_features=2)
    flow = NICEDensity(n_layers=1, hidden_dims=(4,), max_epochs=1, random_state=0).fit(X)
    with pytest.raises(ValueError, match="dequantised"):
        flow.bits_per_dim(X)
