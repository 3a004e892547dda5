"""A fit's passes over all rows: exact results block by block, and no copies of the input.

The set-up of a fit (standardisation, integer and grid detection, grouping of
duplicate rows, the validation split) works on blocks of rows, so its
temporaries stay small however large the table. These tests shrink the
blocks (``skflow.training._BLOCK_VALUES``) so that small arrays span many of
them, and check each pass against a direct computation over all rows.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from sklearn.model_selection import GroupShuffleSplit
from skorch.dataset import Dataset

import skflow.training
from skflow import RealNVPDensity
from skflow.base import _MAX_GRID_LEVELS, _grid_spacing, _integer_valued, _standardisation, _standardised_rows
from skflow.training import DuplicateAwareSplit, _rows_and_index, duplicate_groups, gaussian_reference_loss


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(skflow.training, "_BLOCK_VALUES", 64)


def _groups_by_sorting(rows: torch.Tensor) -> np.ndarray:
    """Ground truth: the distinct rows numbered in sorted order, by a sort of whole rows (torch.unique)."""
    return torch.unique(rows.double() + 0.0, dim=0, return_inverse=True)[1].numpy()


def _same_partition(ids: np.ndarray, rows: torch.Tensor) -> bool:
    """Whether ``ids`` group exactly the equal rows, checked one Python tuple at a time."""
    seen: dict[tuple, int] = {}
    return all(seen.setdefault(tuple(row), group) == group for row, group in zip(rows.double().tolist(), ids))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize(("n_rows", "n_columns", "n_levels"), [(3000, 2, 40), (2000, 3, 10), (500, 4, 10**6)])
def test_duplicate_groups_are_the_distinct_rows(small_blocks, dtype, n_rows, n_columns, n_levels) -> None:
    rng = np.random.default_rng(n_rows)
    rows = torch.as_tensor(rng.integers(0, n_levels, size=(n_rows, n_columns)).astype(np.float32)).to(dtype)
    rows[::7] *= -1  # -0.0 and 0.0 are the same value, so the same row
    expected = _groups_by_sorting(rows)
    assert expected.max() + 1 >= 50, "enough distinct rows to be grouped"
    ids = duplicate_groups(rows)
    np.testing.assert_array_equal(ids, expected)
    assert _same_partition(ids, rows) and len(np.unique(ids)) == len({tuple(r) for r in rows.double().tolist()})


def test_duplicate_groups_survive_hash_collisions(small_blocks, monkeypatch) -> None:
    # Every row hashed alike: the check against each group's first row finds
    # the collision and the exact grouping takes over.
    monkeypatch.setattr(skflow.training, "_row_keys", lambda bits: np.zeros(len(bits), dtype=np.uint64))
    rows = torch.as_tensor(np.random.default_rng(0).integers(0, 20, size=(2000, 2)), dtype=torch.float32)
    np.testing.assert_array_equal(duplicate_groups(rows), _groups_by_sorting(rows))


def test_duplicate_groups_and_split_on_cuda_match_the_cpu(small_blocks) -> None:
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine; the grouping of rows on a GPU runs only there.")
    rows = torch.as_tensor(np.random.default_rng(0).integers(0, 30, size=(3000, 2)), dtype=torch.float32)
    np.testing.assert_array_equal(duplicate_groups(rows.cuda()), duplicate_groups(rows))
    for cpu_side, cuda_side in zip(
        DuplicateAwareSplit(0.2, 0)(Dataset(rows, None)), DuplicateAwareSplit(0.2, 0)(Dataset(rows.cuda(), None))
    ):
        base, index = _rows_and_index(cuda_side)
        assert base.is_cuda and index.is_cuda
        torch.testing.assert_close(base[index].cpu(), _rows_and_index(cpu_side)[0][_rows_and_index(cpu_side)[1]])


def test_few_distinct_rows_are_each_their_own_group() -> None:
    rows = torch.as_tensor(np.random.default_rng(0).integers(0, 3, size=(400, 2)), dtype=torch.float32)
    np.testing.assert_array_equal(duplicate_groups(rows), np.arange(400))


@pytest.mark.parametrize(("fraction", "seed"), [(0.1, 0), (0.5, 3), (0.25, 7)])
def test_duplicate_aware_split_is_group_shuffle_split(fraction, seed) -> None:
    rows = torch.as_tensor(np.random.default_rng(seed).integers(0, 30, size=(3000, 2)), dtype=torch.float32)
    groups = _groups_by_sorting(rows)
    train, valid = next(GroupShuffleSplit(test_size=fraction, random_state=seed).split(groups, groups=groups))
    got_train, got_valid = DuplicateAwareSplit(fraction, seed)(Dataset(rows, None))
    # The sides are indices into the rows, not copies of them.
    for side, expected in ((got_train, train), (got_valid, valid)):
        base, index = _rows_and_index(side)
        assert base is rows
        np.testing.assert_array_equal(index.numpy(), expected)


def test_blockwise_passes_match_whole_array_formulas(small_blocks) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(loc=1e6, scale=3.0, size=(1001, 3))
    weights = rng.uniform(0.1, 2.0, size=1001)
    mean, scale = _standardisation(X)
    np.testing.assert_allclose(mean, X.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(scale, X.std(axis=0), rtol=1e-9)
    mean, scale = _standardisation(X, weights)
    expected_mean = (weights @ X) / weights.sum()
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-14)
    np.testing.assert_allclose(scale, np.sqrt(weights @ (X - expected_mean) ** 2 / weights.sum()), rtol=1e-9)
    rows = _standardised_rows(X, mean, scale, np.dtype(np.float32))
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, ((X - mean) / scale).astype(np.float32))
    reference = gaussian_reference_loss(torch.as_tensor(rows))
    assert reference == pytest.approx(
        0.5 * np.mean((rows.astype(np.float64) ** 2).sum(axis=1)) + 1.5 * np.log(2 * np.pi)
    )


def test_integer_check_sees_every_block(small_blocks) -> None:
    X = np.tile([3.0, 2.0, 0.5], (500, 1))
    X[-1, 0] = 3.25  # only the last block breaks column 0
    X[0, 2] = 1.0  # column 2 breaks in the first block already
    np.testing.assert_array_equal(_integer_valued(X), [False, True, False])


def test_grid_detection_at_the_level_limit() -> None:
    # A column longer than the prefix _grid_spacing looks at first: the
    # answer must be the one the whole column gives.
    levels = np.arange(_MAX_GRID_LEVELS + 1) * 0.25
    on_grid = np.concatenate([levels, levels[::-1], levels])
    assert _grid_spacing(on_grid) == pytest.approx(0.25)
    too_many = np.concatenate([on_grid, [on_grid.max() + 0.25]])
    assert _grid_spacing(too_many) == 0.0
    continuous = np.random.default_rng(0).normal(size=3 * (_MAX_GRID_LEVELS + 1))
    assert _grid_spacing(continuous) == 0.0


def test_fit_allocates_no_copy_of_the_input(monkeypatch) -> None:
    # numpy reports its allocations to tracemalloc (torch's own do not
    # count, and the one float32 copy of the rows is made by numpy). Before
    # the block-wise passes, the standardisation alone allocated two float64
    # copies of X (2x); now the float32 rows (0.5x) and a few integers per
    # row remain.
    monkeypatch.setattr(skflow.training, "_BLOCK_VALUES", 2**16)  # blocks of 0.5 MB, 1/32 of X
    X = np.random.default_rng(0).normal(size=(40_000, 50))
    estimator = RealNVPDensity(n_layers=1, hidden_dims=(8,), batch_size=5_000, max_epochs=1, random_state=0)
    estimator.fit(X[:200])  # one-time imports and caches out of the way
    tracemalloc.start()
    try:
        estimator.fit(X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.0 * X.nbytes, f"fit allocated {peak / X.nbytes:.2f}x the input's size at its peak"
