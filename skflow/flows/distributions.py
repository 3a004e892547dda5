"""Learnable base distributions beyond the standard normal.

:class:`GaussianMixtureBase` gives an exact flow a multimodal latent density.
A bijection is a homeomorphism, so a flow pushing a unimodal Gaussian onto
well-separated clusters has to stretch thin bridges of mass between them; a
mixture base lets a shallow flow place each cluster on its own component
instead. It offers the same two methods as
:class:`~skflow.flows.core.StandardNormal` (``log_prob`` and ``sample``), so
:class:`~skflow.flows.core.ExactFlow` takes either.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .core import BaseDistribution, check_context

__all__ = ["GaussianMixtureBase"]


class GaussianMixtureBase(BaseDistribution):
    """Learnable mixture of ``k`` Gaussians with diagonal covariances on ``R^d``.

    ``p(z) = sum_j pi_j N(z; mu_j, diag(sigma_j^2))`` with
    ``pi = softmax(logits)`` and ``sigma_j = exp(log_scales_j)``.

    Parameters
    ----------
    n_features : int
        Dimension ``d``.
    n_components : int
        Number of mixture components ``k``.
    n_context : int, default=0
        Width of an optional context ``c``; the mixture weights then become
        ``softmax(logits + A c)`` (``A`` learned, zero at initialisation), so
        a conditional flow can move mass between modes as the context
        changes. Means and scales stay shared: the flow's layers move those.

    Attributes
    ----------
    logits : Parameter of shape (k,)
        Unnormalised log mixture weights; initialised at 0 (equal weights).
    means : Parameter of shape (k, d)
        Component means; initialised from ``N(0, I)`` with torch's global
        generator (seeded by the estimator), so components start spread over
        the region where standardised data live.
    log_scales : Parameter of shape (k, d)
        Log standard deviations; initialised at 0 (unit scales).
    """

    def __init__(self, n_features: int, n_components: int, n_context: int = 0) -> None:
        super().__init__()
        for name, value in (("n_features", n_features), ("n_components", n_components)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.n_features = int(n_features)
        self.n_components = int(n_components)
        self.logits = nn.Parameter(torch.zeros(self.n_components))
        self.means = nn.Parameter(torch.randn(self.n_components, self.n_features))
        self.log_scales = nn.Parameter(torch.zeros(self.n_components, self.n_features))
        self.n_context = int(n_context)
        if self.n_context:
            self.context_logits = nn.Linear(self.n_context, self.n_components, bias=False)
            nn.init.zeros_(self.context_logits.weight)

    def _log_weights(self, context: Tensor | None) -> Tensor:
        """Log mixture weights, shape ``(k,)``, or ``(n, k)`` for a conditional mixture."""
        context = check_context(self, context)
        if context is None:
            return torch.log_softmax(self.logits, dim=0)
        return torch.log_softmax(self.logits + self.context_logits(context), dim=1)

    def _check(self, z: Tensor) -> None:
        if z.dim() != 2 or z.shape[1] != self.n_features:
            raise ValueError(
                f"GaussianMixtureBase expects points of shape (n, {self.n_features}), got {tuple(z.shape)}."
            )

    def component_log_prob(self, z: Tensor) -> Tensor:
        """Log-density of each point under each component (weights excluded).

        Parameters
        ----------
        z : Tensor of shape (n, d)

        Returns
        -------
        log_density : Tensor of shape (n, k)
        """
        self._check(z)
        standardised = (z.unsqueeze(1) - self.means) * torch.exp(-self.log_scales)  # (n, k, d)
        return (
            -0.5 * standardised.pow(2).sum(dim=2)
            - self.log_scales.sum(dim=1)
            - (0.5 * self.n_features * math.log(2 * math.pi))
        )

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of points ``z``.

        Parameters
        ----------
        z : Tensor of shape (n, d)
        context : Tensor of shape (n, n_context), optional
            Required when ``n_context > 0``, ignored otherwise.

        Returns
        -------
        log_density : Tensor of shape (n,)
        """
        # logsumexp over components keeps far-away points finite, where each
        # component's density alone underflows to zero.
        weighted = self.component_log_prob(z) + self._log_weights(context)
        return torch.logsumexp(weighted, dim=1)

    def sample(
        self,
        n_samples: int,
        generator: torch.Generator | None = None,
        context: Tensor | None = None,
    ) -> Tensor:
        """Draw points from the mixture.

        Parameters
        ----------
        n_samples : int
        generator : torch.Generator, optional
            Source of randomness for both the component choice and the
            Gaussian noise; must live on the module's device.
        context : Tensor of shape (n_samples, n_context), optional
            One context per draw; required when ``n_context > 0``.

        Returns
        -------
        z : Tensor of shape (n_samples, d)
            On the module's device, in its dtype. Differentiable with respect
            to ``means`` and ``log_scales`` (not ``logits``).
        """
        if isinstance(n_samples, bool) or int(n_samples) != n_samples or n_samples < 0:
            raise ValueError(f"n_samples must be a non-negative integer, got {n_samples!r}.")
        weights = self._log_weights(context).detach().exp()
        if weights.dim() == 2:
            if len(weights) != n_samples:
                raise ValueError(f"Got {len(weights)} contexts for {n_samples} samples; give one per sample.")
            components = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        else:
            components = torch.multinomial(weights, int(n_samples), replacement=True, generator=generator)
        noise = torch.randn(
            int(n_samples),
            self.n_features,
            generator=generator,
            device=self.means.device,
            dtype=self.means.dtype,
        )
        return self.means[components] + torch.exp(self.log_scales[components]) * noise

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}, n_components={self.n_components}"
