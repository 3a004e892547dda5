"""Coupling layers: half the features pass unchanged and condition an
elementwise bijection of the other half (Dinh et al. 2014, 2016).

:class:`Coupling` is the structure: it owns the split, the conditioner call
and the reassembly, and applies any
:class:`~skflow.flows.elementwise.ElementwiseMap` to the transformed half.
The conditioner is any module mapping ``(n, n_identity + n_context)`` to
``(n, n_params * n_transformed)``. :class:`AffineCoupling` and
:class:`AdditiveCoupling` are the structure with one map each (the spline
coupling lives in :mod:`skflow.flows.splines`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .core import Bijection, check_context
from .elementwise import Additive, Affine, ElementwiseMap

__all__ = ["AdditiveCoupling", "AffineCoupling", "Coupling"]


class Coupling(Bijection):
    """Generic coupling layer.

    Parameters
    ----------
    n_features : int
        Dimension ``d`` of the input.
    n_identity : int
        Number of features that pass unchanged (``0 < n_identity < d``; 0 is
        allowed with a context: every feature is then transformed by
        parameters computed from the context alone, which is what a
        conditional flow of a single target needs).
    conditioner : nn.Module
        Maps the identity part (concatenated with the context, if any) to the
        parameters of the elementwise map, shape
        ``(n, elementwise.n_params * (d - n_identity))``, read as
        ``(n, n_params, d - n_identity)``.
    elementwise : ElementwiseMap
        The map applied to each transformed feature.
    flip : bool, default=False
        If False the first ``n_identity`` features pass unchanged, otherwise
        the last ``n_identity`` do. Alternating ``flip`` between layers lets
        every feature be transformed.
    n_context : int, default=0
        Width of the context concatenated to the conditioner's input; a
        layer with ``n_context > 0`` requires a context of that width (0:
        any context given is passed on unchecked).
    """

    def __init__(
        self,
        n_features: int,
        n_identity: int,
        conditioner: nn.Module,
        elementwise: ElementwiseMap,
        flip: bool = False,
        n_context: int = 0,
    ) -> None:
        super().__init__()
        lowest = 0 if n_context > 0 else 1
        if not lowest <= n_identity < n_features:
            raise ValueError(f"n_identity must lie in [{lowest}, {n_features}), got {n_identity}.")
        if not isinstance(elementwise, ElementwiseMap):
            raise TypeError(f"elementwise must be an ElementwiseMap, got {type(elementwise).__name__}.")
        self.n_features = n_features
        self.n_identity = n_identity
        self.flip = flip
        self.conditioner = conditioner
        self.elementwise = elementwise
        self.n_context = n_context

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return (identity part, transformed part)."""
        if self.flip:
            transformed, identity = x.split([self.n_features - self.n_identity, self.n_identity], dim=1)
        else:
            identity, transformed = x.split([self.n_identity, self.n_features - self.n_identity], dim=1)
        return identity, transformed

    def _join(self, identity: Tensor, transformed: Tensor) -> Tensor:
        parts = (transformed, identity) if self.flip else (identity, transformed)
        return torch.cat(parts, dim=1)

    def _params(self, identity: Tensor, context: Tensor | None) -> Tensor:
        if self.n_context:
            context = check_context(self, context)
        # Without a declared width the context goes to the conditioner as
        # given, which then decides (a convolutional one refuses it).
        inputs = identity if context is None else torch.cat([identity, context], dim=1)
        params = self.conditioner(inputs)
        return params.view(identity.shape[0], self.elementwise.n_params, self.n_features - self.n_identity)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        identity, transformed = self._split(x)
        y, log_abs_det = self.elementwise(transformed, self._params(identity, context))
        return self._join(identity, y), log_abs_det

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        identity, transformed = self._split(y)
        x, log_abs_det = self.elementwise.inverse(transformed, self._params(identity, context))
        return self._join(identity, x), log_abs_det


class AffineCoupling(Coupling):
    """RealNVP coupling: ``y_b = x_b * exp(s(x_a)) + t(x_a)``.

    The :class:`~skflow.flows.elementwise.Affine` map: the log-scale is
    soft-clamped, ``s = bound * tanh(s_raw / bound)``. The conditioner
    outputs ``(t, s_raw)`` per transformed feature; zero-initialising its
    last layer makes the layer start as the identity.

    Parameters
    ----------
    n_features, n_identity, conditioner, flip, n_context
        See :class:`Coupling`; the conditioner has ``2 * (d - n_identity)``
        outputs.
    scale_bound : float, default=3.0
        Bound on ``|s|`` per feature and layer.
    """

    def __init__(
        self,
        n_features: int,
        n_identity: int,
        conditioner: nn.Module,
        flip: bool = False,
        scale_bound: float = 3.0,
        n_context: int = 0,
    ) -> None:
        super().__init__(n_features, n_identity, conditioner, Affine(scale_bound), flip, n_context)


class AdditiveCoupling(Coupling):
    """NICE coupling: ``y_b = x_b + m(x_a)``; volume preserving (log-det 0).

    Parameters
    ----------
    n_features, n_identity, conditioner, flip, n_context
        See :class:`Coupling`; the conditioner has ``d - n_identity`` outputs.
    """

    def __init__(
        self, n_features: int, n_identity: int, conditioner: nn.Module, flip: bool = False, n_context: int = 0
    ) -> None:
        super().__init__(n_features, n_identity, conditioner, Additive(), flip, n_context)
