"""Write the intersphinx inventories the documentation build reads offline.

The build has no network, so it cannot download the ``objects.inv`` files of
scikit-learn, NumPy, PyTorch and pandas. This script writes small stand-ins
instead: it lists the public classes, functions and methods of the versions
installed here and maps each to the page that project's documentation gives
it (the URL schemes below). The scikit-learn entries were checked against the
``objects.inv`` of Debian's python-sklearn-doc 1.2.1: every object both list
has the same page, apart from the module pages that scikit-learn 1.5 moved to
``api/``. Run it again after a major upgrade of one of
them, from the repository root::

    python docs/_intersphinx/make_inventories.py

``docs/conf.py`` reads these files first and, with
``SKFLOW_DOCS_INTERSPHINX=online``, the projects' own inventories instead.
A name absent from an inventory is shown as code, without a link.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Where each project's documentation lives: docs/conf.py takes these URLs too.
BASE_URLS = {
    "sklearn": "https://scikit-learn.org/stable/",
    "numpy": "https://numpy.org/doc/stable/",
    "torch": "https://docs.pytorch.org/docs/stable/",
    "pandas": "https://pandas.pydata.org/docs/",
}

Entry = tuple[str, str, str]  # (name, role, uri)


def _public(names: list[str]) -> list[str]:
    return sorted(name for name in names if not name.startswith("_"))


def _methods(cls: type) -> list[str]:
    """Public methods a class defines or inherits (not those of ``object``)."""
    return _public([name for name, member in inspect.getmembers(cls) if callable(member) and not hasattr(object, name)])


def _role(obj: object) -> str | None:
    if inspect.isclass(obj):
        return "py:class"
    if callable(obj):
        return "py:function"
    return None


# ---------------------------------------------------------------- scikit-learn
def sklearn_entries() -> Iterator[Entry]:
    """Every object a public sklearn module exports: modules/generated/<name>.html."""
    import sklearn

    for module_info in pkgutil.iter_modules(sklearn.__path__):
        if module_info.name.startswith("_") or module_info.name in {"tests", "externals", "conftest"}:
            continue
        modules = [f"sklearn.{module_info.name}"]
        if module_info.ispkg:
            package = importlib.import_module(modules[0])
            modules += [
                f"{modules[0]}.{sub.name}"
                for sub in pkgutil.iter_modules(package.__path__)
                if not sub.name.startswith("_")
            ]
        for module_name in modules:
            if ".tests" in module_name:
                continue
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            yield module_name, "py:module", f"api/{module_name}.html#module-$"
            exported = {name: getattr(module, name, None) for name in getattr(module, "__all__", [])}
            lowercase_classes = {name.lower() for name, obj in exported.items() if inspect.isclass(obj)}
            for name in _public(list(getattr(module, "__all__", []))):
                obj = getattr(module, name, None)
                role = _role(obj)
                if role is None or not getattr(obj, "__module__", "").startswith("sklearn"):
                    continue
                full = f"{module_name}.{name}"
                page = f"modules/generated/{full}.html"
                if role == "py:function" and name.lower() in lowercase_classes:
                    # A function named like a class of its module (dbscan, DBSCAN) gets
                    # its own page name, for file systems that ignore case.
                    page = f"modules/generated/{name}-function.html"
                yield full, role, f"{page}#$"
                if role == "py:class":
                    for method in _methods(obj):
                        yield f"{full}.{method}", "py:method", f"{page}#$"


# ----------------------------------------------------------------------- NumPy
_NUMPY_RANDOM_PAGES = {
    "Generator": "reference/random/generator.html",
    "default_rng": "reference/random/generator.html",
    "RandomState": "reference/random/legacy.html",
    "SeedSequence": "reference/random/bit_generators/generated/numpy.random.SeedSequence.html",
}


def numpy_entries() -> Iterator[Entry]:
    """numpy.<callable>: reference/generated/numpy.<name>.html; scalar types: arrays.scalars."""
    import numpy as np

    for name in _public(dir(np)):
        obj = getattr(np, name)
        if inspect.isclass(obj) and issubclass(obj, np.generic):
            yield f"numpy.{name}", "py:class", "reference/arrays.scalars.html#$"
            continue
        role = _role(obj)
        if role is None or inspect.ismodule(obj):
            continue
        if isinstance(obj, np.ufunc):
            role = "py:data"
        yield f"numpy.{name}", role, f"reference/generated/numpy.{name}.html#$"
    for method in _methods(np.ndarray):
        yield f"numpy.ndarray.{method}", "py:method", f"reference/generated/numpy.ndarray.{method}.html#$"
    for name, page in _NUMPY_RANDOM_PAGES.items():
        yield f"numpy.random.{name}", _role(getattr(np.random, name)) or "py:function", f"{page}#$"
    for method in _methods(np.random.Generator):
        yield (
            f"numpy.random.Generator.{method}",
            "py:method",
            f"reference/random/generated/numpy.random.Generator.{method}.html#$",
        )


# --------------------------------------------------------------------- PyTorch
_TORCH_SPECIAL_PAGES = {
    "torch.Tensor": "tensors.html",
    "torch.device": "tensor_attributes.html",
    "torch.dtype": "tensor_attributes.html",
    "torch.utils.data.DataLoader": "data.html",
    "torch.utils.data.Dataset": "data.html",
    "torch.utils.data.TensorDataset": "data.html",
}


def torch_entries() -> Iterator[Entry]:
    """torch.<name>, torch.nn.<Module>, torch.nn.functional, torch.optim, torch.func: generated/<name>.html."""
    import torch

    namespaces = {
        "torch": torch,
        "torch.nn": torch.nn,
        "torch.nn.functional": torch.nn.functional,
        "torch.optim": torch.optim,
        "torch.func": torch.func,
        "torch.autograd": torch.autograd,
        "torch.linalg": torch.linalg,
        "torch.distributions": torch.distributions,
    }
    seen = set()
    for prefix, module in namespaces.items():
        names = getattr(module, "__all__", None) or dir(module)
        for name in _public(list(names)):
            obj = getattr(module, name, None)
            role = _role(obj)
            if role is None or inspect.ismodule(obj) or not re.match(r"[A-Za-z]", name):
                continue
            full = f"{prefix}.{name}"
            if prefix == "torch.distributions":
                page = "distributions.html"
            elif prefix == "torch.autograd" and role == "py:class":
                page = "autograd.html"
            else:
                page = _TORCH_SPECIAL_PAGES.get(full, f"generated/{full}.html")
            seen.add(full)
            yield full, role, f"{page}#$"
    for full, page in _TORCH_SPECIAL_PAGES.items():
        if full not in seen:
            yield full, "py:class", f"{page}#$"
    for method in _methods(torch.Tensor):
        yield f"torch.Tensor.{method}", "py:method", f"generated/torch.Tensor.{method}.html#$"
    for method in _methods(torch.nn.Module):
        yield f"torch.nn.Module.{method}", "py:method", "generated/torch.nn.Module.html#$"


# ---------------------------------------------------------------------- pandas
def pandas_entries() -> Iterator[Entry]:
    """pandas.<name> and the methods of DataFrame and Series: reference/api/<name>.html."""
    import pandas as pd

    for name in _public(dir(pd)):
        obj = getattr(pd, name)
        role = _role(obj)
        if role is None or inspect.ismodule(obj):
            continue
        yield f"pandas.{name}", role, f"reference/api/pandas.{name}.html#$"
    for cls in (pd.DataFrame, pd.Series):
        for method in _methods(cls):
            full = f"pandas.{cls.__name__}.{method}"
            yield full, "py:method", f"reference/api/{full}.html#$"


def write_inventory(path: Path, project: str, version: str, entries: Iterator[Entry]) -> int:
    """Write a Sphinx inventory (format version 2) and return its number of entries."""
    lines = sorted({f"{name} {role} 1 {uri} -" for name, role, uri in entries})
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    path.write_bytes(header.encode() + zlib.compress(("\n".join(lines) + "\n").encode(), 9))
    return len(lines)


def main() -> None:
    import numpy
    import pandas
    import sklearn
    import torch

    for key, project, module, entries in [
        ("sklearn", "scikit-learn", sklearn, sklearn_entries),
        ("numpy", "NumPy", numpy, numpy_entries),
        ("torch", "PyTorch", torch, torch_entries),
        ("pandas", "pandas", pandas, pandas_entries),
    ]:
        version = module.__version__.split("+")[0]
        path = HERE / f"{key}.inv"
        count = write_inventory(path, project, version, entries())
        print(f"{path.name}: {count} entries ({project} {version}, {path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
