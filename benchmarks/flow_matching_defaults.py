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

Configurations (all seeded with random_state=0), each FlowMatchingDensity's
current defaults but for what its label names (``hidden_dims="auto"`` is
128x128 on two features and 512x512 on 64):

* moons: the original defaults (independent noise pairing, batch 256, lr
  1e-3), the current ones (minibatch OT pairing, batch 64, lr 3e-3, the same
  128x128 field as the first revision), and the current ones with a cosine
  learning-rate decay; plus CNFDensity's defaults;
* digits: the first revision's defaults (128x128), the same with a cosine
  decay, the current defaults (512x512) and the same with a cosine decay;
  plus CNFDensity's defaults for 10 epochs only, to time an epoch (a full
  CNF fit on digits takes hours on a shared machine).

Run: ``python benchmarks/flow_matching_defaults.py [moons|digits ...] [--jobs N]``
(``--jobs`` fits that many configurations at once, in separate processes;
``SKFLOW_BENCH_FAST=1`` for a smoke run with 3 epochs). Prints a markdown
table and writes ``benchmarks/results/flow_matching_defaults_<dataset>.{md,json}``
after every finished fit, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.datasets import load_digits, make_moons
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split

# Measure the working tree, not whatever copy of skflow is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from skflow import CNFDensity, FlowMatchingDensity

FAST = os.environ.get("SKFLOW_BENCH_FAST") == "1"
RESULTS = Path(__file__).resolve().parent / "results"

FIRST_REVISION = {"hidden_dims": (128, 128)}
COSINE = {"lr_schedule": "cosine"}
# (label, estimator class, hyperparameters) per dataset, in table order.
CONFIGURATIONS = {
    "moons": [
        (
            "FlowMatchingDensity, original defaults (independent, batch 256, lr 1e-3)",
            FlowMatchingDensity,
            {"coupling": "independent", "batch_size": 256, "lr": 1e-3},
        ),
        (
            "FlowMatchingDensity, defaults (minibatch OT, batch 64, lr 3e-3; auto width = 128x128)",
            FlowMatchingDensity,
            {},
        ),
        ("FlowMatchingDensity, defaults with cosine lr decay", FlowMatchingDensity, COSINE),
        ("CNFDensity, defaults", CNFDensity, {}),
    ],
    "digits": [
        ("FlowMatchingDensity, first revision (128x128)", FlowMatchingDensity, FIRST_REVISION),
        ("FlowMatchingDensity, first revision with cosine lr decay", FlowMatchingDensity, {**FIRST_REVISION, **COSINE}),
        ("FlowMatchingDensity, defaults (auto width = 512x512)", FlowMatchingDensity, {}),
        ("FlowMatchingDensity, defaults with cosine lr decay", FlowMatchingDensity, COSINE),
        ("CNFDensity, defaults, first 10 epochs only (timing)", CNFDensity, {"max_epochs": 10}),
    ],
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


def timed_fit(label: str, estimator_class: type, params: dict, train: np.ndarray, test: np.ndarray) -> dict:
    torch.set_num_threads(1)
    params = {**params, "max_epochs": 3} if FAST else params
    estimator = estimator_class(random_state=0, **params)
    start = time.perf_counter()
    estimator.fit(train)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    heldout = float(estimator.score(test))
    return {
        "model": label,
        "heldout_loglik": heldout,
        "fit_seconds": fit_seconds,
        "seconds_per_epoch": fit_seconds / estimator.n_iter_,
        "score_seconds": time.perf_counter() - start,
        "epochs": int(estimator.n_iter_),
        "best_epoch": int(estimator.best_epoch_),
    }


def run(dataset: str, jobs: int) -> list[dict]:
    train, test = load(dataset)
    name, baseline = gaussian_baseline(dataset, train, test)
    records = [{"dataset": dataset, "model": name, "heldout_loglik": baseline}]
    print(f"{dataset}: {name}: {baseline:.3f}", flush=True)
    order = [label for label, _, _ in CONFIGURATIONS[dataset]]
    tasks = (delayed(timed_fit)(label, cls, params, train, test) for label, cls, params in CONFIGURATIONS[dataset])
    for result in Parallel(n_jobs=jobs, return_as="generator_unordered")(tasks):
        records.append({"dataset": dataset, **result})
        records[1:] = sorted(records[1:], key=lambda record: order.index(record["model"]))
        print(f"{dataset}: {result}", flush=True)
        write(dataset, records, jobs)
    return records


def markdown(records: list[dict]) -> str:
    lines = [
        "| dataset | model | held-out log-lik | fit (s) | s / epoch | score (s) | epochs (best) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for record in records:
        if "fit_seconds" in record:
            timing = (
                f"{record['fit_seconds']:.0f} | {record['seconds_per_epoch']:.2f} | {record['score_seconds']:.0f} | "
                f"{record['epochs']} ({record['best_epoch']})"
            )
        else:
            timing = "- | - | - | -"
        lines.append(f"| {record['dataset']} | {record['model']} | {record['heldout_loglik']:.3f} | {timing} |")
    return "\n".join(lines)


def write(dataset: str, records: list[dict], jobs: int) -> None:
    if FAST:
        return
    RESULTS.mkdir(exist_ok=True)
    note = (
        f"\n\nOne run, seed 0, torch {torch.__version__}, {platform.machine()}, one torch thread per fit, "
        f"{jobs} fit(s) at a time; fit times were measured on a 2-core machine shared with other jobs, so compare "
        "them within this table only.\n"
    )
    (RESULTS / f"flow_matching_defaults_{dataset}.md").write_text(markdown(records) + note)
    (RESULTS / f"flow_matching_defaults_{dataset}.json").write_text(json.dumps(records, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", choices=sorted(CONFIGURATIONS), default=["moons", "digits"])
    parser.add_argument("--jobs", type=int, default=1, help="configurations fitted at once (processes)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for dataset in args.datasets:
        print(markdown(run(dataset, args.jobs)))


if __name__ == "__main__":
    main()
