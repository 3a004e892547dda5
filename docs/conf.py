"""Sphinx configuration of skflow's documentation.

Build from the repository root (warnings are errors; the gallery is not run):

    python -m sphinx -W --keep-going -b html docs docs/_build/html
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

import skflow

project = "skflow"
author = "skflow developers"
copyright = "skflow developers"
release = skflow.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "skflow_docs",
]

templates_path = ["_templates"]
# benchmarks_adbench.rst is pulled into benchmarks.rst with ``.. include::``.
exclude_patterns = ["_build", "benchmarks_adbench.rst", "benchmarks_speed.rst"]
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

# -- Gallery --------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # Every examples/plot_*.py is in the gallery; nothing else there is.
    "ignore_pattern": r"^(?!plot_)",
    # The examples read ../shared/data and train for minutes: the build shows
    # their code without running them. ``-D plot_gallery=1`` runs them.
    "plot_gallery": "False",
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
