"""Dimensionality reduction on real tables: FIF defaults against PCA, KernelPCA and an autoencoder.

For each table and each latent width ``d`` this script fits, on the same
training rows:

* ``fif``: :class:`skflow.InjectiveFlowEstimator` with its default
  hyperparameters (only ``n_components`` and ``random_state`` set);
* ``pca``: :class:`sklearn.decomposition.PCA`;
* ``kpca``: :class:`sklearn.decomposition.KernelPCA` with an RBF kernel and
  ``fit_inverse_transform=True``. ``gamma`` and ``alpha`` (the ridge of the
  learned pre-image map) are chosen by reconstruction MSE on a validation
  split of the training rows, from ``gamma = c * gamma_median`` with
  ``gamma_median = 1 / median ||x_i - x_j||^2`` (the median heuristic) and
  the factors ``c`` and ridges in ``KPCA_GAMMA_FACTORS`` / ``KPCA_ALPHAS``;
  then refitted on all training rows;
* ``ae``: a plain autoencoder with exactly FIF's default encoder and decoder
  (:func:`skflow.flows.injective.default_encoder` / ``default_decoder``,
  same widths, activation and residual blocks), trained the way the
  estimator trains FIF: per-column standardisation, Gaussian input noise
  0.01, loss ``beta * ||x - g(f(x))||^2`` with FIF's ``beta``, AdamW with
  FIF's learning rate and weight decay, FIF's batch size, gradient clipping,
  maximum epochs, validation fraction and patience, best validation weights
  restored. It stops on validation reconstruction error (it has no
  likelihood); FIF stops on validation likelihood. Without a validation
  split (``--fif-params '{"validation_fraction": null}'``) both train on all
  rows, stop on their training loss and keep the last epoch, as the engine
  does.

Measured on the held-out rows:

* reconstruction MSE, per feature, in the units of the table as given;
* mean log-likelihood per row where the method has one: FIF's
  ``score`` and PCA's probabilistic-PCA ``PCA.score``; KernelPCA and the
  autoencoder have none;
* where the table has class labels (digits, breast cancer), the accuracy of
  a ``LogisticRegression`` fitted on the training rows' codes (after a
  ``StandardScaler``, so that code scale does not matter) and evaluated on
  the test rows' codes, with the same classifier on the raw features as a
  reference.

Tables:

* ``digits``: scikit-learn's 8x8 digits, raw pixel values 0-16 (not
  standardised, as in ``fif_benchmark.py``); FIF dequantises the integer
  pixels during training (its default), so its likelihood approximates
  ``log P(x)`` of the integer images while PCA's is a Gaussian density at
  the same points;
* ``breast_cancer``: scikit-learn's Wisconsin diagnostic breast cancer
  (both classes), standardised on the training part;
* ADBench tables from ``../shared/data/adbench`` (relative to the repository
  root, or ``--data-dir``): the inlier rows (``y == 0``), at most
  ``--max-rows`` of them (a random subset), standardised on the training
  part.

Every table is split 75/25 into training and test rows with each of ``--seeds``
(which also seed the row subset, the models and the KernelPCA grid's split).
torch runs on one thread.

Usage::

    python benchmarks/dimensionality_reduction.py                   # full run
    python benchmarks/dimensionality_reduction.py --datasets Waveform --dims 2 --max-epochs 20  # smoke run
    python benchmarks/dimensionality_reduction.py --datasets breast_cancer --seeds 0 1 2     # several splits
    python benchmarks/dimensionality_reduction.py --fif-params '{"validation_fraction": null}'  # an ablation
    python benchmarks/dimensionality_reduction.py --methods fif pca --fif-params '{"init": "pca"}'  # PCA start
    python benchmarks/dimensionality_reduction.py --render benchmarks/results/dimensionality_reduction.json

Writes ``benchmarks/results/dimensionality_reduction.{json,md}`` (or
``--output``) and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.decomposition import PCA, KernelPCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import pairwise_distances
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

# Measure the working tree, not whatever copy of skflow is installed.
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import skflow
from skflow import InjectiveFlowEstimator
from skflow.flows.injective import default_decoder, default_encoder

RESULTS = REPO_ROOT / "benchmarks" / "results"
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "adbench"
LABELLED = ("digits", "breast_cancer")
DEFAULT_DATASETS = ["digits", "breast_cancer", "satellite", "SpamBase", "Waveform", "letter", "musk"]
KPCA_GAMMA_FACTORS = (0.1, 0.3, 1.0, 3.0)
KPCA_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0)
METHODS = ("fif", "pca", "kpca", "ae")


# ---------------------------------------------------------------------- #
# Data
# ---------------------------------------------------------------------- #
def load_table(name: str, data_dir: Path, max_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Rows, labels (None for the ADBench inlier tables) and whether to standardise."""
    if name == "digits":
        X, y = load_digits(return_X_y=True)
        return X.astype(np.float64), y, False
    if name == "breast_cancer":
        X, y = load_breast_cancer(return_X_y=True)
        return X.astype(np.float64), y, True
    matches = sorted(data_dir.glob(f"*_{name}.npz"))
    if len(matches) != 1:
        raise SystemExit(f"ADBench table {name!r} not found in {data_dir} (pass --data-dir).")
    data = np.load(matches[0])
    X = data["X"][data["y"] == 0].astype(np.float64)
    if len(X) > max_rows:
        X = X[np.random.default_rng(seed).choice(len(X), max_rows, replace=False)]
    return X, None, True


def split(X: np.ndarray, y: np.ndarray | None, standardise: bool, seed: int) -> dict:
    parts = train_test_split(X, *([] if y is None else [y]), test_size=0.25, random_state=seed, stratify=y)
    X_train, X_test = parts[0], parts[1]
    if standardise:
        scaler = StandardScaler().fit(X_train)
        X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    out = {"X_train": X_train, "X_test": X_test}
    if y is not None:
        out["y_train"], out["y_test"] = parts[2], parts[3]
    return out


# ---------------------------------------------------------------------- #
# Baselines
# ---------------------------------------------------------------------- #
def median_heuristic_gamma(X: np.ndarray, seed: int, n_rows: int = 1000) -> float:
    rows = X[np.random.default_rng(seed).choice(len(X), min(n_rows, len(X)), replace=False)]
    squared = pairwise_distances(rows, metric="sqeuclidean")
    return 1.0 / float(np.median(squared[np.triu_indices_from(squared, k=1)]))


def fit_kernel_pca(
    X_train: np.ndarray,
    d: int,
    seed: int,
    gamma_factors: tuple = KPCA_GAMMA_FACTORS,
    alphas: tuple = KPCA_ALPHAS,
) -> tuple[KernelPCA, dict]:
    """KernelPCA with gamma and alpha chosen by validation reconstruction MSE, refitted on all rows."""
    fit_rows, valid_rows = train_test_split(X_train, test_size=0.2, random_state=seed)
    gamma_median = median_heuristic_gamma(fit_rows, seed)
    scores = {}
    for factor in gamma_factors:
        for alpha in alphas:
            model = KernelPCA(
                d, kernel="rbf", gamma=factor * gamma_median, alpha=alpha, fit_inverse_transform=True, random_state=seed
            ).fit(fit_rows)
            reconstructed = model.inverse_transform(model.transform(valid_rows))
            scores[(factor, alpha)] = float(((valid_rows - reconstructed) ** 2).mean())
    factor, alpha = min(scores, key=scores.get)
    model = KernelPCA(
        d, kernel="rbf", gamma=factor * gamma_median, alpha=alpha, fit_inverse_transform=True, random_state=seed
    ).fit(X_train)
    return model, {"gamma_factor": factor, "gamma": factor * gamma_median, "alpha": alpha}


class Autoencoder:
    """FIF's default networks trained on reconstruction alone, the way the estimator trains FIF.

    Every training setting is read from an :class:`InjectiveFlowEstimator`
    (``reference``), so the two cannot drift apart.
    """

    def __init__(self, reference: InjectiveFlowEstimator, seed: int) -> None:
        self.reference = reference
        self.seed = seed

    def fit(self, X: np.ndarray) -> Autoencoder:
        ref = self.reference
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.mean_ = X.mean(axis=0)
        std = X.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)
        rows = torch.as_tensor((X - self.mean_) / self.scale_, dtype=torch.float32)
        order = rng.permutation(len(rows))
        # As the engine: without a validation split, all rows train, the
        # training loss is monitored and the last epoch's weights are kept.
        use_validation = bool(ref.validation_fraction)
        n_valid = round(ref.validation_fraction * len(rows)) if use_validation else 0
        valid, train = rows[order[:n_valid]], rows[order[n_valid:]]
        D, d = X.shape[1], ref.n_components
        self.encoder = default_encoder(D, d, ref.hidden_dims, ref.activation, ref.n_residual_blocks)
        self.decoder = default_decoder(d, D, ref.hidden_dims, ref.activation, ref.n_residual_blocks)
        parameters = [*self.encoder.parameters(), *self.decoder.parameters()]
        optimiser = torch.optim.AdamW(parameters, lr=ref.lr, weight_decay=ref.weight_decay)
        batch_size = min(ref.batch_size, len(train))
        best, best_state, since_best = np.inf, None, 0
        self.n_iter_ = 0
        for _epoch in range(ref.max_epochs):
            self.encoder.train()
            self.decoder.train()
            losses = []
            for batch in train[torch.randperm(len(train))].split(batch_size):
                noisy = batch + ref.noise_std * torch.randn_like(batch)
                loss = ref.beta * (noisy - self.decoder(self.encoder(noisy))).pow(2).sum(1).mean()
                optimiser.zero_grad()
                loss.backward()
                if ref.gradient_clip is not None:
                    torch.nn.utils.clip_grad_norm_(parameters, ref.gradient_clip)
                optimiser.step()
                losses.append(loss.item() * len(batch))
            self.n_iter_ += 1
            monitored = float(self._squared_error(valid).mean()) if use_validation else sum(losses) / len(train)
            if not np.isfinite(monitored):
                raise FloatingPointError(f"autoencoder diverged at epoch {self.n_iter_}")
            if monitored < best:
                best, since_best, self.best_epoch_ = monitored, 0, self.n_iter_
                if use_validation:
                    best_state = [p.detach().clone() for p in parameters]
            else:
                since_best += 1
                if ref.patience is not None and since_best >= ref.patience:
                    break
        if best_state is not None:
            with torch.no_grad():
                for parameter, value in zip(parameters, best_state, strict=True):
                    parameter.copy_(value)
        else:
            self.best_epoch_ = self.n_iter_
        return self

    @torch.no_grad()
    def _squared_error(self, rows: torch.Tensor) -> torch.Tensor:
        self.encoder.eval()
        self.decoder.eval()
        return (rows - self.decoder(self.encoder(rows))).pow(2).sum(1)

    @torch.no_grad()
    def transform(self, X: np.ndarray) -> np.ndarray:
        self.encoder.eval()
        return self.encoder(torch.as_tensor((X - self.mean_) / self.scale_, dtype=torch.float32)).double().numpy()

    @torch.no_grad()
    def inverse_transform(self, Z: np.ndarray) -> np.ndarray:
        self.decoder.eval()
        decoded = self.decoder(torch.as_tensor(Z, dtype=torch.float32)).double().numpy()
        return decoded * self.scale_ + self.mean_


# ---------------------------------------------------------------------- #
# One table, one d
# ---------------------------------------------------------------------- #
def downstream_accuracy(codes_train: np.ndarray, codes_test: np.ndarray, data: dict) -> float:
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    classifier.fit(codes_train, data["y_train"])
    return float(classifier.score(codes_test, data["y_test"]))


def run_one(
    name: str, data: dict, d: int, seed: int, overrides: dict, methods: tuple = METHODS, kpca_grid: tuple = ()
) -> dict:
    """Fit ``methods`` with latent width ``d``.

    ``overrides`` are FIF hyperparameters (the autoencoder follows them);
    ``kpca_grid`` is ``(gamma_factors, alphas)`` for KernelPCA's search.
    """
    X_train, X_test = data["X_train"], data["X_test"]
    record: dict = {"dataset": name, "seed": seed, "n_features": X_train.shape[1], "n_train": len(X_train), "d": d}
    fitted: dict = {}
    if "fif" in methods:
        fitted["fif"] = fif = fit_fif(X_train, X_test, d, seed, overrides, record)
    if "pca" in methods:
        start = time.perf_counter()
        pca = PCA(n_components=d, random_state=seed).fit(X_train)
        record["pca_seconds"] = time.perf_counter() - start
        record["pca_loglik"] = float(pca.score(X_test))
        fitted["pca"] = pca
    if "kpca" in methods:
        start = time.perf_counter()
        kpca, chosen = fit_kernel_pca(X_train, d, seed, *kpca_grid)
        record["kpca_seconds"] = time.perf_counter() - start  # includes the validation grid
        record.update({f"kpca_{key}": value for key, value in chosen.items()})
        fitted["kpca"] = kpca
    if "ae" in methods:
        start = time.perf_counter()
        # The autoencoder reads FIF's training settings; it always starts from a random initialisation.
        ae = Autoencoder(InjectiveFlowEstimator(n_components=d, **overrides), seed).fit(X_train)
        record["ae_seconds"] = time.perf_counter() - start
        record["ae_epochs"], record["ae_best_epoch"] = ae.n_iter_, ae.best_epoch_
        fitted["ae"] = ae

    for method, model in fitted.items():
        codes_test = model.transform(X_test)
        reconstructed = model.inverse_transform(codes_test)
        record[f"{method}_mse"] = float(((X_test - reconstructed) ** 2).mean())
        if "y_train" in data:
            record[f"{method}_accuracy"] = downstream_accuracy(model.transform(X_train), codes_test, data)
    if "y_train" in data:
        record["raw_accuracy"] = downstream_accuracy(X_train, X_test, data)
    if "fif" in methods:
        # FIF's own reconstruction_error must agree with the generic transform/inverse_transform route.
        record["fif_mse_check"] = float(fif.reconstruction_error(X_test).mean() / X_test.shape[1])
    return record


def fit_fif(
    X_train: np.ndarray, X_test: np.ndarray, d: int, seed: int, overrides: dict, record: dict
) -> InjectiveFlowEstimator:
    start = time.perf_counter()
    fif = InjectiveFlowEstimator(n_components=d, random_state=seed, **overrides).fit(X_train)
    record["fif_seconds"] = time.perf_counter() - start
    record["fif_epochs"], record["fif_best_epoch"] = int(fif.n_iter_), int(fif.best_epoch_)
    record["fif_loglik"] = float(fif.score(X_test))
    record["fif_manifold_loglik"] = float(fif.score_samples_manifold(X_test).mean())
    return fif


# ---------------------------------------------------------------------- #
# Report
# ---------------------------------------------------------------------- #
def _cell(value: float | None, best: bool = False, digits: int = 4) -> str:
    if value is None:
        return "-"
    text = f"{value:.{digits}g}"
    return f"**{text}**" if best else text


def _settings_line(config: dict) -> str:
    overrides = config.get("fif_overrides") or {}
    changed = {key: value for key, value in overrides.items() if key != "max_epochs"}
    what = f"FIF overridden with {json.dumps(changed)}" if changed else "FIF: defaults"
    return (
        f"{what} (max_epochs {config['fif_max_epochs']}, patience {config['patience']}, "
        f"validation_fraction {config.get('validation_fraction', 0.1)}); "
    )


def markdown(records: list[dict], command: str, config: dict) -> str:
    present = [m for m in METHODS if f"{m}_mse" in records[0]]
    if present != list(METHODS):
        return _baselines_markdown(records, command, config, present)
    lines = [
        f"Command: `{command}`",
        "",
        (
            f"skflow {config['skflow']}, torch {config['torch']}, scikit-learn {config['sklearn']}; "
            f"seeds {', '.join(map(str, config['seeds']))}; ADBench tables: inlier rows, at most {config['max_rows']}, "
            "75/25 split, standardised on the training part; digits in raw pixel units. "
            + _settings_line(config)
            + "the autoencoder uses FIF's networks and training settings. Bold: best in the row."
        ),
        "",
        "## Held-out reconstruction MSE per feature (lower is better)",
        "",
        "| table | D | n_train | d | seed | FIF | PCA | KernelPCA | AE | FIF < PCA | FIF < AE |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    wins_pca = wins_ae = 0
    for r in records:
        values = {m: r[f"{m}_mse"] for m in METHODS}
        best = min(values.values())
        cells = [_cell(values[m], values[m] == best) for m in METHODS]
        below_pca, below_ae = values["fif"] < values["pca"], values["fif"] < values["ae"]
        wins_pca += below_pca
        wins_ae += below_ae
        lines.append(
            f"| {r['dataset']} | {r['n_features']} | {r['n_train']} | {r['d']} | {r['seed']} | "
            + " | ".join(cells)
            + f" | {'yes' if below_pca else 'no'} | {'yes' if below_ae else 'no'} |"
        )
    lines += [
        "",
        (
            f"FIF below PCA on {wins_pca} of {len(records)} (table, d); below the autoencoder on "
            f"{wins_ae} of {len(records)}."
        ),
        "",
        "## Held-out mean log-likelihood per row (higher is better)",
        "",
        (
            "KernelPCA and the autoencoder define no density. FIF on-manifold: the "
            "d-dimensional density of the projection (not comparable with full-dimensional densities)."
        ),
        "",
        "| table | d | seed | FIF | PCA (probabilistic) | FIF on-manifold | FIF epochs (best) | AE epochs (best) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    wins_loglik = 0
    for r in records:
        fif_better = r["fif_loglik"] > r["pca_loglik"]
        wins_loglik += fif_better
        lines.append(
            f"| {r['dataset']} | {r['d']} | {r['seed']} | {_cell(r['fif_loglik'], fif_better)} | "
            f"{_cell(r['pca_loglik'], not fif_better)} | {_cell(r['fif_manifold_loglik'])} | "
            f"{r['fif_epochs']} ({r['fif_best_epoch']}) | {r['ae_epochs']} ({r['ae_best_epoch']}) |"
        )
    lines += ["", f"FIF above probabilistic PCA on {wins_loglik} of {len(records)}."]
    labelled = [r for r in records if "fif_accuracy" in r]
    if labelled:
        lines += [
            "",
            "## Downstream LogisticRegression accuracy on the codes (test rows)",
            "",
            "| table | d | seed | FIF | PCA | KernelPCA | AE | raw features |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in labelled:
            values = {m: r[f"{m}_accuracy"] for m in METHODS}
            best = max(values.values())
            cells = [_cell(values[m], values[m] == best, 3) for m in METHODS]
            lines.append(
                f"| {r['dataset']} | {r['d']} | {r['seed']} | "
                + " | ".join(cells)
                + f" | {_cell(r['raw_accuracy'], digits=3)} |"
            )
    lines += [
        "",
        "## Fit times (seconds, shared machine: compare within a row only)",
        "",
        "| table | d | seed | FIF | PCA | KernelPCA (incl. grid) | AE | KernelPCA gamma factor, alpha |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['dataset']} | {r['d']} | {r['seed']} | {r['fif_seconds']:.1f} | {r['pca_seconds']:.2f} | "
            f"{r['kpca_seconds']:.1f} | {r['ae_seconds']:.1f} | {r['kpca_gamma_factor']:g}, {r['kpca_alpha']:g} |"
        )
    return "\n".join(lines) + "\n"


def _baselines_markdown(records: list[dict], command: str, config: dict, present: list[str]) -> str:
    """Report of a run with only some methods (e.g. KernelPCA with another grid)."""
    names = {"fif": "FIF", "pca": "PCA", "kpca": "KernelPCA", "ae": "AE"}
    lines = [
        f"Command: `{command}`",
        "",
        (
            f"scikit-learn {config['sklearn']}; seeds {', '.join(map(str, config['seeds']))}; the same tables, "
            "rows and splits as the full run; only these methods. KernelPCA grid: gamma factors "
            f"{list(config['kpca_gamma_factors'])} x median heuristic, alphas {list(config['kpca_alphas'])}."
        ),
        "",
        "## Held-out reconstruction MSE per feature (lower is better)",
        "",
        "| table | d | seed | " + " | ".join(names[m] for m in present) + " | KernelPCA gamma factor, alpha |",
        "|---|---:|---:|" + "---:|" * len(present) + "---|",
    ]
    for r in records:
        choice = f"{r['kpca_gamma_factor']:g}, {r['kpca_alpha']:g}" if "kpca_alpha" in r else "-"
        cells = " | ".join(_cell(r[f"{m}_mse"]) for m in present)
        lines.append(f"| {r['dataset']} | {r['d']} | {r['seed']} | {cells} | {choice} |")
    if "fif" in present:
        lines += [
            "",
            "## FIF: held-out mean log-likelihood per row and epochs",
            "",
            _settings_line(config) + f"commit {config.get('commit')}.",
            "",
            "| table | d | seed | FIF | PCA (probabilistic) | FIF epochs (best) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in records:
            lines.append(
                f"| {r['dataset']} | {r['d']} | {r['seed']} | {_cell(r['fif_loglik'])} | "
                f"{_cell(r.get('pca_loglik'))} | {r['fif_epochs']} ({r['fif_best_epoch']}) |"
            )
    labelled = [r for r in records if f"{present[0]}_accuracy" in r]
    if labelled:
        lines += [
            "",
            "## Downstream LogisticRegression accuracy on the codes (test rows)",
            "",
            "| table | d | seed | " + " | ".join(names[m] for m in present) + " |",
            "|---|---:|---:|" + "---:|" * len(present),
        ]
        for r in labelled:
            cells = " | ".join(_cell(r[f"{m}_accuracy"], digits=3) for m in present)
            lines.append(f"| {r['dataset']} | {r['d']} | {r['seed']} | {cells} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--datasets", nargs="+", default=DEFAULT_DATASETS, help="digits, breast_cancer or ADBench names"
    )
    parser.add_argument("--dims", nargs="+", type=int, default=[2, 4, 8], help="latent widths d")
    parser.add_argument("--max-rows", type=int, default=3000, help="cap on ADBench inlier rows (random subset)")
    parser.add_argument("--max-epochs", type=int, default=None, help="override FIF's (and the AE's) max_epochs")
    parser.add_argument(
        "--fif-params",
        default="{}",
        help="JSON of FIF hyperparameters overriding the defaults, e.g. '{\"validation_fraction\": null}' "
        "(an ablation, not the defaults); the autoencoder follows the training settings among them",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="split, subset and model seeds")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to run")
    parser.add_argument(
        "--kpca-gamma-factors",
        nargs="+",
        type=float,
        default=list(KPCA_GAMMA_FACTORS),
        help="KernelPCA gamma grid, as factors of the median heuristic",
    )
    parser.add_argument("--kpca-alphas", nargs="+", type=float, default=list(KPCA_ALPHAS), help="KernelPCA ridge grid")
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        help="only rewrite the markdown (and table_markdown) of an existing results JSON",
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS / "dimensionality_reduction", help="path without suffix (.json, .md)"
    )
    return parser.parse_args(argv)


def _commit() -> str | None:
    """The checked-out commit, so a result says which code produced it."""
    try:
        return subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def write(output: Path, payload: dict) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    output.with_suffix(".md").write_text(
        "# Dimensionality reduction: FIF against PCA, KernelPCA, autoencoder\n\n" + payload["table_markdown"]
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render is not None:
        # Same numbers, current report layout (records from runs before the
        # seed field existed carry the run's single seed in the config).
        payload = json.loads(args.render.read_text())
        config = payload["config"]
        config.setdefault("seeds", [config.get("seed", 0)])
        config.setdefault("command", payload["table_markdown"].splitlines()[0].removeprefix("Command: `").rstrip("`"))
        for record in payload["records"]:
            record.setdefault("seed", config["seeds"][0])
        payload["table_markdown"] = markdown(payload["records"], config["command"], config)
        write(args.render.with_suffix(""), payload)
        print(payload["table_markdown"])
        return
    torch.set_num_threads(1)
    overrides = json.loads(args.fif_params)
    if args.max_epochs is not None:
        overrides["max_epochs"] = args.max_epochs
    reference = InjectiveFlowEstimator(**overrides)
    command = shlex.join(["python", "benchmarks/dimensionality_reduction.py", *sys.argv[1:]])
    config = {
        "command": command,
        "datasets": args.datasets,
        "dims": args.dims,
        "max_rows": args.max_rows,
        "seeds": args.seeds,
        "fif_overrides": overrides,
        "fif_max_epochs": reference.max_epochs,
        "validation_fraction": reference.validation_fraction,
        "patience": reference.patience,
        "methods": args.methods,
        "kpca_gamma_factors": args.kpca_gamma_factors,
        "kpca_alphas": args.kpca_alphas,
        "skflow": skflow.__version__,
        "commit": _commit(),
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }
    records = []
    start = time.perf_counter()
    for name in args.datasets:
        for seed in args.seeds:
            X, y, standardise = load_table(name, args.data_dir, args.max_rows, seed)
            data = split(X, y, standardise, seed)
            for d in args.dims:
                record = run_one(
                    name, data, d, seed, overrides, tuple(args.methods), (args.kpca_gamma_factors, args.kpca_alphas)
                )
                records.append(record)
                summary = ", ".join(f"{m} mse {record[m + '_mse']:.4g}" for m in args.methods)
                print(f"{name} d={d} seed={seed}: {summary}", flush=True)
    config["total_seconds"] = time.perf_counter() - start
    config["load_average_at_end"] = os.getloadavg()
    payload = {"config": config, "records": records, "table_markdown": markdown(records, command, config)}
    write(args.output, payload)
    print(payload["table_markdown"])


if __name__ == "__main__":
    main()
