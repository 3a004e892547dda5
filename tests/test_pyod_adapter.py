"""PyODDensityDetector against PyOD itself: BaseDetector's contract, and use
inside PyOD's ensembling, combination and evaluation tools."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KernelDensity

pytest.importorskip("pyod")

from pyod.models.base import BaseDetector
from pyod.models.knn import KNN
from pyod.utils.data import generate_data
from pyod.utils.utility import precision_n_scores, standardizer

from skflow import DensityOutlierDetector, RealNVPDensity
from skflow.pyod_adapter import PyODDensityDetector

CONTAMINATION = 0.1
TINY_FLOW = {"n_layers": 2, "hidden_dims": (16,), "max_epochs": 15, "random_state": 0}


@pytest.fixture(scope="module")
def data() -> tuple:
    # PyOD's own benchmark generator: Gaussian inliers, uniform outliers (y = 1).
    return generate_data(n_train=300, n_test=150, n_features=3, contamination=CONTAMINATION, random_state=0)


@pytest.fixture(scope="module")
def fitted(data) -> PyODDensityDetector:
    X_train = data[0]
    return PyODDensityDetector(
        estimator=GaussianMixture(n_components=2, random_state=0), contamination=CONTAMINATION
    ).fit(X_train)


def _predict(detector: BaseDetector, X: np.ndarray) -> np.ndarray:
    # PyOD marks BaseDetector.predict deprecated in some versions; the contract is the same.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return detector.predict(X)


def test_is_a_pyod_detector_with_its_fitted_attributes(fitted, data) -> None:
    X_train = data[0]
    assert isinstance(fitted, BaseDetector)
    assert fitted.decision_scores_.shape == (len(X_train),)
    assert set(np.unique(fitted.labels_)) <= {0, 1}
    # threshold_ is the (1 - contamination) quantile of the training scores ...
    assert fitted.threshold_ == pytest.approx(np.percentile(fitted.decision_scores_, 100 * (1 - CONTAMINATION)))
    np.testing.assert_array_equal(fitted.labels_, (fitted.decision_scores_ > fitted.threshold_).astype(int))
    assert fitted.labels_.mean() == pytest.approx(CONTAMINATION, abs=1 / len(X_train))
    assert fitted.n_features_in_ == X_train.shape[1]


def test_anomaly_score_is_minus_the_fitted_log_density(fitted, data) -> None:
    X_train, X_test = data[0], data[1]
    # Ground truth: the wrapped mixture's own log-density, higher = more normal.
    log_density = fitted.detector_.estimator_.score_samples(X_test)
    np.testing.assert_allclose(fitted.decision_function(X_test), -log_density)
    np.testing.assert_allclose(fitted.decision_function(X_train), fitted.decision_scores_)
    # The sklearn-convention detector is the same ranking, reversed.
    reference = DensityOutlierDetector(estimator=GaussianMixture(n_components=2, random_state=0)).fit(X_train)
    np.testing.assert_allclose(fitted.decision_function(X_test), -reference.score_samples(X_test))


def test_higher_scores_are_the_outliers(fitted, data) -> None:
    _, X_test, _, y_test = data
    assert roc_auc_score(y_test, fitted.decision_function(X_test)) > 0.9
    assert precision_n_scores(y_test, fitted.decision_function(X_test)) > 0.6


def test_pyods_predictions_on_new_rows(fitted, data) -> None:
    X_test = data[1]
    scores = fitted.decision_function(X_test)
    labels = _predict(fitted, X_test)
    np.testing.assert_array_equal(labels, (scores > fitted.threshold_).astype(int))
    for method in ("linear", "unify"):
        proba = fitted.predict_proba(X_test, method=method)
        assert proba.shape == (len(X_test), 2)
        assert np.all((proba >= 0) & (proba <= 1))
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        # The outlier probability grows with the anomaly score.
        order = np.argsort(scores)
        assert np.all(np.diff(proba[order, 1]) >= -1e-12)
    confidence = fitted.predict_confidence(X_test)
    assert confidence.shape == (len(X_test),) and np.all((confidence >= 0) & (confidence <= 1))
    _, with_confidence = fitted.predict_proba(X_test, return_confidence=True)
    np.testing.assert_allclose(with_confidence, confidence)


def test_fit_predict_clone_and_bad_contamination(data) -> None:
    X_train = data[0]
    detector = PyODDensityDetector(estimator=KernelDensity(bandwidth=0.5), contamination=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        labels = detector.fit_predict(X_train)
    np.testing.assert_array_equal(labels, detector.labels_)
    copy = clone(detector)
    assert copy.get_params(deep=False).keys() == detector.get_params(deep=False).keys()
    assert copy.contamination == 0.05 and copy.estimator.bandwidth == 0.5 and copy.estimator is not detector.estimator
    assert not hasattr(copy, "decision_scores_")
    with pytest.raises(ValueError, match=r"contamination must be in \(0, 0.5\]"):
        PyODDensityDetector(contamination=0.7).fit(X_train)


def test_flows_in_pyods_ensembles(data) -> None:
    pytest.importorskip("combo", reason="PyOD's ensembles need the combo package (skflow[pyod] installs it)")
    from pyod.models.feature_bagging import FeatureBagging
    from pyod.models.lscp import LSCP

    X_train, X_test, _, y_test = data
    flow = PyODDensityDetector(estimator=RealNVPDensity(**TINY_FLOW), contamination=CONTAMINATION)
    mixture = PyODDensityDetector(estimator=GaussianMixture(random_state=0), contamination=CONTAMINATION)
    # LSCP picks, per region, the most competent of its detectors.
    lscp = LSCP([flow, mixture], n_bins=2, random_state=0).fit(X_train)
    assert roc_auc_score(y_test, lscp.decision_function(X_test)) > 0.85
    # Feature bagging fits clones on random feature subsets.
    bagging = FeatureBagging(base_estimator=mixture, n_estimators=3, random_state=0).fit(X_train)
    assert roc_auc_score(y_test, bagging.decision_function(X_test)) > 0.85


def _standardised_scores(data) -> np.ndarray:
    X_train, X_test = data[0], data[1]
    flow = PyODDensityDetector(estimator=RealNVPDensity(**TINY_FLOW), contamination=CONTAMINATION)
    detectors = [flow.fit(X_train), KNN().fit(X_train)]
    train_scores = np.column_stack([detector.decision_scores_ for detector in detectors])
    test_scores = np.column_stack([detector.decision_function(X_test) for detector in detectors])
    return standardizer(train_scores, test_scores)[1]


def test_standardised_scores_combine_with_other_pyod_detectors(data) -> None:
    # What PyOD's score combination does: z-score each detector by its training scores, then average.
    combined = _standardised_scores(data).mean(axis=1)
    assert roc_auc_score(data[3], combined) > 0.85


def test_pyods_combination_functions(data) -> None:
    pytest.importorskip("combo", reason="pyod.models.combination needs the combo package (skflow[pyod] installs it)")
    from pyod.models.combination import average, maximization

    test_standardised = _standardised_scores(data)
    for combined in (average(test_standardised), maximization(test_standardised)):
        assert roc_auc_score(data[3], combined) > 0.85
