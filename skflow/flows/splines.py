"""Monotone rational-quadratic splines (Durkan et al., 2019) and the neural
spline flow layers built on them.

:func:`rational_quadratic_spline` is an elementwise, strictly increasing map
of ``[-B, B]`` onto itself made of ``K`` rational-quadratic pieces
(Gregory & Delbourgo, 1982), with closed-form value, inverse and derivative.
Outside ``[-B, B]`` it is the identity, and its derivative at ``+-B`` is fixed
to 1, so the whole map is continuously differentiable on the real line.

:class:`RationalQuadraticSpline` wraps it as an elementwise map, which the
two structures apply: :class:`RationalQuadraticCoupling` (parameters from a
coupling conditioner, one pass both ways) and
:class:`MaskedRationalQuadraticAutoregressive` (parameters from a MADE, one
pass for density, ``d`` passes for sampling).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .autoregressive import MADE, Autoregressive
from .coupling import Coupling
from .elementwise import ElementwiseMap

__all__ = [
    "MaskedRationalQuadraticAutoregressive",
    "RationalQuadraticCoupling",
    "RationalQuadraticSpline",
    "rational_quadratic_spline",
    "spline_params_per_feature",
]

DEFAULT_MIN_BIN_WIDTH = 1e-3
DEFAULT_MIN_BIN_HEIGHT = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3


def spline_params_per_feature(n_bins: int) -> int:
    """Unconstrained parameters per feature of a ``n_bins``-bin spline.

    ``n_bins`` widths, ``n_bins`` heights and ``n_bins - 1`` derivatives at
    the interior knots (the two boundary derivatives are fixed to 1).
    """
    return 3 * n_bins - 1


def _knots(raw: Tensor, tail_bound: float, min_size: float) -> tuple[Tensor, Tensor]:
    """Bin sizes (softmax, floored at ``min_size`` of the range) and the K + 1 knots."""
    n_bins = raw.shape[-1]
    # A hand-written softmax: torch's kernel is slow over a last dimension of
    # a few bins (about twice slower here, forward and backward). The shift
    # by the maximum only prevents overflow, so it needs no gradient.
    exponentials = torch.exp(raw - raw.detach().amax(dim=-1, keepdim=True))
    proportions = exponentials / exponentials.sum(dim=-1, keepdim=True)
    sizes = min_size + (1 - min_size * n_bins) * proportions
    knots = F.pad(torch.cumsum(sizes, dim=-1), (1, 0), value=0.0)
    knots = 2 * tail_bound * knots - tail_bound
    # The cumulative sum is 1 only up to rounding; pin both ends exactly.
    edge = torch.full_like(knots[..., :1], tail_bound)
    knots = torch.cat([-edge, knots[..., 1:-1], edge], dim=-1)
    return knots[..., 1:] - knots[..., :-1], knots


def _gather(values: Tensor, index: Tensor) -> Tensor:
    return values.gather(-1, index).squeeze(-1)


def rational_quadratic_spline(
    inputs: Tensor,
    raw_widths: Tensor,
    raw_heights: Tensor,
    raw_derivatives: Tensor,
    tail_bound: float = 3.0,
    inverse: bool = False,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor]:
    """Monotone rational-quadratic spline with identity tails, applied elementwise.

    Parameters
    ----------
    inputs : Tensor of shape (...)
        Points to transform (``x`` for the forward map, ``y`` if ``inverse``).
    raw_widths, raw_heights : Tensor of shape (..., K)
        Unconstrained bin widths and heights; a softmax turns them into
        positive sizes summing to ``2 B``, each at least ``min_bin_* * 2B``.
    raw_derivatives : Tensor of shape (..., K - 1)
        Unconstrained derivatives at the interior knots, mapped to
        ``min_derivative + softplus(.)``, shifted so that 0 gives slope 1:
        all-zero parameters make the spline the identity.
    tail_bound : float, default=3.0
        ``B``: the spline acts on ``[-B, B]``, the identity elsewhere.
    inverse : bool, default=False
        Evaluate the inverse map (a root of a quadratic, in the numerically
        stable form that avoids cancellation).
    min_bin_width, min_bin_height, min_derivative : float
        Floors that keep every piece well conditioned.

    Returns
    -------
    outputs : Tensor of shape (...)
    log_abs_derivative : Tensor of shape (...)
        ``log |d outputs / d inputs|`` of the map applied (0 in the tails).

    Raises
    ------
    ValueError
        If the parameter shapes disagree or the floors leave no room.
    """
    n_bins = raw_widths.shape[-1]
    if raw_heights.shape[-1] != n_bins or raw_derivatives.shape[-1] != n_bins - 1:
        raise ValueError(
            f"Expected K widths, K heights and K - 1 derivatives, got {raw_widths.shape[-1]}, "
            f"{raw_heights.shape[-1]} and {raw_derivatives.shape[-1]}."
        )
    if min_bin_width * n_bins >= 1 or min_bin_height * n_bins >= 1:
        raise ValueError(f"min_bin_width and min_bin_height must be below 1 / n_bins = {1 / n_bins}.")

    inside = (inputs >= -tail_bound) & (inputs <= tail_bound)
    # The spline branch only ever sees points inside the interval, so the
    # discarded branch of torch.where stays finite and no NaN leaks into the
    # gradients of inputs far outside the bounds (+-1e6 and beyond).
    clamped = inputs.clamp(-tail_bound, tail_bound)

    widths, x_knots = _knots(raw_widths, tail_bound, min_bin_width)
    heights, y_knots = _knots(raw_heights, tail_bound, min_bin_height)
    # softplus(shift) = 1 - min_derivative, so a raw value of 0 means slope 1.
    shift = math.log(math.expm1(1 - min_derivative))
    interior = min_derivative + F.softplus(raw_derivatives + shift)
    boundary = torch.ones_like(interior[..., :1])
    derivatives = torch.cat([boundary, interior, boundary], dim=-1)

    knots = y_knots if inverse else x_knots
    # Bin index = number of interior knots at or below the point, in [0, K - 1].
    bin_index = (clamped[..., None] >= knots[..., 1:-1]).sum(dim=-1, keepdim=True)

    x_low = _gather(x_knots, bin_index)
    y_low = _gather(y_knots, bin_index)
    width = _gather(widths, bin_index)
    height = _gather(heights, bin_index)
    slope = height / width
    d_low = _gather(derivatives, bin_index)
    d_high = _gather(derivatives, bin_index + 1)
    curvature = d_low + d_high - 2 * slope

    if inverse:
        offset = clamped - y_low
        a = height * (slope - d_low) + offset * curvature
        b = height * d_low - offset * curvature
        c = -slope * offset
        discriminant = (b.pow(2) - 4 * a * c).clamp_min(0.0)
        # xi = 2c / (-b - sqrt(disc)) is the root in [0, 1]; this form has no
        # cancellation because b > 0 whenever c != 0 (Durkan et al., eq. 29).
        xi = (2 * c / (-b - torch.sqrt(discriminant))).clamp(0.0, 1.0)
        spline_out = xi * width + x_low
    else:
        xi = ((clamped - x_low) / width).clamp(0.0, 1.0)
        spline_out = y_low + height * (slope * xi.pow(2) + d_low * xi * (1 - xi)) / (slope + curvature * xi * (1 - xi))

    xi_one_minus = xi * (1 - xi)
    denominator = slope + curvature * xi_one_minus
    numerator = slope.pow(2) * (d_high * xi.pow(2) + 2 * slope * xi_one_minus + d_low * (1 - xi).pow(2))
    log_derivative = torch.log(numerator) - 2 * torch.log(denominator)
    if inverse:
        log_derivative = -log_derivative

    outputs = torch.where(inside, spline_out, inputs)
    log_abs_derivative = torch.where(inside, log_derivative, torch.zeros_like(log_derivative))
    return outputs, log_abs_derivative


class RationalQuadraticSpline(ElementwiseMap):
    """The monotone rational-quadratic spline as an elementwise map.

    Each feature gets its own spline on ``[-B, B]`` (identity outside) from
    ``3K - 1`` parameters: ``K`` raw widths, ``K`` raw heights and ``K - 1``
    raw interior derivatives, in that order along the parameter axis. All-zero
    parameters give the identity.

    Parameters
    ----------
    n_bins : int, default=8
        Number of pieces ``K``, at least 2.
    tail_bound : float, default=3.0
        ``B``, positive and finite.
    """

    n_bins: int
    tail_bound: float

    def __init__(self, n_bins: int = 8, tail_bound: float = 3.0) -> None:
        super().__init__()
        if isinstance(n_bins, bool) or not isinstance(n_bins, Integral) or n_bins < 2:
            raise ValueError(f"n_bins must be an integer of at least 2, got {n_bins!r}.")
        if isinstance(tail_bound, bool) or not (isinstance(tail_bound, Real) and 0 < tail_bound < math.inf):
            raise ValueError(f"tail_bound must be a positive finite number, got {tail_bound!r}.")
        self.n_bins: int = int(n_bins)
        self.tail_bound: float = float(tail_bound)
        self.n_params = spline_params_per_feature(self.n_bins)

    def _spline(self, inputs: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        # (n, P, m) -> (n, m, P): one parameter vector per transformed feature.
        params = params.transpose(1, 2).contiguous()
        raw_widths, raw_heights, raw_derivatives = params.split([self.n_bins, self.n_bins, self.n_bins - 1], dim=-1)
        outputs, log_derivative = rational_quadratic_spline(
            inputs, raw_widths, raw_heights, raw_derivatives, self.tail_bound, inverse=inverse
        )
        return outputs, log_derivative.sum(dim=1)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._spline(x, params, inverse=False)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._spline(y, params, inverse=True)

    def extra_repr(self) -> str:
        return f"n_bins={self.n_bins}, tail_bound={self.tail_bound:g}"


class RationalQuadraticCoupling(Coupling):
    """Neural spline coupling layer: ``y_b = RQS(x_b; theta(x_a))``.

    A :class:`~skflow.flows.coupling.Coupling` with the
    :class:`RationalQuadraticSpline` map: each transformed feature goes
    through its own monotone rational-quadratic spline on ``[-B, B]``
    (identity outside) whose ``3K - 1`` parameters come from the
    conditioner. A zero-initialised last conditioner layer makes the layer
    start as the identity.

    Parameters
    ----------
    n_features, n_identity, flip, n_context
        See :class:`~skflow.flows.coupling.Coupling`.
    conditioner : nn.Module
        Outputs ``(n, (d - n_identity) * (3 * n_bins - 1))``.
    n_bins : int, default=8
        Number of spline pieces ``K``.
    tail_bound : float, default=3.0
        ``B``.
    """

    def __init__(
        self,
        n_features: int,
        n_identity: int,
        conditioner: nn.Module,
        flip: bool = False,
        n_bins: int = 8,
        tail_bound: float = 3.0,
        n_context: int = 0,
    ) -> None:
        super().__init__(
            n_features, n_identity, conditioner, RationalQuadraticSpline(n_bins, tail_bound), flip, n_context
        )


class MaskedRationalQuadraticAutoregressive(Autoregressive):
    """Autoregressive neural spline layer: ``z_i = RQS(x_i; theta_i(x_<i))``.

    An :class:`~skflow.flows.autoregressive.Autoregressive` structure with
    the :class:`RationalQuadraticSpline` map: parameters come from a
    :class:`~skflow.flows.autoregressive.MADE`, so density evaluation is one
    pass and sampling ``d`` sequential passes.

    Parameters
    ----------
    conditioner : MADE
        With ``params_per_feature = 3 * n_bins - 1``.
    n_bins : int, default=8
    tail_bound : float, default=3.0
    """

    def __init__(self, conditioner: MADE, n_bins: int = 8, tail_bound: float = 3.0) -> None:
        super().__init__(conditioner, RationalQuadraticSpline(n_bins, tail_bound))
