"""sample_weight: weighted maximum likelihood in every family, the detector and routing.

Ground truth is the unweighted fit of the data the weights stand for: an
integer weight ``k`` is ``k`` copies of a row, a weight 0 is a row left out.
"""

from __future__ import annotations

import numpy as np
import pytest
import sklearn
import torch
from sklearn.model_selection import GridSearchCV, KFold
from skorch.dataset import Dataset

from skflow import DensityOutlierDetector, RealNVPDensity
from skflow.base import _standardisation
from skflow.training import DuplicateAwareSplit, _rows_of, train_model

from .helpers import correlated_data, estimator_id, fresh_estimator
from .registry import FAST_ESTIMATORS

# Full-batch training without a validation split: the weighted loss is then
# the mean over the repeated rows up to float32 summation order, which is all
# that separates the two fits. Adam's first steps move every weight by ~lr
# whatever the gradient's size, so rounding-level differences grow to ~1e-3
# nats after 30 epochs (measured max 7e-4); 5e-3 is well below the ~0.1 nats
# that ignoring the weights changes (checked by the last assertion).
_FULL_BATCH = {
    "n_layers": 2,
    "hidden_dims": (16,),
    "actnorm": False,  # data-dependent init sees a batch's rows, not its weights
    "max_epochs": 30,
    "batch_size": 100_000,
    "validation_fraction": None,
    "patience": None,
    "random_state": 0,
    "device": "cpu",
}


def _weighted_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, 2)) * [1.0, 2.0] + [0.0, 1.0]
    X[:20, 1] += 3.0  # the heavily weighted rows sit apart, so weights matter
    weights = np.where(np.arange(60) < 20, 3, 1)
    return X, weights


def test_integer_weights_match_repeated_rows():
    X, weights = _weighted_data()
    weighted = RealNVPDensity(**_FULL_BATCH).fit(X, sample_weight=weights)
    repeated = RealNVPDensity(**_FULL_BATCH).fit(np.repeat(X, weights, axis=0))
    unweighted = RealNVPDensity(**_FULL_BATCH).fit(X)
    np.testing.assert_allclose(weighted.mean_, repeated.mean_, rtol=1e-12)
    np.testing.assert_allclose(weighted.scale_, repeated.scale_, rtol=1e-12)
    np.testing.assert_allclose(weighted.score_samples(X), repeated.score_samples(X), atol=5e-3)
    assert np.abs(unweighted.score_samples(X) - repeated.score_samples(X)).max() > 0.1


def test_weighted_standardisation_is_that_of_repeated_rows():
    X, weights = _weighted_data()
    expected = (np.repeat(X, weights, axis=0).mean(axis=0), np.repeat(X, weights, axis=0).std(axis=0))
    for got, want in zip(_standardisation(X, weights.astype(float)), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("index", range(len(FAST_ESTIMATORS)), ids=estimator_id)
def test_zero_weights_equal_dropping_rows(index):
    X = correlated_data(n_samples=120)
    weights = np.ones(len(X))
    weights[::4] = 0.0
    weights[1::4] = 2.0
    dropped = fresh_estimator(index).fit(X[weights > 0], sample_weight=weights[weights > 0])
    zeroed = fresh_estimator(index).fit(X, sample_weight=weights)
    np.testing.assert_array_equal(zeroed.score_samples(X[:50]), dropped.score_samples(X[:50]))
    np.testing.assert_array_equal(zeroed.mean_, dropped.mean_)


def test_validation_loss_is_the_weighted_mean():
    # lr ~ 0 freezes the model, so the engine's validation loss must equal the
    # weighted mean negative log-likelihood of the held-out rows, computed
    # here from the split alone.
    X, weights = _weighted_data()
    rows = torch.as_tensor((X - X.mean(0)) / X.std(0), dtype=torch.float32)
    w = torch.as_tensor(weights, dtype=torch.float32)
    torch.manual_seed(0)
    model = RealNVPDensity(n_layers=2, hidden_dims=(8,), actnorm=False).build_model(2)
    for parameter in model.parameters():  # leave the identity initialisation
        torch.nn.init.normal_(parameter, std=0.3)
    result = train_model(
        model, rows, max_epochs=1, batch_size=7, lr=1e-12, validation_fraction=0.5, random_state=3, sample_weight=w
    )
    _, valid = DuplicateAwareSplit(0.5, 3)(Dataset(rows, w))
    held_out = _rows_of(valid)
    held_out_weights = w[[int(torch.nonzero((rows == row).all(1))[0]) for row in held_out]]
    with torch.no_grad():
        nll = -model.log_prob(held_out)
    expected = float((held_out_weights * nll).sum() / held_out_weights.sum())
    assert result.history[-1]["valid_loss"] == pytest.approx(expected, rel=1e-5)
    assert abs(float(nll.mean()) - expected) > 1e-3  # the weights do change it


def test_bad_weights_are_rejected():
    X, weights = _weighted_data()
    flow = RealNVPDensity(max_epochs=1, random_state=0)
    with pytest.raises(ValueError, match="Negative values"):
        flow.fit(X, sample_weight=-weights)
    with pytest.raises(ValueError, match="sample_weight.shape"):
        flow.fit(X, sample_weight=weights[:-1])
    with pytest.raises(ValueError, match="at least 2 rows"):
        flow.fit(X, sample_weight=np.eye(1, len(X))[0])
    assert not hasattr(flow, "model_")


def test_weighted_score():
    X, weights = _weighted_data()
    flow = RealNVPDensity(n_layers=1, hidden_dims=(8,), max_epochs=2, random_state=0).fit(X)
    log_density = flow.score_samples(X)
    assert flow.score(X, sample_weight=weights) == pytest.approx(np.repeat(log_density, weights).mean())


def test_detector_zero_weights_equal_dropping_rows():
    X = correlated_data(n_samples=150)
    weights = np.ones(len(X))
    weights[:30] = 0.0
    estimator = RealNVPDensity(n_layers=1, hidden_dims=(8,), max_epochs=3, random_state=0)
    zeroed = DensityOutlierDetector(estimator=estimator, trim_fraction=0.1).fit(X, sample_weight=weights)
    dropped = DensityOutlierDetector(estimator=estimator, trim_fraction=0.1).fit(X[30:], sample_weight=weights[30:])
    assert zeroed.offset_ == dropped.offset_
    np.testing.assert_array_equal(zeroed.decision_function(X), dropped.decision_function(X))


def test_detector_weighted_threshold_counts_copies():
    # A mixture has no sample_weight: the detector says so instead of dropping them.
    from sklearn.mixture import GaussianMixture

    X = correlated_data(n_samples=100)
    with pytest.raises(TypeError, match="does not accept sample_weight"):
        DensityOutlierDetector(estimator=GaussianMixture()).fit(X, sample_weight=np.ones(len(X)))
    # The threshold statistics use the weights: integer weights as copies.
    weights = np.where(np.arange(100) < 50, 1, 3)
    estimator = RealNVPDensity(**_FULL_BATCH)
    weighted = DensityOutlierDetector(estimator=estimator, contamination=0.1).fit(X, sample_weight=weights)
    log_density = weighted.estimator_.score_samples(X)
    expected = np.percentile(np.repeat(log_density, weights), 10, method="inverted_cdf")
    assert weighted.offset_ == pytest.approx(expected)


def test_grid_search_routes_sample_weight():
    X, weights = _weighted_data()
    X_repeated_weights = weights.astype(float)
    with sklearn.config_context(enable_metadata_routing=True):
        flow = RealNVPDensity(n_layers=1, hidden_dims=(8,), max_epochs=2, random_state=0)
        flow.set_fit_request(sample_weight=True).set_score_request(sample_weight=True)
        search = GridSearchCV(flow, {"lr": [1e-3, 1e-2]}, cv=KFold(3, shuffle=True, random_state=0))
        search.fit(X, sample_weight=X_repeated_weights)
        # The refit model was trained with the weights: its standardisation is weighted.
        np.testing.assert_allclose(search.best_estimator_.mean_, np.average(X, axis=0, weights=weights))
        # Not requested: routing refuses to drop the weights silently.
        unrequested = GridSearchCV(RealNVPDensity(max_epochs=1), {"lr": [1e-3]}, cv=2)
        with pytest.raises(Exception, match="sample_weight"):
            unrequested.fit(X, sample_weight=X_repeated_weights)
