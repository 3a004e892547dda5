"""Speed benchmark: skflow against zuko and nflows, in one run, as ratios.

Four measurements, each side by side in the same process and interleaved
(the order rotates with each repeat), so that the load of a shared machine
affects every contender alike; report the ratios, not the absolute numbers:

1. Training samples/s and scoring rows/s at equal architecture for RealNVP,
   MAF, NSF (autoregressive) and Glow (tabular: ActNorm, dense LU map,
   affine coupling), on digits (64-D) and on a 50-D table, with the
   contenders, fairness rules and units of ``peer_benchmark.py`` (reused
   from there: same layers, widths, batch, optimiser, epochs; no validation
   split, no early stopping). Scoring is timed on 4,096 rows of the 50-D
   table. zuko has no Glow; its cell stays empty.
2. Time to a target held-out likelihood on digits: every contender's test
   log-likelihood is measured after each epoch (outside the timed training),
   and the table gives the training time each needed to reach the *lowest*
   final value among the contenders (so every one reaches it).
3. Oversubscription: a small fit (``RealNVPDensity(max_epochs=10)`` on 300 x 3
   rows) with skflow's thread policy, with one thread and with two threads
   (torch's default on this machine, i.e. skflow before the policy), first
   as the machine is, then while a competing process runs multi-threaded
   BLAS matrix products (started by this script); and the same two
   conditions for the README's jobs (``python -m skflow``, whose held-out
   log-likelihood is recorded too, and the quickstart).
4. ``GridSearchCV(n_jobs=2)`` against ``n_jobs=1``: over a tiny grid (fits of a
   tenth of a second) and a realistic one (8 candidates x 3 folds, fits of
   seconds), with the import time of skflow in a fresh interpreter (which
   every joblib worker pays before its first fit).

Run ``python benchmarks/speed.py --help``; ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_benchmark as peers

RESULTS_DIR = peers.RESULTS_DIR


# --------------------------------------------------------------------------- #
# Glow (tabular): the one family peer_benchmark does not have
# --------------------------------------------------------------------------- #
def fit_skflow_glow(X: np.ndarray, architecture: peers.Architecture, seed: int) -> Any:
    from skflow import GlowDensity

    settings = peers._skflow_training(architecture, seed)
    return GlowDensity(n_steps=architecture.n_layers, **settings).fit(X)


def fit_nflows_glow(X: np.ndarray, architecture: peers.Architecture, seed: int) -> peers.TorchPeer:
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.transforms import ActNorm, AffineCouplingTransform, CompositeTransform, LULinear

    standardisation = peers.Standardisation.of(X)
    rows = standardisation.apply(X)
    torch.manual_seed(seed)
    n_features = X.shape[1]
    factory = peers._NflowsConditionerFactory(tuple(architecture.hidden_dims))
    steps: list[nn.Module] = []
    for index in range(architecture.n_layers):
        mask = (torch.arange(n_features) + index) % 2
        steps += [
            ActNorm(n_features),
            LULinear(n_features, identity_init=False),
            AffineCouplingTransform(mask, factory),
        ]
    flow = Flow(CompositeTransform(steps), StandardNormal([n_features]))
    flow.train()
    losses = peers.train_plain(flow.log_prob, list(flow.parameters()), rows, architecture)
    return peers.TorchPeer(flow.log_prob, standardisation, flow, losses)


FAMILIES: dict[str, list[peers.Contender]] = {
    **{name: peers.FAMILIES[name] for name in ("realnvp", "maf", "nsf")},
    "glow": [
        peers.Contender(
            "skflow",
            fit_skflow_glow,
            peers.score_skflow,
            "skflow.GlowDensity (tabular: ActNorm, LU linear, affine coupling), skorch loop",
        ),
        peers.Contender(
            "nflows",
            fit_nflows_glow,
            peers.score_torch_peer,
            "nflows ActNorm + LULinear + AffineCouplingTransform (alternating masks), plain PyTorch loop",
        ),
    ],
}


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #
def table_50d(seed: int, n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """A 50-D table: a correlated Gaussian mixture with skewed columns."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    centres = rng.normal(scale=3.0, size=(4, 50))
    mixing = rng.normal(size=(50, 50)) / np.sqrt(50)
    X = centres[rng.integers(0, 4, size=n)] + rng.normal(size=(n, 50)) @ mixing
    X[:, :10] = np.exp(0.5 * X[:, :10])  # a few lognormal-like columns, as in real tables
    return X[:n_train], X[n_train:]


# --------------------------------------------------------------------------- #
# 1 and 2: throughput, and time to a target likelihood
# --------------------------------------------------------------------------- #
class _Trace:
    """Per-epoch (training seconds, test log-likelihood) of the fit in progress."""

    def __init__(self, X_test: np.ndarray, standardisation: peers.Standardisation) -> None:
        self.rows = standardisation.apply(X_test)
        self.log_abs_det = standardisation.log_abs_det
        self.points: list[tuple[float, float]] = []
        self.training_seconds = 0.0
        self.epoch_started = time.perf_counter()

    def begin_epoch(self) -> None:
        self.epoch_started = time.perf_counter()

    def end_epoch(self, log_prob: Callable[[Tensor], Tensor], module: nn.Module) -> None:
        self.training_seconds += time.perf_counter() - self.epoch_started
        was_training = module.training
        module.eval()
        with torch.no_grad():
            value = float(log_prob(self.rows).double().mean()) + self.log_abs_det
        module.train(was_training)
        self.points.append((self.training_seconds, value))
        self.epoch_started = time.perf_counter()


def _traced_fit(contender: peers.Contender, X_train: np.ndarray, X_test: np.ndarray, architecture, seed) -> list:
    """Fit with a per-epoch held-out trace; returns [(training seconds, test log-lik)]."""
    from skorch.callbacks import Callback

    import skflow.base

    trace = _Trace(X_test, peers.Standardisation.of(X_train))
    original_train_plain, original_train_model = peers.train_plain, skflow.base.train_model

    def train_plain(log_prob, parameters, rows, arch):  # type: ignore[no-untyped-def]
        # The peers' loop, one epoch at a time, so the trace sees every epoch.
        module = _owner_module(log_prob)
        losses: list[float] = []
        for _ in range(arch.epochs):
            trace.begin_epoch()
            losses += original_train_plain(log_prob, parameters, rows, replace(arch, epochs=1))
            trace.end_epoch(log_prob, module)
        return losses

    class TraceCallback(Callback):
        def on_epoch_begin(self, net, **kwargs):  # type: ignore[no-untyped-def]
            trace.begin_epoch()

        def on_epoch_end(self, net, **kwargs):  # type: ignore[no-untyped-def]
            trace.end_epoch(net.module_.log_prob, net.module_)

    def train_model(*args, callbacks=None, **kwargs):  # type: ignore[no-untyped-def]
        return original_train_model(*args, callbacks=[*(callbacks or []), TraceCallback()], **kwargs)

    peers.train_plain, skflow.base.train_model = train_plain, train_model
    try:
        contender.fit(X_train, architecture, seed)
    finally:
        peers.train_plain, skflow.base.train_model = original_train_plain, original_train_model
    return trace.points


def _owner_module(log_prob: Callable) -> nn.Module:
    """The module whose eval/train mode governs ``log_prob`` (a bound method or a closure over a flow)."""
    owner = getattr(log_prob, "__self__", None)
    if isinstance(owner, nn.Module):
        return owner
    for cell in getattr(log_prob, "__closure__", None) or ():
        if isinstance(cell.cell_contents, nn.Module):
            return cell.cell_contents
    raise TypeError("cannot find the module behind log_prob")


def throughput(data, families, architecture, repeats, seed, min_score_seconds) -> list[dict[str, Any]]:
    records = []
    for repeat in range(repeats):
        for dataset, (X_train, X_test) in data.items():
            for family in families:
                contenders = FAMILIES[family]
                shift = repeat % len(contenders)
                for contender in contenders[shift:] + contenders[:shift]:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        record = peers.run_one(
                            contender, X_train, X_test, architecture, seed + repeat, min_score_seconds
                        )
                    record.update(dataset=dataset, family=family, contender=contender.name, repeat=repeat)
                    records.append(record)
                    print(
                        f"[throughput {repeat}] {dataset:>8} {family:>7} {contender.name:>7}: "
                        f"{record['train_rows_per_second']:>9,.0f} train rows/s "
                        f"{record['score_rows_per_second']:>10,.0f} score rows/s "
                        f"test log-lik {record['test_mean_log_likelihood']:.2f}",
                        file=sys.stderr,
                        flush=True,
                    )
    return records


def time_to_target(X_train, X_test, families, architecture, seed) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for family in families:
        traces = {}
        for contender in FAMILIES[family]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traces[contender.name] = _traced_fit(contender, X_train, X_test, architecture, seed)
        finals = [points[-1][1] for points in traces.values() if points and math.isfinite(points[-1][1])]
        target = min(finals) if finals else math.nan
        reached = {}
        for name, points in traces.items():
            seconds = next((s for s, value in points if value >= target), math.nan)
            reached[name] = {
                "seconds_to_target": seconds,
                "epochs_to_target": next((i + 1 for i, (_, value) in enumerate(points) if value >= target), None),
                "final_test_log_likelihood": points[-1][1] if points else math.nan,
                "trace": points,
            }
            print(f"[target] {family:>7} {name:>7}: {seconds:.2f}s to {target:.2f}", file=sys.stderr, flush=True)
        result[family] = {"target_test_log_likelihood": target, "contenders": reached}
    return result


def scoring_cpu(X_train, X_score, families, architecture, repeats, seed) -> dict[str, Any]:
    """Scoring rows per CPU-second (process time), one thread: less sensitive to other processes than wall time."""
    result: dict[str, Any] = {}
    short = replace(architecture, epochs=1)  # scoring cost does not depend on how long the model trained
    for family in families:
        fitted = {}
        for contender in FAMILIES[family]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fitted[contender.name] = (contender, contender.fit(X_train, short, seed))
        rates: dict[str, list[float]] = {name: [] for name in fitted}
        for repeat in range(3 * repeats):
            names = list(fitted)
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                contender, model = fitted[name]
                contender.score(model, X_score[:1024])  # warm
                start = time.process_time()
                contender.score(model, X_score)
                rates[name].append(len(X_score) / (time.process_time() - start))
        result[family] = {name: statistics.median(values) for name, values in rates.items()}
        print(f"[scoring cpu] {family}: {result[family]}", file=sys.stderr, flush=True)
    return result


# --------------------------------------------------------------------------- #
# 3 and 4: a busy machine, and GridSearchCV
# --------------------------------------------------------------------------- #
_COMPETITOR = (
    "import numpy as np\n"
    "a = np.random.default_rng(0).random((700, 700))\n"
    "while True:\n"
    "    a = a @ a\n"
    "    a /= np.abs(a).max()\n"
)


def _small_fit(n_threads: int | None) -> float:
    from skflow import RealNVPDensity

    X = np.random.default_rng(0).normal(size=(300, 3))
    start = time.perf_counter()
    RealNVPDensity(max_epochs=10, random_state=0, device="cpu", n_threads=n_threads).fit(X)
    return time.perf_counter() - start


def oversubscription(repeats: int) -> dict[str, Any]:
    settings = {"skflow policy (n_threads=None)": None, "1 thread": 1, "2 threads (torch default here)": 2}
    result: dict[str, Any] = {}
    for condition in ("as the machine is", "with a competing BLAS process"):
        competitor = None
        if condition.startswith("with"):
            competitor = subprocess.Popen([sys.executable, "-c", _COMPETITOR])  # BLAS threads: all cores
            time.sleep(2.0)  # let it reach the run queue and the load average
        try:
            times: dict[str, list[float]] = {name: [] for name in settings}
            for repeat in range(repeats):
                names = list(settings)
                shift = repeat % len(names)
                for name in names[shift:] + names[:shift]:
                    times[name].append(_small_fit(settings[name]))
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
        medians = {name: statistics.median(values) for name, values in times.items()}
        result[condition] = {"median_seconds": medians, "all_seconds": times}
        print(f"[oversubscription] {condition}: {medians}", file=sys.stderr, flush=True)
    return result


# The README's quickstart, verbatim but for the progress lines (verbose=0, as
# it runs unattended here).
_QUICKSTART = """
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skflow import RealNVPDensity

X = load_digits().data
flow = RealNVPDensity(n_layers=8, random_state=0).fit(X)
log_density = flow.score_samples(X)
X_new = flow.sample(10, random_state=0)
Z = flow.transform(X)
pipe = make_pipeline(StandardScaler(), RealNVPDensity(random_state=0)).fit(X)
search = GridSearchCV(RealNVPDensity(random_state=0), {"n_layers": [4, 8]}, cv=3).fit(X)
"""


def _timed_run(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stdout


def _demo_loglik(stdout: str) -> float:
    """The flow's held-out log-likelihood from ``python -m skflow``'s score table."""
    for line in stdout.splitlines():
        if line.startswith("RealNVPDensity"):
            return float(line.split()[-3])
    return math.nan


def _phased(code: str) -> str:
    """``code`` with each statement timed, wall and process CPU seconds (all threads); the imports are one phase.

    The script prints ``PHASES`` and a JSON list of ``[statement, wall s, CPU s]``;
    CPU over wall is the number of cores the statement had on average.
    """
    lines = [line for line in code.strip().splitlines() if line.strip()]
    is_import = [line.startswith(("from ", "import ")) for line in lines]
    out = ["import json as _json, time as _time", "_phases = []", "_w, _c = _time.perf_counter(), _time.process_time()"]
    for index, line in enumerate(lines):
        out.append(line)
        if is_import[index] and index + 1 < len(lines) and is_import[index + 1]:
            continue  # consecutive imports are one phase
        label = "imports" if is_import[index] else line
        out += [
            f"_phases.append(({label!r}, _time.perf_counter() - _w, _time.process_time() - _c))",
            "_w, _c = _time.perf_counter(), _time.process_time()",
        ]
    out.append('print("PHASES " + _json.dumps(_phases))')
    return "\n".join(out)


def _phases(stdout: str) -> list | None:
    for line in stdout.splitlines():
        if line.startswith("PHASES "):
            return json.loads(line[len("PHASES ") :])
    return None


QUICKSTART_PHASES = "README quickstart, timed statement by statement"

README_JOBS = {
    "python -m skflow": [sys.executable, "-m", "skflow"],
    "README quickstart": [sys.executable, "-c", _QUICKSTART],
}


def time_to_quality(repeats: int, jobs: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """``python -m skflow`` and the README quickstart (or ``jobs``), as the machine is and beside a BLAS competitor."""
    jobs = README_JOBS if jobs is None else jobs
    result: dict[str, Any] = {}
    for condition in ("as the machine is", "with a competing BLAS process"):
        competitor = None
        if condition.startswith("with"):
            competitor = subprocess.Popen([sys.executable, "-c", _COMPETITOR])  # BLAS threads: all cores
            time.sleep(2.0)
        try:
            entry: dict[str, Any] = {"load_average_before": list(os.getloadavg())}
            for name, argv in jobs.items():
                seconds, logliks, runs = [], [], []
                for _ in range(repeats):
                    elapsed, stdout = _timed_run(argv)
                    seconds.append(elapsed)
                    if name == "python -m skflow":
                        logliks.append(_demo_loglik(stdout))
                    if (phases := _phases(stdout)) is not None:
                        runs.append(phases)
                entry[name] = {"median_seconds": statistics.median(seconds), "all_seconds": seconds}
                if logliks:
                    entry[name]["heldout_loglik"] = logliks
                if runs:
                    entry[name]["phases"] = runs
                print(f"[time to quality] {condition} {name}: {seconds} {logliks}", file=sys.stderr, flush=True)
            entry["load_average_after"] = list(os.getloadavg())
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
        result[condition] = entry
    return result


def import_seconds(repeats: int) -> dict[str, float]:
    """Wall and CPU seconds of ``import skflow`` in a fresh interpreter: what each loky worker pays first."""
    code = "import time; t = time.perf_counter(); c = time.process_time(); import skflow; " + (
        "print(time.perf_counter() - t, time.process_time() - c)"
    )
    walls, cpus = [], []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        walls.append(float(out[0]))
        cpus.append(float(out[1]))
    return {"wall_seconds": statistics.median(walls), "cpu_seconds": statistics.median(cpus)}


# Two searches: fits of a tenth of a second (where starting the workers is most
# of the work) and a realistic one, 8 candidates x 3 folds of fits taking
# seconds each (a 50-D table, 30 epochs with the default early stopping).
GRIDS: dict[str, dict[str, Any]] = {
    "tiny fits (4 candidates x 3 folds, 600 x 5 rows, 10 epochs)": {
        "data": (600, 5),
        "estimator": {"max_epochs": 10},
        "grid": {"n_layers": [2, 4], "hidden_dims": [(32, 32), (64, 64)]},
    },
    "realistic (8 candidates x 3 folds, 3000 x 50 rows, 30 epochs)": {
        "data": (3000, 50),
        "estimator": {"max_epochs": 30},
        "grid": {"n_layers": [4, 8], "hidden_dims": [(64, 64), (128, 128)], "lr": [1e-3, 3e-3]},
    },
}


def grid_search(repeats: int, quick: bool = False) -> dict[str, Any]:
    from sklearn.model_selection import GridSearchCV

    from skflow import RealNVPDensity

    result: dict[str, Any] = {"import_skflow": import_seconds(3)}
    print(f"[grid search] import skflow: {result['import_skflow']}", file=sys.stderr, flush=True)
    for name, setting in GRIDS.items():
        n_rows, n_features = setting["data"]
        if quick:
            n_rows, setting = min(n_rows, 300), {**setting, "estimator": {"max_epochs": 2}}
            name = f"{name} [quick: {n_rows} rows, 2 epochs]"
        if n_features == 50:
            X = table_50d(0, n_rows, 1)[0]
        else:
            X = np.random.default_rng(0).normal(size=(n_rows, n_features))
        times: dict[int, list[float]] = {1: [], 2: []}
        fit_seconds: list[float] = []
        for repeat in range(repeats):
            for n_jobs in (1, 2) if repeat % 2 == 0 else (2, 1):
                search = GridSearchCV(
                    RealNVPDensity(random_state=0, **setting["estimator"]), setting["grid"], cv=3, n_jobs=n_jobs
                )
                start = time.perf_counter()
                search.fit(X)
                times[n_jobs].append(time.perf_counter() - start)
                if n_jobs == 1:
                    fit_seconds.append(float(np.mean(search.cv_results_["mean_fit_time"])))
                print(f"[grid search] {name} n_jobs={n_jobs}: {times[n_jobs][-1]:.1f}s", file=sys.stderr, flush=True)
        medians = {n_jobs: statistics.median(values) for n_jobs, values in times.items()}
        result[name] = {
            "median_seconds": {f"n_jobs={k}": v for k, v in medians.items()},
            "all_seconds": times,
            "mean_fit_seconds_n_jobs_1": statistics.median(fit_seconds),
            "load_average_after": list(os.getloadavg()),
        }
    return result


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #
def report(result: dict[str, Any]) -> str:
    lines = [
        f"Command: `{result['command']}`  ",
        f"Load average at start: {result['environment']['load_average_at_start']}",
    ]
    # Each section only when its part ran (--parts can leave any of them out).
    if result.get("throughput_summary"):
        lines += ["", "**Training and scoring throughput (medians; ratios against zuko, else nflows)**", ""]
        header = "| dataset | family | contender | train rows/s | vs peer | score rows/s | vs peer | test log-lik |"
        lines += [header, "|---|---|---|---:|---:|---:|---:|---:|"]
    for dataset, families in result.get("throughput_summary", {}).items():
        for family, contenders in families.items():
            base = contenders.get("zuko") or contenders.get("nflows")
            for name, row in contenders.items():
                train_ratio = row["train_rows_per_second_median"] / base["train_rows_per_second_median"]
                score_ratio = row["score_rows_per_second_median"] / base["score_rows_per_second_median"]
                lines.append(
                    f"| {dataset} | {family} | {name} | {row['train_rows_per_second_median']:,.0f} | "
                    f"{train_ratio:.2f}x | {row['score_rows_per_second_median']:,.0f} | {score_ratio:.2f}x | "
                    f"{row['test_mean_log_likelihood_mean']:.2f} |"
                )
    if result.get("scoring_cpu"):
        lines += ["", "**Scoring the 50-D table: rows per CPU-second (process time), one thread, medians**", ""]
        lines += ["| family | contender | rows / CPU-s | vs peer |", "|---|---|---:|---:|"]
        for family, rates in result["scoring_cpu"].items():
            base = rates.get("zuko") or rates.get("nflows")
            for name, rate in rates.items():
                lines.append(f"| {family} | {name} | {rate:,.0f} | {rate / base:.2f}x |")
    if result.get("time_to_target"):
        lines += ["", "**Time to a target held-out log-likelihood on digits**", ""]
        lines += ["| family | target (nats/row) | contender | training s to target | epochs | final log-lik |"]
        lines += ["|---|---:|---|---:|---:|---:|"]
        for family, entry in result["time_to_target"].items():
            for name, row in entry["contenders"].items():
                lines.append(
                    f"| {family} | {entry['target_test_log_likelihood']:.2f} | {name} | "
                    f"{row['seconds_to_target']:.2f} | {row['epochs_to_target']} | {row['final_test_log_likelihood']:.2f} |"
                )
    if result.get("oversubscription"):
        lines += ["", "**Small fit (RealNVPDensity, 300 x 3, 10 epochs): median seconds**", ""]
        conditions = result["oversubscription"]
        names = list(next(iter(conditions.values()))["median_seconds"])
        lines += ["| condition | " + " | ".join(names) + " | policy / 1 thread |", "|---|" + "---:|" * (len(names) + 1)]
        for condition, entry in conditions.items():
            medians = entry["median_seconds"]
            ratio = medians[names[0]] / medians["1 thread"]
            lines.append(f"| {condition} | " + " | ".join(f"{medians[n]:.2f}" for n in names) + f" | {ratio:.2f}x |")
    if result.get("time_to_quality"):
        lines += [
            "",
            "**The README's jobs, as the machine is and beside a competing BLAS process: median seconds**",
            "",
        ]
        lines += ["| job | as the machine is | with a BLAS competitor | ratio |", "|---|---:|---:|---:|"]
        conditions = result["time_to_quality"]
        calm, busy = conditions["as the machine is"], conditions["with a competing BLAS process"]
        for job in (name for name in README_JOBS if name in calm):
            a, b = calm[job]["median_seconds"], busy[job]["median_seconds"]
            lines.append(f"| {job} | {a:.1f} | {b:.1f} | {b / a:.2f}x |")
        demo = [entry.get("python -m skflow", {}) for entry in (calm, busy)]
        logliks = [value for entry in demo for value in entry.get("heldout_loglik", [])]
        lines += [
            "",
            (
                f"Demo held-out log-likelihood of the flow (nats per image): {', '.join(f'{v:.2f}' for v in logliks)}. "
                f"Load average before each condition: {calm['load_average_before'][0]:.1f} and "
                f"{busy['load_average_before'][0]:.1f}."
            ),
        ]
    if result.get("quickstart_phases"):
        lines += ["", *_phase_table(result["quickstart_phases"])]
    if result.get("grid_search"):
        searches = result["grid_search"]
        lines += ["", "**GridSearchCV over RealNVP settings, cv=3: median seconds**", ""]
        if "import_skflow" in searches:
            imported = searches["import_skflow"]
            lines += [
                (
                    f"`import skflow` in a fresh interpreter (what each worker pays first): "
                    f"{imported['wall_seconds']:.2f} s wall, {imported['cpu_seconds']:.2f} s CPU."
                ),
                "",
            ]
        lines += ["| search | mean fit s | n_jobs=1 | n_jobs=2 | speed-up |", "|---|---:|---:|---:|---:|"]
        for name, entry in searches.items():
            if name == "import_skflow":
                continue
            medians = entry["median_seconds"]
            lines.append(
                f"| {name} | {entry.get('mean_fit_seconds_n_jobs_1', math.nan):.2f} | {medians['n_jobs=1']:.2f} | "
                f"{medians['n_jobs=2']:.2f} | {medians['n_jobs=1'] / medians['n_jobs=2']:.2f}x |"
            )
    return "\n".join(lines)


def _phase_table(conditions: dict[str, Any]) -> list[str]:
    """Per statement of the quickstart: wall and cores used, alone and beside the competitor (medians of runs)."""
    calm, busy = (conditions[c][QUICKSTART_PHASES] for c in ("as the machine is", "with a competing BLAS process"))

    def medians(entry: dict[str, Any]) -> dict[str, tuple[float, float]]:
        runs = entry["phases"]
        return {
            label: (
                statistics.median(run[i][1] for run in runs),
                statistics.median(run[i][2] for run in runs),
            )
            for i, (label, _, _) in enumerate(runs[0])
        }

    a, b = medians(calm), medians(busy)
    lines = [
        "**README quickstart by statement, alone and beside the BLAS competitor (median seconds)**",
        "",
        "cores = CPU seconds of the process (all threads) / wall seconds; CPU-s ratio = the statement's CPU",
        "seconds beside the competitor over alone (the work itself growing, e.g. through shared caches). On 2",
        "cores, one thread beside the competitor's two gets 2/3 of a core: a wall ratio of 1.5x is the floor",
        "for single-threaded work, and other processes on the machine lower the share further. share = the",
        "statement's part of the extra wall time.",
        "",
        "| statement | wall alone | cores alone | wall beside | cores beside | wall ratio | CPU-s ratio | share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [(label, *a[label], *b[label]) for label in a]
    extra = sum(row[3] - row[1] for row in rows)
    for label, wall_a, cpu_a, wall_b, cpu_b in rows:
        lines.append(
            f"| `{label}` | {wall_a:.2f} | {cpu_a / wall_a:.2f} | {wall_b:.2f} | {cpu_b / wall_b:.2f} | "
            f"{wall_b / wall_a:.2f}x | {cpu_b / cpu_a:.2f}x | {100 * (wall_b - wall_a) / extra:.0f}% |"
        )
    total_a, total_b = sum(row[1] for row in rows), sum(row[3] for row in rows)
    cpu_a, cpu_b = sum(row[2] for row in rows), sum(row[4] for row in rows)
    lines.append(
        f"| all statements | {total_a:.2f} | {cpu_a / total_a:.2f} | {total_b:.2f} | {cpu_b / total_b:.2f} | "
        f"{total_b / total_a:.2f}x | {cpu_b / cpu_a:.2f}x | 100% |"
    )
    lines.append(
        f"| whole process (interpreter start and exit included) | {calm['median_seconds']:.2f} | | "
        f"{busy['median_seconds']:.2f} | | {busy['median_seconds'] / calm['median_seconds']:.2f}x | | |"
    )
    lines += [
        "",
        (
            f"Load average before each condition: {conditions['as the machine is']['load_average_before'][0]:.1f} "
            f"and {conditions['with a competing BLAS process']['load_average_before'][0]:.1f}; after: "
            f"{conditions['as the machine is']['load_average_after'][0]:.1f} and "
            f"{conditions['with a competing BLAS process']['load_average_after'][0]:.1f}."
        ),
    ]
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models and data: a smoke run")
    parser.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=["realnvp", "maf", "nsf", "glow"])
    parser.add_argument("--parts", nargs="+",
                        choices=["throughput", "scoring", "target", "busy", "demo", "phases", "grid"],
                        default=["throughput", "scoring", "target", "busy", "demo", "grid"])  # fmt: skip
    parser.add_argument("--epochs", type=int, default=None, help="epochs per fit (default 20, quick 2)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3, quick 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the throughput part (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "speed.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    quick = args.quick
    default_threads = torch.get_num_threads()  # torch's own choice: the busy-machine part starts from it
    architecture = peers.Architecture(
        n_layers=2 if quick else 8,
        hidden_dims=(32, 32) if quick else (128, 128),
        epochs=args.epochs or (2 if quick else 20),
    )
    repeats = args.repeats or (1 if quick else 3)
    digits = peers.dataset_digits(args.seed, quick)
    table = table_50d(args.seed, 400 if quick else 2048, 1024 if quick else 4096)
    result: dict[str, Any] = {
        "command": " ".join(["speed.py", *(argv if argv is not None else sys.argv[1:])]),
        "architecture": asdict(architecture),
        "repeats": repeats,
        "environment": peers.environment(),
    }
    # Imports and one-time initialisation of every library must not count.
    warm_up = peers.Architecture(n_layers=1, hidden_dims=(8,), batch_size=32, epochs=1)
    for family in args.families:
        for contender in FAMILIES[family]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                contender.score(contender.fit(digits[0][:64], warm_up, args.seed), digits[0][:64])
    if "throughput" in args.parts:
        torch.set_num_threads(args.threads)
        records = throughput(
            {"digits": digits, "table50": table},
            args.families,
            architecture,
            repeats,
            args.seed,
            0.05 if quick else 0.3,
        )
        summary: dict[str, Any] = {}
        for record in records:
            key = (record["dataset"], record["family"], record["contender"])
            summary.setdefault(key, []).append(record)
        result["throughput_summary"] = {}
        for (dataset, family, name), mine in summary.items():
            result["throughput_summary"].setdefault(dataset, {}).setdefault(family, {})[name] = peers.summarise(mine)
        result["throughput_records"] = records
    if "scoring" in args.parts:
        torch.set_num_threads(args.threads)
        result["scoring_cpu"] = scoring_cpu(table[0], table[1], args.families, architecture, repeats, args.seed)
    if "target" in args.parts:
        torch.set_num_threads(args.threads)
        result["time_to_target"] = time_to_target(*digits, args.families, architecture, args.seed)
    torch.set_num_threads(default_threads)
    if "busy" in args.parts:
        result["oversubscription"] = oversubscription(repeats)
    if "demo" in args.parts:
        result["time_to_quality"] = time_to_quality(1 if quick else min(repeats, 2))
    if "phases" in args.parts:
        job = {QUICKSTART_PHASES: [sys.executable, "-c", _phased(_QUICKSTART)]}
        result["quickstart_phases"] = time_to_quality(1 if quick else min(repeats, 2), job)
    if "grid" in args.parts:
        result["grid_search"] = grid_search(1 if quick else min(repeats, 2), quick)
    result["table_markdown"] = report(result)
    print(result["table_markdown"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, default=str))
    args.output.with_suffix(".md").write_text(result["table_markdown"] + "\n")
    print(f"\nwrote {args.output} and {args.output.with_suffix('.md')}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
