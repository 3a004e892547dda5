"""scikit-learn's common estimator checks, over every registered estimator.

A family that cannot pass a check declares it, with the reason, in
``EXPECTED_FAILURES`` of tests/registry.py; such checks are strict xfails,
so an entry that no longer fails must be removed.
"""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from tests.registry import FAST_ESTIMATORS, expected_failures


@parametrize_with_checks(FAST_ESTIMATORS, expected_failed_checks=expected_failures, xfail_strict=True)
def test_sklearn_compatible_estimator(estimator, check) -> None:
    check(estimator)
