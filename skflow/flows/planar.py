"""Planar flows (Rezende & Mohamed, 2015) with an exact inverse.

A planar map bends space along one hyperplane::

    g(z) = z + u_hat * tanh(w^T z + b),        z, u_hat, w in R^d, b in R,

with ``log |det dg/dz| = log |1 + tanh'(w^T z + b) * w^T u_hat|``. It is
invertible whenever ``w^T u_hat >= -1``; :class:`PlanarFlow` enforces this by
the reparameterisation ``u_hat = u + (m(w^T u) - w^T u) w / ||w||^2`` with
``m(a) = -1 + softplus(a)``, so ``w^T u_hat = m(w^T u) > -1``.

Direction. As in the paper, ``g`` is the *sampling* map (latent to data), so
a stack of planar layers is the generator whose density users expect, and
sampling costs one cheap pass. This package's forward direction is data to
latent, so :meth:`PlanarFlow.forward` is ``g^{-1}``. It has no closed form but
reduces to one scalar equation per row: with ``a = w^T z`` and ``y = g(z)``,

    w^T y = a + (w^T u_hat) tanh(a + b),

whose right-hand side is strictly increasing in ``a`` (its derivative is
``1 + (w^T u_hat) tanh' >= 0``, zero at most at one point). It is solved to
machine precision by a safeguarded Newton iteration (bisection whenever a
Newton step leaves the bracket), vectorised over the batch, and then
``z = y - u_hat tanh(a + b)``. Because ``|tanh| <= 1`` the root always lies
in ``[w^T y - |w^T u_hat|, w^T y + |w^T u_hat|]``, a bracket known before the
iteration starts. So the density of *any* point, not only of the model's own
samples, is exact.

Gradients through the solve come from the implicit function theorem: the
iteration runs without autograd, then one Newton step from the converged root
is taken with autograd on. At the root the residual is zero, so the value is
unchanged, and the step's derivative is ``-(dF/dtheta) / (dF/da)``, exactly
the implicit derivative of the root ``a(theta)`` of ``F(a, theta) = 0``.

:class:`InversePlanarFlow` is the same layer used the other way round: the
planar map takes data to latent (cheap density evaluation and training) and
the root solve serves sampling. Both are exact flows; they define different
model families.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .core import Bijection, check_context

__all__ = ["InversePlanarFlow", "PlanarFlow", "solve_planar_equation"]

# softplus^{-1}(1) = log(e - 1): the value of w^T u at which w^T u_hat = 0.
_IDENTITY_PREACTIVATION = math.log(math.e - 1.0)


def _slope(tanh_value: Tensor, one_plus_coefficient: Tensor) -> Tensor:
    """``1 + c * tanh'(r)`` written as ``t^2 + (1 + c)(1 - t^2)``.

    With ``t = tanh(r)`` and ``1 + c = softplus(w^T u) >= 0`` this form is a
    sum of non-negative terms, so rounding can never make it negative (the
    naive ``1 + c (1 - t^2)`` can, when ``c`` is within an ulp of -1).
    """
    square = tanh_value * tanh_value
    return square + one_plus_coefficient * (1.0 - square)


@torch.no_grad()
def solve_planar_equation(
    target: Tensor,
    one_plus_coefficient: Tensor,
    bias: Tensor,
    max_iter: int = 100,
) -> Tensor:
    """Solve ``a + c * tanh(a + b) = target`` for ``a``, elementwise.

    ``c = one_plus_coefficient - 1 >= -1``, so the left-hand side is
    non-decreasing in ``a`` and the root is unique. Safeguarded Newton: each
    iterate shrinks a bracket that always contains the root, and a Newton
    step that would leave the bracket, or that fails to halve the step
    before last, is replaced by bisection. Iteration stops once every Newton
    step is at rounding level. Runs without autograd; see
    :class:`PlanarFlow` for the gradients.

    Parameters
    ----------
    target : Tensor of shape (n,)
        ``w^T y`` per row.
    one_plus_coefficient : Tensor of shape ()
        ``1 + w^T u_hat``, non-negative.
    bias : Tensor of shape ()
        ``b``.
    max_iter : int, default=100
        Upper bound on iterations. Bisection alone reaches machine precision
        within it for any finite input; the hybrid typically needs 1 to 20.

    Returns
    -------
    root : Tensor of shape (n,)
        Non-finite where ``target`` is non-finite.
    """
    coefficient = one_plus_coefficient - 1.0
    spread = coefficient.abs()
    # F(a) = a + c tanh(a + b) - target lies in [a - |c| - target, a + |c| - target].
    lower = target - spread
    upper = target + spread
    # First guess: evaluate the tanh at the target itself (exact when c = 0).
    root = torch.minimum(torch.maximum(target - coefficient * torch.tanh(target + bias), lower), upper)
    tolerance = 2.0 * torch.finfo(target.dtype).eps
    step = step_before_last = upper - lower
    for _ in range(max_iter):
        tanh_value = torch.tanh(root + bias)
        residual = root + coefficient * tanh_value - target
        lower = torch.where(residual < 0, root, lower)
        upper = torch.where(residual > 0, root, upper)
        newton_step = residual / _slope(tanh_value, one_plus_coefficient)
        newton = root - newton_step
        # A Newton step at rounding level means the root is found; taking it
        # even if rounding puts it a hair outside the bracket avoids bisecting
        # away from a converged value.
        converged = newton_step.abs() <= tolerance * root.abs().clamp_min(1.0)
        # Otherwise Newton is kept only while it lands inside the bracket and
        # at least halves the step before last: on a steep tanh it can bounce
        # between the two flat arms for ever, so bisect instead. NaN and
        # infinite steps fail these comparisons and bisect too.
        use_newton = converged | ((newton >= lower) & (newton <= upper) & (2.0 * newton_step.abs() <= step_before_last))
        candidate = torch.where(use_newton, newton, 0.5 * (lower + upper))
        step_before_last = step
        step = (candidate - root).abs()
        root = candidate
        settled = converged | (upper - lower <= tolerance * root.abs().clamp_min(1.0)) | ~torch.isfinite(root)
        if bool(settled.all()):
            break
    return root


class PlanarFlow(Bijection):
    """One planar layer; ``inverse`` is the planar map, ``forward`` its exact inverse.

    The planar map (sampling direction, latent ``z`` to data ``y``) is
    ``y = z + u_hat tanh(w^T z + b)``; ``forward`` (data to latent) inverts it
    by the scalar root solve described in the module docstring.

    Parameters
    ----------
    n_features : int
        Dimension ``d``.
    max_iter : int, default=100
        Iteration cap of the root solve.
    n_context : int, default=0
        Width of an optional context ``c``; the offset then becomes
        ``b + a^T c`` (a learned ``a``, zero at initialisation). Only the
        offset may depend on the context: invertibility rests on
        ``w^T u_hat >= -1``, which an offset leaves intact.

    Attributes
    ----------
    weight : Parameter of shape (d,)
        ``w``, the normal of the hyperplane.
    raw_direction : Parameter of shape (d,)
        ``u`` before the invertibility constraint; see :meth:`direction`.
    bias : Parameter of shape ()
        ``b``.

    Notes
    -----
    Initialisation: ``w`` is drawn from ``N(0, I / d)`` (torch's global
    generator), ``b = 0`` and ``u`` is set so that ``w^T u_hat = 0`` with a
    small component orthogonal to ``w``. Each layer then starts as a small
    volume-preserving shear, close to the identity, so a deep stack starts
    close to the base distribution instead of compounding random contractions.
    """

    def __init__(self, n_features: int, max_iter: int = 100, n_context: int = 0) -> None:
        super().__init__()
        if int(n_features) < 1:
            raise ValueError(f"n_features must be a positive integer, got {n_features!r}.")
        if int(max_iter) < 1:
            raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}.")
        self.n_features = int(n_features)
        self.max_iter = int(max_iter)
        weight = torch.randn(self.n_features) / math.sqrt(self.n_features)
        orthogonal = 0.01 * torch.randn(self.n_features)
        orthogonal = orthogonal - (orthogonal @ weight) / (weight @ weight) * weight
        self.weight = nn.Parameter(weight)
        self.raw_direction = nn.Parameter(orthogonal + _IDENTITY_PREACTIVATION * weight / (weight @ weight))
        self.bias = nn.Parameter(torch.zeros(()))
        self.n_context = int(n_context)
        if self.n_context:
            self.context_offset = nn.Linear(self.n_context, 1, bias=False)
            nn.init.zeros_(self.context_offset.weight)

    def _offset(self, context: Tensor | None) -> Tensor:
        """``b``, shape ``()``, or ``b + a^T c`` per row, shape ``(n,)``, for a conditional layer."""
        context = check_context(self, context)
        if context is None:
            return self.bias
        return self.bias + self.context_offset(context).squeeze(1)

    def _constrained(self) -> tuple[Tensor, Tensor]:
        """``(u_hat, 1 + w^T u_hat)``, the latter computed as ``softplus(w^T u)``."""
        preactivation = self.weight @ self.raw_direction
        squared_norm = self.weight @ self.weight
        tiny = torch.finfo(self.weight.dtype).tiny
        # At w = 0 the reparameterisation is 0/0; the layer is then the
        # translation by u tanh(b), whose w^T u_hat is 0, not softplus(0) - 1.
        one_plus_coefficient = torch.where(
            squared_norm < tiny, torch.ones_like(preactivation), F.softplus(preactivation)
        )
        correction = (one_plus_coefficient - 1.0 - preactivation) / squared_norm.clamp_min(tiny)
        return self.raw_direction + correction * self.weight, one_plus_coefficient

    def direction(self) -> Tensor:
        """The constrained direction ``u_hat``, shape ``(d,)``; ``w^T u_hat >= -1``."""
        return self._constrained()[0]

    def _check(self, tensor: Tensor) -> None:
        if tensor.dim() != 2 or tensor.shape[1] != self.n_features:
            raise ValueError(f"PlanarFlow expects a tensor of shape (n, {self.n_features}), got {tuple(tensor.shape)}.")

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data to latent: the exact inverse of the planar map.

        Parameters
        ----------
        x : Tensor of shape (n, d)
        context : Tensor of shape (n, n_context), optional
            Required when ``n_context > 0``, ignored otherwise.

        Returns
        -------
        z : Tensor of shape (n, d)
        log_abs_det : Tensor of shape (n,)
            ``log |det dz/dx| = -log |1 + tanh'(w^T z + b) w^T u_hat|``.
        """
        self._check(x)
        direction, one_plus_coefficient = self._constrained()
        coefficient = one_plus_coefficient - 1.0
        target = x @ self.weight
        bias = self._offset(context)
        root = solve_planar_equation(target.detach(), one_plus_coefficient.detach(), bias.detach(), self.max_iter)
        # One Newton step with autograd on: same value (the residual is zero at
        # the root) and, through it, the implicit-function gradient of the root.
        tanh_root = torch.tanh(root + bias)
        residual = root + coefficient * tanh_root - target
        slope = _slope(tanh_root, one_plus_coefficient).detach().clamp_min(torch.finfo(x.dtype).tiny)
        projection = root - residual / slope
        tanh_value = torch.tanh(projection + bias)
        z = x - tanh_value.unsqueeze(1) * direction
        return z, -torch.log(_slope(tanh_value, one_plus_coefficient))

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Latent to data: the planar map ``y + u_hat tanh(w^T y + b)``.

        Parameters
        ----------
        y : Tensor of shape (n, d)
        context : Tensor of shape (n, n_context), optional

        Returns
        -------
        x : Tensor of shape (n, d)
        log_abs_det : Tensor of shape (n,)
            ``log |1 + tanh'(w^T y + b) w^T u_hat|``.
        """
        self._check(y)
        direction, one_plus_coefficient = self._constrained()
        tanh_value = torch.tanh(y @ self.weight + self._offset(context))
        x = y + tanh_value.unsqueeze(1) * direction
        return x, torch.log(_slope(tanh_value, one_plus_coefficient))

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}"


class InversePlanarFlow(PlanarFlow):
    """A planar layer used the other way round: ``forward`` is the planar map.

    ``forward`` (data to latent) is ``x + u_hat tanh(w^T x + b)``, one cheap
    pass, and ``inverse`` (latent to data) is the exact root solve, with the
    same implicit gradients as :meth:`PlanarFlow.forward`. Training and
    density evaluation then never solve anything; sampling does.

    Parameters
    ----------
    n_features : int
        Dimension ``d``.
    max_iter : int, default=100
        Iteration cap of the root solve.
    n_context : int, default=0
        See :class:`PlanarFlow`.
    """

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data to latent: the planar map; returns ``(z, log |det dz/dx|)``, shapes ``(n, d)``, ``(n,)``."""
        return super().inverse(x, context)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Latent to data: the exact root solve; returns ``(x, log |det dx/dy|)``, shapes ``(n, d)``, ``(n,)``."""
        return super().forward(y, context)
