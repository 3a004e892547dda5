"""Continuous normalizing flows as estimators: CNFDensity and FlowMatchingDensity.

Both learn a vector field ``f(z, t)`` whose ODE carries the (standardised)
data at ``t = 0`` to a standard normal latent at ``t = 1``; they differ in
how they train it. :class:`CNFDensity` maximises the likelihood through the
ODE solve (FFJORD, optionally regularised as RNODE and augmented);
:class:`FlowMatchingDensity` regresses the field on the optimal-transport
conditional velocity without solving any ODE during training.
"""

from __future__ import annotations

import dataclasses
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar

from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .base import FlowEstimator, shared_constraints
from .flows.continuous import (
    CNF,
    ContinuousFlow,
    FlowMatching,
    SolverSettings,
    TimeConditionedMLP,
    check_smooth_activation,
)

__all__ = ["CNFDensity", "FlowMatchingDensity"]

# FlowMatchingDensity's hidden_dims="auto": two layers of
# max(_AUTO_MIN_WIDTH, _AUTO_WIDTH_PER_FEATURE * n_features) units. 128 is
# the width that fits two moons; on 64-D digits 128 units stayed 7.8 nats
# per row below a tuned GaussianMixture and 512 units beat it by 4.7
# (benchmarks/flow_matching_defaults.py).
_AUTO_MIN_WIDTH = 128
_AUTO_WIDTH_PER_FEATURE = 8


class _ContinuousFlowEstimator(FlowEstimator):
    """Hyperparameters and plumbing shared by the continuous families."""

    if TYPE_CHECKING:  # the fitted model's class (see FlowEstimator)
        model_: ContinuousFlow = dataclasses.field(init=False)

    hidden_dims: tuple | str = (64, 64)  # a string only where a family allows one ("auto")
    activation: str = "tanh"
    solver: str = "dopri5"
    rtol: float = 1e-4
    atol: float = 1e-5
    n_steps: int = 20
    adjoint: bool = False
    evaluation_trace: str = "exact"
    validation_n_steps: int | None = None

    _parameter_constraints: ClassVar[dict] = {
        **FlowEstimator._parameter_constraints,
        **shared_constraints("hidden_dims", "activation"),
        "solver": [StrOptions({"dopri5", "rk4"})],
        "rtol": [Interval(Real, 0, None, closed="neither")],
        "atol": [Interval(Real, 0, None, closed="neither")],
        "n_steps": [Interval(Integral, 1, None, closed="left")],
        "adjoint": ["boolean"],
        "evaluation_trace": [StrOptions({"exact", "rademacher", "gaussian"})],
        "validation_n_steps": [Interval(Integral, 1, None, closed="left"), None],
    }

    def _solver_settings(self) -> SolverSettings:
        return SolverSettings(self.solver, float(self.rtol), float(self.atol), int(self.n_steps), bool(self.adjoint))

    def _validation_settings(self) -> SolverSettings | None:
        if self.validation_n_steps is None:
            return None
        return SolverSettings("rk4", float(self.rtol), float(self.atol), int(self.validation_n_steps), False)

    def _field(self, n_state: int, n_context: int = 0, hidden_dims: tuple | None = None) -> TimeConditionedMLP:
        check_smooth_activation(self.activation)
        widths = tuple(self.hidden_dims) if hidden_dims is None else hidden_dims
        return TimeConditionedMLP(n_state, widths, self.activation, n_context=n_context)

    @property
    def nfe_(self) -> int:
        """Function evaluations of the model's last ODE solve.

        Updated by every solve (the last training step, ``score_samples``,
        ``transform``, ``inverse_transform``, ``sample``); inputs larger than
        the inference batch are solved in several batches and this reports
        the last one. Use it to tune ``solver``, ``rtol``/``atol`` and the
        RNODE weights.
        """
        check_is_fitted(self)
        return int(self.model_.nfe)


_SHARED_PARAMETERS_DOC = """\
    hidden_dims : tuple of int, default=(64, 64)
        Hidden widths of the vector-field MLP; the time is fed to every layer.
    activation : str, default="tanh"
        A smooth activation: "tanh", "softplus", "silu", "gelu" or "elu"
        (ReLU is rejected: the trace term needs a smooth field).
    solver : {"dopri5", "rk4"}, default="dopri5"
        Adaptive Dormand-Prince 5(4) with tolerances ``rtol``/``atol``, or
        classical RK4 with ``n_steps`` equal steps (no error control). When
        scoring, encoding, decoding or sampling, ``dopri5`` controls the step
        size of each row separately, so a row's result does not depend on the
        rows scored with it (training solves a batch with one shared step
        sequence, which backpropagates more cheaply).
    rtol, atol : float, default=1e-4, 1e-5
        Tolerances of ``dopri5``.
    n_steps : int, default=20
        Steps of ``rk4`` over ``[0, 1]``.
    adjoint : bool, default=False
        Backpropagate with the adjoint method (memory independent of the
        number of solver steps; a second ODE solve per training step).
    evaluation_trace : {"exact", "rademacher", "gaussian"}, default="exact"
        Trace in ``score_samples``. "exact" gives the model's exact
        log-density up to solver error: with one or two hidden layers it is
        a closed-form matrix product per function evaluation (see
        :meth:`skflow.flows.continuous.TimeConditionedMLP.velocity_and_trace`),
        with more it takes ``d`` backward passes. The Hutchinson options
        cost one backward pass and give an unbiased but noisy estimate of it
        (fixed probes, so repeated calls agree), for deep fields in high
        dimension.
    validation_n_steps : int or None, default=None
        If set, the held-out log-likelihood monitored during ``fit`` (early
        stopping, choice of the best epoch) integrates with RK4 in this many
        steps instead of ``solver``: cheaper, slightly less accurate.
        ``score_samples`` always uses ``solver``."""


_SHARED_HIDDEN_DIMS_DOC = """\
    hidden_dims : tuple of int, default=(64, 64)
        Hidden widths of the vector-field MLP; the time is fed to every layer."""
assert _SHARED_HIDDEN_DIMS_DOC in _SHARED_PARAMETERS_DOC

_AUTO_HIDDEN_DIMS_DOC = """\
    hidden_dims : tuple of int or "auto", default="auto"
        Hidden widths of the vector-field MLP; the time is fed to every layer.
        "auto" gives two layers of ``max(128, 8 * n_features)`` units: 128 on
        two moons, 512 on 64-pixel digits (see the ablation in
        ``benchmarks/flow_matching_defaults.py``). With one or two hidden
        layers the exact trace in ``score_samples`` is one matrix product."""


class CNFDensity(_ContinuousFlowEstimator):
    __doc__ = f"""Density estimation with a continuous normalizing flow (FFJORD).

    A neural ODE ``dz/dt = f(z, t)`` carries each standardised row from
    ``t = 0`` to a standard normal latent at ``t = 1``; the log-density is
    ``log N(z(1)) + integral_0^1 tr(df/dz) dt``. Training maximises the
    likelihood through the solve with Hutchinson's trace estimator; RNODE
    penalties on the kinetic energy and the Jacobian's Frobenius norm make
    the dynamics easier to integrate (fewer function evaluations, see
    ``nfe_``).

    Parameters
    ----------
{_SHARED_PARAMETERS_DOC}
    trace_estimator : {{"rademacher", "gaussian", "exact"}}, default="rademacher"
        Trace in the training loss: Hutchinson's estimator with one
        Rademacher or Gaussian probe per row (fixed along the trajectory), or
        the exact trace (noise-free; a closed-form matrix product for one or
        two hidden layers when both RNODE weights are 0, else ``d``
        backward passes).
    kinetic_weight : float, default=0.01
        RNODE weight of ``integral ||f||^2 dt``; 0 disables it.
    jacobian_weight : float, default=0.01
        RNODE weight of ``integral ||df/dz||_F^2 dt`` (estimated with the
        training probe); 0 disables it.
    n_augment : int, default=0
        Extra dimensions of the ODE state (augmented neural ODE), which let
        the flow realise maps a ``d``-dimensional homeomorphism cannot. They
        start as ``a ~ N(0, I)`` (not at 0, which would leave ``x`` without a
        density); the model is an exact joint density ``p(x, a)`` and its
        density of the data the marginal ``p(x)``. Training maximises the
        evidence lower bound; ``score_samples`` returns the log of an
        importance-sampling estimate of ``p(x)`` (unbiased for ``p(x)``, so a
        lower bound of ``log p(x)`` in expectation), with
        ``n_importance_samples`` draws fixed at fit time; ``sample`` is
        exact; ``transform`` gives the ``d + n_augment``-wide latent of
        ``(x, a = 0)``. See :class:`skflow.flows.continuous.CNF`.
    n_importance_samples : int, default=16
        Draws of the augmented coordinates per row in ``score_samples``
        (ignored without augmentation). Cost grows linearly.
    {{shared_training_parameters}}

    Attributes
    ----------
    nfe_ : int
        Function evaluations of the last ODE solve.
    {{shared_fitted_attributes}}

    See Also
    --------
    FlowMatchingDensity : The same model family trained without ODE solves.
    RealNVPDensity : A discrete flow; one network pass per density.

    References
    ----------
    R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud. "Neural Ordinary
    Differential Equations", NeurIPS 2018. arXiv:1806.07366.
    W. Grathwohl, R. T. Q. Chen, J. Bettencourt, I. Sutskever, D. Duvenaud.
    "FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative
    Models", ICLR 2019. arXiv:1810.01367.
    C. Finlay, J.-H. Jacobsen, L. Nurbekyan, A. Oberman. "How to train your
    neural ODE: the world of Jacobian and kinetic regularization", ICML 2020.
    arXiv:2002.02798.
    E. Dupont, A. Doucet, Y. W. Teh. "Augmented Neural ODEs", NeurIPS 2019.
    arXiv:1904.01681.

    Examples
    --------
    >>> from sklearn.datasets import make_moons
    >>> from skflow import CNFDensity
    >>> X, _ = make_moons(300, noise=0.05, random_state=0)
    >>> cnf = CNFDensity(hidden_dims=(32,), solver="rk4", n_steps=8, max_epochs=2,
    ...                  random_state=0).fit(X)
    >>> cnf.score_samples(X[:3]).shape
    (3,)
    >>> cnf.nfe_
    32
    """

    trace_estimator: str = "rademacher"
    kinetic_weight: float = 0.01
    jacobian_weight: float = 0.01
    n_augment: int = 0
    n_importance_samples: int = 16

    _parameter_constraints: ClassVar[dict] = {
        **_ContinuousFlowEstimator._parameter_constraints,
        "trace_estimator": [StrOptions({"rademacher", "gaussian", "exact"})],
        "kinetic_weight": [Interval(Real, 0, None, closed="left")],
        "jacobian_weight": [Interval(Real, 0, None, closed="left")],
        "n_augment": [Interval(Integral, 0, None, closed="left")],
        "n_importance_samples": [Interval(Integral, 1, None, closed="left")],
    }

    def build_model(self, n_features: int, *, n_context: int = 0) -> CNF:
        model = CNF(
            self._field(n_features + self.n_augment, n_context),
            n_features,
            self._solver_settings(),
            trace_estimator=self.trace_estimator,
            kinetic_weight=float(self.kinetic_weight),
            jacobian_weight=float(self.jacobian_weight),
            n_augment=int(self.n_augment),
            n_importance_samples=int(self.n_importance_samples),
            evaluation_trace=self.evaluation_trace,
            validation_solver=self._validation_settings(),
        )
        # float64: the solver's tolerances sit near float32 resolution, and
        # float32 rounding accumulated over many steps made a row's score
        # depend (at the 1e-7 level) on its position in the batch.
        return model.double()

    @property
    def _n_features_out(self) -> int:
        return self.n_features_in_ + self.n_augment


class FlowMatchingDensity(_ContinuousFlowEstimator):
    __doc__ = f"""Density estimation with a continuous flow trained by flow matching.

    Training is simulation-free: for a data row ``x``, noise ``e ~ N(0, I)``
    and a time ``s ~ U(0, 1)`` on the optimal-transport path between them,
    the vector field is regressed on the path's velocity (Lipman et al.,
    2023), one network pass per row. By default each batch pairs its rows
    with its noise draws by the exact optimal-transport assignment
    (minibatch OT coupling, Tong et al., 2024), which makes the learned
    field straighter and its density sharper. ``score_samples`` integrates the learned
    ODE with the exact trace (``log N(z(1)) + integral tr(df/dz) dt``),
    ``sample`` integrates from noise back to data. The training loss in
    ``history_`` is the regression loss; the validation loss is the held-out
    negative log-likelihood (by default with a cheap RK4 solve, see
    ``validation_n_steps``).

    Parameters
    ----------
{
        _SHARED_PARAMETERS_DOC.replace(_SHARED_HIDDEN_DIMS_DOC, _AUTO_HIDDEN_DIMS_DOC)
        .replace('default="tanh"', 'default="silu"')
        .replace("int or None, default=None", "int or None, default=8")
    }
    sigma_min : float, default=1e-4
        Width of the probability path at the data end, in standardised units.
    lr_schedule : {{"constant", "cosine"}}, default="constant"
        Learning rate over the epochs of a fit: held at ``lr``, or decayed
        from ``lr`` towards 0 at ``max_epochs`` along a half cosine. Within
        the default 200 epochs the decay helped the wide field on digits
        (512x512: -101.1 against -107.1 held out) but cost likelihood on two
        moons (-0.96 against -0.81) and on digits at 128x128 (-122.4
        against -119.7); see ``benchmarks/flow_matching_defaults.py``.
    coupling : {{"minibatch_ot", "independent"}}, default="minibatch_ot"
        Pairing of data rows with noise rows in each batch: the exact
        optimal-transport assignment of the batch (an ``O(batch_size^3)``
        assignment on the CPU per step, a few milliseconds at the default
        batch size), or independent draws (the original flow matching).
        On two moons (2,000 rows, defaults otherwise) the held-out
        log-likelihood was -0.81 with the coupling and -1.18 without
        (``benchmarks/flow_matching_defaults.py``).
    batch_size : int, default=64
        As in :class:`~skflow.base.FlowEstimator`, whose default is 256:
        flow matching's regression target is noisy and gains more from
        optimisation steps than from larger batches.
    lr : float, default=3e-3
        As in :class:`~skflow.base.FlowEstimator`, whose default is 1e-3.
    {{shared_training_parameters}}

    Attributes
    ----------
    nfe_ : int
        Function evaluations of the last ODE solve.
    {{shared_fitted_attributes}}

    See Also
    --------
    CNFDensity : The same model family trained by maximum likelihood.

    References
    ----------
    Y. Lipman, R. T. Q. Chen, H. Ben-Hamu, M. Nickel, M. Le. "Flow Matching
    for Generative Modeling", ICLR 2023. arXiv:2210.02747.
    A. Tong, K. Fatras, N. Malkin, G. Huguet, Y. Zhang, J. Rector-Brooks,
    G. Wolf, Y. Bengio. "Improving and generalizing flow-based generative
    models with minibatch optimal transport", TMLR 2024. arXiv:2302.00482.

    Examples
    --------
    >>> from sklearn.datasets import make_moons
    >>> from skflow import FlowMatchingDensity
    >>> X, _ = make_moons(300, noise=0.05, random_state=0)
    >>> fm = FlowMatchingDensity(hidden_dims=(32,), solver="rk4", n_steps=8,
    ...                          max_epochs=2, random_state=0).fit(X)
    >>> fm.sample(4, random_state=0).shape
    (4, 2)
    """

    activation: str = "silu"
    hidden_dims: tuple | str = "auto"
    validation_n_steps: int | None = 8
    sigma_min: float = 1e-4
    coupling: str = "minibatch_ot"
    lr_schedule: str = "constant"
    # More, smaller steps than the shared defaults: see the docstring.
    batch_size: int = 64
    lr: float = 3e-3

    _parameter_constraints: ClassVar[dict] = {
        **_ContinuousFlowEstimator._parameter_constraints,
        "hidden_dims": [tuple, list, StrOptions({"auto"})],
        "sigma_min": [Interval(Real, 0, 1, closed="left")],
        "coupling": [StrOptions({"minibatch_ot", "independent"})],
        "lr_schedule": [StrOptions({"constant", "cosine"})],
    }

    def _training_options(self) -> dict[str, Any]:
        return {"lr_schedule": self.lr_schedule}

    def _hidden_dims(self, n_features: int) -> tuple:
        """The field's hidden widths: ``hidden_dims``, or two layers of
        ``max(128, 8 * n_features)`` units when it is "auto"."""
        if self.hidden_dims == "auto":
            width = max(_AUTO_MIN_WIDTH, _AUTO_WIDTH_PER_FEATURE * n_features)
            return (width, width)
        return tuple(self.hidden_dims)

    def build_model(self, n_features: int, *, n_context: int = 0) -> FlowMatching:
        model = FlowMatching(
            self._field(n_features, n_context, self._hidden_dims(n_features)),
            n_features,
            self._solver_settings(),
            sigma_min=float(self.sigma_min),
            evaluation_trace=self.evaluation_trace,
            validation_solver=self._validation_settings(),
            coupling=self.coupling,
        )
        # float64: the solver's tolerances sit near float32 resolution, and
        # float32 rounding accumulated over many steps made a row's score
        # depend (at the 1e-7 level) on its position in the batch.
        return model.double()
