"""``sample`` on dequantised columns (grid or continuous draws) and the
containers ``sample`` and ``inverse_transform`` return under ``set_output``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom
from sklearn import config_context

from skflow import RealNVPDensity
from tests.test_base import DiagonalGaussianDensity

TINY = {"n_layers": 2, "hidden_dims": (16,), "max_epochs": 3, "random_state": 0}


def _mixed_table(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """An integer count, a quarter-step grid and a continuous column."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "count": rng.binomial(9, 0.4, n),
            "level": 1.0 + 0.25 * rng.integers(0, 5, n),
            "reading": rng.normal(size=n),
        }
    )


@pytest.fixture(scope="module")
def fitted() -> RealNVPDensity:
    return RealNVPDensity(**TINY).fit(_mixed_table())


def test_grid_draws_are_integers_and_grid_values_within_the_training_range(fitted) -> None:
    table = _mixed_table()
    samples = fitted.sample(3000, random_state=0)
    count, level, reading = samples.T
    assert np.array_equal(count, np.round(count))
    assert count.min() >= table["count"].min() and count.max() <= table["count"].max()
    steps = (level - 1.0) / 0.25
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-9)
    assert level.min() >= 1.0 and level.max() <= 2.0
    # Continuous columns are never snapped.
    assert len(np.unique(reading)) == len(reading)


def test_grid_draws_are_the_continuous_draws_rounded_to_their_bins(fitted) -> None:
    count = _mixed_table()["count"]
    grid = fitted.sample(500, random_state=3)
    continuous = fitted.sample(500, random_state=3, dequantized="continuous")
    # The continuous draw is the dequantised density's: off the grid.
    assert not np.array_equal(continuous[:, 0], np.round(continuous[:, 0]))
    np.testing.assert_array_equal(grid[:, 0], np.clip(np.round(continuous[:, 0]), count.min(), count.max()))
    np.testing.assert_allclose(grid[:, 1], np.clip(1.0 + 0.25 * np.round((continuous[:, 1] - 1.0) / 0.25), 1.0, 2.0))
    np.testing.assert_array_equal(grid[:, 2], continuous[:, 2])


def test_grid_frequencies_match_the_fitted_mass_of_each_bin() -> None:
    # Ground truth by numerical integration of the fitted density over each
    # unit bin (end bins open to the infinite side, where clipping puts their
    # mass), compared with the frequencies of 40,000 grid draws.
    rng = np.random.default_rng(1)
    X = rng.binomial(8, 0.4, size=(2000, 1)).astype(float)
    model = DiagonalGaussianDensity(max_epochs=1, batch_size=len(X), lr=1e-6, validation_fraction=None, random_state=0)
    model.fit(X)
    edges = np.arange(X.min() + 0.5, X.max(), 1.0)  # inner bin edges
    axis = np.linspace(X.min() - 30, X.max() + 30, 200_001)
    density = np.exp(model.score_samples(axis[:, None]))
    cumulative = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(axis))])
    assert cumulative[-1] == pytest.approx(1.0, abs=1e-6)
    mass = np.diff(np.interp(np.concatenate([[axis[0]], edges, [axis[-1]]]), axis, cumulative))
    draws = model.sample(40_000, random_state=2)[:, 0]
    levels = np.arange(X.min(), X.max() + 1)
    frequency = np.array([(draws == level).mean() for level in levels])
    assert frequency.sum() == 1.0
    standard_error = np.sqrt(mass * (1 - mass) / len(draws))
    assert np.all(np.abs(frequency - mass) < 5 * standard_error + 1e-4)
    # And the model is a sensible fit: the frequencies are near the true pmf.
    np.testing.assert_allclose(frequency, binom(8, 0.4).pmf(levels), atol=0.05)


def test_unknown_dequantized_option_is_refused(fitted) -> None:
    with pytest.raises(ValueError, match="dequantized must be 'grid' or 'continuous'"):
        fitted.sample(3, dequantized="round")


def test_default_output_is_an_array_even_after_a_dataframe_fit(fitted) -> None:
    assert isinstance(fitted.sample(4, random_state=0), np.ndarray)
    assert isinstance(fitted.inverse_transform(np.zeros((2, 3))), np.ndarray)


def test_set_output_pandas_names_data_space_outputs_by_the_training_columns() -> None:
    table = _mixed_table()
    flow = RealNVPDensity(**TINY).set_output(transform="pandas").fit(table)
    samples = flow.sample(200, random_state=0)
    assert isinstance(samples, pd.DataFrame) and list(samples.columns) == ["count", "level", "reading"]
    assert samples["count"].dtype == np.int64  # an integer grid comes back as integers
    assert samples["level"].dtype == np.float64 and samples["reading"].dtype == np.float64
    np.testing.assert_array_equal(samples.to_numpy(), flow.set_output(transform="default").sample(200, random_state=0))
    flow.set_output(transform="pandas")
    # transform is named by the latent features, inverse_transform by the data's.
    latent = flow.transform(table.iloc[:5])
    assert isinstance(latent, pd.DataFrame) and list(latent.columns) == list(flow.get_feature_names_out())
    restored = flow.inverse_transform(latent)
    assert isinstance(restored, pd.DataFrame) and list(restored.columns) == ["count", "level", "reading"]
    np.testing.assert_allclose(restored.to_numpy(), table.iloc[:5].to_numpy(), atol=1e-3)
    continuous = flow.sample(5, random_state=0, dequantized="continuous")
    assert (continuous.dtypes == np.float64).all()


def test_global_transform_output_and_array_fits_use_x_names() -> None:
    X = _mixed_table().to_numpy()
    flow = RealNVPDensity(**TINY).fit(X)
    with config_context(transform_output="pandas"):
        samples = flow.sample(10, random_state=0)
        restored = flow.inverse_transform(np.zeros((3, 3)))
    assert list(samples.columns) == ["x0", "x1", "x2"] and samples["x0"].dtype == np.int64
    assert list(restored.columns) == ["x0", "x1", "x2"]
