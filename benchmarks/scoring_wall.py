"""Wall-clock scoring rows/s of the speed benchmark's RealNVP against zuko and nflows, at 1 and 2 threads.

``speed.py --parts scoring`` reports rows per CPU-second with one thread, which
is robust on a shared machine. This script answers the other question, how
many rows per second a user sees on this machine's cores: the same 8-coupling
(128, 128) architecture on the 50-D table, 102,400 rows per call, median of
three calls, each library given the same number of torch threads. Run it on an
idle machine; it prints one line per library and thread count and writes
``benchmarks/results/scoring_wall.{md,json}``.

    python benchmarks/scoring_wall.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peer_benchmark as peers
import speed


def main() -> None:
    architecture = peers.Architecture(n_layers=8, hidden_dims=(128, 128), epochs=1)
    X_train, X_score = speed.table_50d(0, 2048, 4096)
    X_big = np.tile(X_score, (25, 1))
    rows: list[dict] = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for contender in speed.FAMILIES["realnvp"]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = contender.fit(X_train, architecture, 0)
            if "n_threads" in getattr(model, "get_params", dict)():
                model.set_params(n_threads=threads)  # skflow would otherwise size its own threads
            contender.score(model, X_big[:2048])  # warm
            rates = []
            for _ in range(3):
                start = time.perf_counter()
                contender.score(model, X_big)
                rates.append(len(X_big) / (time.perf_counter() - start))
            rate = statistics.median(rates)
            rows.append({"threads": threads, "library": contender.name, "rows_per_second": rate})
            print(f"{threads} thread(s)  {contender.name:>7}: {rate:,.0f} rows/s", flush=True)
    load = os.getloadavg()
    lines = [
        "Command: `python benchmarks/scoring_wall.py`; RealNVP, 8 couplings of (128, 128), 50-D table,",
        f"{len(X_big):,} rows per call, median of three calls; load average at the end: {load[0]:.2f}.",
        "",
        "| threads | library | rows / s (wall) | vs zuko |",
        "|---:|---|---:|---:|",
    ]
    for row in rows:
        zuko = next(r["rows_per_second"] for r in rows if r["threads"] == row["threads"] and r["library"] == "zuko")
        lines.append(
            f"| {row['threads']} | {row['library']} | {row['rows_per_second']:,.0f} | {row['rows_per_second'] / zuko:.2f}x |"
        )
    results = Path(__file__).resolve().parent / "results"
    (results / "scoring_wall.md").write_text("\n".join(lines) + "\n")
    (results / "scoring_wall.json").write_text(json.dumps({"load_average": load, "rows": rows}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
