"""The import structure of skflow, read from the source with ``ast``.

Families are peers: a family's estimator module (the module that defines a
:class:`~skflow.base.FlowEstimator` subclass) imports what it shares from
lower modules (``base``, ``_builders``, ``nn``, ``flows``), never from
another family's module.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import skflow
from skflow.base import FlowEstimator
from tests.helpers import all_subclasses


def _family_modules() -> set[str]:
    # Import every module so that every estimator class is defined.
    # (``__main__`` runs the command line when imported: it defines nothing.)
    for info in pkgutil.walk_packages(skflow.__path__, "skflow."):
        if not info.name.endswith("__main__"):
            try:
                importlib.import_module(info.name)
            except ImportError:
                # An adapter for an optional package (skflow.pyod_adapter
                # without PyOD) defines no estimator family; the suite must
                # collect after `pip install ".[test]"` alone.
                continue
    modules = {cls.__module__ for cls in all_subclasses(FlowEstimator)}
    return {name for name in modules if name.startswith("skflow.") and name != "skflow.base"}


def imported_modules(source: str, module: str) -> set[str]:
    """Absolute names of the modules ``source`` (the text of ``module``) imports.

    Relative imports are resolved against the module's package; for
    ``from package import name`` both ``package`` and ``package.name`` are
    returned, since ``name`` may be a submodule. Imports inside functions
    count too (a lazy import is still a dependency).
    """
    package = module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}
    return found


def _source(module: str) -> str:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).read_text()


FAMILIES = sorted(_family_modules())


def test_every_family_is_found() -> None:
    # Guards the discovery itself: an empty or partial list would pass vacuously.
    expected = {"realnvp", "nice", "glow", "maf", "spline", "planar", "continuous", "injective"}
    assert {name.removeprefix("skflow.") for name in FAMILIES} >= expected


@pytest.mark.parametrize("module", FAMILIES)
def test_no_family_imports_another_family(module: str) -> None:
    others = set(FAMILIES) - {module}
    offending = sorted(imported_modules(_source(module), module) & others)
    assert not offending, (
        f"{module} imports the family module(s) {offending}; move what is shared into a lower module "
        "(skflow/_builders.py, skflow/base.py or skflow/flows/)."
    )


def test_the_check_sees_relative_absolute_and_lazy_imports() -> None:
    source = (
        "from .realnvp import coupling_stack\n"
        "import skflow.maf\n"
        "def build():\n"
        "    from . import glow\n"
        "from ..nn import MLP\n"
    )
    found = imported_modules(source, "skflow.flows.spline_like")
    assert {"skflow.flows.realnvp", "skflow.maf", "skflow.flows.glow", "skflow.nn", "skflow.nn.MLP"} <= found
    found = imported_modules(source, "skflow.spline")
    assert {"skflow.realnvp", "skflow.glow"} <= found
