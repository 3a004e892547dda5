"""Free-form flows as estimators: InjectiveFlowEstimator (FIF) and FreeFormFlowDensity (FFF).

Both train an unconstrained encoder/decoder pair with the free-form flow
objective (reconstruction plus a probe-based surrogate of the log-volume
term); see :mod:`skflow.flows.injective` for the model, its objective and the
density it evaluates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from torch import Tensor

from .base import FlowEstimator, _MomentSums, shared_constraints
from .flows.core import FlowModel
from .flows.injective import (
    MIN_RESIDUAL_VARIANCE,
    FreeFormFlow,
    FreeFormInjectiveFlow,
    LinearSkip,
    build_networks,
)
from .nn import resolve_activation

__all__ = ["FreeFormFlowDensity", "InjectiveFlowEstimator"]

_NETWORK_CONSTRAINTS: dict = {
    "beta": [Interval(Real, 0, None, closed="neither")],
    "n_probes": [Interval(Integral, 1, None, closed="left")],
    **shared_constraints("hidden_dims", "activation"),
    "n_residual_blocks": [Interval(Integral, 0, None, closed="left")],
    "encoder": [callable, None],
    "decoder": [callable, None],
}


def _free_form_networks(
    estimator: InjectiveFlowEstimator | FreeFormFlowDensity,
    n_features: int,
    n_latent: int,
    latent_name: str,
    linear_skip: bool = False,
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Encoder and decoder of a free-form estimator, once ``n_probes`` fits the latent width ``n_latent``."""
    if estimator.n_probes > n_latent:
        raise ValueError(
            f"n_probes={estimator.n_probes} must be at most {latent_name}={n_latent} "
            f"(n_probes = {latent_name} already gives the exact trace)."
        )
    resolve_activation(estimator.activation)
    return build_networks(
        n_features,
        n_latent,
        estimator.encoder,
        estimator.decoder,
        estimator.hidden_dims,
        estimator.activation,
        estimator.n_residual_blocks,
        linear_skip,
    )


@dataclasses.dataclass(frozen=True)
class _PCAStart:
    """What ``init="pca"`` sets in a fresh model (standardised units, float64)."""

    encoder_weight: np.ndarray  # (d, D): Lambda^{-1/2} V^T
    encoder_bias: np.ndarray  # (d,): -Lambda^{-1/2} V^T m, m the training rows' mean
    decoder_weight: np.ndarray  # (D, d): V Lambda^{1/2}
    decoder_bias: np.ndarray  # (D,): m
    residual_variance: float  # mean of the D - d other eigenvalues


# Why the injective flow has no partial_fit / warm_start.
_NOT_INCREMENTAL = (
    "its fit ends by estimating the residual variance of the off-manifold directions on all training rows "
    "at once, which a chunk of rows cannot provide."
)


def _scale_including_dequantization(
    estimator: FlowEstimator, X: np.ndarray, sample_weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Standardise dequantised columns by the spread of what the networks see in training.

    A dequantised column is trained on ``x + u``, ``u`` uniform on a bin of
    width ``w`` (variance ``w^2 / 12``). Scaling it by the data's standard
    deviation alone leaves that jitter huge in model units for columns that
    are nearly constant (sklearn's digits: border pixels with standard
    deviation 0.02-0.2 get jitter variance up to ~200, ~300 summed over the
    columns against 61 of signal), and the free-form objective weights the
    *summed* squared error, so reconstructing unpredictable jitter dominates
    training: with ``n_components=2`` the encoder collapsed to ~0. Scaling
    by ``sqrt(var(x) + w^2 / 12)`` gives every column unit variance as
    trained. Any positive scale keeps ``score_samples`` an exact density in
    the user's units (its log-det is added as usual).
    """
    mean, scale = FlowEstimator._standardisation_for(estimator, X, sample_weight)
    widths = estimator._dequantization_widths(X)
    variance = np.average((X - mean) ** 2, axis=0, weights=sample_weight)
    trained_spread = np.sqrt(variance + widths**2 / 12.0)
    return mean, np.where(widths > 0, trained_spread, scale)


class InjectiveFlowEstimator(FlowEstimator):
    """Free-form injective flow (FIF): nonlinear dimensionality reduction with a density.

    Learns an encoder ``f: R^D -> R^d`` and a decoder ``g: R^d -> R^D``
    (``d = n_components``) so that ``g`` maps a standard normal latent onto
    a ``d``-dimensional manifold near the data, with the density on that
    manifold fitted by (surrogate) maximum likelihood. Usable wherever
    :class:`~sklearn.decomposition.PCA` is: ``transform`` gives ``f(x)``,
    ``inverse_transform`` gives ``g(z)``.

    Training minimises, per row (``z = f(x)``, random probes ``v`` in latent
    space)::

        beta * ||x - g(z)||^2  -  log N(z; 0, I_d)  -  v^T f'(x) SG[g'(z) v]

    in standardised units. The last term's gradient estimates, without
    bias, that of the log-volume ``-1/2 log det(J_g^T J_g)``; one
    forward-mode JVP through the decoder and one VJP through the encoder per
    probe make a step cost about twice an autoencoder's. Early stopping and
    the choice of the weights kept use exact values, not the surrogate (see
    ``selection``): the density below, or the objective, with the volume
    term from the encoder Jacobian (``+1/2 log det(J_f J_f^T)``), which,
    unlike the decoder version, is not inflated while the decoder does not
    yet invert the encoder.

    **Density model** (``score_samples``). A row ``x`` is split into its
    projection ``x_hat = g(f(x))`` on the manifold and a residual
    ``r = x - x_hat``::

        log p(x) = log N(f(x); 0, I_d) - 1/2 log det(J_g^T J_g)          (on-manifold)
                   - (D-d)/2 log(2 pi s^2) - ||r||^2 / (2 s^2)           (off-manifold)

    with ``J_g = g'(f(x))`` computed exactly by forward mode, and ``s^2``
    the maximum-likelihood variance of the training residuals per normal
    direction (``residual_variance_``). This is our extension of the paper's
    on-manifold density to a density on ``R^D``, so that scores compare with
    other estimators. Assumptions: the residual lies in the ``D - d``
    directions normal to the manifold and is isotropic Gaussian there; the
    product is exactly normalised for a flat manifold with ``f`` the
    orthogonal projection, and approximately (tubular neighbourhood) when
    the scatter is small relative to the manifold's curvature radius and the
    encoder is close to the nearest-point projection, and in any case only
    when the decoder inverts the encoder on the manifold (``f(g(z)) = z``),
    which training approaches but a short fit does not reach: check
    :meth:`reconstruction_error` before trusting a likelihood, since a model
    that reconstructs badly can score spuriously well. The model is built in
    the standardised units the networks see, so the scatter is isotropic
    *relative to each feature's spread* (noise proportional to each
    feature's standard deviation); the result is converted to the user's
    units by the standardisation's log-det, like every other estimator here.
    Consequently ``score_samples`` equals the sum of the two parts below
    (plus the Gaussian's normalising constant) only when all features have
    the same scale.

    The two parts are also available separately, as the authors recommend
    reporting both: :meth:`score_samples_manifold` (on-manifold log-density,
    ``d``-dimensional, measured with the user's units on the manifold) and
    :meth:`reconstruction_error` (squared distance to the projection, in the
    user's units).

    Parameters
    ----------
    n_components : int, default=2
        Latent dimension ``d`` (at most ``n_features``).
    beta : float, default=10.0
        Weight of the summed squared reconstruction error (standardised
        units). Too small and the model stops following the data along the
        manifold; the paper uses 10.
    n_probes : int, default=1
        Probes per row for the trace surrogate (``<= n_components``); the
        authors recommend 1 and a larger batch over more probes.
    hidden_dims : tuple of int, default=(128, 128)
        Hidden widths of the default networks (MLP and residual blocks).
    activation : str, default="silu"
        Activation of the default networks. Keep it smooth: piecewise-linear
        activations remove the second-order signal the surrogate relies on.
    n_residual_blocks : int, default=2
        Residual blocks in latent space after the encoder MLP (and before the
        decoder MLP).
    encoder, decoder : callable or None, default=None
        Factories ``(n_in, n_out) -> nn.Module`` replacing the default
        networks (``encoder(D, d)``, ``decoder(d, D)``). They must be
        picklable: a class (``torch.nn.Linear``) or a
        :func:`functools.partial`, not a lambda.
    encoder_jacobian_at : {"data", "reconstruction"}, default="data"
        Where the surrogate takes the encoder Jacobian. ``"data"`` is FIF;
        ``"reconstruction"`` is the naive on-manifold estimator, kept only
        to reproduce the divergence the paper warns about.
    noise_std : float, default=0.01
        As in :class:`~skflow.base.FlowEstimator` (Gaussian noise on the
        standardised training inputs), but on by default here, as in the
        paper: the reconstruction target is the noisy input.
    init : {"auto", "pca", "random"}, default="auto"
        Where training starts. ``"auto"``: ``"pca"`` for the default
        networks, ``"random"`` when ``encoder`` or ``decoder`` is given.
        ``"random"``: the networks with PyTorch's random initialisation.
        ``"pca"``: each default network gets an affine map beside its MLP
        (:class:`~skflow.flows.injective.LinearSkip`), and the last layer of
        the MLPs and residual blocks starts at zero, so the untrained
        encoder is whitened PCA of the standardised training rows,
        ``f(x) = Lambda^{-1/2} V^T (x - m)``, and the untrained decoder its
        inverse on the principal subspace, ``g(z) = m + V Lambda^{1/2} z``.
        ``V`` (``(D, d)``) and ``Lambda`` are the ``d`` leading eigenvectors
        and eigenvalues of the covariance of the standardised rows (weighted
        by ``sample_weight``, divisor ``n``: maximum likelihood, where
        scikit-learn's PCA divides by ``n - 1``) plus the variance of the
        dequantisation and ``noise_std`` noise the model is trained on, and
        ``m`` their mean; each eigenvector's sign makes its largest loading
        positive, as in scikit-learn's PCA. The off-manifold variance starts
        at the mean of the other ``D - d`` eigenvalues, so the untrained
        model is probabilistic PCA in standardised units, and training only
        has to learn what is not linear. The start is computed from the
        training side of the validation split (``validation_fraction``) and
        competes with the epochs for the weights kept on the held-out rows:
        when no epoch beats it, it is kept, refitted on all rows, and
        ``best_epoch_`` is 0. The start costs ``O(n D^2)`` in the pass over the rows that computes the
        standardisation and one ``D x D`` eigenvalue decomposition. It needs
        the default networks: with a custom ``encoder`` or ``decoder``,
        ``init="pca"`` makes ``fit`` raise a ValueError (a user network does
        not start at zero, so the start would not be PCA). It is the default
        because it lowered held-out reconstruction error on real tables
        (``benchmarks/dimensionality_reduction.py``; see the user guide's
        "Starting at PCA").
    selection : {"objective", "likelihood"}, default="objective"
        What the weights kept (and early stopping) are chosen by, on the
        held-out rows (``validation_fraction``): ``"likelihood"``, the
        exact held-out log-likelihood (with the encoder-Jacobian volume, see
        above); ``"objective"``, the training objective with the exact
        log-volume in place of its surrogate,
        ``beta ||x - g(f(x))||^2 - log N(f(x); 0, I_d) - 1/2 log det(J_f J_f^T)``,
        in which the reconstruction keeps its fixed weight ``beta``. The
        likelihood's residual term ``||r||^2 / (2 s^2)`` divides by the
        residual variance of the training rows, so on a heavy-tailed table
        a few held-out rows the model does not reconstruct can end training
        while held-out reconstruction still improves (ADBench's SpamBase:
        training stopped within 32 epochs at an error 2.5 to 4 times the
        autoencoder's; by the objective it ran to 200 and came within 10-40%
        of it). ``history_``'s ``valid_loss`` is the chosen criterion.
    patience : int or None, default=50
        As in :class:`~skflow.base.FlowEstimator` (where the default is 20):
        from PCA (``init="pca"``) the held-out objective can stay flat for
        tens of epochs before reconstruction improves (ADBench's Waveform,
        ``d = 4``: 30 epochs, then 0.394 to 0.367).
    {shared_training_parameters}

    Attributes
    ----------
    residual_variance_ : float
        Variance of the off-manifold residual per normal direction, in
        standardised units (maximum likelihood on the training rows).
    scale_ : ndarray of shape (n_features,)
        As in :class:`~skflow.base.FlowEstimator`, except that a dequantised
        column of bin width ``w`` is scaled by ``sqrt(var + w^2 / 12)``, the
        spread of the jittered values the networks are trained on (see
        ``_scale_including_dequantization``).
    model_, history_, n_iter_, best_epoch_, mean_, device_, \
dequantized_features_, n_features_in_, feature_names_in_
        See :class:`~skflow.base.FlowEstimator`. ``history_``'s
        ``train_loss`` is the surrogate (not a likelihood); ``valid_loss``
        is the held-out criterion of ``selection`` (with ``"likelihood"``,
        the exact negative log-likelihood).

    See Also
    --------
    FreeFormFlowDensity : The full-dimensional sibling (``d = D``).
    sklearn.decomposition.PCA : The linear counterpart.

    References
    ----------
    P. Sorrenson, F. Draxler, A. Rousselot, S. Hummerich, L. Zimmermann,
    U. Köthe. "Lifting Architectural Constraints of Injective Flows",
    ICLR 2024. arXiv:2306.01843.

    Examples
    --------
    >>> import numpy as np
    >>> from skflow import InjectiveFlowEstimator
    >>> rng = np.random.default_rng(0)
    >>> t = rng.normal(size=(300, 1))
    >>> X = np.hstack([t, np.sin(t)]) + 0.05 * rng.normal(size=(300, 2))
    >>> fif = InjectiveFlowEstimator(n_components=1, hidden_dims=(32,), max_epochs=5, random_state=0).fit(X)
    >>> fif.transform(X[:3]).shape
    (3, 1)
    >>> fif.inverse_transform(fif.transform(X[:3])).shape
    (3, 2)
    """

    if TYPE_CHECKING:  # the fitted model's class (see FlowEstimator)
        model_: FreeFormInjectiveFlow = dataclasses.field(init=False)

    n_components: int = 2
    beta: float = 10.0
    n_probes: int = 1
    hidden_dims: tuple = (128, 128)
    activation: str = "silu"
    n_residual_blocks: int = 2
    encoder: Callable | None = None
    decoder: Callable | None = None
    encoder_jacobian_at: str = "data"
    # The paper trains on slightly noisy inputs; the shared noise_std does
    # exactly that (the reconstruction target is the noisy input).
    noise_std: float = 0.01
    init: str = "auto"
    selection: str = "objective"
    # From the PCA start the held-out objective can stay flat for tens of
    # epochs before reconstruction improves (see the docstring).
    patience: int | None = 50

    _incremental_unsupported: ClassVar[str | None] = _NOT_INCREMENTAL

    _parameter_constraints: ClassVar[dict] = {
        **FlowEstimator._parameter_constraints,
        **_NETWORK_CONSTRAINTS,
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "encoder_jacobian_at": [StrOptions({"data", "reconstruction"})],
        "init": [StrOptions({"auto", "pca", "random"})],
        "selection": [StrOptions({"likelihood", "objective"})],
    }

    def _check_n_components(self, n_features: int) -> None:
        if self.n_components > n_features:
            raise ValueError(
                f"n_components={self.n_components} must be at most n_features={n_features}: "
                "the latent space cannot be wider than the data."
            )

    def build_model(self, n_features: int) -> FreeFormInjectiveFlow:
        self._check_n_components(n_features)
        custom = self.encoder is not None or self.decoder is not None
        if self.init == "pca" and custom:
            raise ValueError(
                "init='pca' starts the default networks at PCA (a linear map beside networks whose last layers "
                "start at zero) and cannot start a custom encoder or decoder there; use init='random' with "
                "encoder/decoder, or leave them None."
            )
        encoder, decoder = _free_form_networks(
            self, n_features, self.n_components, "n_components", linear_skip=self._starts_at_pca()
        )
        return FreeFormInjectiveFlow(
            encoder,
            decoder,
            n_features,
            self.n_components,
            beta=self.beta,
            n_probes=self.n_probes,
            encoder_jacobian_at=self.encoder_jacobian_at,
            selection=self.selection,
        )

    def _standardisation_for(
        self, X: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return _scale_including_dequantization(self, X, sample_weight)

    def _starts_at_pca(self) -> bool:
        return self.init == "pca" or (self.init == "auto" and self.encoder is None and self.decoder is None)

    def _wants_moment_sums(self) -> bool:
        return self._starts_at_pca()

    # The start is computed without the rows the engine holds out, which it
    # then competes on (epoch 0). With them, PCA reconstructs those rows better
    # than any model trained without them can: on breast cancer (d = 8, 43
    # held-out rows) their squared error was 2.56 against 3.57 for PCA of the
    # other rows, and every trained epoch lost to the start.
    _start_from_training_side: ClassVar[bool] = True

    def _data_start(self, sums: _MomentSums) -> _PCAStart:
        """Whitened PCA of the standardised training rows (plus training noise), from their power sums."""
        self._check_n_components(len(self.mean_))  # before build_model: d leading eigenvectors must exist
        # Centred on the rows summed (the training side of the split), whose
        # mean differs slightly from mean_ (all rows): the offset goes into the biases.
        center = sums.shift + sums.first / sums.total
        offset = (center - self.mean_) / self.scale_
        # What the networks are trained on: the standardised rows plus
        # independent dequantisation and noise_std noise, whose variances add
        # on the diagonal.
        covariance = sums.covariance(center, self.scale_)
        covariance[np.diag_indices_from(covariance)] += self._training_noise_variance()
        values, vectors = np.linalg.eigh(covariance)
        values, vectors = np.clip(values[::-1], 0.0, None), vectors[:, ::-1]  # largest first
        d = self.n_components
        components = vectors[:, :d].T  # (d, D)
        # scikit-learn's sign convention for PCA: each component's largest loading is positive.
        largest = components[np.arange(d), np.abs(components).argmax(axis=1)]
        components = components * np.where(largest < 0, -1.0, 1.0)[:, None]
        # A direction without variance (more components than the rows span)
        # would be whitened by 1/0: floor it far below the leading one.
        kept = np.maximum(values[:d], max(float(values[0]), 1.0) * 1e-12)
        root = np.sqrt(kept)
        residual = float(values[d:].mean()) if d < len(values) else 1.0
        encoder_weight = components / root[:, None]
        return _PCAStart(
            encoder_weight=encoder_weight,
            encoder_bias=-encoder_weight @ offset,
            decoder_weight=components.T * root,
            decoder_bias=offset,
            residual_variance=max(residual, MIN_RESIDUAL_VARIANCE),
        )

    def _fresh_model(self, n_features: int, start: Any = None) -> FreeFormInjectiveFlow:
        model = self.build_model(n_features)
        if start is None:
            # init="random", or skflow.load rebuilding the structure (the saved weights replace the values).
            return model
        # In the estimator's dtype before the values go in, so a float64 fit starts at PCA to float64 rounding.
        return self._start_refitted(model.to(self._torch_dtype()), start)

    def _start_refitted(self, model: FlowModel, start: Any) -> FreeFormInjectiveFlow:
        # Sets the PCA maps and residual variance of a model built with
        # init="pca" whose networks are at zero (a fresh one, or the kept start).
        assert isinstance(model, FreeFormInjectiveFlow) and isinstance(start, _PCAStart)
        (encoder_map,) = [module for module in model.encoder.modules() if isinstance(module, LinearSkip)]
        (decoder_map,) = [module for module in model.decoder.modules() if isinstance(module, LinearSkip)]
        with torch.no_grad():
            encoder_map.linear.weight.copy_(torch.as_tensor(start.encoder_weight))
            encoder_map.linear.bias.copy_(torch.as_tensor(start.encoder_bias))
            decoder_map.linear.weight.copy_(torch.as_tensor(start.decoder_weight))
            decoder_map.linear.bias.copy_(torch.as_tensor(start.decoder_bias))
            model.residual_variance.fill_(start.residual_variance)
        return model

    def _after_fit(self, rows: Tensor) -> None:
        # Maximum-likelihood residual variance on all training rows (the
        # running estimate used during training saw noisy, shifting batches).
        self.residual_variance_ = self.model_.fit_residual_variance(rows)

    @property
    def _n_features_out(self) -> int:
        # Touching a fitted attribute first keeps the property undefined (an
        # AttributeError) before fit, which is how scikit-learn detects that.
        self.n_features_in_  # noqa: B018
        return self.n_components

    def score_samples_manifold(self, X: Any) -> np.ndarray:
        """On-manifold log-density of the projection of each row, in the user's units.

        ``log N(f(x); 0, I_d) - 1/2 log det(J^T J)`` where ``J`` is the
        decoder Jacobian at ``f(x)`` expressed in the user's units (its rows
        multiplied by ``scale_``), so the value is a density with respect to
        ``d``-dimensional volume on the manifold as measured in the original
        coordinates (not the standardised ones). With
        ``n_components == n_features`` it equals :meth:`score_samples`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
        """
        rows = self._standardised(X)
        scale = torch.as_tensor(self.scale_, dtype=torch.float32, device=self.device_)
        log_prob = self._map_rows(partial(self.model_.log_prob_manifold, scale=scale), rows)
        return np.where(np.isnan(log_prob), -np.inf, log_prob)

    def reconstruction_error(self, X: Any) -> np.ndarray:
        """Squared distance of each row to its reconstruction ``g(f(x))``, in the user's units.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        squared_error : ndarray of shape (n_samples,)
            ``||x - inverse_transform(transform(x))||^2``.
        """
        rows = self._standardised(X)
        reconstructed = self._map_rows(lambda batch: self.model_.decode(self.model_.encode(batch)), rows)
        return (((rows - reconstructed) * self.scale_) ** 2).sum(axis=1)

    def explained_variance_ratio(self, X: Any) -> np.ndarray:
        """Share of the data's variance captured on the manifold, per latent direction.

        The nonlinear counterpart of PCA's ``explained_variance_ratio_``,
        computed on the rows ``X`` in the user's units. Let ``T`` be the
        total variance of ``X`` (sum of the column variances), ``z = f(x)``
        the latent codes with mean ``c`` and covariance ``C``, and ``J`` the
        decoder Jacobian at ``z`` in the user's units. The latent directions
        are the eigenvectors ``v_1, ..., v_d`` of
        ``K = C^{1/2} mean(J^T J) C^{1/2}``, with latent coordinates
        ``u = V^T C^{-1/2} (z - c)``. Decoding only the coordinates of a set
        ``S`` of directions, ``x_S = g(c + C^{1/2} V u_S)`` (the others set
        to 0), keeps the share ``R(S) = 1 - mean ||x - x_S||^2 / T`` of the
        variance, with ``R({}) = 0`` (the mean keeps none). Directions are
        taken greedily: first the one whose decoding alone keeps the most,
        then the one that adds the most to it, and so on; each ratio is the
        share its direction adds. That takes ``d (d + 1) / 2`` decoding
        passes over ``X``.

        The ratios sum to ``1 - mean ||x - g(f(x))||^2 / T``, the share of
        variance the reconstruction keeps. For a linear encoder and decoder
        that project orthogonally, the directions are the principal axes of
        the reconstructions and the ratios their variances over ``T``,
        largest first: PCA's ``explained_variance_ratio_`` when the manifold
        is PCA's subspace. They do not depend on how the latent space is
        rotated (which the model cannot identify). For a curved manifold a
        ratio is the variance that decoding one more direction adds, which
        need not decrease and can in principle be negative.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to measure on (typically the training data).

        Returns
        -------
        ratios : ndarray of shape (n_components,)
        """
        from .flows.injective import decoder_jacobian

        rows = self._standardised(X)
        data = rows * self.scale_  # centred or not, variance is what counts
        total = float(data.var(axis=0).sum())
        if total <= 0:
            raise ValueError("X has no variance: the explained variance ratio is undefined.")
        codes = self.transform(X)
        centre = codes.mean(axis=0)
        eigenvalues, eigenvectors = np.linalg.eigh(np.atleast_2d(np.cov(codes, rowvar=False, bias=True)))
        eigenvalues = np.clip(eigenvalues, 0.0, None)
        root = (eigenvectors * np.sqrt(eigenvalues)) @ eigenvectors.T
        inverse_root = (eigenvectors * np.where(eigenvalues > 1e-12, eigenvalues, np.inf) ** -0.5) @ eigenvectors.T
        jacobians = self._map_rows(lambda z: decoder_jacobian(self.model_.decoder, z), codes)  # (n, D, d)
        jacobians = jacobians * self.scale_[None, :, None]
        gram = np.einsum("nij,nik->jk", jacobians, jacobians) / len(codes)
        _, directions = np.linalg.eigh(root @ gram @ root)
        coordinates = (codes - centre) @ inverse_root @ directions

        def share(selected: list[int]) -> float:
            kept = np.zeros_like(coordinates)
            kept[:, selected] = coordinates[:, selected]
            decoded = self._map_rows(self.model_.decode, centre + kept @ directions.T @ root)
            return 1.0 - float((((rows - decoded) * self.scale_) ** 2).sum(axis=1).mean()) / total

        chosen: list[int] = []
        captured = [0.0]
        remaining = list(range(self.n_components))
        while remaining:
            best_share, best = max((share([*chosen, j]), j) for j in remaining)
            chosen.append(best)
            remaining.remove(best)
            captured.append(best_share)
        return np.diff(captured)


class FreeFormFlowDensity(FlowEstimator):
    """Free-form flow (FFF): density estimation with an unconstrained network pair.

    The full-dimensional sibling of :class:`InjectiveFlowEstimator`
    (``d = D``): any encoder ``f: R^D -> R^D`` is trained as a flow, with a
    decoder ``g`` learning its inverse through the reconstruction term and
    the volume term replaced by the probe surrogate
    ``v^T f'(x) SG[g'(f(x)) v]``. The density is exact given the decoder:
    ``log p(x) = log N(f(x); 0, I) - log|det g'(f(x))|``, with the full
    Jacobian by forward mode (``D`` passes), so scoring costs more than a
    coupling flow's; it equals the density of the generative model
    ``x = g(z)`` when ``g`` is invertible and ``f = g^{-1}``, which a good
    reconstruction indicates. Early stopping and the choice of the weights
    kept use the encoder-Jacobian likelihood
    ``log N(f(x); 0, I) + log|det f'(x)|`` instead, because the decoder
    version is inflated while ``g`` does not yet invert ``f`` (on a 2-D
    Gaussian we saw it ~3 nats above the truth after two epochs).

    Parameters
    ----------
    beta : float, default=10.0
        Weight of the summed squared reconstruction error (standardised
        units); larger values keep ``g`` closer to ``f^{-1}``.
    n_probes : int, default=1
        Probes per row (``<= n_features``).
    hidden_dims, activation, n_residual_blocks, encoder, decoder
        Networks, as in :class:`InjectiveFlowEstimator` (with ``d = D``).
    {shared_training_parameters}

    Attributes
    ----------
    {shared_fitted_attributes}

    See Also
    --------
    InjectiveFlowEstimator : Free-form flow onto a lower-dimensional manifold.

    References
    ----------
    F. Draxler, P. Sorrenson, L. Zimmermann, A. Rousselot, U. Köthe.
    "Free-form Flows: Make Any Architecture a Normalizing Flow",
    AISTATS 2024. arXiv:2310.16624.

    Examples
    --------
    >>> from sklearn.datasets import make_moons
    >>> from skflow import FreeFormFlowDensity
    >>> X, _ = make_moons(300, noise=0.05, random_state=0)
    >>> fff = FreeFormFlowDensity(hidden_dims=(32,), max_epochs=5, random_state=0).fit(X)
    >>> fff.score_samples(X[:3]).shape
    (3,)
    """

    if TYPE_CHECKING:  # the fitted model's class (see FlowEstimator)
        model_: FreeFormFlow = dataclasses.field(init=False)

    beta: float = 10.0
    n_probes: int = 1
    hidden_dims: tuple = (128, 128)
    activation: str = "silu"
    n_residual_blocks: int = 2
    encoder: Callable | None = None
    decoder: Callable | None = None

    _parameter_constraints: ClassVar[dict] = {
        **FlowEstimator._parameter_constraints,
        **_NETWORK_CONSTRAINTS,
    }

    def build_model(self, n_features: int) -> FreeFormFlow:
        encoder, decoder = _free_form_networks(self, n_features, n_features, "n_features")
        return FreeFormFlow(encoder, decoder, n_features, beta=self.beta, n_probes=self.n_probes)

    def _standardisation_for(
        self, X: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return _scale_including_dequantization(self, X, sample_weight)
