"""Every example in examples/ runs to completion in its fast mode and shows a figure.

``SKFLOW_EXAMPLES_FAST=1`` shrinks epochs and data; each example saves its
figure under examples/output/. Examples that read the real datasets in
``../shared/data`` are skipped, with a reason, on a checkout that lacks them.

The documentation build executes the same examples in the same fast mode
(sphinx-gallery, docs/conf.py). Where that build has just run, as in
``.ci/run``, ``SKFLOW_GALLERY_HTML`` names its output folder and this test
checks the rendered gallery instead of running every example a second time:
each example's page embeds at least one figure image that exists, and the
gallery index shows a thumbnail for it (sphinx-gallery makes it from the
first figure).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPOSITORY / "examples").glob("plot_*.py"))
SHARED_DATA = REPOSITORY.parent / "shared" / "data"
GALLERY_HTML = os.environ.get("SKFLOW_GALLERY_HTML")


@pytest.mark.skipif(GALLERY_HTML is not None, reason="the documentation build ran the examples (SKFLOW_GALLERY_HTML)")
@pytest.mark.parametrize("example", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_runs_in_fast_mode_and_saves_a_figure(example: Path) -> None:
    if "shared/data" in example.read_text() and not SHARED_DATA.exists():
        pytest.skip(f"{example.name} reads {SHARED_DATA}, which this checkout does not have")
    environment = {**os.environ, "SKFLOW_EXAMPLES_FAST": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    environment["PYTHONPATH"] = str(REPOSITORY) + os.pathsep + environment.get("PYTHONPATH", "")
    output = REPOSITORY / "examples" / "output"
    before = {path: path.stat().st_mtime for path in output.glob("*.png")} if output.exists() else {}
    result = subprocess.run(
        [sys.executable, str(example)], env=environment, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    written = [path for path in output.glob("*.png") if before.get(path) != path.stat().st_mtime]
    assert written, f"{example.name} saved no PNG under examples/output"
    assert all(path.stat().st_size > 1000 for path in written)


@pytest.mark.skipif(GALLERY_HTML is None, reason="set SKFLOW_GALLERY_HTML to a docs build's HTML folder to check it")
@pytest.mark.parametrize("example", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_gallery_page_shows_the_figures_of_the_executed_example(example: Path) -> None:
    html = Path(GALLERY_HTML)
    page = html / "auto_examples" / f"{example.stem}.html"
    assert page.exists(), f"the docs build wrote no gallery page for {example.name}"
    text = page.read_text()
    figures = re.findall(rf'src="(\.\./_images/sphx_glr_{example.stem}_\d+\.png)"', text)
    assert figures, f"{page.name} embeds no figure: the example did not run or drew nothing"
    for figure in figures:
        image = (page.parent / figure).resolve()
        assert image.exists() and image.stat().st_size > 5000, f"{image} is missing or nearly empty"
    # The index's thumbnail comes from the example's first figure, not the placeholder.
    index = (html / "auto_examples" / "index.html").read_text()
    thumbnails = re.findall(rf'src="\.\./(_images/sphx_glr_{example.stem}_thumb\.png)"', index)
    assert thumbnails, f"the gallery index has no thumbnail for {example.name}"
    assert (html / thumbnails[0]).stat().st_size > 1000


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_does_not_rely_on___file__(example: Path) -> None:
    # sphinx-gallery executes the examples for the docs without defining __file__
    # (sys.argv[0] is the script's path both there and on the command line).
    assert "__file__" not in example.read_text(), f"{example.name} uses __file__; use Path(sys.argv[0]) instead"
