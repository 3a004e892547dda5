"""NeuralSplineDensity: rational-quadratic neural spline flows (Durkan et
al., 2019) as an estimator, with coupling or autoregressive conditioners."""

from __future__ import annotations

from numbers import Integral, Real
from typing import ClassVar

from sklearn.utils._param_validation import Interval, StrOptions

from ._builders import autoregressive_order, check_coupling_features, coupling_stack
from .base import ExactFlowEstimator, shared_constraints
from .flows.autoregressive import MADE
from .flows.core import Bijection, Chain, ExactFlow
from .flows.linear import ActNorm
from .flows.splines import (
    MaskedRationalQuadraticAutoregressive,
    RationalQuadraticCoupling,
    spline_params_per_feature,
)
from .nn import MLP, resolve_activation

__all__ = ["NeuralSplineDensity"]


class NeuralSplineDensity(ExactFlowEstimator):
    """Density estimation with a neural spline flow.

    Each layer passes every transformed feature through its own monotone
    rational-quadratic spline on ``[-tail_bound, tail_bound]`` (the identity
    outside, with matching slope, so the map is smooth everywhere). The
    spline's ``3 * n_bins - 1`` parameters per feature come from a neural
    network that sees either the other half of the features (coupling) or
    the preceding features (autoregressive). An optional ActNorm precedes
    each layer, which keeps the standardised data mostly inside the bounds.

    Parameters
    ----------
    variant : {"coupling", "autoregressive"}, default="coupling"
        ``"coupling"``: half the features condition the splines of the other
        half; densities and samples both cost one pass per layer. Needs at
        least 2 features. ``"autoregressive"``: a MADE conditions feature
        ``i`` on all features before it (more expressive per layer);
        densities cost one pass per layer, samples ``n_features`` passes.
    n_layers : int, default=4
        Number of spline layers.
    n_bins : int, default=8
        Number of spline pieces ``K`` per feature and layer.
    tail_bound : float, default=3.0
        Half-width ``B`` of the interval the splines act on, in standardised
        units; outside it a layer is the identity.
    hidden_dims : tuple of int, default=(128, 128)
        Hidden widths of each layer's conditioner (MLP or MADE).
    activation : str, default="relu"
        Activation of the conditioner.
    actnorm : bool, default=True
        Insert an ActNorm layer (data-dependent initialisation) before each
        spline layer.
    permutation : {"random", "alternate"}, default="random"
        Coupling variant only: a fixed random permutation before each layer,
        or alternating which half is kept. The autoregressive variant
        reverses the variable order between layers.
    {shared_training_parameters}
    {exact_base_parameters}

    Attributes
    ----------
    {shared_fitted_attributes}

    See Also
    --------
    MAFDensity : Affine autoregressive layers.
    RealNVPDensity : Affine coupling layers.

    References
    ----------
    C. Durkan, A. Bekasov, I. Murray, G. Papamakarios. "Neural Spline
    Flows", NeurIPS 2019. arXiv:1906.04032.

    Examples
    --------
    >>> from sklearn.datasets import make_moons
    >>> from skflow import NeuralSplineDensity
    >>> X, _ = make_moons(500, noise=0.05, random_state=0)
    >>> flow = NeuralSplineDensity(n_layers=2, hidden_dims=(32,), max_epochs=5, random_state=0).fit(X)
    >>> flow.score_samples(X[:3]).shape
    (3,)
    >>> flow.sample(2, random_state=0).shape
    (2, 2)
    """

    variant: str = "coupling"
    n_layers: int = 4
    n_bins: int = 8
    tail_bound: float = 3.0
    hidden_dims: tuple = (128, 128)
    activation: str = "relu"
    actnorm: bool = True
    permutation: str = "random"

    _parameter_constraints: ClassVar[dict] = {
        **ExactFlowEstimator._parameter_constraints,
        "variant": [StrOptions({"coupling", "autoregressive"})],
        **shared_constraints("n_layers", "hidden_dims", "activation", "actnorm", "permutation"),
        "n_bins": [Interval(Integral, 2, None, closed="left")],
        "tail_bound": [Interval(Real, 0, None, closed="neither")],
    }

    def build_model(self, n_features: int, *, n_context: int = 0) -> ExactFlow:
        if self.variant == "coupling":
            check_coupling_features(self, n_features, n_context)
        resolve_activation(self.activation)
        params_per_feature = spline_params_per_feature(self.n_bins)

        def make_coupling(kept: int, flip: bool) -> RationalQuadraticCoupling:
            conditioner = MLP(
                kept + n_context,
                (n_features - kept) * params_per_feature,
                self.hidden_dims,
                self.activation,
                zero_init_last=True,
            )
            return RationalQuadraticCoupling(
                n_features, kept, conditioner, flip, self.n_bins, self.tail_bound, n_context=n_context
            )

        def make_autoregressive(index: int) -> MaskedRationalQuadraticAutoregressive:
            order = autoregressive_order(n_features, index)
            made = MADE(
                n_features,
                params_per_feature,
                self.hidden_dims,
                self.activation,
                order=order,
                zero_init_last=True,
                n_context=n_context,
            )
            return MaskedRationalQuadraticAutoregressive(made, self.n_bins, self.tail_bound)

        steps: list[list[Bijection]]
        if self.variant == "autoregressive":
            steps = [[make_autoregressive(index)] for index in range(self.n_layers)]
        else:
            steps = coupling_stack(n_features, self.n_layers, self.permutation, make_coupling)
        layers: list[Bijection] = []
        for step in steps:
            layers.extend([ActNorm(n_features), *step] if self.actnorm else step)
        return ExactFlow(Chain(layers), self.base_distribution(n_features, n_context))
