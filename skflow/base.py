"""FlowEstimator: every piece of scikit-learn plumbing, written once.

A flow family's estimator is a subclass that declares its hyperparameters as
annotated class attributes and implements ``build_model(n_features)``::

    class MyDensity(FlowEstimator):
        n_layers: int = 4

        def build_model(self, n_features):
            return ...  # a module implementing the FlowModel protocol

Subclasses become dataclasses, so their ``__init__`` stores each argument
unchanged under its own name, exactly as scikit-learn requires, without a
hand-written ``__init__`` per family. Every hyperparameter, the family's own
and the training ones below that every family shares, is keyword-only.

Everything else lives here: input validation, the standardisation of the
inputs and its log-det correction (scores are log-densities in the user's
units), seeding, device resolution, the training call, inference in batches,
``score_samples``, ``score``, ``sample``, ``transform``,
``inverse_transform``, feature names, pickling that moves tensors to the CPU,
and tags.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    DensityMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils import check_random_state
from sklearn.utils._available_if import available_if
from sklearn.utils._param_validation import HasMethods, Interval, InvalidParameterError, Options, StrOptions
from sklearn.utils._set_output import ADAPTERS_MANAGER, _get_output_config
from sklearn.utils.validation import _check_sample_weight, check_array, check_is_fitted, validate_data
from torch import Tensor, nn
from typing_extensions import dataclass_transform

from ._dask import dask_aware
from ._threads import blas_threads, torch_threads
from .flows.core import BaseDistribution, FlowModel
from .streaming import ChunkedSource
from .training import RowStream, TrainingResult, row_blocks, train_model, validation_index

__all__ = ["ExactFlowEstimator", "FlowEstimator", "resolve_device"]

_MAX_SEED = 2**31 - 1

# Held-out rows of a streaming fit are kept in memory: at most this many.
_MAX_STREAM_VALIDATION_ROWS = 100_000


# Docstring sections every family shares, written once. A family's class
# docstring names them by placeholder on a line of their own; FlowEstimator's
# __init_subclass__ fills them in, so the rendered docs are complete.
SHARED_DOCSTRING_SECTIONS: dict[str, str] = {
    "{shared_training_parameters}": (
        "max_epochs, batch_size, lr, weight_decay, validation_fraction, patience, gradient_clip, callbacks, "
        "random_state, device, n_threads, verbose, dequantize, noise_std, warm_start, accelerator, dtype\n"
        "        Training parameters shared by every family; see\n"
        "        :class:`~skflow.base.FlowEstimator`."
    ),
    "{exact_base_parameters}": (
        "n_base_components : int, default=1\n        Base distribution; see :class:`~skflow.base.ExactFlowEstimator`.\n"
        '    init : {"identity", "gaussian"}\n'
        "        Where training starts: per-column standardised features, or the\n"
        "        shrunk full-covariance Gaussian of the training rows; see\n"
        '        :class:`~skflow.base.ExactFlowEstimator`. ``"gaussian"`` is the default of\n'
        '        :class:`~skflow.RealNVPDensity`, ``"identity"`` that of the other families.'
    ),
    "{shared_fitted_attributes}": (
        "model_, history_, n_iter_, best_epoch_, mean_, scale_, device_, dequantized_features_, "
        "dequantization_widths_, data_min_, data_max_, is_main_process_, n_features_in_, feature_names_in_\n"
        "        See :class:`~skflow.base.FlowEstimator`."
    ),
}


# Constraints of hyperparameters that several families declare under the same
# name and meaning; a family takes the ones it has with shared_constraints().
_SHARED_CONSTRAINTS: dict[str, list] = {
    "n_layers": [Interval(Integral, 1, None, closed="left")],
    "hidden_dims": [tuple, list],
    "activation": [str, type],
    "scale_bound": [Interval(Real, 0, None, closed="neither")],
    "actnorm": ["boolean"],
    "permutation": [StrOptions({"random", "alternate"})],
}


# Hyperparameters that must be sequences of positive integers (layer widths).
# scikit-learn's constraints can say "tuple or list" but not what the
# elements are; FlowEstimator._validate_params checks them.
_POSITIVE_INT_SEQUENCES = ("hidden_dims",)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_)) and int(value) >= 1


def shared_constraints(*names: str) -> dict[str, list]:
    """The ``_parameter_constraints`` entries of the named common hyperparameters."""
    return {name: _SHARED_CONSTRAINTS[name] for name in names}


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn the estimator's ``device`` parameter into a usable torch device.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"} or torch.device
        ``"auto"`` picks CUDA when it is available, otherwise the CPU.

    Raises
    ------
    ValueError
        If the device is unknown or not available on this machine.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device={device!r} is not a valid device; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."
        ) from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was requested but CUDA is not available on this machine.")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} was requested but only {torch.cuda.device_count()} CUDA device(s) exist."
            )
    elif resolved.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError("device='mps' was requested but the MPS backend is not available on this machine.")
    elif resolved.type != "cpu":
        raise ValueError(f"device={device!r} is not supported; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")
    return resolved


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global generators without leaking the seed to the caller."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _n_parameters(model: nn.Module) -> int:
    """Trainable and frozen parameter count: a forward pass costs about this many MACs per row."""
    return sum(parameter.numel() for parameter in model.parameters())


def map_rows(
    function: Callable[[Tensor], Tensor],
    array: np.ndarray,
    device: torch.device,
    model: nn.Module,
    *,
    n_threads: int | None = None,
    batch_size: int = 1024,
    dtype: torch.dtype = torch.float32,
    inference_mode: bool = False,
) -> np.ndarray:
    """Apply ``model``'s ``function`` to rows ``(n, ...)`` in batches, without autograd; float64 out.

    Every pass gets exactly ``batch_size`` rows (the last one zero-padded):
    matrix products round differently for different batch shapes, and a
    fixed shape makes each row's result independent of the rows processed
    with it. ``inference_mode`` uses torch's inference mode rather than
    ``no_grad`` (for models that never need autograd at inference).
    """
    n_rows = len(array)
    n_batches = max(1, -(-n_rows // batch_size))
    # One zero-padded copy and one transfer for all batches, not one per batch.
    padded = np.zeros((n_batches * batch_size, *array.shape[1:]), dtype=array.dtype)
    padded[:n_rows] = array
    inputs = FlowEstimator._to_tensor(padded, device, dtype)
    macs = batch_size * _n_parameters(model)
    no_autograd = torch.inference_mode() if inference_mode else torch.no_grad()
    with no_autograd, torch_threads(n_threads, macs=macs, device=device):
        outputs = [function(batch) for batch in inputs.split(batch_size)]
    return torch.cat(outputs)[:n_rows].detach().cpu().numpy().astype(np.float64)


def float64_model(model: FlowModel, device: torch.device) -> tuple[FlowModel, torch.device]:
    """``model`` in float64, and the device it runs on.

    float32 is exact enough for ordinary rows but not everywhere: squared
    norms overflow beyond about 1e19 standardised units, and a fitted flow
    can be so flat in places (slopes of 1e-9 across a few spline layers) that
    float32 outputs no longer tell nearby inputs apart. The same function in
    float64 has neither problem. A copy, so the fitted model is never
    touched; MPS has no float64, so there the copy runs on the CPU.
    """
    target = torch.device("cpu") if device.type == "mps" else device
    tensors = [*model.parameters(), *model.buffers()]
    if target == device and all(t.dtype == torch.float64 for t in tensors if t.is_floating_point()):
        return model, device
    return copy.deepcopy(model).to(device=target, dtype=torch.float64), target


def log_prob_rows(
    model: FlowModel,
    rows: np.ndarray,
    device: torch.device,
    exact_rows: Callable[[np.ndarray], np.ndarray] | None = None,
    **map_options: Any,
) -> np.ndarray:
    """``model.log_prob`` of standardised rows through :func:`map_rows`, float64 out.

    Only rows whose float32 score is not finite are scored again in float64
    (rows far out overflow float32 although their density is a finite
    number; NaN rows get a second chance too), so ordinary rows pay one
    ``isfinite`` check. Rows still NaN stay NaN. ``exact_rows(mask)``, when
    given, supplies those rows in float64 (``rows`` may be float32, which
    cannot hold the farthest of them).
    """
    log_prob = map_rows(model.log_prob, rows, device, model, **map_options)
    overflowed = ~np.isfinite(log_prob)
    if overflowed.any():
        wide, wide_device = float64_model(model, device)
        again = rows[overflowed] if exact_rows is None else exact_rows(overflowed)
        log_prob[overflowed] = map_rows(
            wide.log_prob, again, wide_device, wide, **{**map_options, "dtype": torch.float64}
        )
    return log_prob


def _standardisation(X: np.ndarray, sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Column (weighted) means and scales; constant columns keep scale 1 (as StandardScaler).

    Two passes over blocks of rows (means, then squared deviations from
    them), so no temporary is the size of ``X``.
    """
    weights = sample_weight

    def column_sums(values: np.ndarray, block: slice) -> np.ndarray:
        """(Weighted) column sums of the rows ``block`` of ``X``, given as ``values``."""
        return values.sum(axis=0) if weights is None else weights[block] @ values

    # Block by block (see row_blocks): no temporary the size of X.
    blocks = row_blocks(len(X), X.shape[1])
    total = float(len(X)) if weights is None else float(np.sum(weights))
    sums = np.zeros(X.shape[1])
    for block in blocks:
        sums += column_sums(X[block].astype(np.float64, copy=False), block)
    mean = sums / total
    squares = np.zeros(X.shape[1])
    for block in blocks:
        squares += column_sums((X[block].astype(np.float64, copy=False) - mean) ** 2, block)
    scale = np.sqrt(squares / total)
    tiny = 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))
    return mean, np.where(scale > tiny, scale, 1.0)


def _integer_valued(X: np.ndarray) -> np.ndarray:
    """Mask of the columns of ``X`` whose values are all integers, shape ``(n_features,)``; block by block."""
    integer = np.ones(X.shape[1], dtype=bool)
    for block in row_blocks(len(X), X.shape[1]):
        if not integer.any():
            break
        # Only the columns still in question (a copy of the block, so only when some are settled).
        values = X[block] if integer.all() else X[block][:, integer]
        integer[integer] = np.all(values == np.round(values), axis=0)
    return integer


def _standardised_rows(X: np.ndarray, mean: np.ndarray, scale: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``(X - mean) / scale`` in ``dtype``, computed block by block: no float64 copy of ``X`` on the way."""
    rows = np.empty(X.shape, dtype=dtype)
    for block in row_blocks(len(X), X.shape[1]):
        rows[block] = (X[block].astype(np.float64, copy=False) - mean) / scale
    return rows


def _drop_zero_weights(X: np.ndarray, sample_weight: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Validated weights (None when absent) and the rows that carry weight.

    A row of weight 0 contributes nothing to a weighted likelihood, mean or
    spread; dropping it up front also keeps it out of the validation split,
    the dequantisation grid and data-dependent initialisations, so a zero
    weight is exactly the same as leaving the row out.
    """
    if sample_weight is None:
        return X, None
    sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
    if not np.all(np.isfinite(sample_weight)):
        raise ValueError("sample_weight must be finite.")
    keep = sample_weight > 0
    if keep.sum() < 2:
        raise ValueError(
            f"sample_weight must give a positive weight to at least 2 rows, got {int(keep.sum())} such row(s)."
        )
    return X[keep], sample_weight[keep]


# Folds of the cross-validated choice of the Gaussian start's shrinkage.
_START_FOLDS = 5

# Shrinkage intensities the Gaussian start chooses from (with Ledoit-Wolf's own).
_SHRINKAGE_GRID = (0.0, 1e-4, 1e-3, 1e-2, 0.03, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


@dataclasses.dataclass
class _MomentSums:
    """Weighted power sums of rows ``u = x - shift``: what a shrunk Gaussian start needs, in one pass.

    Sums rather than means, so that the chunks of a streaming fit add up
    while its standardisation is still unknown; :func:`_ledoit_wolf` and
    :func:`_start_covariance` centre and scale them afterwards. ``shift``
    (any row near the data, e.g. the first) keeps the sums free of
    cancellation when means are large. The first and second sums are kept
    per fold for the cross-validated choice of the shrinkage: row ``i`` (in
    the order rows are added, across chunks) is in fold ``i mod K``. By
    position rather than by value, so that rescaling columns (a scaler in
    front) leaves the folds, and so the start, unchanged, and a stream gets
    the folds of the same rows in memory. All float64; for the sums, a
    weight ``k`` counts as ``k`` copies (the folds see one row).
    """

    shift: np.ndarray  # (d,)
    fold_total: np.ndarray = dataclasses.field(init=False)  # (K,): sum of w
    fold_first: np.ndarray = dataclasses.field(init=False)  # (K, d): sum of w u
    fold_second: np.ndarray = dataclasses.field(init=False)  # (K, d, d): sum of w u u^T
    third: np.ndarray = dataclasses.field(init=False)  # (d, d): [j, k] = sum of w u_j^2 u_k
    fourth: np.ndarray = dataclasses.field(init=False)  # (d, d): [j, k] = sum of w u_j^2 u_k^2
    n_rows: int = dataclasses.field(init=False, default=0)  # rows added so far (the next row's position)

    def __post_init__(self) -> None:
        d = len(self.shift)
        self.fold_total, self.fold_first = np.zeros(_START_FOLDS), np.zeros((_START_FOLDS, d))
        self.fold_second = np.zeros((_START_FOLDS, d, d))
        self.third, self.fourth = np.zeros((d, d)), np.zeros((d, d))

    @property
    def total(self) -> float:
        return float(self.fold_total.sum())

    @property
    def first(self) -> np.ndarray:
        return self.fold_first.sum(axis=0)

    @property
    def second(self) -> np.ndarray:
        return self.fold_second.sum(axis=0)

    def add(self, X: np.ndarray, sample_weight: np.ndarray | None = None) -> _MomentSums:
        """Add the rows of ``X`` (shape ``(n, d)``) with their weights (``(n,)`` or None); block by block."""
        for block in row_blocks(len(X), X.shape[1]):
            rows = X[block].astype(np.float64, copy=False)
            u = rows - self.shift
            squares = u * u
            w = np.ones(len(u)) if sample_weight is None else sample_weight[block]
            weighted, weighted_squares = u * w[:, None], squares * w[:, None]
            folds = (self.n_rows + np.arange(len(rows))) % _START_FOLDS
            self.n_rows += len(rows)
            for fold in np.unique(folds):
                members = folds == fold
                self.fold_total[fold] += float(w[members].sum())
                self.fold_first[fold] += weighted[members].sum(axis=0)
                self.fold_second[fold] += weighted[members].T @ u[members]
            self.third += weighted_squares.T @ u
            self.fourth += weighted_squares.T @ squares
        return self

    def central_second(self, center: np.ndarray, fold: int | None = None, exclude: bool = False) -> np.ndarray:
        """Sum of ``w (u - m)(u - m)^T`` with ``m = center - shift``, over all rows, one fold or all but one."""
        if fold is None:
            total, first, second = self.total, self.first, self.second
        elif exclude:
            total = self.total - self.fold_total[fold]
            first, second = self.first - self.fold_first[fold], self.second - self.fold_second[fold]
        else:
            total, first, second = self.fold_total[fold], self.fold_first[fold], self.fold_second[fold]
        m = center - self.shift
        return second - np.outer(m, first) - np.outer(first, m) + total * np.outer(m, m)

    def covariance(self, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Covariance, shape ``(d, d)``, of all rows standardised as ``(x - center) / scale`` (divisor: total weight)."""
        return self.central_second(center) / self.total / np.outer(scale, scale)


def _ledoit_wolf(sums: _MomentSums, center: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance, shape ``(d, d)``, of the rows standardised as ``(x - center) / scale``.

    The estimate and shrinkage of :func:`sklearn.covariance.ledoit_wolf`
    (Ledoit & Wolf, 2004), computed from power sums so that it can follow a
    streaming pass, with weights as repeated rows. The moments are taken
    about ``center``; a fit's ``center`` is the (weighted) mean of its rows,
    and the result is then exactly scikit-learn's on the standardised rows.

    Returns
    -------
    covariance : ndarray of shape (d, d)
    shrinkage : float
        The weight in ``[0, 1]`` of the scaled identity in the blend.
    """
    n, m = sums.total, center - sums.shift
    second = sums.second
    s1, s2, m2 = sums.first, np.diag(second), m * m
    # Central sums from the raw ones: expand (u - m) products term by term.
    central = sums.central_second(center)
    central_fourth = (
        sums.fourth
        - 2 * sums.third * m[None, :]
        - 2 * sums.third.T * m[:, None]
        + 4 * second * np.outer(m, m)
        + np.outer(s2, m2)
        + np.outer(m2, s2)
        - 2 * np.outer(m * s1, m2)
        - 2 * np.outer(m2, m * s1)
        + n * np.outer(m2, m2)
    )
    covariance = central / np.outer(scale, scale) / n
    d = len(scale)
    # sum over rows of ||z||^4, with z the standardised centred row.
    quartic = float(np.sum(central_fourth / np.outer(scale**2, scale**2)))
    mu = np.trace(covariance) / d
    squared_norm = float(np.sum(covariance**2))
    beta = (quartic / n - squared_norm) / (d * n)
    delta = (squared_norm - 2 * mu * np.trace(covariance) + d * mu**2) / d
    beta = min(beta, delta)
    shrinkage = float(np.clip(beta / delta, 0.0, 1.0)) if beta > 0 and delta > 0 else 0.0
    return _shrunk(covariance, shrinkage), shrinkage


def _shrunk(covariance: np.ndarray, shrinkage: float) -> np.ndarray:
    """``(1 - a) C + a mu I`` with ``mu`` the mean variance of ``C``: the blend with the scaled identity."""
    shrunk = (1 - shrinkage) * covariance
    shrunk[np.diag_indices_from(shrunk)] += shrinkage * np.trace(covariance) / len(covariance)
    return shrunk


def _start_covariance(
    sums: _MomentSums, center: np.ndarray, scale: np.ndarray, noise_variance: np.ndarray
) -> tuple[np.ndarray, float]:
    """The Gaussian start's covariance in standardised units, shape ``(d, d)``, and its shrinkage.

    ``_shrunk(C + N, a)``, with ``C`` the covariance of the rows
    standardised as ``(x - center) / scale`` and ``N`` the diagonal
    ``noise_variance`` the model is trained with (dequantisation, noise),
    so ``a = 0`` is the maximum-likelihood Gaussian of the rows the model
    sees and ``a = 1`` the per-column start. ``a`` is the grid point or
    Ledoit-Wolf intensity with the highest Gaussian log-likelihood of held-out
    rows over ``_START_FOLDS`` folds: Ledoit-Wolf's intensity minimises a
    squared (Frobenius) error, and where columns are nearly collinear any
    shrinkage it chooses costs nats of likelihood (ADBench's vertebral:
    3.4 nats per row at its 0.12), while on few rows for the columns it
    helps. Folds are by position (see :class:`_MomentSums`). Each fold is scored from the power sums: with ``C = V diag(l) V^T``,
    ``sum (z - m)^T C^-1 (z - m) = sum_j (V^T M V)_jj / l_j`` for the fold's
    centred second sums ``M``, so every candidate costs O(d) once ``C`` of
    the other folds is diagonalised.
    """
    _, ledoit_wolf_shrinkage = _ledoit_wolf(sums, center, scale)
    candidates = np.unique(np.r_[_SHRINKAGE_GRID, ledoit_wolf_shrinkage])
    scaling = np.outer(scale, scale)
    d = len(scale)
    held_out = np.zeros(len(candidates))
    folds_used = 0
    for fold in range(_START_FOLDS):
        n_out, n_in = sums.fold_total[fold], sums.total - sums.fold_total[fold]
        if n_out <= 0 or n_in <= 0:
            continue
        folds_used += 1
        mean_in = sums.shift + (sums.first - sums.fold_first[fold]) / n_in
        covariance = sums.central_second(mean_in, fold, exclude=True) / n_in / scaling + np.diag(noise_variance)
        values, vectors = np.linalg.eigh(covariance)
        residual = sums.central_second(mean_in, fold) / scaling
        quadratic = np.einsum("ij,ij->j", residual @ vectors, vectors)  # diag(V^T M V)
        mu = values.sum() / d
        for index, shrinkage in enumerate(candidates):
            blended = (1 - shrinkage) * values + shrinkage * mu
            if np.all(blended > 1e-12 * max(mu, 1e-300)):
                held_out[index] -= 0.5 * (n_out * np.log(blended).sum() + (quadratic / blended).sum())
            else:
                held_out[index] = -np.inf  # singular: no density on held-out rows
    chosen = float(candidates[int(np.argmax(held_out))]) if folds_used >= 2 else float(ledoit_wolf_shrinkage)
    covariance = sums.covariance(center, scale) + np.diag(noise_variance)
    return _shrunk(covariance, chosen), chosen


# A grid of more levels than this is treated as continuous: its bins are too
# fine for dequantisation to matter, and a coincidental grid becomes likelier.
_MAX_GRID_LEVELS = 10_000


def _grid_spacing(values: np.ndarray) -> float:
    """Spacing ``h`` if all values lie on a grid ``v0 + k * h``, else 0."""
    # A grid of at most _MAX_GRID_LEVELS steps has at most _MAX_GRID_LEVELS + 1
    # distinct values, so a prefix with more than that settles the answer
    # without sorting the whole column (the common case: continuous columns).
    if (
        len(values) > 2 * (_MAX_GRID_LEVELS + 1)
        and len(np.unique(values[: 2 * (_MAX_GRID_LEVELS + 1)])) > _MAX_GRID_LEVELS + 1
    ):
        return 0.0
    levels = np.unique(values)
    if len(levels) < 2 or not np.all(np.isfinite(levels)):
        return 0.0
    spacing = float(np.min(np.diff(levels)))
    steps = (levels - levels[0]) / spacing
    if steps[-1] > _MAX_GRID_LEVELS:
        return 0.0
    # Tolerance well above the rounding error of an affine rescaling.
    return spacing if np.all(np.abs(steps - np.round(steps)) < 1e-6 * max(1.0, steps[-1])) else 0.0


@dataclass_transform(kw_only_default=True, field_specifiers=(dataclasses.field,))
@dataclasses.dataclass(repr=False, eq=False, kw_only=True)
class FlowEstimator(ClassNamePrefixFeaturesOutMixin, DensityMixin, TransformerMixin, BaseEstimator):
    """Base class of every skflow density estimator.

    Not used directly: each flow family subclasses it, declares its own
    hyperparameters and implements :meth:`build_model`.

    Parameters
    ----------
    max_epochs : int, default=200
        Maximum number of passes over the training data.
    batch_size : int, default=256
        Rows per optimisation step (capped at the number of training rows).
    lr : float, default=1e-3
        Learning rate of the AdamW optimiser.
    weight_decay : float, default=0.0
        Decoupled weight decay of AdamW.
    validation_fraction : float or None, default=0.1
        Share of the rows held out to monitor the held-out negative
        log-likelihood for early stopping and to pick the weights returned.
        None or 0 uses all rows for training, monitors the training loss for
        early stopping and keeps the last epoch's weights (a training loss
        is too noisy a yardstick to pick an epoch by). Ignored when it would
        leave fewer than two rows on either side.
    patience : int or None, default=20
        Epochs without improvement of the monitored loss before training
        stops; None trains for ``max_epochs``. With a validation split, the
        weights of the best epoch are restored either way.
    gradient_clip : float or None, default=5.0
        Maximum total gradient norm per step; None disables clipping.
    callbacks : list of skorch callbacks or None, default=None
        Extra skorch callbacks (e.g. ``skorch.callbacks.LRScheduler``),
        run after the engine's own.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, the validation split and shuffling.
        With an int, two fits on the same machine give identical scores.
    device : str, default="auto"
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` or ``"mps"``.
    n_threads : int or None, default=None
        CPU threads torch may use inside ``fit``, scoring, ``transform`` and
        ``sample``. None sizes them to the work and the machine: one thread
        for small models and batches, more only for large ones and only on
        cores no other process is using, never more than the caller allows
        (``torch.set_num_threads``, ``OMP_NUM_THREADS``, threadpoolctl,
        joblib workers); see :ref:`threads`. The caller's setting is restored
        afterwards. An int is used as given.
    verbose : int, default=0
        0 silent. 1 a compact, colour-free report: a line every few epochs
        (about twenty per run) with the training loss, the validation NLL,
        the best validation NLL so far and its epoch, the elapsed time and
        an upper bound of the time left, then why training stopped. 2
        skorch's table, one row per epoch (best values in ANSI colour). 3
        also a progress bar within each epoch.
    dequantize : {"auto"} or bool, default="auto"
        Dequantise integer-valued features: during training each such value
        ``k`` is replaced by a fresh uniform draw on ``[k - 1/2, k + 1/2)``,
        so the model learns a continuous density whose mass on each unit bin
        is the probability of ``k``, instead of collapsing onto the integers
        (which makes likelihoods degenerate). ``score_samples`` is evaluated
        at the bin centres, i.e. at the data themselves. ``"auto"`` applies it
        to every column whose training values are all integers, and to every
        column whose values lie on a regular grid ``v0 + k * h`` (such as
        integers after MinMax scaling) with bins of width ``h``; True to every
        column (width 1); False to none.
    noise_std : float, default=0.0
        Standard deviation of Gaussian noise added to every training batch,
        in units of each column's standard deviation (noise regularisation).
        The model then fits the data density smoothed by that kernel, which
        is less sharp around individual rows and around duplicated ones: a
        regulariser for small or heavily duplicated data, and the setting
        that makes a flow a strong outlier detector (see
        :class:`~skflow.DensityOutlierDetector`). 0 fits the density itself;
        validation rows never get noise.
    warm_start : bool, default=False
        When fitted already, ``fit`` continues training the current model,
        with its optimiser state, instead of starting afresh; the
        standardisation and dequantisation of the first fit are kept (the
        model works in those units). :class:`~skflow.InjectiveFlowEstimator`,
        whose fit ends with an estimate over all training rows, does not
        support it and raises a ValueError.
    accelerator : None, "auto" or accelerate.Accelerator, default=None
        Train through HF Accelerate: data-parallel over the processes of an
        ``accelerate launch`` or ``torchrun --nproc_per_node N`` run (GPUs, or
        CPU processes with gloo), each training on its shard of every epoch
        with gradients all-reduced, and in the accelerator's mixed precision
        (e.g. ``accelerate launch --mixed_precision bf16``). ``"auto"``
        creates an ``Accelerator()`` configured by the launcher; pass your own
        ``Accelerator`` for other settings. The accelerator then chooses the
        device (``device`` is ignored). Every rank must call ``fit`` with the
        same data and ``random_state``; all end with the same weights. See
        the user guide's "Scaling out".
    dtype : {"float32", "float64"} or numpy float type, default="float32"
        Floating precision of the model and of the rows it sees, from the
        tensors built from ``X`` through training and every inference
        (``score_samples``, ``transform``, ``inverse_transform``,
        ``sample``). ``"float64"`` (or ``np.float64``) costs about twice the
        time and memory and makes scores exact to float64 rounding; it is
        not available on MPS. The continuous families integrate their ODE in
        float64 either way.

    Attributes
    ----------
    model_ : skflow.flows.FlowModel
        The fitted flow model (in evaluation mode), working in standardised
        units.
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``valid_loss`` (NaN without a
        validation split) and ``dur`` (seconds). Losses are per row, in
        standardised units.
    n_iter_ : int
        Number of epochs run.
    best_epoch_ : int
        Epoch whose weights ``model_`` holds: the best by held-out
        likelihood (the injective flow: by its ``selection``), or the last
        without a validation split; 0 when a start computed from the data
        (an exact family's ``init="gaussian"``, the injective flow's PCA
        start) beat every epoch and was kept untrained.
    mean_ : ndarray of shape (n_features,)
        Column means used to standardise the inputs.
    scale_ : ndarray of shape (n_features,)
        Column standard deviations used to standardise the inputs (1 for
        constant columns).
    device_ : torch.device
        Device the model lives on.
    dequantized_features_ : ndarray of shape (n_features,), dtype bool
        Which columns were dequantised during training.
    dequantization_widths_ : ndarray of shape (n_features,)
        Bin width of each dequantised column, in the data's units (0 for the
        others).
    data_min_ : ndarray of shape (n_features,)
        Smallest training value of each column: the origin of a dequantised
        column's grid, and with ``data_max_`` the range ``sample`` keeps
        grid-mapped draws in.
    data_max_ : ndarray of shape (n_features,)
        Largest training value of each column.
    is_main_process_ : bool
        False on every rank but the main one of a data-parallel fit (see
        ``accelerator``): only the main process should write files.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when X has string column names.
    """

    max_epochs: int = 200
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    validation_fraction: float | None = 0.1
    patience: int | None = 20
    gradient_clip: float | None = 5.0
    callbacks: list | None = None
    random_state: int | np.random.RandomState | None = None
    device: str = "auto"
    n_threads: int | None = None
    verbose: int = 0
    dequantize: bool | str = "auto"
    noise_std: float = 0.0
    warm_start: bool = False
    accelerator: Any = None
    dtype: str | type = "float32"

    if TYPE_CHECKING:
        # Fitted state, declared for the type checker only: at run time an
        # annotation in this body would become a dataclass field, i.e. a
        # hyperparameter. A family narrows model_ to its own model class.
        model_: FlowModel = dataclasses.field(init=False)
        n_features_in_: int = dataclasses.field(init=False)

    _parameter_constraints: ClassVar[dict] = {
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left"), None],
        "patience": [Interval(Integral, 1, None, closed="left"), None],
        "gradient_clip": [Interval(Real, 0, None, closed="neither"), None],
        "callbacks": [list, tuple, None],
        "random_state": ["random_state"],
        "device": [str, torch.device],
        "n_threads": [Interval(Integral, 1, None, closed="left"), None],
        "verbose": ["verbose"],
        "dequantize": ["boolean", StrOptions({"auto"})],
        "noise_std": [Interval(Real, 0, None, closed="left")],
        "warm_start": ["boolean"],
        "accelerator": [None, StrOptions({"auto"}), HasMethods(["prepare", "backward"])],
        "dtype": [StrOptions({"float32", "float64"}), Options(type, {np.float32, np.float64})],
    }

    # Why a family cannot continue training (partial_fit, warm_start), or
    # None when it can.
    _incremental_unsupported: ClassVar[str | None] = None

    # Rows per forward pass at inference. Every pass gets exactly this many
    # rows (the last one zero-padded): float32 matrix products round
    # differently for different batch shapes (seen here for spline and Glow
    # layers at 2, 3, 7 and 4095 rows), and a fixed shape makes each row's
    # score independent of the rows scored with it, whatever the thread
    # count. 1024 rows amortise the per-pass overhead of a tabular flow
    # (1.4x the rows/s of 256-row passes) while a call on a few rows still
    # costs only milliseconds.
    _inference_batch_size: ClassVar[int] = 1024

    # Whether inference may run under torch.inference_mode, which skips
    # autograd's per-operation bookkeeping (about 8% of a tabular flow's
    # scoring time). Families whose scores use autograd themselves (the exact
    # trace of a continuous flow, a decoder's Jacobian) keep torch.no_grad.
    _inference_without_autograd: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Each family's annotated hyperparameters become __init__ arguments,
        # all keyword-only (scikit-learn's convention): passed here rather
        # than through a ``_: KW_ONLY`` marker, which a subclass that
        # redeclares a shared field could forget, silently making it positional.
        dataclasses.dataclass(cls, repr=False, eq=False, kw_only=True)
        if cls.__doc__:
            for placeholder, text in SHARED_DOCSTRING_SECTIONS.items():
                cls.__doc__ = cls.__doc__.replace(placeholder, text)

    def _validate_params(self) -> None:
        """scikit-learn's checks of ``_parameter_constraints``, plus the elements of layer widths."""
        super()._validate_params()
        for name in _POSITIVE_INT_SEQUENCES:
            value = getattr(self, name, None)
            if isinstance(value, (tuple, list)) and not all(_is_positive_int(width) for width in value):
                raise InvalidParameterError(
                    f"The {name!r} parameter of {type(self).__name__} must be a tuple or list of positive "
                    f"integers. Got {value!r} instead."
                )

    # ------------------------------------------------------------------ #
    # What a family provides
    # ------------------------------------------------------------------ #
    def build_model(self, n_features: int) -> FlowModel:
        """Return a fresh flow model for ``n_features`` standardised features.

        Called inside ``fit`` with torch's generator already seeded.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement build_model(n_features).")

    # ------------------------------------------------------------------ #
    # Fitting
    # ------------------------------------------------------------------ #
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> FlowEstimator:
        """Fit the flow to the rows of ``X`` by maximum likelihood.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or ChunkedSource
            Training data; a DataFrame's column names are remembered. A
            :class:`~skflow.ParquetSource` or :class:`~skflow.MemmapSource`
            is read chunk by chunk, for tables larger than memory (see the
            user guide's "Scaling out").
        y : None
            Ignored; present for API consistency.
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Non-negative weight of each row in the likelihood (weighted
            maximum likelihood). The standardisation and the validation
            loss are weighted too; rows of weight 0 are dropped before
            anything else, so they change nothing. An integer weight ``k``
            acts as ``k`` copies of the row (exactly so with full-batch
            training, in expectation over mini-batches otherwise; the
            validation split differs, since copies are held out together).
            Routed by scikit-learn's metadata routing
            (``set_fit_request(sample_weight=True)``).

        Returns
        -------
        self : FlowEstimator
            The fitted estimator.
        """
        return self._keeping_state_on_failure(self._fit, X, sample_weight)

    def _keeping_state_on_failure(self, method: Callable[..., None], *args: Any, **kwargs: Any) -> FlowEstimator:
        previous_state = self.__dict__.copy()
        try:
            method(*args, **kwargs)
        except BaseException:
            # A failed fit leaves an earlier fitted state exactly as it was.
            self.__dict__.clear()
            self.__dict__.update(previous_state)
            raise
        return self

    def _fit(self, X: Any, sample_weight: Any = None) -> None:
        if isinstance(X, ChunkedSource):
            self._fit_source(X, sample_weight)
            return
        warm = self.warm_start and hasattr(self, "model_")
        if self.warm_start:
            self._check_incremental("warm_start=True")
        X = validate_data(self, X, dtype="numeric", reset=not warm)  # strings rejected, as sklearn does
        X = X.astype(np.float64, copy=False)
        X, sample_weight = _drop_zero_weights(X, sample_weight)
        seed = int(check_random_state(self.random_state).randint(_MAX_SEED))
        if warm:
            # Continue in the units the model was trained in.
            self._train(
                X, seed, sample_weight, max_epochs=self.max_epochs, validation_fraction=self.validation_fraction
            )
            return
        self.mean_, self.scale_ = self._standardisation_for(X, sample_weight)
        self._start_model(
            X, seed, sample_weight, max_epochs=self.max_epochs, validation_fraction=self.validation_fraction
        )

    def _start_model(self, X: np.ndarray, seed: int, sample_weight: np.ndarray | None, **training: Any) -> None:
        """Set the dequantisation, build a fresh model and train it (mean_/scale_ already set)."""
        self.dequantization_widths_ = self._dequantization_widths(X)
        self.dequantized_features_ = self.dequantization_widths_ > 0
        self.data_min_, self.data_max_ = X.min(axis=0), X.max(axis=0)
        if self._wants_moment_sums():
            d = X.shape[1]
            weights = sample_weight
            if self._start_from_training_side and self.accelerator is None:
                held_out = self._held_out_rows(X, seed, training.get("validation_fraction"))
                if held_out is not None:
                    weights = np.ones(len(X)) if sample_weight is None else sample_weight.copy()
                    weights[held_out] = 0.0
            # numpy's BLAS, sized by the thread policy as torch's threads are
            # (one decision: deciding costs milliseconds); the largest
            # products are the sums' n x d x d and the start's d^3.
            with blas_threads(self.n_threads, macs=float(d) * d * max(len(X), d)):
                self._pending_start = self._data_start(_MomentSums(self.mean_).add(X, weights))
                if weights is not sample_weight:
                    # Should the start be kept (epoch 0), it is then refitted on all rows.
                    self._pending_refit = self._data_start(_MomentSums(self.mean_).add(X, sample_weight))
        self._optimizer_state: dict | None = None
        self.history_: list[dict[str, float]] = []
        self._train(X, seed, sample_weight, fresh=True, **training)

    def _train(
        self,
        X: np.ndarray | RowStream,
        seed: int,
        sample_weight: np.ndarray | None,
        *,
        max_epochs: int,
        validation_fraction: float | None,
        fresh: bool = False,
    ) -> None:
        """Train ``model_`` (a new one when ``fresh``) on rows ``X``; later epochs add to ``history_``."""
        accelerator = self._resolved_accelerator()
        device = accelerator.device if accelerator is not None else resolve_device(self.device)
        if device.type == "mps" and self._torch_dtype() == torch.float64:
            raise ValueError("dtype='float64' is not available on MPS; use dtype='float32' or device='cpu'.")
        rows: Tensor | RowStream
        if isinstance(X, RowStream):
            rows = X  # already standardised, chunk by chunk
        else:
            # Later calls (warm start, partial_fit) widen the range sample() keeps draws in.
            self.data_min_ = np.minimum(self.data_min_, X.min(axis=0))
            self.data_max_ = np.maximum(self.data_max_, X.max(axis=0))
            # The one copy of the rows a fit needs: in the model's dtype (float32
            # by default, half the size of float64 input), filled block by block.
            dtype = np.float64 if self._torch_dtype() == torch.float64 else np.float32
            standardised = _standardised_rows(X, self.mean_, self.scale_, np.dtype(dtype))
            rows = torch.from_numpy(standardised).to(device)
            del standardised  # on an accelerator, the host copy goes now
        started: list[FlowModel] = []  # the untrained model of a data start, kept as a candidate
        if fresh:
            n_features = self.n_features_in_
            # What _data_start computed from this fit's rows; popped, so never saved with the model.
            start = self.__dict__.pop("_pending_start", None)
            refit = self.__dict__.pop("_pending_refit", None)

            def build() -> FlowModel:
                model = self._fresh_model(n_features, start)
                if start is not None:
                    started.append(copy.deepcopy(model))
                return model
        else:
            # A copy: a diverging continuation must not touch the fitted model.
            fitted = self.model_

            def build() -> FlowModel:
                return copy.deepcopy(fitted)

        model, result = self._run_engine(
            build,
            rows,
            seed,
            sample_weight,
            device,
            jitter=self.dequantization_widths_ / self.scale_,
            max_epochs=max_epochs,
            validation_fraction=validation_fraction,
            accelerator=accelerator,
            optimizer_state=getattr(self, "_optimizer_state", None),
        )
        epochs_before = len(self.history_)
        if started and accelerator is None and isinstance(rows, Tensor):
            model, result = self._start_if_better(started[0], model, result, rows, sample_weight, device)
            if result.best_epoch == 0 and refit is not None:
                model = self._start_refitted(model, refit)
        if fresh:
            # Positions in X of the rows the engine held out (None without a
            # split): FlowClassifier fits its temperature on them.
            self._validation_index = result.validation_index
        self.model_ = model
        self.device_ = device
        self.is_main_process_ = accelerator is None or bool(accelerator.is_main_process)
        self._optimizer_state = result.optimizer_state
        self.history_ = self.history_ + result.history
        self.n_iter_ = len(self.history_)
        self.best_epoch_ = epochs_before + result.best_epoch
        if isinstance(rows, Tensor):  # the families that need all rows after fit cannot stream
            self._after_fit(rows)

    def _start_if_better(
        self,
        start: FlowModel,
        trained: FlowModel,
        result: TrainingResult,
        rows: Tensor,
        sample_weight: np.ndarray | None,
        device: torch.device,
    ) -> tuple[FlowModel, TrainingResult]:
        """The untrained model of a data start (epoch 0) when it beats every epoch on the held-out rows.

        The engine keeps the best epoch by held-out likelihood; a start
        computed from the data (``init="gaussian"``) is a model in its own
        right and sometimes better than any epoch: on ADBench's InternetAds
        (1,555 columns) the untrained Gaussian scores 424 nats on test rows
        and the first epoch already 387. It is compared on the same rows and
        by the same weighted mean as the epochs, and kept with
        ``best_epoch_`` 0. Needs a validation split.
        """
        index = result.validation_index
        if index is None or not result.history or result.best_epoch < 1:
            return trained, result
        best = float(result.history[result.best_epoch - 1]["valid_loss"])
        start = start.to(device)
        if self._torch_dtype() == torch.float64:
            start = start.double()
        start.eval()
        held_out = rows[torch.as_tensor(index, device=rows.device)].cpu().numpy()
        losses = -map_rows(start.validation_log_prob, held_out, device, start, **self._map_options())
        weights = None if sample_weight is None else sample_weight[index]
        start_loss = float(np.average(losses, weights=weights))
        if not start_loss < best:
            return trained, result
        return start, dataclasses.replace(result, best_epoch=0)

    def _run_engine(
        self,
        build: Callable[[], FlowModel],
        rows: Tensor | RowStream,
        seed: int,
        sample_weight: np.ndarray | None,
        device: torch.device,
        *,
        jitter: np.ndarray,
        max_epochs: int,
        validation_fraction: float | None,
        accelerator: Any = None,
        optimizer_state: Any = None,
    ) -> tuple[FlowModel, TrainingResult]:
        """Build a model with torch seeded by ``seed`` and train it with this estimator's settings.

        The one training call of the estimator layer: the families' ``fit``
        and ``partial_fit``, and the conditional estimators (which train a
        model built from their ``flow`` on joint ``[target | context]``
        rows), all go through it.

        Parameters
        ----------
        build : callable () -> FlowModel
            Returns the model to train (fresh, or a copy to continue).
        rows : Tensor of shape (n_samples, n_columns) or RowStream
            Training rows in model units, on ``device`` (or a stream of them).
        seed : int
        sample_weight : ndarray of shape (n_samples,) or None
        device : torch.device
        jitter : ndarray of shape (n_columns,)
            Dequantisation width of each column in model units (0: none).
        max_epochs, validation_fraction
            As the hyperparameters, which a caller may override.
        accelerator, optimizer_state
            See :func:`~skflow.training.train_model`.

        Returns
        -------
        model : FlowModel
            Trained, in evaluation mode, on ``device``.
        result : TrainingResult
        """
        dtype = self._torch_dtype()
        weights = None if sample_weight is None else self._to_tensor(sample_weight, device, dtype)
        with _seeded(seed, device):
            model = build().to(device)
            if dtype == torch.float64:
                # float32 leaves each model as its family builds it (the
                # continuous ones integrate in float64 regardless).
                model = model.double()
            result = train_model(
                model,
                rows,
                max_epochs=max_epochs,
                batch_size=self.batch_size,
                lr=self.lr,
                weight_decay=self.weight_decay,
                validation_fraction=validation_fraction,
                patience=self.patience,
                gradient_clip=self.gradient_clip,
                callbacks=self.callbacks,
                random_state=seed,
                device=str(device),
                verbose=self.verbose,
                jitter=self._to_tensor(jitter, device, dtype) if np.any(jitter > 0) else None,
                noise_std=self.noise_std,
                sample_weight=weights,
                n_threads=self.n_threads,
                accelerator=accelerator,
                optimizer_state=optimizer_state,
                **self._training_options(),
            )
        return model, result

    def _fit_source(self, source: ChunkedSource, sample_weight: Any) -> None:
        """Fit on a table read chunk by chunk (see ``fit``); memory holds one shuffle buffer."""
        self._check_incremental("a streaming fit")
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported with a ChunkedSource; add the weights as rows instead.")
        if self.accelerator is not None:
            raise ValueError("A streaming fit runs in one process; set accelerator=None or load the rows in memory.")
        seed = int(check_random_state(self.random_state).randint(_MAX_SEED))
        warm = self.warm_start and hasattr(self, "model_")
        names = source.feature_names
        if warm:
            if source.n_features != self.n_features_in_:
                raise ValueError(
                    f"X has {source.n_features} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input."
                )
        else:
            self.n_features_in_ = source.n_features
            if names is not None and all(isinstance(name, str) for name in names):
                self.feature_names_in_ = np.asarray(names, dtype=object)
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        # Hold out a random share of rows (at most 100,000, kept in memory),
        # chosen per chunk by a seeded generator so every epoch drops the same rows.
        fraction = min(self.validation_fraction or 0.0, _MAX_STREAM_VALIDATION_ROWS / max(source.n_rows, 1))

        def held_out(index: int) -> np.ndarray:
            return np.random.default_rng([seed, index]).random(source.chunk_rows(index)) < fraction

        totals = np.zeros(source.n_features)
        squares = np.zeros(source.n_features)
        low, high = np.full(source.n_features, np.inf), np.full(source.n_features, -np.inf)
        integer = np.ones(source.n_features, dtype=bool)
        validation, shift = [], None
        # A data-dependent start (an exact family's init="gaussian") needs the
        # rows' second and fourth moments: summed in this same pass.
        sums = None
        wants_sums = not warm and self._wants_moment_sums()
        with ExitStack() as blas:
            if wants_sums:
                # One BLAS thread decision for the whole pass (deciding costs
                # milliseconds, too much per chunk), sized by a chunk's sums.
                d, rows = source.n_features, source.chunk_rows(0) if source.n_chunks else 0
                blas.enter_context(blas_threads(self.n_threads, macs=float(d) * d * rows))
            for index in range(source.n_chunks):
                chunk = source.read_chunk(index)
                if not np.isfinite(chunk).all():
                    raise ValueError(f"Input X contains NaN or infinity (in chunk {index} of the source).")
                shift = chunk[0] if shift is None else shift  # shifted sums: no cancellation for large means
                if wants_sums:
                    sums = (_MomentSums(shift) if sums is None else sums).add(chunk)
                totals += (chunk - shift).sum(axis=0)
                squares += ((chunk - shift) ** 2).sum(axis=0)
                low, high = np.minimum(low, chunk.min(axis=0)), np.maximum(high, chunk.max(axis=0))
                integer &= np.all(chunk == np.round(chunk), axis=0)
                validation.append(chunk[held_out(index)])
        if shift is None:
            raise ValueError(f"The source has no rows; {type(self).__name__} needs at least 2.")
        n = source.n_rows
        if not warm:
            mean = shift + totals / n
            std = np.sqrt(np.maximum(squares / n - (totals / n) ** 2, 0.0))
            tiny = 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))
            self.mean_, self.scale_ = mean, np.where(std > tiny, std, 1.0)
            # Integer columns get unit bins; the finer grid detection of an
            # in-memory fit would need every distinct value of a column.
            widths = integer if self.dequantize == "auto" else np.full(source.n_features, bool(self.dequantize))
            self.dequantization_widths_ = widths.astype(np.float64)
            self.dequantized_features_ = self.dequantization_widths_ > 0
            self.data_min_, self.data_max_ = low, high
            self._optimizer_state = None
            self.history_ = []
            if sums is not None:
                with blas_threads(self.n_threads, macs=float(source.n_features) ** 3):
                    self._pending_start = self._data_start(sums)
        accelerator_device = resolve_device(self.device)
        valid_rows = np.concatenate(validation)
        stream = RowStream(
            read=lambda index: self._to_tensor(
                (source.read_chunk(index)[~held_out(index)] - self.mean_) / self.scale_,
                accelerator_device,
                self._torch_dtype(),
            ),
            chunk_rows=[source.chunk_rows(index) - int(held_out(index).sum()) for index in range(source.n_chunks)],
            buffer_rows=source.buffer_rows,
            validation_rows=self._to_tensor(
                (valid_rows - self.mean_) / self.scale_, accelerator_device, self._torch_dtype()
            )
            if len(valid_rows) >= 2
            else None,
        )
        self._train(stream, seed, None, max_epochs=self.max_epochs, validation_fraction=None, fresh=not warm)

    def _resolved_accelerator(self) -> Any:
        if self.accelerator is None:
            return None
        if isinstance(self.accelerator, str):  # "auto": configured by the launcher's environment
            try:
                from accelerate import Accelerator
            except ImportError as error:
                raise ImportError(
                    "accelerator='auto' needs the accelerate package: pip install 'skflow[distributed]'."
                ) from error
            # accelerate treats a torchrun launch as distributed only on an
            # accelerator device unless told cpu=True (accelerate launch --cpu
            # says so itself); without CUDA, CPU processes with gloo are meant.
            launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
            return Accelerator(cpu=launched and not torch.cuda.is_available())
        return self.accelerator

    def _check_incremental(self, what: str) -> None:
        if self._incremental_unsupported is not None:
            raise ValueError(f"{type(self).__name__} does not support {what}: {self._incremental_unsupported}")

    def _supports_incremental(self) -> bool:
        return self._incremental_unsupported is None

    @available_if(_supports_incremental)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None, *, scaler: Any = None) -> FlowEstimator:
        """One pass of training over the rows of ``X``, continuing from earlier calls.

        For data that arrive in chunks or do not fit in memory. Each call
        runs one epoch of mini-batch AdamW over the chunk (shuffled, in
        batches of ``batch_size``), keeping the weights and the optimiser's
        state between calls; no rows are held out and there is no early
        stopping. The first call fixes what later calls reuse: the number of
        features, the standardisation (from ``scaler``, or from the first
        chunk's column means and standard deviations) and which columns are
        dequantised (from the first chunk). A first chunk that is small or
        unrepresentative gives a poor standardisation: pass ``scaler``
        (e.g. a :class:`~sklearn.preprocessing.StandardScaler` fitted on a
        sample) then. After ``fit``, ``partial_fit`` continues that model.
        Not available for :class:`~skflow.InjectiveFlowEstimator` (its fit
        ends with an estimate over all training rows).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A chunk of training rows.
        y : None
            Ignored; present for API consistency.
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Non-negative weight of each row of the chunk (see ``fit``).
        scaler : object with ``mean_`` and ``scale_`` of shape (n_features,), optional
            Standardisation to use from the first call on (e.g. a fitted
            StandardScaler); only valid on the first call.

        Returns
        -------
        self : FlowEstimator
        """
        return self._keeping_state_on_failure(self._partial_fit, X, sample_weight, scaler)

    def _partial_fit(self, X: Any, sample_weight: Any, scaler: Any) -> None:
        self._check_incremental("partial_fit")
        first = not hasattr(self, "model_")
        if scaler is not None and not first:
            raise ValueError("scaler is only used by the first partial_fit call; the standardisation is fixed since.")
        X = validate_data(self, X, dtype="numeric", reset=first)
        X = X.astype(np.float64, copy=False)
        X, sample_weight = _drop_zero_weights(X, sample_weight)
        # A different seed per call, so successive chunks are not shuffled alike.
        seed = (int(check_random_state(self.random_state).randint(_MAX_SEED)) + getattr(self, "n_iter_", 0)) % _MAX_SEED
        if not first:
            self._train(X, seed, sample_weight, max_epochs=1, validation_fraction=None)
            return
        if scaler is not None:
            mean = np.asarray(getattr(scaler, "mean_", None), dtype=np.float64)
            scale = np.asarray(getattr(scaler, "scale_", None), dtype=np.float64)
            if mean.shape != (X.shape[1],) or scale.shape != (X.shape[1],) or not np.all(scale > 0):
                raise ValueError(
                    f"scaler must have mean_ and positive scale_ of shape ({X.shape[1]},), like a fitted "
                    "StandardScaler (with_mean=True, with_std=True)."
                )
            self.mean_, self.scale_ = mean, scale
        else:
            self.mean_, self.scale_ = self._standardisation_for(X, sample_weight)
        self._start_model(X, seed, sample_weight, max_epochs=1, validation_fraction=None)

    def _integer_columns(self, X: np.ndarray) -> np.ndarray:
        """Mask of the columns to dequantise, as chosen by ``dequantize``."""
        if self.dequantize == "auto":
            return _integer_valued(X)
        return np.full(X.shape[1], bool(self.dequantize))

    def _dequantization_widths(self, X: np.ndarray) -> np.ndarray:
        """Bin width of each column to dequantise (0 = continuous column).

        Integer-valued columns get width 1. With ``"auto"``, other columns
        whose values lie on a regular grid ``v0 + k * h`` (integers after a
        MinMax or other affine scaling, prices in cents, ...) get width ``h``,
        the grid spacing, so dequantisation follows the data's own resolution.
        """
        widths = self._integer_columns(X).astype(np.float64)
        if self.dequantize == "auto":
            for column in np.flatnonzero(widths == 0):
                widths[column] = _grid_spacing(X[:, column])
        return widths

    def _after_fit(self, rows: Tensor) -> None:
        """Hook for families that estimate more state from the training rows."""

    def _wants_moment_sums(self) -> bool:
        """Whether a fresh fit passes the power sums of its rows to :meth:`_data_start`."""
        return False

    # Whether the power sums of an in-memory, single-process fit leave out the
    # rows the engine will hold out for validation (weight 0), so that the
    # start competes with the trained epochs (_start_if_better) on rows
    # neither has seen. A family opts in; see InjectiveFlowEstimator.
    _start_from_training_side: ClassVar[bool] = False

    def _start_refitted(self, model: FlowModel, start: Any) -> FlowModel:
        """The kept start (epoch 0) of a training-side start, set to ``start``: the same start from all rows.

        The held-out rows chose the start over every epoch; like any model
        chosen by a split, it is then fitted on all the rows. Only families
        with ``_start_from_training_side`` get here.
        """
        raise NotImplementedError(f"{type(self).__name__} starts from its training side but cannot refit the start.")

    def _held_out_rows(self, X: np.ndarray, seed: int, validation_fraction: float | None) -> np.ndarray | None:
        """Positions in ``X`` of the rows the engine will hold out (None: no split), before training."""
        if not validation_fraction:
            return None
        # The rows exactly as _train hands them to the engine (the split
        # groups identical rows, so it must see the same values).
        dtype = np.float64 if self._torch_dtype() == torch.float64 else np.float32
        rows = torch.from_numpy(_standardised_rows(X, self.mean_, self.scale_, np.dtype(dtype)))
        return validation_index(rows, validation_fraction, seed)

    def _data_start(self, sums: _MomentSums) -> Any:
        """What a fresh model starts from, computed from the training rows' power sums (None: nothing).

        Called once per fresh fit, after ``mean_``, ``scale_`` and the
        dequantisation are set, in the pass over the rows that fit already
        makes (a streaming fit included); the result goes to
        :meth:`_fresh_model`.
        """
        return None

    def _fresh_model(self, n_features: int, start: Any = None) -> FlowModel:
        """The model a fresh fit trains: ``build_model``'s, set to ``start`` (see :meth:`_data_start`)."""
        return self.build_model(n_features)

    def _training_noise_variance(self) -> np.ndarray:
        """Variance per column, shape ``(n_features,)``, of the noise added to the standardised training rows.

        Independent of the rows: uniform dequantisation over a bin of width
        ``w`` (variance ``w^2 / 12``) plus Gaussian ``noise_std``, so a data
        start's covariance of what the model sees adds it on the diagonal.
        """
        return (self.dequantization_widths_ / self.scale_) ** 2 / 12 + float(self.noise_std) ** 2

    def _empty_model(self) -> nn.Module:
        """An untrained model shaped like ``model_``, for :func:`skflow.load` to copy saved weights into."""
        model = self._fresh_model(self.n_features_in_)
        # As fit does: float64 estimators train a double model, so its saved
        # weights load without a cast.
        return model.double() if self._torch_dtype() == torch.float64 else model

    def _standardisation_for(
        self, X: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-column ``(mean, scale)``, each of shape ``(n_features,)``, that map X to model units.

        The model sees ``(X - mean) / scale`` and ``score_samples`` adds
        ``-sum(log(scale))``, so any positive ``scale`` keeps scores exact
        densities in the user's units. The default standardises each column;
        a family overrides this when per-column statistics are wrong for its
        data (e.g. images, which share one scale across pixels). Statistics
        are weighted by ``sample_weight`` (shape ``(n_samples,)``) when given.
        """
        return _standardisation(X, sample_weight)

    # ------------------------------------------------------------------ #
    # numpy <-> torch, in one place
    # ------------------------------------------------------------------ #
    @staticmethod
    def _to_tensor(array: np.ndarray, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype, device=device)

    def _torch_dtype(self) -> torch.dtype:
        """The torch dtype selected by the ``dtype`` hyperparameter."""
        return torch.float64 if np.dtype(self.dtype) == np.float64 else torch.float32

    def _map_rows(
        self,
        function: Callable[[Tensor], Tensor],
        array: np.ndarray,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> np.ndarray:
        """Apply a model function to standardised rows in batches; float64 out.

        ``dtype`` and ``device`` are those of the model ``function`` belongs
        to (by default the fitted model's: the ``dtype`` hyperparameter's and
        ``device_``); see :meth:`_float64_model`.
        """
        options = self._map_options()
        if dtype is not None:
            options["dtype"] = dtype
        return map_rows(function, array, self.device_ if device is None else device, self.model_, **options)

    def _training_options(self) -> dict[str, Any]:
        """Engine settings a family chooses beyond the shared hyperparameters.

        Keyword arguments of :func:`~skflow.training.train_model` (e.g.
        ``lr_schedule``); none by default, so every other family trains with
        the engine's defaults.
        """
        return {}

    def _map_options(self) -> dict[str, Any]:
        """The inference settings :func:`map_rows` takes from the fitted estimator."""
        return {
            "n_threads": self.n_threads,
            "batch_size": self._inference_batch_size,
            "dtype": self._torch_dtype(),
            "inference_mode": self._inference_without_autograd,
        }

    def _float64_model(self) -> tuple[FlowModel, torch.device]:
        """The fitted model in float64 and its device; see :func:`float64_model`."""
        return float64_model(self.model_, self.device_)

    def _standardised(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype="numeric", reset=False)
        return (X.astype(np.float64, copy=False) - self.mean_) / self.scale_

    def _model_rows(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validated ``X`` and ``_standardised(X)`` in the model's dtype (float32 by default), block by block.

        The float32 rows are the values the model is fed in float32, without
        a float64 copy of the whole input: scoring a large table then costs
        about half the input's size on top of it, not twice.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype="numeric", reset=False)
        # In the model's precision (the dtype hyperparameter): float64 rows stay float64.
        dtype = np.float64 if self._torch_dtype() == torch.float64 else np.float32
        return X, _standardised_rows(X, self.mean_, self.scale_, np.dtype(dtype))

    # ------------------------------------------------------------------ #
    # Densities
    # ------------------------------------------------------------------ #
    @dask_aware("rows")
    def score_samples(self, X: Any) -> np.ndarray:
        """Log-density of each row, in the units of the training data.

        Includes the log-det of the internal standardisation, so the values
        are comparable with any other density estimator fitted to the same
        data (e.g. :class:`~sklearn.mixture.GaussianMixture`). Rows whose
        score overflows float32 (far outside the data) are scored again in
        float64, so they get a finite score; rows on which the model still
        produces NaN get ``-inf``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Or a Dask array or DataFrame: the result is then a lazy Dask
            array or Series, scored block by block wherever Dask runs it,
            with the model shipped once (see the user guide's "Scaling out").

        Returns
        -------
        log_density : ndarray of shape (n_samples,), dtype float64
        """
        X, rows = self._model_rows(X)  # first: raises NotFittedError before model_ is touched
        log_prob = log_prob_rows(
            self.model_,
            rows,
            self.device_,
            exact_rows=lambda mask: (X[mask].astype(np.float64, copy=False) - self.mean_) / self.scale_,
            **self._map_options(),
        )
        log_prob = log_prob - np.log(self.scale_).sum()
        return np.where(np.isnan(log_prob), -np.inf, log_prob)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Mean log-likelihood of the rows of ``X`` (higher is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Weights of the mean (routed with ``set_score_request``).

        Returns
        -------
        score : float
        """
        log_density = self.score_samples(X)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, log_density, ensure_non_negative=True)
        return float(np.average(log_density, weights=sample_weight))

    def bits_per_dim(self, X: Any) -> float:
        """Average code length of discrete rows in bits per dimension (lower is better).

        ``-(mean log p(x) + sum_j log h_j) / (D ln 2)`` with ``h_j`` the bin
        width each column was dequantised with (1 for integers); see
        :func:`skflow.metrics.bits_per_dim` for the derivation.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        bpd : float

        Raises
        ------
        ValueError
            If some column was not dequantised during fit: the density of a
            continuous column is not a probability, so it has no code length.
        """
        from .metrics import bits_per_dim

        check_is_fitted(self)
        widths = getattr(self, "dequantization_widths_", self.dequantized_features_.astype(np.float64))
        if not np.all(widths > 0):
            raise ValueError(
                "bits_per_dim needs discrete data: every column must have been dequantised during fit "
                f"({int(np.sum(widths <= 0))} column(s) were not). Fit with dequantize=True, or use "
                "skflow.metrics.bits_per_dim with explicit bin widths."
            )
        return bits_per_dim(self, X, widths)

    def sample(
        self,
        n_samples: int = 1,
        random_state: int | np.random.RandomState | None = None,
        *,
        dequantized: str = "grid",
    ) -> Any:
        """Draw rows from the fitted density.

        Parameters
        ----------
        n_samples : int, default=1
        random_state : int, RandomState instance or None, default=None
            Seed of the draw; an int makes it repeatable.
        dequantized : {"grid", "continuous"}, default="grid"
            What to return for the columns dequantised during fit
            (``dequantized_features_``). ``"grid"`` maps each draw to the
            centre of the bin it fell in, ``data_min_ + k * width``, clipped
            to the training range ``[data_min_, data_max_]``: the model gives
            a bin's probability as the density's mass on it, so rounding a
            continuous draw is an exact draw from the discrete distribution
            (the clipping moves only the mass the model leaks beyond the
            observed levels). Integer columns thus come back as integers.
            ``"continuous"`` returns the model's continuous draw, a sample
            of the dequantised density itself. Continuous columns are the
            same either way.

        Returns
        -------
        X : ndarray or DataFrame of shape (n_samples, n_features)
            Samples in the units of the training data. A DataFrame when
            ``set_output(transform="pandas")`` (or the global setting) asks
            for one, with the training column names (``feature_names_in_``,
            else ``x0``, ``x1``, ...) and integer dtype for grid-mapped
            columns whose grid is the integers (or a subset of them).
        """
        check_is_fitted(self)
        if not isinstance(n_samples, Integral) or isinstance(n_samples, (bool, np.bool_)) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        if dequantized not in ("grid", "continuous"):
            raise ValueError(f"dequantized must be 'grid' or 'continuous', got {dequantized!r}.")
        seed = int(check_random_state(random_state).randint(_MAX_SEED))
        generator = torch.Generator(device=self.device_).manual_seed(seed)
        macs = int(n_samples) * _n_parameters(self.model_)
        with torch.no_grad(), torch_threads(self.n_threads, macs=macs, device=self.device_):
            samples = self.model_.sample(int(n_samples), generator)
        samples = samples.cpu().numpy().astype(np.float64) * self.scale_ + self.mean_
        integer_columns = np.zeros(samples.shape[1], dtype=bool)
        if dequantized == "grid":
            samples, integer_columns = self._snap_to_grid(samples)
        return self._output_container(samples, integer_columns)

    def _snap_to_grid(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map the dequantised columns of ``samples`` to their training grids.

        Returns the snapped samples and the mask of columns whose grid holds
        integers only.
        """
        widths = self.dequantization_widths_
        columns = widths > 0
        if not columns.any():
            return samples, columns
        # Models fitted before data_min_ existed fall back to the integers.
        low = getattr(self, "data_min_", np.zeros_like(widths))
        high = getattr(self, "data_max_", np.full_like(widths, np.inf))
        snapped = samples.copy()
        width, origin = widths[columns], low[columns]
        levels = np.round((samples[:, columns] - origin) / width)
        snapped[:, columns] = np.clip(origin + levels * width, origin, high[columns])
        integral = columns.copy()
        integral[columns] = (width == np.round(width)) & (origin == np.round(origin))
        # Rounding error of origin + k * width must not leave 2.9999999 in an integer column.
        snapped[:, integral] = np.round(snapped[:, integral])
        return snapped, integral

    def _output_container(self, X: np.ndarray, integer_columns: np.ndarray | None = None) -> Any:
        """``X`` (data-space rows) in the container ``set_output`` asks for.

        Data-space outputs (``sample``, ``inverse_transform``) are named by
        the input features, not by ``get_feature_names_out`` (the latent
        ones), so scikit-learn's automatic wrapping, which covers
        ``transform`` only, is applied here by hand.
        """
        container = _get_output_config("transform", self)["dense"]
        if container == "default":
            return X
        names = getattr(self, "feature_names_in_", None)
        if names is None:
            names = np.asarray([f"x{i}" for i in range(X.shape[1])], dtype=object)
        frame = ADAPTERS_MANAGER.adapters[container].create_container(X, None, columns=names)
        if integer_columns is not None and integer_columns.any():
            integer_names = [str(name) for name in np.asarray(names)[integer_columns]]
            if hasattr(frame, "astype"):  # pandas
                frame = frame.astype(dict.fromkeys(integer_names, "int64"))
            else:  # polars
                import polars as pl

                frame = frame.with_columns([pl.col(name).cast(pl.Int64) for name in integer_names])
        return frame

    # ------------------------------------------------------------------ #
    # Transformer side
    # ------------------------------------------------------------------ #
    @property
    def _n_features_out(self) -> int:
        """Width of the latent representation (``transform``'s output)."""
        return self.n_features_in_

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the latent features, ``<classname>0``, ``<classname>1``, ...

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Only checked against ``feature_names_in_``.

        Returns
        -------
        feature_names_out : ndarray of shape (n_components,), dtype object
        """
        # Guard here, not through _n_features_out: a family may compute that
        # width from its hyperparameters, which exist before fit.
        check_is_fitted(self)
        return super().get_feature_names_out(input_features)

    @dask_aware("columns")
    def transform(self, X: Any) -> np.ndarray:
        """Map rows to the flow's latent space.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Or a Dask array or DataFrame, mapped block by block (as in
            :meth:`score_samples`).

        Returns
        -------
        Z : ndarray of shape (n_samples, n_components)
            Latent codes; for exact flows ``n_components == n_features`` and
            the codes are standard normal under the model. Exact flows
            compute them (and :meth:`inverse_transform`) in float64, so that
            the round trip holds even where the fitted map is nearly flat.
        """
        rows = self._standardised(X)  # first: raises NotFittedError before model_ is touched
        model, dtype, device = self._latent_model()
        return self._map_rows(model.encode, rows, dtype=dtype, device=device)

    def inverse_transform(self, Z: Any) -> Any:
        """Map latent codes back to data space.

        Parameters
        ----------
        Z : array-like of shape (n_samples, n_components)

        Returns
        -------
        X : ndarray or DataFrame of shape (n_samples, n_features)
            Reconstructed rows, continuous in every column. A DataFrame
            with the training column names when ``set_output`` asks for
            one.
        """
        check_is_fitted(self)
        Z = check_array(Z, dtype="numeric").astype(np.float64, copy=False)
        if Z.shape[1] != self._n_features_out:
            raise ValueError(
                f"Z has {Z.shape[1]} features, but {type(self).__name__} expects "
                f"{self._n_features_out} latent features as input."
            )
        model, dtype, device = self._latent_model()
        return self._output_container(
            self._map_rows(model.decode, Z, dtype=dtype, device=device) * self.scale_ + self.mean_
        )

    def _latent_model(self) -> tuple[FlowModel, torch.dtype, torch.device]:
        """The model (with its dtype and device) that ``transform`` and ``inverse_transform`` evaluate."""
        return self.model_, self._torch_dtype(), self.device_

    # ------------------------------------------------------------------ #
    # Persistence and tags
    # ------------------------------------------------------------------ #
    def __getstate__(self) -> dict:
        # A copy: on Python 3.11+ scikit-learn's __getstate__ returns the
        # estimator's own __dict__, and pickling must never change the live
        # estimator.
        state = dict(super().__getstate__())
        model = state.get("model_")
        if model is not None and self.device_.type != "cpu":
            # Pickles hold CPU tensors, so a GPU-fitted model loads anywhere;
            # the fitted device is recorded so that loading can go back to it.
            state["model_"] = copy.deepcopy(model).to("cpu")
            state["device_"] = torch.device("cpu")
            state["_fitted_device"] = str(self.device_)
        return state

    def __setstate__(self, state: dict) -> None:
        fitted_device = state.pop("_fitted_device", None)
        super().__setstate__(state)
        if fitted_device is not None:
            try:
                device = resolve_device(fitted_device)
            except ValueError:
                warnings.warn(
                    f"The model was fitted on {fitted_device}, which is not available here; it stays on the CPU.",
                    UserWarning,
                    stacklevel=2,
                )
                return
            self.model_.to(device)
            self.device_ = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.target_tags.required = False
        return tags


class ExactFlowEstimator(FlowEstimator):
    """Base of the exact (bijective) families: adds the base distribution and the starting point.

    Parameters
    ----------
    n_base_components : int, default=1
        1 uses a standard normal base distribution; ``k > 1`` a learnable
        mixture of ``k`` diagonal Gaussians, which lets a shallow flow
        represent multimodal data without tearing the space apart.
    init : {"identity", "gaussian"}, default="identity"
        Where training starts. ``"identity"``: the flow's own layers, which
        start as (nearly) the identity on the per-column standardised
        features, so the untrained model is a Gaussian with a diagonal
        covariance. ``"gaussian"``: a trainable dense linear layer
        (:class:`~skflow.flows.LULinear`) is put first in the chain and set
        to the whitening matrix ``L^{-1}``, where ``L L^T`` is a shrunk
        covariance ``(1 - a) C + a mean(diag C) I``: ``C`` is the covariance
        of the standardised training rows (weighted by ``sample_weight``)
        plus the variance of the dequantisation and ``noise_std`` noise the
        model is trained on, and the shrinkage ``a`` (``start_shrinkage_``)
        is the one of a grid from 0 to 1, Ledoit-Wolf's intensity included,
        whose Gaussian gives the highest likelihood to held-out rows over
        5 folds. The untrained model is then that full-covariance Gaussian
        (exactly so for families whose layers start as the identity, with
        ``n_base_components=1``), and training only has to learn what is
        not Gaussian. That untrained model also competes with the epochs
        for the weights kept: when no epoch beats it on the held-out rows
        (``validation_fraction``), it is kept and ``best_epoch_`` is 0.
        Shrinkage matters when the rows are few for the columns; on nearly
        collinear columns any shrinkage costs likelihood,
        hence the choice by held-out rows rather than Ledoit-Wolf's
        squared-error rule. It costs ``O(n d^2)`` in the pass over the rows
        that computes the standardisation, plus five ``d x d`` eigenvalue
        decompositions (about ten seconds at 1,300 rows by 1,555 columns on
        one loaded core, a few milliseconds at 30 columns), and a ``d x d``
        matrix product per training step. It is ``RealNVPDensity``'s default
        because it raised that family's held-out likelihood on real tables
        (``benchmarks/tabular_density.py``; see the user guide's "Starting
        point"). It applies to fresh fits only: ``warm_start`` and
        ``partial_fit`` continue the current model,
        and a conditional estimator (:class:`~skflow.FlowRegressor`,
        ``FlowClassifier(strategy="conditional")``) builds the family's
        layers itself and starts them at the identity.

    Attributes
    ----------
    start_shrinkage_ : float
        With ``init="gaussian"``: the shrinkage ``a`` of the covariance the
        fit started from (absent with ``"identity"``).
    """

    # Change of variables through explicit layers: no autograd at inference.
    _inference_without_autograd: ClassVar[bool] = True

    n_base_components: int = 1
    init: str = "identity"

    _parameter_constraints: ClassVar[dict] = {
        **FlowEstimator._parameter_constraints,
        "n_base_components": [Interval(Integral, 1, None, closed="left")],
        "init": [StrOptions({"identity", "gaussian"})],
    }

    def _wants_moment_sums(self) -> bool:
        return self.init == "gaussian"

    def _data_start(self, sums: _MomentSums) -> np.ndarray:
        """The whitening matrix ``L^{-1}``, shape ``(d, d)``, of the covariance the Gaussian start fits."""
        # The covariance of what the model sees adds the noise's variances.
        noise = self._training_noise_variance()
        covariance, self.start_shrinkage_ = _start_covariance(sums, self.mean_, self.scale_, noise)
        try:
            cholesky = np.linalg.cholesky(covariance)
        except np.linalg.LinAlgError:
            # Singular only when the shrinkage is 0 and a column is constant
            # or collinear (no noise on it): a small ridge keeps it invertible.
            cholesky = np.linalg.cholesky(covariance + 1e-6 * np.eye(len(covariance)))
        from scipy.linalg import solve_triangular

        return solve_triangular(cholesky, np.eye(len(cholesky)), lower=True)

    def _fresh_model(self, n_features: int, start: Any = None) -> FlowModel:
        model = self.build_model(n_features)
        if self.init == "identity":
            return model
        from .flows.core import Chain, ExactFlow
        from .flows.linear import DataInitialized, LULinear

        if not isinstance(model, ExactFlow):
            raise TypeError(
                f"init='gaussian' puts its layer in front of the transform of the ExactFlow that build_model "
                f"returns, but {type(self).__name__}.build_model returned a {type(model).__name__}; use "
                "init='identity'."
            )
        # Without a start (skflow.load rebuilding the structure) the layer's
        # values do not matter: the saved weights replace them. With one, it
        # is factorised in float64 and then cast to the estimator's dtype.
        linear = LULinear(n_features, None if start is None else torch.as_tensor(start))
        linear = linear.to(self._torch_dtype())
        if start is not None:
            # The rows reach the family's layers whitened already. An ActNorm
            # set from the first batch would rescale each whitened direction
            # to that batch's variance, undoing the shrinkage where it
            # matters (few rows for the columns): marked as set, it starts as
            # the identity like the rest, and the untrained flow is exactly
            # the shrunk Gaussian.
            for module in model.modules():
                if isinstance(module, DataInitialized):
                    module.initialized.fill_(True)
        # One flat chain where the family built one, so model_.transform.bijections lists every layer.
        layers = list(model.transform.bijections) if isinstance(model.transform, Chain) else [model.transform]
        model.transform = Chain([linear, *layers])
        return model

    def _latent_model(self) -> tuple[FlowModel, torch.dtype, torch.device]:
        # An exact flow promises inverse_transform(transform(X)) == X, and a
        # fitted flow can be nearly flat far from the data (a neural spline
        # on moons: slopes of 2e-9 across two layers ten standard deviations
        # out), where float32 outputs cannot tell inputs 0.1 apart. float64
        # keeps the round trip within 1e-6 there; scores are unaffected.
        model, device = self._float64_model()
        return model, torch.float64, device

    def base_distribution(self, n_features: int, n_context: int = 0) -> BaseDistribution:
        """The base distribution selected by ``n_base_components``.

        With a context (``n_context > 0``) a mixture's weights depend on it.
        """
        from .flows.core import StandardNormal

        if self.n_base_components == 1:
            return StandardNormal(n_features)
        from .flows.distributions import GaussianMixtureBase

        return GaussianMixtureBase(n_features, self.n_base_components, n_context)
