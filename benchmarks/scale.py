"""How skflow's training scales: seconds per epoch and peak memory against rows, and data-parallel speed-up.

Each measurement runs in a fresh subprocess, so its peak resident memory
(``resource.getrusage(...).ru_maxrss``) is its own:

* ``n`` rows x 50 columns (a correlated Gaussian mixture) for every ``n`` of
  ``--sizes``: one epoch of a small RealNVP, in memory up to ``--stream-from``
  rows and streamed from a Parquet folder written to ``/tmp`` beyond;
  seconds per epoch (skorch's epoch duration: training plus validation),
  seconds of the whole fit (set-up included; for a stream, its pass over the
  data for the standardisation), the worker's peak RSS (generating in-memory
  data included) and that peak above the baseline (after imports and a
  small warm-up fit, before the data). The exponent
  ``b`` of ``seconds = a * n**b`` is fitted by least squares on the log-log
  points; linear scaling is ``b = 1``.
* Data-parallel speed-up: the same epoch on ``--dp-rows`` rows with
  ``torchrun --nproc_per_node 1`` and ``2`` (gloo on CPU, ``accelerator="auto"``).
* Memory of ``fit`` and ``score_samples`` on 2,000,000 x 10 float64 rows:
  peak RSS above the baseline (imports and the input already in memory),
  as a multiple of the input's size. ``fit`` is measured twice: as the
  first fit of the process (which also loads modules torch imports lazily)
  and after a warm-up fit on 20,000 rows. The peak is the kernel's VmHWM,
  reset to the baseline just before the call.

Usage::

    python benchmarks/scale.py                      # everything (about 15 min on 2 free cores)
    python benchmarks/scale.py --sizes 10000 100000 --no-dp --no-memory   # quick

Writes ``benchmarks/results/scale.json`` and ``scale.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
N_COLUMNS = 50
MODEL = {"n_layers": 2, "hidden_dims": (64,), "batch_size": 1024, "lr": 1e-3, "patience": None, "random_state": 0}


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _rows(n: int, seed: int, n_columns: int = N_COLUMNS) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(12345).normal(size=(n_columns, n_columns)) / np.sqrt(n_columns)
    rows = rng.normal(size=(n, n_columns)) @ mixing
    rows[: n // 2] += 1.5
    return rows


# ---------------------------------------------------------------------- #
# Workers (run in a subprocess)
# ---------------------------------------------------------------------- #
def worker_epoch(n: int, parquet: str | None) -> dict:
    from skflow import ParquetSource, RealNVPDensity

    # A small fit first: the first fit of a process loads torch modules
    # lazily (seconds), which would count as set-up of the timed one.
    RealNVPDensity(**MODEL, max_epochs=1).fit(_rows(2_000, seed=1))
    baseline = _rss_mb()
    data = ParquetSource(parquet, buffer_rows=1_000_000) if parquet else _rows(n, seed=0)
    estimator = RealNVPDensity(**MODEL, max_epochs=1)
    start = time.perf_counter()
    estimator.fit(data)
    total = time.perf_counter() - start
    return {
        "n": n,
        "mode": "parquet stream" if parquet else "in memory",
        "epoch_seconds": estimator.history_[0]["dur"],
        "fit_seconds": total,
        "peak_rss_mb": _peak_mb(),
        "baseline_rss_mb": baseline,
        "valid_loss": estimator.history_[0]["valid_loss"],
    }


def worker_dp(n: int, out: str) -> None:
    import torch.distributed as dist

    from skflow import RealNVPDensity

    estimator = RealNVPDensity(**MODEL, max_epochs=2, accelerator="auto").fit(_rows(n, seed=0))
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if estimator.is_main_process_:
        Path(out).write_text(
            json.dumps({"world_size": world, "rank": rank, "epoch_seconds": [row["dur"] for row in estimator.history_]})
        )


def _reset_peak() -> bool:
    """Restart the kernel's peak-RSS count (VmHWM) from the current RSS; False where Linux does not offer it."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def _peak_since_reset_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def worker_memory(what: str) -> dict:
    from skflow import RealNVPDensity

    X = _rows(2_000_000, seed=0, n_columns=10)
    settings = {"n_layers": 2, "hidden_dims": (16,), "batch_size": 4096, "max_epochs": 1, "random_state": 0}
    estimator = RealNVPDensity(**settings)
    if what in ("score_samples", "fit after a warm-up fit"):
        # Imports and caches that the first fit of a process loads lazily
        # (about 70 MB, the fused optimiser's torch modules among them) are
        # then in the baseline: what remains is what the rows cost.
        estimator.fit(X[:20_000])
    import gc

    gc.collect()
    baseline, peak_before = _rss_mb(), _peak_mb()
    # Peak from here on: generating X above left a higher high-water mark.
    exact = _reset_peak()
    start = time.perf_counter()
    estimator.score_samples(X) if what == "score_samples" else RealNVPDensity(**settings).fit(X)
    peak = _peak_since_reset_mb() if exact else _peak_mb()
    input_mb = X.nbytes / 2**20
    return {
        "what": what,
        "input_mb": input_mb,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": peak,
        "peak_before_mb": peak_before,
        "peak_reset": exact,
        "above_baseline_mb": peak - baseline,
        "ratio_to_input": (peak - baseline) / input_mb,
        "seconds": time.perf_counter() - start,
    }


# ---------------------------------------------------------------------- #
# Driver
# ---------------------------------------------------------------------- #
def _run_worker(arguments: list[str], timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.setdefault("OMP_NUM_THREADS", "1")
    completed = subprocess.run(
        [sys.executable, __file__, *arguments], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(completed.stderr[-3000:])
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _write_parquet(n: int, folder: Path, reuse: bool = False) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if reuse and folder.exists():
        n_written = sum(pq.ParquetFile(part).metadata.num_rows for part in sorted(folder.glob("*.parquet")))
        if n_written == n:
            return
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    step = 500_000
    for part, start in enumerate(range(0, n, step)):
        rows = _rows(min(step, n - start), seed=1000 + part).astype(np.float32)
        table = pa.table({f"x{j}": rows[:, j] for j in range(N_COLUMNS)})
        pq.write_table(table, folder / f"part{part:04d}.parquet", row_group_size=100_000)


def _dp_run(n_processes: int, n: int, timeout: float) -> dict:
    out = Path(f"/tmp/skflow_scale_dp_{n_processes}.json")
    out.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_processes}"]
    command += [__file__, "--worker", "dp", "--rows", str(n), "--out", str(out)]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if completed.returncode != 0:
        raise RuntimeError(completed.stderr[-3000:])
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000, 10_000_000])
    parser.add_argument("--stream-from", type=int, default=10_000_000, help="sizes from here on stream from Parquet")
    parser.add_argument("--dp-rows", type=int, default=200_000)
    parser.add_argument("--no-dp", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--reuse-parquet", action="store_true", help="keep a Parquet folder of the right size")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "scale.json"))
    parser.add_argument("--worker", choices=["epoch", "dp", "memory"], help=argparse.SUPPRESS)
    # --rows for the torchrun workers: torchrun takes "--n" for an abbreviation of its own --nnodes.
    parser.add_argument("--n", "--rows", dest="n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--parquet", help=argparse.SUPPRESS)
    parser.add_argument("--what", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker == "epoch":
        print(json.dumps(worker_epoch(args.n, args.parquet)))
        return
    if args.worker == "dp":
        worker_dp(args.n, args.out)
        return
    if args.worker == "memory":
        print(json.dumps(worker_memory(args.what)))
        return

    results: dict = {"model": {**MODEL, "hidden_dims": list(MODEL["hidden_dims"])}, "n_columns": N_COLUMNS}
    results["machine"] = {"cpus": os.cpu_count(), "note": "shared machine; timings are noisy"}
    epochs = []
    for n in args.sizes:
        arguments = ["--worker", "epoch", "--n", str(n)]
        if n >= args.stream_from:
            folder = Path(f"/tmp/skflow_scale_{n}")
            start = time.perf_counter()
            _write_parquet(n, folder, reuse=args.reuse_parquet)
            print(f"wrote {n} rows to {folder} in {time.perf_counter() - start:.0f} s", flush=True)
            arguments += ["--parquet", str(folder)]
        row = _run_worker(arguments, args.timeout)
        epochs.append(row)
        print(json.dumps(row), flush=True)
    results["epochs"] = epochs
    if len(epochs) >= 2:
        slope, _ = np.polyfit(np.log([r["n"] for r in epochs]), np.log([r["epoch_seconds"] for r in epochs]), 1)
        results["time_exponent"] = float(slope)
    if not args.no_dp:
        runs = {k: _dp_run(k, args.dp_rows, args.timeout) for k in (1, 2)}
        one, two = (float(np.mean(runs[k]["epoch_seconds"])) for k in (1, 2))
        results["data_parallel"] = {
            "rows": args.dp_rows,
            "one_process_s": one,
            "two_process_s": two,
            "speedup": one / two,
        }
        print(json.dumps(results["data_parallel"]), flush=True)
    if not args.no_memory:
        results["memory"] = [
            _run_worker(["--worker", "memory", "--what", what], args.timeout)
            for what in ("fit", "fit after a warm-up fit", "score_samples")
        ]
        for row in results["memory"]:
            print(json.dumps(row), flush=True)

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    lines = [
        "| rows | mode | s / epoch | fit s | peak RSS (MB) | above baseline (MB) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for row in epochs:
        lines.append(
            f"| {row['n']:,} | {row['mode']} | {row['epoch_seconds']:.2f} | {row['fit_seconds']:.1f} | "
            f"{row['peak_rss_mb']:.0f} | {row['peak_rss_mb'] - row['baseline_rss_mb']:.0f} |"
        )
    if "time_exponent" in results:
        lines.append(f"\nFitted exponent of seconds per epoch vs rows: {results['time_exponent']:.2f} (linear = 1).")
    if "data_parallel" in results:
        dp = results["data_parallel"]
        lines.append(
            f"\nData-parallel, {dp['rows']:,} rows: 1 process {dp['one_process_s']:.2f} s/epoch, "
            f"2 processes {dp['two_process_s']:.2f} s/epoch, speed-up {dp['speedup']:.2f}x."
        )
    if "memory" in results:
        lines.append("\n| 2,000,000 x 10 float64 | input (MB) | above baseline (MB) | x input |")
        lines.append("|---|---:|---:|---:|")
        for row in results["memory"]:
            lines.append(
                f"| {row['what']} | {row['input_mb']:.0f} | {row['above_baseline_mb']:.0f} | {row['ratio_to_input']:.2f} |"
            )
    table = "\n".join(lines)
    print(table)
    output.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
