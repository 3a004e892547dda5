"""Scores shared by every density estimator (skflow's or scikit-learn's).

Only numpy here: any object with ``score_samples`` (log-densities per row)
can be scored, so flows and classical baselines such as
:class:`~sklearn.mixture.GaussianMixture` are compared in the same units.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.utils.validation import check_array

__all__ = ["bits_per_dim"]


def bits_per_dim(estimator: Any, X: Any, bin_widths: float | np.ndarray = 1.0) -> float:
    """Average code length of discrete data, in bits per dimension.

    For data on a grid (pixel intensities, counts) with bins of width
    ``h_j`` in column ``j`` centred on the data, a dequantised continuous
    density ``p`` assigns the grid point ``x`` the probability
    ``P(x) = integral over its bin of p ~= p(x) * prod_j h_j``. The number of
    bits per dimension is then

    ``bpd = -(1/n) sum_rows log2 P(x) / D
    = -(mean log p(x) + sum_j log h_j) / (D ln 2)``.

    With integer data and unit bins (``h_j = 1``) this is
    ``-mean(score_samples(X)) / (D ln 2)``. It equals Glow's formula for
    images rescaled to ``[0, 1)`` with ``K`` intensity levels,
    ``-log p_01(x / K) / (D ln 2) + log2(K)``: the rescaling multiplies the
    density by ``K^D``, which the ``log2(K)`` term removes again, so both
    conventions report the same number.

    Parameters
    ----------
    estimator : object
        Fitted density estimator with ``score_samples(X)`` returning natural
        log-densities, shape ``(n_samples,)``.
    X : array-like of shape (n_samples, n_features)
        Discrete data (e.g. integer pixel values).
    bin_widths : float or array-like of shape (n_features,), default=1.0
        Width of the quantisation bins of each column, in the units of ``X``.

    Returns
    -------
    bpd : float
        Lower is better.

    Raises
    ------
    ValueError
        If ``bin_widths`` is not positive and finite, or its shape does not
        match ``X``.
    """
    X = check_array(X, dtype=[np.float64, np.float32])
    n_features = X.shape[1]
    widths = np.asarray(bin_widths, dtype=np.float64)
    if widths.ndim == 0:
        widths = np.full(n_features, float(widths))
    if widths.shape != (n_features,):
        raise ValueError(f"bin_widths must be a scalar or have shape ({n_features},), got shape {widths.shape}.")
    if not np.all(np.isfinite(widths) & (widths > 0)):
        raise ValueError("bin_widths must be positive and finite.")
    log_density = np.asarray(estimator.score_samples(X), dtype=np.float64)
    mean_log_probability = float(np.mean(log_density)) + float(np.log(widths).sum())
    return -mean_log_probability / (n_features * math.log(2))
