"""A skflow density detector in PyOD's conventions, for PyOD's own tooling.

PyOD and scikit-learn disagree on what an outlier score means: in PyOD,
``decision_function`` is *higher for more abnormal* rows and ``predict``
returns 1 for outliers and 0 for inliers; in scikit-learn (and so in
:class:`~skflow.DensityOutlierDetector`), ``decision_function`` is higher
for more *normal* rows and ``predict`` returns -1 for outliers. One class
cannot honour both without one of them meaning the opposite of what its
users expect, so PyOD gets its own class here: a subclass of PyOD's
``BaseDetector`` that wraps a :class:`~skflow.DensityOutlierDetector`. It
inherits PyOD's own ``predict``, ``predict_proba``, ``predict_confidence``
and ``fit_predict``, so it behaves exactly as PyOD's detectors do inside
PyOD's combination, ensembling (LSCP, feature bagging) and benchmarking
utilities.

Importing this module requires PyOD (``pip install "skflow[pyod]"``).
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .outlier import DensityOutlierDetector

try:
    from pyod.models.base import BaseDetector
except ImportError as error:  # pragma: no cover - exercised only without pyod
    raise ImportError(
        "skflow.pyod_adapter needs PyOD; install it with: pip install 'skflow[pyod]' (or pip install pyod)."
    ) from error

__all__ = ["PyODDensityDetector"]


class PyODDensityDetector(BaseDetector):
    """Density-based outlier detection with PyOD's conventions.

    The anomaly score of a row is minus the score of a
    :class:`~skflow.DensityOutlierDetector`: with the default
    ``score_type="density"``, minus its log-density under the fitted
    estimator, so less likely rows are more abnormal.

    Parameters
    ----------
    estimator : estimator with ``fit`` and ``score_samples``, default=None
        The density estimator (cloned in ``fit``); None uses the
        :class:`~skflow.DensityOutlierDetector` default, a noise-regularised
        :class:`~skflow.RealNVPDensity`.
    contamination : float in (0, 0.5], default=0.1
        PyOD's contamination: the share of training rows labelled outliers,
        which sets ``threshold_`` (or a PyThresh thresholding object, as
        PyOD accepts).
    score_type : {"density", "typicality"}, default="density"
        See :class:`~skflow.DensityOutlierDetector`.
    trim_fraction : float in [0, 0.5), default=0.0
        See :class:`~skflow.DensityOutlierDetector`.
    random_state : int, RandomState instance or None, default=None
        Seeds the default estimator.

    Attributes
    ----------
    detector_ : DensityOutlierDetector
        The fitted scikit-learn-convention detector this one reads.
    decision_scores_ : ndarray of shape (n_samples,)
        Anomaly scores of the training rows (higher = more abnormal).
    threshold_ : float
        Anomaly score above which a row is labelled an outlier: the
        ``1 - contamination`` quantile of ``decision_scores_``.
    labels_ : ndarray of shape (n_samples,), dtype int
        1 for the training rows above ``threshold_``, else 0.

    See Also
    --------
    skflow.DensityOutlierDetector : The same detector in scikit-learn's conventions.

    Notes
    -----
    Rows the density estimator cannot score (NaN) get the anomaly score
    ``+inf``, the most abnormal; PyOD's min-max and z-score conversions are
    undefined for them.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.mixture import GaussianMixture
    >>> from skflow.pyod_adapter import PyODDensityDetector
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(size=(200, 2)), [[6.0, 6.0]]])
    >>> detector = PyODDensityDetector(estimator=GaussianMixture(), contamination=0.01).fit(X)
    >>> int(detector.labels_[-1])  # PyOD's labels: 1 = outlier
    1
    >>> bool(detector.decision_function([[6.0, 6.0]])[0] > detector.decision_function([[0.0, 0.0]])[0])
    True
    """

    def __init__(
        self,
        *,
        estimator: Any = None,
        contamination: float = 0.1,
        score_type: str = "density",
        trim_fraction: float = 0.0,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        # Stored untouched (scikit-learn's rule, so clone works); checked in fit.
        self.estimator = estimator
        self.contamination = contamination
        self.score_type = score_type
        self.trim_fraction = trim_fraction
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> PyODDensityDetector:
        """Fit the density estimator and set PyOD's threshold and labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows (they may contain outliers).
        y : None
            Ignored (PyOD warns if given).

        Returns
        -------
        self : PyODDensityDetector
        """
        numeric = isinstance(self.contamination, Real) and not isinstance(self.contamination, bool)
        if numeric and not 0 < self.contamination <= 0.5:
            raise ValueError(f"contamination must be in (0, 0.5], got {self.contamination!r}.")
        if not numeric and not hasattr(self.contamination, "fit"):
            raise ValueError(
                f"contamination must be a float in (0, 0.5] or a PyThresh thresholder, got {self.contamination!r}."
            )
        self._set_n_classes(y)
        detector = DensityOutlierDetector(
            estimator=self.estimator,
            # The inner threshold is not used here, but kept consistent for its users.
            contamination=float(self.contamination) if numeric else "auto",
            score_type=self.score_type,
            trim_fraction=self.trim_fraction,
            random_state=self.random_state,
        )
        self.detector_ = detector.fit(X)
        self.decision_scores_ = -self.detector_.score_samples(X)
        self._process_decision_scores()
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Anomaly score of each row: higher means more abnormal.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        anomaly_scores : ndarray of shape (n_samples,)
            ``-DensityOutlierDetector.score_samples(X)``: minus the
            log-density with ``score_type="density"``.
        """
        check_is_fitted(self, ["detector_", "decision_scores_"])
        return -self.detector_.score_samples(X)

    @property
    def n_features_in_(self) -> int:
        """Number of features seen during fit."""
        check_is_fitted(self, "detector_")
        return self.detector_.n_features_in_
