"""The Gaussian start of the exact families (``init="gaussian"``).

Ground truth is independent of skflow's power sums: numpy's covariance of
the standardised rows, scikit-learn's ``ledoit_wolf``, scipy's
``multivariate_normal`` (for the cross-validated choice of the shrinkage,
fold by fold) and numpy's Cholesky factorisation. "Untrained" fits run one
epoch at a learning rate of 1e-12, which moves every weight by about 1e-12
(Adam's step is about ``lr``), so the fitted model is the model as built,
through the public API.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.base import clone
from sklearn.covariance import ledoit_wolf
from sklearn.utils._param_validation import InvalidParameterError

import skflow
from skflow import (
    DensityOutlierDetector,
    FlowRegressor,
    GlowDensity,
    MAFDensity,
    MemmapSource,
    NeuralSplineDensity,
    NICEDensity,
    RealNVPDensity,
)
from skflow.base import _SHRINKAGE_GRID, _START_FOLDS, _ledoit_wolf, _MomentSums
from skflow.flows import LULinear

SMALL = {"n_layers": 2, "hidden_dims": (8,), "random_state": 0}
UNTRAINED = {"max_epochs": 1, "lr": 1e-12, "validation_fraction": None}


def correlated_rows(n: int = 120, d: int = 4, seed: int = 0) -> np.ndarray:
    """Strongly correlated rows in non-standard units (means and scales far from 0 and 1)."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) + 2 * np.eye(d)
    return rng.normal(size=(n, d)) @ mixing.T * np.arange(1, d + 1) + np.linspace(-5, 20, d)


def blend(covariance: np.ndarray, shrinkage: float) -> np.ndarray:
    """``(1 - a) C + a * mean(diag C) * I``, written out."""
    d = len(covariance)
    return (1 - shrinkage) * covariance + shrinkage * np.trace(covariance) / d * np.eye(d)


def start_covariance(X: np.ndarray, estimator, extra_variance: np.ndarray | float = 0.0, weights=None) -> np.ndarray:
    """The start's covariance in standardised units, from numpy, at the estimator's chosen shrinkage."""
    standardised = (X - estimator.mean_) / estimator.scale_
    covariance = np.atleast_2d(np.cov(standardised.T, bias=True, aweights=weights))
    covariance = covariance + np.diag(np.broadcast_to(extra_variance, len(covariance)))
    return blend(covariance, estimator.start_shrinkage_)


def shrunk_gaussian(X: np.ndarray, estimator, extra_variance: np.ndarray | float = 0.0):
    """scipy's Gaussian in data units with the start's covariance."""
    covariance = start_covariance(X, estimator, extra_variance)
    return multivariate_normal(estimator.mean_, covariance * np.outer(estimator.scale_, estimator.scale_))


def whitening(X: np.ndarray, estimator) -> np.ndarray:
    return np.linalg.inv(np.linalg.cholesky(start_covariance(X, estimator)))


def cross_validated_shrinkage(X: np.ndarray, estimator, extra_variance: np.ndarray | float = 0.0) -> float:
    """The candidate with the best held-out Gaussian likelihood over the start's folds, by brute force."""
    standardised = (X - estimator.mean_) / estimator.scale_
    folds = np.arange(len(X)) % _START_FOLDS  # row i in fold i mod K
    candidates = sorted({*_SHRINKAGE_GRID, ledoit_wolf(standardised)[1]})
    scores = []
    for shrinkage in candidates:
        total = 0.0
        for fold in np.unique(folds):
            inside, outside = standardised[folds != fold], standardised[folds == fold]
            covariance = np.cov(inside.T, bias=True) + np.diag(np.broadcast_to(extra_variance, X.shape[1]))
            try:
                total += multivariate_normal(inside.mean(axis=0), blend(covariance, shrinkage)).logpdf(outside).sum()
            except (np.linalg.LinAlgError, ValueError):  # singular
                total = -np.inf
        scores.append(total)
    return candidates[int(np.argmax(scores))]


def start_layer(estimator) -> LULinear:
    layer = estimator.model_.transform.bijections[0]
    assert isinstance(layer, LULinear)
    return layer


def weight_of(estimator) -> np.ndarray:
    return start_layer(estimator).weight().detach().cpu().double().numpy()


# ---------------------------------------------------------------------- #
# The untrained flow is the shrunk Gaussian
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize(("dtype", "atol"), [("float64", 1e-5), ("float32", 1e-3)])
def test_untrained_realnvp_is_the_shrunk_gaussian(dtype: str, atol: float) -> None:
    X = correlated_rows()
    flow = RealNVPDensity(**SMALL, **UNTRAINED, dtype=dtype).fit(X)  # init="gaussian" is RealNVP's default
    assert flow.start_shrinkage_ == pytest.approx(cross_validated_shrinkage(X, flow), abs=1e-12)
    expected = shrunk_gaussian(X, flow).logpdf(X)
    np.testing.assert_allclose(flow.score_samples(X), expected, atol=atol, rtol=0)
    # Far from the identity start: the columns are strongly correlated.
    identity = RealNVPDensity(**SMALL, **UNTRAINED, dtype=dtype, init="identity").fit(X)
    assert np.mean(expected - identity.score_samples(X)) > 0.5


@pytest.mark.parametrize(
    "family", [NICEDensity, MAFDensity, NeuralSplineDensity, GlowDensity], ids=lambda cls: cls.__name__
)
def test_untrained_families_are_the_shrunk_gaussian(family) -> None:
    """Every family whose layers start as the identity starts exactly at the shrunk Gaussian."""
    X = correlated_rows(80)
    flow = family(init="gaussian", **UNTRAINED, dtype="float64", random_state=0).fit(X)
    np.testing.assert_allclose(flow.score_samples(X), shrunk_gaussian(X, flow).logpdf(X), atol=1e-5, rtol=0)


def test_dequantisation_and_noise_variances_are_part_of_the_start() -> None:
    rng = np.random.default_rng(1)
    X = correlated_rows(150, 3)
    X = np.column_stack([X, rng.integers(0, 4, size=len(X)) + np.round(X[:, 0] / 10)])  # an integer column
    flow = RealNVPDensity(**SMALL, **UNTRAINED, dtype="float64", noise_std=0.2).fit(X)
    assert flow.dequantized_features_.tolist() == [False, False, False, True]
    extra = (flow.dequantization_widths_ / flow.scale_) ** 2 / 12 + 0.2**2
    assert flow.start_shrinkage_ == pytest.approx(cross_validated_shrinkage(X, flow, extra), abs=1e-12)
    np.testing.assert_allclose(flow.score_samples(X), shrunk_gaussian(X, flow, extra).logpdf(X), atol=1e-5, rtol=0)


def test_few_rows_for_the_columns_get_a_shrunk_start() -> None:
    """Fewer rows than columns: the sample covariance is singular, and held-out rows ask for shrinkage."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 30)) @ (0.3 * rng.normal(size=(30, 30)) + np.eye(30))
    flow = RealNVPDensity(**SMALL, **UNTRAINED, dtype="float64").fit(X)
    assert 0 < flow.start_shrinkage_ < 1
    assert flow.start_shrinkage_ == pytest.approx(cross_validated_shrinkage(X, flow), abs=1e-12)
    np.testing.assert_allclose(flow.score_samples(X), shrunk_gaussian(X, flow).logpdf(X), atol=1e-5, rtol=0)


def test_nearly_collinear_columns_keep_an_unshrunk_start() -> None:
    """A column that is almost a sum of others: any shrinkage would cost likelihood (ADBench's vertebral)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 4))
    X = np.column_stack([X, X[:, 0] + X[:, 1] + 1e-3 * rng.normal(size=300)])
    flow = RealNVPDensity(**SMALL, **UNTRAINED, dtype="float64").fit(X)
    assert ledoit_wolf((X - flow.mean_) / flow.scale_)[1] > 0  # what Ledoit-Wolf alone would do
    assert flow.start_shrinkage_ == cross_validated_shrinkage(X, flow) == 0.0
    np.testing.assert_allclose(flow.score_samples(X), shrunk_gaussian(X, flow).logpdf(X), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------- #
# The covariance: sklearn's estimate, weights as copies, one streaming pass
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("shift", ["mean", "first_row", "zero"])
def test_power_sums_give_sklearns_ledoit_wolf(shift: str) -> None:
    X = correlated_rows(70, 6, seed=3) + 100.0
    mean, scale = X.mean(axis=0), X.std(axis=0)
    origin = {"mean": mean, "first_row": X[0], "zero": np.zeros(6)}[shift]
    covariance, shrinkage = _ledoit_wolf(_MomentSums(origin).add(X, np.ones(len(X))), mean, scale)
    expected, expected_shrinkage = ledoit_wolf((X - mean) / scale)
    np.testing.assert_allclose(covariance, expected, atol=1e-9, rtol=0)
    assert shrinkage == pytest.approx(expected_shrinkage, abs=1e-9)


def test_integer_weights_equal_repeated_rows() -> None:
    """Weighted power sums equal those of the repeated rows (covariance, Ledoit-Wolf); so does the start's covariance.

    The held-out choice of the shrinkage sees a weighted row in one fold where
    its copies may fall in several, so only the covariance it shrinks is
    compared across the two fits.
    """
    X = correlated_rows(50, 5, seed=4)
    weights = np.random.default_rng(4).integers(1, 4, size=len(X)).astype(float)
    repeated = np.repeat(X, weights.astype(int), axis=0)
    mean, scale = repeated.mean(axis=0), repeated.std(axis=0)
    weighted = _ledoit_wolf(_MomentSums(X[0]).add(X, weights), mean, scale)
    copies = _ledoit_wolf(_MomentSums(X[0]).add(repeated), mean, scale)
    expected, expected_shrinkage = ledoit_wolf((repeated - mean) / scale)
    np.testing.assert_allclose(weighted[0], copies[0], atol=1e-12, rtol=0)
    np.testing.assert_allclose(weighted[0], expected, atol=1e-10, rtol=0)
    assert weighted[1] == pytest.approx(expected_shrinkage, abs=1e-10)
    # Through fit: the weighted start is the start of the repeated rows.
    by_weight = RealNVPDensity(**SMALL, **UNTRAINED, dtype="float64").fit(X, sample_weight=weights)
    by_copies = RealNVPDensity(**SMALL, **UNTRAINED, dtype="float64").fit(repeated)
    np.testing.assert_allclose(by_weight.mean_, by_copies.mean_, rtol=1e-12)
    weighted_start = np.linalg.inv(np.linalg.cholesky(start_covariance(X, by_weight, weights=weights)))
    np.testing.assert_allclose(weight_of(by_weight), weighted_start, atol=1e-8, rtol=0)
    np.testing.assert_allclose(weight_of(by_copies), whitening(repeated, by_copies), atol=1e-8, rtol=0)


def test_streaming_fit_starts_where_the_in_memory_fit_does(tmp_path) -> None:
    """The moments come from the pass that computes the standardisation: chunk sums add up."""
    X = correlated_rows(300, 4, seed=5)
    np.save(tmp_path / "rows.npy", X)
    settings = {**SMALL, **UNTRAINED, "dtype": "float64"}
    in_memory = RealNVPDensity(**settings).fit(X)
    streamed = RealNVPDensity(**settings).fit(MemmapSource(tmp_path / "rows.npy", chunk_rows=37, buffer_rows=111))
    np.testing.assert_allclose(streamed.mean_, in_memory.mean_, rtol=1e-12)
    assert streamed.start_shrinkage_ == in_memory.start_shrinkage_
    np.testing.assert_allclose(weight_of(streamed), weight_of(in_memory), atol=1e-8, rtol=0)
    np.testing.assert_allclose(weight_of(streamed), whitening(X, streamed), atol=1e-8, rtol=0)


# ---------------------------------------------------------------------- #
# Training, continuation, persistence, parameters
# ---------------------------------------------------------------------- #
def test_start_layer_is_trained() -> None:
    X = correlated_rows(200)
    flow = RealNVPDensity(**SMALL, max_epochs=15, lr=1e-2, validation_fraction=None).fit(X)
    layer = start_layer(flow)
    assert all(parameter.requires_grad for parameter in layer.parameters())
    change = np.abs(weight_of(flow) - whitening(X, flow)).max()
    assert change > 1e-3, "training did not move the start layer"


def test_warm_start_and_partial_fit_do_not_initialise_again() -> None:
    X = correlated_rows(150, seed=6)
    other = correlated_rows(150, seed=7)  # a different covariance
    flow = RealNVPDensity(**SMALL, **UNTRAINED, dtype="float64").fit(X)
    before = weight_of(flow)
    np.testing.assert_allclose(before, whitening(X, flow), atol=1e-8, rtol=0)
    flow.set_params(warm_start=True).fit(other)
    np.testing.assert_allclose(weight_of(flow), before, atol=1e-8, rtol=0)
    assert np.abs(whitening(other, flow) - before).max() > 0.1  # a re-initialisation would show

    chunked = RealNVPDensity(**SMALL, lr=1e-12, dtype="float64")
    chunked.partial_fit(X)
    first = weight_of(chunked)
    np.testing.assert_allclose(first, whitening(X, chunked), atol=1e-8, rtol=0)
    chunked.partial_fit(other)
    np.testing.assert_allclose(weight_of(chunked), first, atol=1e-8, rtol=0)


def test_save_load_pickle_and_clone_keep_the_start(tmp_path) -> None:
    X = correlated_rows(150)
    flow = RealNVPDensity(**SMALL, max_epochs=3).fit(X)
    expected = flow.score_samples(X)
    skflow.save(flow, tmp_path / "flow.skflow")
    loaded = skflow.load(tmp_path / "flow.skflow")
    assert loaded.init == "gaussian"
    np.testing.assert_array_equal(loaded.score_samples(X), expected)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(flow)).score_samples(X), expected)
    # The saved file holds no leftover of the fit's set-up (the whitening is in the layer, nowhere else).
    assert not hasattr(flow, "_pending_start")
    assert clone(RealNVPDensity(init="identity")).init == "identity"
    assert clone(flow).init == "gaussian"


def test_identity_start_builds_the_family_alone() -> None:
    X = correlated_rows(100)
    flow = RealNVPDensity(**SMALL, max_epochs=1, init="identity").fit(X)
    assert not any(isinstance(layer, LULinear) for layer in flow.model_.transform.bijections)


def test_defaults() -> None:
    assert RealNVPDensity().init == "gaussian"
    for family in (NICEDensity, MAFDensity, NeuralSplineDensity, GlowDensity):
        assert family().init == "identity"
    # The detector's flow takes RealNVPDensity's start: its ADBench runs (seeds 1-3) were measured with it.
    detector = DensityOutlierDetector(random_state=0)
    assert detector._new_estimator().init == "gaussian"


@pytest.mark.parametrize("value", ["Gaussian", "pca", None])
def test_invalid_init_is_rejected(value) -> None:
    with pytest.raises(InvalidParameterError, match="The 'init' parameter of RealNVPDensity"):
        RealNVPDensity(init=value).fit(correlated_rows(50))


def test_conditional_estimators_start_at_the_identity() -> None:
    """A linear map of y cannot follow x: the regressor builds the family's own layers only."""
    rng = np.random.default_rng(8)
    X = rng.normal(size=(200, 2))
    y = np.column_stack([X[:, 0] + 0.3 * rng.normal(size=200), X[:, 0] - X[:, 1] + 0.3 * rng.normal(size=200)])
    regressor = FlowRegressor(flow=RealNVPDensity(**SMALL, max_epochs=3, init="gaussian")).fit(X, y)
    layers = regressor.model_.flow.transform.bijections
    assert not any(isinstance(layer, LULinear) for layer in layers)
    assert np.isfinite(regressor.score_samples(X, y)).all()


def test_float64_start_on_cuda_matches_the_gaussian() -> None:
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    X = correlated_rows()
    flow = RealNVPDensity(**SMALL, **UNTRAINED, dtype="float64", device="cuda").fit(X)
    assert flow.device_.type == "cuda" and start_layer(flow).lower.device.type == "cuda"
    np.testing.assert_allclose(flow.score_samples(X), shrunk_gaussian(X, flow).logpdf(X), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------- #
# The start is a candidate for the weights kept (epoch 0)
# ---------------------------------------------------------------------- #
def held_out_start_loss(X: np.ndarray, flow) -> float:
    """Mean negative log-density (standardised units) of the held-out rows under the start, from scipy."""
    rows = (X[flow._validation_index] - flow.mean_) / flow.scale_
    covariance = start_covariance(X, flow)
    return float(-multivariate_normal(np.zeros(X.shape[1]), covariance).logpdf(rows).mean())


def test_the_start_is_kept_when_no_epoch_beats_it() -> None:
    """Gaussian rows and a reckless learning rate: every epoch is worse than the untrained Gaussian."""
    X = np.random.default_rng(9).normal(size=(400, 4)) @ np.array(
        [[2.0, 0, 0, 0], [1.5, 1.0, 0, 0], [0, -1.0, 0.5, 0], [0.3, 0, 0.2, 1.0]]
    )
    flow = RealNVPDensity(**SMALL, max_epochs=3, lr=0.03, validation_fraction=0.25, dtype="float64").fit(X)
    start_loss = held_out_start_loss(X, flow)
    assert all(row["valid_loss"] > start_loss for row in flow.history_)
    assert flow.best_epoch_ == 0 and flow.n_iter_ == 3
    np.testing.assert_allclose(flow.score_samples(X), shrunk_gaussian(X, flow).logpdf(X), atol=1e-5, rtol=0)


def test_an_epoch_that_beats_the_start_is_kept() -> None:
    """Two half-moons are far from Gaussian: training improves on the start, and the best epoch is kept."""
    from sklearn.datasets import make_moons

    X, _ = make_moons(600, noise=0.05, random_state=0)
    flow = RealNVPDensity(**SMALL, max_epochs=15, lr=5e-3, validation_fraction=0.25, dtype="float64").fit(X)
    start_loss = held_out_start_loss(X, flow)
    assert flow.best_epoch_ >= 1
    assert flow.history_[flow.best_epoch_ - 1]["valid_loss"] < start_loss
