"""Streaming fits over tables read chunk by chunk (skflow/streaming.py, RowStream in skflow/training.py).

Ground truth: the table itself (what the sources read must be its rows), the
column statistics NumPy computes on the whole table, and the held-out
log-likelihood of the same model fitted with every row in memory.
"""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from skflow import InjectiveFlowEstimator, RealNVPDensity
from skflow.streaming import MemmapSource, ParquetSource
from skflow.training import RowStream

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

ROOT = Path(__file__).resolve().parents[1]


def _curved_blobs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(-2, 0.5, (n // 2, 2)), rng.normal(2, 0.5, (n - n // 2, 2))])
    X[:, 1] += 0.5 * X[:, 0] ** 2
    return X[rng.permutation(n)]


def _write_folder(folder: Path, X: np.ndarray, row_group_size: int) -> None:
    folder.mkdir()
    half = len(X) // 2
    for index, part in enumerate([X[:half], X[half:]]):
        table = pa.table({"a": part[:, 0], "b": part[:, 1], "k": np.round(part[:, 0]).astype(np.int32)})
        pq.write_table(table, folder / f"part{index}.parquet", row_group_size=row_group_size)


def test_parquet_folder_is_read_row_group_by_row_group(tmp_path: Path) -> None:
    X = _curved_blobs(1000, seed=0)
    _write_folder(tmp_path / "table", X, row_group_size=128)
    source = ParquetSource(tmp_path / "table")
    assert source.n_rows == 1000 and source.n_features == 3 and list(source.feature_names) == ["a", "b", "k"]
    assert source.n_chunks == 8  # 500 rows per file in groups of 128: 4 groups each
    rows = np.concatenate([source.read_chunk(index) for index in range(source.n_chunks)])
    np.testing.assert_array_equal(rows[:, :2], X)
    np.testing.assert_array_equal(rows[:, 2], np.round(X[:, 0]))


def test_reading_a_parquet_stream_keeps_no_memory_per_chunk(tmp_path: Path) -> None:
    # pyarrow counts the bytes its memory pool holds. A reader kept open per
    # file held on to part of every row group it had read (here 4.7 MB after
    # one pass, growing chunk by chunk), so memory grew with the table;
    # chunks dropped after use must leave less than one chunk behind.
    for part in range(4):
        rows = np.random.default_rng(part).normal(size=(100_000, 10)).astype(np.float32)
        table = pa.table({f"x{j}": rows[:, j] for j in range(10)})
        pq.write_table(table, tmp_path / f"part{part}.parquet", row_group_size=20_000)
    del table
    source = ParquetSource(tmp_path)
    before = pa.total_allocated_bytes()
    for index in range(source.n_chunks):
        source.read_chunk(index)
    gc.collect()  # pyarrow objects caught in reference cycles are not held, only late
    assert source.n_chunks == 20
    assert pa.total_allocated_bytes() - before < 20_000 * 10 * 4, "memory held after reading every chunk"


def test_streaming_fit_statistics_equal_the_whole_tables(tmp_path: Path) -> None:
    X = _curved_blobs(1000, seed=1) + 1e6  # a large offset: sums must not cancel
    _write_folder(tmp_path / "table", X, row_group_size=100)
    estimator = RealNVPDensity(n_layers=1, hidden_dims=(8,), max_epochs=1, random_state=0)
    estimator.fit(ParquetSource(tmp_path / "table", buffer_rows=300))
    whole = np.column_stack([X, np.round(X[:, 0])])
    np.testing.assert_allclose(estimator.mean_, whole.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(estimator.scale_, whole.std(axis=0), rtol=1e-9)
    np.testing.assert_array_equal(estimator.dequantized_features_, [False, False, True])
    np.testing.assert_array_equal(estimator.data_min_, whole.min(axis=0))
    assert list(estimator.feature_names_in_) == ["a", "b", "k"] and estimator.n_features_in_ == 3
    assert np.isfinite(estimator.history_[0]["valid_loss"])


def test_each_epoch_visits_every_training_row_once_in_mixed_buffers() -> None:
    sizes = [7, 3, 10, 5, 9]
    offsets = np.cumsum([0, *sizes])
    stream = RowStream(
        read=lambda index: torch.arange(offsets[index], offsets[index + 1], dtype=torch.float32).reshape(-1, 1),
        chunk_rows=sizes,
        buffer_rows=12,
    )
    buffers = list(stream.buffers(torch.Generator().manual_seed(0)))
    assert sorted(torch.cat(buffers).flatten().tolist()) == list(range(34))
    assert all(len(buffer) >= 12 for buffer in buffers[:-1])
    # Rows of different chunks share a buffer, in shuffled order.
    first = buffers[0].flatten()
    assert len({int(np.searchsorted(offsets, value, side="right")) for value in first.tolist()}) >= 2
    assert not torch.equal(first, first.sort().values)


# Held-out log-likelihood (nats per row) within which a streaming fit (file in
# random row order, 1,000-row chunks, 8,000-row buffers) matches the in-memory
# fit of the same model: measured 0.012 on 40,000 rows, 15 epochs.
TOLERANCE_NATS = 0.06


def test_memmap_streaming_fit_matches_an_in_memory_fit(tmp_path: Path) -> None:
    X, test = _curved_blobs(12_000, seed=2), _curved_blobs(4000, seed=3)
    np.save(tmp_path / "rows.npy", X)
    settings = {"n_layers": 4, "hidden_dims": (32, 32), "max_epochs": 10, "patience": 5, "random_state": 0}
    in_memory = RealNVPDensity(**settings).fit(X)
    streamed = RealNVPDensity(**settings).fit(MemmapSource(tmp_path / "rows.npy", chunk_rows=500, buffer_rows=4000))
    assert abs(streamed.score(test) - in_memory.score(test)) < TOLERANCE_NATS


def test_streaming_fit_refusals(tmp_path: Path) -> None:
    folder = tmp_path / "text"
    folder.mkdir()
    pq.write_table(pa.table({"a": [1.0, 2.0], "name": ["x", "y"]}), folder / "part.parquet")
    with pytest.raises(ValueError, match="name are not"):
        ParquetSource(folder)
    source = ParquetSource(folder, columns=["a"])
    with pytest.raises(ValueError, match="does not support a streaming fit"):
        InjectiveFlowEstimator().fit(source)
    with pytest.raises(ValueError, match="sample_weight is not supported"):
        RealNVPDensity().fit(source, sample_weight=np.ones(2))
    with pytest.raises(FileNotFoundError):
        ParquetSource(tmp_path / "missing")


def test_cli_fits_a_parquet_folder(tmp_path: Path) -> None:
    _write_folder(tmp_path / "table", _curved_blobs(600, seed=4), row_group_size=100)
    model = tmp_path / "model.skflow"
    command = [sys.executable, "-m", "skflow.cli", "fit", str(tmp_path / "table"), "--model", "realnvp"]
    command += ["--param", "max_epochs=2", "--param", "n_layers=1", "--out", str(model), "--quiet"]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "streamed from 6 row groups" in completed.stderr
    scored = subprocess.run(
        [sys.executable, "-m", "skflow.cli", "score", str(tmp_path / "table" / "part0.parquet"), "--model", str(model)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=300,
    )
    assert scored.returncode == 0, scored.stderr
    scores = np.loadtxt(scored.stdout.splitlines()[1:], dtype=float)
    assert len(scores) == 300 and np.isfinite(scores).all()


def test_scoring_in_float32_blocks_gives_the_scores_of_a_whole_float64_copy() -> None:
    # score_samples standardises block by block into float32 (no float64 copy of
    # the input); the model sees exactly the values it saw from a float64 copy.
    X = _curved_blobs(70_000, seed=5)  # more than one 65,536-row block
    estimator = RealNVPDensity(n_layers=1, hidden_dims=(8,), max_epochs=1, random_state=0).fit(X[:2000])
    reference = estimator._map_rows(estimator.model_.log_prob, estimator._standardised(X))
    expected = reference - np.log(estimator.scale_).sum()
    np.testing.assert_array_equal(estimator.score_samples(X), expected)
