"""What does a fit at an absurd learning rate return?

Fits every flow family (12 configurations) at lr = 10 and lr = 1e3 under
five training settings, 60 fits in all, on small 2-D data (two moons, 400
rows), and records for each whether ``fit`` raised
:class:`~skflow.TrainingDivergedError`, warned, or returned silently, with
the held-out mean log-likelihood of what it returned and the largest
training loss in ``history_``. A returned model is *absurd* when its
held-out mean log-likelihood lies more than 20 nats per feature below a
single Gaussian's (GaussianMixture(1), about -2.3 here); a fit that returns
an absurd model, warned or not, is the failure this table looks for.

Usage::

    nice -n 5 python benchmarks/divergence.py
    nice -n 5 python benchmarks/divergence.py --out divergence_after
    python benchmarks/divergence.py --table benchmarks/results/divergence_after.json  # reprint

Writes ``benchmarks/results/<out>.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import make_moons
from sklearn.mixture import GaussianMixture

from skflow import (
    CNFDensity,
    FlowMatchingDensity,
    FreeFormFlowDensity,
    GlowDensity,
    IAFDensity,
    InjectiveFlowEstimator,
    MAFDensity,
    NeuralSplineDensity,
    NICEDensity,
    PlanarFlowDensity,
    RealNVPDensity,
    TrainingDivergedError,
)

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"

# Small networks: the point is the engine's reaction, not the fit's quality.
FAMILIES = {
    "realnvp": lambda **kw: RealNVPDensity(n_layers=4, hidden_dims=(32,), **kw),
    "nice": lambda **kw: NICEDensity(n_layers=4, hidden_dims=(32,), **kw),
    "glow": lambda **kw: GlowDensity(n_steps=2, hidden_dims=(32,), **kw),
    "maf": lambda **kw: MAFDensity(n_layers=4, hidden_dims=(32,), **kw),
    "iaf": lambda **kw: IAFDensity(n_layers=4, hidden_dims=(32,), **kw),
    "spline": lambda **kw: NeuralSplineDensity(n_layers=2, n_bins=6, hidden_dims=(32,), **kw),
    "spline-ar": lambda **kw: NeuralSplineDensity(
        variant="autoregressive", n_layers=2, n_bins=6, hidden_dims=(32,), **kw
    ),
    "planar": lambda **kw: PlanarFlowDensity(n_layers=8, **kw),
    "cnf": lambda **kw: CNFDensity(hidden_dims=(32,), solver="rk4", n_steps=4, **kw),
    "flowmatching": lambda **kw: FlowMatchingDensity(hidden_dims=(32,), solver="rk4", n_steps=4, **kw),
    "fif": lambda **kw: InjectiveFlowEstimator(n_components=2, hidden_dims=(32,), n_residual_blocks=1, **kw),
    "fff": lambda **kw: FreeFormFlowDensity(hidden_dims=(32,), n_residual_blocks=1, **kw),
}

# (label, lr, extra training settings): 5 per family, 60 fits in all.
SETTINGS = [
    ("lr=10", 10.0, {}),
    ("lr=10, no clip", 10.0, {"gradient_clip": None}),
    ("lr=1e3", 1e3, {}),
    ("lr=1e3, no clip", 1e3, {"gradient_clip": None}),
    ("lr=1e3, no validation", 1e3, {"validation_fraction": None}),
]

ABSURD_MARGIN_PER_FEATURE = 20.0  # nats per feature below a single Gaussian's held-out score


def run_case(family: str, lr: float, extra: dict, X: np.ndarray, X_test: np.ndarray, max_epochs: int) -> dict:
    estimator = FAMILIES[family](lr=lr, max_epochs=max_epochs, batch_size=64, random_state=0, **extra)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            estimator.fit(X)
        except TrainingDivergedError:
            return {
                "outcome": "raised",
                "score": math.nan,
                "max_train_loss": math.nan,
                "seconds": time.perf_counter() - start,
            }
    warned = any(issubclass(w.category, RuntimeWarning) and "diverged" in str(w.message) for w in caught)
    with np.errstate(all="ignore"):
        score = float(np.mean(estimator.score_samples(X_test)))
    losses = [row["train_loss"] for row in estimator.history_]
    outcome = "warned" if warned else "silent"
    return {
        "outcome": outcome,
        "score": score,
        "max_train_loss": float(np.nanmax(losses)) if losses and not np.all(np.isnan(losses)) else math.nan,
        "seconds": time.perf_counter() - start,
    }


def print_table(rows: list[dict], gaussian_score: float, n_features: int) -> None:
    """Markdown table of the cases, then the count of each outcome."""
    floor = gaussian_score - ABSURD_MARGIN_PER_FEATURE * n_features
    print(f"\nGaussianMixture(1) held-out mean log-likelihood {gaussian_score:.4f}; absurd below {floor:.4f}")
    print("\n| family | setting | outcome | held-out mean log-lik | max train loss | absurd model returned |")
    print("| --- | --- | --- | ---: | ---: | --- |")
    absurd = 0
    for row in rows:
        outcome = {"SILENT ABSURD": "silent", "silent ok": "silent"}.get(row["outcome"], row["outcome"])
        returned_absurd = outcome != "raised" and not row["score"] > floor
        absurd += returned_absurd
        print(
            f"| {row['family']} | {row['setting']} | {outcome} | {row['score']:.4g} | "
            f"{row['max_train_loss']:.4g} | {'YES' if returned_absurd else ''} |"
        )
    outcomes = [{"SILENT ABSURD": "silent", "silent ok": "silent"}.get(r["outcome"], r["outcome"]) for r in rows]
    counts = ", ".join(f"{name}: {outcomes.count(name)}" for name in ("raised", "warned", "silent"))
    print(f"\n{len(rows)} fits; {counts}; absurd model returned: {absurd}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--out", default="divergence")
    parser.add_argument("--table", help="only reprint the table of a results JSON written earlier")
    args = parser.parse_args()

    X = make_moons(400, noise=0.1, random_state=0)[0]
    X_test = make_moons(400, noise=0.1, random_state=1)[0]
    gaussian_score = float(GaussianMixture(1, random_state=0).fit(X).score(X_test))
    if args.table:
        print_table(json.loads(Path(args.table).read_text()), gaussian_score, X.shape[1])
        return
    rows = []
    for family in args.families:
        for label, lr, extra in SETTINGS:
            result = run_case(family, lr, extra, X, X_test, args.max_epochs)
            rows.append({"family": family, "setting": label, **result})
            print(f"{family:13s} {label:22s} {result['outcome']:7s} {result['score']:.4g}", flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(rows, indent=1))
    print_table(rows, gaussian_score, X.shape[1])


if __name__ == "__main__":
    main()
