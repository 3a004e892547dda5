"""MAFDensity and IAFDensity: affine autoregressive flows as estimators
(Papamakarios et al., 2017; Kingma et al., 2016).

Both stack the same MADE-conditioned affine layer; they differ only in which
direction the layer's one-pass computation serves, so they share one builder.
"""

from __future__ import annotations

from typing import ClassVar

from ._builders import autoregressive_order
from .base import ExactFlowEstimator, shared_constraints
from .flows.autoregressive import MADE, InverseAutoregressive, MaskedAffineAutoregressive
from .flows.core import Bijection, Chain, ExactFlow
from .flows.elementwise import Affine
from .flows.linear import ActNorm
from .nn import resolve_activation

__all__ = ["IAFDensity", "MAFDensity"]

_AFFINE_CONSTRAINTS: dict = {
    **shared_constraints("n_layers", "hidden_dims", "activation", "scale_bound", "actnorm"),
}


class _AffineAutoregressiveDensity(ExactFlowEstimator):
    """Hyperparameters and builder shared by MAF and IAF (not public).

    Both stack the same MADE-conditioned affine layer; ``_inverse`` turns
    every layer round (IAF).
    """

    n_layers: int = 5
    hidden_dims: tuple = (128, 128)
    activation: str = "relu"
    scale_bound: float = 3.0
    actnorm: bool = True

    _inverse: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict] = {**ExactFlowEstimator._parameter_constraints, **_AFFINE_CONSTRAINTS}

    def build_model(self, n_features: int, *, n_context: int = 0) -> ExactFlow:
        resolve_activation(self.activation)
        layers: list[Bijection] = []
        for index in range(self.n_layers):
            if self.actnorm:
                layers.append(ActNorm(n_features))
            made = MADE(
                n_features,
                Affine.n_params,
                self.hidden_dims,
                self.activation,
                order=autoregressive_order(n_features, index),
                zero_init_last=True,
                n_context=n_context,
            )
            layer = MaskedAffineAutoregressive(made, scale_bound=self.scale_bound)
            layers.append(InverseAutoregressive(layer) if self._inverse else layer)
        return ExactFlow(Chain(layers), self.base_distribution(n_features, n_context))


class MAFDensity(_AffineAutoregressiveDensity):
    """Density estimation with a masked autoregressive flow (MAF).

    Each layer transforms the (standardised) features one after another,
    ``z_i = (x_i - mu_i(x_<i)) * exp(-a_i(x_<i))``, with every ``mu_i`` and
    ``a_i`` computed at once by a masked network (MADE). The variable order
    is reversed between layers; an optional ActNorm precedes each layer.

    Speed trade-off against :class:`IAFDensity`: MAF evaluates densities
    (``score_samples``, ``score``, ``transform`` and training itself) in one
    network pass per layer, but draws samples (``sample``,
    ``inverse_transform``) in ``n_features`` sequential passes per layer.
    IAF is the exact opposite. Choose MAF when fitting and scoring matter
    most, which is the usual case for density estimation and outlier
    detection.

    Parameters
    ----------
    n_layers : int, default=5
        Number of autoregressive layers.
    hidden_dims : tuple of int, default=(128, 128)
        Hidden widths of each layer's MADE. Widths below
        ``n_features - 1`` cannot express every allowed dependency.
    activation : str, default="relu"
        Activation of the MADE ("relu", "silu", "tanh", "elu", ...).
    scale_bound : float, default=3.0
        Soft bound on each log-scale, ``a = b * tanh(a_raw / b)``; keeps
        training and sampling numerically stable.
    actnorm : bool, default=True
        Insert an ActNorm layer (data-dependent initialisation) before each
        autoregressive layer.
    {shared_training_parameters}
    {exact_base_parameters}

    Attributes
    ----------
    {shared_fitted_attributes}

    See Also
    --------
    IAFDensity : The same layers used the other way round (fast sampling).
    NeuralSplineDensity : Autoregressive or coupling layers with spline maps.
    RealNVPDensity : Affine coupling layers (one pass both ways).

    References
    ----------
    G. Papamakarios, T. Pavlakou, I. Murray. "Masked Autoregressive Flow for
    Density Estimation", NeurIPS 2017. arXiv:1705.07057.

    M. Germain, K. Gregor, I. Murray, H. Larochelle. "MADE: Masked
    Autoencoder for Distribution Estimation", ICML 2015. arXiv:1502.03509.

    Examples
    --------
    >>> from sklearn.datasets import make_moons
    >>> from skflow import MAFDensity
    >>> X, _ = make_moons(500, noise=0.05, random_state=0)
    >>> flow = MAFDensity(n_layers=3, hidden_dims=(32, 32), max_epochs=5, random_state=0).fit(X)
    >>> flow.score_samples(X[:3]).shape
    (3,)
    >>> flow.sample(2, random_state=0).shape
    (2, 2)
    """


class IAFDensity(_AffineAutoregressiveDensity):
    """Density estimation with an inverse autoregressive flow (IAF).

    The layer of :class:`MAFDensity` used the other way round: the masked
    network (MADE) reads the *latent* features, and sampling computes
    ``x_i = (z_i - mu_i(z_<i)) * exp(-a_i(z_<i))`` for every feature at once.
    Densities of arbitrary data are still exact: the data-to-latent map is
    inverted feature by feature.

    Speed trade-off against :class:`MAFDensity`: IAF draws samples
    (``sample``, ``inverse_transform``) in one network pass per layer, but
    evaluates densities (``score_samples``, ``score``, ``transform`` and
    every training step) in ``n_features`` sequential passes per layer, so
    fitting is about ``n_features`` times slower than MAF's. Choose IAF when
    many samples are drawn from a model fitted on few features; otherwise
    prefer MAF.

    Parameters
    ----------
    n_layers : int, default=5
        Number of autoregressive layers.
    hidden_dims : tuple of int, default=(128, 128)
        Hidden widths of each layer's MADE.
    activation : str, default="relu"
        Activation of the MADE.
    scale_bound : float, default=3.0
        Soft bound on each log-scale.
    actnorm : bool, default=True
        Insert an ActNorm layer before each autoregressive layer.
    {shared_training_parameters}
    {exact_base_parameters}

    Attributes
    ----------
    {shared_fitted_attributes}

    See Also
    --------
    MAFDensity : The same layers with fast density evaluation.

    References
    ----------
    D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever,
    M. Welling. "Improved Variational Inference with Inverse Autoregressive
    Flow", NeurIPS 2016. arXiv:1606.04934.

    Examples
    --------
    >>> from sklearn.datasets import make_moons
    >>> from skflow import IAFDensity
    >>> X, _ = make_moons(500, noise=0.05, random_state=0)
    >>> flow = IAFDensity(n_layers=3, hidden_dims=(32, 32), max_epochs=5, random_state=0).fit(X)
    >>> flow.score_samples(X[:3]).shape
    (3,)
    >>> flow.sample(2, random_state=0).shape
    (2, 2)
    """

    _inverse: ClassVar[bool] = True
