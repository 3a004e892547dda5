"""Glow on scikit-learn's 8x8 digits: samples next to real digits
==============================================================

Fits :class:`skflow.GlowDensity` in image mode (``image_shape=(1, 8, 8)``,
Glow's multiscale architecture) to 80% of the digits, reports held-out bits
per dimension, and saves a PNG with three panels: real held-out digits,
samples at temperature 1 (``glow.sample``) and samples at temperature 0.7
(latent codes drawn from ``N(0, 0.7^2 I)`` and decoded with
``glow.inverse_transform``, as in the Glow paper).

Output: ``examples/output/glow_digits_samples.png`` (``..._fast.png`` in fast mode).
Set ``SKFLOW_EXAMPLES_FAST=1`` to train a tiny model for two epochs on 300
images only (smoke test; the samples are then noise).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from skflow import GlowDensity

FAST = os.environ.get("SKFLOW_EXAMPLES_FAST", "") not in ("", "0")
# The smoke test writes its own file, so it never overwrites the real figure.
# sys.argv[0] is this script's path, also where sphinx-gallery runs it for the docs.
OUTPUT = Path(sys.argv[0]).resolve().parent / "output" / f"glow_digits_samples{'_fast' if FAST else ''}.png"
N_SHOWN = 36  # a 6 x 6 grid per panel


def image_grid(rows: np.ndarray, n_columns: int = 6) -> np.ndarray:
    """Tile flattened 8x8 images, shape (n, 64), into one (8r + r - 1, 8c + c - 1) array."""
    images = np.clip(rows, 0, 16).reshape(-1, 8, 8)
    n_rows = int(np.ceil(len(images) / n_columns))
    grid = np.full((n_rows * 9 - 1, n_columns * 9 - 1), np.nan)
    for index, image in enumerate(images):
        row, column = divmod(index, n_columns)
        grid[row * 9 : row * 9 + 8, column * 9 : column * 9 + 8] = image
    return grid


def main() -> None:
    X = load_digits().data
    X_train, X_test = train_test_split(X, test_size=0.2, random_state=0)
    if FAST:
        X_train = X_train[:300]
    glow = GlowDensity(
        image_shape=(1, 8, 8),
        n_intensity_levels=17,
        n_levels=2,
        n_steps=2 if FAST else 4,
        hidden_channels=16 if FAST else 64,
        max_epochs=2 if FAST else 150,
        patience=15,
        batch_size=64,
        random_state=0,
    )
    start = time.perf_counter()
    glow.fit(X_train)
    seconds = time.perf_counter() - start
    print(
        f"GlowDensity: {glow.n_iter_} epochs in {seconds:.0f} s (best epoch {glow.best_epoch_}); "
        f"held-out {glow.bits_per_dim(X_test):.3f} bits/dim"
    )

    samples = glow.sample(N_SHOWN, random_state=1)
    rng = np.random.default_rng(2)
    cooled = glow.inverse_transform(0.7 * rng.standard_normal((N_SHOWN, X.shape[1])))

    panels = [
        ("Held-out digits", X_test[:N_SHOWN]),
        ("Glow samples, T = 1", samples),
        ("Glow samples, T = 0.7", cooled),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for axis, (title, rows) in zip(axes, panels):
        axis.imshow(image_grid(rows), cmap="gray_r", vmin=0, vmax=16)
        axis.set_title(title)
        axis.axis("off")
    figure.suptitle(f"GlowDensity on 8x8 digits: {glow.bits_per_dim(X_test):.2f} bits/dim held out")
    figure.tight_layout()
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(OUTPUT, dpi=100)
    print(f"saved {OUTPUT}")


if __name__ == "__main__":
    main()
