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
* a non-finite training loss, or a finite one that explodes far beyond what a
  standard normal scores on the same rows, stops training at once and the
  best weights seen so far are restored with a warning (or a
  :class:`TrainingDivergedError` is raised when no sound epoch exists), so a
  fit never silently returns a NaN or absurd model;
* Ctrl-C (KeyboardInterrupt) reaches the caller instead of ending the epoch
  loop quietly as skorch does;
* with an ``accelerate.Accelerator`` the same loop runs data-parallel through
  skorch's :class:`~skorch.hf.AccelerateMixin`: every process (rank) trains
  on its own shard of each epoch's shuffled rows, gradients are all-reduced by
  DistributedDataParallel, and skorch's :class:`~skorch.history.DistributedHistory`
  pools every rank's batch losses, so the epoch losses that drive early
  stopping and the choice of the best weights are the same on every rank.
"""

from __future__ import annotations

import copy
import functools
import math
import signal
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from sklearn.model_selection import ShuffleSplit
from skorch import NeuralNet
from skorch.callbacks import Callback, EarlyStopping, GradientNormClipping, LRScheduler, ProgressBar
from skorch.dataset import Dataset
from skorch.hf import AccelerateMixin
from skorch.history import DistributedHistory
from skorch.utils import to_tensor
from torch import Tensor, nn

from ._threads import share_with_concurrent_work, torch_threads
from .flows.core import FlowModel
from .progress import ProgressReport

__all__ = ["RowStream", "TrainingDivergedError", "TrainingResult", "train_model"]


class TrainingDivergedError(FloatingPointError):
    """Training diverged (a non-finite or exploding loss) before any epoch finished cleanly."""


class _NonFiniteLoss(Exception):
    """Internal signal raised from a callback to leave skorch's loop."""


class _Interrupted(BaseException):
    """Carries a real KeyboardInterrupt (Ctrl-C) past skorch, which would swallow it.

    skorch's ``partial_fit`` catches KeyboardInterrupt around its epoch loop
    and returns as if training had finished, leaving a half-trained model
    that looks fitted. A BaseException that is not a KeyboardInterrupt
    passes through that handler; ``train_model`` turns it back.
    """


class _StopTraining(Exception):
    """skorch's way for a callback to end training early, told apart from Ctrl-C.

    skorch callbacks (its EarlyStopping among them) stop training by raising
    KeyboardInterrupt from ``on_epoch_end``. Such a raise, with no SIGINT
    received, is a request to stop; any other KeyboardInterrupt is the
    user's.
    """


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


class _PerSampleLoss(nn.Module):
    """The network skorch trains: a flow model's per-sample loss as ``forward``.

    ``model.loss(x)`` in training mode and ``-model.validation_log_prob(x)``
    in evaluation mode. The loss has to be the module's ``forward`` because
    DistributedDataParallel all-reduces gradients only for what runs through
    its own ``__call__``; calling ``model.loss`` on the wrapped model would
    silently train each rank on its own.
    """

    def __init__(self, flow: FlowModel) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: Tensor) -> Tensor:
        return self.flow.loss(x) if self.training else -self.flow.validation_log_prob(x)


def _unwrapped(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def _flow_of(module: nn.Module) -> FlowModel:
    """The flow model inside skorch's module (unwrapping DDP and _PerSampleLoss)."""
    module = _unwrapped(module)
    # train_model admits only FlowModels, so whatever is left once unwrapped is one.
    return module.flow if isinstance(module, _PerSampleLoss) else cast(FlowModel, module)


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

    def _training_input(self, x: Tensor) -> Tensor:
        if self.jitter is not None:
            x = x + (torch.rand_like(x) - 0.5) * self.jitter
        if self.noise_std > 0:
            x = x + self.noise_std * torch.randn_like(x)
        return x

    sigint_received = False

    def notify(self, method_name: str, **cb_kwargs: Any) -> None:
        if method_name != "on_epoch_end":
            return super().notify(method_name, **cb_kwargs)
        try:
            return super().notify(method_name, **cb_kwargs)
        except KeyboardInterrupt as stop:
            if self.sigint_received:
                raise
            raise _StopTraining from stop

    def fit_loop(self, *args: Any, **kwargs: Any) -> Any:
        try:
            with _recording_sigint(self):
                return super().fit_loop(*args, **kwargs)
        except _StopTraining:
            return self
        except KeyboardInterrupt as interrupt:
            raise _Interrupted from interrupt

    def infer(self, x: Tensor, **fit_params: Any) -> Tensor:
        x = to_tensor(x, device=self.device)
        if self.module_.training:
            x = self._training_input(x)
            # Under accelerate the module is a _PerSampleLoss (in DDP): its
            # forward is the loss. Otherwise it is the flow itself, which
            # user callbacks may read as ``net.module_``.
            return self.module_(x) if isinstance(_unwrapped(self.module_), _PerSampleLoss) else self.module_.loss(x)
        # Validation needs no gradient all-reduce, so it bypasses a DDP
        # wrapper: DDP's forward may broadcast buffers, a collective that
        # every rank would have to reach the same number of times.
        return -_flow_of(self.module_).validation_log_prob(x)


class _AcceleratedFlowNet(AccelerateMixin, _FlowNet):
    """_FlowNet run by an ``accelerate.Accelerator`` (data-parallel, mixed precision)."""

    _criteria: list[str]  # set by skorch's NeuralNet; declared for the type checker

    def _initialize_accelerator(self) -> _AcceleratedFlowNet:
        # The criterion (_MeanLoss) has no parameters: there is nothing to
        # prepare, and DDP refuses to wrap a module without any.
        criteria: list[str] = self._criteria
        self._criteria = []
        try:
            return super()._initialize_accelerator()
        finally:
            self._criteria = criteria

    def get_iterator(self, dataset: Any, training: bool = False) -> Any:
        iterator = super().get_iterator(dataset, training=training)
        if training and self.accelerator.num_processes > 1 and not getattr(self, "_initialized_alike", False):
            self._initialize_alike(iterator.first_global_batch())
        return iterator

    def _initialize_alike(self, rows: Tensor) -> None:
        """Run the first training batch of the whole world through the flow on every rank.

        Some layers initialise themselves from their first training batch
        (ActNorm's data-dependent initialisation). Each rank's first batch is
        a different shard, so they would start from different weights; one
        gradient-free pass over the same rows on every rank, the batch one
        process would have seen first, initialises them alike.
        """
        flow = _flow_of(self.module_)
        flow.train()
        with torch.no_grad():
            flow.loss(self._training_input(rows))
        self._initialized_alike = True


@contextmanager
def _recording_sigint(net: _FlowNet) -> Iterator[None]:
    """Mark ``net`` when a real SIGINT arrives (main thread only), then interrupt as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if previous == signal.SIG_IGN:
            return
        net.sigint_received = True
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _rows_and_index(dataset: Any) -> tuple[Tensor, Tensor | None]:
    """The tensor of rows behind a skorch Dataset and, for a Subset of one, the positions of its rows.

    A Subset's rows are read through its index when batches are sliced,
    never gathered into a tensor of their own: the training side of a split
    is most of the rows, and a copy of it would nearly double a fit's memory.
    """
    if isinstance(dataset, torch.utils.data.Subset):
        rows, index = _rows_and_index(dataset.dataset)
        positions = torch.as_tensor(np.asarray(dataset.indices), dtype=torch.long).to(rows.device)
        return rows, positions if index is None else index[positions]
    return dataset.X, None


def _rows_of(dataset: Any) -> Tensor:
    """The rows of a skorch Dataset or a Subset of one, as one tensor (a copy for a Subset)."""
    rows, index = _rows_and_index(dataset)
    return rows if index is None else rows[index]


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
    """One side of a split, by index; its weights rescaled to mean 1, so its loss is a weighted mean."""
    index = np.asarray(index, dtype=np.int64)
    weights = _weights_of(dataset)
    if weights is not None:
        side = weights[torch.as_tensor(index, device=weights.device)]
        # All the weights rescaled by this side's mean (a column, not a copy of the rows).
        dataset = Dataset(_rows_of(dataset), weights / side.mean())
    return torch.utils.data.Subset(dataset, cast(Any, index))


class TensorBatches:
    """Iterates mini-batches ``(X_batch, placeholder)`` sliced from one tensor.

    Used as skorch's ``iterator_train`` and ``iterator_valid``. Shuffling uses
    ``generator``, or torch's global generator (which the engine seeds), so
    runs are repeatable.

    With ``world_size > 1`` this process (``rank``) sees only its shard. In
    training every rank draws the same permutation (``generator`` is seeded
    alike on all of them), pads it by wrapping around to a multiple of
    ``world_size`` and takes every ``world_size``-th row from position
    ``rank``, in batches of ``ceil(batch_size / world_size)`` rows: together
    the ranks step through the epoch in global batches of ``batch_size`` rows,
    as one process would. Without shuffling (validation) the shards are not
    padded, so every row counts once, and each shard is cut into the same
    number of batches: skorch's DistributedHistory expects every rank to
    record the same batches.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 128,
        shuffle: bool = False,
        rank: int = 0,
        world_size: int = 1,
        generator: torch.Generator | None = None,
    ) -> None:
        self.rows, self.index = _rows_and_index(dataset)
        self.n_rows = len(self.rows) if self.index is None else len(self.index)
        self.weights = _weights_of(dataset)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.generator = generator
        self._placeholder = torch.zeros(0)

    def _take(self, positions: Tensor | slice) -> Tensor:
        """Rows at ``positions`` of this dataset (through the Subset's index, if any)."""
        return self.rows[positions] if self.index is None else self.rows[self.index[positions]]

    def _batch(self, positions: Tensor | slice) -> tuple[Tensor, Tensor]:
        # Weights ride in skorch's target slot, so _MeanLoss receives them.
        return self._take(positions), self._placeholder if self.weights is None else self.weights[positions]

    def __len__(self) -> int:
        n_rows = self.n_rows
        if self.world_size == 1:
            return math.ceil(n_rows / self.batch_size)
        if self.shuffle:
            return math.ceil(math.ceil(n_rows / self.world_size) / self._rank_batch_size)
        return self._n_valid_batches

    @property
    def _rank_batch_size(self) -> int:
        return math.ceil(self.batch_size / self.world_size)

    @property
    def _n_valid_batches(self) -> int:
        smallest_shard = self.n_rows // self.world_size
        return max(1, min(math.ceil(math.ceil(self.n_rows / self.world_size) / self.batch_size), smallest_shard))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n_rows = self.n_rows
        if self.world_size > 1:
            yield from self._shard_batches()
        elif self.shuffle:
            order = torch.randperm(n_rows, generator=self.generator).to(self.rows.device)
            for start in range(0, n_rows, self.batch_size):
                yield self._batch(order[start : start + self.batch_size])
        else:
            for start in range(0, n_rows, self.batch_size):
                yield self._batch(slice(start, start + self.batch_size))

    def first_global_batch(self) -> Tensor:
        """The rows of the epoch's first ``batch_size``-row batch over all ranks (training only)."""
        generator = None
        if self.generator is not None:
            generator = torch.Generator().set_state(self.generator.get_state())  # a peek: leaves it unchanged
        order = torch.randperm(self.n_rows, generator=generator)[: self.batch_size]
        return self._take(order.to(self.rows.device))

    def _shard_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        n_rows = self.n_rows
        if self.shuffle:
            order = torch.randperm(n_rows, generator=self.generator)
            n_padded = n_rows + (-n_rows) % self.world_size
            order = order.repeat(math.ceil(n_padded / n_rows))[:n_padded]
            shard = order[self.rank :: self.world_size].to(self.rows.device)
            size = self._rank_batch_size
            for start in range(0, len(shard), size):
                yield self._batch(shard[start : start + size])
        else:
            shard = torch.arange(self.rank, n_rows, self.world_size, device=self.rows.device)
            for indices in torch.tensor_split(shard, self._n_valid_batches):
                yield self._batch(indices)


class RowStream:
    """Training rows that arrive a chunk at a time (a table larger than memory).

    Parameters
    ----------
    read : callable
        ``read(i)`` returns chunk ``i``'s training rows as a tensor of shape
        ``(m_i, n_features)``, in the model's units, dtype and device.
    chunk_rows : sequence of int
        Training rows of each chunk (``m_i``).
    buffer_rows : int
        Rows (whole chunks) shuffled together.
    validation_rows : Tensor of shape (n_valid, n_features) or None
        Held-out rows, in memory.
    """

    def __init__(
        self, read: Any, chunk_rows: Sequence[int], buffer_rows: int, validation_rows: Tensor | None = None
    ) -> None:
        self.read = read
        self.chunk_rows = list(chunk_rows)
        self.buffer_rows = buffer_rows
        self.validation_rows = validation_rows

    def __len__(self) -> int:
        return sum(self.chunk_rows)

    def buffers(self, generator: torch.Generator | None = None) -> Iterator[Tensor]:
        """One epoch: chunks in random order, ``buffer_rows`` rows' worth at a time, each buffer shuffled."""
        for rows, order in self.shuffled_buffers(generator):
            yield rows[order]

    def shuffled_buffers(self, generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch as ``(rows, order)`` pairs: a buffer of whole chunks, unshuffled, and the order to visit it in.

        The rows are not gathered into shuffled order: a shuffled copy would
        double the buffer's memory, where a permutation costs one integer per
        row. Nothing here keeps a buffer once it was handed out.
        """
        group: list[int] = []
        size = 0
        for index in torch.randperm(len(self.chunk_rows), generator=generator).tolist():
            group.append(index)
            size += self.chunk_rows[index]
            if size >= self.buffer_rows:
                yield self._buffer(group), torch.randperm(size, generator=generator)
                group, size = [], 0
        if group:
            yield self._buffer(group), torch.randperm(size, generator=generator)

    def _buffer(self, group: list[int]) -> Tensor:
        """The rows of the chunks ``group``, read one at a time into one tensor (no list of chunks to concatenate)."""
        first = self.read(group[0])
        rows = first.new_empty((sum(self.chunk_rows[index] for index in group), *first.shape[1:]))
        rows[: len(first)] = first
        position = len(first)
        del first
        for index in group[1:]:
            chunk = self.read(index)
            rows[position : position + len(chunk)] = chunk
            position += len(chunk)
        return rows


class StreamBatches:
    """skorch ``iterator_train`` over a :class:`RowStream`: mini-batches from its shuffled buffers."""

    def __init__(self, dataset: Any, batch_size: int = 128, shuffle: bool = True, **kwargs: Any) -> None:
        self.stream: RowStream = dataset.X
        self.batch_size = batch_size
        self._placeholder = torch.zeros(0)

    def __len__(self) -> int:
        return math.ceil(len(self.stream) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for rows, order in self.stream.shuffled_buffers():
            order = order.to(rows.device)
            for start in range(0, len(rows), self.batch_size):
                # A gathered batch, not a view: a batch that skorch still
                # holds must not keep the buffer alive while the next loads.
                yield rows[order[start : start + self.batch_size]], self._placeholder
            del rows, order


class _StreamSplit:
    """skorch ``train_split`` of a RowStream: its held-out rows, fixed when the stream was built."""

    def __call__(self, dataset: Any, y: Any = None, **fit_params: Any) -> tuple[Any, Any]:
        return dataset, Dataset(dataset.X.validation_rows, None)


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
    groups : ndarray of shape (n_samples,) or None, default=None
        Group id of each row of the dataset to split, when already computed
        (:func:`duplicate_groups`); None computes it.
    """

    def __init__(self, fraction: float, random_state: int, groups: np.ndarray | None = None) -> None:
        self.fraction = fraction
        self.random_state = random_state
        self.groups = groups

    def __call__(self, dataset: Any, y: Any = None, **fit_params: Any) -> tuple[Any, Any]:
        groups = self.groups if self.groups is not None else duplicate_groups(_rows_of(dataset))
        valid = _held_out_mask(groups, self.fraction, self.random_state)
        # Kept for TrainingResult.validation_index: callers that calibrate on
        # the held-out rows (FlowClassifier's temperature) need to know them.
        self.valid_index_ = np.flatnonzero(valid)  # sorted
        return _weighted_side(dataset, np.flatnonzero(~valid)), _weighted_side(dataset, self.valid_index_)


def _held_out_mask(groups: np.ndarray, fraction: float, random_state: int) -> np.ndarray:
    """Which rows :class:`DuplicateAwareSplit` holds out, shape ``(n,)``, given each row's group id."""
    # What GroupShuffleSplit does for groups numbered 0..k-1 (a ShuffleSplit
    # of the group ids, then the rows of the chosen groups), without its
    # np.unique and np.isin over every row: several arrays of n rows each.
    splitter = ShuffleSplit(n_splits=1, test_size=fraction, random_state=random_state)
    n_groups = int(groups.max(initial=-1)) + 1
    _, valid_groups = next(splitter.split(np.empty((n_groups, 0))))
    held_out = np.zeros(n_groups, dtype=bool)
    held_out[valid_groups] = True
    return held_out[groups]


def _splits(groups: np.ndarray | None, fraction: float | None, world_size: int = 1) -> bool:
    """Whether :func:`train_model` holds rows out: enough groups on each side (and per rank)."""
    n_groups = int(groups.max()) + 1 if groups is not None and len(groups) else 0
    n_valid = math.ceil((fraction or 0.0) * n_groups)
    return n_valid >= 2 * world_size and n_groups - n_valid >= 2


def validation_index(rows: Tensor, validation_fraction: float | None, random_state: int) -> np.ndarray | None:
    """Sorted positions of the rows :func:`train_model` holds out for validation, or None without a split.

    For an in-memory, single-process call ``train_model(model, rows,
    validation_fraction=..., random_state=...)``: the same rows, known
    before training (a start computed from the data can then leave them
    out, so that it competes with the trained epochs on rows neither saw).

    Parameters
    ----------
    rows : Tensor of shape (n_samples, n_features)
        The rows exactly as they will be passed to :func:`train_model`.
    validation_fraction : float or None
    random_state : int

    Returns
    -------
    index : ndarray of shape (n_valid,) or None
    """
    if not validation_fraction:
        return None
    groups = duplicate_groups(rows)
    if not _splits(groups, validation_fraction):
        return None
    return np.flatnonzero(_held_out_mask(groups, validation_fraction, random_state))


# Values per block of a pass over all rows that needs temporaries (4 MB in
# float64): the temporaries stay that small however large the table.
_BLOCK_VALUES = 2**19


def row_blocks(n_rows: int, width: int) -> list[slice]:
    """Slices of consecutive rows covering ``n_rows`` rows of ``width`` values, about ``_BLOCK_VALUES`` values each."""
    step = max(1, _BLOCK_VALUES // max(width, 1))
    return [slice(start, start + step) for start in range(0, n_rows, step)]


_MIX_1, _MIX_2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _row_bits(rows: Tensor) -> np.ndarray:
    """The bit patterns of a block of rows, as unsigned integers on the CPU; equal rows give equal bits.

    ``+ 0`` turns -0.0 into +0.0, the one pair of equal floats with different
    bits (half precision is widened to float32, exactly).
    """
    rows = rows.detach()
    if rows.dtype not in (torch.float32, torch.float64):
        rows = rows.float()
    array = (rows + 0).cpu().numpy()
    return array.view(np.uint64 if array.dtype == np.float64 else np.uint32)


def _mix(keys: np.ndarray) -> np.ndarray:
    """A bijective 64-bit mixer (the splitmix64 finaliser), in place: every input bit moves every output bit."""
    keys ^= keys >> np.uint64(30)
    keys *= _MIX_1
    keys ^= keys >> np.uint64(27)
    keys *= _MIX_2
    keys ^= keys >> np.uint64(31)
    return keys


def _row_keys(bits: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of bit patterns (m, d), equal for equal rows."""
    keys = np.full(len(bits), 0x9E3779B97F4A7C15, dtype=np.uint64)
    for column in range(bits.shape[1]):  # a vectorised pass per column, not a loop over rows
        keys ^= bits[:, column]
        _mix(keys)
    return keys


def duplicate_groups(rows: Tensor) -> np.ndarray:
    """Group id per row, shape ``(n,)``: equal for identical rows (see DuplicateAwareSplit).

    Linear in the rows and light on memory: each row is hashed to 64 bits
    (block by block), the hashes are grouped by one sort of ``n`` integers,
    and every row is then checked equal to its group's first row, so a hash
    collision can never merge different rows (should one occur, the rows are
    grouped by an exact sort of whole rows instead). Groups are numbered in
    the lexicographic order of their rows, so the ids do not depend on the
    hash.
    """
    n_rows = len(rows)
    if n_rows == 0:
        return np.zeros(0, dtype=np.int64)
    flat = rows.detach().reshape(n_rows, -1)
    keys = np.empty(n_rows, dtype=np.uint64)
    blocks = row_blocks(n_rows, flat.shape[1])
    for block in blocks:
        keys[block] = _row_keys(_row_bits(flat[block]))
    _, first, ids = np.unique(keys, return_index=True, return_inverse=True)
    del keys
    ids = ids.reshape(-1)
    n_groups = len(first)
    first_row = torch.as_tensor(first[ids])  # each row's group representative
    for block in blocks:
        representatives = flat[first_row[block].to(flat.device)]
        if not bool((flat[block] == representatives).all()):  # a hash collision (or a NaN)
            ids = torch.unique(flat, dim=0, return_inverse=True)[1].cpu().numpy()
            n_groups = int(ids.max()) + 1
            break
    del first_row
    if n_groups < _MIN_DISTINCT_ROWS_TO_GROUP:
        return np.arange(n_rows)
    # Number the groups in the lexicographic order of their rows, as a sort
    # of whole rows (torch.unique) would: the split, and so every fit, stays
    # what it was before the grouping was hashed. Equal rows are adjacent in
    # that order, so each run of equal ids is one group.
    in_order = ids[_lexicographic_order(flat)]
    starts = np.ones(n_rows, dtype=bool)
    starts[1:] = in_order[1:] != in_order[:-1]
    rank = np.empty(n_groups, dtype=np.int64)
    rank[in_order[starts]] = np.arange(n_groups)
    return rank[ids]


def _lexicographic_order(flat: Tensor) -> np.ndarray:
    """Positions of the rows of ``flat`` (n, d) sorted lexicographically by value (first column first).

    One stable sort by the first column; only the rows that tie on it (few,
    in continuous data) are then ordered by all columns, with stable sorts
    from the last column to the first. Memory: a few values per row.
    """
    order = _sorted_by(flat, 0, torch.arange(len(flat), device=flat.device))
    if flat.shape[1] == 1:
        return order.cpu().numpy()
    first_column = flat[order, 0] + 0
    tied = torch.zeros(len(flat), dtype=torch.bool, device=flat.device)
    equal = first_column[1:] == first_column[:-1]
    tied[1:] |= equal
    tied[:-1] |= equal
    if bool(tied.any()):
        # The tied rows sit in runs of equal first values, in increasing
        # order of that value; their full order keeps that, so it fills the
        # same slots.
        subset = order[tied]
        for column in reversed(range(flat.shape[1])):
            subset = _sorted_by(flat, column, subset)
        order[tied] = subset
    return order.cpu().numpy()


def _sorted_by(flat: Tensor, column: int, order: Tensor) -> Tensor:
    """``order`` (row positions) stably sorted by the rows' values in ``column``."""
    # + 0: -0.0 and 0.0 are equal values (a radix sort would part them).
    return order[torch.sort(flat[order, column] + 0, stable=True).indices]


# How far above a standard normal's negative log-likelihood of the (standardised)
# training rows a monitored loss may lie, in nats per feature, before training
# counts as diverged. A flow starts near that Gaussian and improves on it; a
# model 20 nats per feature worse gives each row e^-20 of the density per
# feature that the Gaussian gives it: no fit, only a run that blew up (on the
# moons benchmark, silently returned models at lr >= 10 lay 40 to 1e22 nats
# per feature beyond it; see benchmarks/divergence.py).
EXPLOSION_MARGIN_PER_FEATURE = 20.0
# The first epoch's training loss (which may hold surrogate terms, e.g. a
# weighted reconstruction error) is held to a looser bound only.
_FIRST_EPOCH_MARGIN_PER_FEATURE = 1000.0


def gaussian_reference_loss(X: Tensor) -> float:
    """Mean negative log-likelihood of the rows ``X`` (n, d) under a standard normal, in nats per row."""
    rows = X.detach().reshape(len(X), -1)
    # Block by block: a float64 copy of every row would double a fit's memory.
    squares = sum(float(rows[block].double().pow(2).sum()) for block in row_blocks(len(rows), rows.shape[1]))
    return 0.5 * squares / len(rows) + 0.5 * rows.shape[1] * math.log(2 * math.pi)


class _BestWeights(Callback):
    """Keeps the weights of the best epoch and aborts when training diverges.

    Divergence is a non-finite training loss in any batch, or an epoch whose
    losses explode while staying finite: the held-out negative
    log-likelihood above ``reference + margin`` (``reference``: a standard
    normal's on the training rows), or the training loss above the larger
    of that reference and its own first-epoch value plus the margin (the
    first epoch itself must stay within a looser bound, as a training loss
    may hold surrogate terms). When training continues from earlier weights
    (``continued``), the held-out bound follows its first epoch in the same
    way.
    """

    def __init__(
        self,
        monitor: str,
        accelerator: Any = None,
        reference: float = math.inf,
        margin: float = math.inf,
        continued: bool = False,
    ) -> None:
        self.monitor = monitor
        self.accelerator = accelerator
        self.reference = reference
        self.margin = margin
        self.continued = continued

    def initialize(self) -> _BestWeights:
        self.best_loss_ = math.inf
        self.best_epoch_ = 0
        self.best_state_: dict[str, Tensor] | None = None
        self.first_train_loss_: float | None = None
        self.first_valid_loss_: float | None = None
        self.exploded_: str | None = None
        return self

    def _check_explosion(self, net: NeuralNet) -> None:
        train_loss = net.history[-1, "train_loss"]
        if self.first_train_loss_ is None:
            self.first_train_loss_ = train_loss
            first_margin = self.margin / EXPLOSION_MARGIN_PER_FEATURE * _FIRST_EPOCH_MARGIN_PER_FEATURE
            train_bound = self.reference + first_margin
        else:
            train_bound = max(self.reference, self.first_train_loss_) + self.margin
        if math.isfinite(train_loss) and train_loss > train_bound:
            self.exploded_ = f"training loss {train_loss:.4g} above the bound {train_bound:.4g}"
        if self.monitor == "valid_loss":
            valid_loss, valid_bound = net.history[-1, "valid_loss"], self.reference + self.margin
            if self.continued:
                # Training went on from earlier weights (warm start, partial_fit),
                # perhaps on other data: the start is that model, not a
                # Gaussian, so the bound follows its first epoch here too.
                if self.first_valid_loss_ is None:
                    self.first_valid_loss_ = valid_loss
                    valid_bound = self.reference + self.margin * _FIRST_EPOCH_MARGIN_PER_FEATURE / (
                        EXPLOSION_MARGIN_PER_FEATURE
                    )
                else:
                    valid_bound = max(self.reference, self.first_valid_loss_) + self.margin
            if math.isfinite(valid_loss) and valid_loss > valid_bound:
                self.exploded_ = f"held-out loss {valid_loss:.4g} above the bound {valid_bound:.4g}"
        if self.exploded_ is not None:
            raise _NonFiniteLoss

    def on_batch_end(self, net: NeuralNet, batch: Any = None, training: bool = False, **kwargs: Any) -> None:
        loss = kwargs.get("loss")
        if not training or loss is None:
            return
        non_finite = ~torch.isfinite(loss).all()
        if self.accelerator is not None and self.accelerator.num_processes > 1:
            # Every rank must leave the loop at the same step, or the others
            # wait forever in the next all-reduce: agree on "any rank".
            non_finite = self.accelerator.reduce(non_finite.float().reshape(1), reduction="sum")[0] > 0
        if non_finite:
            raise _NonFiniteLoss

    def on_epoch_end(self, net: NeuralNet, **kwargs: Any) -> None:
        self._check_explosion(net)
        loss = net.history[-1, self.monitor]
        if math.isfinite(loss) and loss < self.best_loss_:
            self.best_loss_ = loss
            self.best_epoch_ = len(net.history)
            # Tensor clones rather than one deepcopy of the whole dict: the same
            # snapshot without deepcopy's per-object bookkeeping at every
            # improving epoch (non-tensor extra state is still deep-copied).
            self.best_state_ = {
                name: value.detach().clone() if isinstance(value, Tensor) else copy.deepcopy(value)
                for name, value in _flow_of(net.module_).state_dict().items()
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
    optimizer_state : dict or None
        The optimiser's state after the last step (AdamW moments, on the
        CPU), to continue training where it stopped (``partial_fit``,
        ``warm_start``).
    validation_index : ndarray of shape (n_valid,) or None
        Sorted positions, among the training rows given, of the rows held out
        for validation (never trained on); None without a validation split
        and for streams.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    n_epochs: int = 0
    best_epoch: int = 0
    diverged: bool = False
    optimizer_state: dict | None = None
    validation_index: np.ndarray | None = None


LR_SCHEDULES = ("constant", "cosine")


def cosine_factor(epoch: int, max_epochs: int) -> float:
    """Learning-rate multiplier of epoch ``epoch`` (0-based) under a cosine decay over ``max_epochs``.

    1 in the first epoch, falling as ``(1 + cos(pi * epoch / max_epochs)) / 2``
    towards 0 at the end of training.
    """
    return 0.5 * (1.0 + math.cos(math.pi * epoch / max_epochs))


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
    X: Tensor | RowStream,
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
    accelerator: Any = None,
    optimizer_state: dict | None = None,
    lr_schedule: str = "constant",
) -> TrainingResult:
    """Train ``model`` (a :class:`~skflow.flows.core.FlowModel`) on rows ``X``.

    Parameters
    ----------
    model : FlowModel
        Trained on ``loss(x)``, validated on ``validation_log_prob(x)``;
        already on ``device``.
    X : Tensor of shape (n_samples, n_features) or RowStream
        Training rows, already on ``device`` and in the model's dtype; or a
        :class:`RowStream` of chunks too large to hold at once, whose own
        held-out rows replace ``validation_fraction``.
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
    accelerator : accelerate.Accelerator or None
        Runs the loop through it (``device`` is then the accelerator's):
        data-parallel over ``accelerator.num_processes`` ranks, each calling
        ``train_model`` with the same ``X`` and ``random_state``, and mixed
        precision as the accelerator is configured.
    optimizer_state : dict or None
        State of an earlier run's optimiser (``TrainingResult.optimizer_state``)
        to continue from; None starts a fresh one.
    lr_schedule : {"constant", "cosine"}, default="constant"
        "cosine" multiplies ``lr`` by :func:`cosine_factor` after each epoch,
        decaying it towards 0 at ``max_epochs`` (early stopping may end the
        run sooner). Each call starts the schedule afresh at ``lr``; a call
        of a single epoch (``partial_fit``) trains at ``lr``.

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
    world_size = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    streaming = isinstance(X, RowStream)
    groups: np.ndarray | None = None
    if isinstance(X, RowStream):
        if world_size > 1:
            raise ValueError("A streaming fit runs in one process; data-parallel training needs rows in memory.")
        use_validation = X.validation_rows is not None and len(X.validation_rows) >= 2
    else:
        # Grouped once here; the split reuses the groups.
        if validation_fraction:
            groups = duplicate_groups(X)
        use_validation = _splits(groups, validation_fraction, world_size)
    monitor = "valid_loss" if use_validation else "train_loss"

    # The divergence bound's reference: a standard normal's loss on the rows
    # (for a stream, on its held-out rows or else its first chunk).
    reference_rows: Tensor
    if isinstance(X, RowStream):
        reference_rows = X.validation_rows if X.validation_rows is not None else X.read(0)
    else:
        reference_rows = X
    best_weights = _BestWeights(
        monitor,
        accelerator,
        reference=gaussian_reference_loss(reference_rows),
        margin=EXPLOSION_MARGIN_PER_FEATURE * reference_rows[0].numel(),
        # Bound relative to the first epoch: after a warm start (the start is
        # that model, not a Gaussian), or for a held-out score that is no
        # log-density (e.g. the injective flow's beta-weighted objective).
        continued=optimizer_state is not None or not model.validates_a_likelihood,
    )
    engine_callbacks: list[tuple[str, Callback]] = [("best_weights", best_weights), ("share_threads", _ShareThreads())]
    # In a data-parallel run every rank runs this loop; only the main one
    # reports progress (skorch's own table goes through accelerator.print).
    say = print if accelerator is None or accelerator.is_main_process else _silent
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
                    sink=say if verbose >= 2 else _silent,
                ),
            )
        )
    if gradient_clip is not None:
        engine_callbacks.append(("gradient_clip", GradientNormClipping(gradient_clip)))
    if verbose == 1:
        engine_callbacks.append(("progress_report", ProgressReport(max_epochs, monitor, sink=say)))
    if verbose >= 3 and say is print:
        engine_callbacks.append(("progress_bar", ProgressBar()))
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}.")
    if lr_schedule == "cosine" and max_epochs > 1:
        schedule = LRScheduler(
            torch.optim.lr_scheduler.LambdaLR,
            lr_lambda=functools.partial(cosine_factor, max_epochs=max_epochs),
            step_every="epoch",
            event_name=None,
        )
        engine_callbacks.append(("lr_schedule", schedule))
    user_callbacks = [(f"user_{i}", callback) for i, callback in enumerate(callbacks or ())]

    settings: dict[str, Any] = {}
    net_class: type[_FlowNet] = _FlowNet
    module: nn.Module = model
    if accelerator is not None:
        net_class = _AcceleratedFlowNet
        module = _PerSampleLoss(model)
        settings["accelerator"] = accelerator
        if verbose < 2:
            # AccelerateMixin configures the print_log callback's sink, so the
            # callback stays and prints nowhere.
            settings["callbacks__print_log__sink"] = _silent
        if world_size > 1:
            # Every rank shuffles with the same generator, so their shards
            # partition the epoch; the global generator (noise, dequantisation)
            # gets a seed per rank, so ranks do not draw the same noise.
            generator = torch.Generator().manual_seed(random_state)
            settings.update(
                iterator_train__rank=rank,
                iterator_train__world_size=world_size,
                iterator_train__generator=generator,
                iterator_valid__rank=rank,
                iterator_valid__world_size=world_size,
                history=_distributed_history(accelerator),
            )
            torch.manual_seed(random_state + rank)
    else:
        settings["device"] = device
        if verbose < 2:
            # skorch's per-epoch table (with ANSI colours) only from verbose=2.
            settings["callbacks__print_log"] = None
    split = _train_split(streaming, use_validation, validation_fraction, random_state, groups)
    net = net_class(
        module=module,
        criterion=_MeanLoss,
        optimizer=torch.optim.AdamW,
        optimizer__weight_decay=weight_decay,
        # The fused kernel does the same AdamW update in one call instead of
        # ~10 small ops per parameter tensor: about 4x cheaper steps on CPU.
        optimizer__fused=fused_optimizer_supported(model, device),
        lr=lr,
        max_epochs=max_epochs,
        batch_size=min(batch_size, n_rows),
        iterator_train=StreamBatches if streaming else TensorBatches,
        iterator_train__shuffle=True,
        iterator_valid=TensorBatches,
        train_split=split,
        # Early stopping ends an epoch by raising from on_epoch_end, so it goes
        # last: every other callback (the user's too) sees every epoch's end.
        callbacks=sorted(engine_callbacks + user_callbacks, key=lambda item: item[0] == "early_stopping"),
        verbose=verbose,
        jitter=jitter,
        noise_std=noise_std,
        **settings,
    )
    if sample_weight is not None:
        sample_weight = (sample_weight / sample_weight.mean()).to(
            sample_weight.dtype if isinstance(X, RowStream) else X.dtype
        )
    net.initialize()
    if optimizer_state is not None:
        # The moments carry over; the hyperparameters (lr, weight decay) are
        # this run's, so set_params(lr=...) between calls takes effect.
        groups = net.optimizer_.state_dict()["param_groups"]
        net.optimizer_.load_state_dict({"state": optimizer_state["state"], "param_groups": groups})
    diverged = False
    step_macs = min(batch_size, n_rows) * sum(p.numel() for p in model.parameters())
    try:
        with torch_threads(n_threads, macs=step_macs, device=torch.device(device)):
            net.partial_fit(X, sample_weight)
    except _NonFiniteLoss:
        diverged = True
    except _Interrupted as interrupted:
        # Ctrl-C reaches the caller, as everywhere else in Python; the
        # estimator then restores the state it had before fit.
        raise interrupted.__cause__ or KeyboardInterrupt() from None
    history = _history_records(net.history)
    if world_size > 1:
        # The main rank's store dies with its net: no rank may leave while
        # another still reads the pooled history from it.
        accelerator.wait_for_everyone()
    final_optimizer_state = _to_cpu(net.optimizer_.state_dict())
    cause = best_weights.exploded_ or "non-finite loss"
    if diverged and best_weights.best_state_ is None:
        raise TrainingDivergedError(
            f"Training diverged ({cause}) before any epoch finished with a finite, plausible {monitor}. "
            f"Lower the learning rate (lr={lr}), set gradient_clip, or check the data for extreme values."
        )
    if diverged:
        warnings.warn(
            f"Training diverged in epoch {len(history)} ({cause}); restored the weights of epoch "
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
    return TrainingResult(
        history=history,
        n_epochs=len(history),
        best_epoch=best_epoch,
        diverged=diverged,
        optimizer_state=final_optimizer_state,
        validation_index=getattr(split, "valid_index_", None),
    )


def _train_split(
    streaming: bool, use_validation: bool, fraction: float | None, random_state: int, groups: np.ndarray | None
) -> Any:
    if not use_validation:
        return None
    return _StreamSplit() if streaming else DuplicateAwareSplit(float(fraction or 0.0), random_state, groups)


def _to_cpu(state: Any) -> Any:
    """A copy of an optimiser state dict with every tensor on the CPU."""
    if isinstance(state, Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {key: _to_cpu(value) for key, value in state.items()}
    if isinstance(state, list):
        return [_to_cpu(value) for value in state]
    return copy.deepcopy(state)


def _distributed_history(accelerator: Any) -> DistributedHistory:
    """A skorch DistributedHistory on a key-value store of its own.

    A fresh store per fit: DistributedHistory keys its records by epoch and
    batch only, so a second fit on a shared store would read the first fit's
    values. The main process opens a TCP store on a free port of the
    rendezvous host (``MASTER_ADDR``, which torchrun and accelerate set) and
    tells the other ranks the port through the process group.
    """
    import os

    import torch.distributed as dist

    host = os.environ.get("MASTER_ADDR", "127.0.0.1")
    world_size = accelerator.num_processes
    port = [0]
    store = None
    if accelerator.is_main_process:
        store = dist.TCPStore(host, 0, world_size, is_master=True, wait_for_workers=False)
        port = [store.port]
    dist.broadcast_object_list(port, src=0)
    if store is None:
        store = dist.TCPStore(host, port[0], world_size, is_master=False)
    return DistributedHistory(store=store, rank=accelerator.process_index, world_size=world_size)
