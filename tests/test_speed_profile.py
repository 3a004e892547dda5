"""The bookkeeping of benchmarks/speed_profile.py and speed.py's statement timer, on problems with known answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import speed
import speed_profile


def test_breakdown_counts_the_flops_of_known_products_and_files_the_optimizer_apart() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 4)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-3, foreach=True)
    x = torch.randn(16, 8)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        for _ in range(2):
            optimizer.zero_grad()
            layer(x).square().sum().backward()
            optimizer.step()
    result = speed_profile.breakdown(prof, units=2)
    # Forward addmm 2*16*8*4 and the weight gradient mm 2*4*16*8 (x needs no gradient), per step.
    assert result["gflop"] * 1e9 == 2 * (2 * 16 * 8 * 4)
    shapes = result["matmul_shapes_per_unit"]
    assert shapes == {"addmm fwd [[4], [16, 8], [8, 4]]": 1.0, "mm bwd [[4, 16], [16, 8]]": 1.0}
    seconds = result["seconds"]
    assert seconds["matmul_forward"] > 0 and seconds["matmul_backward"] > 0 and seconds["optimizer"] > 0


def test_phased_script_times_every_statement_and_groups_the_imports() -> None:
    code = "import math\nimport json\nx = math.factorial(20)\nprint(json.dumps(x))\n"
    stdout = subprocess.run(
        [sys.executable, "-c", speed._phased(code)], capture_output=True, text=True, check=True
    ).stdout
    assert "2432902008176640000" in stdout  # the statements ran, in order
    phases = speed._phases(stdout)
    assert phases is not None
    assert [label for label, _, _ in phases] == ["imports", "x = math.factorial(20)", "print(json.dumps(x))"]
    assert all(wall >= 0 and cpu >= 0 for _, wall, cpu in phases)
