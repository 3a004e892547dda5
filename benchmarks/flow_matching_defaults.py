"""FlowMatchingDensity's defaults: the ablation behind them.

Held-out mean log-likelihood (nats per row, data units) and fit time of
FlowMatchingDensity under the previous defaults and each change, beside
CNFDensity's defaults and Gaussian baselines, on

* ``moons``: two moons, 2,000 training rows and 1,000 held-out rows
  (``make_moons(noise=0.05)``, seeds 0 and 1), against a single Gaussian;
* ``digits``: scikit-learn's 8x8 digits, 80/20 split, integer pixels
  dequantised (both the flow, internally, and the mixtures, fitted to
  uniformly jittered pixels) and scored at the integers, against a
  GaussianMixture with k in {1, 2, 5, 10} and full or diagonal covariance,
  chosen on a 10% validation split of the training rows.

Configurations (all seeded with random_state=0):

* ``previous defaults``: independent noise pairing, batch 256, lr 1e-3;
* ``batch 64, lr 3e-3``: more and larger optimisation steps, independent pairing;
* ``defaults``: the current ones, minibatch optimal-transport pairing with
  batch 64 and lr 3e-3.

Run: ``python benchmarks/flow_matching_defaults.py [moons|digits ...]``
(``SKFLOW_BENCH_FAST=1`` for a smoke run with 3 epochs). Prints a markdown
table and writes ``benchmarks/results/flow_matching_defaults_<dataset>.{md,json}``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits, make_moons
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split

# Measure the working tree, not whatever copy of skflow is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from skflow import CNFDensity, FlowMatchingDensity

FAST = os.environ.get("SKFLOW_BENCH_FAST") == "1"
RESULTS = Path(__file__).resolve().parent / "results"

FLOW_MATCHING_CONFIGURATIONS = {
    "previous defaults (independent, batch 256, lr 1e-3)": {"coupling": "independent", "batch_size": 256, "lr": 1e-3},
    "batch 64, lr 3e-3 (independent)": {"coupling": "independent"},
    "defaults (minibatch OT, batch 64, lr 3e-3)": {},
}


def load(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    if dataset == "moons":
        return make_moons(2000, noise=0.05, random_state=0)[0], make_moons(1000, noise=0.05, random_state=1)[0]
    X = load_digits().data
    train, test = train_test_split(X, test_size=0.2, random_state=0)
    return train, test


def gaussian_baseline(dataset: str, train: np.ndarray, test: np.ndarray) -> tuple[str, float]:
    if dataset == "moons":
        return "single Gaussian", float(GaussianMixture(1, random_state=0).fit(train).score(test))
    rng = np.random.default_rng(0)
    jittered = train + rng.uniform(-0.5, 0.5, size=train.shape)
    fit_part, valid_part = train_test_split(jittered, test_size=0.1, random_state=0)
    candidates = [(k, kind) for k in (1, 2, 5, 10) for kind in ("full", "diag")]
    scores = {
        candidate: GaussianMixture(candidate[0], covariance_type=candidate[1], random_state=0)
        .fit(fit_part)
        .score(valid_part)
        for candidate in candidates
    }
    k, kind = max(scores, key=lambda candidate: scores[candidate])
    mixture = GaussianMixture(k, covariance_type=kind, random_state=0).fit(jittered)
    return f"GaussianMixture (validation-tuned: k={k}, {kind})", float(mixture.score(test))


def timed_fit(estimator, train: np.ndarray, test: np.ndarray) -> dict:
    start = time.perf_counter()
    estimator.fit(train)
    fit_seconds = time.perf_counter() - start
    return {
        "heldout_loglik": float(estimator.score(test)),
        "fit_seconds": fit_seconds,
        "epochs": int(estimator.n_iter_),
        "best_epoch": int(estimator.best_epoch_),
    }


def run(dataset: str) -> list[dict]:
    train, test = load(dataset)
    budget = {"max_epochs": 3} if FAST else {}
    name, baseline = gaussian_baseline(dataset, train, test)
    records = [{"dataset": dataset, "model": name, "heldout_loglik": baseline}]
    print(f"{dataset}: {name}: {baseline:.3f}", flush=True)
    for label, params in FLOW_MATCHING_CONFIGURATIONS.items():
        result = timed_fit(FlowMatchingDensity(random_state=0, **params, **budget), train, test)
        records.append({"dataset": dataset, "model": f"FlowMatchingDensity, {label}", **result})
        print(f"{dataset}: {records[-1]}", flush=True)
    if dataset == "moons":
        result = timed_fit(CNFDensity(random_state=0, **budget), train, test)
        records.append({"dataset": dataset, "model": "CNFDensity, defaults", **result})
        print(f"{dataset}: {records[-1]}", flush=True)
    return records


def markdown(records: list[dict]) -> str:
    lines = [
        "| dataset | model | held-out log-lik | fit (s) | epochs (best) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for record in records:
        fit = f"{record['fit_seconds']:.0f}" if "fit_seconds" in record else "-"
        epochs = f"{record['epochs']} ({record['best_epoch']})" if "epochs" in record else "-"
        lines.append(f"| {record['dataset']} | {record['model']} | {record['heldout_loglik']:.3f} | {fit} | {epochs} |")
    return "\n".join(lines)


def main() -> None:
    torch.set_num_threads(1)
    datasets = sys.argv[1:] or ["moons", "digits"]
    for dataset in datasets:
        records = run(dataset)
        table = markdown(records)
        print(table)
        if FAST:
            continue
        RESULTS.mkdir(exist_ok=True)
        note = (
            f"\n\nOne run, seed 0, torch {torch.__version__}, {platform.machine()}, one torch thread; fit times "
            "were measured on a 2-core machine shared with other jobs, so compare them within this table only.\n"
        )
        (RESULTS / f"flow_matching_defaults_{dataset}.md").write_text(table + note)
        (RESULTS / f"flow_matching_defaults_{dataset}.json").write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
