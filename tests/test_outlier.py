"""DensityOutlierDetector: sklearn's outlier-detection conventions, over any density estimator."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import KernelDensity
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from skflow import DensityOutlierDetector, RealNVPDensity
from skflow.outlier import DETECTOR_NOISE_STD, average_precision_scorer, roc_auc_scorer
from tests.registry import expected_failures


def tiny_flow(**overrides) -> RealNVPDensity:
    params = {"n_layers": 2, "hidden_dims": (16,), "max_epochs": 3, "batch_size": 64, "random_state": 0}
    params.update(overrides)
    return RealNVPDensity(**params)


def planted_outliers(n_inliers: int = 400, n_outliers: int = 20, seed: int = 0):
    """Correlated Gaussian inliers; outliers on a far shell, so the truth is known."""
    rng = np.random.default_rng(seed)
    cov = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 1.0]])
    inliers = rng.multivariate_normal(np.zeros(3), cov, size=n_inliers)
    directions = rng.normal(size=(n_outliers, 3))
    outliers = 5.0 * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    X = np.vstack([inliers, outliers])
    y = np.r_[np.zeros(n_inliers, dtype=int), np.ones(n_outliers, dtype=int)]
    return X, y


_NO_WEIGHTS = "GaussianMixture.fit takes no sample_weight, so the detector raises a TypeError rather than ignore them"


def _expected_failures(detector) -> dict[str, str]:
    if isinstance(detector.estimator, GaussianMixture):
        checks = ["pandas_series", "not_an_array", "list", "shape", "not_overwritten"]
        return {
            **{f"check_sample_weights_{name}": _NO_WEIGHTS for name in checks},
            "check_sample_weight_equivalence_on_dense_data": _NO_WEIGHTS,
        }
    if isinstance(detector.estimator, RealNVPDensity):
        key = "check_sample_weight_equivalence_on_dense_data"
        return {key: expected_failures(detector.estimator)[key]}
    if detector.trim_fraction > 0:
        return {
            "check_sample_weight_equivalence_on_dense_data": (
                "trim_fraction drops a share of rows, not of weight, so a repeated row is trimmed as a block"
            )
        }
    return {}


@parametrize_with_checks(
    [
        DensityOutlierDetector(estimator=tiny_flow()),
        DensityOutlierDetector(estimator=GaussianMixture(random_state=0), contamination=0.1, score_type="typicality"),
        DensityOutlierDetector(estimator=KernelDensity(bandwidth=0.5), trim_fraction=0.1),
    ],
    expected_failed_checks=_expected_failures,
    xfail_strict=True,
)
def test_sklearn_common_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize(
    "density", [GaussianMixture(random_state=0), KernelDensity(bandwidth=0.5), tiny_flow(max_epochs=5)]
)
def test_conventions(density):
    X, _ = planted_outliers()
    detector = DensityOutlierDetector(estimator=density, contamination=0.05).fit(X)
    scores = detector.score_samples(X)
    # score_samples is the wrapped estimator's log-density, unchanged.
    np.testing.assert_allclose(scores, detector.estimator_.score_samples(X))
    np.testing.assert_allclose(detector.decision_function(X), scores - detector.offset_)
    labels = detector.predict(X)
    assert set(np.unique(labels)) <= {-1, 1}
    np.testing.assert_array_equal(labels == -1, detector.decision_function(X) < 0)
    # contamination sets the share of training rows predicted -1.
    assert abs(np.mean(labels == -1) - 0.05) <= 1 / len(X)
    # fit_predict on the training data is fit().predict().
    np.testing.assert_array_equal(DensityOutlierDetector(estimator=density, contamination=0.05).fit_predict(X), labels)
    # The wrapped estimator is cloned, not fitted in place.
    assert detector.estimator_ is not density


def test_ranks_planted_outliers():
    X, y = planted_outliers()
    detector = DensityOutlierDetector(estimator=tiny_flow(max_epochs=40, hidden_dims=(32,))).fit(X)
    # Both scores come from the same fitted density (the typicality
    # statistics are estimated in fit whatever the score), so one fit serves.
    for score_type in ("density", "typicality"):
        detector.set_params(score_type=score_type)
        auc = roc_auc_score(y, -detector.decision_function(X))
        assert auc > 0.95, (score_type, auc)
        assert roc_auc_scorer(detector, X, y) == pytest.approx(auc)
        # The other label convention (-1 = outlier) gives the same value.
        assert roc_auc_scorer(detector, X, np.where(y == 1, -1, 1)) == pytest.approx(auc)


def test_auto_contamination_is_tukeys_fence():
    X, y = planted_outliers()
    detector = DensityOutlierDetector(estimator=GaussianMixture(random_state=0)).fit(X)
    log_density = detector.estimator_.score_samples(X)
    q1, q3 = np.percentile(log_density, [25, 75])
    assert detector.offset_ == pytest.approx(q1 - 1.5 * (q3 - q1))
    flagged = detector.predict(X) == -1
    # The fence flags the far shell and few inliers.
    assert flagged[y == 1].mean() > 0.9
    assert flagged[y == 0].mean() < 0.05


def test_typicality_flags_too_likely_points():
    # Points at the mode are more likely than any typical training point of a
    # 50-d Gaussian (the typical set is a shell): the density score calls them
    # the most normal, the typicality score abnormal.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 50))
    mode = np.zeros((1, 50))
    density = DensityOutlierDetector(estimator=GaussianMixture(random_state=0)).fit(X)
    typicality = DensityOutlierDetector(estimator=GaussianMixture(random_state=0), score_type="typicality").fit(X)
    assert density.score_samples(mode)[0] > density.score_samples(X).max()
    assert typicality.predict(mode)[0] == -1
    # Typicality: minus the scaled distance of the log-density from the training median.
    log_density = typicality.estimator_.score_samples(X)
    median = np.median(log_density)
    spread = 1.4826 * np.median(np.abs(log_density - median))
    expected = -np.abs(typicality.estimator_.score_samples(mode) - median) / spread
    np.testing.assert_allclose(typicality.score_samples(mode), expected)


def test_trim_fraction_refits_without_least_likely_rows():
    X, y = planted_outliers(n_inliers=300, n_outliers=30)
    detector = DensityOutlierDetector(estimator=GaussianMixture(random_state=0), trim_fraction=0.1).fit(X)
    assert detector.n_trimmed_ == 33
    # The refit sees only the 297 most likely rows under the first fit, so
    # the fitted covariance is the inliers' (not inflated by the shell).
    first = GaussianMixture(random_state=0).fit(X)
    keep = np.argsort(-first.score_samples(X), kind="stable")[:297]
    expected = GaussianMixture(random_state=0).fit(X[np.sort(keep)])
    np.testing.assert_allclose(detector.estimator_.covariances_, expected.covariances_)
    assert y[np.sort(keep)].sum() < 3


def test_pipeline_and_grid_search():
    X, y = planted_outliers()
    pipeline = make_pipeline(StandardScaler(), DensityOutlierDetector(estimator=GaussianMixture(random_state=0)))
    labels = pipeline.fit(X).predict(X)
    assert set(np.unique(labels)) <= {-1, 1}
    # Two clusters with the outliers between them: a very wide kernel sees
    # one blob centred on the outliers, the right bandwidth sees the gap.
    rng = np.random.default_rng(1)
    inliers = np.vstack([rng.normal(-4, 1, size=(150, 2)), rng.normal(4, 1, size=(150, 2))])
    X = np.vstack([inliers, rng.uniform(-1.5, 1.5, size=(15, 2))])
    y = np.r_[np.zeros(300, dtype=int), np.ones(15, dtype=int)]
    search = GridSearchCV(
        DensityOutlierDetector(estimator=KernelDensity()),
        {"estimator__bandwidth": [0.5, 20.0]},
        scoring={"roc_auc": roc_auc_scorer, "average_precision": average_precision_scorer},
        refit="roc_auc",
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
    ).fit(X, y)
    assert search.best_params_ == {"estimator__bandwidth": 0.5}
    assert search.best_score_ > 0.95


def test_default_detector_is_a_seeded_noise_regularised_realnvp():
    X, _ = planted_outliers(seed=0)
    X_test, y_test = planted_outliers(seed=1)
    detector = DensityOutlierDetector(random_state=0).fit(X)
    assert detector.estimator is None
    assert isinstance(detector.estimator_, RealNVPDensity)
    assert detector.estimator_.noise_std == DETECTOR_NOISE_STD > 0
    # Everything else is RealNVPDensity's defaults, the Gaussian start included.
    differs = {"noise_std", "random_state"}
    expected = {key: value for key, value in RealNVPDensity().get_params().items() if key not in differs}
    assert {key: value for key, value in detector.estimator_.get_params().items() if key not in differs} == expected
    assert detector.estimator_.init == "gaussian"
    assert roc_auc_score(y_test, -detector.score_samples(X_test)) > 0.95
    # random_state seeds the default estimator: a second fit scores identically.
    again = DensityOutlierDetector(random_state=0).fit(X)
    np.testing.assert_array_equal(again.score_samples(X_test), detector.score_samples(X_test))
    # A given estimator keeps its own settings: the noise is the default's only.
    assert DensityOutlierDetector(estimator=tiny_flow()).fit(X).estimator_.noise_std == 0.0


def test_bad_input():
    X, y = planted_outliers()
    with pytest.raises(ValueError, match="contamination"):
        DensityOutlierDetector(estimator=GaussianMixture(), contamination=0.7).fit(X)
    with pytest.raises(ValueError, match="score_type"):
        DensityOutlierDetector(estimator=GaussianMixture(), score_type="likelihood").fit(X)
    with pytest.raises(ValueError, match="estimator"):
        DensityOutlierDetector(estimator=StandardScaler()).fit(X)
    with pytest.raises(ValueError, match="Outlier labels"):
        roc_auc_scorer(DensityOutlierDetector(estimator=GaussianMixture()).fit(X), X, y + 5)
    detector = DensityOutlierDetector(estimator=GaussianMixture()).fit(X)
    with pytest.raises(ValueError, match="features"):
        detector.predict(X[:, :2])
    with pytest.raises(ValueError):
        detector.predict(np.full((2, 3), np.nan))


class _BrokenDensity(GaussianMixture):
    """A density estimator that cannot score some rows (NaN)."""

    def score_samples(self, X):
        scores = super().score_samples(X)
        scores[np.asarray(X)[:, 0] > 4] = np.nan
        return scores


def test_nan_log_density_is_most_abnormal():
    X, _ = planted_outliers()
    detector = DensityOutlierDetector(estimator=_BrokenDensity(random_state=0), contamination=0.05).fit(X)
    query = np.array([[0.0, 0.0, 0.0], [4.5, 0.0, 0.0]])
    scores = detector.score_samples(query)
    assert np.isfinite(scores[0]) and scores[1] == -np.inf
    np.testing.assert_array_equal(detector.predict(query), [1, -1])
