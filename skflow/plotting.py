"""Displays in scikit-learn's style: look at a fit without writing plotting code.

Each display is built with ``from_estimator`` (which computes what to draw
and calls ``plot``) or from precomputed values; ``plot(ax=...)`` draws on
given axes or on new ones, and the display keeps the artists it made
(``ax_``, ``figure_``, ...) for further styling, as
:class:`sklearn.metrics.RocCurveDisplay` does. matplotlib is optional for
skflow: it is imported when something is drawn, never on ``import skflow``.

* :class:`TrainingCurveDisplay`: training and validation loss per epoch,
  the epoch whose weights were kept marked.
* :class:`DensityDisplay`: the fitted density of any 2-feature density
  estimator on a grid, with draws from it (and the data) on top.
* :class:`ExplainedVarianceDisplay`: for an
  :class:`~skflow.InjectiveFlowEstimator`, the share of the data's variance
  each latent direction captures, beside PCA's.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.utils._optional_dependencies import check_matplotlib_support
from sklearn.utils.validation import check_array, check_is_fitted

__all__ = ["DensityDisplay", "ExplainedVarianceDisplay", "TrainingCurveDisplay"]


def _axes(ax: Any, owner: str) -> Any:
    check_matplotlib_support(f"{owner}.plot")
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    return ax


class TrainingCurveDisplay:
    """Training and validation loss per epoch, with the kept epoch marked.

    Parameters
    ----------
    train_loss : array-like of shape (n_epochs,)
        Training loss per epoch (what the family optimises).
    valid_loss : array-like of shape (n_epochs,) or None, default=None
        Held-out negative log-likelihood per epoch; None or all-NaN when
        training had no validation split.
    best_epoch : int or None, default=None
        Epoch (1-based) whose weights the model holds.
    estimator_name : str or None, default=None
        Used in the title.

    Attributes
    ----------
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure
    lines_ : dict of str to matplotlib Line2D
        ``"train"``, and ``"valid"`` and ``"best"`` when drawn.
    """

    def __init__(
        self,
        train_loss: Any,
        valid_loss: Any = None,
        *,
        best_epoch: int | None = None,
        estimator_name: str | None = None,
    ) -> None:
        self.train_loss = np.asarray(train_loss, dtype=float)
        self.valid_loss = None if valid_loss is None else np.asarray(valid_loss, dtype=float)
        self.best_epoch = best_epoch
        self.estimator_name = estimator_name

    @classmethod
    def from_estimator(cls, estimator: Any, *, ax: Any = None) -> TrainingCurveDisplay:
        """Plot the training history of a fitted skflow estimator.

        Parameters
        ----------
        estimator : FlowEstimator
            Fitted; reads ``history_`` and ``best_epoch_``.
        ax : matplotlib Axes or None, default=None

        Returns
        -------
        display : TrainingCurveDisplay
        """
        check_is_fitted(estimator, "history_")
        history = estimator.history_
        display = cls(
            [row["train_loss"] for row in history],
            [row["valid_loss"] for row in history],
            best_epoch=getattr(estimator, "best_epoch_", None),
            estimator_name=type(estimator).__name__,
        )
        return display.plot(ax=ax)

    def plot(self, ax: Any = None) -> TrainingCurveDisplay:
        """Draw the curves.

        Parameters
        ----------
        ax : matplotlib Axes or None, default=None
            Axes to draw on; None makes a new figure.

        Returns
        -------
        display : TrainingCurveDisplay
        """
        ax = _axes(ax, type(self).__name__)
        epochs = np.arange(1, len(self.train_loss) + 1)
        self.lines_ = {"train": ax.plot(epochs, self.train_loss, label="training loss")[0]}
        has_valid = self.valid_loss is not None and np.isfinite(self.valid_loss).any()
        if has_valid:
            self.lines_["valid"] = ax.plot(epochs, self.valid_loss, label="validation NLL")[0]
        if self.best_epoch:
            curve = self.valid_loss if has_valid and self.valid_loss is not None else self.train_loss
            value = curve[self.best_epoch - 1]
            self.lines_["best"] = ax.plot(
                [self.best_epoch], [value], "o", color="black", label=f"kept: epoch {self.best_epoch}"
            )[0]
            ax.axvline(self.best_epoch, color="black", linewidth=0.8, linestyle=":")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss per row (standardised units)")
        if self.estimator_name:
            ax.set_title(self.estimator_name)
        ax.legend()
        self.ax_, self.figure_ = ax, ax.figure
        return self


def _draw(estimator: Any, n_samples: int, random_state: Any) -> np.ndarray:
    """``estimator.sample``, whatever its signature (GaussianMixture returns ``(X, labels)``)."""
    parameters = inspect.signature(estimator.sample).parameters
    draws = estimator.sample(n_samples, random_state=random_state) if "random_state" in parameters else None
    if draws is None:
        draws = estimator.sample(n_samples)
    if isinstance(draws, tuple):
        draws = draws[0]
    return np.asarray(draws, dtype=float)


class DensityDisplay:
    """The fitted density of a 2-feature estimator on a grid, with points on top.

    Parameters
    ----------
    grid_x : ndarray of shape (grid_resolution,)
        Grid values of the first feature.
    grid_y : ndarray of shape (grid_resolution,)
        Grid values of the second feature.
    log_density : ndarray of shape (grid_resolution, grid_resolution)
        ``log_density[i, j]`` at ``(grid_x[j], grid_y[i])``.
    samples : ndarray of shape (n_samples, 2) or None, default=None
        Draws from the estimator.
    data : ndarray of shape (n_rows, 2) or None, default=None
        Data points.
    feature_names : sequence of 2 str or None, default=None
        Axis labels.
    estimator_name : str or None, default=None

    Attributes
    ----------
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure
    contour_ : matplotlib QuadContourSet
    samples_ : matplotlib PathCollection or None
    data_ : matplotlib PathCollection or None
    """

    def __init__(
        self,
        grid_x: Any,
        grid_y: Any,
        log_density: Any,
        *,
        samples: Any = None,
        data: Any = None,
        feature_names: Any = None,
        estimator_name: str | None = None,
    ) -> None:
        self.grid_x = np.asarray(grid_x, dtype=float)
        self.grid_y = np.asarray(grid_y, dtype=float)
        self.log_density = np.asarray(log_density, dtype=float)
        self.samples = samples
        self.data = data
        self.feature_names = feature_names
        self.estimator_name = estimator_name

    @classmethod
    def from_estimator(
        cls,
        estimator: Any,
        X: Any = None,
        *,
        n_samples: int = 300,
        grid_resolution: int = 100,
        margin: float = 0.1,
        random_state: Any = 0,
        log_scale: bool = False,
        ax: Any = None,
    ) -> DensityDisplay:
        """Evaluate a fitted density estimator on a grid and plot it.

        Parameters
        ----------
        estimator : estimator with ``score_samples``
            Fitted on 2 features (any skflow estimator,
            :class:`~sklearn.mixture.GaussianMixture`,
            :class:`~sklearn.neighbors.KernelDensity`, ...).
        X : array-like of shape (n_rows, 2) or None, default=None
            Data to show; the grid covers it (and the draws).
        n_samples : int, default=300
            Draws from ``estimator.sample`` to show; 0 for none.
        grid_resolution : int, default=100
            Grid points per axis.
        margin : float, default=0.1
            Grid extends beyond the points by this share of their range.
        random_state : int, RandomState instance or None, default=0
            Seed of the draws, when ``sample`` takes one.
        log_scale : bool, default=False
            Contour the log-density instead of the density.
        ax : matplotlib Axes or None, default=None

        Returns
        -------
        display : DensityDisplay

        Raises
        ------
        ValueError
            If the estimator was not fitted on exactly 2 features (a 2-D
            slice of a higher-dimensional density is not its marginal), or
            if there are no points to place the grid around.
        """
        n_features = getattr(estimator, "n_features_in_", None)
        if n_features is None:
            raise ValueError(f"{type(estimator).__name__} is not fitted (it has no n_features_in_).")
        if n_features != 2:
            raise ValueError(
                f"DensityDisplay shows densities of 2 features; {type(estimator).__name__} was fitted on "
                f"{n_features}. Fit on two columns (a 2-D slice of a {n_features}-D density is not its marginal)."
            )
        data = None if X is None else check_array(X, dtype=float)
        if data is not None and data.shape[1] != 2:
            raise ValueError(f"X has {data.shape[1]} features; the estimator expects 2.")
        samples = _draw(estimator, n_samples, random_state) if n_samples > 0 and hasattr(estimator, "sample") else None
        points = [block for block in (data, samples) if block is not None]
        if not points:
            raise ValueError("Nothing to place the grid around: pass X, or n_samples > 0 for an estimator with sample.")
        stacked = np.vstack(points)
        stacked = stacked[np.isfinite(stacked).all(axis=1)]
        low, high = stacked.min(axis=0), stacked.max(axis=0)
        pad = margin * np.where(high > low, high - low, 1.0)
        grid_x = np.linspace(low[0] - pad[0], high[0] + pad[0], grid_resolution)
        grid_y = np.linspace(low[1] - pad[1], high[1] + pad[1], grid_resolution)
        mesh = np.stack(np.meshgrid(grid_x, grid_y), axis=-1).reshape(-1, 2)
        names = getattr(estimator, "feature_names_in_", None)
        grid_points: Any = mesh
        if names is not None:  # score with the names it was fitted with, as it expects
            import pandas as pd

            grid_points = pd.DataFrame(mesh, columns=names)
        log_density = np.asarray(estimator.score_samples(grid_points), dtype=float).reshape(
            grid_resolution, grid_resolution
        )
        display = cls(
            grid_x,
            grid_y,
            log_density,
            samples=samples,
            data=data,
            feature_names=None if names is None else list(names),
            estimator_name=type(estimator).__name__,
        )
        return display.plot(ax=ax, log_scale=log_scale)

    def plot(self, ax: Any = None, *, log_scale: bool = False, levels: int = 15) -> DensityDisplay:
        """Draw the contours and the points.

        Parameters
        ----------
        ax : matplotlib Axes or None, default=None
        log_scale : bool, default=False
            Contour ``log_density`` instead of its exponential.
        levels : int, default=15
            Number of contour levels.

        Returns
        -------
        display : DensityDisplay
        """
        ax = _axes(ax, type(self).__name__)
        values = self.log_density if log_scale else np.exp(self.log_density)
        if log_scale:
            # -inf where the model gives no mass: floor it below the lowest level shown.
            finite = values[np.isfinite(values)]
            values = np.where(np.isfinite(values), values, finite.min() if finite.size else 0.0)
        self.contour_ = ax.contourf(self.grid_x, self.grid_y, values, levels=levels, cmap="viridis")
        self.data_ = self.samples_ = None
        if self.data is not None:
            self.data_ = ax.scatter(*np.asarray(self.data).T, s=4, color="white", alpha=0.6, label="data")
        if self.samples is not None:
            self.samples_ = ax.scatter(*np.asarray(self.samples).T, s=4, color="tab:red", alpha=0.7, label="samples")
        if self.data is not None or self.samples is not None:
            ax.legend(loc="upper right", fontsize="small")
        names = self.feature_names or ["x0", "x1"]
        ax.set_xlabel(str(names[0]))
        ax.set_ylabel(str(names[1]))
        if self.estimator_name:
            ax.set_title(f"{self.estimator_name}: {'log-density' if log_scale else 'density'}")
        self.ax_, self.figure_ = ax, ax.figure
        return self


class ExplainedVarianceDisplay:
    """Share of the data's variance per latent direction of a manifold, beside PCA's.

    Parameters
    ----------
    explained_variance_ratio : array-like of shape (n_components,)
        From :meth:`skflow.InjectiveFlowEstimator.explained_variance_ratio`.
    pca_explained_variance_ratio : array-like of shape (n_components,) or None, default=None
        PCA's ``explained_variance_ratio_`` on the same rows, for comparison.
    estimator_name : str or None, default=None

    Attributes
    ----------
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure
    bars_ : matplotlib BarContainer
        One bar per latent direction.
    pca_bars_ : matplotlib BarContainer or None
    cumulative_ : matplotlib Line2D
        Cumulative share of the estimator's directions.
    """

    def __init__(
        self,
        explained_variance_ratio: Any,
        pca_explained_variance_ratio: Any = None,
        *,
        estimator_name: str | None = None,
    ) -> None:
        self.explained_variance_ratio = np.asarray(explained_variance_ratio, dtype=float)
        self.pca_explained_variance_ratio = (
            None if pca_explained_variance_ratio is None else np.asarray(pca_explained_variance_ratio, dtype=float)
        )
        self.estimator_name = estimator_name

    @classmethod
    def from_estimator(
        cls, estimator: Any, X: Any, *, compare_with_pca: bool = True, ax: Any = None
    ) -> ExplainedVarianceDisplay:
        """Measure a fitted InjectiveFlowEstimator on ``X`` and plot the ratios.

        Parameters
        ----------
        estimator : InjectiveFlowEstimator
            Fitted.
        X : array-like of shape (n_samples, n_features)
            Rows to measure on (typically the training data).
        compare_with_pca : bool, default=True
            Also fit :class:`~sklearn.decomposition.PCA` with as many
            components on ``X`` and show its ratios.
        ax : matplotlib Axes or None, default=None

        Returns
        -------
        display : ExplainedVarianceDisplay
        """
        if not hasattr(estimator, "explained_variance_ratio"):
            raise TypeError(
                f"{type(estimator).__name__} has no explained_variance_ratio(X); use an InjectiveFlowEstimator."
            )
        ratio = estimator.explained_variance_ratio(X)
        reference = None
        if compare_with_pca:
            rows = check_array(X, dtype=float)
            reference = PCA(n_components=len(ratio)).fit(rows).explained_variance_ratio_
        return cls(ratio, reference, estimator_name=type(estimator).__name__).plot(ax=ax)

    def plot(self, ax: Any = None) -> ExplainedVarianceDisplay:
        """Draw one bar per latent direction and the cumulative share.

        Parameters
        ----------
        ax : matplotlib Axes or None, default=None

        Returns
        -------
        display : ExplainedVarianceDisplay
        """
        ax = _axes(ax, type(self).__name__)
        components = np.arange(1, len(self.explained_variance_ratio) + 1)
        name = self.estimator_name or "estimator"
        width = 0.4 if self.pca_explained_variance_ratio is not None else 0.8
        offset = -width / 2 if self.pca_explained_variance_ratio is not None else 0.0
        self.bars_ = ax.bar(components + offset, self.explained_variance_ratio, width=width, label=name)
        self.pca_bars_ = None
        if self.pca_explained_variance_ratio is not None:
            self.pca_bars_ = ax.bar(
                components - offset, self.pca_explained_variance_ratio, width=width, label="PCA", alpha=0.7
            )
        (self.cumulative_,) = ax.plot(
            components, np.cumsum(self.explained_variance_ratio), "o-", color="black", label=f"{name}, cumulative"
        )
        ax.set_xticks(components)
        ax.set_xlabel("latent direction")
        ax.set_ylabel("share of the data's variance")
        ax.set_ylim(min(0.0, math.floor(10 * self.explained_variance_ratio.min()) / 10), 1.0)
        ax.legend()
        self.ax_, self.figure_ = ax, ax.figure
        return self
