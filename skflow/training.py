"""The training engine: one skorch loop for every flow family.

skorch brings the epoch loop, the validation split, callbacks, early
stopping, gradient clipping, progress bars and device placement. This module
adapts it to density models, which have no targets:

* the network's "prediction" is the per-sample loss, ``model.loss(x)`` in
  training mode and ``-model.validation_log_prob(x)`` in evaluation mode, so
  validation (and so early stopping) always measures a held-out negative
  log-likelihood, whatever surrogate a family trains on, and the model (a
  :class:`~skflow.flows.core.FlowModel`) alone says how it is computed;
* batches are sliced from one tensor already on the device instead of being
  collated row by row, which is where a generic DataLoader spends most of its
  time on small tabular models;
* a non-finite training loss stops training at once and the best weights seen
  so far are restored (or a :class:`TrainingDivergedError` is raised when no
  finite epoch exists), so a fit never silently returns a NaN model.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import GroupShuffleSplit
from skorch import NeuralNet
from skorch.callbacks import Callback, EarlyStopping, GradientNormClipping, ProgressBar
from skorch.dataset import Dataset
from skorch.utils import to_tensor
from torch import Tensor, nn

from ._threads import share_with_concurrent_work, torch_threads
from .flows.core import FlowModel
from .progress import ProgressReport

__all__ = ["TrainingDivergedError", "TrainingResult", "train_model"]


class TrainingDivergedError(FloatingPointError):
    """Training produced a non-finite loss before any epoch finished cleanly."""


class _NonFiniteLoss(Exception):
    """Internal signal raised from a callback to leave skorch's loop."""


class _MeanLoss(nn.Module):
    """skorch criterion: the network already returns per-sample losses.

    skorch's target slot carries the sample weights (normalised to mean 1 on
    each side of the split, see :func:`_weighted_side`), or an empty
    placeholder without weights. ``mean(w * loss)`` rather than a per-batch
    ``sum(w * loss) / sum(w)``: skorch averages batch losses weighted by
    batch size, which then gives exactly the weighted mean over an epoch.
    """

    def forward(self, per_sample_loss: Tensor, target: Tensor | None = None) -> Tensor:
        if target is not None and target.numel():
            return (per_sample_loss * target).mean()
        return per_sample_loss.mean()


class _FlowNet(NeuralNet):
    """NeuralNet whose forward pass is the flow model's loss.

    ``jitter`` (a tensor of per-feature widths, or None) dequantises training
    batches: each batch gets fresh uniform noise on ``[-w/2, w/2)``, so
    integer-valued features become continuous bins centred on their values.
    ``noise_std`` adds Gaussian noise of that standard deviation to every
    training batch on top (noise regularisation). Validation rows get
    neither.
    """

    def __init__(self, *args: Any, jitter: Tensor | None = None, noise_std: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.jitter = jitter
        self.noise_std = noise_std

    def _set_training(self, training: bool = True) -> None:
        # skorch calls this before every batch, and Module.train() walks every
        # submodule (about 5% of a small flow's training time); the engine
        # only ever switches the whole model, so its top-level flag suffices.
        if self.module_.training != training:
            super()._set_training(training)

    def infer(self, x: Tensor, **fit_params: Any) -> Tensor:
        x = to_tensor(x, device=self.device)
        model = self.module_
        if model.training:
            if self.jitter is not None:
                x = x + (torch.rand_like(x) - 0.5) * self.jitter
            if self.noise_std > 0:
                x = x + self.noise_std * torch.randn_like(x)
            return model.loss(x)
        return -model.validation_log_prob(x)


def _rows_of(dataset: Any) -> Tensor:
    """The tensor of rows behind a skorch Dataset or a Subset of one."""
    if isinstance(dataset, torch.utils.data.Subset):
        indices = torch.as_tensor(np.asarray(dataset.indices), dtype=torch.long)
        rows = _rows_of(dataset.dataset)
        return rows[indices.to(rows.device)]
    return dataset.X


def _weights_of(dataset: Any) -> Tensor | None:
    """The sample weights behind a skorch Dataset (its ``y``), or None without weights."""
    if isinstance(dataset, torch.utils.data.Subset):
        weights = _weights_of(dataset.dataset)
        if weights is None:
            return None
        indices = torch.as_tensor(np.asarray(dataset.indices), dtype=torch.long)
        return weights[indices.to(weights.device)]
    return getattr(dataset, "y", None)


def _weighted_side(dataset: Any, index: np.ndarray) -> Any:
    """One side of a split; its weights rescaled to mean 1, so its loss is a weighted mean."""
    weights = _weights_of(dataset)
    if weights is None:
        return torch.utils.data.Subset(dataset, index)
    rows = _rows_of(dataset)
    chosen = torch.as_tensor(index, dtype=torch.long, device=rows.device)
    side = weights[chosen]
    return Dataset(rows[chosen], side / side.mean())


class TensorBatches:
    """Iterates mini-batches ``(X_batch, placeholder)`` sliced from one tensor.

    Used as skorch's ``iterator_train`` and ``iterator_valid``. Shuffling uses
    torch's global generator, which the engine seeds, so runs are repeatable.
    """

    def __init__(self, dataset: Any, batch_size: int = 128, shuffle: bool = False) -> None:
        self.rows = _rows_of(dataset)
        self.weights = _weights_of(dataset)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self._placeholder = torch.zeros(0)

    def _batch(self, index: Tensor | slice) -> tuple[Tensor, Tensor]:
        # Weights ride in skorch's target slot, so _MeanLoss receives them.
        return self.rows[index], self._placeholder if self.weights is None else self.weights[index]

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n_rows = len(self.rows)
        if self.shuffle:
            order = torch.randperm(n_rows).to(self.rows.device)
            for start in range(0, n_rows, self.batch_size):
                yield self._batch(order[start : start + self.batch_size])
        else:
            for start in range(0, n_rows, self.batch_size):
                yield self._batch(slice(start, start + self.batch_size))


# With fewer distinct rows than this, repeated rows are taken to be the
# distribution itself (a few discrete values), not copies to hold out together.
_MIN_DISTINCT_ROWS_TO_GROUP = 50


class DuplicateAwareSplit:
    """skorch ``train_split`` that keeps every copy of a row on the same side.

    Real tables (and bootstrapped ones) often repeat rows. With a plain random
    split, copies of training rows land in the validation set, so validation
    likelihood rewards memorising them and early stopping never sees the
    overfitting. Identical rows are therefore held out together. When the data
    have only a few distinct rows (fewer than 50), repetition is the nature of
    the distribution and grouping would hold out whole values, so each row is
    then its own group.

    Parameters
    ----------
    fraction : float
        Share of the groups held out for validation.
    random_state : int
        Seed of the split.
    """

    def __init__(self, fraction: float, random_state: int) -> None:
        self.fraction = fraction
        self.random_state = random_state

    def __call__(self, dataset: Any, y: Any = None, **fit_params: Any) -> tuple[Any, Any]:
        groups = duplicate_groups(_rows_of(dataset))
        splitter = GroupShuffleSplit(n_splits=1, test_size=self.fraction, random_state=self.random_state)
        train_index, valid_index = next(splitter.split(groups, groups=groups))
        return _weighted_side(dataset, train_index), _weighted_side(dataset, valid_index)


def duplicate_groups(rows: Tensor) -> np.ndarray:
    """Group id per row, shape ``(n,)``: equal for identical rows (see DuplicateAwareSplit)."""
    ids = torch.unique(rows, dim=0, return_inverse=True)[1].cpu().numpy()
    if ids.max(initial=-1) + 1 < _MIN_DISTINCT_ROWS_TO_GROUP:
        return np.arange(len(rows))
    return ids


class _BestWeights(Callback):
    """Keeps the weights of the best epoch and aborts on a non-finite loss."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor

    def initialize(self) -> _BestWeights:
        self.best_loss_ = math.inf
        self.best_epoch_ = 0
        self.best_state_: dict[str, Tensor] | None = None
        return self

    def on_batch_end(self, net: NeuralNet, batch: Any = None, training: bool = False, **kwargs: Any) -> None:
        loss = kwargs.get("loss")
        if training and loss is not None and not torch.isfinite(loss).all():
            raise _NonFiniteLoss

    def on_epoch_end(self, net: NeuralNet, **kwargs: Any) -> None:
        loss = net.history[-1, self.monitor]
        if math.isfinite(loss) and loss < self.best_loss_:
            self.best_loss_ = loss
            self.best_epoch_ = len(net.history)
            # Tensor clones rather than one deepcopy of the whole dict: the same
            # snapshot without deepcopy's per-object bookkeeping at every
            # improving epoch (non-tensor extra state is still deep-copied).
            self.best_state_ = {
                name: value.detach().clone() if isinstance(value, Tensor) else copy.deepcopy(value)
                for name, value in net.module_.state_dict().items()
            }

    def restore(self, module: nn.Module) -> None:
        if self.best_state_ is not None:
            module.load_state_dict(self.best_state_)


class _ShareThreads(Callback):
    """Gives up extra torch threads between epochs when other skflow work starts."""

    def on_epoch_begin(self, net: NeuralNet, **kwargs: Any) -> None:
        share_with_concurrent_work()


@dataclass
class TrainingResult:
    """What the engine reports back to the estimator.

    Attributes
    ----------
    history : list of dict
        One entry per epoch run: ``epoch``, ``train_loss``, ``valid_loss``
        (NaN without a validation split) and ``dur`` (seconds).
    n_epochs : int
        Epochs run.
    best_epoch : int
        Epoch whose weights the model holds after training (1-based).
    diverged : bool
        Whether training stopped on a non-finite loss.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    n_epochs: int = 0
    best_epoch: int = 0
    diverged: bool = False


def _silent(*args: Any, **kwargs: Any) -> None:
    """A skorch sink that prints nothing."""


def _history_records(history: Any) -> list[dict[str, float]]:
    keys = ("epoch", "train_loss", "valid_loss", "dur")
    return [{key: float(row.get(key, math.nan)) for key in keys} for row in history]


def fused_optimizer_supported(model: nn.Module, device: str) -> bool:
    """Whether torch's fused AdamW kernel can update ``model`` on ``device``.

    It exists for floating-point parameters on the CPU and CUDA (and, in
    recent torch versions, MPS); anywhere else the ordinary implementation is
    used.
    """
    device_type = torch.device(device).type
    if device_type not in ("cpu", "cuda", "mps"):
        return False
    parameters = list(model.parameters())
    if not parameters or not all(p.is_floating_point() for p in parameters):
        return False
    try:
        torch.optim.AdamW(parameters, lr=1e-3, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return False
    return True


def train_model(
    model: FlowModel,
    X: Tensor,
    *,
    max_epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.0,
    validation_fraction: float | None = 0.1,
    patience: int | None = 10,
    gradient_clip: float | None = None,
    callbacks: Sequence[Callback] | None = None,
    random_state: int = 0,
    device: str = "cpu",
    verbose: int = 0,
    jitter: Tensor | None = None,
    noise_std: float = 0.0,
    sample_weight: Tensor | None = None,
    n_threads: int | None = None,
) -> TrainingResult:
    """Train ``model`` (a :class:`~skflow.flows.core.FlowModel`) on rows ``X``.

    Parameters
    ----------
    model : FlowModel
        Trained on ``loss(x)``, validated on ``validation_log_prob(x)``;
        already on ``device``.
    X : Tensor of shape (n_samples, n_features)
        Training rows, already on ``device`` and in the model's dtype.
    max_epochs, batch_size, lr, weight_decay
        Optimisation settings (AdamW).
    validation_fraction : float or None
        Share of the rows held out for validation (early stopping and the
        choice of the weights returned); copies of a row stay on one side
        (see :class:`DuplicateAwareSplit`). None or 0 trains on all rows,
        monitors the training loss and returns the last epoch's weights
        (the best epoch's only after a divergence).
    patience : int or None
        Epochs without improvement of the monitored loss before stopping;
        None disables early stopping.
    gradient_clip : float or None
        Maximum total gradient norm per step.
    callbacks : sequence of skorch callbacks, optional
        Passed through to skorch after the engine's own.
    random_state : int
        Seeds the validation split, the shuffling and anything else drawn
        from torch's global generator during training.
    device : str
        Device the model and data live on.
    verbose : int
        0 silent; 1 a compact report (:class:`~skflow.progress.ProgressReport`);
        2 skorch's table, one row per epoch; 3 also a progress bar per epoch.
    jitter : Tensor of shape (n_features,) or None
        Dequantisation widths per feature (0 for continuous features); see
        ``_FlowNet``.
    noise_std : float
        Standard deviation of the Gaussian noise added to training batches
        (in the units of ``X``); 0 for none.
    sample_weight : Tensor of shape (n_samples,) or None
        Positive weight of each row in the likelihood: the training and
        validation losses are weighted means (each side of the split
        rescaled to mean weight 1, so the losses stay per-row nats). An
        integer weight ``k`` matches ``k`` copies of the row in expectation
        over batches, and exactly with full-batch training.
    n_threads : int or None
        CPU threads for the loop; None sizes them to one step's work and the
        free cores (see :func:`skflow._threads.torch_threads`).

    Returns
    -------
    TrainingResult
    """
    if not isinstance(model, FlowModel):
        raise TypeError(
            f"The engine trains a skflow.flows.FlowModel; got {type(model).__name__}. Subclass FlowModel "
            "(log_prob, sample, encode, decode; loss and validation_log_prob have defaults)."
        )
    n_rows = len(X)
    n_groups = len(np.unique(duplicate_groups(X))) if validation_fraction else 0
    n_valid = math.ceil((validation_fraction or 0.0) * n_groups)
    use_validation = n_valid >= 2 and n_groups - n_valid >= 2
    monitor = "valid_loss" if use_validation else "train_loss"

    best_weights = _BestWeights(monitor)
    engine_callbacks: list[tuple[str, Callback]] = [("best_weights", best_weights), ("share_threads", _ShareThreads())]
    if patience is not None:
        engine_callbacks.append(
            # Absolute threshold (nats per row): skorch's default relative one
            # flips sign for negative log-likelihood losses and then counts a
            # slightly worse epoch as an improvement, so training never stops.
            (
                "early_stopping",
                EarlyStopping(
                    monitor=monitor,
                    patience=patience,
                    threshold=1e-4,
                    threshold_mode="abs",
                    load_best=False,
                    # At verbose=1 the compact report says why training stopped.
                    sink=print if verbose >= 2 else _silent,
                ),
            )
        )
    if gradient_clip is not None:
        engine_callbacks.append(("gradient_clip", GradientNormClipping(gradient_clip)))
    if verbose == 1:
        engine_callbacks.append(("progress_report", ProgressReport(max_epochs, monitor)))
    if verbose >= 3:
        engine_callbacks.append(("progress_bar", ProgressBar()))
    user_callbacks = [(f"user_{i}", callback) for i, callback in enumerate(callbacks or ())]

    net = _FlowNet(
        module=model,
        criterion=_MeanLoss,
        optimizer=torch.optim.AdamW,
        optimizer__weight_decay=weight_decay,
        # The fused kernel does the same AdamW update in one call instead of
        # ~10 small ops per parameter tensor: about 4x cheaper steps on CPU.
        optimizer__fused=fused_optimizer_supported(model, device),
        lr=lr,
        max_epochs=max_epochs,
        batch_size=min(batch_size, n_rows),
        iterator_train=TensorBatches,
        iterator_train__shuffle=True,
        iterator_valid=TensorBatches,
        train_split=(DuplicateAwareSplit(validation_fraction, random_state) if use_validation else None),
        # Early stopping ends an epoch by raising from on_epoch_end, so it goes
        # last: every other callback (the user's too) sees every epoch's end.
        callbacks=sorted(engine_callbacks + user_callbacks, key=lambda item: item[0] == "early_stopping"),
        device=device,
        verbose=verbose,
        jitter=jitter,
        noise_std=noise_std,
        # skorch's per-epoch table (with ANSI colours) only from verbose=2.
        **({"callbacks__print_log": None} if verbose < 2 else {}),
    )
    if sample_weight is not None:
        sample_weight = (sample_weight / sample_weight.mean()).to(X.dtype)
    diverged = False
    step_macs = min(batch_size, n_rows) * sum(p.numel() for p in model.parameters())
    try:
        with torch_threads(n_threads, macs=step_macs, device=torch.device(device)):
            net.fit(X, sample_weight)
    except _NonFiniteLoss:
        diverged = True
    history = _history_records(net.history)
    if diverged and best_weights.best_state_ is None:
        raise TrainingDivergedError(
            "Training diverged: the loss became NaN or infinite before any epoch finished with a finite "
            f"{monitor}. Lower the learning rate (lr={lr}), set gradient_clip, or check the data for "
            "extreme values."
        )
    if diverged:
        warnings.warn(
            f"Training diverged in epoch {len(history)} (non-finite loss); restored the weights of epoch "
            f"{best_weights.best_epoch_}, the best by {monitor}. Consider a lower learning rate.",
            RuntimeWarning,
            stacklevel=3,
        )
    if use_validation or diverged:
        best_weights.restore(model)
        best_epoch = best_weights.best_epoch_
    else:
        # Without held-out rows the only yardstick is the training loss, an
        # average over weights that moved during the epoch, and for noisy
        # objectives (flow matching, Hutchinson's estimator, noise_std) its
        # epoch-to-epoch jitter can exceed the whole fit's progress: picking
        # its minimum would pick an epoch at random. Keep the last weights.
        best_epoch = len(history)
    model.eval()
    return TrainingResult(history=history, n_epochs=len(history), best_epoch=best_epoch, diverged=diverged)
