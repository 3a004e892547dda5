"""PlanarFlowDensity: which way round should the planar maps go?

Both orientations are exact flows (the other direction is a scalar root solve
to machine precision), but they are different model families with different
costs: ``"generative"`` (Rezende & Mohamed's planar maps turn base samples
into data, densities need the root solve) and ``"normalizing"`` (the maps turn
data into latent codes, densities are one cheap pass). This script fits both,
at two depths, on 2-D toy data with identical training settings and seeds,
and reports held-out mean log-likelihood (nats per row) and wall time, with
GaussianMixture(1) and GaussianMixture(8) as reference points.

Usage::

    python benchmarks/planar_orientation.py
    python benchmarks/planar_orientation.py --seeds 0 1 2 --max-epochs 100

Writes ``benchmarks/results/planar_orientation.json`` and prints a markdown
table. Timings depend on machine load; compare rows of the same run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import make_circles, make_moons
from sklearn.mixture import GaussianMixture

from skflow import PlanarFlowDensity

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _dataset(name: str, n_rows: int, seed: int) -> np.ndarray:
    if name == "moons":
        return make_moons(n_rows, noise=0.1, random_state=seed)[0]
    return make_circles(n_rows, noise=0.05, factor=0.5, random_state=seed)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["moons", "circles"])
    parser.add_argument("--layers", nargs="+", type=int, default=[16, 32])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--n-rows", type=int, default=1000)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=5e-3)
    args = parser.parse_args()

    rows = []
    for dataset in args.datasets:
        for seed in args.seeds:
            X = _dataset(dataset, args.n_rows, 2 * seed)
            X_test = _dataset(dataset, args.n_rows, 2 * seed + 1)
            for n_components in (1, 8):
                start = time.perf_counter()
                score = GaussianMixture(n_components, random_state=seed).fit(X).score(X_test)
                rows.append(
                    {
                        "dataset": dataset,
                        "seed": seed,
                        "model": f"GaussianMixture({n_components})",
                        "n_layers": None,
                        "test_loglik": float(score),
                        "epochs": None,
                        "seconds": time.perf_counter() - start,
                    }
                )
            for orientation in ("generative", "normalizing"):
                for n_layers in args.layers:
                    start = time.perf_counter()
                    flow = PlanarFlowDensity(
                        n_layers=n_layers,
                        orientation=orientation,
                        max_epochs=args.max_epochs,
                        lr=args.lr,
                        random_state=seed,
                    ).fit(X)
                    rows.append(
                        {
                            "dataset": dataset,
                            "seed": seed,
                            "model": f"PlanarFlowDensity({orientation})",
                            "n_layers": n_layers,
                            "test_loglik": float(flow.score(X_test)),
                            "epochs": int(flow.n_iter_),
                            "seconds": time.perf_counter() - start,
                        }
                    )
                    print(rows[-1], flush=True)

    print("\n| dataset | seed | model | layers | held-out log-lik | epochs | seconds | s/epoch |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        per_epoch = f"{row['seconds'] / row['epochs']:.3f}" if row["epochs"] else ""
        print(
            f"| {row['dataset']} | {row['seed']} | {row['model']} | {row['n_layers'] or ''} | "
            f"{row['test_loglik']:.3f} | {row['epochs'] or ''} | {row['seconds']:.1f} | {per_epoch} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    output = RESULTS / "planar_orientation.json"
    output.write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2))
    print(f"\nwrote {output}")


if __name__ == "__main__":
    main()
