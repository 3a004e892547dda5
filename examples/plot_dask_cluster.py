"""Scoring and tuning a flow on a Dask cluster
===========================================

A fitted skflow estimator scores a Dask array or DataFrame block by block
on whatever Dask runs it: here a :class:`distributed.LocalCluster` of worker
processes on this machine, the same code a multi-machine cluster runs. The
model enters the task graph once, so each worker receives it once however
many blocks it scores. :class:`~sklearn.model_selection.GridSearchCV` runs
its candidate fits on the same cluster through joblib's ``"dask"`` backend.

Data: two Gaussian blobs drawn here (no download), 200,000 rows to score
(20,000 in fast mode). Output: ``examples/output/dask_cluster.png``
(``..._fast.png`` in fast mode): the distribution of the log-densities
computed on the cluster, and the cross-validated log-likelihood of each
candidate of the search. Needs ``pip install 'skflow[dask]'``.
Set ``SKFLOW_EXAMPLES_FAST=1`` for a short smoke run.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import dask.array as da
import joblib
import matplotlib.pyplot as plt
import numpy as np
from distributed import Client, LocalCluster
from sklearn.model_selection import GridSearchCV, KFold

from skflow import RealNVPDensity

FAST = os.environ.get("SKFLOW_EXAMPLES_FAST") == "1"
# sys.argv[0] is this script's path, also where sphinx-gallery runs it for the docs.
OUTPUT = Path(sys.argv[0]).resolve().parent / "output" / f"dask_cluster{'_fast' if FAST else ''}.png"


def blobs(n_rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[-2.0, 0.0], [2.0, 1.0]])
    return centres[rng.integers(0, 2, n_rows)] + rng.normal(scale=0.5, size=(n_rows, 2))


if __name__ == "__main__":  # worker processes re-import this file; only the client runs it
    # %%
    # A cluster
    # ---------
    # Two worker processes with one thread each, on the loopback interface.
    # On a real cluster, connect with ``Client("tcp://scheduler:8786")``.
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
    client = Client(cluster)

    # %%
    # Tuning on the cluster
    # ---------------------
    # Every (candidate, fold) fit becomes a task for a worker.
    X_train = blobs(2_000, seed=0)
    search = GridSearchCV(
        RealNVPDensity(hidden_dims=(16,), max_epochs=3 if FAST else 60, random_state=0),
        {"n_layers": [1, 2] if FAST else [1, 2, 4, 8]},
        cv=KFold(3, shuffle=True, random_state=0),
        n_jobs=-1,
    )
    start = time.perf_counter()
    with joblib.parallel_backend("dask"):
        search.fit(X_train)
    print(f"search: {len(search.cv_results_['params'])} candidates in {time.perf_counter() - start:.1f} s")
    print(f"  best_params_ {search.best_params_}")

    # %%
    # Scoring a large array
    # ---------------------
    # ``score_samples`` of a Dask array is a lazy Dask array: nothing runs
    # until it is computed, then each block of 10,000 rows is scored on a
    # worker. The result equals scoring in this process, row for row.
    n_rows = 20_000 if FAST else 200_000
    X_new = da.from_array(blobs(n_rows, seed=1), chunks=(10_000, 2))
    lazy = search.best_estimator_.score_samples(X_new)
    start = time.perf_counter()
    scores = lazy.compute()
    print(f"scored {n_rows} rows in {lazy.npartitions} blocks in {time.perf_counter() - start:.1f} s")
    local = search.best_estimator_.score_samples(X_new[:10_000].compute())
    print(f"  equal to local scoring on the first block: {np.array_equal(scores[:10_000], local)}")

    client.close()
    cluster.close()

    # %%
    # The figure
    # ----------
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.hist(scores, bins=80, color="tab:blue")
    left.set_xlabel("log-density (computed on the cluster)")
    left.set_ylabel("rows")
    left.set_title(f"{n_rows:,} rows in {lazy.npartitions} blocks")
    results = search.cv_results_
    labels = [str(params["n_layers"]) for params in results["params"]]
    right.errorbar(labels, results["mean_test_score"], yerr=results["std_test_score"], fmt="o-", capsize=3)
    right.set_xlabel("n_layers")
    right.set_ylabel("mean held-out log-likelihood")
    right.set_title("GridSearchCV on the cluster")
    figure.tight_layout()
    OUTPUT.parent.mkdir(exist_ok=True)
    figure.savefig(OUTPUT, dpi=110)
