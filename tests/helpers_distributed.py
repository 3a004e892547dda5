"""Data and settings shared by the data-parallel test and the script it launches."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_moons

SETTINGS = {
    "n_layers": 4,
    "hidden_dims": (32, 32),
    "max_epochs": 20,
    "batch_size": 128,
    "lr": 3e-3,
    "patience": 5,
    "random_state": 0,
    "device": "cpu",
}


def training_rows() -> np.ndarray:
    return make_moons(3000, noise=0.1, random_state=0)[0]


def held_out_rows() -> np.ndarray:
    return make_moons(2000, noise=0.1, random_state=1)[0]
