"""Scoring Dask collections and GridSearchCV on a dask.distributed cluster (skflow/_dask.py).

A LocalCluster of two worker processes on the loopback interface stands in
for a real cluster: what it computes must equal, bit for bit, what the
estimator returns in this process (inference runs in fixed-shape batches,
so a row's score does not depend on the rows scored with it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GridSearchCV, KFold

from skflow import DensityOutlierDetector, RealNVPDensity
from tests.helpers import two_blobs_2d

da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    with cluster, distributed.Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def fitted():
    X = two_blobs_2d(600, seed=0)
    return RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=5, random_state=0).fit(X), X


def test_dask_array_scores_and_latents_match_numpy_on_a_cluster(client, fitted) -> None:
    estimator, X = fitted
    lazy = da.from_array(X, chunks=(150, 1))  # column chunks too: blocks must be rechunked to whole rows
    scores = estimator.score_samples(lazy)
    assert isinstance(scores, da.Array) and scores.shape == (600,)
    # The model enters the graph once, however many blocks use it.
    graph = dict(scores.__dask_graph__())
    model_keys = [key for key, task in graph.items() if _holds(task, estimator)]
    assert len(model_keys) == 1 and scores.npartitions == 4
    np.testing.assert_array_equal(client.compute(scores).result(), estimator.score_samples(X))
    latents = estimator.transform(lazy)
    np.testing.assert_array_equal(client.compute(latents).result(), estimator.transform(X))


def test_dask_dataframe_partitions_keep_their_index_and_names(client) -> None:
    X = pd.DataFrame(two_blobs_2d(400, seed=1), columns=["a", "b"])
    estimator = RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=3, random_state=0).fit(X)
    frame = dd.from_pandas(X, npartitions=3)
    scores = client.compute(estimator.score_samples(frame)).result()
    assert isinstance(scores, pd.Series)
    np.testing.assert_array_equal(scores.sort_index().to_numpy(), estimator.score_samples(X))
    latents = client.compute(estimator.transform(frame)).result().sort_index()
    assert list(latents.columns) == list(estimator.get_feature_names_out())
    np.testing.assert_array_equal(latents.to_numpy(), estimator.transform(X))


def test_detector_predictions_over_a_dask_array(client) -> None:
    X = two_blobs_2d(400, seed=2)
    detector = DensityOutlierDetector(
        estimator=RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=3, random_state=0), contamination=0.05
    ).fit(X)
    lazy = da.from_array(X, chunks=(100, 2))
    labels = client.compute(detector.predict(lazy)).result()
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, detector.predict(X))
    np.testing.assert_array_equal(
        client.compute(detector.decision_function(lazy)).result(), detector.decision_function(X)
    )


def test_unfitted_estimator_fails_before_anything_is_scheduled() -> None:
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        RealNVPDensity().score_samples(da.zeros((10, 2), chunks=5))


def test_grid_search_through_joblibs_dask_backend_matches_a_local_search(client) -> None:
    import joblib

    X = two_blobs_2d(300, seed=3)
    search = GridSearchCV(
        RealNVPDensity(hidden_dims=(8,), max_epochs=3, random_state=0),
        {"n_layers": [1, 2]},
        cv=KFold(2),
        n_jobs=2,
    )
    with joblib.parallel_backend("dask"):
        on_cluster = search.fit(X)
    scores = on_cluster.cv_results_["mean_test_score"].copy()
    local = GridSearchCV(search.estimator, search.param_grid, cv=KFold(2), n_jobs=1).fit(X)
    np.testing.assert_array_equal(scores, local.cv_results_["mean_test_score"])
    assert on_cluster.best_params_ == local.best_params_


def _holds(task, estimator) -> bool:
    """Whether a graph task is (or wraps) the estimator object itself."""
    if task is estimator:
        return True
    value = getattr(task, "value", None)
    return value is estimator
