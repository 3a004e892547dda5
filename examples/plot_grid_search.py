"""Tuning a flow's hyperparameters with GridSearchCV
=================================================

A skflow estimator's ``score`` is the mean log-likelihood of the rows it is
given, so scikit-learn's model selection tools can tune a density model
without labels: :class:`~sklearn.model_selection.GridSearchCV` with no
``scoring`` argument picks the candidate with the highest held-out
log-likelihood across the folds.

We search over the depth (``n_layers``), the width of the coupling networks
(``hidden_dims``) and the AdamW ``weight_decay`` of
:class:`skflow.RealNVPDensity`, tune a
:class:`~sklearn.mixture.GaussianMixture` the same way (number of components
and covariance type), and compare both winners on a test split neither
search has seen.

Data: scikit-learn's bundled breast-cancer table (569 rows, 30 continuous
features, many of them skewed), standardised; the labels are not used.
Output: ``examples/output/grid_search.png`` (``..._fast.png`` in fast mode)
with the mean cross-validated log-likelihood of every candidate, plus or
minus its standard deviation over the folds.
Set ``SKFLOW_EXAMPLES_FAST=1`` for a short smoke run (tiny grid, few epochs).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, KFold, train_test_split
from sklearn.preprocessing import StandardScaler

from skflow import RealNVPDensity

FAST = os.environ.get("SKFLOW_EXAMPLES_FAST") == "1"
# sys.argv[0] is this script's path, also where sphinx-gallery runs it for the docs.
OUTPUT = Path(sys.argv[0]).resolve().parent / "output" / f"grid_search{'_fast' if FAST else ''}.png"

# %%
# Data
# ----
# Hold out a quarter of the rows for the final comparison. Flows standardise
# their inputs internally (and report densities in the units they are given),
# so the scaler is there for the Gaussian mixture, whose ``reg_covar`` is an
# absolute variance; both models then score the same standardised rows.

data = load_breast_cancer()
X_train, X_test = train_test_split(data.data, test_size=0.25, random_state=0)
scaler = StandardScaler().fit(X_train)
X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
print(f"{len(X_train)} training rows, {len(X_test)} test rows, {X_train.shape[1]} features")

# %%
# Searching the flow
# ------------------
# Every candidate is fitted on two folds and scored (mean log-likelihood) on
# the third. Each fit also holds out 10% of its rows for early stopping, so
# ``max_epochs`` is only a cap. A fixed ``random_state`` makes every
# candidate start from the same seed, so the comparison is between
# hyperparameters, not between lucky initialisations.

folds = KFold(n_splits=3, shuffle=True, random_state=0)
if FAST:
    flow_grid = {"n_layers": [2, 4], "hidden_dims": [(16, 16)], "weight_decay": [0.0]}
    flow = RealNVPDensity(max_epochs=3, random_state=0)
else:
    flow_grid = {"n_layers": [4, 8, 16], "hidden_dims": [(64, 64), (128, 128)], "weight_decay": [0.0, 0.5]}
    flow = RealNVPDensity(max_epochs=200, random_state=0)
start = time.perf_counter()
flow_search = GridSearchCV(flow, flow_grid, cv=folds).fit(X_train)
print(f"RealNVP search: {len(flow_search.cv_results_['params'])} candidates in {time.perf_counter() - start:.0f} s")
print(f"  best_params_ {flow_search.best_params_}")
print(f"  CV log-likelihood {flow_search.best_score_:.2f}")

# %%
# Some columns of this table are recorded with a fixed number of decimals,
# so their values lie on a regular grid. With the default ``dequantize="auto"``
# the flow detects such columns and trains on them with uniform noise of one
# grid step (here a tiny fraction of a standard deviation), so that it cannot
# pile density onto repeated values; scores are still evaluated at the data.

best_flow = flow_search.best_estimator_
dequantized = data.feature_names[best_flow.dequantized_features_]
print(f"  dequantised columns: {len(dequantized)} of {X_train.shape[1]} ({', '.join(dequantized)})")
widths = best_flow.dequantization_widths_[best_flow.dequantized_features_]
print(f"  their bin widths (standardised units): {np.round(widths, 4)}")

# %%
# The same search for a Gaussian mixture
# --------------------------------------
# Same folds, same criterion (``GaussianMixture.score`` is also the mean
# log-likelihood), so the two searches are directly comparable.

mixture_grid = {"n_components": [1, 2, 3, 4, 6], "covariance_type": ["full", "tied", "diag"]}
mixture_search = GridSearchCV(GaussianMixture(random_state=0), mixture_grid, cv=folds).fit(X_train)
print(f"GaussianMixture search: best_params_ {mixture_search.best_params_}")
print(f"  CV log-likelihood {mixture_search.best_score_:.2f}")

# %%
# Held-out comparison
# -------------------
# ``refit=True`` (the default) refits each winner on all training rows; its
# ``score`` on the untouched test rows is the number to report. Depth matters
# most here; the winner sits at the edge of the grid (deepest, widest), so a
# next search would try deeper flows. Weight decay changes the score by less
# than its spread over the folds.

flow_test = flow_search.score(X_test)
mixture_test = mixture_search.score(X_test)
print(f"test log-likelihood  RealNVP {flow_test:.2f}   GaussianMixture {mixture_test:.2f}   (nats per row)")

# %%
# Plot every candidate's cross-validated score with its spread over the
# folds, on one scale for both model families. Candidates far below the best
# (a full covariance matrix per component is many parameters for 280 rows)
# are drawn at the left edge with their score written next to them.

LEFT = -35.0  # left edge of the score axis, in nats per row


def plot_candidates(axis: plt.Axes, search: GridSearchCV, label: Callable[[dict], str], title: str) -> None:
    results = search.cv_results_
    means, stds = results["mean_test_score"], results["std_test_score"]
    positions = np.arange(len(means))
    shown = np.maximum(means, LEFT)
    best = results["rank_test_score"] == 1
    axis.errorbar(shown, positions, xerr=np.where(means > LEFT, stds, 0), fmt="none", ecolor="grey", capsize=3)
    axis.scatter(shown[best], positions[best], color="tab:red", zorder=3, label="best candidate")
    axis.scatter(shown[~best], positions[~best], color="tab:blue", zorder=3)
    for position, mean in zip(positions, means):
        if mean <= LEFT:
            axis.annotate(
                f"off scale: {mean:.0f}", (LEFT, position), xytext=(4, -3), textcoords="offset points", fontsize=8
            )
    axis.set_yticks(positions, [label(params) for params in results["params"]], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlim(LEFT - 1, max(axis.get_xlim()[1], np.max(means + stds) + 1))
    axis.set_title(title, fontsize=10)
    axis.grid(axis="x", alpha=0.3)


figure, (flow_axis, mixture_axis) = plt.subplots(2, 1, figsize=(8, 8.5), sharex=True, height_ratios=[12, 15])
plot_candidates(
    flow_axis,
    flow_search,
    lambda p: f"{p['n_layers']} layers, hidden {p['hidden_dims']}, weight_decay {p['weight_decay']}",
    f"RealNVPDensity: test log-likelihood of the best {flow_test:.2f}",
)
plot_candidates(
    mixture_axis,
    mixture_search,
    lambda p: f"n_components={p['n_components']}, {p['covariance_type']} covariance",
    f"GaussianMixture: test log-likelihood of the best {mixture_test:.2f}",
)
flow_axis.legend(loc="lower left", fontsize=8)
mixture_axis.set_xlabel("mean cross-validated log-likelihood (nats per row), +/- std over 3 folds")
figure.suptitle("GridSearchCV on the breast-cancer features, scored by held-out log-likelihood")
figure.tight_layout()
OUTPUT.parent.mkdir(parents=True, exist_ok=True)
figure.savefig(OUTPUT, dpi=110)
print(f"saved {OUTPUT}")
