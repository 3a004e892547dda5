"""A conditional flow as a FlowModel of joint rows ``[target | context]``.

The training engine knows one thing: a model with ``loss(rows)`` and
``log_prob(rows)``. :class:`ConditionalFlow` lets it train ``p(y | c)``
without a second code path: each row carries the target ``y`` in its first
``n_targets`` columns and the raw context ``c`` in the rest, and the wrapper
splits them, passes ``c`` through an optional learned embedding, and calls
the family's model with that as ``context``. Sampling needs a context per
draw, so it is :meth:`ConditionalFlow.sample_given` rather than the
protocol's unconditional ``sample``.

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
    """

    def __init__(self, flow: FlowModel, n_targets: int, n_context: int, embedding: nn.Module | None = None) -> None:
        super().__init__()
        self.flow = flow
        self.n_targets = int(n_targets)
        self.n_context = int(n_context)
        self.embedding = embedding

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

    def log_prob(self, rows: Tensor, context: Tensor | None = None) -> Tensor:
        """``log p(y | c)`` per row, shape ``(n,)``, of joint rows ``(n, k + c)``."""
        targets, embedded = self._split(rows)
        return self.flow.log_prob(targets, embedded)

    def loss(self, rows: Tensor, context: Tensor | None = None) -> Tensor:
        """The family's training loss of ``y`` given ``c``, shape ``(n,)``."""
        targets, embedded = self._split(rows)
        return self.flow.loss(targets, embedded)

    def validation_log_prob(self, rows: Tensor, context: Tensor | None = None) -> Tensor:
        """The family's held-out score of ``y`` given ``c``, shape ``(n,)``."""
        targets, embedded = self._split(rows)
        return self.flow.validation_log_prob(targets, embedded)

    def encode(self, rows: Tensor, context: Tensor | None = None) -> Tensor:
        """Latent code of ``y`` given ``c``, shape ``(n, k)``."""
        targets, embedded = self._split(rows)
        return self.flow.encode(targets, embedded)

    def decode(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Targets ``(n, k)`` from latent codes ``z`` ``(n, k)`` given raw contexts ``(n, c)``."""
        if context is None:
            raise ValueError("ConditionalFlow.decode needs the raw context of every row.")
        return self.flow.decode(z, self.embed(context))

    def sample(self, n_samples: int, generator: torch.Generator | None = None, context: Tensor | None = None) -> Tensor:
        """Targets drawn given raw contexts ``(n_samples, c)``, one draw per context row."""
        if context is None:
            raise ValueError("A conditional flow samples given a context: pass one context row per sample.")
        return self.sample_given(context, generator)

    def sample_given(self, context: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One draw of ``y`` per row of the raw context ``(n, c)``; shape ``(n, k)``."""
        return self.flow.sample(len(context), generator, self.embed(context))
