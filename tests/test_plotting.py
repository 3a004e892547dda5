"""Displays (skflow.plotting) and the explained-variance diagnostic of
InjectiveFlowEstimator, which is checked against PCA and the covariance's
eigenvalues on linear-Gaussian data."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from skflow import (
    DensityDisplay,
    ExplainedVarianceDisplay,
    InjectiveFlowEstimator,
    RealNVPDensity,
    TrainingCurveDisplay,
)
from tests.helpers import correlated_data, two_blobs_2d
from tests.test_injective import linear_fif, linear_gaussian

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt

TINY = {"n_layers": 2, "hidden_dims": (16,), "max_epochs": 12, "patience": 3, "lr": 3e-2, "random_state": 0}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def linear_case() -> tuple:
    _, covariance, X, _ = linear_gaussian(2000, 4, 2, 0.1)
    return covariance, X, linear_fif(2).fit(X)


def test_importing_skflow_does_not_import_matplotlib() -> None:
    code = "import sys, skflow; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_training_curve_shows_the_history_and_marks_the_kept_epoch() -> None:
    flow = RealNVPDensity(**TINY).fit(correlated_data(300))
    _, ax = plt.subplots()
    display = TrainingCurveDisplay.from_estimator(flow, ax=ax)
    assert display.ax_ is ax
    train = [row["train_loss"] for row in flow.history_]
    valid = [row["valid_loss"] for row in flow.history_]
    np.testing.assert_array_equal(display.lines_["train"].get_ydata(), train)
    np.testing.assert_array_equal(display.lines_["valid"].get_ydata(), valid)
    np.testing.assert_array_equal(display.lines_["train"].get_xdata(), np.arange(1, flow.n_iter_ + 1))
    best_x, best_y = display.lines_["best"].get_xdata()[0], display.lines_["best"].get_ydata()[0]
    assert best_x == flow.best_epoch_ and best_y == min(valid)


def test_training_curve_without_validation_marks_the_last_epoch_on_the_training_loss() -> None:
    flow = RealNVPDensity(**{**TINY, "max_epochs": 4}, validation_fraction=None).fit(correlated_data(200))
    display = TrainingCurveDisplay.from_estimator(flow)
    assert "valid" not in display.lines_
    assert display.lines_["best"].get_xdata()[0] == 4
    assert display.lines_["best"].get_ydata()[0] == flow.history_[-1]["train_loss"]


def test_density_display_evaluates_the_density_on_its_grid() -> None:
    X = np.random.default_rng(0).multivariate_normal([1.0, -2.0], [[2.0, 0.6], [0.6, 0.5]], size=400)
    mixture = GaussianMixture(n_components=1, random_state=0).fit(X)
    display = DensityDisplay.from_estimator(mixture, X, n_samples=50, grid_resolution=40)
    # Ground truth: the fitted Gaussian's closed-form density at (grid_x[j], grid_y[i]).
    truth = multivariate_normal(mixture.means_[0], mixture.covariances_[0])
    xx, yy = np.meshgrid(display.grid_x, display.grid_y)
    np.testing.assert_allclose(display.log_density, truth.logpdf(np.dstack([xx, yy])), rtol=1e-10, atol=1e-10)
    # The grid covers data and draws, with the margin.
    assert display.grid_x[0] < X[:, 0].min() and display.grid_x[-1] > X[:, 0].max()
    assert display.samples.shape == (50, 2) and len(display.samples_.get_offsets()) == 50
    assert len(display.data_.get_offsets()) == len(X)


def test_density_display_of_a_flow_uses_its_names_and_seeded_draws() -> None:
    import pandas as pd

    table = pd.DataFrame(two_blobs_2d(300), columns=["height", "weight"])
    flow = RealNVPDensity(**TINY).fit(table)
    display = DensityDisplay.from_estimator(flow, n_samples=80, grid_resolution=30, log_scale=True)
    np.testing.assert_array_equal(display.samples, flow.sample(80, random_state=0))
    assert display.ax_.get_xlabel() == "height" and display.ax_.get_ylabel() == "weight"
    assert display.data_ is None


def test_density_display_refuses_other_than_two_features() -> None:
    flow = RealNVPDensity(**{**TINY, "max_epochs": 1}).fit(correlated_data(100, n_features=3))
    with pytest.raises(ValueError, match="fitted on 3"):
        DensityDisplay.from_estimator(flow)
    with pytest.raises(ValueError, match="Nothing to place the grid around"):
        DensityDisplay.from_estimator(GaussianMixture().fit(two_blobs_2d(100)), n_samples=0)


def test_explained_variance_matches_pca_on_linear_gaussian_data(linear_case) -> None:
    covariance, X, fif = linear_case
    ratios = fif.explained_variance_ratio(X)
    # The known answer: the covariance's two largest eigenvalues over its trace ...
    eigenvalues = np.linalg.eigvalsh(covariance)[::-1]
    np.testing.assert_allclose(ratios, eigenvalues[:2] / eigenvalues.sum(), atol=0.02)
    # ... which PCA estimates from the same rows; the FIF agrees with it more closely still.
    np.testing.assert_allclose(ratios, PCA(2).fit(X).explained_variance_ratio_, atol=2e-3)
    # The ratios add up to the share of variance the reconstruction keeps.
    kept = 1 - fif.reconstruction_error(X).mean() / X.var(axis=0).sum()
    assert ratios.sum() == pytest.approx(kept, abs=1e-6)


def test_explained_variance_does_not_depend_on_the_latent_rotation(linear_case) -> None:
    # Rotating the latent space (encoder by R, decoder by R^T) changes no
    # density or reconstruction, so it must not change the diagnostic.
    import copy

    import torch

    _, X, fif = linear_case
    rotated = copy.deepcopy(fif)
    angle = 0.7
    rotation = torch.tensor([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], dtype=torch.float32)
    with torch.no_grad():
        encoder, decoder = rotated.model_.encoder, rotated.model_.decoder
        rotation = rotation.to(encoder.weight.device)
        encoder.weight.copy_(rotation @ encoder.weight)
        encoder.bias.copy_(rotation @ encoder.bias)
        decoder.weight.copy_(decoder.weight @ rotation.T)
    assert not np.allclose(rotated.transform(X[:5]), fif.transform(X[:5]), atol=1e-3)
    np.testing.assert_allclose(rotated.explained_variance_ratio(X), fif.explained_variance_ratio(X), atol=1e-4)


def test_explained_variance_display_draws_both_sets_of_bars(linear_case) -> None:
    _, X, fif = linear_case
    display = ExplainedVarianceDisplay.from_estimator(fif, X)
    heights = [bar.get_height() for bar in display.bars_]
    np.testing.assert_allclose(heights, fif.explained_variance_ratio(X))
    pca_heights = [bar.get_height() for bar in display.pca_bars_]
    np.testing.assert_allclose(pca_heights, PCA(2).fit(X).explained_variance_ratio_)
    np.testing.assert_allclose(display.cumulative_.get_ydata(), np.cumsum(heights))
    with pytest.raises(TypeError, match="InjectiveFlowEstimator"):
        ExplainedVarianceDisplay.from_estimator(RealNVPDensity(), X)


def test_explained_variance_on_a_curve_credits_the_manifold() -> None:
    # A noisy sinusoid is one-dimensional: one latent direction keeps far more
    # of the variance than PCA's first component can.
    rng = np.random.default_rng(0)
    t = rng.uniform(-3, 3, 1500)
    X = np.column_stack([t, 1.5 * np.sin(2 * t)]) + 0.05 * rng.normal(size=(1500, 2))
    fif = InjectiveFlowEstimator(n_components=1, hidden_dims=(64, 64), max_epochs=60, lr=3e-3, random_state=0).fit(X)
    ratio = fif.explained_variance_ratio(X)[0]
    assert ratio > PCA(1).fit(X).explained_variance_ratio_[0] + 0.1
