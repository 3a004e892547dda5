"""Benchmark of the continuous flows: CNFDensity and FlowMatchingDensity.

Three tables, all measured in one run on the same splits:

1. Seconds per training epoch and held-out log-likelihood (nats per row, in
   the data's units) of CNFDensity, FlowMatchingDensity and RealNVPDensity,
   with a one-component GaussianMixture as a reference, on two moons and on
   scikit-learn's digits (8x8 images, integer pixels 0-16, dequantised by the
   estimators; a reduced setting: fixed-step RK4 solvers with 8 steps, 40
   epochs (80 for flow matching) and no early stopping, so that the
   64-dimensional ODE fits finish in minutes on a CPU).
2. Function evaluations of the adaptive solver at evaluation time
   (``nfe_`` after ``score_samples``) for CNFDensity trained with and
   without the RNODE regularisation, on two moons.
3. CNFDensity against ``zuko.flows.CNF`` at (nearly) equal network size,
   same data, epochs, batch size, optimiser, learning rate and tolerances.

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/continuous_benchmark.py [--quick]

Prints markdown tables and writes ``benchmarks/results/continuous_benchmark.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits, make_moons
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split

from skflow import CNFDensity, FlowMatchingDensity, RealNVPDensity

RESULTS = Path(__file__).resolve().parent / "results"


def moons(n_train: int) -> tuple[np.ndarray, np.ndarray]:
    train, _ = make_moons(n_train, noise=0.05, random_state=0)
    test, _ = make_moons(2000, noise=0.05, random_state=1)
    return train, test


def digits() -> tuple[np.ndarray, np.ndarray]:
    X = load_digits().data
    train, test = train_test_split(X, test_size=0.2, random_state=0)
    return train, test


def run_estimator(name: str, estimator, train: np.ndarray, test: np.ndarray) -> dict:
    start = time.perf_counter()
    estimator.fit(train)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    scores = estimator.score_samples(test)
    score_seconds = time.perf_counter() - start
    row = {
        "model": name,
        "epochs": estimator.n_iter_,
        "seconds_per_epoch": float(np.mean([h["dur"] for h in estimator.history_])),
        "fit_seconds": fit_seconds,
        "score_seconds": score_seconds,
        "test_log_likelihood": float(np.mean(scores)),
        "non_finite_scores": int(np.sum(~np.isfinite(scores))),
    }
    if hasattr(estimator, "nfe_"):
        row["nfe_at_evaluation"] = estimator.nfe_
    return row


def gaussian_reference(train: np.ndarray, test: np.ndarray) -> dict:
    start = time.perf_counter()
    mixture = GaussianMixture(1, covariance_type="full", reg_covar=1e-3, random_state=0).fit(train)
    return {
        "model": "GaussianMixture(1)",
        "epochs": 0,
        "seconds_per_epoch": float("nan"),
        "fit_seconds": time.perf_counter() - start,
        "score_seconds": 0.0,
        "test_log_likelihood": float(mixture.score(test)),
        "non_finite_scores": 0,
    }


def table_one(quick: bool) -> list[dict]:
    rows = []
    epochs = 5 if quick else 30
    train, test = moons(2000)
    common = {"max_epochs": epochs, "batch_size": 256, "random_state": 0, "validation_fraction": 0.1, "patience": None}
    models = {
        "CNFDensity (dopri5, RNODE 0.01)": CNFDensity(hidden_dims=(64, 64), lr=5e-3, **common),
        # Flow-matching epochs are cheap (no ODE solve): give it more of them.
        "FlowMatchingDensity (dopri5)": FlowMatchingDensity(lr=3e-3, **{**common, "max_epochs": 4 * epochs}),
        "RealNVPDensity": RealNVPDensity(**common),
    }
    for name, estimator in models.items():
        rows.append({"dataset": "two moons (2000 train, 2000 test)", **run_estimator(name, estimator, train, test)})
        print(rows[-1], flush=True)
    rows.append({"dataset": "two moons (2000 train, 2000 test)", **gaussian_reference(train, test)})

    train, test = digits()
    epochs = 2 if quick else 40
    common = {"max_epochs": epochs, "batch_size": 256, "random_state": 0, "validation_fraction": 0.1, "patience": None}
    label = "digits 64-d (1437 train, 360 test), reduced"
    models = {
        "CNFDensity (rk4 8 steps, RNODE 0.01)": CNFDensity(
            hidden_dims=(128, 128), solver="rk4", n_steps=8, lr=3e-3, **common
        ),
        "FlowMatchingDensity (rk4 8 steps)": FlowMatchingDensity(
            hidden_dims=(128, 128),
            solver="rk4",
            n_steps=8,
            validation_n_steps=2,
            lr=3e-3,
            **{**common, "max_epochs": 2 * epochs},
        ),
        "RealNVPDensity": RealNVPDensity(**common),
    }
    for name, estimator in models.items():
        rows.append({"dataset": label, **run_estimator(name, estimator, train, test)})
        print(rows[-1], flush=True)
    rows.append({"dataset": label, **gaussian_reference(train, test)})
    return rows


def table_two(quick: bool) -> list[dict]:
    train, test = moons(2000)
    rows = []
    for weight in (0.0, 0.01, 0.1):
        estimator = CNFDensity(
            hidden_dims=(64, 64),
            kinetic_weight=weight,
            jacobian_weight=weight,
            lr=5e-3,
            max_epochs=5 if quick else 30,
            patience=None,
            random_state=0,
        )
        row = run_estimator(f"CNFDensity RNODE weights {weight}", estimator, train, test)
        rows.append({"kinetic_weight": weight, "jacobian_weight": weight, **row})
        print(rows[-1], flush=True)
    return rows


def table_three(quick: bool) -> list[dict]:
    import zuko

    train, test = moons(2000)
    epochs = 5 if quick else 30
    batch_size, lr, rtol, atol = 256, 5e-3, 1e-4, 1e-5
    ours = CNFDensity(
        hidden_dims=(64, 64),
        activation="elu",
        kinetic_weight=0.0,
        jacobian_weight=0.0,
        rtol=rtol,
        atol=atol,
        lr=lr,
        batch_size=batch_size,
        max_epochs=epochs,
        validation_fraction=None,
        patience=None,
        gradient_clip=None,
        random_state=0,
    )
    row = run_estimator("skflow CNFDensity (elu, Hutchinson, no RNODE)", ours, train, test)
    row["n_parameters"] = sum(p.numel() for p in ours.model_.parameters())
    rows = [row]
    print(row, flush=True)

    # zuko, trained by a plain loop on the same standardised rows.
    torch.manual_seed(0)
    mean, scale = train.mean(0), train.std(0)
    rows_train = torch.as_tensor((train - mean) / scale, dtype=torch.float32)
    rows_test = torch.as_tensor((test - mean) / scale, dtype=torch.float32)
    flow = zuko.flows.CNF(2, hidden_features=(64, 64), exact=False, rtol=rtol, atol=atol)
    optimiser = torch.optim.AdamW(flow.parameters(), lr=lr)
    durations = []
    start_fit = time.perf_counter()
    for _ in range(epochs):
        start = time.perf_counter()
        flow.train()
        for batch in rows_train[torch.randperm(len(rows_train))].split(batch_size):
            loss = -flow().log_prob(batch).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        durations.append(time.perf_counter() - start)
    fit_seconds = time.perf_counter() - start_fit
    flow.eval()
    for module in flow.modules():
        if hasattr(module, "exact"):
            module.exact = True  # evaluate with the exact trace, as skflow does
    start = time.perf_counter()
    with torch.no_grad():
        log_prob = torch.cat([flow().log_prob(batch) for batch in rows_test.split(256)]).double().numpy()
    scores = log_prob - np.log(scale).sum()
    rows.append(
        {
            "model": "zuko.flows.CNF (elu, Hutchinson, exact at test)",
            "epochs": epochs,
            "seconds_per_epoch": float(np.mean(durations)),
            "fit_seconds": fit_seconds,
            "score_seconds": time.perf_counter() - start,
            "test_log_likelihood": float(np.mean(scores)),
            "non_finite_scores": int(np.sum(~np.isfinite(scores))),
            "n_parameters": sum(p.numel() for p in flow.parameters()),
        }
    )
    print(rows[-1], flush=True)
    return rows


def markdown(rows: list[dict], columns: list[str]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.3f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(column, "")) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few epochs, to check the script runs")
    parser.add_argument("--tables", default="1,2,3", help="which tables to run, e.g. '2,3'")
    args = parser.parse_args()
    torch.set_num_threads(1)
    wanted = {int(t) for t in args.tables.split(",")}
    path = RESULTS / f"continuous_benchmark{'_quick' if args.quick else ''}.json"
    # Tables not rerun keep their earlier results (each stays as measured).
    results: dict = json.loads(path.read_text()) if path.exists() else {}
    results.update({"quick": args.quick, "torch": torch.__version__})
    if 1 in wanted:
        results["density"] = table_one(args.quick)
    if 2 in wanted:
        results["rnode"] = table_two(args.quick)
    if 3 in wanted:
        results["zuko"] = table_three(args.quick)

    if "density" in results:
        print("\n## Held-out log-likelihood and training speed\n")
        columns = ["dataset", "model", "epochs", "seconds_per_epoch", "test_log_likelihood", "nfe_at_evaluation"]
        print(markdown(results["density"], columns))
    if "rnode" in results:
        print("\n## Solver function evaluations at evaluation time (two moons, dopri5 rtol=1e-4 atol=1e-5)\n")
        columns = ["model", "epochs", "seconds_per_epoch", "test_log_likelihood", "nfe_at_evaluation"]
        print(markdown(results["rnode"], columns))
    if "zuko" in results:
        print("\n## CNFDensity against zuko.flows.CNF (two moons, hidden (64, 64), dopri5 rtol=1e-4 atol=1e-5)\n")
        columns = ["model", "n_parameters", "epochs", "seconds_per_epoch", "test_log_likelihood"]
        print(markdown(results["zuko"], columns))

    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
