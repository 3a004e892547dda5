"""GlowDensity: ActNorm, invertible linear mixing and affine coupling
(Kingma & Dhariwal, 2018) as an estimator, for tables and for images."""

from __future__ import annotations

from numbers import Integral
from typing import ClassVar

import numpy as np
from sklearn.utils._param_validation import Interval

from ._builders import check_coupling_features
from .base import ExactFlowEstimator, shared_constraints
from .flows.core import Bijection, Chain, ExactFlow
from .flows.coupling import AffineCoupling
from .flows.linear import ActNorm, LULinear
from .flows.multiscale import check_image_shape, multiscale_glow
from .nn import MLP, resolve_activation

__all__ = ["GlowDensity"]


class GlowDensity(ExactFlowEstimator):
    """Density estimation with Glow, on tabular rows or flattened images.

    **Tabular mode** (``image_shape=None``): ``n_steps`` steps, each an
    ActNorm layer (data-dependent initialisation), an invertible dense linear
    map ``W`` in LU parameterisation (``log |det W| = sum log|s|``) that
    mixes all features, and an affine coupling layer with an MLP
    conditioner.

    **Image mode** (``image_shape=(C, H, W)``): each row of ``X`` is an image
    flattened in channel-major order (``row.reshape(C, H, W)``; scikit-learn's
    digits are ``(1, 8, 8)``). Glow's multiscale architecture: per level a
    squeeze (2x2 space-to-depth), ``n_steps`` steps of per-channel ActNorm,
    invertible 1x1 convolution and convolutional affine coupling, then half
    of the channels is factored out to the Gaussian prior (with a learned
    mean and scale conditioned on the other half if ``learned_prior``).
    The latent of ``transform`` is the concatenation, ``(n, C*H*W)``.
    Pixels are standardised with one mean and scale for the whole image
    rather than per pixel, because convolutions share weights across pixels
    and a constant border pixel would otherwise be blown up: with
    ``n_intensity_levels=K`` the fixed map ``x -> (x + 1/2) / K`` (Glow's
    ``[0, 1)`` scaling of dequantised pixels), otherwise the global mean and
    standard deviation of the training pixels.

    Integer pixel values are dequantised during training (see
    ``dequantize``), so ``score_samples`` is the log-probability of the
    image up to the bin approximation, and :meth:`bits_per_dim` reports
    ``-mean(score_samples(X)) / (D ln 2)`` for integer pixels with unit bins.
    This is the same number as Glow's ``-log p_01(x) / (D ln 2) + log2(K)``
    for pixels scaled to ``[0, 1)``: the scaling multiplies the density by
    ``K^D`` and the ``log2(K)`` term takes it out again.

    Parameters
    ----------
    n_steps : int, default=8
        Flow steps ``K`` (per level in image mode).
    hidden_dims : tuple of int, default=(128, 128)
        Hidden widths of the coupling MLPs (tabular mode).
    hidden_channels : int, default=64
        Channels of the coupling conv nets (image mode).
    activation : str, default="relu"
        Activation of the conditioner networks.
    scale_bound : float, default=3.0
        Soft bound on each coupling log-scale, ``s = b * tanh(s_raw / b)``.
    image_shape : tuple of int or None, default=None
        ``(C, H, W)`` to model rows as images; None for tabular data.
    n_levels : int, default=2
        Levels ``L`` of the multiscale architecture (image mode); ``H`` and
        ``W`` must be divisible by ``2**L``.
    learned_prior : bool, default=True
        Image mode: model each factored-out half as a Gaussian whose mean
        and scale depend on the kept half (Glow), instead of a standard
        normal.
    n_intensity_levels : int or None, default=None
        Image mode: number of intensity levels ``K`` of the pixels (17 for
        digits, 256 for 8-bit images). Pixels must lie in ``[0, K - 1]``
        and are mapped to ``[0, 1)`` as Glow does. None standardises with
        the global mean and standard deviation instead. Scores are densities
        in the units of ``X`` either way.
    {shared_training_parameters}
    {exact_base_parameters}

    Attributes
    ----------
    model_, history_, n_iter_, best_epoch_, mean_, scale_, device_, \
dequantized_features_, n_features_in_, feature_names_in_
        See :class:`~skflow.base.FlowEstimator`. In image mode ``mean_`` and
        ``scale_`` hold the same value in every column.

    See Also
    --------
    RealNVPDensity : Affine couplings with fixed permutations.
    NICEDensity : Volume-preserving additive couplings.

    References
    ----------
    D. P. Kingma, P. Dhariwal. "Glow: Generative Flow with Invertible 1x1
    Convolutions", NeurIPS 2018. arXiv:1807.03039.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skflow import GlowDensity
    >>> X = load_digits().data[:200]
    >>> glow = GlowDensity(image_shape=(1, 8, 8), n_levels=2, n_steps=1, hidden_channels=8,
    ...                    n_intensity_levels=17, max_epochs=2, random_state=0).fit(X)
    >>> glow.sample(2, random_state=0).shape
    (2, 64)
    >>> bool(glow.bits_per_dim(X) > 0)
    True
    """

    n_steps: int = 8
    hidden_dims: tuple = (128, 128)
    hidden_channels: int = 64
    activation: str = "relu"
    scale_bound: float = 3.0
    image_shape: tuple | None = None
    n_levels: int = 2
    learned_prior: bool = True
    n_intensity_levels: int | None = None

    _parameter_constraints: ClassVar[dict] = {
        **ExactFlowEstimator._parameter_constraints,
        "n_steps": [Interval(Integral, 1, None, closed="left")],
        **shared_constraints("hidden_dims", "activation", "scale_bound"),
        "hidden_channels": [Interval(Integral, 1, None, closed="left")],
        "image_shape": [tuple, list, None],
        "n_levels": [Interval(Integral, 1, None, closed="left")],
        "learned_prior": ["boolean"],
        "n_intensity_levels": [Interval(Integral, 2, None, closed="left"), None],
    }

    def _checked_image_shape(self, n_features: int) -> tuple[int, int, int]:
        """``image_shape`` validated against the width of X (only called in image mode)."""
        if self.image_shape is None:
            raise ValueError("image_shape is None: GlowDensity is in tabular mode.")
        shape = check_image_shape(self.image_shape)
        if int(np.prod(shape)) != n_features:
            raise ValueError(
                f"image_shape={tuple(self.image_shape)!r} describes {int(np.prod(shape))} pixels, but X has "
                f"{n_features} features; each row must be one flattened image."
            )
        return shape

    def _standardisation_for(
        self, X: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.image_shape is None:
            return super()._standardisation_for(X, sample_weight)
        self._checked_image_shape(X.shape[1])
        n_features = X.shape[1]
        if self.n_intensity_levels is not None:
            levels = self.n_intensity_levels
            if X.min() < 0 or X.max() > levels - 1:
                raise ValueError(
                    f"With n_intensity_levels={levels} pixel values must lie in [0, {levels - 1}], "
                    f"got values in [{X.min():g}, {X.max():g}]."
                )
            # (x + 1/2) / K maps the dequantisation bins [k - 1/2, k + 1/2) onto [k/K, (k+1)/K).
            return np.full(n_features, -0.5), np.full(n_features, float(levels))
        # One scale for all pixels keeps the convolutions' weight sharing meaningful.
        pixel_weights = None if sample_weight is None else np.broadcast_to(sample_weight[:, None], X.shape)
        mean = float(np.average(X, weights=pixel_weights))
        scale = float(np.sqrt(np.average((X - mean) ** 2, weights=pixel_weights)))
        return np.full(n_features, mean), np.full(n_features, scale if scale > 0 else 1.0)

    def build_model(self, n_features: int, *, n_context: int = 0) -> ExactFlow:
        resolve_activation(self.activation)
        if self.image_shape is not None:
            if n_context:
                raise ValueError(
                    "GlowDensity with image_shape takes no context (its convolutional couplings see only pixels); "
                    "use the tabular Glow (image_shape=None) for a conditional flow."
                )
            transform: Bijection = multiscale_glow(
                self._checked_image_shape(n_features),
                n_levels=self.n_levels,
                n_steps=self.n_steps,
                hidden_channels=self.hidden_channels,
                activation=self.activation,
                scale_bound=self.scale_bound,
                learned_prior=self.learned_prior,
            )
            return ExactFlow(transform, self.base_distribution(n_features))
        check_coupling_features(self, n_features, n_context)
        layers: list[Bijection] = []
        kept = n_features // 2
        for _ in range(self.n_steps):
            conditioner = MLP(
                kept + n_context, 2 * (n_features - kept), self.hidden_dims, self.activation, zero_init_last=True
            )
            layers += [
                ActNorm(n_features),
                LULinear(n_features),
                AffineCoupling(n_features, kept, conditioner, scale_bound=self.scale_bound, n_context=n_context),
            ]
        return ExactFlow(Chain(layers), self.base_distribution(n_features, n_context))
