"""Free-form flows: an unconstrained encoder/decoder pair trained as a flow.

Two models live here, sharing one training objective:

* :class:`FreeFormInjectiveFlow` (FIF, Sorrenson et al., ICLR 2024): encoder
  ``f: R^D -> R^d`` and decoder ``g: R^d -> R^D`` with ``d <= D``. The data
  are modelled as a ``d``-dimensional manifold ``g(R^d)`` carrying the
  pushforward of ``N(0, I_d)``, plus (our extension, for a density on ``R^D``)
  isotropic Gaussian scatter in the ``D - d`` directions normal to it.
* :class:`FreeFormFlow` (FFF, Draxler et al., AISTATS 2024): the same with
  ``d = D``, an exact density ``log p(x) = log p_Z(f(x)) - log|det g'(f(x))|``.

Training minimises, per sample (``z = f(x)``, probes ``v`` with
``E[v v^T] = I_d``)::

    beta * ||x - g(z)||^2  -  log p_Z(z)  -  mean_k  v_k^T f'(x) SG[g'(z) v_k]

The last term is a stochastic surrogate: its *gradient* with respect to the
encoder equals, in expectation over the probes, the gradient of the
log-volume term when ``f`` and ``g`` are mutually inverse on the manifold. Its
*value* means nothing, so the engine's validation (and so early stopping and
the choice of the weights kept) uses the exact :meth:`log_prob`, which takes
the full decoder Jacobian by forward-mode differentiation.

Gradient routing: the reconstruction term trains both networks; the latent
term and the surrogate train only the encoder (the decoder factor is
detached), so the decoder learns from reconstruction alone. The paper's naive
estimator (``encoder_jacobian_at="reconstruction"``) is kept for comparison:
``+ mean_k v_k^T SG[f'(g(z))] g'(z) v_k``, whose gradient reaches the decoder.

Nothing here imports scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeGuard, TypeVar

import torch
from torch import Tensor, nn
from torch.autograd import forward_ad

from ..nn import MLP, Tanh
from .core import FlowModel

__all__ = [
    "FreeFormFlow",
    "FreeFormInjectiveFlow",
    "LatentResidualBlock",
    "LinearSkip",
    "decoder_jacobian",
    "default_decoder",
    "default_encoder",
    "encoder_jacobian",
    "latent_probes",
    "output_and_tangents",
]

# Smallest residual variance (standardised units) the off-manifold Gaussian
# may take; keeps the density finite when the data lie exactly on the
# learned manifold (float32 reconstructions are never better than ~1e-7).
MIN_RESIDUAL_VARIANCE = 1e-8


class LatentResidualBlock(nn.Module):
    """Residual block ``z + MLP(z)`` of constant width.

    Parameters
    ----------
    n_features : int
        Width of the input and output.
    hidden_dims : sequence of int
        Hidden widths of the inner MLP.
    activation : str or nn.Module class, default="silu"
        Smooth activations keep the second-order signal the surrogate needs.
    """

    def __init__(
        self,
        n_features: int,
        hidden_dims: Sequence[int],
        activation: str | type[nn.Module] = "silu",
        zero_init_last: bool = False,
    ) -> None:
        super().__init__()
        self.net = MLP(n_features, n_features, hidden_dims, activation, zero_init_last=zero_init_last)

    def forward(self, z: Tensor) -> Tensor:
        return z + self.net(z)


class LinearSkip(nn.Module):
    """``linear(x) + net(x)``: an affine map beside a network.

    With the network's last layer at zero this is exactly the linear map;
    the PCA start of :class:`~skflow.InjectiveFlowEstimator` sets the map to
    whitened PCA (encoder) or its inverse on the principal subspace
    (decoder), and training adds the nonlinear part.

    Parameters
    ----------
    n_in, n_out : int
        Input and output widths.
    net : nn.Module
        Batched map ``(n, n_in) -> (n, n_out)``.
    """

    def __init__(self, n_in: int, n_out: int, net: nn.Module) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x) + self.net(x)


def default_encoder(
    n_features: int,
    n_components: int,
    hidden_dims: Sequence[int] = (128, 128),
    activation: str | type[nn.Module] = "silu",
    n_residual_blocks: int = 2,
    linear_skip: bool = False,
) -> nn.Module:
    """MLP ``R^D -> R^d`` followed by residual blocks in latent space.

    Parameters
    ----------
    n_features, n_components : int
        ``D`` and ``d``.
    hidden_dims : sequence of int
        Hidden widths of the MLP and of each residual block.
    activation : str or nn.Module class
    n_residual_blocks : int
        Residual blocks applied after the MLP, in latent space.
    linear_skip : bool, default=False
        Put a linear map ``R^D -> R^d`` beside the MLP (:class:`LinearSkip`)
        and start the last layer of the MLP and of each residual block at
        zero, so that the untrained network is that linear map.
    """
    mlp = MLP(n_features, n_components, hidden_dims, activation, zero_init_last=linear_skip)
    layers: list[nn.Module] = [LinearSkip(n_features, n_components, mlp) if linear_skip else mlp]
    layers += [
        LatentResidualBlock(n_components, hidden_dims, activation, zero_init_last=linear_skip)
        for _ in range(n_residual_blocks)
    ]
    return nn.Sequential(*layers)


def default_decoder(
    n_components: int,
    n_features: int,
    hidden_dims: Sequence[int] = (128, 128),
    activation: str | type[nn.Module] = "silu",
    n_residual_blocks: int = 2,
    linear_skip: bool = False,
) -> nn.Module:
    """Mirror of :func:`default_encoder`: residual blocks in latent space, then an MLP ``R^d -> R^D``.

    With ``linear_skip``, a linear map ``R^d -> R^D`` sits beside the MLP and
    the last layers start at zero, as in :func:`default_encoder`.
    """
    layers: list[nn.Module] = [
        LatentResidualBlock(n_components, hidden_dims, activation, zero_init_last=linear_skip)
        for _ in range(n_residual_blocks)
    ]
    mlp = MLP(n_components, n_features, hidden_dims, activation, zero_init_last=linear_skip)
    layers.append(LinearSkip(n_components, n_features, mlp) if linear_skip else mlp)
    return nn.Sequential(*layers)


def latent_probes(n_rows: int, n_components: int, n_probes: int, like: Tensor) -> Tensor:
    """Random probe vectors for the trace estimator, shape ``(n_probes, n_rows, d)``.

    Per row, ``n_probes`` Gaussian vectors are orthonormalised (QR) and
    scaled by ``sqrt(d)``: then ``E[v v^T] = I_d`` for each probe, and with
    ``n_probes = d`` the probes form a scaled orthonormal basis, so the
    estimate ``mean_k v_k^T A v_k`` equals ``tr(A)`` exactly.
    """
    gaussian = torch.randn(n_rows, n_components, n_probes, device=like.device, dtype=like.dtype)
    if n_probes == 1:
        # One column: orthonormalising is normalising, without a batched QR.
        orthonormal = gaussian / gaussian.norm(dim=1, keepdim=True)
    else:
        orthonormal = torch.linalg.qr(gaussian).Q
    return (orthonormal * math.sqrt(n_components)).permute(2, 0, 1)


def decoder_jacobian(decoder: Callable[[Tensor], Tensor], z: Tensor, chunk_size: int | None = None) -> Tensor:
    """Jacobian of ``decoder`` at each row of ``z`` by forward-mode AD.

    One forward-mode pass per latent direction (``d`` passes, cheap when
    ``d`` is small), vectorised with ``torch.func.vmap`` over the basis.
    Works under ``torch.no_grad`` (forward mode does not record a graph).

    Parameters
    ----------
    decoder : nn.Module
        Batched map ``(n, d) -> (n, D)``.
    z : Tensor of shape (n, d)
    chunk_size : int or None
        Latent directions per vectorised pass; None does all at once.

    Returns
    -------
    jacobian : Tensor of shape (n, D, d)
    """
    n_rows, n_components = z.shape
    basis = torch.eye(n_components, device=z.device, dtype=z.dtype)

    def column(direction: Tensor) -> Tensor:
        return torch.func.jvp(decoder, (z,), (direction.expand(n_rows, n_components),))[1]

    columns = torch.func.vmap(column, chunk_size=chunk_size)(basis)  # (d, n, D)
    return columns.permute(1, 2, 0)


_ModuleT = TypeVar("_ModuleT", bound=nn.Module)


def _computes_like(module: nn.Module, kind: type[_ModuleT]) -> TypeGuard[_ModuleT]:
    """Whether ``module`` is a ``kind`` whose ``forward`` has not been overridden (so its derivative is known)."""
    return isinstance(module, kind) and type(module).forward is kind.forward


def output_and_tangents(module: nn.Module, inputs: Tensor, tangents: Tensor) -> tuple[Tensor, Tensor]:
    """``module(inputs)`` with its autograd graph, and Jacobian-vector products without one.

    The training step needs the decoder's output (differentiated through,
    for the reconstruction term) and ``g'(z) v`` for each probe (detached,
    the surrogate's stop-gradient factor). PyTorch's forward-mode AD gives
    both from one dual pass, but on CPU that pass cost ~6x a plain forward
    pass for the default decoder (measured with torch 2.13: it materialises
    zero tangents for the weights and biases and records a backward graph
    for the tangent computation, which is then thrown away). For the
    modules the default networks are built from (``nn.Sequential``,
    ``nn.Linear``, ``nn.SiLU``, ``nn.Tanh``, ``nn.Identity``,
    :class:`LatentResidualBlock`) the product is propagated by hand, outside
    the graph; any other module falls back to forward-mode AD, so user
    networks stay supported.

    Parameters
    ----------
    module : nn.Module
        Batched map ``(n, a) -> (n, b)``.
    inputs : Tensor of shape (n, a)
    tangents : Tensor of shape (K, n, a)
        Directions, one per probe.

    Returns
    -------
    outputs : Tensor of shape (n, b)
        ``module(inputs)``, differentiable as usual.
    output_tangents : Tensor of shape (K, n, b)
        ``module'(inputs) tangents[k]``, carrying no autograd graph.
    """
    if _computes_like(module, nn.Sequential):
        for layer in module:
            inputs, tangents = output_and_tangents(layer, inputs, tangents)
        return inputs, tangents
    if _computes_like(module, LatentResidualBlock):
        branch, branch_tangents = output_and_tangents(module.net, inputs, tangents)
        return inputs + branch, tangents + branch_tangents
    if _computes_like(module, LinearSkip):
        linear, linear_tangents = output_and_tangents(module.linear, inputs, tangents)
        branch, branch_tangents = output_and_tangents(module.net, inputs, tangents)
        return linear + branch, linear_tangents + branch_tangents
    if _computes_like(module, nn.Identity):
        return module(inputs), tangents
    if _computes_like(module, nn.Linear):
        with torch.no_grad():
            # The bias does not move with the input.
            output_tangents = tangents @ module.weight.t()
        return module(inputs), output_tangents
    if _computes_like(module, nn.SiLU) and not module.inplace:
        with torch.no_grad():
            gate = torch.sigmoid(inputs)
            # d/da [a sigmoid(a)] = sigmoid(a) (1 + a (1 - sigmoid(a)))
            slope = gate * (1 + inputs * (1 - gate))
        return module(inputs), tangents * slope
    if _computes_like(module, nn.Tanh) or _computes_like(module, Tanh):
        outputs = module(inputs)
        with torch.no_grad():
            slope = 1 - outputs.pow(2)
        return outputs, tangents * slope
    # Anything else: forward-mode AD (one dual pass for the first direction,
    # keeping the output's graph; graph-free JVPs for the others).
    with forward_ad.dual_level():
        dual_output = module(forward_ad.make_dual(inputs, tangents[0].to(inputs.dtype)))
        outputs, first_tangent = forward_ad.unpack_dual(dual_output)
    jvps = [first_tangent.detach()]
    with torch.no_grad():
        for tangent in tangents[1:]:
            jvps.append(torch.func.jvp(module, (inputs.detach(),), (tangent,))[1])
    return outputs, torch.stack(jvps)


def encoder_jacobian(
    encoder: Callable[[Tensor], Tensor], x: Tensor, chunk_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """Codes and Jacobian of ``encoder`` at each row of ``x`` by reverse mode.

    One vector-Jacobian product per latent direction (``d`` of them),
    vectorised with ``torch.func.vmap``.

    Returns
    -------
    z : Tensor of shape (n, d)
    jacobian : Tensor of shape (n, d, D)
    """
    # Without has_aux, vjp returns (output, pullback); its annotation also admits the aux triple.
    z, pullback = torch.func.vjp(encoder, x)[:2]
    basis = torch.eye(z.shape[1], device=z.device, dtype=z.dtype)

    def row(direction: Tensor) -> Tensor:
        return pullback(direction.expand_as(z))[0]

    rows = torch.func.vmap(row, chunk_size=chunk_size)(basis)  # (d, n, D)
    return z, rows.permute(1, 0, 2)


def half_log_det_gram(jacobian: Tensor) -> Tensor:
    """``1/2 log det(J^T J)`` per row of a batch of ``(D, d)`` Jacobians, via QR.

    ``J = Q R`` gives ``J^T J = R^T R``, so the value is ``sum log|R_ii|``;
    this avoids squaring the condition number as forming ``J^T J`` would.
    For square ``J`` it is ``log|det J|``.
    """
    r_factor = torch.linalg.qr(jacobian, mode="r").R
    return torch.diagonal(r_factor, dim1=-2, dim2=-1).abs().log().sum(dim=-1)


class FreeFormInjectiveFlow(FlowModel):
    """Free-form injective flow (FIF): encoder, decoder and the FIF objective.

    Implements the :class:`~skflow.flows.core.FlowModel` protocol in
    standardised units.

    Parameters
    ----------
    encoder : nn.Module
        Batched map ``(n, D) -> (n, d)``.
    decoder : nn.Module
        Batched map ``(n, d) -> (n, D)``.
    n_features : int
        Data dimension ``D``.
    n_components : int
        Latent (manifold) dimension ``d <= D``.
    beta : float, default=10.0
        Weight of the summed squared reconstruction error.
    n_probes : int, default=1
        Probe vectors per sample for the trace surrogate, ``1 <= K <= d``.
    encoder_jacobian_at : {"data", "reconstruction"}, default="data"
        Where the surrogate takes the encoder Jacobian: at the data point
        ``x`` (FIF) or at its reconstruction ``g(f(x))``: the paper's naive
        on-manifold estimator, whose gradient reaches the decoder (see
        :meth:`surrogate_terms`), kept to reproduce its failure.
    jacobian_chunk_size : int or None, default=None
        Latent directions per vectorised forward-mode pass in :meth:`log_prob`.
    residual_momentum : float, default=0.1
        Weight of each training batch in the running estimate of the
        off-manifold residual variance used by :meth:`log_prob` during
        training (the estimator refits it on all training rows afterwards).
    selection : {"likelihood", "objective"}, default="likelihood"
        What :meth:`validation_log_prob` returns, i.e. what the engine keeps
        the weights and stops by: the held-out log-likelihood, or the
        negative training objective with the exact log-volume in place of
        its surrogate (see :meth:`validation_log_prob`).

    Notes
    -----
    **Density.** :meth:`log_prob` models ``x`` as its projection
    ``x_hat = g(f(x))`` on the manifold plus a residual ``r = x - x_hat``::

        log p(x) = log N(f(x); 0, I_d) - 1/2 log det(J_g^T J_g)
                   - (D - d)/2 log(2 pi s^2) - ||r||^2 / (2 s^2)

    with ``J_g = g'(f(x))`` and ``s^2`` the residual variance per normal
    direction (buffer ``residual_variance``). The first line is the exact
    density of the projection with respect to ``d``-dimensional volume on the
    manifold; the second is an isotropic Gaussian in the ``D - d`` normal
    directions. The product is a normalised density on ``R^D`` when the
    manifold is flat and ``f`` is the orthogonal projection onto it; for a
    curved manifold it is the usual tubular-neighbourhood approximation,
    accurate when ``s`` is small compared with the radius of curvature and
    ``f`` is close to the nearest-point projection (which the reconstruction
    term pushes it towards). The residual is assumed to be orthogonal to the
    manifold; any tangential component counts as normal scatter.
    """

    # Buffers, declared for the type checker (register_buffer sets them).
    residual_variance: Tensor

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        n_features: int,
        n_components: int,
        beta: float = 10.0,
        n_probes: int = 1,
        encoder_jacobian_at: str = "data",
        jacobian_chunk_size: int | None = None,
        residual_momentum: float = 0.1,
        selection: str = "likelihood",
    ) -> None:
        super().__init__()
        if selection not in ("likelihood", "objective"):
            raise ValueError(f"selection must be 'likelihood' or 'objective', got {selection!r}.")
        if not 1 <= n_components <= n_features:
            raise ValueError(f"n_components={n_components} must be between 1 and n_features={n_features}.")
        if not 1 <= n_probes <= n_components:
            raise ValueError(
                f"n_probes={n_probes} must be between 1 and n_components={n_components}: "
                "the probes live in latent space, and n_probes = n_components already gives the exact trace."
            )
        if encoder_jacobian_at not in ("data", "reconstruction"):
            raise ValueError(f"encoder_jacobian_at must be 'data' or 'reconstruction', got {encoder_jacobian_at!r}.")
        self.encoder = encoder
        self.decoder = decoder
        self.n_features = n_features
        self.n_components = n_components
        self.beta = beta
        self.n_probes = n_probes
        self.encoder_jacobian_at = encoder_jacobian_at
        self.jacobian_chunk_size = jacobian_chunk_size
        self.residual_momentum = residual_momentum
        self.selection = selection
        # Persistent: it is part of the fitted model (saved with the weights).
        self.register_buffer("residual_variance", torch.ones(()))

    @property
    def n_normal(self) -> int:
        """Number of directions normal to the manifold, ``D - d``."""
        return self.n_features - self.n_components

    # ------------------------------------------------------------------ #
    # Maps
    # ------------------------------------------------------------------ #
    def encode(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Latent code ``f(x)``, shape ``(n, d)``."""
        return self.encoder(x)

    def decode(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Point ``g(z)`` on the manifold, shape ``(n, D)``."""
        return self.decoder(z)

    def sample(
        self,
        n_samples: int,
        generator: torch.Generator | None = None,
        context: Tensor | None = None,
    ) -> Tensor:
        """``g(z)`` with ``z ~ N(0, I_d)``: points on the manifold, shape ``(n_samples, D)``."""
        anchor = self.residual_variance
        z = torch.randn(n_samples, self.n_components, generator=generator, device=anchor.device, dtype=anchor.dtype)
        return self.decoder(z)

    # ------------------------------------------------------------------ #
    # Densities
    # ------------------------------------------------------------------ #
    def _float64_maps(self) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        """Encoder and decoder evaluated with float64 copies of their weights.

        Densities are computed in float64: the log-det of a moderately
        conditioned Jacobian amplifies float32 rounding (which differs
        between batch sizes in the matrix kernels) enough to make a row's
        score depend on the batch it is scored with.
        """

        def in_float64(module: nn.Module) -> Callable[[Tensor], Tensor]:
            tensors = {
                name: tensor.double() if tensor.is_floating_point() else tensor
                for name, tensor in [*module.named_parameters(), *module.named_buffers()]
            }
            return partial(torch.func.functional_call, module, tensors)

        return in_float64(self.encoder), in_float64(self.decoder)

    def log_prob_manifold(
        self, x: Tensor, scale: Tensor | None = None, context: Tensor | None = None, volume: str = "decoder"
    ) -> Tensor:
        """Exact log-density of the projection ``g(f(x))`` on the manifold.

        With ``volume="decoder"`` (the paper's test-time formula):
        ``log N(f(x); 0, I_d) - 1/2 log det(J_g^T J_g)``, ``J_g = g'(f(x))``;
        with ``"encoder"``: ``log N(f(x); 0, I_d) + 1/2 log det(J_f J_f^T)``,
        ``J_f = f'(x)``. Both are densities with respect to ``d``-dimensional
        volume on the manifold and agree when ``f`` inverts ``g`` there. The
        decoder version can be spuriously high while ``g`` does not yet
        invert ``f`` (early in training), which is why
        :meth:`validation_log_prob` uses the encoder version, as the authors
        advise.

        Parameters
        ----------
        x : Tensor of shape (n, D)
        scale : Tensor of shape (D,), optional
            Per-feature factors mapping these coordinates to the ones the
            volume is measured in (the estimator's standard deviations, for a
            density in the user's units); exact for an affine change of
            coordinates.
        context : Tensor, optional
            Unused (unconditional model).
        volume : {"decoder", "encoder"}, default="decoder"
            Which network's Jacobian gives the volume term.

        Returns
        -------
        log_density : Tensor of shape (n,), dtype float64
        """
        if volume not in ("decoder", "encoder"):
            raise ValueError(f"volume must be 'decoder' or 'encoder', got {volume!r}.")
        encoder, decoder = self._float64_maps()
        x = x.double()
        if volume == "decoder":
            z = encoder(x)
            jacobian = decoder_jacobian(decoder, z, self.jacobian_chunk_size)  # (n, D, d)
            if scale is not None:
                jacobian = jacobian * scale.double()[:, None]
            log_volume = -half_log_det_gram(jacobian)
        else:
            z, jacobian = encoder_jacobian(encoder, x, self.jacobian_chunk_size)  # (n, d, D)
            if scale is not None:
                jacobian = jacobian / scale.double()
            log_volume = half_log_det_gram(jacobian.transpose(1, 2))
        log_latent = -0.5 * (z.pow(2).sum(dim=1) + self.n_components * math.log(2 * math.pi))
        return log_latent + log_volume

    def log_prob_residual(self, x: Tensor) -> Tensor:
        """Gaussian log-density of the residual ``x - g(f(x))`` in the ``D - d`` normal directions, ``(n,)``."""
        if self.n_normal == 0:
            return x.new_zeros(x.shape[0], dtype=torch.float64)
        encoder, decoder = self._float64_maps()
        x = x.double()
        squared = (x - decoder(encoder(x))).pow(2).sum(dim=1)
        variance = self.residual_variance.double().clamp_min(MIN_RESIDUAL_VARIANCE)
        return -0.5 * (self.n_normal * torch.log(2 * math.pi * variance) + squared / variance)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density on ``R^D``: on-manifold density plus normal-space Gaussian, shape ``(n,)``.

        See the class notes for the model and its assumptions.
        """
        return self.log_prob_manifold(x) + self.log_prob_residual(x)

    @property
    def validates_a_likelihood(self) -> bool:
        """False with ``selection="objective"``: ``beta ||r||^2`` can exceed a likelihood's divergence bound."""
        return self.selection == "likelihood"

    def validation_log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """What the engine selects weights by (higher is better), per row, shape ``(n,)``.

        With ``selection="likelihood"``: :meth:`log_prob` with the
        encoder-Jacobian volume. The decoder-Jacobian density is right only
        once the decoder inverts the encoder; in the first epochs it can be
        far too high (held-out values ~3 nats above the truth were measured
        on a 2-D Gaussian), and selecting by it would keep those weights.
        The authors advise selecting by the encoder-Jacobian likelihood,
        which this is.

        With ``selection="objective"``: minus the training objective, with
        the exact log-volume in place of its surrogate,
        ``log N(f(x); 0, I_d) + 1/2 log det(J_f J_f^T) - beta ||x - g(f(x))||^2``
        (not a density). Its reconstruction term has the fixed weight
        ``beta``, where the likelihood's ``||r||^2 / (2 s^2)`` weighs it by
        the residual variance ``s^2`` of the *training* rows: as the model
        reconstructs those better, a few held-out rows it does not
        reconstruct can make the held-out likelihood fall while the
        held-out reconstruction still improves.
        """
        manifold = self.log_prob_manifold(x, volume="encoder")
        if self.selection == "likelihood":
            return manifold + self.log_prob_residual(x)
        encoder, decoder = self._float64_maps()
        x = x.double()
        return manifold - self.beta * (x - decoder(encoder(x))).pow(2).sum(dim=1)

    @torch.no_grad()
    def fit_residual_variance(self, x: Tensor, batch_size: int = 8192) -> float:
        """Set ``residual_variance`` to its maximum-likelihood value on rows ``x``.

        For ``r ~ N(0, s^2 I_{D-d})`` the MLE is ``sum ||r||^2 / (n (D - d))``.
        Returns the value set (1.0 when ``d = D``, where it is unused).
        """
        if self.n_normal == 0:
            return float(self.residual_variance)
        # float64, like log_prob: a badly fitted model's squared residuals
        # can overflow float32 and would make every score -inf.
        encoder, decoder = self._float64_maps()
        total = 0.0
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size].double()
            total += float((batch - decoder(encoder(batch))).pow(2).sum())
        variance = max(total / (len(x) * self.n_normal), MIN_RESIDUAL_VARIANCE)
        self.residual_variance.fill_(min(variance, torch.finfo(self.residual_variance.dtype).max))
        return variance

    # ------------------------------------------------------------------ #
    # Training objective
    # ------------------------------------------------------------------ #
    def surrogate_terms(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The three pieces of the per-sample loss at inputs ``x``.

        Returns
        -------
        squared_error : Tensor of shape (n,)
            ``||x - g(f(x))||^2`` (trains encoder and decoder).
        latent_nll : Tensor of shape (n,)
            ``-log N(f(x); 0, I_d)`` (trains the encoder).
        volume_surrogate : Tensor of shape (n,)
            A term whose gradient estimates that of the log-volume term
            ``1/2 log det(g'(z)^T g'(z))`` of the negative log-likelihood,
            with ``z = f(x)`` and probes ``v_k``:

            * FIF (``encoder_jacobian_at="data"``):
              ``-mean_k v_k^T f'(x) SG[g'(z) v_k]``; the gradient is moved
              to the encoder, and the decoder learns from reconstruction
              alone;
            * naive (``"reconstruction"``):
              ``mean_k v_k^T SG[f'(x_hat)] g'(z) v_k`` with
              ``x_hat = g(z)``: the paper's on-manifold estimator, whose
              gradient reaches the decoder (through ``g'(z)``) and the
              encoder (through ``z``). This is what lets the decoder bend
              the manifold to lower the likelihood term, the failure FIF's
              off-manifold correction prevents.

            Only its gradient is meaningful, not its value.
        """
        # Gradients are needed for the Jacobian products even where the
        # caller (skorch's validation, an inference loop) has disabled them.
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            z = self.encoder(x)
            probes = latent_probes(x.shape[0], self.n_components, self.n_probes, z).to(z.dtype)
            if self.encoder_jacobian_at == "data":
                # One decoder pass gives both the reconstruction (with its
                # graph) and the JVPs g'(z) v_k (without one: stop-gradient).
                x_hat, tangents = output_and_tangents(self.decoder, z, probes)
                trace_estimate = x.new_zeros(x.shape[0])
                for probe, tangent in zip(probes, tangents):
                    (row_vjp,) = torch.autograd.grad(z, x, probe, create_graph=True)
                    trace_estimate = trace_estimate + (row_vjp * tangent).sum(dim=1)
                volume_surrogate = -trace_estimate / self.n_probes
            else:
                x_hat = self.decoder(z)
                volume_surrogate = self._naive_volume_surrogate(z, x_hat, probes)
            squared_error = (x - x_hat).pow(2).sum(dim=1)
            latent_nll = 0.5 * (z.pow(2).sum(dim=1) + self.n_components * math.log(2 * math.pi))
        return squared_error, latent_nll, volume_surrogate

    def _naive_volume_surrogate(self, z: Tensor, x_hat: Tensor, probes: Tensor) -> Tensor:
        """``mean_k v_k^T SG[f'(x_hat)] g'(z) v_k``, differentiable through ``g'(z) v_k``."""
        # Encoder Jacobian rows v_k^T f'(x_hat) at the reconstruction, without a graph.
        point = x_hat.detach().requires_grad_(True)
        code = self.encoder(point)
        # The decoder JVP g'(z) v_k must carry a graph (to the decoder's
        # parameters and to z), so it is taken as the derivative of a VJP,
        # J^T w, with respect to the linear slot w: that is J v, differentiable.
        slot = torch.zeros_like(x_hat, requires_grad=True)
        (transposed,) = torch.autograd.grad(x_hat, z, slot, create_graph=True)
        total = z.new_zeros(z.shape[0])
        for probe in probes:
            (encoder_row,) = torch.autograd.grad(code, point, probe, retain_graph=True)
            (tangent,) = torch.autograd.grad(transposed, slot, probe, create_graph=True)
            total = total + (encoder_row.detach() * tangent).sum(dim=1)
        return total / self.n_probes

    def loss(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Per-sample loss ``beta ||x - g(f(x))||^2 - log p_Z(f(x)) + volume surrogate``, shape ``(n,)``.

        Its value is not a likelihood (only its gradient is meaningful); the
        engine validates with :meth:`validation_log_prob` instead. The paper's input
        noise is the engine's ``noise_std``, added before this is called.
        """
        squared_error, latent_nll, volume_surrogate = self.surrogate_terms(x)
        if self.training and self.n_normal > 0:
            # Running residual variance, so that validation during training
            # scores with a sensible off-manifold Gaussian.
            with torch.no_grad():
                batch_variance = squared_error.mean() / self.n_normal
                self.residual_variance.lerp_(batch_variance.to(self.residual_variance.dtype), self.residual_momentum)
        return self.beta * squared_error + latent_nll + volume_surrogate


class FreeFormFlow(FreeFormInjectiveFlow):
    """Free-form flow (FFF): the full-dimensional case ``d = D``.

    Same training objective as :class:`FreeFormInjectiveFlow` (probes in
    ``R^D``); the exact log-density is
    ``log p(x) = log N(f(x); 0, I_D) - log|det g'(f(x))|``, i.e. the decoder
    is treated as the inverse of the encoder, as in the paper.

    Parameters
    ----------
    encoder, decoder : nn.Module
        Batched maps ``(n, D) -> (n, D)``.
    n_features : int
        ``D``.
    beta, n_probes, jacobian_chunk_size
        As in :class:`FreeFormInjectiveFlow`.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        n_features: int,
        beta: float = 10.0,
        n_probes: int = 1,
        jacobian_chunk_size: int | None = None,
    ) -> None:
        super().__init__(
            encoder,
            decoder,
            n_features,
            n_features,
            beta=beta,
            n_probes=n_probes,
            jacobian_chunk_size=jacobian_chunk_size,
        )


def build_networks(
    n_features: int,
    n_components: int,
    encoder_factory: Callable[[int, int], nn.Module] | None,
    decoder_factory: Callable[[int, int], nn.Module] | None,
    hidden_dims: Sequence[int],
    activation: str | type[nn.Module],
    n_residual_blocks: int,
    linear_skip: bool = False,
) -> tuple[nn.Module, nn.Module]:
    """Encoder and decoder from user factories ``(n_in, n_out) -> nn.Module`` or the defaults.

    ``linear_skip`` applies to the default networks (see :func:`default_encoder`).
    """
    if encoder_factory is None:
        encoder = default_encoder(n_features, n_components, hidden_dims, activation, n_residual_blocks, linear_skip)
    else:
        encoder = encoder_factory(n_features, n_components)
    if decoder_factory is None:
        decoder = default_decoder(n_components, n_features, hidden_dims, activation, n_residual_blocks, linear_skip)
    else:
        decoder = decoder_factory(n_components, n_features)
    for name, network in (("encoder", encoder), ("decoder", decoder)):
        if not isinstance(network, nn.Module):
            # ValueError, as for every bad hyperparameter in skflow.
            raise ValueError(f"The {name} factory must return an nn.Module, got {type(network).__name__}.")  # noqa: TRY004
    return encoder, decoder
