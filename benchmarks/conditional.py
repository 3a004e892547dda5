"""Conditional flows against classical probabilistic regressors and generative classifiers.

One run, side by side, over ``--seeds`` random 75/25 splits per table (split
seeds ``--seed``, ``--seed + 1``, ...); the tables report mean +- standard
deviation over the splits, the JSON every split:

(a) Conditional density ``p(y | x)`` on the tables of ``../shared/data/regression``
    (mcycle: accel | times; faithful: eruptions | waiting; geyser: duration |
    waiting; diamonds: log price | the rest, a subsample) and sklearn's diabetes.
    Held-out mean log p(y | x) (nats, y standardised by the training spread so
    tables are comparable) for ``FlowRegressor()`` with its defaults, a Gaussian
    process regressor's predictive density (RBF + white noise; tables up to
    1,000 training rows), a heteroscedastic Gaussian (gradient-boosted mean, and
    a gradient-boosted log-variance fitted to cross-fitted squared residuals) and
    NGBoost's Normal regressor. NGBoost pins scikit-learn < 1.7, so it runs in
    its own environment as a subprocess on the same splits (arrays passed as
    ``.npy`` files, ``benchmarks/_ngboost_worker.py``); without that environment
    its column is skipped with a message. 90% interval coverage of the flow and
    of quantile gradient boosting.
(b) Classification on sklearn's digits and breast cancer: accuracy, log-loss,
    and out-of-distribution ROC-AUC (test rows against the same rows with every
    column permuted independently, scored by log p(x)) for FlowClassifier
    with its default flow (the default ensemble, and each of its two members
    alone: per class and conditional) and with the regressor's spline flow,
    against QuadraticDiscriminantAnalysis, GaussianNB, a per-class
    GaussianMixture and LogisticRegression.

Writes ``benchmarks/results/conditional.json`` and ``conditional.md``.

    nice -n 5 python benchmarks/conditional.py                # 3 splits
    nice -n 5 python benchmarks/conditional.py --quick --seeds 1   # smoke run
    python -m venv /work/scratch/ngb && /work/scratch/ngb/bin/pip install ngboost numpy pandas
    nice -n 5 python benchmarks/conditional.py --ngboost-python /work/scratch/ngb/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import logsumexp
from scipy.stats import norm
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
from sklearn.ensemble import GradientBoostingRegressor, HistGradientBoostingRegressor
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import cross_val_predict, train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from skflow import FlowClassifier, FlowRegressor, NeuralSplineDensity
from skflow.conditional import _default_regression_flow

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "regression"
if not DATA.is_dir():  # a worktree under wt/: the shared data sit beside the main checkout
    DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "regression"
RESULTS = Path(__file__).resolve().parent / "results"
NGBOOST_WORKER = Path(__file__).resolve().parent / "_ngboost_worker.py"
# Where benchmarks/README.md creates NGBoost's environment; --ngboost-python
# or SKFLOW_NGBOOST_PYTHON point elsewhere.
DEFAULT_NGBOOST_PYTHON = os.environ.get("SKFLOW_NGBOOST_PYTHON", "/work/scratch/ngb/bin/python")


def regression_tables(quick: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    tables = {}
    mcycle = pd.read_csv(DATA / "mcycle.csv")
    tables["mcycle"] = (mcycle[["times"]].to_numpy(float), mcycle["accel"].to_numpy(float))
    faithful = pd.read_csv(DATA / "faithful.csv")
    tables["faithful"] = (faithful[["waiting"]].to_numpy(float), faithful["eruptions"].to_numpy(float))
    geyser = pd.read_csv(DATA / "geyser.csv")
    tables["geyser"] = (geyser[["waiting"]].to_numpy(float), geyser["duration"].to_numpy(float))
    diamonds = pd.read_csv(DATA / "diamonds.csv").sample(1000 if quick else 2000, random_state=0)
    for column, order in {
        "cut": ["Fair", "Good", "Very Good", "Premium", "Ideal"],
        "color": list("JIHGFED"),
        "clarity": ["I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"],
    }.items():
        diamonds[column] = diamonds[column].map({level: rank for rank, level in enumerate(order)})
    features = ["carat", "cut", "color", "clarity", "depth", "table", "x", "y", "z"]
    tables["diamonds"] = (diamonds[features].to_numpy(float), np.log(diamonds["price"].to_numpy(float)))
    diabetes = load_diabetes()
    tables["diabetes"] = (diabetes.data, diabetes.target.astype(float))
    return tables


def flow_regressor(quick: bool, n_rows: int) -> FlowRegressor:
    """``FlowRegressor()`` as a user gets it; a smoke run only cuts the epochs of its default flow."""
    if not quick:
        return FlowRegressor()
    return FlowRegressor(flow=_default_regression_flow(n_rows).set_params(max_epochs=30))


def heteroscedastic_gaussian(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray) -> float:
    mean_model = HistGradientBoostingRegressor(max_iter=200, random_state=0)
    residual = y - cross_val_predict(mean_model, X, y, cv=5)
    mean_model.fit(X, y)
    log_variance = HistGradientBoostingRegressor(max_iter=100, random_state=0)
    log_variance.fit(X, np.log(residual**2 + 1e-6 * np.var(y)))
    # E[log chi2_1] = -1.27: exp(predicted log r^2) underestimates the variance; rescale on training.
    raw = np.exp(log_variance.predict(X))
    factor = np.mean(residual**2 / raw)
    variance = factor * np.exp(log_variance.predict(X_test))
    return float(norm.logpdf(y_test, mean_model.predict(X_test), np.sqrt(variance)).mean())


def ngboost_log_likelihood(python: str, X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray) -> float:
    """Held-out mean log p(y | x) of NGBoost (Normal), fitted by ``python`` in its own environment."""
    with tempfile.TemporaryDirectory(prefix="skflow_ngboost_") as folder:
        for name, array in {"X_train": X, "y_train": y, "X_test": X_test, "y_test": y_test}.items():
            np.save(Path(folder) / f"{name}.npy", array)
        subprocess.run([python, str(NGBOOST_WORKER), folder], check=True)
        return float(json.loads((Path(folder) / "ngboost.json").read_text())["mean_log_density"])


def run_regression(quick: bool, seeds: list[int], ngboost_python: str | None) -> list[dict]:
    rows = []
    if ngboost_python is None or not Path(ngboost_python).exists():
        print(
            f"NGBoost's environment is not at {ngboost_python!r} (see benchmarks/README.md; NGBoost pins "
            "scikit-learn < 1.7, so it is not installed beside skflow): its column is skipped."
        )
        ngboost_python = None
    for name, (X, y) in regression_tables(quick).items():
        for seed in seeds:
            X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=seed)
            scaler = StandardScaler().fit(X_train)
            X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
            # y standardised by the training spread: nats comparable across tables.
            centre, spread = y_train.mean(), y_train.std()
            y_train, y_test = (y_train - centre) / spread, (y_test - centre) / spread
            row: dict = {"table": name, "seed": seed, "n_train": len(y_train), "n_features": X.shape[1]}
            start = time.perf_counter()
            regressor = flow_regressor(quick, len(y_train)).fit(X_train, y_train)
            row["flow"] = regressor.score(X_test, y_test)
            interval = regressor.predict_interval(X_test, alpha=0.1)
            row["flow_coverage90"] = float(np.mean((interval[:, 0] <= y_test) & (y_test <= interval[:, 1])))
            row["flow_seconds"] = time.perf_counter() - start
            row["flow_best_epoch"] = regressor.best_epoch_
            if len(y_train) <= 1000:
                kernel = ConstantKernel() * RBF(np.ones(X.shape[1])) + WhiteKernel()
                gp = GaussianProcessRegressor(kernel, normalize_y=True, random_state=0).fit(X_train, y_train)
                mean, sd = gp.predict(X_test, return_std=True)
                row["gp"] = float(norm.logpdf(y_test, mean, sd).mean())
            else:
                row["gp"] = None
            row["hetero_gaussian"] = heteroscedastic_gaussian(X_train, y_train, X_test, y_test)
            row["ngboost"] = (
                None
                if ngboost_python is None
                else ngboost_log_likelihood(ngboost_python, X_train, y_train, X_test, y_test)
            )
            lower = GradientBoostingRegressor(loss="quantile", alpha=0.05, random_state=0).fit(X_train, y_train)
            upper = GradientBoostingRegressor(loss="quantile", alpha=0.95, random_state=0).fit(X_train, y_train)
            row["quantile_gb_coverage90"] = float(
                np.mean((lower.predict(X_test) <= y_test) & (y_test <= upper.predict(X_test)))
            )
            rows.append(row)
            print(row, flush=True)
    return rows


def _permuted(X: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.permutation(column) for column in X.T])


def _gmm_log_joint(models: list, priors: np.ndarray, X: np.ndarray) -> np.ndarray:
    return np.column_stack([model.score_samples(X) for model in models]) + np.log(priors)


def run_classification(quick: bool, seeds: list[int]) -> list[dict]:
    rows = []
    for name, loader in {"breast_cancer": load_breast_cancer, "digits": load_digits}.items():
        data = loader()
        for seed in seeds:
            X_train, X_test, y_train, y_test = train_test_split(
                data.data, data.target, test_size=0.25, random_state=seed, stratify=data.target
            )
            if name == "breast_cancer":  # continuous columns on wildly different scales
                scaler = StandardScaler().fit(X_train)
                X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
            outliers = _permuted(X_test, seed)
            is_outlier = np.r_[np.zeros(len(X_test)), np.ones(len(outliers))]
            classes = np.unique(y_train)
            priors = np.array([np.mean(y_train == k) for k in classes])
            contenders: dict = {}
            temperatures: dict = {}
            # The classifier's default flow (flow=None); --quick only cuts its epochs.
            default_flow = None if not quick else FlowClassifier()._default_flow(len(X_train)).set_params(max_epochs=10)
            # For comparison, the regressor's default family, a spline flow.
            spline_flow = NeuralSplineDensity(
                n_layers=4, hidden_dims=(64, 64), max_epochs=10 if quick else 200, random_state=0
            )
            for label, strategy, flow in (
                ("ensemble", "ensemble", default_flow),  # FlowClassifier()'s default strategy
                ("per_class", "per_class", default_flow),
                ("conditional", "conditional", default_flow),
                ("per_class_spline", "per_class", spline_flow),
                ("conditional_spline", "conditional", spline_flow),
            ):
                start = time.perf_counter()
                model = FlowClassifier(flow=flow, strategy=strategy).fit(X_train, y_train)
                seconds = time.perf_counter() - start
                log_density = model.score_samples(np.vstack([X_test, outliers]))
                contenders[f"flow_{label}"] = (model.predict_proba(X_test), log_density, seconds)
                # The ensemble's: one T per member (per class, shared).
                temperatures[label] = np.asarray(model.temperature_).tolist()
                if "spline" in label or strategy == "ensemble":
                    continue
                # The same flows without the fitted temperature (plain Bayes' rule, T = 1).
                joint = model._joint_log_likelihood(X_test)
                contenders[f"flow_{label}_T1"] = (
                    np.exp(joint - logsumexp(joint, axis=1, keepdims=True)),
                    log_density,
                    None,
                )
            qda = QuadraticDiscriminantAnalysis(reg_param=0.1).fit(X_train, y_train)
            contenders["qda"] = (qda.predict_proba(X_test), None, None)
            nb = GaussianNB().fit(X_train, y_train)
            joint = nb.predict_joint_log_proba(np.vstack([X_test, outliers]))
            contenders["gaussian_nb"] = (nb.predict_proba(X_test), logsumexp(joint, axis=1), None)
            gmms = [
                GaussianMixture(3, covariance_type="full", reg_covar=1e-2, random_state=0).fit(X_train[y_train == k])
                for k in classes
            ]
            joint = _gmm_log_joint(gmms, priors, X_test)
            contenders["gmm_per_class"] = (
                np.exp(joint - logsumexp(joint, axis=1, keepdims=True)),
                logsumexp(_gmm_log_joint(gmms, priors, np.vstack([X_test, outliers])), axis=1),
                None,
            )
            logistic = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_train, y_train)
            contenders["logistic"] = (logistic.predict_proba(X_test), None, None)
            for contender, (proba, log_density, seconds) in contenders.items():
                proba = np.clip(proba, 1e-15, 1.0)
                row = {
                    "table": name,
                    "seed": seed,
                    "model": contender,
                    "accuracy": float(accuracy_score(y_test, classes[np.argmax(proba, axis=1)])),
                    "log_loss": float(log_loss(y_test, proba / proba.sum(axis=1, keepdims=True), labels=classes)),
                    "ood_roc_auc": None
                    if log_density is None
                    else float(roc_auc_score(is_outlier, -np.nan_to_num(log_density, neginf=-1e300))),
                    "seconds": seconds,
                    "temperature": temperatures.get(contender.removeprefix("flow_")),
                }
                rows.append(row)
                print(row, flush=True)
    return rows


def _cell(values: list, digits: int = 3) -> str:
    """``mean +- sd`` over the splits (sd with ddof=1), the value alone for one split, n/a when absent."""
    values = [value for value in values if value is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def _grouped(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in keys), []).append(row)
    return groups


def markdown(regression: list[dict], classification: list[dict], command: str, seeds: list[int]) -> str:
    lines = [
        (
            f"Command: `{command}`; split seeds {seeds} (75/25 each); mean ± sd over the splits; "
            "shared, noisy 2-core machine."
        ),
        "",
        "Held-out mean log p(y | x), nats, y standardised by its training spread (higher is better):",
        "",
        (
            "| table | n_train | FlowRegressor | GP | heteroscedastic Gaussian | NGBoost | flow 90% coverage "
            "| quantile GB 90% coverage |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (table,), group in _grouped(regression, "table").items():
        column = {key: [row[key] for row in group] for key in group[0]}
        lines.append(
            f"| {table} | {group[0]['n_train']} | {_cell(column['flow'])} | {_cell(column['gp'])} | "
            f"{_cell(column['hetero_gaussian'])} | {_cell(column['ngboost'])} | "
            f"{_cell(column['flow_coverage90'], 2)} | {_cell(column['quantile_gb_coverage90'], 2)} |"
        )
    if regression:
        lines += [
            "",
            "Per split, the flow's held-out log-likelihood minus the best baseline's (positive: the flow wins):",
            "",
        ]
        lines += ["| table | " + " | ".join(f"seed {seed}" for seed in seeds) + " |"]
        lines += ["| --- |" + " --- |" * len(seeds)]
        for (table,), group in _grouped(regression, "table").items():
            margins = []
            for row in group:
                best = max(row[key] for key in ("gp", "hetero_gaussian", "ngboost") if row[key] is not None)
                margins.append(f"{row['flow'] - best:+.3f}")
            lines.append(f"| {table} | " + " | ".join(margins) + " |")
    lines += [
        "",
        "Classification (test split); OOD ROC-AUC: test rows against column-permuted copies, by log p(x):",
        "",
        "| table | model | accuracy | log-loss | OOD ROC-AUC |",
        "| --- | --- | --- | --- | --- |",
    ]
    for (table, model), group in _grouped(classification, "table", "model").items():
        column = {key: [row[key] for row in group] for key in group[0]}
        lines.append(
            f"| {table} | {model} | {_cell(column['accuracy'])} | {_cell(column['log_loss'])} | "
            f"{_cell(column['ood_roc_auc'])} |"
        )
    return "\n".join(lines) + "\n"


def combine(regression_json: str, classification_json: str, output: Path) -> None:
    """One report from two runs: the regression part of one and the classification part of the other."""
    regression_run = json.loads(Path(regression_json).read_text())
    classification_run = json.loads(Path(classification_json).read_text())
    if regression_run["seeds"] != classification_run["seeds"]:
        raise ValueError("the two runs used different splits")
    # A run that was itself combined keeps each part's own command.
    regression_command = regression_run.get("regression_command", regression_run["command"])
    classification_command = classification_run.get("classification_command", classification_run["command"])
    command = (
        f"{regression_command}` (regression) and `{classification_command}` (classification), merged by `--combine"
    )
    table = markdown(
        regression_run["regression"], classification_run["classification"], command, regression_run["seeds"]
    )
    print(table)
    payload = {
        "command": command,
        "regression_command": regression_command,
        "classification_command": classification_command,
        "seeds": regression_run["seeds"],
        "quick": regression_run["quick"] or classification_run["quick"],
        "regression": regression_run["regression"],
        "classification": classification_run["classification"],
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    output.with_suffix(".md").write_text(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few epochs, smaller diamonds sample: a smoke run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first split")
    parser.add_argument("--seeds", type=int, default=3, help="number of splits (seeds --seed, --seed + 1, ...)")
    parser.add_argument("--part", choices=["all", "regression", "classification"], default="all")
    parser.add_argument(
        "--ngboost-python",
        default=DEFAULT_NGBOOST_PYTHON,
        help="interpreter of an environment with NGBoost (default: $SKFLOW_NGBOOST_PYTHON or /work/scratch/ngb)",
    )
    parser.add_argument("--output", default=str(RESULTS / "conditional"))
    parser.add_argument(
        "--combine",
        nargs=2,
        metavar=("REGRESSION_JSON", "CLASSIFICATION_JSON"),
        help="write one report from the regression rows of one run's JSON and the classification rows of another's",
    )
    args = parser.parse_args()
    if args.combine:
        combine(*args.combine, Path(args.output))
        return
    seeds = list(range(args.seed, args.seed + args.seeds))
    regression = run_regression(args.quick, seeds, args.ngboost_python) if args.part in ("all", "regression") else []
    classification = run_classification(args.quick, seeds) if args.part in ("all", "classification") else []
    command = "python benchmarks/conditional.py " + " ".join(sys.argv[1:])
    table = markdown(regression, classification, command.strip(), seeds)
    print(table)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": command.strip(),
        "seeds": seeds,
        "quick": args.quick,
        "regression": regression,
        "classification": classification,
    }
    output.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    output.with_suffix(".md").write_text(table)


if __name__ == "__main__":
    main()
