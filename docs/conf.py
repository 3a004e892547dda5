"""Sphinx configuration of skflow's documentation.

Build from the repository root (warnings are errors):

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The build needs no network. It executes every gallery example in its fast
mode (``SKFLOW_EXAMPLES_FAST=1``, a few epochs: a couple of minutes on two
cores) so that the pages show real figures; ``SKFLOW_EXAMPLES_FAST=0`` runs
the examples' full settings instead (tens of minutes), and
``-D plot_gallery=0`` shows the code without running it. Formulas are typeset
by a MathJax copy that ships with the ``sphinx-mathjax-offline`` package.
References to scikit-learn, NumPy, PyTorch and pandas link through the
inventories in ``docs/_intersphinx/`` (written by ``make_inventories.py``
there); ``SKFLOW_DOCS_INTERSPHINX=online`` reads those projects' own
inventories instead, which needs the network.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
# Document the working tree, also when skflow is not installed.
sys.path.insert(0, str(DOCS.parent))
# Importing skflow imports torch; one thread is plenty for reading docstrings.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The gallery runs in the examples' fast mode unless the caller asks otherwise.
os.environ.setdefault("SKFLOW_EXAMPLES_FAST", "1")

import skflow

project = "skflow"
author = "skflow developers"
copyright = "skflow developers"
release = skflow.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    # Serves MathJax from _static/mathjax instead of a CDN: formulas render offline.
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "skflow_docs",
]

templates_path = ["_templates"]
# benchmarks_adbench.rst is pulled into benchmarks.rst with ``.. include::``.
exclude_patterns = ["_build", "benchmarks_adbench.rst", "benchmarks_speed.rst", "benchmarks_dimred.rst"]
root_doc = "index"
default_role = "literal"

# -- API reference ------------------------------------------------------------
autosummary_generate = True
autodoc_typehints = "none"  # types are written in the numpydoc sections
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}
numpydoc_show_class_members = False  # the class template lists members through autodoc
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_validation_checks: set[str] = set()

# -- Links to other projects' documentation -------------------------------------
_INVENTORIES = DOCS / "_intersphinx"
_ONLINE = os.environ.get("SKFLOW_DOCS_INTERSPHINX") == "online"
intersphinx_mapping = {
    key: (url, None if _ONLINE else str(_INVENTORIES / f"{key}.inv"))
    for key, url in {
        "sklearn": "https://scikit-learn.org/stable/",
        "numpy": "https://numpy.org/doc/stable/",
        "torch": "https://docs.pytorch.org/docs/stable/",
        "pandas": "https://pandas.pydata.org/docs/",
    }.items()
}

# -- Gallery --------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # Every examples/plot_*.py is in the gallery; nothing else there is.
    "ignore_pattern": r"^(?!plot_)",
    # Executed in the examples' fast mode (set above), so the pages show figures.
    "plot_gallery": "True",
    # Names in the examples' code link to this API reference and, through
    # intersphinx, to scikit-learn's, NumPy's, PyTorch's and pandas'.
    "reference_url": {"skflow": None},
    # Every example's run time shows on its page; sg_execution_times.html lists them all.
    "min_reported_time": 0,
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "show_signature": False,
}

# -- HTML -----------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"skflow {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False
html_static_path = ["_static"]
html_css_files = ["skflow.css"]
# Pages without sub-pages need no left sidebar; their wide tables get the room.
html_sidebars = {page: [] for page in ("index", "getting_started", "architecture", "benchmarks", "api")}
