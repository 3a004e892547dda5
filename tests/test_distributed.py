"""Data-parallel training through HF Accelerate (skflow/training.py, ``accelerator=``).

The main test launches a real two-process run with torchrun on the loopback
interface (gloo on CPU) and checks it against a one-process fit; the others
check the sharding arithmetic and that the accelerated path of one process
is the plain path exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from skorch.dataset import Dataset

from skflow import RealNVPDensity
from skflow.training import TensorBatches
from tests.helpers_distributed import SETTINGS, held_out_rows, training_rows

pytest.importorskip("accelerate")

ROOT = Path(__file__).resolve().parents[1]

# Held-out log-likelihood (nats per row) within which the 2-process fit must
# match the 1-process fit with the same seed. The two runs see the rows in
# different orders, so they are not equal: measured 0.13 at 25-30 epochs;
# one-process fits with seeds 0, 1, 2 spread over 0.11.
TOLERANCE_NATS = 0.2


def _launch(n_processes: int, out: Path, *, cpu: bool) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    if cpu:
        # gloo on CPU processes even where GPUs exist (with CUDA visible,
        # accelerator="auto" would put each rank on its own GPU).
        env["CUDA_VISIBLE_DEVICES"] = ""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_processes}"]
    command += [str(ROOT / "tests" / "scripts" / "distributed_fit.py"), str(out)]
    completed = subprocess.run(command, check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]


def test_two_process_gloo_fit_agrees_across_ranks_and_with_one_process(tmp_path: Path) -> None:
    _launch(2, tmp_path, cpu=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(2)]
    assert [result["world_size"] for result in ranks] == [2, 2]

    # Gradients all-reduced, shards initialised alike: bit-identical weights.
    state0, state1 = ranks[0]["state"], ranks[1]["state"]
    assert state0.keys() == state1.keys()
    for name in state0:
        assert torch.equal(state0[name], state1[name]), name
    # DistributedHistory pooled the losses: every rank saw the same epochs.
    assert ranks[0]["history"] == [
        {**row, "dur": ranks[0]["history"][i]["dur"]} for i, row in enumerate(ranks[1]["history"])
    ]

    single = RealNVPDensity(**SETTINGS).fit(training_rows())
    assert abs(ranks[0]["score"] - single.score(held_out_rows())) < TOLERANCE_NATS

    # A NaN on one rank only: both ranks stop in the same epoch, warn, and
    # restore the same best weights (no rank left waiting in an all-reduce).
    for result in ranks:
        assert len(result["diverged_history"]) == 3
        # The weights restored are those of the best epoch before the NaN, by the pooled validation loss.
        losses = [row["valid_loss"] for row in result["diverged_history"][:2]]
        assert result["diverged_best_epoch"] == 1 + int(np.argmin(losses))
        assert any("diverged in epoch 3" in message for message in result["diverged_warnings"])
    assert ranks[0]["diverged_best_epoch"] == ranks[1]["diverged_best_epoch"]
    for name, value in ranks[0]["diverged_state"].items():
        assert torch.isfinite(value).all() and torch.equal(value, ranks[1]["diverged_state"][name]), name


@pytest.mark.parametrize("n_rows", [1, 7, 100, 101])
def test_training_shards_partition_each_epoch(n_rows: int) -> None:
    rows = torch.arange(n_rows, dtype=torch.float32).reshape(-1, 1)
    seen = []
    counts = []
    for rank in range(3):
        batches = TensorBatches(
            Dataset(rows, None),
            batch_size=10,
            shuffle=True,
            rank=rank,
            world_size=3,
            generator=torch.Generator().manual_seed(4),
        )
        chunks = [batch for batch, _ in batches]
        assert len(chunks) == len(batches)
        assert all(len(chunk) <= 4 for chunk in chunks), "global batch of 10 over 3 ranks: 4 rows per rank"
        counts.append(len(chunks))
        seen.append(torch.cat(chunks).flatten())
    assert len(set(counts)) == 1, "every rank must take the same number of steps"
    everything = torch.cat(seen)
    assert set(everything.tolist()) == set(range(n_rows))
    assert len(everything) == n_rows + (-n_rows) % 3  # padded by wrapping around, at most world_size - 1 rows


@pytest.mark.parametrize("n_rows", [6, 10, 59])
def test_validation_shards_count_every_row_once_in_equal_batch_counts(n_rows: int) -> None:
    rows = torch.arange(n_rows, dtype=torch.float32).reshape(-1, 1)
    shards = [list(TensorBatches(Dataset(rows, None), batch_size=4, rank=rank, world_size=3)) for rank in range(3)]
    assert len({len(batches) for batches in shards}) == 1
    everything = torch.cat([batch for batches in shards for batch, _ in batches]).flatten()
    assert sorted(everything.tolist()) == list(range(n_rows))
    assert all(len(batch) > 0 for batches in shards for batch, _ in batches)


def test_one_process_accelerator_is_the_plain_engine_exactly() -> None:
    if torch.cuda.is_available():
        # Seen on an H200: the two GPU fits differed by up to 6e-3 in score,
        # as two plain GPU fits can (cuBLAS/atomic reductions are not
        # bitwise reproducible); exact equality is a CPU property.
        pytest.skip("bitwise equality of two fits holds on the CPU; GPU kernels are not run-to-run deterministic.")
    X = training_rows()[:600]
    settings = {**SETTINGS, "max_epochs": 3}
    plain = RealNVPDensity(**settings).fit(X)
    accelerated = RealNVPDensity(**settings, accelerator="auto").fit(X)
    np.testing.assert_array_equal(plain.score_samples(X), accelerated.score_samples(X))
    assert accelerated.history_[-1]["valid_loss"] == plain.history_[-1]["valid_loss"]


@pytest.mark.parametrize("verbose", [1, 2, 3])
def test_only_the_main_process_reports_progress(verbose: int, capsys: pytest.CaptureFixture[str]) -> None:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    class OtherRank(Accelerator):
        """What a rank other than the main one sees (accelerate's own print is silent there too)."""

        @property
        def is_main_process(self) -> bool:
            return False

        def print(self, *args: object, **kwargs: object) -> None:
            pass

    AcceleratorState._reset_state(reset_partial_state=True)
    X = training_rows()[:400]
    settings = {**SETTINGS, "max_epochs": 2, "device": "cpu", "verbose": verbose}
    RealNVPDensity(**settings, accelerator=Accelerator(cpu=True)).fit(X)
    main = capsys.readouterr()
    assert "train_loss" in main.out if verbose >= 2 else "ran all 2 epochs" in main.out
    AcceleratorState._reset_state(reset_partial_state=True)
    RealNVPDensity(**settings, accelerator=OtherRank(cpu=True)).fit(X)
    other = capsys.readouterr()
    assert other.out == "" and other.err == ""


def test_bf16_mixed_precision_on_cuda() -> None:
    if not torch.cuda.is_available() or not torch.cuda.is_bf16_supported():
        pytest.skip("CUDA is not available (or has no bf16) on this machine; bf16 training runs only on a GPU.")
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # Another test in this worker may have created an Accelerator already;
    # accelerate refuses a second one with other settings in one process.
    AcceleratorState._reset_state(reset_partial_state=True)
    X, held_out = training_rows(), held_out_rows()
    full = RealNVPDensity(**{**SETTINGS, "device": "cuda"}).fit(X)
    mixed = RealNVPDensity(**SETTINGS, accelerator=Accelerator(mixed_precision="bf16")).fit(X)
    assert mixed.device_.type == "cuda"
    assert abs(mixed.score(held_out) - full.score(held_out)) < TOLERANCE_NATS


def test_two_gpu_nccl_fit() -> None:
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        pytest.skip("CUDA with at least 2 GPUs is not available on this machine; the NCCL run needs them.")
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"skflow_nccl_{os.getpid()}"
    out.mkdir(exist_ok=True)
    _launch(2, out, cpu=False)
    ranks = [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(2)]
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name
