"""Scoring Dask collections: a fitted estimator mapped over the blocks of a Dask array or DataFrame.

``score_samples``, ``transform`` (and the detector's ``predict`` and
``decision_function``) accept a ``dask.array.Array`` or a
``dask.dataframe.DataFrame`` and return a lazy collection of the same kind,
computed block by block on whatever scheduler runs it (threads, processes or
a ``dask.distributed`` cluster). The estimator enters the task graph once, as
a single delayed object every block task depends on, so a cluster ships the
model to each worker once rather than once per block.

Dask is imported only when such an input arrives; nothing here runs for
NumPy or pandas inputs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

__all__ = ["dask_aware", "is_dask_collection"]


def is_dask_collection(X: Any) -> bool:
    """Whether ``X`` is a Dask array or DataFrame (without importing dask)."""
    module = type(X).__module__
    return module.startswith(("dask.", "dask_expr"))


def dask_aware(output: Literal["rows", "columns"], dtype: type = np.float64) -> Callable[[Callable], Callable]:
    """Let a method of a fitted estimator take a Dask array or DataFrame.

    Parameters
    ----------
    output : {"rows", "columns"}
        What the method returns per input row: one value (``"rows"``, e.g.
        ``score_samples``, a 1-D array or a Series) or a row of
        ``estimator._n_features_out`` values (``"columns"``, e.g.
        ``transform``, a 2-D array or a DataFrame named by
        ``get_feature_names_out``).
    dtype : numpy dtype, default=np.float64
        dtype of the values the method returns.
    """

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def wrapper(self: Any, X: Any, *args: Any, **kwargs: Any) -> Any:
            if not is_dask_collection(X):
                return method(self, X, *args, **kwargs)
            return _map_blocks(self, method.__name__, X, output, np.dtype(dtype))

        return wrapper

    return decorate


def _map_blocks(estimator: Any, name: str, X: Any, output: str, dtype: np.dtype) -> Any:
    import dask
    import dask.array as da
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)  # fail now, not later on a worker
    # One delayed object for the model: every block task depends on this key.
    model = dask.delayed(estimator, pure=True, traverse=False)
    apply = functools.partial(_apply, name=name, dtype=dtype)
    if isinstance(X, da.Array):
        if X.ndim != 2:
            raise ValueError(f"Expected a 2-D Dask array of shape (n_samples, n_features), got {X.ndim} dimensions.")
        X = X.rechunk({1: -1})  # every block must hold whole rows
        if output == "rows":
            return X.map_blocks(apply, model, dtype=dtype, drop_axis=1, meta=np.empty((0,), dtype))
        width = int(estimator._n_features_out)
        return X.map_blocks(apply, model, dtype=dtype, chunks=(X.chunks[0], (width,)), meta=np.empty((0, 0), dtype))
    import pandas as pd

    if output == "rows":
        meta: Any = pd.Series(np.empty(0, dtype), name=name)
    else:
        meta = pd.DataFrame({str(column): np.empty(0, dtype) for column in estimator.get_feature_names_out()})
    return X.map_partitions(_apply_frame, model, name=name, output=output, dtype=dtype, meta=meta)


def _apply(block: np.ndarray, estimator: Any, *, name: str, dtype: np.dtype) -> np.ndarray:
    return np.asarray(getattr(estimator, name)(block), dtype=dtype)


def _apply_frame(frame: Any, estimator: Any, *, name: str, output: str, dtype: np.dtype) -> Any:
    import pandas as pd

    values = np.asarray(getattr(estimator, name)(frame), dtype=dtype)
    if output == "rows":
        return pd.Series(values, index=frame.index, name=name)
    return pd.DataFrame(values, index=frame.index, columns=[str(c) for c in estimator.get_feature_names_out()])
