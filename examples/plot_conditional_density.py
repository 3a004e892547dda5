"""Probabilistic regression: a conditional flow beside a Gaussian regressor
========================================================================

:class:`skflow.FlowRegressor` fits the whole conditional law ``p(y | x)``
with a normalizing flow whose conditioners see ``x``. Here ``y`` given ``x``
is bimodal for some ``x`` (like Old Faithful's eruption times given the
waiting time) and its spread changes with ``x`` (like the motorcycle-crash
accelerations): a Gaussian process regressor, whose predictive law is one
Gaussian per ``x``, can only spread one bump over both modes.

The figure shows, for each model, the conditional density ``p(y | x)`` as a
heat map (each column is a density in ``y``), the training data, draws from
the model at a few ``x`` and its central 90% interval. The script prints the
held-out mean log-likelihood of both models (nats, higher is better).

Data: synthetic (numpy), so the example runs anywhere.
Output: ``examples/output/conditional_density.png`` (``..._fast.png`` in fast
mode). Set ``SKFLOW_EXAMPLES_FAST=1`` for a short smoke run (few epochs: the
flow is then rough).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import norm
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

from skflow import FlowRegressor, NeuralSplineDensity

FAST = os.environ.get("SKFLOW_EXAMPLES_FAST") == "1"
# sys.argv[0] is this script's path, also where sphinx-gallery runs it for the docs.
OUTPUT = Path(sys.argv[0]).resolve().parent / "output" / f"conditional_density{'_fast' if FAST else ''}.png"


# %%
# Data: two branches that split apart as x grows, with a spread that grows too.
def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 4, n)
    branch = rng.random(n) < 0.4
    centre = np.where(branch, 1.0 + 0.9 * x, 1.0 - 0.2 * x)
    y = centre + (0.15 + 0.12 * x) * rng.normal(size=n)
    return x[:, None], y


X, y = make_data(300 if FAST else 800, seed=0)
X_test, y_test = make_data(500, seed=1)

# %%
# Fit both models.
flow = NeuralSplineDensity(
    n_layers=3, hidden_dims=(64, 64), max_epochs=20 if FAST else 300, patience=30, random_state=0
)
regressor = FlowRegressor(flow=flow, n_predict_samples=200 if FAST else 1000).fit(X, y)
kernel = ConstantKernel() * RBF() + WhiteKernel()
gp = GaussianProcessRegressor(kernel, normalize_y=True, random_state=0).fit(X, y)
gp_mean, gp_sd = gp.predict(X_test, return_std=True)
print(
    f"held-out mean log p(y | x): flow {regressor.score(X_test, y_test):.3f}, "
    f"Gaussian process {norm.logpdf(y_test, gp_mean, gp_sd).mean():.3f}"
)

# %%
# Conditional densities on a grid, draws and 90% intervals.
xs = np.linspace(0, 4, 80 if FAST else 160)
ys = np.linspace(y.min() - 1, y.max() + 1, 80 if FAST else 200)
grid_x = np.repeat(xs, len(ys))[:, None]
grid_y = np.tile(ys, len(xs))
flow_density = np.exp(regressor.score_samples(grid_x, grid_y)).reshape(len(xs), len(ys)).T
mean, sd = gp.predict(xs[:, None], return_std=True)
gp_density = norm.pdf(ys[:, None], mean[None, :], sd[None, :])

draw_x = np.linspace(0.25, 3.75, 8)[:, None]
flow_draws = regressor.sample_y(draw_x, 40, random_state=0)
gp_draws = gp.sample_y(draw_x, 40, random_state=0)
flow_interval = regressor.predict_interval(xs[:, None], alpha=0.1)
gp_interval = np.column_stack([mean - 1.645 * sd, mean + 1.645 * sd])

figure, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
panels = [
    ("FlowRegressor (spline flow)", flow_density, flow_draws, flow_interval),
    ("GaussianProcessRegressor", gp_density, gp_draws, gp_interval),
]
for axis, (title, density, draws, interval) in zip(axes, panels, strict=True):
    axis.pcolormesh(xs, ys, density, shading="auto", cmap="magma")
    axis.scatter(X[:, 0], y, s=4, color="white", alpha=0.5, label="training data")
    axis.scatter(np.repeat(draw_x[:, 0], draws.shape[1]), draws.ravel(), s=6, color="cyan", label="draws")
    axis.plot(xs, interval[:, 0], color="lime", lw=1.5, label="90% interval")
    axis.plot(xs, interval[:, 1], color="lime", lw=1.5)
    axis.set_title(title)
    axis.set_xlabel("x")
    axis.set_ylim(ys[0], ys[-1])
axes[0].set_ylabel("y")
axes[0].legend(loc="upper left", fontsize=8)
figure.tight_layout()
OUTPUT.parent.mkdir(parents=True, exist_ok=True)
figure.savefig(OUTPUT, dpi=100)
print(f"saved {OUTPUT}")
