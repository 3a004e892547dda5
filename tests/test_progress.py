"""The compact training report of ``verbose=1`` (skflow.progress), checked
against the fitted estimator's own record, ``history_``."""

from __future__ import annotations

import re

import numpy as np
import pytest

from skflow import RealNVPDensity
from skflow.progress import ProgressReport, format_duration
from tests.helpers import correlated_data

SMALL = {"n_layers": 2, "hidden_dims": (8,), "batch_size": 64, "random_state": 0}
LINE = re.compile(r"^\s+(\d+)/(\d+)\s+(\S+)\s+(\S+)\s+(\S+) \((\d+)\)\s+(\S+)\s+<= (\S+)$")


def _epoch_lines(output: str) -> list[tuple]:
    return [match.groups() for match in map(LINE.match, output.splitlines()) if match]


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return correlated_data(300)


def test_verbose_one_is_plain_short_and_agrees_with_history(data, capsys) -> None:
    flow = RealNVPDensity(**SMALL, max_epochs=200, patience=8, lr=3e-3, verbose=1).fit(data)
    output = capsys.readouterr().out
    assert "\x1b" not in output and "\r" not in output  # no ANSI codes, no redrawn lines
    lines = _epoch_lines(output)
    epochs = [int(line[0]) for line in lines]
    # Early stopping ended the run: every tenth epoch (200 / 20 lines), plus the first and the last.
    assert flow.n_iter_ < 200
    expected = {1, *range(10, flow.n_iter_ + 1, 10), flow.n_iter_}
    # (A line also appears after 10 s without one: only on a very loaded machine here.)
    assert expected <= set(epochs) and len(epochs) < 25
    valid = np.array([row["valid_loss"] for row in flow.history_])
    train = np.array([row["train_loss"] for row in flow.history_])
    for epoch, total, train_text, valid_text, best_text, best_epoch, _elapsed, _left in lines:
        epoch, best_epoch = int(epoch), int(best_epoch)
        assert int(total) == 200
        assert float(train_text) == pytest.approx(train[epoch - 1], abs=6e-5)
        assert float(valid_text) == pytest.approx(valid[epoch - 1], abs=6e-5)
        assert best_epoch == 1 + int(np.argmin(valid[:epoch]))
        assert float(best_text) == pytest.approx(valid[:epoch].min(), abs=6e-5)
    closing = output.strip().splitlines()[-1]
    assert closing.startswith(f"stopped at epoch {flow.n_iter_}: no improvement in 8 epochs")
    assert f"best valid NLL {valid.min():.4f} at epoch {flow.best_epoch_}" in closing


def test_verbose_one_without_validation_reports_the_training_loss(data, capsys) -> None:
    RealNVPDensity(**SMALL, max_epochs=4, validation_fraction=None, verbose=1).fit(data)
    output = capsys.readouterr().out
    assert "lowest train loss so far" in output
    assert [int(line[0]) for line in _epoch_lines(output)] == [1, 2, 3, 4]
    assert all(line[3] == "-" for line in _epoch_lines(output))  # no validation NLL to show
    assert "ran all 4 epochs; best train loss" in output.strip().splitlines()[-1]


def test_verbose_two_keeps_skorchs_table(data, capsys) -> None:
    RealNVPDensity(**SMALL, max_epochs=30, patience=2, lr=3e-2, verbose=2).fit(data)
    output = capsys.readouterr().out
    assert "train_loss" in output and "valid_loss" in output and "Stopping since valid_loss" in output
    assert not _epoch_lines(output)


def test_slow_epochs_get_a_line_each(data) -> None:
    # min_interval=0: every epoch counts as slow, so each one is reported.
    lines: list[str] = []
    report = ProgressReport(9, "valid_loss", min_interval=0.0, sink=lines.append)
    RealNVPDensity(**SMALL, max_epochs=9, callbacks=[report]).fit(data)
    assert [int(line[0]) for line in _epoch_lines("\n".join(lines))] == list(range(1, 10))


@pytest.mark.parametrize(
    ("seconds", "text"), [(4.24, "4.2s"), (59.94, "59.9s"), (185, "3m05s"), (7620, "2h07m"), (float("nan"), "?")]
)
def test_durations_are_short_and_readable(seconds, text) -> None:
    assert format_duration(seconds) == text
