"""ADBench's unsupervised protocol: skflow's density detectors against classical peers.

Data: the 31 ``.npz`` files of ADBench (Han et al., NeurIPS 2022; mostly ODDS
and UCI sets) expected in ``../shared/data/adbench`` relative to the
repository root (override with ``--data-dir``); each holds ``X`` and ``y``
(1 = anomaly).

Protocol (ADBench's, for its published unsupervised numbers), run for every
method on the same splits in the same process:

* seeds 1, 2, 3; per seed, datasets under 1,000 rows are resampled with
  replacement to 1,000 rows and datasets over 10,000 rows subsampled to 10,000;
* a stratified 70/30 train/test split; anomalies stay in the training part
  (unsupervised: labels are never shown to a method);
* MinMax scaling fitted on the training part;
* default hyperparameters; ROC-AUC and average precision (PR-AUC) of the
  anomaly scores on the test part; fit + score time in seconds.

Methods: skflow's flow families wrapped in :class:`skflow.DensityOutlierDetector`
(every ``FlowEstimator`` subclass skflow exports, or those named with
``--families``), with ablations of the detector's options (``typicality`` score,
``trim_fraction``, no dequantisation, no noise regularisation, the identity start), scikit-learn's IsolationForest,
LocalOutlierFactor(novelty=True), OneClassSVM, GaussianMixture, KernelDensity,
and pyod's ECOD, COPOD and KNN when pyod is installed (the ``bench`` extra).

Writes ``benchmarks/results/adbench.csv`` (one row per dataset, seed and
method, appended as runs finish) and ``benchmarks/results/adbench.md`` (mean
over seeds per dataset, mean over datasets, mean rank), and prints the table.

Usage::

    python benchmarks/adbench.py                    # full: 31 datasets x 3 seeds
    python benchmarks/adbench.py --quick            # 1 seed, at most 2,000 rows
    python benchmarks/adbench.py --datasets glass,wine --seeds 1
    python benchmarks/adbench.py --methods IsolationForest,RealNVP --ablations none
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KernelDensity, LocalOutlierFactor
from sklearn.preprocessing import MinMaxScaler
from sklearn.svm import OneClassSVM

import skflow
from skflow.base import FlowEstimator
from skflow.outlier import DETECTOR_NOISE_STD, DensityOutlierDetector

DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "adbench"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
CSV_FIELDS = ["dataset", "seed", "method", "roc_auc", "pr_auc", "seconds", "n_train", "n_test", "error"]

# Families too slow for a benchmark of 93 fits on a CPU are left out unless
# named explicitly with --families: ODE-based densities (CNF, flow matching)
# integrate an ODE per score, IAF inverts sequentially to score, planar
# flows need many layers, and the injective families estimate a volume term.
SLOW_FAMILIES: set[str] = {
    "CNFDensity",
    "FlowMatchingDensity",
    "FreeFormFlowDensity",
    "IAFDensity",
    "InjectiveFlowEstimator",
    "PlanarFlowDensity",
}


# ---------------------------------------------------------------------- #
# Methods: each a factory seed -> object with fit(X) and anomaly_scores(X)
# (higher = more abnormal).
# ---------------------------------------------------------------------- #
class HigherIsNormal:
    """Adapter for estimators whose ``score_samples`` is higher for normal rows."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def fit(self, X: np.ndarray) -> HigherIsNormal:
        self.estimator.fit(X)
        return self

    def anomaly_scores(self, X: np.ndarray) -> np.ndarray:
        return -np.asarray(self.estimator.score_samples(X), dtype=np.float64)


class PyodDetector:
    """Adapter for pyod detectors, whose ``decision_function`` is higher for anomalies."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def fit(self, X: np.ndarray) -> PyodDetector:
        self.estimator.fit(X)
        return self

    def anomaly_scores(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.decision_function(X), dtype=np.float64)


# Detectors fitted on the current split, by method name, so that a score
# variant (typicality) is computed from the very model the density score used.
FITTED_ON_SPLIT: dict[str, Any] = {}


class TypicalityOf:
    """The typicality score of the density detector already fitted on this split.

    No refit: the typicality score is a function of the same fitted density,
    so its time is the scoring time only (add the base method's time for the
    total).
    """

    def __init__(self, base_method: str) -> None:
        self.base_method = base_method

    def fit(self, X: np.ndarray) -> TypicalityOf:
        base = FITTED_ON_SPLIT.get(self.base_method)
        if base is None:
            raise RuntimeError(f"{self.base_method} must run (and succeed) before its typicality variant.")
        self.detector = base.estimator
        return self

    def anomaly_scores(self, X: np.ndarray) -> np.ndarray:
        # set_params keeps the fitted state; the typicality statistics are
        # estimated in fit whatever the score.
        return -self.detector.set_params(score_type="typicality").score_samples(X)


def skflow_families(names: list[str] | None) -> dict[str, type]:
    """The flow families skflow exports (every FlowEstimator subclass in ``skflow.__all__``)."""
    families = {}
    for name in skflow.__all__:
        candidate = getattr(skflow, name)
        if isinstance(candidate, type) and issubclass(candidate, FlowEstimator) and candidate is not FlowEstimator:
            if getattr(candidate, "build_model", None) is FlowEstimator.build_model:
                continue  # an abstract base such as ExactFlowEstimator
            families[name] = candidate
    if names is not None:
        missing = set(names) - set(families)
        if missing:
            raise SystemExit(f"Unknown skflow families {sorted(missing)}; available: {sorted(families)}")
        return {name: families[name] for name in names}
    return {name: family for name, family in families.items() if name not in SLOW_FAMILIES}


def short_name(family_name: str) -> str:
    return family_name.removesuffix("Density")


def build_methods(families: dict[str, type], ablations: list[str]) -> dict[str, Callable[[int], Any]]:
    """Method name -> factory(seed).

    An skflow entry is the family with its defaults and the detector's noise
    regularisation (``noise_std=DETECTOR_NOISE_STD``), so ``RealNVP`` is
    exactly ``DensityOutlierDetector(random_state=seed)``, the detector with
    all its defaults; the ``noise0`` ablation fits the family without noise.
    """
    methods: dict[str, Callable[[int], Any]] = {}
    for family_name, family in families.items():
        name = short_name(family_name)

        def detector(
            seed: int,
            family: type = family,
            noise_std: float = DETECTOR_NOISE_STD,
            flow_options: dict[str, Any] | None = None,
            **options: Any,
        ) -> Any:
            flow = family(random_state=seed, noise_std=noise_std, **(flow_options or {}))
            return HigherIsNormal(DensityOutlierDetector(estimator=flow, **options))

        methods[name] = detector
        if "typicality" in ablations:
            methods[f"{name}-typicality"] = lambda seed, name=name: TypicalityOf(name)
        if "trim" in ablations:
            methods[f"{name}-trim0.1"] = lambda seed, d=detector: d(seed, trim_fraction=0.1)
        if "nodeq" in ablations:
            methods[f"{name}-nodeq"] = lambda seed, d=detector: d(seed, flow_options={"dequantize": False})
        if "noise0" in ablations:
            methods[f"{name}-noise0"] = lambda seed, d=detector: d(seed, noise_std=0.0)
        if "identity" in ablations and "init" in family().get_params():
            # The detector before its flow took RealNVPDensity's Gaussian start.
            methods[f"{name}-identity"] = lambda seed, d=detector: d(seed, flow_options={"init": "identity"})
    methods["IsolationForest"] = lambda seed: HigherIsNormal(IsolationForest(random_state=seed))
    methods["LOF"] = lambda seed: HigherIsNormal(LocalOutlierFactor(novelty=True))
    methods["OCSVM"] = lambda seed: HigherIsNormal(OneClassSVM())
    methods["GaussianMixture"] = lambda seed: HigherIsNormal(GaussianMixture(random_state=seed))
    methods["KernelDensity"] = lambda seed: HigherIsNormal(KernelDensity())
    try:
        from pyod.models.copod import COPOD
        from pyod.models.ecod import ECOD
        from pyod.models.knn import KNN
    except ImportError:
        print("pyod is not installed (pip install skflow[bench]): ECOD, COPOD and KNN are skipped.")
    else:
        methods["ECOD"] = lambda seed: PyodDetector(ECOD())
        methods["COPOD"] = lambda seed: PyodDetector(COPOD())
        methods["KNN"] = lambda seed: PyodDetector(KNN())
    return methods


# ---------------------------------------------------------------------- #
# Data and protocol
# ---------------------------------------------------------------------- #
def dataset_files(data_dir: Path, names: list[str] | None) -> list[Path]:
    if not data_dir.is_dir():
        raise SystemExit(
            f"ADBench data not found in {data_dir}. Expected the .npz files of ADBench there "
            "(../shared/data/adbench relative to the repository root); pass --data-dir."
        )
    files = sorted(data_dir.glob("*.npz"), key=lambda path: int(path.name.split("_")[0]))
    if names is None:
        return files
    by_name = {path.stem.split("_", 1)[1].lower(): path for path in files}
    missing = [name for name in names if name.lower() not in by_name]
    if missing:
        raise SystemExit(f"Unknown datasets {missing}; available: {sorted(by_name)}")
    return [by_name[name.lower()] for name in names]


def protocol_split(
    X: np.ndarray, y: np.ndarray, seed: int, min_rows: int = 1000, max_rows: int = 10_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ADBench's resampling, stratified 70/30 split and MinMax scaling on the training part."""
    rng = np.random.RandomState(seed)
    if len(X) < min_rows:
        index = rng.choice(len(X), min_rows, replace=True)
        X, y = X[index], y[index]
    elif len(X) > max_rows:
        index = rng.choice(len(X), max_rows, replace=False)
        X, y = X[index], y[index]
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, shuffle=True, random_state=seed
    )
    scaler = MinMaxScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


def run_one(
    factory: Callable[[int], Any], seed: int, X_train: np.ndarray, X_test: np.ndarray
) -> tuple[Any, np.ndarray, float]:
    start = time.perf_counter()
    method = factory(seed).fit(X_train)
    scores = method.anomaly_scores(X_test)
    seconds = time.perf_counter() - start
    return method, scores, seconds


def evaluate(scores: np.ndarray, y_test: np.ndarray) -> tuple[float, float]:
    if not np.all(np.isfinite(scores)):
        # Unscorable rows (-inf density) rank as the most abnormal; NaN is an error.
        if np.isnan(scores).any():
            raise FloatingPointError("NaN anomaly scores")
        finite = scores[np.isfinite(scores)]
        top = finite.max() + 1 if finite.size else 0.0
        scores = np.where(np.isposinf(scores), top, scores)
    return roc_auc_score(y_test, scores), average_precision_score(y_test, scores)


# ---------------------------------------------------------------------- #
# Report
# ---------------------------------------------------------------------- #
def _mean_table(rows: list[dict[str, Any]], datasets: list[str], methods: list[str], key: str) -> np.ndarray:
    """(dataset, method) array of ``key`` averaged over the rows' seeds; NaN where every run failed."""

    def mean_of(dataset: str, method: str) -> float:
        values = [float(r[key]) for r in rows if r["dataset"] == dataset and r["method"] == method]
        values = [v for v in values if not math.isnan(v)]
        return float(np.mean(values)) if values else math.nan

    return np.array([[mean_of(d, m) for m in methods] for d in datasets])


def _ranks(roc: np.ndarray) -> np.ndarray:
    """Rank per dataset (row) on ROC-AUC: 1 = best, ties share the mean rank, a failed run ranks last."""
    ranks = np.zeros_like(roc)
    for i, values in enumerate(roc):
        filled = np.where(np.isnan(values), -np.inf, values)
        order = (-filled).argsort(kind="stable")
        ranked = np.empty(len(values))
        ranked[order] = np.arange(1, len(values) + 1)
        for value in np.unique(filled):
            tied = filled == value
            ranked[tied] = ranked[tied].mean()
        ranks[i] = ranked
    return ranks


def per_seed_summary(rows: list[dict[str, Any]], methods: list[str]) -> str:
    """Mean ROC-AUC and mean rank of every method on each seed separately (best in bold)."""
    seeds = sorted({int(row["seed"]) for row in rows})
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    lines = ["## Per seed", "", "Mean over the datasets of each seed separately; best in bold.", ""]
    header = "| seed | " + " | ".join(methods) + " |"
    rule = "| --- |" + " ---: |" * len(methods)
    roc_lines, rank_lines = [header, rule], [header, rule]
    for seed in seeds:
        seed_rows = [row for row in rows if int(row["seed"]) == seed]
        roc = _mean_table(seed_rows, datasets, methods, "roc_auc")
        mean_roc, mean_rank = np.nanmean(roc, axis=0), _ranks(roc).mean(axis=0)
        roc_lines.append(
            f"| {seed} | " + " | ".join(f"**{v:.4f}**" if v == mean_roc.max() else f"{v:.4f}" for v in mean_roc) + " |"
        )
        rank_lines.append(
            f"| {seed} | "
            + " | ".join(f"**{v:.2f}**" if v == mean_rank.min() else f"{v:.2f}" for v in mean_rank)
            + " |"
        )
    return "\n".join(lines + ["Mean ROC-AUC:", ""] + roc_lines + ["", "Mean rank (1 = best):", ""] + rank_lines)


def summarise(rows: list[dict[str, Any]], methods: list[str]) -> str:
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    roc = _mean_table(rows, datasets, methods, "roc_auc")
    pr = _mean_table(rows, datasets, methods, "pr_auc")
    seconds = _mean_table(rows, datasets, methods, "seconds")
    ranks = _ranks(roc)

    lines = [
        "## Mean over datasets",
        "",
        "Means skip failed runs (listed at the end); in the ranks a failed run counts as last.",
        "",
        "| method | mean ROC-AUC | mean PR-AUC | mean rank | mean fit+score s |",
    ]
    lines.append("| --- | ---: | ---: | ---: | ---: |")
    summary = sorted(range(len(methods)), key=lambda j: ranks[:, j].mean())
    for j in summary:
        lines.append(
            f"| {methods[j]} | {np.nanmean(roc[:, j]):.4f} | {np.nanmean(pr[:, j]):.4f} | "
            f"{ranks[:, j].mean():.2f} | {np.nanmean(seconds[:, j]):.1f} |"
        )
    lines += ["", "## ROC-AUC per dataset (mean over seeds)", ""]
    lines.append("| dataset | " + " | ".join(methods) + " |")
    lines.append("| --- |" + " ---: |" * len(methods))
    for i, dataset in enumerate(datasets):
        best = np.nanmax(roc[i]) if np.isfinite(roc[i]).any() else math.nan
        cells = [f"**{v:.3f}**" if v == best else f"{v:.3f}" for v in roc[i]]
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    lines += ["", "## PR-AUC per dataset (mean over seeds)", ""]
    lines.append("| dataset | " + " | ".join(methods) + " |")
    lines.append("| --- |" + " ---: |" * len(methods))
    for i, dataset in enumerate(datasets):
        lines.append(f"| {dataset} | " + " | ".join(f"{v:.3f}" for v in pr[i]) + " |")
    if len({int(row["seed"]) for row in rows}) > 1:
        lines += ["", per_seed_summary(rows, methods)]
    errors = [r for r in rows if r.get("error")]
    if errors:
        lines += ["", "## Failed runs", ""]
        lines += [f"- {r['dataset']} seed {r['seed']} {r['method']}: {r['error']}" for r in errors]
    return "\n".join(lines)


def merge_results(paths: list[Path], output: str, argv: list[str] | None) -> None:
    """One table from the CSVs of several runs (same protocol, disjoint datasets)."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        with path.open() as handle:
            rows += list(csv.DictReader(handle))
    datasets = {row["dataset"] for row in rows}
    # Keep the methods run on most datasets (a family run on a few datasets
    # only is dropped), then the datasets on which all of them ran (a run
    # stopped mid-dataset is dropped), so every mean covers the same cells.
    methods = [
        method
        for method in dict.fromkeys(row["method"] for row in rows)
        if len({row["dataset"] for row in rows if row["method"] == method}) >= 0.8 * len(datasets)
    ]
    complete = [
        dataset for dataset in datasets if set(methods) <= {row["method"] for row in rows if row["dataset"] == dataset}
    ]
    dropped = sorted(datasets - set(complete))
    if dropped:
        print(f"Datasets without results for every method, left out: {dropped}")
    datasets = set(complete)
    rows = [row for row in rows if row["method"] in methods and row["dataset"] in datasets]
    seeds = sorted({int(row["seed"]) for row in rows})
    header = (
        f"# ADBench, unsupervised protocol\n\nSeeds {seeds}; datasets: {len(datasets)}; merged from "
        f"{', '.join(path.name for path in paths)}. Command: `python benchmarks/adbench.py "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}`\n\n"
    )
    with (RESULTS_DIR / f"{output}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    table = summarise(rows, methods)
    (RESULTS_DIR / f"{output}.md").write_text(header + table + "\n")
    print(header + table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--datasets", help="comma-separated dataset names (e.g. glass,wine); default all")
    parser.add_argument("--seeds", help="comma-separated seeds (default 1,2,3; 1 with --quick)")
    parser.add_argument("--families", help="comma-separated skflow families (default: all fast ones exported)")
    parser.add_argument("--methods", help="comma-separated subset of method names to run")
    parser.add_argument(
        "--ablations",
        default="typicality",
        help="comma-separated detector ablations: typicality, trim, nodeq, noise0, identity (the identity start), "
        "or none (default typicality)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="at most 2,000 rows per dataset, and seed 1 unless --seeds is given"
    )
    parser.add_argument("--output", default="adbench", help="basename of the result files in benchmarks/results")
    parser.add_argument(
        "--summarise",
        help="comma-separated result CSVs of earlier runs (e.g. parallel runs on disjoint datasets) to merge "
        "into one table instead of running; only methods present on every dataset are kept",
    )
    args = parser.parse_args(argv)
    if args.summarise:
        merge_results([Path(path) for path in args.summarise.split(",")], args.output, argv)
        return

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    seeds = [1] if args.quick and args.seeds is None else [int(s) for s in (args.seeds or "1,2,3").split(",")]
    max_rows = 2000 if args.quick else 10_000
    files = dataset_files(args.data_dir, args.datasets.split(",") if args.datasets else None)
    families = skflow_families(args.families.split(",") if args.families else None)
    ablations = [] if args.ablations == "none" else args.ablations.split(",")
    methods = build_methods(families, ablations)
    if args.methods:
        wanted = args.methods.split(",")
        unknown = set(wanted) - set(methods)
        if unknown:
            raise SystemExit(f"Unknown methods {sorted(unknown)}; available: {sorted(methods)}")
        methods = {name: methods[name] for name in wanted}

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    csv_path = RESULTS_DIR / f"{args.output}.csv"
    md_path = RESULTS_DIR / f"{args.output}.md"
    rows: list[dict[str, Any]] = []
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for path in files:
            data = np.load(path)
            X_all, y_all = data["X"].astype(np.float64), data["y"].astype(int)
            name = path.stem.split("_", 1)[1]
            for seed in seeds:
                try:
                    X_train, X_test, _, y_test = protocol_split(X_all, y_all, seed, max_rows=max_rows)
                except ValueError as error:
                    # A subsample with a single anomaly cannot be split stratified (smtp with --quick).
                    print(f"{name} seed {seed} skipped: {error}", flush=True)
                    continue
                FITTED_ON_SPLIT.clear()
                for method_name, factory in methods.items():
                    row: dict[str, Any] = {
                        "dataset": name,
                        "seed": seed,
                        "method": method_name,
                        "n_train": len(X_train),
                        "n_test": len(X_test),
                        "error": "",
                    }
                    try:
                        method, scores, row["seconds"] = run_one(factory, seed, X_train, X_test)
                        FITTED_ON_SPLIT[method_name] = method
                        row["roc_auc"], row["pr_auc"] = evaluate(scores, y_test)
                    except Exception as error:  # noqa: BLE001 - a failure is a result to report
                        row.update(roc_auc=math.nan, pr_auc=math.nan, seconds=math.nan)
                        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                        traceback.print_exc(limit=2)
                    rows.append(row)
                    writer.writerow(row)
                    handle.flush()
                    print(
                        f"{name:18s} seed {seed} {method_name:22s} ROC-AUC {row['roc_auc']:.4f} "
                        f"PR-AUC {row['pr_auc']:.4f} {row['seconds']:.1f}s {row['error']}",
                        flush=True,
                    )
    table = summarise(rows, list(methods))
    header = (
        f"# ADBench, unsupervised protocol\n\nSeeds {seeds}; datasets: {len(files)}; "
        f"rows capped at {max_rows}. Command: `python benchmarks/adbench.py "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}`\n\n"
    )
    md_path.write_text(header + table + "\n")
    print(header + table)


if __name__ == "__main__":
    main()
