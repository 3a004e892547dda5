"""Conditional flows as estimators: a probabilistic regressor and a generative classifier.

Both are meta-estimators over any skflow family that accepts a context (every
exact family and both continuous ones): the family is given as ``flow``, an
unfitted estimator whose hyperparameters (layers, widths, training settings)
are used as they are, and is built with a context input
(``flow.build_model(n_targets, n_context=...)``). The model is then trained
by the same engine as every density, on joint rows ``[target | context]``
(:class:`~skflow.flows.conditional.ConditionalFlow` splits them).

* :class:`FlowRegressor` models ``p(y | x)``: the target is ``y``, the
  context the standardised ``X``.
* :class:`FlowClassifier` models ``p(x | class)`` and classifies by Bayes'
  rule: one flow whose context is the one-hot class, or one flow per class.
"""

from __future__ import annotations

import inspect
from numbers import Integral
from typing import Any, ClassVar, cast

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .base import (
    _MAX_SEED,
    FlowEstimator,
    _drop_zero_weights,
    _standardisation,
    log_prob_rows,
    resolve_device,
)
from .flows.conditional import ConditionalFlow
from .flows.core import FlowModel
from .nn import MLP

__all__ = ["FlowClassifier", "FlowRegressor"]


def _default_regression_flow(n_rows: int) -> FlowEstimator:
    """FlowRegressor's family when ``flow=None``, for ``n_rows`` training rows.

    Spline couplings: with one target they are a monotone spline whose
    knots the context moves, flexible enough for skewed, heteroscedastic
    and bimodal conditionals (an affine flow of one target is a Gaussian).
    Sized for the small tables regression often has (a few hundred rows):
    below 1,000 rows, batches of 64, so an epoch of 100 rows is 2 steps
    rather than 1 and early stopping (patience 30) sees the model move, and
    noise regularisation of 0.1 standard deviations against memorising the
    table; from 1,000 rows, batches of 256 and noise of 0.05 (noise blurs
    sharp conditionals, which large tables can resolve); light weight decay
    throughout. ``benchmarks/conditional.py`` measures these defaults on
    five tables of 100 to 1,500 rows.
    """
    small = n_rows < 1000
    from .spline import NeuralSplineDensity

    return NeuralSplineDensity(
        n_layers=4,
        hidden_dims=(64, 64),
        batch_size=64 if small else 256,
        patience=30,
        weight_decay=1e-4,
        noise_std=0.1 if small else 0.05,
        dequantize=False,
        random_state=0,
    )


class _ConditionalFlowEstimator(BaseEstimator):
    """Plumbing shared by the conditional estimators: build, train, score and sample ``p(t | c)``."""

    _parameter_constraints: ClassVar[dict] = {
        "flow": [HasMethods(["build_model", "fit"]), None],
        "context_embedding": [tuple, list, None],
    }

    def __init__(self, *, flow: FlowEstimator | None = None, context_embedding: tuple | None = None) -> None:
        self.flow = flow
        self.context_embedding = context_embedding

    # ------------------------------------------------------------------ #
    def _default_flow(self, n_rows: int) -> FlowEstimator:
        """The family used when ``flow=None`` for ``n_rows`` training rows."""
        from .spline import NeuralSplineDensity

        return NeuralSplineDensity(n_layers=4, hidden_dims=(64, 64), random_state=0)

    def _flow_template(self, n_rows: int) -> FlowEstimator:
        flow = self._default_flow(n_rows) if self.flow is None else clone(self.flow)
        if not isinstance(flow, FlowEstimator):
            raise TypeError(f"flow must be a skflow density estimator, got {type(flow).__name__}.")
        if "n_context" not in inspect.signature(flow.build_model).parameters:
            raise ValueError(
                f"{type(flow).__name__} cannot be conditioned (its build_model takes no n_context); use an exact "
                "family (RealNVPDensity, NeuralSplineDensity, MAFDensity, ...) or a continuous one."
            )
        if flow.warm_start or flow.accelerator is not None:
            raise ValueError(
                "The conditional estimators train from scratch on one process: set the flow's warm_start=False "
                "and accelerator=None."
            )
        return flow

    def _embedding_width(self, n_context: int) -> int:
        return n_context if not self.context_embedding else int(self.context_embedding[-1])

    def build_model(self, n_targets: int, n_context: int) -> ConditionalFlow:
        """A fresh conditional model of ``n_targets`` targets given ``n_context`` raw context columns.

        The family's model is built by ``flow_.build_model(n_targets,
        n_context=w)`` with ``w`` the embedding width; the optional
        ``context_embedding`` network maps the raw context to width ``w``.
        """
        widths = tuple(int(width) for width in (self.context_embedding or ()))
        if any(width < 1 for width in widths):
            raise ValueError(f"context_embedding must hold positive widths, got {self.context_embedding!r}.")
        embedding = MLP(n_context, widths[-1], widths[:-1], "tanh") if widths else None
        # _flow_template checked that this family's build_model takes n_context.
        build_model: Any = self.flow_.build_model
        width = self._embedding_width(n_context)
        flow = build_model(n_targets, n_context=width)
        location_scale = None
        if self._uses_location_scale(flow):
            # Zero last layer: the step starts as the identity (shift 0, scale 1).
            hidden = tuple(getattr(self.flow_, "hidden_dims", (64, 64)))
            activation = getattr(self.flow_, "activation", "relu")
            location_scale = MLP(width, 2 * n_targets, hidden, activation, zero_init_last=True)
        return ConditionalFlow(flow, n_targets, n_context, embedding, location_scale)

    def _uses_location_scale(self, flow: FlowModel) -> bool:
        """Whether the model gets the learned location-scale step (see ``location_scale``)."""
        # The step's log-det is added to the family's loss, which is only
        # right when that loss is the negative log-likelihood: the exact
        # families' and CNF's (plus its penalties), not flow matching's
        # regression surrogate.
        from .flows.continuous import CNF

        likelihood_trained = type(flow).loss is FlowModel.loss or isinstance(flow, CNF)
        # Only the regressor has the hyperparameter: on the classifier's
        # one-hot context it made log-loss worse (benchmarks/conditional.py).
        wanted = getattr(self, "location_scale", False)
        if wanted == "auto":
            return likelihood_trained
        if wanted and not likelihood_trained:
            raise ValueError(
                f"location_scale=True needs a family trained by maximum likelihood; {type(self.flow_).__name__} "
                "trains on a surrogate loss. Use location_scale='auto' or False."
            )
        return bool(wanted)

    def _fit_conditional(self, targets: np.ndarray, context: np.ndarray, sample_weight: np.ndarray | None) -> None:
        """Fit ``p(targets | context)``; both float64 of shape ``(n, k)`` and ``(n, c)``."""
        self.flow_ = self._flow_template(len(targets))
        flow = self.flow_
        device = resolve_device(flow.device)
        self.target_mean_, self.target_scale_ = flow._standardisation_for(targets, sample_weight)
        self.context_mean_, self.context_scale_ = _standardisation(context, sample_weight)
        self.dequantization_widths_ = flow._dequantization_widths(targets)
        rows = np.hstack([(targets - self.target_mean_) / self.target_scale_, self._context_rows(context)])
        jitter = np.concatenate([self.dequantization_widths_ / self.target_scale_, np.zeros(context.shape[1])])
        n_targets, n_context = targets.shape[1], context.shape[1]
        # In the family's precision (its dtype hyperparameter), as its own fit.
        tensor = flow._to_tensor(rows, device, flow._torch_dtype())
        seed = int(check_random_state(flow.random_state).randint(_MAX_SEED))
        model, result = flow._run_engine(
            lambda: self.build_model(n_targets, n_context),
            tensor,
            seed,
            sample_weight,
            device,
            jitter=jitter,
            max_epochs=flow.max_epochs,
            validation_fraction=flow.validation_fraction,
        )
        # The family's own after-fit step (e.g. the continuous flows switch
        # to their accurate solver) runs on the inner model.
        flow.model_ = cast(FlowModel, model.flow)
        flow._after_fit(tensor[:, :n_targets])
        del flow.model_
        self.model_ = model
        self.device_ = device
        self.history_ = result.history
        self.n_iter_ = result.n_epochs
        self.best_epoch_ = result.best_epoch
        self._validation_index = result.validation_index

    def _empty_model(self) -> ConditionalFlow:
        """An untrained model shaped like ``model_``, for :func:`skflow.load` to copy saved weights into."""
        model = self.build_model(len(self.target_mean_), len(self.context_mean_))
        # As fit does: a float64 family trains a double model.
        return model.double() if self.flow_._torch_dtype() == torch.float64 else model

    def _context_rows(self, context: np.ndarray) -> np.ndarray:
        return (context - self.context_mean_) / self.context_scale_

    def _log_prob(self, targets: np.ndarray, context: np.ndarray) -> np.ndarray:
        """``log p(t | c)`` per row in the targets' units; NaN becomes -inf."""
        rows = np.hstack([(targets - self.target_mean_) / self.target_scale_, self._context_rows(context)])
        # The family's inference settings (threads, batch, dtype, inference
        # mode), so a float64 flow scores float64 rows.
        log_prob = log_prob_rows(self.model_, rows, self.device_, **self.flow_._map_options())
        log_prob = log_prob - np.log(self.target_scale_).sum()
        return np.where(np.isnan(log_prob), -np.inf, log_prob)

    def _draw(self, context: np.ndarray, n_samples: int, random_state: Any) -> np.ndarray:
        """Draws of the targets, shape ``(n, n_samples, k)``, for each context row.

        Every row's draws come from a generator seeded alike (common random
        numbers): a row's draws, and so its predictions, do not depend on
        which other rows are predicted with it or in what order.
        """
        if not isinstance(n_samples, Integral) or isinstance(n_samples, bool) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        seed = int(check_random_state(random_state).randint(_MAX_SEED))
        rows = self._context_rows(context)
        draws = np.empty((len(rows), int(n_samples), len(self.target_mean_)))
        dtype = self.flow_._torch_dtype()
        with torch.no_grad():
            for index, row in enumerate(rows):
                generator = torch.Generator(device=self.device_).manual_seed(seed)
                repeated = FlowEstimator._to_tensor(np.repeat(row[None], int(n_samples), axis=0), self.device_, dtype)
                draws[index] = self.model_.sample_given(repeated, generator).cpu().numpy()
        return draws * self.target_scale_ + self.target_mean_

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        device = state.get("device_")
        if device is not None and device.type != "cpu":
            # As FlowEstimator: pickles hold CPU tensors.
            import copy

            state["model_"] = copy.deepcopy(state["model_"]).to("cpu")
            state["device_"] = torch.device("cpu")
        return state


class FlowRegressor(RegressorMixin, _ConditionalFlowEstimator):
    """Probabilistic regression with a conditional normalizing flow: the whole law of ``y`` given ``x``.

    Fits ``p(y | x)`` by maximum likelihood with any skflow flow family
    built conditionally: the flow transforms ``y`` (one or more columns)
    with every conditioner also seeing the standardised ``x`` (through an
    optional learned embedding). The result is heteroscedastic, skewed or
    multimodal as the data demand, and gives densities, samples, quantiles
    and intervals, not just a point.

    Parameters
    ----------
    flow : skflow density estimator or None, default=None
        The family and its settings (layers, widths, ``max_epochs``, ``lr``,
        ``random_state``, ``device``, ...), used unfitted as a template.
        Any exact family or continuous one; None uses
        ``NeuralSplineDensity(n_layers=4, hidden_dims=(64, 64),
        patience=30, weight_decay=1e-4, dequantize=False, random_state=0)``
        with ``batch_size=64, noise_std=0.1`` below 1,000 rows and
        ``batch_size=256, noise_std=0.05`` from 1,000 rows: sized for small tables (see the user guide's
        benchmark). An affine family (RealNVP, MAF, Glow) on a single
        target gives a Gaussian with mean and spread depending on ``x``
        (plus, with ``n_base_components > 1``, a mixture whose weights
        depend on ``x``); splines and continuous flows are not so limited.
    context_embedding : tuple of int or None, default=None
        Widths of a tanh MLP trained with the flow that maps the
        standardised ``x`` to what the conditioners see (the last width is
        the embedding's). None feeds the standardised ``x`` directly.
    location_scale : {"auto"} or bool, default="auto"
        Put a learned heteroscedastic location-scale step in front of the
        flow: ``u = (y - m(x)) / s(x)``, with ``m`` and ``log s`` from a
        network of the (embedded) context whose last layer starts at zero,
        and the flow models ``u`` given ``x``. Since the families start as
        the identity, the model starts as a Gaussian and trains as a
        heteroscedastic Gaussian plus what the flow's layers add to it,
        which small tables support much better. ``"auto"`` uses it with
        every family trained by maximum likelihood (the exact families and
        CNF) and not with flow matching, whose surrogate loss cannot carry
        the step's log-det (True raises there).
    n_predict_samples : int, default=500
        Draws per row behind :meth:`predict`, :meth:`predict_quantiles` and
        :meth:`predict_interval` (Monte Carlo; drawn with a fixed seed, so
        predictions are repeatable).

    Attributes
    ----------
    flow_ : skflow density estimator
        The unfitted clone of ``flow`` that built the model.
    model_ : ConditionalFlow
        The fitted torch model (standardised units).
    target_mean_, target_scale_ : ndarray of shape (n_targets,)
        Standardisation of ``y``; scores include its log-det, so they are
        densities in ``y``'s units.
    context_mean_, context_scale_ : ndarray of shape (n_features_in_,)
        Standardisation of ``X``.
    dequantization_widths_ : ndarray of shape (n_targets,)
        Bin width of each dequantised target (integer-valued targets under
        the family's ``dequantize="auto"``); 0 for continuous targets.
    history_, n_iter_, best_epoch_, device_
        As :class:`~skflow.base.FlowEstimator`.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        When X has string column names.

    Notes
    -----
    ``score`` is the mean conditional log-likelihood ``mean log p(y | x)``,
    not R^2: a probabilistic regressor is selected by how well it predicts
    the distribution (a model with the right mean and a far too narrow or
    wide spread has the same R^2 and a much worse likelihood), so
    ``GridSearchCV`` with the default scoring selects by likelihood. R^2 of
    the conditional mean is ``scoring="r2"``.

    See Also
    --------
    FlowClassifier : The generative classifier built the same way.
    sklearn.gaussian_process.GaussianProcessRegressor : Gaussian predictive densities.

    Examples
    --------
    >>> import numpy as np
    >>> from skflow import FlowRegressor, NeuralSplineDensity
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(-2, 2, size=(300, 1))
    >>> y = np.sin(2 * X[:, 0]) + 0.1 * (1 + X[:, 0] ** 2) * rng.normal(size=300)
    >>> flow = NeuralSplineDensity(n_layers=2, hidden_dims=(16,), max_epochs=5, random_state=0)
    >>> regressor = FlowRegressor(flow=flow, n_predict_samples=100).fit(X, y)
    >>> regressor.score_samples(X[:3], y[:3]).shape
    (3,)
    >>> regressor.predict_interval(X[:2], alpha=0.1).shape
    (2, 2)
    """

    _parameter_constraints: ClassVar[dict] = {
        **_ConditionalFlowEstimator._parameter_constraints,
        "location_scale": [StrOptions({"auto"}), "boolean"],
        "n_predict_samples": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        *,
        flow: FlowEstimator | None = None,
        context_embedding: tuple | None = None,
        location_scale: str | bool = "auto",
        n_predict_samples: int = 500,
    ) -> None:
        super().__init__(flow=flow, context_embedding=context_embedding)
        self.location_scale = location_scale
        self.n_predict_samples = n_predict_samples

    def _default_flow(self, n_rows: int) -> FlowEstimator:
        return _default_regression_flow(n_rows)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> FlowRegressor:
        """Fit ``p(y | x)`` by (weighted) maximum likelihood.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Numeric inputs (encode categoricals first, e.g. with a
            ColumnTransformer in a Pipeline).
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Non-negative row weights of the likelihood, as in
            :meth:`skflow.base.FlowEstimator.fit`.

        Returns
        -------
        self : FlowRegressor
        """
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype="numeric", reset=True)
        y = np.asarray(y, dtype=np.float64)
        self._single_target = y.ndim == 1
        targets = y.reshape(len(y), -1)
        joint, sample_weight = _drop_zero_weights(np.hstack([targets, X.astype(np.float64)]), sample_weight)
        n_targets = targets.shape[1]
        self._fit_conditional(joint[:, :n_targets], joint[:, n_targets:], sample_weight)
        self.n_targets_ = n_targets
        return self

    def _inputs(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, dtype="numeric", reset=False).astype(np.float64, copy=False)

    def _targets(self, y: Any, n_rows: int) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64).reshape(n_rows, -1)
        if y.shape[1] != self.n_targets_:
            raise ValueError(f"y has {y.shape[1]} target column(s), but the model was fitted on {self.n_targets_}.")
        return y

    def score_samples(self, X: Any, y: Any) -> np.ndarray:
        """Conditional log-density ``log p(y | x)`` of each row, in ``y``'s units.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
            ``-inf`` where the model cannot score a row.
        """
        X = self._inputs(X)
        if len(np.asarray(y)) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(np.asarray(y))}.")
        return self._log_prob(self._targets(y, len(X)), X)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean conditional log-likelihood ``mean log p(y | x)`` (higher is better).

        See the Notes of the class for why this, not R^2.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        sample_weight : array-like of shape (n_samples,) or None, default=None

        Returns
        -------
        score : float
        """
        log_density = self.score_samples(X, y)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, log_density, ensure_non_negative=True)
        return float(np.average(log_density, weights=sample_weight))

    def sample_y(self, X: Any, n_samples: int = 1, random_state: Any = 0) -> np.ndarray:
        """Draw targets from ``p(y | x)`` for each row of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples_X, n_features)
        n_samples : int, default=1
            Draws per row.
        random_state : int, RandomState instance or None, default=0
            As :meth:`sklearn.gaussian_process.GaussianProcessRegressor.sample_y`.

        Returns
        -------
        y_samples : ndarray of shape (n_samples_X, n_samples) or (n_samples_X, n_targets, n_samples)
            The first shape for a single target fitted as 1-D ``y``.
        """
        draws = self._draw(self._inputs(X), n_samples, random_state)  # (n, s, k)
        return draws[:, :, 0] if self._single_target else draws.transpose(0, 2, 1)

    def _predictive_draws(self, X: Any) -> np.ndarray:
        return self._draw(self._inputs(X), self.n_predict_samples, 0)

    def predict(self, X: Any) -> np.ndarray:
        """Conditional mean ``E[y | x]``, a Monte Carlo average of ``n_predict_samples`` draws.

        The mean, not the median, so that ``predict`` minimises squared
        error as sklearn's regressors do; the median is
        ``predict_quantiles(X, [0.5])``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
        """
        mean = self._predictive_draws(X).mean(axis=1)
        return mean[:, 0] if self._single_target else mean

    def predict_quantiles(self, X: Any, quantiles: Any = (0.05, 0.5, 0.95)) -> np.ndarray:
        """Quantiles of each target given ``x`` (Monte Carlo, ``n_predict_samples`` draws).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        quantiles : array-like of float in [0, 1], default=(0.05, 0.5, 0.95)

        Returns
        -------
        y_quantiles : ndarray of shape (n_samples, n_quantiles) or (n_samples, n_targets, n_quantiles)
        """
        levels = np.asarray(quantiles, dtype=np.float64).ravel()
        if levels.size == 0 or np.any((levels < 0) | (levels > 1)) or not np.all(np.isfinite(levels)):
            raise ValueError(f"quantiles must be numbers in [0, 1], got {quantiles!r}.")
        values = np.quantile(self._predictive_draws(X), levels, axis=1)  # (q, n, k)
        values = values.transpose(1, 2, 0)
        return values[:, 0, :] if self._single_target else values

    def predict_interval(self, X: Any, alpha: float = 0.1) -> np.ndarray:
        """Central ``1 - alpha`` prediction interval of each target given ``x``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        alpha : float in (0, 1), default=0.1
            Miscoverage: the interval runs from the ``alpha / 2`` to the
            ``1 - alpha / 2`` quantile.

        Returns
        -------
        interval : ndarray of shape (n_samples, 2) or (n_samples, n_targets, 2)
            Lower and upper ends.
        """
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}.")
        return self.predict_quantiles(X, [alpha / 2, 1 - alpha / 2])

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        # score is a log-likelihood, not R^2: sklearn's "score > 0.5" check
        # of regressors is about R^2 and does not apply.
        tags.regressor_tags.poor_score = True
        tags.non_deterministic = False
        return tags


def logsumexp(values: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
    """``log(sum(exp(values)))`` along ``axis`` without overflow; -inf where every term is -inf."""
    peak = np.max(values, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):
        total = np.log(np.sum(np.exp(values - peak), axis=axis, keepdims=True)) + peak
    return total if keepdims else np.squeeze(total, axis=axis)


def _one_hot(codes: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes)[codes]


class FlowClassifier(ClassifierMixin, _ConditionalFlowEstimator):
    """Generative classification with class-conditional flow densities and Bayes' rule.

    Learns ``p(x | class)`` with a flow family and predicts
    ``P(class | x) = pi_k p(x | k) / sum_j pi_j p(x | j)`` (with the
    likelihoods tempered by a fitted ``T``, see ``calibration``). The same model
    gives ``log p(x) = log sum_k pi_k p(x | k)`` (:meth:`score_samples`),
    which flags inputs that belong to no class. By default two such models
    are fitted, one flow per class and one flow shared by the classes, and
    their posteriors averaged (``strategy="ensemble"``).

    Parameters
    ----------
    flow : skflow density estimator or None, default=None
        The family and its settings, used unfitted as a template (see
        :class:`FlowRegressor`); None uses ``RealNVPDensity(n_layers=4,
        hidden_dims=(64, 64), max_epochs=60, patience=15, weight_decay=1e-4,
        noise_std=0.1, init="identity", random_state=0)``: on breast cancer and digits
        (``benchmarks/conditional.py``) it gave a lower test log-loss than the
        regressor's spline flow with either strategy (0.163 against 0.225
        per class on breast cancer, 0.172 against 0.271 on digits).
    strategy : {"ensemble", "per_class", "conditional"}, default="ensemble"
        ``"per_class"`` fits one flow per class; ``"conditional"`` one flow
        whose conditioners see the one-hot class (shared weights: cheaper
        per class, and small classes borrow strength from large ones).
        ``"ensemble"`` fits both (the cost of the two fits together) and
        predicts the mean of their two calibrated posteriors; its densities
        (:meth:`class_log_likelihood`, :meth:`score_samples`) are the equal
        mixture of the two models'. Each strategy alone now and then gives a
        test row a probability near 0 for its own class, and the two rarely
        on the same row, so the mean posterior's log-loss is lower than
        either's: over six 75/25 splits (``benchmarks/conditional.py --part
        classification --seeds 6``) the test log-loss was 0.085 (ensemble)
        against 0.152 (per class), 0.112 (conditional) and 0.111 (QDA) on
        breast cancer, 0.125 against 0.156, 0.222 and 0.420 on digits, with
        the best flow accuracy on both (0.971 and 0.975; see the user
        guide). The two posteriors get equal weights: a weight fitted on the
        held-out rows did worse (0.136 and 0.133), because the rare
        overconfident errors the average guards against seldom fall among a
        few dozen held-out rows.
    context_embedding : tuple of int or None, default=None
        With ``strategy="conditional"`` (and the ensemble's shared flow):
        widths of a learned embedding of the one-hot class (see
        :class:`FlowRegressor`).
    priors : array-like of shape (n_classes,) or None, default=None
        Class priors ``pi``; None uses the (weighted) class frequencies.
    calibration : {"temperature"} or None, default="temperature"
        ``"temperature"`` tempers the class likelihoods in the posterior,
        ``P(k | x) ~ pi_k p(x | k)^(1/T)``, with ``T`` fitted after training
        by minimising the log-loss on the rows the training engine held out
        for early stopping (``validation_fraction`` of each class; no flow
        trained on them, they only chose the epoch kept), with ``T >= 1``. Flows fitted to a few hundred rows in tens of
        dimensions overstate how much more likely a row is under one class
        than another, and ``T`` (usually above 1) scales that back: the
        usual post-hoc temperature scaling of a classifier's logits, here
        of the log-likelihoods, so that the priors keep their meaning. Only
        ``predict_proba``, ``predict_log_proba`` and ``predict`` use it;
        ``class_log_likelihood`` and ``score_samples`` stay densities.
        ``T = 1`` without held-out rows (``validation_fraction=None`` or too
        few rows). With ``"ensemble"``, each of the two models fits its own
        ``T`` on its own held-out rows. None: plain Bayes' rule.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    class_prior_ : ndarray of shape (n_classes,)
    temperature_ : float or ndarray of shape (2,)
        The fitted ``T`` (1.0 with ``calibration=None``); with
        ``strategy="ensemble"``, the per-class and the shared model's.
    n_calibration_rows_ : int or ndarray of shape (2,)
        Number of held-out rows ``T`` was fitted on (per model, as
        ``temperature_``).
    members_ : list of FlowClassifier
        With ``strategy="ensemble"``: the fitted ``"per_class"`` and
        ``"conditional"`` classifiers, in that order.
    estimators_ : list of FlowEstimator
        With ``strategy="per_class"``: the fitted flow of each class.
    model_, history_, n_iter_, best_epoch_, device_
        With ``strategy="conditional"``: as :class:`FlowRegressor`.
    flow_ : skflow density estimator
        The unfitted clone of ``flow`` behind the fitted flows.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)

    See Also
    --------
    sklearn.discriminant_analysis.QuadraticDiscriminantAnalysis : Gaussian class densities.
    sklearn.naive_bayes.GaussianNB : Independent Gaussian features per class.

    Examples
    --------
    >>> from sklearn.datasets import make_moons
    >>> from skflow import FlowClassifier, RealNVPDensity
    >>> X, y = make_moons(300, noise=0.1, random_state=0)
    >>> flow = RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=5, random_state=0)
    >>> classifier = FlowClassifier(flow=flow).fit(X, y)
    >>> classifier.predict_proba(X[:2]).shape
    (2, 2)
    """

    _parameter_constraints: ClassVar[dict] = {
        **_ConditionalFlowEstimator._parameter_constraints,
        "strategy": [StrOptions({"ensemble", "per_class", "conditional"})],
        "priors": ["array-like", None],
        "calibration": [StrOptions({"temperature"}), None],
    }

    # The ensemble's members, in the order of members_ and temperature_.
    _ENSEMBLE: ClassVar[tuple[str, str]] = ("per_class", "conditional")

    def __init__(
        self,
        *,
        flow: FlowEstimator | None = None,
        strategy: str = "ensemble",
        context_embedding: tuple | None = None,
        priors: Any = None,
        calibration: str | None = "temperature",
    ) -> None:
        super().__init__(flow=flow, context_embedding=context_embedding)
        self.strategy = strategy
        self.priors = priors
        self.calibration = calibration

    def _default_flow(self, n_rows: int) -> FlowEstimator:
        # Class densities of tens of dimensions from a few hundred rows: a
        # small RealNVP with noise regularisation. The regressor's spline
        # flow models a few target columns and was worse here on both
        # benchmark tables (see the flow parameter's documentation). The
        # Gaussian start (RealNVPDensity's own default) is off: on digits
        # each class has pixels that are almost constant, and per-class flows
        # started at their shrunk Gaussians had a test log-loss of 0.42
        # against 0.17 from the identity start.
        from .realnvp import RealNVPDensity

        return RealNVPDensity(
            n_layers=4,
            hidden_dims=(64, 64),
            max_epochs=60,
            patience=15,
            weight_decay=1e-4,
            noise_std=0.1,
            init="identity",
            random_state=0,
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> FlowClassifier:
        """Fit the class-conditional densities and the class priors.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels.
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Non-negative row weights (weighted likelihood and priors).

        Returns
        -------
        self : FlowClassifier
        """
        previous_state = dict(self.__dict__)
        # A refit starts bare: what an earlier fit with another strategy left
        # (members_, estimators_, model_) would otherwise decide how this
        # one predicts.
        # (Fitted attributes only: private state such as a metadata request stays.)
        for key in [key for key in vars(self) if key.endswith("_") and not key.startswith("_")]:
            delattr(self, key)
        self.__dict__.pop("_validation_index", None)
        try:
            self._fit(X, y, sample_weight)
        except BaseException:
            # A failed fit leaves an earlier fitted state exactly as it was.
            self.__dict__.clear()
            self.__dict__.update(previous_state)
            raise
        return self

    def _fit(self, X: Any, y: Any, sample_weight: Any) -> None:
        X, y = validate_data(self, X, y, dtype="numeric", reset=True)
        check_classification_targets(y)
        X = X.astype(np.float64, copy=False)
        weights = np.ones(len(X)) if sample_weight is None else sample_weight
        weights = _check_sample_weight(weights, X, dtype=np.float64, ensure_non_negative=True)
        # Rows of weight 0 are left out entirely, as in every skflow fit; a
        # class with no weight left is then no class at all.
        X, y, weights = X[weights > 0], y[weights > 0], weights[weights > 0]
        self.classes_, codes = np.unique(y, return_inverse=True)
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ValueError(f"FlowClassifier needs at least 2 classes; got {n_classes} class.")
        if self.priors is None:
            mass = np.bincount(codes, weights=weights, minlength=n_classes)
            self.class_prior_ = mass / mass.sum()
        else:
            priors = np.asarray(self.priors, dtype=np.float64)
            if priors.shape != (n_classes,) or np.any(priors < 0) or not np.isclose(priors.sum(), 1.0):
                raise ValueError(f"priors must be {n_classes} non-negative numbers summing to 1, got {self.priors!r}.")
            self.class_prior_ = priors
        weighted = sample_weight is not None
        if self.strategy == "ensemble":
            # Each member is an ordinary classifier of one strategy, fitted on
            # the same rows and weights with the same seeds, and calibrated on
            # its own held-out rows: members_[0] is exactly
            # FlowClassifier(strategy="per_class") fitted alone, and so on.
            self.members_ = [
                clone(self).set_params(strategy=strategy).fit(X, y, sample_weight=weights if weighted else None)
                for strategy in self._ENSEMBLE
            ]
            self.flow_ = self.members_[0].flow_
            self.temperature_: float | np.ndarray = np.array([member.temperature_ for member in self.members_])
            self.n_calibration_rows_: int | np.ndarray = np.array(
                [member.n_calibration_rows_ for member in self.members_]
            )
            return
        held_out: list[np.ndarray] = []  # positions in X of rows no flow trained on
        if self.strategy == "per_class":
            self.flow_ = self._flow_template(len(X))
            self.estimators_ = []
            for k in range(n_classes):
                rows = np.flatnonzero(codes == k)
                estimator = clone(self.flow_)
                if weighted:
                    estimator.fit(X[rows], sample_weight=weights[rows])
                else:
                    estimator.fit(X[rows])
                self.estimators_.append(estimator)
                # A class's held-out rows are unseen by every flow: the
                # other classes' flows never see any of its rows.
                if getattr(estimator, "_validation_index", None) is not None:
                    held_out.append(rows[estimator._validation_index])
        else:
            self._fit_conditional(X, _one_hot(codes, n_classes), weights if weighted else None)
            if self._validation_index is not None:
                held_out.append(self._validation_index)
        self.temperature_ = 1.0
        self.n_calibration_rows_ = 0
        if self.calibration == "temperature" and held_out:
            index = np.concatenate(held_out)
            self.temperature_ = self._fitted_temperature(X[index], codes[index], weights[index])
            self.n_calibration_rows_ = len(index)

    def _fitted_temperature(self, X: np.ndarray, codes: np.ndarray, weights: np.ndarray) -> float:
        """The ``T`` minimising the weighted log-loss of ``pi_k p(x | k)^(1/T)`` on held-out rows."""
        from scipy.optimize import minimize_scalar

        log_likelihood = self.class_log_likelihood(X)
        usable = np.isfinite(log_likelihood).all(axis=1)
        if not usable.any():
            return 1.0
        log_likelihood, codes, weights = log_likelihood[usable], codes[usable], weights[usable]
        log_prior = np.log(np.maximum(self.class_prior_, np.finfo(float).tiny))

        def log_loss(log_temperature: float) -> float:
            joint = log_prior + log_likelihood / np.exp(log_temperature)
            log_posterior = joint - logsumexp(joint, axis=1, keepdims=True)
            return float(-np.average(log_posterior[np.arange(len(codes)), codes], weights=weights))

        # T from 1 (the flows' own posterior) to about 1100 (close to the
        # priors alone). T < 1 would sharpen the posterior, and a few dozen
        # held-out rows cannot support that: when they happen to be
        # separated perfectly, their log-loss keeps falling as T -> 0, and
        # the old lower bound of 1/20 was chosen (breast cancer: test
        # log-loss 1.19 at T = 1/20 against 0.11 at the flows' own T).
        result = minimize_scalar(log_loss, bounds=(0.0, 7.0), method="bounded", options={"xatol": 1e-4})
        # The bounded search never evaluates the bounds themselves; when the
        # loss falls all the way to one, that bound is the answer.
        return float(np.exp(min((result.x, 0.0, 7.0), key=log_loss)))

    def class_log_likelihood(self, X: Any) -> np.ndarray:
        """``log p(x | k)`` of each row under each class, in ``X``'s units.

        With ``strategy="ensemble"``, the density of the equal mixture of the
        two models' class densities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_likelihood : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype="numeric", reset=False).astype(np.float64, copy=False)
        if hasattr(self, "members_"):
            members = np.stack([member.class_log_likelihood(X) for member in self.members_])
            return logsumexp(members, axis=0) - np.log(len(self.members_))
        if hasattr(self, "estimators_"):
            return np.column_stack([estimator.score_samples(X) for estimator in self.estimators_])
        n_classes = len(self.classes_)
        return np.column_stack(
            [self._log_prob(X, np.repeat(_one_hot(np.array([k]), n_classes), len(X), axis=0)) for k in range(n_classes)]
        )

    def _joint_log_likelihood(self, X: Any, temperature: float = 1.0) -> np.ndarray:
        """``log pi_k + log p(x | k) / temperature``, shape ``(n_samples, n_classes)``."""
        with np.errstate(divide="ignore"):
            return self.class_log_likelihood(X) / temperature + np.log(self.class_prior_)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log posterior class probabilities by Bayes' rule, likelihoods tempered by ``temperature_``.

        With ``strategy="ensemble"``, the log of the mean of the two models'
        posteriors (each tempered by its own ``T``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Rows no class can score (all ``-inf``) get uniform probabilities.
        """
        check_is_fitted(self)
        if hasattr(self, "members_"):
            X = validate_data(self, X, dtype="numeric", reset=False).astype(np.float64, copy=False)
            members = np.stack([member.predict_log_proba(X) for member in self.members_])
            return logsumexp(members, axis=0) - np.log(len(self.members_))
        joint = self._joint_log_likelihood(X, float(self.temperature_))  # a single model's T
        dead = ~np.isfinite(joint).any(axis=1)
        joint[dead] = 0.0
        joint = np.where(np.isnan(joint), -np.inf, joint)
        return joint - logsumexp(joint, axis=1, keepdims=True)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Posterior class probabilities ``P(k | x)``, shape ``(n_samples, n_classes)``."""
        return np.exp(self.predict_log_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class of each row, shape ``(n_samples,)``."""
        log_proba = self.predict_log_proba(X)  # first: raises NotFittedError before classes_ is read
        return self.classes_[np.argmax(log_proba, axis=1)]

    def score_samples(self, X: Any) -> np.ndarray:
        """Log-density of each row under the class mixture, ``log sum_k pi_k p(x | k)``.

        Low values flag inputs unlike every class (out-of-distribution
        detection).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
        """
        return logsumexp(self._joint_log_likelihood(X), axis=1)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags
