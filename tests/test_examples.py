"""Every example in examples/ runs to completion in its fast mode, so examples never rot.

``SKFLOW_EXAMPLES_FAST=1`` shrinks epochs and data; each example saves its
figure under examples/output/. Examples that read the real datasets in
``../shared/data`` are skipped, with a reason, on a checkout that lacks them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPOSITORY / "examples").glob("plot_*.py"))
SHARED_DATA = REPOSITORY.parent / "shared" / "data"


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
