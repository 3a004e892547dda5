"""Density battery: every registered estimator must give a normalised
density, and RealNVP must recover a known Gaussian.

Ground truth is numerical integration on a grid and the closed-form
Gaussian log-density, never the estimator's own output.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from skflow import RealNVPDensity
from tests.helpers import correlated_data, estimator_params, fitted_estimator

# Target cost of scoring the whole grid, in seconds; slow families get a
# coarser (but, for densities this smooth, still sufficient) grid.
GRID_TIME_BUDGET = 1.0
MIN_GRID, MAX_GRID = 100, 200


@pytest.mark.parametrize("index", estimator_params("skflow_density_normalisation"))
def test_density_integrates_to_one_on_a_grid(index: int) -> None:
    estimator = fitted_estimator(index, "blobs")
    # The grid covers the model's own samples with a wide margin, so mass the
    # model puts away from the data is counted too.
    samples = estimator.sample(4000, random_state=0)
    assert np.isfinite(samples).all()
    low, high = samples.min(axis=0), samples.max(axis=0)
    margin = 0.5 * (high - low)
    low, high = low - margin, high + margin

    probe = np.random.default_rng(0).uniform(low, high, size=(2000, 2))
    start = time.perf_counter()
    estimator.score_samples(probe)
    seconds_per_row = (time.perf_counter() - start) / len(probe)
    n_grid = int(np.clip(np.sqrt(GRID_TIME_BUDGET / max(seconds_per_row, 1e-9)), MIN_GRID, MAX_GRID))

    axes = [np.linspace(low[j], high[j], n_grid) for j in range(2)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
    cell_area = np.prod([(axis[1] - axis[0]) for axis in axes])
    log_density = estimator.score_samples(grid)
    assert not np.isnan(log_density).any()
    total_mass = np.exp(log_density).sum() * cell_area
    assert total_mass == pytest.approx(1.0, abs=0.02), f"mass {total_mass:.4f} on a {n_grid}x{n_grid} grid"


@pytest.mark.parametrize("index", estimator_params("skflow_extreme_rows"))
def test_scores_stay_finite_and_decrease_far_out(index: int) -> None:
    # float32 squares overflow beyond ~1e19 standardised units; a density
    # there is still a finite number, and farther out must be less likely.
    estimator = fitted_estimator(index)
    ordinary = correlated_data(50, seed=1)
    before = estimator.score_samples(ordinary)
    dtypes = [p.dtype for p in estimator.model_.parameters()]
    radii = 10.0 ** np.arange(0, 31, 2)
    for direction in ([1.0, 0.0, 0.0], [0.6, -0.48, 0.64], [-1.0, -1.0, 1.0]):
        rows = estimator.mean_ + radii[:, None] * np.asarray(direction) * estimator.scale_
        scores = estimator.score_samples(rows)
        assert np.isfinite(scores).all(), f"non-finite scores at radii {radii[~np.isfinite(scores)]}"
        assert np.all(np.diff(scores) < 0), f"scores do not decrease outwards: {scores}"
    # The float64 rescue works on a copy: the fitted model is untouched.
    assert [p.dtype for p in estimator.model_.parameters()] == dtypes
    np.testing.assert_array_equal(estimator.score_samples(ordinary), before)


@pytest.fixture(scope="module")
def gaussian_5d():
    """A 5-D Gaussian with a non-diagonal covariance, a fit and a test set."""
    rng = np.random.default_rng(0)
    factor = rng.normal(size=(5, 5))
    covariance = factor @ factor.T / 5 + 0.3 * np.eye(5)
    mean = 3.0 * rng.normal(size=5)
    X_train = rng.multivariate_normal(mean, covariance, size=20_000)
    X_test = rng.multivariate_normal(mean, covariance, size=20_000)
    # Small network and large batches: a few seconds on one core. The
    # default Gaussian start is already close to the truth, so the default
    # learning rate suffices; at 1e-2, Adam's steps on the start layer move
    # a whitened variance by about 0.1 epoch to epoch (seen: 0.894), the
    # moment test's tolerance, although the likelihood gap stays below 0.01.
    estimator = RealNVPDensity(
        n_layers=4, hidden_dims=(16,), max_epochs=10, batch_size=512, lr=1e-3, random_state=0
    ).fit(X_train)
    return mean, covariance, X_test, estimator


def test_realnvp_recovers_gaussian_log_density(gaussian_5d) -> None:
    mean, covariance, X_test, estimator = gaussian_5d
    truth = multivariate_normal(mean, covariance)
    true_mean_log_density = truth.logpdf(X_test).mean()
    # The closed-form entropy and its Monte-Carlo estimate on the test set agree.
    assert true_mean_log_density == pytest.approx(-truth.entropy(), abs=0.03)
    # The gap is an estimate of KL(truth || model) on held-out rows.
    gap = true_mean_log_density - estimator.score(X_test)
    assert abs(gap) < 0.05, f"mean score differs from the true mean log-density by {gap:.4f} nats"


def test_realnvp_samples_match_gaussian_moments(gaussian_5d) -> None:
    mean, covariance, _, estimator = gaussian_5d
    samples = estimator.sample(20_000, random_state=1)
    # Compare in whitened units of the true distribution: there the target
    # is mean 0 and identity covariance, whatever the scales of the features.
    whitening = np.linalg.inv(np.linalg.cholesky(covariance))
    white = (samples - mean) @ whitening.T
    # Sampling error of each mean is 1/sqrt(20000) ~ 0.007 and of each
    # covariance entry ~0.01; the rest is model error. A mean shift delta
    # alone costs |delta|^2 / 2 nats of KL, so the 0.05-nat bound above
    # allows |delta| up to ~0.3: 0.1 is a tighter, separate requirement.
    np.testing.assert_allclose(white.mean(axis=0), 0.0, atol=0.1)
    np.testing.assert_allclose(np.cov(white, rowvar=False), np.eye(5), atol=0.1)
