"""scikit-learn's common estimator checks, over every registered estimator.

A family that cannot pass a check declares it, with the reason, in
``EXPECTED_FAILURES`` of tests/registry.py; such checks are strict xfails,
so an entry that no longer fails must be removed.
"""

from __future__ import annotations

import inspect

from sklearn.utils.estimator_checks import parametrize_with_checks

from tests.registry import FAST_ESTIMATORS, expected_failures

# ``xfail_strict`` arrived in scikit-learn 1.7; on 1.6 (the declared floor) the
# declared failures are plain xfails, and the strictness is checked on newer releases.
_STRICT = {"xfail_strict": True} if "xfail_strict" in inspect.signature(parametrize_with_checks).parameters else {}


@parametrize_with_checks(FAST_ESTIMATORS, expected_failed_checks=expected_failures, **_STRICT)
def test_sklearn_compatible_estimator(estimator, check) -> None:
    check(estimator)
