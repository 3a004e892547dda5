"""partial_fit and warm_start (skflow/base.py): training continued across calls.

Ground truth: a Gaussian's log-density in closed form; the optimiser's step
counter, which must add up over calls; and fitted state that a failed call
must leave bit-for-bit as it was.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.preprocessing import StandardScaler

from skflow import (
    CNFDensity,
    FlowMatchingDensity,
    FreeFormFlowDensity,
    InjectiveFlowEstimator,
    MAFDensity,
    RealNVPDensity,
)
from skflow.training import TrainingDivergedError

_COVARIANCE = np.array([[1.0, 0.6], [0.6, 2.0]])
_MEAN = np.array([3.0, -1.0])


def _gaussian(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).multivariate_normal(_MEAN, _COVARIANCE, size=n)


def _steps(estimator) -> int:
    return int(max(float(state["step"]) for state in estimator._optimizer_state["state"].values()))


def test_partial_fit_over_chunks_learns_the_density() -> None:
    estimator = MAFDensity(n_layers=2, hidden_dims=(16,), batch_size=100, lr=3e-3, random_state=0)
    for epoch in range(8):
        for chunk in np.array_split(_gaussian(4000, seed=epoch), 4):
            estimator.partial_fit(chunk)
    assert estimator.n_iter_ == len(estimator.history_) == 32
    held_out = _gaussian(4000, seed=100)
    truth = multivariate_normal(_MEAN, _COVARIANCE).logpdf(held_out).mean()
    # Exact expected log-likelihood ~ -2.86; a 2-layer MAF after 32 chunk passes is within 0.05 nats.
    assert abs(estimator.score(held_out) - truth) < 0.05


def test_partial_fit_keeps_the_optimiser_and_the_first_standardisation() -> None:
    first, second = _gaussian(1000, seed=0), _gaussian(1000, seed=1) + 10.0
    estimator = RealNVPDensity(n_layers=2, batch_size=100, random_state=0).partial_fit(first)
    mean, scale = estimator.mean_.copy(), estimator.scale_.copy()
    np.testing.assert_allclose(mean, first.mean(axis=0))
    assert _steps(estimator) == 10  # one pass over 1000 rows in batches of 100
    estimator.partial_fit(second)
    assert _steps(estimator) == 20, "AdamW's state must carry over from the first call"
    np.testing.assert_array_equal(estimator.mean_, mean)
    np.testing.assert_array_equal(estimator.scale_, scale)
    assert estimator.n_iter_ == 2 and estimator.best_epoch_ == 2


def test_partial_fit_uses_a_supplied_scaler() -> None:
    X = _gaussian(500, seed=0)
    scaler = StandardScaler().fit(_gaussian(5000, seed=1))
    estimator = RealNVPDensity(n_layers=2, random_state=0).partial_fit(X, scaler=scaler)
    np.testing.assert_array_equal(estimator.mean_, scaler.mean_)
    np.testing.assert_array_equal(estimator.scale_, scaler.scale_)
    with pytest.raises(ValueError, match="only used by the first partial_fit"):
        estimator.partial_fit(X, scaler=scaler)
    with pytest.raises(ValueError, match="scaler must have mean_ and positive scale_"):
        RealNVPDensity().partial_fit(X, scaler=StandardScaler().fit(X[:, :1]))


def test_partial_fit_rejects_a_different_number_of_features() -> None:
    estimator = RealNVPDensity(n_layers=2, random_state=0).partial_fit(_gaussian(200, seed=0))
    with pytest.raises(ValueError, match="features"):
        estimator.partial_fit(np.zeros((10, 3)))


def test_a_diverging_partial_fit_leaves_the_fitted_model_untouched() -> None:
    estimator = RealNVPDensity(n_layers=2, random_state=0).partial_fit(_gaussian(300, seed=0))
    before = {name: value.clone() for name, value in estimator.model_.state_dict().items()}
    history = list(estimator.history_)
    with pytest.raises(TrainingDivergedError):
        estimator.partial_fit(np.full((300, 2), 1e30))
    for name, value in estimator.model_.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert estimator.history_ == history and estimator.n_iter_ == 1


def test_warm_start_continues_from_the_fitted_weights() -> None:
    X = _gaussian(1000, seed=0)
    estimator = RealNVPDensity(n_layers=2, max_epochs=5, patience=None, random_state=0, warm_start=True).fit(X)
    steps, mean = _steps(estimator), estimator.mean_.copy()
    before = estimator.score(X)
    estimator.set_params(lr=1e-12, max_epochs=1).fit(X + 100.0)
    # An infinitesimal step: the weights, and so the density, are those of the first fit,
    # and the standardisation of the first fit is kept although the data moved.
    np.testing.assert_allclose(estimator.score(X), before, atol=1e-5)
    np.testing.assert_array_equal(estimator.mean_, mean)
    assert estimator.n_iter_ == 6 and len(estimator.history_) == 6
    assert _steps(estimator) > steps

    cold = RealNVPDensity(n_layers=2, max_epochs=5, patience=None, random_state=0).fit(X)
    cold.set_params(lr=1e-12, max_epochs=1).fit(X + 100.0)
    assert cold.n_iter_ == 1 and not np.allclose(cold.mean_, mean)


def test_the_injective_flow_cannot_continue_training_and_says_why() -> None:
    assert not hasattr(InjectiveFlowEstimator(), "partial_fit")
    with pytest.raises(ValueError, match="does not support warm_start=True: its fit ends by estimating"):
        InjectiveFlowEstimator(warm_start=True, max_epochs=1).fit(_gaussian(50, seed=0))


@pytest.mark.parametrize(
    "family",
    [
        lambda: FlowMatchingDensity(hidden_dims=(16,), random_state=0),
        lambda: CNFDensity(hidden_dims=(16,), solver="rk4", n_steps=4, random_state=0),
        lambda: FreeFormFlowDensity(hidden_dims=(16,), random_state=0),
    ],
    ids=["FlowMatchingDensity", "CNFDensity", "FreeFormFlowDensity"],
)
def test_other_families_continue_training_across_chunks(family) -> None:
    estimator = family()
    estimator.partial_fit(_gaussian(200, seed=0))
    steps = _steps(estimator)
    estimator.partial_fit(_gaussian(200, seed=1))
    assert _steps(estimator) == 2 * steps and estimator.n_iter_ == 2
    assert np.isfinite(estimator.score_samples(_gaussian(20, seed=2))).all()
