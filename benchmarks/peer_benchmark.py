"""Peer benchmark: skflow's flows against zuko and nflows at equal architecture.

For every flow *family* (RealNVP today; MAF and neural spline flows later) a
list of *contenders* is trained on the same data with the same architecture
and optimisation settings, and three numbers are measured:

* training throughput: training rows processed per second of wall time
  (``n_train * epochs / fit time``); the fit time runs from the raw numpy
  array to a trained model, so it includes each library's own set-up
  (standardisation, model construction, skorch initialisation for skflow);
* scoring throughput: test rows scored per second, from the raw numpy array
  to a numpy array of log-densities;
* held-out mean log-likelihood, in nats per row, in the units of the data as
  given (see "Units" below).

Fairness rules, applied to every contender alike:

* same number of coupling layers, same hidden widths (ReLU MLPs), same batch
  size, same number of epochs, the same optimiser (AdamW, weight decay 0,
  which is Adam) with the same learning rate, the same gradient clipping
  (none by default), no validation split and no early stopping;
* the peers are trained by :func:`train_plain`, a plain PyTorch loop over
  mini-batches sliced from one shuffled tensor (no DataLoader, no per-row
  collation), i.e. the fastest loop a competent user would write;
* all contenders run in one process, interleaved (the order rotates with each
  repeat) and with the same number of torch threads, so that load from other
  processes on the machine affects all of them alike.

Units: skflow standardises the columns internally (mean and population
standard deviation of the training rows) and adds the log-det of that affine
map to ``score_samples``. The peers get exactly the same standardisation,
computed here with the same formula, and the same correction
``-sum(log scale)`` is added to their log-densities, so all three report
``log p(x)`` for the same ``x``. The benchmark checks that skflow's fitted
``mean_`` and ``scale_`` equal the ones given to the peers.

Each library keeps its own choices for what "architecture" does not fix:
skflow its defaults (ActNorm before each coupling, a random permutation
between couplings, log-scales soft-clamped to +-3, zero-initialised last
layers), zuko and nflows alternating masks and their own scale
parameterisations. Those are part of what is being compared.

Run ``python benchmarks/peer_benchmark.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits, make_moons
from sklearn.model_selection import train_test_split
from torch import Tensor, nn

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Run from a source checkout without installing: the package is one level up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


# --------------------------------------------------------------------------- #
# Settings shared by every contender
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Architecture:
    """Everything the contenders of one comparison must share.

    Attributes
    ----------
    n_layers : int
        Number of coupling (or autoregressive) layers.
    hidden_dims : tuple of int
        Hidden widths of every conditioner MLP (ReLU).
    batch_size : int
        Rows per optimisation step.
    epochs : int
        Passes over the training rows; no early stopping.
    lr : float
        Learning rate of AdamW (weight decay 0).
    gradient_clip : float or None
        Maximum total gradient norm per step, or None for no clipping.
    peer_fused_adamw : bool
        Whether the peers' AdamW uses torch's fused kernel, as skflow's
        engine does wherever it is supported (same update, fewer kernel
        calls). False gives the peers torch's default implementation.
    skflow_n_threads : int or None
        skflow's ``n_threads``. None lets its thread policy choose (one
        thread for these batch sizes, at most ``torch.get_num_threads()``);
        a number makes skflow use the threads the peers are given.
    """

    n_layers: int = 8
    hidden_dims: tuple[int, ...] = (128, 128)
    batch_size: int = 256
    epochs: int = 50
    lr: float = 1e-3
    gradient_clip: float | None = None
    peer_fused_adamw: bool = True
    skflow_n_threads: int | None = None


@dataclass
class Standardisation:
    """Column-wise affine map to standardised units, as skflow computes it."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, X: np.ndarray) -> Standardisation:
        # Same formula as skflow.base._standardisation: population std, and
        # scale 1 for (numerically) constant columns.
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        tiny = 10 * np.finfo(X.dtype).eps * np.maximum(1.0, np.abs(mean))
        return cls(mean, np.where(scale > tiny, scale, 1.0))

    def apply(self, X: np.ndarray) -> Tensor:
        return torch.as_tensor(np.ascontiguousarray((X - self.mean) / self.scale), dtype=torch.float32)

    @property
    def log_abs_det(self) -> float:
        """log |det| of the map from data units to standardised units."""
        return float(-np.log(self.scale).sum())


# --------------------------------------------------------------------------- #
# Contenders
# --------------------------------------------------------------------------- #
@dataclass
class Contender:
    """One library's implementation of a family, behind two functions.

    Attributes
    ----------
    name : str
        Row label, e.g. ``"skflow"``.
    fit : callable ``(X_train, architecture, seed) -> fitted``
        Trains on raw rows of shape (n, d) and returns an opaque fitted object.
    score : callable ``(fitted, X) -> ndarray of shape (n,)``
        Log-density of raw rows, in the units of ``X``.
    describe : str
        One line on what the contender is, for the JSON record.
    """

    name: str
    fit: Callable[[np.ndarray, Architecture, int], Any]
    score: Callable[[Any, np.ndarray], np.ndarray]
    describe: str = ""


def train_plain(
    log_prob: Callable[[Tensor], Tensor],
    parameters: list[nn.Parameter],
    rows: Tensor,
    architecture: Architecture,
) -> list[float]:
    """Plain PyTorch maximum-likelihood loop used for every peer library.

    Mini-batches are sliced from ``rows`` after one ``randperm`` per epoch;
    nothing is collated row by row. Returns the mean training loss per epoch.
    """
    optimizer = torch.optim.AdamW(
        parameters, lr=architecture.lr, weight_decay=0.0, fused=architecture.peer_fused_adamw or None
    )
    n_rows = len(rows)
    batch_size = min(architecture.batch_size, n_rows)
    epoch_losses = []
    for _ in range(architecture.epochs):
        order = torch.randperm(n_rows)
        total = 0.0
        for start in range(0, n_rows, batch_size):
            batch = rows[order[start : start + batch_size]]
            loss = -log_prob(batch).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if architecture.gradient_clip is not None:
                torch.nn.utils.clip_grad_norm_(parameters, architecture.gradient_clip)
            optimizer.step()
            # .item() once per batch, as skflow's loop (skorch) records it too.
            total += loss.item() * len(batch)
        epoch_losses.append(total / n_rows)
        if not math.isfinite(epoch_losses[-1]):
            break
    return epoch_losses


@dataclass
class TorchPeer:
    """A fitted peer model with the standardisation it was trained in."""

    log_prob: Callable[[Tensor], Tensor]
    standardisation: Standardisation
    module: nn.Module
    epoch_losses: list[float] = field(default_factory=list)


def score_torch_peer(peer: TorchPeer, X: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Log-densities of raw rows, in data units, in batches of 8192 rows."""
    peer.module.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(X), batch_size):
            batch = peer.standardisation.apply(X[start : start + batch_size])
            outputs.append(peer.log_prob(batch).numpy().astype(np.float64))
    return np.concatenate(outputs) + peer.standardisation.log_abs_det


# ---- skflow ---------------------------------------------------------------- #
def fit_skflow_realnvp(X: np.ndarray, architecture: Architecture, seed: int) -> Any:
    from skflow import RealNVPDensity

    return RealNVPDensity(n_layers=architecture.n_layers, **_skflow_training(architecture, seed)).fit(X)


def score_skflow(estimator: Any, X: np.ndarray) -> np.ndarray:
    return estimator.score_samples(X)


# ---- zuko ------------------------------------------------------------------ #
def fit_zuko_realnvp(X: np.ndarray, architecture: Architecture, seed: int) -> TorchPeer:
    import zuko

    standardisation = Standardisation.of(X)
    rows = standardisation.apply(X)
    torch.manual_seed(seed)
    flow = zuko.flows.RealNVP(
        X.shape[1], transforms=architecture.n_layers, hidden_features=tuple(architecture.hidden_dims)
    )

    def log_prob(batch: Tensor) -> Tensor:
        return flow().log_prob(batch)

    flow.train()
    losses = train_plain(log_prob, list(flow.parameters()), rows, architecture)
    return TorchPeer(log_prob, standardisation, flow, losses)


# ---- nflows ---------------------------------------------------------------- #
class _NflowsConditioner(nn.Module):
    """ReLU MLP with nflows' conditioner signature ``(inputs, context)``."""

    def __init__(self, in_features: int, out_features: int, hidden_dims: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, out_features))
        self.network = nn.Sequential(*layers)

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        return self.network(inputs)


class _NflowsConditionerFactory:
    """Picklable ``transform_net_create_fn`` for nflows' coupling transforms."""

    def __init__(self, hidden_dims: tuple[int, ...]) -> None:
        self.hidden_dims = hidden_dims

    def __call__(self, in_features: int, out_features: int) -> nn.Module:
        return _NflowsConditioner(in_features, out_features, self.hidden_dims)


def fit_nflows_realnvp(X: np.ndarray, architecture: Architecture, seed: int) -> TorchPeer:
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.transforms import AffineCouplingTransform, CompositeTransform

    standardisation = Standardisation.of(X)
    rows = standardisation.apply(X)
    torch.manual_seed(seed)
    n_features = X.shape[1]
    factory = _NflowsConditionerFactory(tuple(architecture.hidden_dims))
    couplings = []
    for index in range(architecture.n_layers):
        # Alternating checkerboard masks (1 = transformed), as zuko's default.
        mask = (torch.arange(n_features) + index) % 2
        couplings.append(AffineCouplingTransform(mask, factory))
    flow = Flow(CompositeTransform(couplings), StandardNormal([n_features]))
    flow.train()
    losses = train_plain(flow.log_prob, list(flow.parameters()), rows, architecture)
    return TorchPeer(flow.log_prob, standardisation, flow, losses)


# ---- autoregressive families: MAF and neural spline flows (NSF) ------------ #
N_SPLINE_BINS = 8


def _skflow_training(architecture: Architecture, seed: int) -> dict[str, Any]:
    """skflow's training settings matching the peers' plain loop."""
    return {
        "hidden_dims": tuple(architecture.hidden_dims),
        "activation": "relu",
        "max_epochs": architecture.epochs,
        "batch_size": architecture.batch_size,
        "lr": architecture.lr,
        "weight_decay": 0.0,
        "validation_fraction": None,
        "patience": None,
        "gradient_clip": architecture.gradient_clip,
        "dequantize": False,
        "random_state": seed,
        "device": "cpu",
        "n_threads": architecture.skflow_n_threads,
    }


def fit_skflow_maf(X: np.ndarray, architecture: Architecture, seed: int) -> Any:
    from skflow import MAFDensity

    return MAFDensity(n_layers=architecture.n_layers, **_skflow_training(architecture, seed)).fit(X)


def fit_skflow_nsf(X: np.ndarray, architecture: Architecture, seed: int) -> Any:
    from skflow import NeuralSplineDensity

    return NeuralSplineDensity(
        variant="autoregressive",
        n_layers=architecture.n_layers,
        n_bins=N_SPLINE_BINS,
        **_skflow_training(architecture, seed),
    ).fit(X)


def _fit_zuko_flow(
    flow_class_name: str, X: np.ndarray, architecture: Architecture, seed: int, **kwargs: Any
) -> TorchPeer:
    import zuko

    standardisation = Standardisation.of(X)
    rows = standardisation.apply(X)
    torch.manual_seed(seed)
    flow = getattr(zuko.flows, flow_class_name)(
        X.shape[1], transforms=architecture.n_layers, hidden_features=tuple(architecture.hidden_dims), **kwargs
    )

    def log_prob(batch: Tensor) -> Tensor:
        return flow().log_prob(batch)

    flow.train()
    losses = train_plain(log_prob, list(flow.parameters()), rows, architecture)
    return TorchPeer(log_prob, standardisation, flow, losses)


def fit_zuko_maf(X: np.ndarray, architecture: Architecture, seed: int) -> TorchPeer:
    return _fit_zuko_flow("MAF", X, architecture, seed)


def fit_zuko_nsf(X: np.ndarray, architecture: Architecture, seed: int) -> TorchPeer:
    return _fit_zuko_flow("NSF", X, architecture, seed, bins=N_SPLINE_BINS)


def _nflows_made_depth(architecture: Architecture) -> tuple[int, int]:
    """nflows' MADE has equal hidden widths and ``1 + num_blocks`` hidden layers."""
    widths = set(architecture.hidden_dims)
    if len(widths) != 1:
        raise ValueError(f"nflows' MADE needs equal hidden widths, got {architecture.hidden_dims}.")
    return widths.pop(), len(architecture.hidden_dims) - 1


def _fit_nflows_autoregressive(
    make_layer: Callable[[int, int, int], nn.Module], X: np.ndarray, architecture: Architecture, seed: int
) -> TorchPeer:
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.transforms import CompositeTransform, ReversePermutation

    standardisation = Standardisation.of(X)
    rows = standardisation.apply(X)
    torch.manual_seed(seed)
    n_features = X.shape[1]
    width, num_blocks = _nflows_made_depth(architecture)
    transforms: list[nn.Module] = []
    for index in range(architecture.n_layers):
        if index:
            # Reverse the variable order between layers, as skflow and zuko do.
            transforms.append(ReversePermutation(n_features))
        transforms.append(make_layer(n_features, width, num_blocks))
    flow = Flow(CompositeTransform(transforms), StandardNormal([n_features]))
    flow.train()
    losses = train_plain(flow.log_prob, list(flow.parameters()), rows, architecture)
    return TorchPeer(flow.log_prob, standardisation, flow, losses)


def _nflows_maf_layer(n_features: int, width: int, num_blocks: int) -> nn.Module:
    from nflows.transforms import MaskedAffineAutoregressiveTransform

    return MaskedAffineAutoregressiveTransform(n_features, width, num_blocks=num_blocks, use_residual_blocks=False)


def _nflows_nsf_layer(n_features: int, width: int, num_blocks: int) -> nn.Module:
    from nflows.transforms import MaskedPiecewiseRationalQuadraticAutoregressiveTransform

    return MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
        n_features,
        width,
        num_bins=N_SPLINE_BINS,
        tails="linear",
        tail_bound=3.0,
        num_blocks=num_blocks,
        use_residual_blocks=False,
    )


def fit_nflows_maf(X: np.ndarray, architecture: Architecture, seed: int) -> TorchPeer:
    return _fit_nflows_autoregressive(_nflows_maf_layer, X, architecture, seed)


def fit_nflows_nsf(X: np.ndarray, architecture: Architecture, seed: int) -> TorchPeer:
    return _fit_nflows_autoregressive(_nflows_nsf_layer, X, architecture, seed)


FAMILIES: dict[str, list[Contender]] = {
    "realnvp": [
        Contender(
            "skflow",
            fit_skflow_realnvp,
            score_skflow,
            "skflow.RealNVPDensity (defaults: ActNorm, random permutations, scale_bound=3), skorch loop",
        ),
        Contender(
            "zuko",
            fit_zuko_realnvp,
            score_torch_peer,
            "zuko.flows.RealNVP (alternating masks), plain PyTorch loop",
        ),
        Contender(
            "nflows",
            fit_nflows_realnvp,
            score_torch_peer,
            "nflows Flow of AffineCouplingTransform (alternating masks, ReLU MLP), plain PyTorch loop",
        ),
    ],
    "maf": [
        Contender(
            "skflow",
            fit_skflow_maf,
            score_skflow,
            "skflow.MAFDensity (defaults: ActNorm, order reversed between layers, scale_bound=3), skorch loop",
        ),
        Contender("zuko", fit_zuko_maf, score_torch_peer, "zuko.flows.MAF (order reversed), plain PyTorch loop"),
        Contender(
            "nflows",
            fit_nflows_maf,
            score_torch_peer,
            "nflows MaskedAffineAutoregressiveTransform (plain MADE, ReversePermutation), plain PyTorch loop",
        ),
    ],
    "nsf": [
        Contender(
            "skflow",
            fit_skflow_nsf,
            score_skflow,
            "skflow.NeuralSplineDensity(variant='autoregressive', n_bins=8, tail_bound=3, ActNorm), skorch loop",
        ),
        Contender(
            "zuko",
            fit_zuko_nsf,
            score_torch_peer,
            "zuko.flows.NSF (autoregressive, 8 bins, spline domain [-5, 5]), plain PyTorch loop",
        ),
        Contender(
            "nflows",
            fit_nflows_nsf,
            score_torch_peer,
            "nflows MaskedPiecewiseRationalQuadraticAutoregressiveTransform (8 bins, linear tails at 3), "
            "plain PyTorch loop",
        ),
    ],
}


# --------------------------------------------------------------------------- #
# Datasets
# --------------------------------------------------------------------------- #
def dataset_digits(seed: int, quick: bool) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits (64-D), dequantised with U[0, 1) noise, 80/20 split."""
    X = load_digits().data.astype(np.float64)
    X = X + np.random.default_rng(seed).uniform(0.0, 1.0, size=X.shape)
    if quick:
        X = X[:400]
    X_train, X_test = train_test_split(X, test_size=0.2, random_state=seed)
    return X_train, X_test


def dataset_moons(seed: int, quick: bool) -> tuple[np.ndarray, np.ndarray]:
    """Two moons (2-D), 4000 points (1000 with --quick), noise 0.05, 80/20 split."""
    X, _ = make_moons(1000 if quick else 4000, noise=0.05, random_state=seed)
    X_train, X_test = train_test_split(X, test_size=0.2, random_state=seed)
    return X_train, X_test


DATASETS: dict[str, Callable[[int, bool], tuple[np.ndarray, np.ndarray]]] = {
    "digits": dataset_digits,
    "moons": dataset_moons,
}


# --------------------------------------------------------------------------- #
# Measurement
# --------------------------------------------------------------------------- #
def time_scoring(contender: Contender, fitted: Any, X: np.ndarray, min_seconds: float) -> tuple[np.ndarray, float]:
    """Score ``X`` repeatedly for at least ``min_seconds``; best rows/s of the calls."""
    scores = contender.score(fitted, X)  # warm-up, and the values we report
    best = math.inf
    spent = 0.0
    calls = 0
    while spent < min_seconds or calls < 3:
        start = time.perf_counter()
        contender.score(fitted, X)
        elapsed = time.perf_counter() - start
        best = min(best, elapsed)
        spent += elapsed
        calls += 1
    return scores, len(X) / best


def run_one(
    contender: Contender,
    X_train: np.ndarray,
    X_test: np.ndarray,
    architecture: Architecture,
    seed: int,
    min_score_seconds: float,
) -> dict[str, Any]:
    start, start_cpu = time.perf_counter(), time.process_time()
    fitted = contender.fit(X_train, architecture, seed)
    fit_seconds = time.perf_counter() - start
    fit_cpu_seconds = time.process_time() - start_cpu
    scores, score_rows_per_second = time_scoring(contender, fitted, X_test, min_score_seconds)
    finite = np.isfinite(scores)
    record = {
        "fit_seconds": fit_seconds,
        "fit_cpu_seconds": fit_cpu_seconds,
        "train_rows_per_second": len(X_train) * architecture.epochs / fit_seconds,
        "train_rows_per_cpu_second": len(X_train) * architecture.epochs / fit_cpu_seconds,
        "score_rows_per_second": score_rows_per_second,
        "test_mean_log_likelihood": float(np.mean(scores)),
        "test_median_log_likelihood": float(np.median(scores)),
        "test_non_finite_rows": int((~finite).sum()),
        "train_mean_log_likelihood": float(np.mean(contender.score(fitted, X_train))),
    }
    if hasattr(fitted, "mean_"):
        # skflow standardised internally: it must be the map the peers were given.
        reference = Standardisation.of(X_train)
        record["same_standardisation_as_peers"] = bool(
            np.allclose(fitted.mean_, reference.mean) and np.allclose(fitted.scale_, reference.scale)
        )
        record["epochs_run"] = int(fitted.n_iter_)
    else:
        record["epochs_run"] = len(fitted.epoch_losses)
    return record


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    def values(key: str) -> list[float]:
        return [record[key] for record in records]

    log_likelihoods = values("test_mean_log_likelihood")
    return {
        "train_rows_per_second_median": statistics.median(values("train_rows_per_second")),
        "train_rows_per_cpu_second_median": statistics.median(values("train_rows_per_cpu_second")),
        "score_rows_per_second_median": statistics.median(values("score_rows_per_second")),
        "fit_seconds_median": statistics.median(values("fit_seconds")),
        "test_mean_log_likelihood_mean": statistics.fmean(log_likelihoods),
        "test_mean_log_likelihood_std": statistics.pstdev(log_likelihoods) if len(records) > 1 else 0.0,
        # The mean is ruled by the worst rows of an overfitted flow; the median shows the bulk.
        "test_median_log_likelihood_median": statistics.median(values("test_median_log_likelihood")),
        "train_mean_log_likelihood_mean": statistics.fmean(values("train_mean_log_likelihood")),
        "test_non_finite_rows_total": int(sum(values("test_non_finite_rows"))),
        "repeats": len(records),
    }


def markdown_table(summary: dict[str, dict[str, dict[str, dict[str, Any]]]], baseline: str = "zuko") -> str:
    """One row per (dataset, family, contender); ratios are against ``baseline``."""
    columns = [
        ("train rows/s", "train_rows_per_second_median"),
        ("train rows/CPU-s", "train_rows_per_cpu_second_median"),
        ("score rows/s", "score_rows_per_second_median"),
    ]
    header = ["dataset", "family", "contender"]
    for title, _ in columns:
        header += [title, f"vs {baseline}"]
    header += ["test log-lik mean (nats/row)", "test log-lik median", "train log-lik mean", "fit s", "non-finite"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 3 + "---:|" * (len(header) - 3)]
    for dataset, families in summary.items():
        for family, contenders in families.items():
            base = contenders.get(baseline)
            for name, row in contenders.items():
                cells = [dataset, family, name]
                for _, key in columns:
                    ratio = row[key] / base[key] if base else math.nan
                    cells += [f"{row[key]:,.0f}", f"{ratio:.2f}x"]
                cells += [
                    f"{row['test_mean_log_likelihood_mean']:.2f} ± {row['test_mean_log_likelihood_std']:.2f}",
                    f"{row['test_median_log_likelihood_median']:.2f}",
                    f"{row['train_mean_log_likelihood_mean']:.2f}",
                    f"{row['fit_seconds_median']:.1f}",
                    str(row["test_non_finite_rows_total"]),
                ]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    import sklearn
    import skorch

    versions = {"python": platform.python_version(), "torch": torch.__version__, "sklearn": sklearn.__version__}
    versions["skorch"] = skorch.__version__
    for module in ("zuko", "nflows", "skflow"):
        try:
            versions[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            versions[module] = None
    return {
        "versions": versions,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models and data: a smoke run in seconds")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    parser.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=sorted(FAMILIES))
    parser.add_argument("--epochs", type=int, default=None, help="epochs for every contender (default 50, quick 2)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3, quick 1)")
    parser.add_argument("--layers", type=int, default=None, help="coupling layers (default 8, quick 2)")
    parser.add_argument("--hidden", type=int, nargs="+", default=None, help="hidden widths (default 128 128)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--gradient-clip", type=float, default=None, help="same clipping for all (default none)")
    parser.add_argument(
        "--peer-optimizer",
        choices=["fused", "default"],
        default="fused",
        help="AdamW kernel of the peers: 'fused' as skflow's engine uses (default), or torch's default",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every contender (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "peer_benchmark.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    architecture = Architecture(
        n_layers=args.layers or (2 if args.quick else 8),
        hidden_dims=tuple(args.hidden or ((32, 32) if args.quick else (128, 128))),
        batch_size=args.batch_size,
        epochs=args.epochs or (2 if args.quick else 50),
        lr=args.lr,
        gradient_clip=args.gradient_clip,
        peer_fused_adamw=args.peer_optimizer == "fused",
    )
    repeats = args.repeats or (1 if args.quick else 3)
    min_score_seconds = 0.05 if args.quick else 0.3
    data = {name: DATASETS[name](args.seed, args.quick) for name in args.datasets}

    # One untimed tiny fit per contender first: imports and lazy one-time
    # initialisation (skorch, zuko, nflows) must not count as training time.
    warm_up = Architecture(n_layers=1, hidden_dims=(8,), batch_size=32, epochs=1, lr=architecture.lr)
    X_warm = next(iter(data.values()))[0][:64]
    for family in args.families:
        for contender in FAMILIES[family]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                contender.score(contender.fit(X_warm, warm_up, args.seed), X_warm)

    records: list[dict[str, Any]] = []
    for repeat in range(repeats):
        for dataset, (X_train, X_test) in data.items():
            for family in args.families:
                contenders = FAMILIES[family]
                # Rotate the order every repeat so no contender always runs first or last.
                shift = repeat % len(contenders)
                for contender in contenders[shift:] + contenders[:shift]:
                    seed = args.seed + repeat
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        record = run_one(contender, X_train, X_test, architecture, seed, min_score_seconds)
                    record.update(dataset=dataset, family=family, contender=contender.name, repeat=repeat, seed=seed)
                    records.append(record)
                    print(
                        f"[repeat {repeat}] {dataset:>6} {family} {contender.name:>7}: "
                        f"fit {record['fit_seconds']:.2f}s, {record['train_rows_per_second']:,.0f} train rows/s, "
                        f"{record['score_rows_per_second']:,.0f} score rows/s, "
                        f"test log-lik {record['test_mean_log_likelihood']:.3f}",
                        file=sys.stderr,
                        flush=True,
                    )

    summary: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for dataset in data:
        for family in args.families:
            for contender in FAMILIES[family]:
                mine = [
                    r
                    for r in records
                    if r["dataset"] == dataset and r["family"] == family and r["contender"] == contender.name
                ]
                summary.setdefault(dataset, {}).setdefault(family, {})[contender.name] = summarise(mine)

    table = markdown_table(summary)
    print(table)
    result = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "architecture": asdict(architecture),
        "repeats": repeats,
        "seed": args.seed,
        "datasets": {
            name: {"n_train": len(X_train), "n_test": len(X_test), "n_features": X_train.shape[1]}
            for name, (X_train, X_test) in data.items()
        },
        "contenders": {family: {c.name: c.describe for c in FAMILIES[family]} for family in args.families},
        "environment": environment(),
        "summary": summary,
        "records": records,
        "table_markdown": table,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.output}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
