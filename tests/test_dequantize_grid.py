"""dequantize="auto" on grid-valued columns (integers after an affine scaling, e.g. MinMax)."""

from __future__ import annotations

import numpy as np
import pytest

from skflow import RealNVPDensity
from skflow.base import _grid_spacing


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (0.1 + np.arange(5) / 4, 0.25),  # integers 0..4 after MinMax, shifted
        (np.array([0.0, 0.2, 0.8, 1.0]), 0.2),  # a grid with missing levels
        (np.array([3.0, 3.0, 3.0]), 0.0),  # constant: nothing to spread
        (np.array([0.0, 0.3, 0.7]), 0.0),  # 0.4 is not a multiple of 0.3
        (np.random.default_rng(0).normal(size=50), 0.0),  # continuous
    ],
)
def test_grid_spacing(values, expected):
    assert _grid_spacing(values) == pytest.approx(expected)


def test_grid_spacing_survives_minmax_rounding():
    levels = np.arange(17, dtype=np.float64)
    scaled = (levels - levels.min()) / (levels.max() - levels.min())
    assert _grid_spacing(scaled) == pytest.approx(1 / 16)


def grid_data(n_rows: int = 900, seed: int = 0) -> np.ndarray:
    """Two correlated columns on a grid of spacing 1/2 (three levels each)."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, 3, size=n_rows)
    second = np.clip(first + rng.integers(-1, 2, size=n_rows), 0, 2)
    return np.column_stack([first, second]) / 2.0


def test_widths_per_mode():
    X = np.column_stack([grid_data()[:, 0], np.arange(900) % 4, np.random.default_rng(1).normal(size=900)])
    flow = RealNVPDensity(n_layers=1, hidden_dims=(4,), max_epochs=1, random_state=0)
    np.testing.assert_allclose(flow.fit(X).dequantization_widths_, [0.5, 1.0, 0.0])
    np.testing.assert_array_equal(flow.dequantized_features_, [True, True, False])
    flow.set_params(dequantize=False).fit(X)
    np.testing.assert_array_equal(flow.dequantization_widths_, [0.0, 0.0, 0.0])
    flow.set_params(dequantize=True).fit(X)
    np.testing.assert_array_equal(flow.dequantization_widths_, [1.0, 1.0, 1.0])


def test_grid_dequantisation_gives_bin_probabilities():
    # With bins of the grid's width, density x bin area at the grid points
    # approximates each cell's probability, so the nine cells sum to about 1
    # and the likelihood stays bounded; without it the flow collapses onto
    # the nine points and the density grows without bound.
    X = grid_data()
    params = {
        "n_layers": 4,
        "hidden_dims": (32,),
        "max_epochs": 80,
        "patience": None,
        "batch_size": 128,
        "random_state": 0,
    }
    grid = np.array([[a, b] for a in (0.0, 0.5, 1.0) for b in (0.0, 0.5, 1.0)])
    dequantised = RealNVPDensity(**params).fit(X)
    cell_mass = np.exp(dequantised.score_samples(grid)) * 0.5**2
    assert cell_mass.sum() == pytest.approx(1.0, abs=0.25)
    empirical = np.array([np.mean(np.all(X == point, axis=1)) for point in grid])
    np.testing.assert_allclose(cell_mass, empirical, atol=0.06)
    collapsed = RealNVPDensity(**params, dequantize=False).fit(X)
    assert collapsed.score_samples(X).mean() > dequantised.score_samples(X).mean() + 1.0
