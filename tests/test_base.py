"""Tests of the estimator layer (skflow.base) that do not depend on a
particular flow family: standardisation and its log-det, devices, hooks,
dequantisation and the handling of non-finite model output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binom, norm, poisson

from skflow import RealNVPDensity
from skflow.base import FlowEstimator, resolve_device
from skflow.flows import ActNorm, Chain, ExactFlow, StandardNormal
from tests.helpers import DensityOnlyModel

CUDA_MISSING = "CUDA is not available on this machine"


class DiagonalGaussianDensity(FlowEstimator):
    """A family whose maximum-likelihood fit is known: one ActNorm onto N(0, I)."""

    def build_model(self, n_features: int) -> ExactFlow:
        return ExactFlow(Chain([ActNorm(n_features)]), StandardNormal(n_features))

    def _after_fit(self, rows: torch.Tensor) -> None:
        self.rows_seen_by_hook_ = rows.cpu().numpy()


class NaNForPositiveFirstFeature(DensityOnlyModel):
    """A broken model: NaN log-density wherever the first feature is positive."""

    def log_prob(self, x, context=None):
        return torch.where(x[:, 0] > 0, torch.nan, -0.5 * x.pow(2).sum(dim=1))

    def loss(self, x, context=None):
        return 0.5 * x.pow(2).sum(dim=1) + 0.0 * self.dummy.sum()

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))


class BrokenDensity(FlowEstimator):
    def build_model(self, n_features: int) -> torch.nn.Module:
        return NaNForPositiveFirstFeature()


def _gaussian_data(n: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) * [1.0, 20.0, 0.01] + [5.0, -300.0, 0.2]


def test_scores_are_densities_in_the_users_units() -> None:
    X = _gaussian_data()
    # Full batch, no validation split: ActNorm's data-dependent init is the
    # exact maximum-likelihood diagonal Gaussian, where the gradient is zero.
    estimator = DiagonalGaussianDensity(
        max_epochs=1, batch_size=len(X), lr=1e-6, validation_fraction=None, random_state=0
    ).fit(X)
    X_test = _gaussian_data(50, seed=1)
    expected = norm(X.mean(axis=0), X.std(axis=0)).logpdf(X_test).sum(axis=1)
    np.testing.assert_allclose(estimator.score_samples(X_test), expected, rtol=0, atol=1e-4)
    assert estimator.score(X_test) == pytest.approx(expected.mean(), abs=1e-4)
    np.testing.assert_allclose(estimator.mean_, X.mean(axis=0))
    np.testing.assert_allclose(estimator.scale_, X.std(axis=0))
    assert not estimator.dequantized_features_.any()


def test_after_fit_hook_receives_standardised_rows() -> None:
    X = _gaussian_data()
    estimator = DiagonalGaussianDensity(max_epochs=1, random_state=0).fit(X)
    np.testing.assert_allclose(estimator.rows_seen_by_hook_, (X - X.mean(axis=0)) / X.std(axis=0), atol=1e-5)


def test_rescaling_the_data_shifts_scores_by_the_log_jacobian() -> None:
    X = _gaussian_data(300)
    factor, offset = np.array([3.0, 0.1, 50.0]), np.array([-2.0, 7.0, 1e3])
    params = {"n_layers": 2, "hidden_dims": (8,), "max_epochs": 2, "batch_size": 64, "random_state": 0}
    original = RealNVPDensity(**params).fit(X)
    rescaled = RealNVPDensity(**params).fit(X * factor + offset)
    # The model sees the same standardised rows, so only the Jacobian of the
    # affine change of units separates the two densities.
    np.testing.assert_allclose(
        rescaled.score_samples(X * factor + offset), original.score_samples(X) - np.log(factor).sum(), atol=1e-4
    )


def test_nan_log_density_becomes_minus_infinity() -> None:
    X = _gaussian_data(100)
    estimator = BrokenDensity(max_epochs=1, random_state=0).fit(X)
    scores = estimator.score_samples(X)
    positive = (X[:, 0] - X[:, 0].mean()) > 0
    assert np.all(scores[positive] == -np.inf)
    assert np.all(np.isfinite(scores[~positive]))


def test_integer_data_scores_are_log_probabilities() -> None:
    rng = np.random.default_rng(0)

    def draw(n: int) -> np.ndarray:
        return np.column_stack([rng.binomial(8, 0.4, n), rng.poisson(3.0, n)]).astype(float)

    estimator = RealNVPDensity(
        n_layers=2, hidden_dims=(16,), max_epochs=10, batch_size=256, lr=1e-2, random_state=0
    ).fit(draw(3000))
    assert estimator.dequantized_features_.all()
    # With unit bins, the density at the integers is the probability of each
    # pair: it sums to one over the lattice ...
    grid = np.stack(np.meshgrid(np.arange(-3, 20), np.arange(-3, 20), indexing="ij"), axis=-1).reshape(-1, 2)
    assert np.exp(estimator.score_samples(grid)).sum() == pytest.approx(1.0, abs=0.03)
    # ... and the mean score approaches the true mean log-probability (a KL gap).
    X_test = draw(3000)
    true_log_p = binom(8, 0.4).logpmf(X_test[:, 0]) + poisson(3.0).logpmf(X_test[:, 1])
    gap = true_log_p.mean() - estimator.score(X_test)
    assert -0.02 < gap < 0.1


def test_noise_std_fits_the_density_convolved_with_the_noise() -> None:
    # Gaussian data plus N(0, s^2) noise per standardised column is Gaussian
    # with variance (1 + s^2) in standardised units: the maximum-likelihood
    # diagonal Gaussian of the noisy rows has exactly that spread.
    X = _gaussian_data(4000)
    estimator = DiagonalGaussianDensity(
        noise_std=0.5, max_epochs=60, lr=3e-3, validation_fraction=None, patience=None, random_state=0
    ).fit(X)
    variance_ratio = estimator.sample(40_000, random_state=1).var(axis=0) / X.var(axis=0)
    np.testing.assert_allclose(variance_ratio, 1.25, atol=0.05)
    plain = DiagonalGaussianDensity(max_epochs=60, lr=3e-3, validation_fraction=None, patience=None, random_state=0)
    np.testing.assert_allclose(plain.fit(X).sample(40_000, random_state=1).var(axis=0) / X.var(axis=0), 1.0, atol=0.05)


@pytest.mark.parametrize(
    ("dequantize", "expected"), [("auto", [True, False]), (True, [True, True]), (False, [False, False])]
)
def test_dequantize_chooses_columns(dequantize, expected) -> None:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 5, 200), rng.normal(size=200)])
    estimator = DiagonalGaussianDensity(max_epochs=1, dequantize=dequantize, random_state=0).fit(X)
    assert estimator.dequantized_features_.tolist() == expected


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="not a valid device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when CUDA is missing")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    estimator = DiagonalGaussianDensity(max_epochs=1, device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        estimator.fit(_gaussian_data(50))
    assert estimator.device == "cuda" and not hasattr(estimator, "model_")


@pytest.mark.skipif(not torch.cuda.is_available(), reason=CUDA_MISSING)
def test_cuda_fit_scores_and_pickles_to_cpu() -> None:
    import pickle

    X = _gaussian_data(200)
    params = {"n_layers": 2, "hidden_dims": (8,), "max_epochs": 2, "random_state": 0}
    on_gpu = RealNVPDensity(device="cuda", **params).fit(X)
    assert on_gpu.device_.type == "cuda"
    state = on_gpu.__getstate__()
    assert next(state["model_"].parameters()).device.type == "cpu"
    loaded = pickle.loads(pickle.dumps(on_gpu))
    np.testing.assert_allclose(loaded.score_samples(X), on_gpu.score_samples(X), atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason=CUDA_MISSING)
def test_cuda_float64_paths_leave_the_model_on_the_gpu() -> None:
    # Far rows overflow float32 and are rescored in float64; transform and
    # inverse_transform of exact flows run in float64: both on a copy, on the GPU.
    X = _gaussian_data(200)
    flow = RealNVPDensity(device="cuda", n_layers=2, hidden_dims=(8,), max_epochs=2, random_state=0).fit(X)
    far = flow.mean_ + np.array([[1e20], [1e25], [1e30]]) * flow.scale_
    scores = flow.score_samples(far)
    assert np.isfinite(scores).all() and np.all(np.diff(scores) < 0)
    np.testing.assert_allclose(flow.inverse_transform(flow.transform(X)), X, rtol=0, atol=1e-6)
    parameter = next(flow.model_.parameters())
    assert parameter.device.type == "cuda" and parameter.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason=CUDA_MISSING)
def test_cuda_index_out_of_range() -> None:
    with pytest.raises(ValueError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize(
    ("family", "params"),
    [("NeuralSplineDensity", {"n_layers": 2}), ("RealNVPDensity", {"n_layers": 2}), ("GlowDensity", {"n_steps": 2})],
)
def test_a_rows_score_does_not_depend_on_the_rows_scored_with_it(family: str, params: dict) -> None:
    # On this machine spline layers round differently for 3 or 4095-row
    # batches, and Glow's 5x5 LU map did by a row's position in the batch:
    # fixed-shape inference passes must hide both, across batch boundaries
    # and whatever the thread count, bit for bit.
    import skflow

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    flow = getattr(skflow, family)(**params, max_epochs=2, random_state=0).fit(X)
    size = flow._inference_batch_size
    X_test = rng.normal(size=(2 * size + 7, 5))
    full = flow.score_samples(X_test)
    pieces = [slice(0, 1), slice(1, 3), slice(3, 10), slice(size - 2, size + 5), slice(size + 5, 2 * size + 7)]
    for piece in pieces:
        np.testing.assert_array_equal(flow.score_samples(X_test[piece]), full[piece])
    np.testing.assert_array_equal(flow.transform(X_test[1:3]), flow.transform(X_test)[1:3])
    for n_threads in (1, 2):
        flow.set_params(n_threads=n_threads)
        np.testing.assert_array_equal(flow.score_samples(X_test), full)
