"""RealNVPDensity: affine coupling flows (Dinh et al., 2016) as an estimator."""

from __future__ import annotations

from numbers import Integral, Real
from typing import ClassVar

from sklearn.utils._param_validation import Interval, StrOptions

from .base import ExactFlowEstimator, FlowEstimator
from .flows.core import Bijection, Chain, ExactFlow
from .flows.coupling import AffineCoupling
from .flows.linear import ActNorm, Permutation
from .nn import MLP, resolve_activation

__all__ = ["RealNVPDensity", "check_coupling_features"]


def check_coupling_features(estimator: FlowEstimator, n_features: int) -> None:
    """Coupling flows split the features in two, so they need at least two."""
    if n_features < 2:
        raise ValueError(
            f"{type(estimator).__name__} needs at least 2 features, got {n_features} feature(s); "
            "a coupling layer splits the features in two."
        )


def mixing_layer(permutation: str, n_features: int, layer_index: int) -> tuple[list[Bijection], bool]:
    """The feature mixing before coupling layer ``layer_index``.

    Returns the bijections to insert and whether the coupling should flip its
    split. ``"random"`` draws a fixed random permutation from torch's (seeded)
    generator; ``"alternate"`` alternates which half passes unchanged.
    """
    if permutation == "random":
        return [Permutation.random(n_features)], False
    return [], layer_index % 2 == 1


class RealNVPDensity(ExactFlowEstimator):
    """Density estimation with a RealNVP flow (affine coupling layers).

    Each layer keeps half of the (standardised) features and rescales and
    shifts the other half by amounts computed from the kept half:
    ``y_b = x_b * exp(s(x_a)) + t(x_a)``. Layers are interleaved with feature
    permutations and, optionally, ActNorm. Density evaluation and sampling
    both cost one pass through the network.

    Parameters
    ----------
    n_layers : int, default=8
        Number of affine coupling layers.
    hidden_dims : tuple of int, default=(128, 128)
        Hidden widths of each layer's conditioner MLP.
    activation : str, default="relu"
        Activation of the conditioner ("relu", "silu", "tanh", "elu", ...).
    scale_bound : float, default=3.0
        Soft bound on each log-scale, ``s = b * tanh(s_raw / b)``; keeps
        training and inverses numerically stable.
    actnorm : bool, default=True
        Insert an ActNorm layer (data-dependent initialisation) before each
        coupling layer.
    permutation : {"random", "alternate"}, default="random"
        How features are mixed between coupling layers: a fixed random
        permutation before each layer, or alternating which half is kept.
    max_epochs, batch_size, lr, weight_decay, validation_fraction, patience, \
gradient_clip, callbacks, random_state, device, verbose
        Training parameters shared by every family; see
        :class:`~skflow.base.FlowEstimator`.
    n_base_components : int, default=1
        Base distribution; see :class:`~skflow.base.ExactFlowEstimator`.

    Attributes
    ----------
    model_, history_, n_iter_, best_epoch_, mean_, scale_, device_, \
n_features_in_, feature_names_in_
        See :class:`~skflow.base.FlowEstimator`.

    See Also
    --------
    sklearn.mixture.GaussianMixture : A classical density estimator.
    sklearn.neighbors.KernelDensity : Nonparametric density estimation.

    References
    ----------
    L. Dinh, J. Sohl-Dickstein, S. Bengio. "Density estimation using Real
    NVP", ICLR 2017. arXiv:1605.08803.

    Examples
    --------
    >>> from sklearn.datasets import make_moons
    >>> from skflow import RealNVPDensity
    >>> X, _ = make_moons(500, noise=0.05, random_state=0)
    >>> flow = RealNVPDensity(n_layers=4, max_epochs=5, random_state=0).fit(X)
    >>> flow.score_samples(X[:3]).shape
    (3,)
    >>> flow.sample(2, random_state=0).shape
    (2, 2)
    """

    n_layers: int = 8
    hidden_dims: tuple = (128, 128)
    activation: str = "relu"
    scale_bound: float = 3.0
    actnorm: bool = True
    permutation: str = "random"

    _parameter_constraints: ClassVar[dict] = {
        **ExactFlowEstimator._parameter_constraints,
        "n_layers": [Interval(Integral, 1, None, closed="left")],
        "hidden_dims": [tuple, list],
        "activation": [str, type],
        "scale_bound": [Interval(Real, 0, None, closed="neither")],
        "actnorm": ["boolean"],
        "permutation": [StrOptions({"random", "alternate"})],
    }

    def build_model(self, n_features: int) -> ExactFlow:
        check_coupling_features(self, n_features)
        resolve_activation(self.activation)
        n_identity = n_features // 2
        layers: list[Bijection] = []
        for index in range(self.n_layers):
            if self.actnorm:
                layers.append(ActNorm(n_features))
            mixing, flip = mixing_layer(self.permutation, n_features, index)
            layers.extend(mixing)
            kept = n_features - n_identity if flip else n_identity
            conditioner = MLP(
                kept,
                2 * (n_features - kept),
                self.hidden_dims,
                self.activation,
                zero_init_last=True,
            )
            layers.append(AffineCoupling(n_features, kept, conditioner, flip=flip, scale_bound=self.scale_bound))
        return ExactFlow(Chain(layers), self.base_distribution(n_features))



