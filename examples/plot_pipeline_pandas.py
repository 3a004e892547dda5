"""A flow in a scikit-learn Pipeline with pandas input and output
==============================================================

skflow estimators are scikit-learn transformers as well as density
estimators, so they fit in a :class:`~sklearn.pipeline.Pipeline` and honour
``set_output(transform="pandas")``. This example chains a
:class:`~sklearn.preprocessing.StandardScaler` and a free-form injective flow
(:class:`skflow.InjectiveFlowEstimator`, a nonlinear counterpart of PCA with a
density) on the wine table as a DataFrame, and shows:

* ``get_feature_names_out`` and ``transform`` returning a DataFrame with named
  latent columns (and the input's row index);
* ``inverse_transform`` mapping latent codes back to the 13 wine measurements;
* ``score_samples`` and ``score`` called on DataFrames;
* the 2-D latent coordinates coloured by cultivar (the labels are not used
  for fitting), and the log-densities of held-out rows next to those of rows
  whose columns were shuffled independently (realistic marginals, broken
  correlations).

Data: scikit-learn's bundled wine recognition table (178 rows, 13 named
columns, 3 cultivars), loaded with ``as_frame=True``.
Output: ``examples/output/pipeline_pandas.png`` (``..._fast.png`` in fast mode).
Set ``SKFLOW_EXAMPLES_FAST=1`` for a short smoke run (few epochs).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.datasets import load_wine
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skflow import InjectiveFlowEstimator

FAST = os.environ.get("SKFLOW_EXAMPLES_FAST") == "1"
# sys.argv[0] is this script's path, also where sphinx-gallery runs it for the docs.
OUTPUT = Path(sys.argv[0]).resolve().parent / "output" / f"pipeline_pandas{'_fast' if FAST else ''}.png"
pd.set_option("display.width", 120)

# %%
# Data as a DataFrame
# -------------------
# The cultivar labels are kept aside for the plot only. A stratified quarter
# of the rows is held out.

wine = load_wine(as_frame=True)
X_train, X_test, y_train, y_test = train_test_split(
    wine.data, wine.target, test_size=0.25, stratify=wine.target, random_state=0
)
print(f"{X_train.shape[0]} training rows, {X_test.shape[0]} test rows, columns: {list(wine.data.columns)}")

# %%
# The pipeline
# ------------
# ``set_output(transform="pandas")`` on the pipeline makes every step return
# a DataFrame, so the flow is fitted on named columns and remembers them in
# ``feature_names_in_``. The flow learns a 2-D latent space
# (``n_components=2``) and a density on all 13 dimensions.

flow = InjectiveFlowEstimator(
    n_components=2, max_epochs=20 if FAST else 1000, batch_size=16, patience=100, random_state=0
)
pipeline = make_pipeline(StandardScaler(), flow).set_output(transform="pandas")
pipeline.fit(X_train)
print(f"flow fitted for {flow.n_iter_} epochs (weights of epoch {flow.best_epoch_} kept)")
print("the flow saw the columns", list(flow.feature_names_in_[:3]), "...")
print("get_feature_names_out():", list(pipeline.get_feature_names_out()))

# %%
# Latent codes as a DataFrame
# ---------------------------
# ``transform`` returns the latent coordinates with the names from
# ``get_feature_names_out`` and the test rows' original index.

latent = pipeline.transform(X_test)
print(latent.head())

# %%
# Back to the measurements
# ------------------------
# ``inverse_transform`` runs the decoder and then undoes the scaling. Like
# every scikit-learn ``inverse_transform``, it returns a NumPy array, which
# we wrap with the input's column names. The reconstruction error (in
# standard deviations of each column) is close to that of a 2-component PCA
# fitted the same way.

reconstructed = pd.DataFrame(pipeline.inverse_transform(latent), columns=X_test.columns, index=X_test.index)
scale = X_train.std(ddof=0)
flow_error = ((X_test - reconstructed) / scale).pow(2)
pca = make_pipeline(StandardScaler(), PCA(n_components=2)).fit(X_train)
pca_error = ((X_test - pca.inverse_transform(pca.transform(X_test))) / scale).pow(2)
errors = pd.DataFrame({"flow": flow_error.mean(), "PCA": pca_error.mean()})
print("mean squared reconstruction error per column, in squared standard deviations:")
print(errors.round(2))
print(f"average over columns: flow {errors['flow'].mean():.3f}, PCA {errors['PCA'].mean():.3f}")

# %%
# Densities of DataFrame rows
# ---------------------------
# ``score_samples`` on the pipeline scales the rows and returns the flow's
# log-density of the *scaled* features (a pipeline does not add the scaler's
# log-Jacobian, which is the same constant for every row). Rows whose columns
# were shuffled independently keep each column's distribution but lose the
# correlations between columns, and the flow rates them far less likely.

rng = np.random.default_rng(0)
shuffled = X_test.apply(lambda column: rng.permutation(column.to_numpy()))
test_density = pipeline.score_samples(X_test)
shuffled_density = pipeline.score_samples(shuffled)
print(
    f"mean log-density: training rows {pipeline.score(X_train):.2f}, test rows {test_density.mean():.2f}, "
    f"shuffled test rows {shuffled_density.mean():.2f}"
)

# %%
# Plot
# ----

figure, (latent_axis, density_axis) = plt.subplots(1, 2, figsize=(11, 4.5))
train_latent = pipeline.transform(X_train)
names = pipeline.get_feature_names_out()
for cultivar, colour in zip(range(3), ["tab:blue", "tab:orange", "tab:green"]):
    rows = train_latent[y_train == cultivar]
    latent_axis.scatter(rows[names[0]], rows[names[1]], s=12, color=colour, alpha=0.5)
    rows = latent[y_test == cultivar]
    latent_axis.scatter(
        rows[names[0]], rows[names[1]], s=40, color=colour, edgecolor="black", label=wine.target_names[cultivar]
    )
latent_axis.set(xlabel=names[0], ylabel=names[1], title="Latent codes (small: training, large: test rows)")
latent_axis.legend(title="cultivar (not used in fit)", fontsize=8, loc="upper left")

bins = np.linspace(min(test_density.min(), shuffled_density.min()), test_density.max() + 1, 30)
density_axis.hist(test_density, bins=bins, alpha=0.6, label="test rows")
density_axis.hist(shuffled_density, bins=bins, alpha=0.6, label="test rows, columns shuffled")
density_axis.set(xlabel="score_samples (log-density of the scaled features)", ylabel="rows", title="Log-densities")
density_axis.legend(fontsize=8)
figure.suptitle("StandardScaler + InjectiveFlowEstimator(n_components=2) on the wine DataFrame")
figure.tight_layout()
OUTPUT.parent.mkdir(parents=True, exist_ok=True)
figure.savefig(OUTPUT, dpi=110)
print(f"saved {OUTPUT}")
