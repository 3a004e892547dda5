"""scikit-learn's common estimator checks, over every registered estimator.

A family that cannot pass a check declares it, with the reason, in its
``_expected_failed_checks`` class attribute; such checks are strict xfails,
so an entry that no longer fails must be removed.
"""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from tests.registry import FAST_ESTIMATORS


def _declared_failures(estimator) -> dict[str, str]:
    return dict(getattr(estimator, "_expected_failed_checks", {}))


@parametrize_with_checks(FAST_ESTIMATORS, expected_failed_checks=_declared_failures, xfail_strict=True)
def test_sklearn_compatible_estimator(estimator, check) -> None:
    check(estimator)
