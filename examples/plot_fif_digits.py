"""Dimensionality reduction of sklearn's digits with a free-form injective flow, beside PCA
========================================================================================

Left: the 2-component embeddings of the held-out digits (FIF and PCA),
coloured by class. Right: held-out digits and their reconstructions from 8
components by PCA and by FIF. The titles give held-out reconstruction MSE
per pixel and mean log-likelihood (FIF: its full-D density, digits
dequantised during training; PCA: probabilistic PCA's ``score``).

Set ``SKFLOW_EXAMPLES_FAST=1`` for a quick run. Writes
``examples/output/fif_digits.png``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split

from skflow import InjectiveFlowEstimator

FAST = os.environ.get("SKFLOW_EXAMPLES_FAST") == "1"
# sys.argv[0] is this script's path, also where sphinx-gallery runs it for the docs.
OUTPUT = Path(sys.argv[0]).resolve().parent / "output"


def fit_both(X_train: np.ndarray, n_components: int) -> tuple[InjectiveFlowEstimator, PCA]:
    fif = InjectiveFlowEstimator(
        n_components=n_components, max_epochs=30 if FAST else 200, batch_size=64, patience=30, random_state=0
    ).fit(X_train)
    return fif, PCA(n_components=n_components).fit(X_train)


def summary(fif: InjectiveFlowEstimator, pca: PCA, X_test: np.ndarray) -> tuple[str, str]:
    pca_mse = ((X_test - pca.inverse_transform(pca.transform(X_test))) ** 2).mean()
    fif_mse = fif.reconstruction_error(X_test).mean() / X_test.shape[1]
    return (
        f"MSE {fif_mse:.2f}, loglik {fif.score(X_test):.1f}",
        f"MSE {pca_mse:.2f}, loglik {pca.score(X_test):.1f}",
    )


def main() -> None:
    X, y = load_digits(return_X_y=True)
    X_train, X_test, _, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    figure = plt.figure(figsize=(15, 6))
    grid = figure.add_gridspec(2, 4, width_ratios=[1, 1, 0.05, 1.4])

    fif2, pca2 = fit_both(X_train, 2)
    fif_text, pca_text = summary(fif2, pca2, X_test)
    for row, (name, embedding, text) in enumerate(
        [("FIF", fif2.transform(X_test), fif_text), ("PCA", pca2.transform(X_test), pca_text)]
    ):
        axis = figure.add_subplot(grid[row, 0:2])
        points = axis.scatter(embedding[:, 0], embedding[:, 1], c=y_test, cmap="tab10", s=6)
        axis.set_title(f"{name}, 2 components: {text}", fontsize=9)
    figure.colorbar(points, cax=figure.add_subplot(grid[:, 2]), label="digit")

    fif8, pca8 = fit_both(X_train, 8)
    fif_text, pca_text = summary(fif8, pca8, X_test)
    shown = X_test[:10]
    rows = [shown, pca8.inverse_transform(pca8.transform(shown)), fif8.inverse_transform(fif8.transform(shown))]
    # A one-pixel white margin around each 8x8 image keeps neighbours apart.
    mosaic = np.block([[np.pad(image.reshape(8, 8), 1) for image in images] for images in rows])
    axis = figure.add_subplot(grid[:, 3])
    axis.imshow(mosaic, cmap="gray_r", vmin=0, vmax=16)
    axis.set_yticks([4.5, 14.5, 24.5], ["held-out", "PCA-8", "FIF-8"])
    axis.set_xticks([])
    axis.set_title(f"8 components\nFIF: {fif_text}\nPCA: {pca_text}", fontsize=9)
    fif2_text, pca2_text = summary(fif2, pca2, X_test)
    print(f"2 components  FIF {fif2_text} | PCA {pca2_text}")
    print(f"8 components  FIF {fif_text} | PCA {pca_text}")
    figure.tight_layout()
    OUTPUT.mkdir(parents=True, exist_ok=True)
    figure.savefig(OUTPUT / "fif_digits.png", dpi=110)


if __name__ == "__main__":
    main()
