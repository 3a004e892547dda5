"""The compact training report printed at ``verbose=1``.

skorch's own report (``verbose=2``) is a table with one row per epoch whose
best values are highlighted with ANSI colour codes: right in a terminal, but
hundreds of rows for a long fit, and escape sequences in a log file. This
report prints plain lines instead: a header, one line every few epochs
(about twenty for a whole run, and at least one every ``min_interval``
seconds when epochs are slow) with the losses, the best validation NLL so far
and the time left at most, and a closing line that says why training ended.
Plain lines need no terminal: they look the same in a terminal, a notebook
cell and a file, and nothing is redrawn.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from skorch import NeuralNet
from skorch.callbacks import Callback

__all__ = ["ProgressReport", "format_duration"]


def format_duration(seconds: float) -> str:
    """``seconds`` as ``"4.2s"``, ``"3m05s"`` or ``"2h07m"``."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class ProgressReport(Callback):
    """skorch callback: a few plain, colour-free progress lines.

    Parameters
    ----------
    max_epochs : int
        Upper bound of the run, for the epoch counter and the time left.
    monitor : {"valid_loss", "train_loss"}
        The loss whose best value is reported (the one early stopping
        watches).
    n_lines : int, default=20
        About how many progress lines a run of ``max_epochs`` epochs prints.
    min_interval : float, default=10.0
        Slow epochs: a line is printed whenever this many seconds passed
        since the previous one.
    sink : callable, default=print
        Receives each line (a str).
    """

    def __init__(
        self,
        max_epochs: int,
        monitor: str,
        *,
        n_lines: int = 20,
        min_interval: float = 10.0,
        sink: Callable[[str], Any] = print,
    ) -> None:
        self.max_epochs = max_epochs
        self.monitor = monitor
        self.n_lines = n_lines
        self.min_interval = min_interval
        self.sink = sink

    def initialize(self) -> ProgressReport:
        self.every_ = max(1, math.ceil(self.max_epochs / self.n_lines))
        self.best_loss_ = math.inf
        self.best_epoch_ = 0
        self.started_ = time.perf_counter()
        self.last_line_ = -math.inf
        self.last_printed_epoch_ = 0
        return self

    def _emit(self, line: str) -> None:
        self.sink(line)
        self.last_line_ = time.perf_counter()

    def on_train_begin(self, net: NeuralNet, X: Any = None, y: Any = None, **kwargs: Any) -> None:
        self.initialize()
        what = "valid NLL" if self.monitor == "valid_loss" else "train loss"
        self._emit(
            f"training for at most {self.max_epochs} epochs; losses per row in standardised units; "
            f"'best' is the lowest {what} so far"
        )
        # Fixed-width columns line up in a terminal, a notebook and a log file alike.
        self._emit(f"{'epoch':>11}  {'train loss':>10}  {'valid NLL':>10}  {'best (epoch)':>18}  {'elapsed':>8}  ETA")

    def on_epoch_end(self, net: NeuralNet, **kwargs: Any) -> None:
        row = net.history[-1]
        epoch = len(net.history)
        monitored = row.get(self.monitor, math.nan)
        if monitored is not None and math.isfinite(monitored) and monitored < self.best_loss_:
            self.best_loss_, self.best_epoch_ = monitored, epoch
        now = time.perf_counter()
        due = epoch == 1 or epoch % self.every_ == 0 or epoch == self.max_epochs
        if due or now - self.last_line_ >= self.min_interval:
            self._emit(self._line(row, epoch, now))
            self.last_printed_epoch_ = epoch

    def _line(self, row: dict, epoch: int, now: float) -> str:
        elapsed = now - self.started_
        # An upper bound: early stopping may end the run sooner.
        left = elapsed / epoch * (self.max_epochs - epoch)
        valid = row.get("valid_loss", math.nan)
        best = f"{self.best_loss_:.4f} ({self.best_epoch_})" if self.best_epoch_ else "-"
        counter = f"{epoch}/{self.max_epochs}"
        return (
            f"{counter:>11}  {_number(row.get('train_loss', math.nan))}  {_number(valid)}  {best:>18}  "
            f"{format_duration(elapsed):>8}  <= {format_duration(left)}"
        )

    def on_train_end(self, net: NeuralNet, X: Any = None, y: Any = None, **kwargs: Any) -> None:
        epochs = len(net.history)
        if epochs == 0:
            return
        if epochs != self.last_printed_epoch_:
            self._emit(self._line(net.history[-1], epochs, time.perf_counter()))
        stopper = dict(net.callbacks_).get("early_stopping")
        if epochs >= self.max_epochs:
            reason = f"ran all {self.max_epochs} epochs"
        elif stopper is not None and getattr(stopper, "misses_", 0) >= stopper.patience:
            reason = f"stopped at epoch {epochs}: no improvement in {stopper.patience} epochs"
        else:
            reason = f"stopped at epoch {epochs}"
        what = "valid NLL" if self.monitor == "valid_loss" else "train loss"
        best = (
            f"best {what} {self.best_loss_:.4f} at epoch {self.best_epoch_}" if self.best_epoch_ else "no finite loss"
        )
        self._emit(f"{reason}; {best}; {format_duration(time.perf_counter() - self.started_)}")


def _number(value: float | None) -> str:
    return f"{value:>10.4f}" if value is not None and math.isfinite(value) else f"{'-':>10}"
