"""The flow core: the bijection contract, chains, base distributions and the
model interface that every flow family offers the estimator layer.

Conventions, stated once for the whole package:

* Tensors are batch first, shape ``(n, d)``.
* The *forward* direction of a :class:`Bijection` maps data to latent
  (density-evaluation direction); ``inverse`` maps latent to data.
* Every bijection returns ``(output, log_abs_det)`` where ``log_abs_det`` has
  shape ``(n,)`` and is the log absolute Jacobian determinant *of the map just
  applied* (so ``inverse`` returns the log-det of the inverse map).
* ``context`` is an optional conditioning tensor of shape ``(n, c)``, threaded
  through every call so that conditional flows need no second code path.

Nothing here imports scikit-learn.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import cast

import torch
from torch import Tensor, nn

__all__ = [
    "Bijection",
    "Chain",
    "ExactFlow",
    "FlowModel",
    "StandardNormal",
    "check_context",
]


class Bijection(nn.Module):
    """An invertible map with a tractable log absolute Jacobian determinant.

    Subclasses implement :meth:`forward` (data to latent) and :meth:`inverse`
    (latent to data). Both return the transformed tensor and the per-sample
    log absolute determinant of the Jacobian of the map they applied.
    """

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map data to latent.

        Parameters
        ----------
        x : Tensor of shape (n, d)
        context : Tensor of shape (n, c), optional

        Returns
        -------
        y : Tensor of shape (n, d)
        log_abs_det : Tensor of shape (n,)
            ``log |det dy/dx|``.
        """
        raise NotImplementedError

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map latent to data.

        Parameters
        ----------
        y : Tensor of shape (n, d)
        context : Tensor of shape (n, c), optional

        Returns
        -------
        x : Tensor of shape (n, d)
        log_abs_det : Tensor of shape (n,)
            ``log |det dx/dy|`` (the negative of the forward log-det at ``x``).
        """
        raise NotImplementedError


def check_context(layer: nn.Module, context: Tensor | None) -> Tensor | None:
    """The context a layer declared (``layer.n_context``), checked; None for an unconditional layer.

    Raises
    ------
    ValueError
        If a conditional layer gets no context or one of the wrong width.
    """
    n_context = getattr(layer, "n_context", 0)
    if not n_context:
        return None
    if context is None or context.ndim != 2 or context.shape[1] != n_context:
        got = None if context is None else tuple(context.shape)
        raise ValueError(f"{type(layer).__name__} expects a context of shape (n, {n_context}), got {got}.")
    return context


class Chain(Bijection):
    """Composition of bijections, applied in order in the forward direction.

    Parameters
    ----------
    bijections : iterable of Bijection
        The first one is applied first to data.
    """

    def __init__(self, bijections: list[Bijection] | tuple[Bijection, ...]) -> None:
        super().__init__()
        self.bijections = nn.ModuleList(bijections)

    def _layers(self) -> list[Bijection]:
        # nn.ModuleList is not generic; the constructor only admits bijections.
        return cast("list[Bijection]", list(self.bijections))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        for bijection in self._layers():
            x, log_abs_det = bijection(x, context)
            total = total + log_abs_det
        return x, total

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = y.new_zeros(y.shape[0])
        for bijection in reversed(self._layers()):
            y, log_abs_det = bijection.inverse(y, context)
            total = total + log_abs_det
        return y, total


class BaseDistribution(nn.Module, ABC):
    """What an exact flow needs of its base distribution: a density and a sampler on ``R^d``."""

    @abstractmethod
    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density, shape ``(n,)``, of points ``z`` of shape ``(n, d)``."""

    @abstractmethod
    def sample(self, n_samples: int, generator: torch.Generator | None = None, context: Tensor | None = None) -> Tensor:
        """Draw ``n_samples`` points, shape ``(n_samples, d)``."""


class StandardNormal(BaseDistribution):
    """Standard normal distribution on ``R^d``.

    A non-persistent buffer follows the module's device and dtype (``.to()``,
    ``.double()``, ``.cuda()``), so samples are created where the model lives,
    and the ``state_dict`` holds no distribution parameters.

    Parameters
    ----------
    n_features : int
        Dimension ``d``.
    """

    # Buffers, declared for the type checker (register_buffer sets them).
    _anchor: Tensor

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.n_features = n_features
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density, shape ``(n,)``, of points ``z`` of shape ``(n, d)``."""
        return -0.5 * (z.pow(2).sum(dim=1) + self.n_features * math.log(2 * math.pi))

    def sample(
        self,
        n_samples: int,
        generator: torch.Generator | None = None,
        context: Tensor | None = None,
    ) -> Tensor:
        """Draw ``n_samples`` points, shape ``(n_samples, d)``."""
        return torch.randn(
            n_samples,
            self.n_features,
            generator=generator,
            device=self._anchor.device,
            dtype=self._anchor.dtype,
        )


class FlowModel(nn.Module, ABC):
    """What every flow family offers the estimator layer and the training engine.

    The one typed interface between the two: an estimator's ``build_model``
    returns one, the engine trains one, and neither calls anything else. All
    tensors are in the estimator's standardised units, batch first.

    * ``log_prob(x) -> (n,)``: log-density (what ``score_samples`` reports).
    * ``loss(x) -> (n,)``: per-sample training loss, minimised in mean;
      ``-log_prob(x)`` unless the family trains on a surrogate.
    * ``validation_log_prob(x) -> (n,)``: the held-out score the engine
      monitors for early stopping and for the choice of the weights kept;
      ``log_prob(x)`` unless the family has a cheaper or, early in training,
      more trustworthy estimate of the same density.
    * ``sample(n, generator) -> (n, d)``: draws from the model.
    * ``encode(x) -> (n, k)``: data to latent representation.
    * ``decode(z) -> (n, d)``: latent to data.

    The engine calls ``loss`` while the module is in training mode and
    ``-validation_log_prob`` in evaluation mode, so early stopping always
    looks at a held-out likelihood, whatever surrogate a family trains on.
    What validation measures is the model's to say: nothing outside it
    switches its internals around training.
    """

    @abstractmethod
    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of rows ``x`` of shape ``(n, d)``; returns shape ``(n,)``."""

    def loss(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Per-sample training loss, shape ``(n,)``; the negative log-density by default."""
        return -self.log_prob(x, context)

    def validation_log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Held-out score the engine monitors, shape ``(n,)``; :meth:`log_prob` by default."""
        return self.log_prob(x, context)

    @property
    def validates_a_likelihood(self) -> bool:
        """Whether :meth:`validation_log_prob` is a log-density (True by default).

        The engine holds a log-density's held-out loss to an absolute bound
        near a standard normal's; any other score (e.g. one with a weighted
        reconstruction error) is held, like the training loss, to a bound
        relative to its first epoch.
        """
        return True

    @abstractmethod
    def sample(
        self,
        n_samples: int,
        generator: torch.Generator | None = None,
        context: Tensor | None = None,
    ) -> Tensor:
        """Draw ``n_samples`` rows, shape ``(n_samples, d)``."""

    @abstractmethod
    def encode(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Latent representation of rows ``x``, shape ``(n, k)``."""

    @abstractmethod
    def decode(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Rows ``(n, d)`` of the latent codes ``z`` of shape ``(n, k)``."""


class ExactFlow(FlowModel):
    """An exact normalizing flow: a bijection onto a base distribution.

    ``log p(x) = log p_Z(f(x)) + log |det J_f(x)|`` where ``f`` is the chain's
    forward (data-to-latent) direction. Implements the :class:`FlowModel`
    protocol once for every exact family (RealNVP, NICE, Glow, MAF, ...).

    Parameters
    ----------
    transform : Bijection
        Data-to-latent map.
    base : nn.Module
        Base distribution with ``log_prob(z, context)`` and
        ``sample(n, generator, context)`` (a ``BaseDistribution``).
    """

    transform: Bijection
    base: BaseDistribution

    def __init__(self, transform: Bijection, base: BaseDistribution) -> None:
        super().__init__()
        self.transform = transform
        self.base = base

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        z, log_abs_det = self.transform(x, context)
        return self.base.log_prob(z, context) + log_abs_det

    def sample(
        self,
        n_samples: int,
        generator: torch.Generator | None = None,
        context: Tensor | None = None,
    ) -> Tensor:
        z = self.base.sample(n_samples, generator, context)
        return self.decode(z, context)

    def encode(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.transform(x, context)[0]

    def decode(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        return self.transform.inverse(z, context)[0]
