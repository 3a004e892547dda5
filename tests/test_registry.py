"""A family is registered once, in skflow/registry.py; everything else is checked against it.

The CLI derives its ``--model`` names from ``skflow.registry.FAMILIES``. The
other places a family must appear (skflow's public names, the API page, the
README's estimator table, the test registry) cannot derive from it, so each
test here fails, naming what is missing, when a family is left out of one.
A new estimator class anywhere in skflow that has its own ``build_model``
must be registered, or the first test fails.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
from pathlib import Path

import pytest

import skflow
from skflow.base import FlowEstimator
from skflow.cli import make_estimator
from skflow.registry import FAMILIES
from tests.helpers import all_subclasses
from tests.registry import FAST_ESTIMATORS

ROOT = Path(__file__).resolve().parents[1]
# Modules that exist to bridge skflow to an optional library, and the library each imports.
OPTIONAL_ADAPTERS = {"skflow.pyod_adapter": "pyod"}
FAMILY_CLASSES = sorted(set(FAMILIES.values()), key=lambda cls: cls.__name__)


def _defined_families() -> set[type]:
    """Every public FlowEstimator subclass of skflow with a model of its own (a concrete family)."""
    for info in pkgutil.walk_packages(skflow.__path__, "skflow."):
        if info.name.endswith("__main__"):  # importing __main__ runs the command line
            continue
        optional_dependency = OPTIONAL_ADAPTERS.get(info.name)
        if optional_dependency is not None and importlib.util.find_spec(optional_dependency) is None:
            continue  # an adapter to a library that is not installed defines no family
        importlib.import_module(info.name)
    return {
        cls
        for cls in all_subclasses(FlowEstimator)
        if cls.__module__.startswith("skflow.")
        and not cls.__name__.startswith("_")
        and cls.build_model is not FlowEstimator.build_model
    }


def test_every_family_defined_in_skflow_is_registered() -> None:
    defined = _defined_families()
    assert len(defined) >= 11, "the discovery must find the families (guards against a vacuous pass)"
    missing = sorted(cls.__name__ for cls in defined - set(FAMILIES.values()))
    assert not missing, f"add these to FAMILIES in skflow/registry.py: {missing}"


def test_registry_names_are_lowercase_and_unique() -> None:
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in FAMILIES)
    assert len(set(FAMILIES.values())) == len(FAMILIES), "one command-line name per family"


@pytest.mark.parametrize("family", FAMILY_CLASSES, ids=lambda cls: cls.__name__)
def test_family_is_public(family: type) -> None:
    assert family.__name__ in skflow.__all__, f"export {family.__name__} in skflow/__init__.py (__all__)"
    assert getattr(skflow, family.__name__) is family


def test_every_public_name_is_on_the_api_page() -> None:
    api = (ROOT / "docs" / "api.rst").read_text()
    listed = set(re.findall(r"^\s+(\w+)\s*$", api, flags=re.MULTILINE))
    missing = sorted(name for name in skflow.__all__ if not name.startswith("__") and name not in listed)
    assert not missing, f"add these to docs/api.rst: {missing}"


def test_every_family_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    table_rows = [line for line in readme.splitlines() if line.startswith("|")]
    in_table = set(re.findall(r"`(\w+)`", "\n".join(table_rows)))
    missing = sorted(cls.__name__ for cls in FAMILY_CLASSES if cls.__name__ not in in_table)
    assert not missing, f"add these to the README's estimator table: {missing}"


def test_every_family_has_a_fast_configuration_in_the_test_registry() -> None:
    covered = {type(estimator) for estimator in FAST_ESTIMATORS}
    missing = sorted(cls.__name__ for cls in FAMILY_CLASSES if cls not in covered)
    assert not missing, f"add a FAST_ESTIMATORS entry in tests/registry.py for: {missing}"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_cli_builds_every_registered_family(name: str) -> None:
    estimator = make_estimator(name, {"max_epochs": 2}, verbose=0)
    assert type(estimator) is FAMILIES[name]
    assert estimator.max_epochs == 2
