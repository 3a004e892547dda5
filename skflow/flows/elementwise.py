"""Elementwise monotone maps: the part of a coupling or autoregressive layer
that transforms each feature given its parameters.

A flow layer of the coupling or autoregressive kind is two things: a
*structure* that computes, for every transformed feature, a vector of
parameters from other features (:class:`~skflow.flows.coupling.Coupling`,
:class:`~skflow.flows.autoregressive.Autoregressive`), and a strictly
increasing scalar map applied feature by feature with those parameters. The
second lives here, once, so that every structure can use every map and each
map's settings are validated in one place.

A map consumes parameters of shape ``(n, n_params, m)`` (entry ``[:, p, i]``
is parameter ``p`` of feature ``i``), the layout both structures produce.
The rational-quadratic spline map lives with its formula in
:mod:`skflow.flows.splines`.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor, nn

from ..nn import tanh

__all__ = ["Additive", "Affine", "ElementwiseMap", "Inverted"]


class ElementwiseMap(nn.Module):
    """A strictly increasing map applied to each feature with its own parameters.

    Subclasses set ``n_params`` (parameters per feature) and implement
    :meth:`forward` and :meth:`inverse`. A map holds settings, never trained
    weights: the weights belong to the structure's conditioner, so adding a
    map to a layer leaves the layer's ``state_dict`` unchanged.

    Attributes
    ----------
    n_params : int
        Number of parameters per feature the conditioner must produce.
    """

    n_params: int

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Apply the map.

        Parameters
        ----------
        x : Tensor of shape (n, m)
        params : Tensor of shape (n, n_params, m)

        Returns
        -------
        y : Tensor of shape (n, m)
        log_abs_det : Tensor of shape (n,)
            ``sum_i log |dy_i / dx_i|`` per row.
        """
        raise NotImplementedError

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Invert :meth:`forward` for the same parameters.

        Returns ``(x, log_abs_det)`` with the log-det of the inverse map,
        shape ``(n,)``.
        """
        raise NotImplementedError


class Affine(ElementwiseMap):
    """``y = x * exp(s) + t`` with a soft-bounded log-scale.

    Parameters per feature are ``(t, s_raw)``; the log-scale is
    ``s = bound * tanh(s_raw / bound)``, so no layer can scale a feature by
    more than ``exp(bound)`` in either direction: inverses stay numerically
    stable and training cannot blow up through one runaway scale. All-zero
    parameters give the identity.

    Parameters
    ----------
    scale_bound : float, default=3.0
        Bound on ``|s|``; must be positive and finite.
    """

    n_params = 2
    scale_bound: float

    def __init__(self, scale_bound: float = 3.0) -> None:
        super().__init__()
        if isinstance(scale_bound, bool) or not (isinstance(scale_bound, Real) and 0 < scale_bound < math.inf):
            raise ValueError(f"scale_bound must be a positive finite number, got {scale_bound!r}.")
        self.scale_bound: float = float(scale_bound)

    def shift_and_log_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """``(t, s)`` of shapes ``(n, m)`` from raw parameters ``(n, 2, m)``."""
        shift, raw_log_scale = params.unbind(dim=1)
        return shift, self.scale_bound * tanh(raw_log_scale / self.scale_bound)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, log_scale = self.shift_and_log_scale(params)
        return x * torch.exp(log_scale) + shift, log_scale.sum(dim=1)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, log_scale = self.shift_and_log_scale(params)
        return (y - shift) * torch.exp(-log_scale), -log_scale.sum(dim=1)

    def extra_repr(self) -> str:
        return f"scale_bound={self.scale_bound:g}"


class Additive(ElementwiseMap):
    """``y = x + t``: a shift, volume preserving (log-det 0)."""

    n_params = 1

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return x + params[:, 0], x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return y - params[:, 0], y.new_zeros(y.shape[0])


class Inverted(ElementwiseMap):
    """A map used the other way round: ``forward`` is the wrapped ``inverse``.

    MAF's layer is the affine map read in the generative direction,
    ``x = z * exp(a) + mu``, so its data-to-latent step is the affine
    map's inverse; wrapping keeps one affine formula for both structures.

    Parameters
    ----------
    elementwise : ElementwiseMap
    """

    def __init__(self, elementwise: ElementwiseMap) -> None:
        super().__init__()
        self.elementwise = elementwise
        self.n_params = elementwise.n_params

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self.elementwise.inverse(x, params)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self.elementwise.forward(y, params)
