"""Coupling layers: half the features pass unchanged and condition an
elementwise bijection of the other half (Dinh et al. 2014, 2016).

:class:`Coupling` owns the split, the conditioner call and the reassembly;
subclasses only say how the transformed half is mapped given the
conditioner's parameters. The conditioner is any module mapping
``(n, n_identity + n_context)`` to ``(n, n_transformed * params_per_feature)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .core import Bijection

__all__ = ["AdditiveCoupling", "AffineCoupling", "Coupling"]


class Coupling(Bijection):
    """Generic coupling layer.

    Parameters
    ----------
    n_features : int
        Dimension ``d`` of the input.
    n_identity : int
        Number of features that pass unchanged (``0 < n_identity < d``).
    conditioner : nn.Module
        Maps the identity part (concatenated with the context, if any) to the
        parameters of the elementwise map, shape
        ``(n, (d - n_identity) * params_per_feature)``.
    flip : bool, default=False
        If False the first ``n_identity`` features pass unchanged, otherwise
        the last ``n_identity`` do. Alternating ``flip`` between layers lets
        every feature be transformed.
    """

    params_per_feature: int = 1

    def __init__(self, n_features: int, n_identity: int, conditioner: nn.Module, flip: bool = False) -> None:
        super().__init__()
        if not 0 < n_identity < n_features:
            raise ValueError(f"n_identity must lie in (0, {n_features}), got {n_identity}.")
        self.n_features = n_features
        self.n_identity = n_identity
        self.flip = flip
        self.conditioner = conditioner

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
        inputs = identity if context is None else torch.cat([identity, context], dim=1)
        params = self.conditioner(inputs)
        return params.view(identity.shape[0], self.params_per_feature, self.n_features - self.n_identity)

    def _map(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Elementwise forward map of the transformed part; returns (y, log_abs_det)."""
        raise NotImplementedError

    def _unmap(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Inverse of :meth:`_map`; returns (x, log_abs_det of the inverse)."""
        raise NotImplementedError

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        identity, transformed = self._split(x)
        y, log_abs_det = self._map(transformed, self._params(identity, context))
        return self._join(identity, y), log_abs_det

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        identity, transformed = self._split(y)
        x, log_abs_det = self._unmap(transformed, self._params(identity, context))
        return self._join(identity, x), log_abs_det


class AffineCoupling(Coupling):
    """RealNVP coupling: ``y_b = x_b * exp(s(x_a)) + t(x_a)``.

    The log-scale is soft-clamped, ``s = bound * tanh(s_raw / bound)``, so no
    layer can scale a feature by more than ``exp(bound)`` in either direction:
    inverses stay numerically stable and training cannot blow up through a
    single runaway scale. The conditioner outputs ``(t, s_raw)`` per
    transformed feature; zero-initialising its last layer makes the layer
    start as the identity.

    Parameters
    ----------
    n_features, n_identity, conditioner, flip
        See :class:`Coupling`.
    scale_bound : float, default=3.0
        Bound on ``|s|`` per feature and layer.
    """

    params_per_feature = 2

    def __init__(
        self,
        n_features: int,
        n_identity: int,
        conditioner: nn.Module,
        flip: bool = False,
        scale_bound: float = 3.0,
    ) -> None:
        super().__init__(n_features, n_identity, conditioner, flip)
        self.scale_bound = scale_bound

    def _shift_and_log_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, raw_log_scale = params.unbind(dim=1)
        return shift, self.scale_bound * torch.tanh(raw_log_scale / self.scale_bound)

    def _map(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, log_scale = self._shift_and_log_scale(params)
        return x * torch.exp(log_scale) + shift, log_scale.sum(dim=1)

    def _unmap(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, log_scale = self._shift_and_log_scale(params)
        return (y - shift) * torch.exp(-log_scale), -log_scale.sum(dim=1)


class AdditiveCoupling(Coupling):
    """NICE coupling: ``y_b = x_b + m(x_a)``; volume preserving (log-det 0)."""

    params_per_feature = 1

    def _map(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return x + params[:, 0], x.new_zeros(x.shape[0])

    def _unmap(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return y - params[:, 0], y.new_zeros(y.shape[0])
