"""A conditional flow as a FlowModel of joint rows ``[target | context]``.

The training engine knows one thing: a model with ``loss(rows)`` and
``log_prob(rows)``. :class:`ConditionalFlow` lets it train ``p(y | c)``
without a second code path: each row carries the target ``y`` in its first
``n_targets`` columns and the raw context ``c`` in the rest, and the wrapper
splits them, passes ``c`` through an optional learned embedding, and calls
the family's model with that as ``context``. Sampling needs a context per
draw, so it is :meth:`ConditionalFlow.sample_given` rather than the
protocol's unconditional ``sample``.

An optional location-scale step comes first: ``u = (y - m(c)) / s(c)``
with ``m`` and ``log s`` from a network of the context whose last layer
starts at zero, so ``log p(y | c) = log p_flow(u | c) - sum(log s(c))``.
With a family that starts as the identity (splines, couplings) the model
starts as a Gaussian and trains as a heteroscedastic Gaussian plus what
the flow adds on top: the shape beyond a location and a spread is all the
flow has to learn, which small tables support far better than learning
the conditional mean and spread through the flow's layers as well.

Nothing here imports scikit-learn.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .core import FlowModel

__all__ = ["ConditionalFlow"]


class ConditionalFlow(FlowModel):
    """``p(y | c)`` from a flow model built with a context input.

    Parameters
    ----------
    flow : FlowModel
        A :class:`~skflow.flows.core.FlowModel` of ``n_targets`` features
        whose methods take ``context`` of width ``embedding``'s output (or
        ``n_context`` without an embedding).
    n_targets : int
        Number of target columns ``k`` at the front of each row.
    n_context : int
        Number of raw context columns ``c`` after them.
    embedding : nn.Module or None, default=None
        Maps the raw context ``(n, c)`` to what the flow sees; trained with
        the flow. None passes the context unchanged.
    location_scale : nn.Module or None, default=None
        Maps the embedded context ``(n, w)`` to ``(n, 2k)``: a shift ``m``
        and a log-scale ``log s`` of the targets, applied before the flow
        (``u = (y - m) / s``); trained with the flow. Its loss must be the
        negative log-likelihood (an exact family's), since the log-det of
        this step is added to it. None leaves the targets as they are.
    """

    def __init__(
        self,
        flow: FlowModel,
        n_targets: int,
        n_context: int,
        embedding: nn.Module | None = None,
        location_scale: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.flow = flow
        self.n_targets = int(n_targets)
        self.n_context = int(n_context)
        self.embedding = embedding
        self.location_scale = location_scale

    def _split(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        if rows.dim() != 2 or rows.shape[1] != self.n_targets + self.n_context:
            raise ValueError(
                f"ConditionalFlow expects rows of shape (n, {self.n_targets} + {self.n_context}), "
                f"got {tuple(rows.shape)}."
            )
        targets, context = rows.split([self.n_targets, self.n_context], dim=1)
        return targets, self.embed(context)

    def embed(self, context: Tensor) -> Tensor:
        """The context the flow sees, shape ``(n, embedded width)``, from the raw ``(n, c)``."""
        return context if self.embedding is None else self.embedding(context)

    def _shift_log_scale(self, embedded: Tensor) -> tuple[Tensor, Tensor]:
        """Shift and log-scale of the targets, each ``(n, k)``; zeros without a location-scale step."""
        if self.location_scale is None:
            zeros = embedded.new_zeros(len(embedded), self.n_targets)
            return zeros, zeros
        shift, log_scale = self.location_scale(embedded).split(self.n_targets, dim=1)
        return shift, log_scale

    def _standardised_targets(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``u = (y - m) / s``, the embedded context and ``sum(log s)`` per row."""
        targets, embedded = self._split(rows)
        if self.location_scale is None:
            return targets, embedded, targets.new_zeros(len(targets))
        shift, log_scale = self._shift_log_scale(embedded)
        return (targets - shift) * torch.exp(-log_scale), embedded, log_scale.sum(dim=1)

    def log_prob(self, rows: Tensor, context: Tensor | None = None) -> Tensor:
        """``log p(y | c)`` per row, shape ``(n,)``, of joint rows ``(n, k + c)``."""
        residual, embedded, log_scale = self._standardised_targets(rows)
        return self.flow.log_prob(residual, embedded) - log_scale

    def loss(self, rows: Tensor, context: Tensor | None = None) -> Tensor:
        """The family's training loss of ``y`` given ``c``, shape ``(n,)``."""
        residual, embedded, log_scale = self._standardised_targets(rows)
        return self.flow.loss(residual, embedded) + log_scale

    def validation_log_prob(self, rows: Tensor, context: Tensor | None = None) -> Tensor:
        """The family's held-out score of ``y`` given ``c``, shape ``(n,)``."""
        residual, embedded, log_scale = self._standardised_targets(rows)
        return self.flow.validation_log_prob(residual, embedded) - log_scale

    def encode(self, rows: Tensor, context: Tensor | None = None) -> Tensor:
        """Latent code of ``y`` given ``c``, shape ``(n, k)``."""
        residual, embedded, _ = self._standardised_targets(rows)
        return self.flow.encode(residual, embedded)

    def _unstandardise(self, residual: Tensor, embedded: Tensor) -> Tensor:
        shift, log_scale = self._shift_log_scale(embedded)
        return shift + residual * torch.exp(log_scale)

    def decode(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Targets ``(n, k)`` from latent codes ``z`` ``(n, k)`` given raw contexts ``(n, c)``."""
        if context is None:
            raise ValueError("ConditionalFlow.decode needs the raw context of every row.")
        embedded = self.embed(context)
        return self._unstandardise(self.flow.decode(z, embedded), embedded)

    def sample(self, n_samples: int, generator: torch.Generator | None = None, context: Tensor | None = None) -> Tensor:
        """Targets drawn given raw contexts ``(n_samples, c)``, one draw per context row."""
        if context is None:
            raise ValueError("A conditional flow samples given a context: pass one context row per sample.")
        return self.sample_given(context, generator)

    def sample_given(self, context: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One draw of ``y`` per row of the raw context ``(n, c)``; shape ``(n, k)``."""
        embedded = self.embed(context)
        return self._unstandardise(self.flow.sample(len(context), generator, embedded), embedded)
