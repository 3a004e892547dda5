"""Every hyperparameter of every estimator is keyword-only (scikit-learn's convention).

The estimators are discovered, not listed: every public class of ``skflow``
that is a scikit-learn estimator, and every subclass of
:class:`~skflow.base.FlowEstimator` that has been imported, so a new family or
adapter is covered as soon as it is exported from ``skflow/__init__.py``.
"""

from __future__ import annotations

import inspect

import pytest
from sklearn.base import BaseEstimator

import skflow
from skflow import FlowEstimator, RealNVPDensity
from tests.helpers import all_subclasses


def _estimator_classes() -> list[type]:
    public = {
        obj
        for name in skflow.__all__
        if isinstance(obj := getattr(skflow, name), type) and issubclass(obj, BaseEstimator)
    }
    # Only classes of the library itself: tests define throwaway subclasses too.
    library = {cls for cls in all_subclasses(FlowEstimator) if cls.__module__.startswith("skflow.")}
    return sorted(public | library, key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


ESTIMATOR_CLASSES = _estimator_classes()


def test_discovery_finds_the_estimators() -> None:
    # Guards the discovery itself: an empty or tiny list would make the test below vacuous.
    names = {cls.__name__ for cls in ESTIMATOR_CLASSES}
    assert {"RealNVPDensity", "InjectiveFlowEstimator", "DensityOutlierDetector", "FlowEstimator"} <= names


@pytest.mark.parametrize("estimator_class", ESTIMATOR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_init_parameter_is_keyword_only(estimator_class: type) -> None:
    parameters = list(inspect.signature(estimator_class.__init__).parameters.values())[1:]  # drop self
    assert parameters, f"{estimator_class.__name__}.__init__ takes no hyperparameter"
    positional = [p.name for p in parameters if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert not positional, f"{estimator_class.__name__}: not keyword-only: {positional}"


def test_positional_hyperparameter_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        RealNVPDensity(4)  # type: ignore[misc]
    with pytest.raises(TypeError):
        skflow.DensityOutlierDetector(RealNVPDensity())  # type: ignore[misc]


def test_redeclared_shared_field_stays_keyword_only() -> None:
    # A family that overrides a shared default (here noise_std) without any
    # KW_ONLY marker must not turn it into a positional parameter.
    class Redeclaring(FlowEstimator):
        n_layers: int = 2
        noise_std: float = 0.5

    with pytest.raises(TypeError):
        Redeclaring(7)  # type: ignore[misc]
    estimator = Redeclaring(noise_std=0.1, n_layers=3)
    assert estimator.get_params()["noise_std"] == 0.1
    assert estimator.get_params()["n_layers"] == 3
    assert Redeclaring().noise_std == 0.5


def test_the_library_holds_no_test_knowledge() -> None:
    # Which checks an estimator is expected to fail, and why, lives in
    # tests/registry.py (EXPECTED_FAILURES), not on the library's classes.
    holders = [cls.__name__ for cls in ESTIMATOR_CLASSES if "_expected_failed_checks" in vars(cls)]
    assert not holders, f"move these classes' _expected_failed_checks into tests/registry.py: {holders}"
