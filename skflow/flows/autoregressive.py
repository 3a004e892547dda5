"""Autoregressive flows: MADE, masked autoregressive (MAF) and inverse
autoregressive (IAF) layers (Germain et al. 2015; Papamakarios et al. 2017;
Kingma et al. 2016).

An autoregressive bijection transforms feature ``i`` with parameters that
depend only on the features before it in a chosen order. One masked network
(:class:`MADE`) computes the parameters of every feature in a single pass, so
the direction in which the conditioning features are *known* costs one pass
and the other direction costs ``d`` sequential passes.

* :class:`Autoregressive` owns the MADE call and the sequential inversion;
  the feature-by-feature map is an
  :class:`~skflow.flows.elementwise.ElementwiseMap`, the same objects that
  :class:`~skflow.flows.coupling.Coupling` applies.
* :class:`MaskedAffineAutoregressive` is the MAF layer: data to latent in one
  pass (fast density), latent to data in ``d`` passes (slow sampling).
* :class:`InverseAutoregressive` turns any autoregressive layer round (IAF):
  sampling in one pass, density in ``d`` passes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..nn import resolve_activation
from .core import Bijection, check_context
from .elementwise import Affine, ElementwiseMap, Inverted

__all__ = [
    "MADE",
    "Autoregressive",
    "InverseAutoregressive",
    "MaskedAffineAutoregressive",
    "MaskedLinear",
]


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed binary mask.

    Parameters
    ----------
    mask : Tensor of shape (out_features, in_features)
        1 where a connection is allowed, 0 where it is cut.
    """

    # Buffers, declared for the type checker (register_buffer sets them).
    mask: Tensor

    def __init__(self, mask: Tensor) -> None:
        out_features, in_features = mask.shape
        super().__init__(in_features, out_features)
        # A buffer: follows .to()/.double() and is saved with the state_dict.
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def _check_order(order: Sequence[int] | Tensor | None, n_features: int) -> Tensor:
    if order is None:
        return torch.arange(n_features)
    order = torch.as_tensor(order, dtype=torch.long).flatten()
    if order.numel() != n_features or not torch.equal(order.sort().values, torch.arange(n_features)):
        raise ValueError(f"order must be a permutation of range({n_features}), got {order.tolist()}.")
    return order


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation (Germain et al., 2015).

    A fully connected network whose weights are masked so that the outputs
    belonging to feature ``i`` depend only on the features that come before
    ``i`` in ``order`` (and on the context, if any): its Jacobian is strictly
    triangular once the features are sorted by ``order``.

    Masks follow from *degrees*: input feature ``order[k]`` has degree
    ``k + 1``; hidden units get degrees cycling through ``1 .. d - 1`` and may
    see units of lower or equal degree; an output of feature ``i`` may only
    see hidden units of degree strictly below the degree of ``i``. Context
    inputs have degree 0 and reach every hidden unit; with a context, hidden
    degrees start at 0 so that even the first feature's outputs depend on it.

    Parameters
    ----------
    n_features : int
        Number of features ``d``.
    params_per_feature : int
        Number of outputs per feature (2 for an affine map: shift and
        log-scale; ``3K - 1`` for a ``K``-bin spline).
    hidden_dims : sequence of int, default=(64, 64)
        Widths of the hidden layers. Widths below ``d - 1`` cannot represent
        every dependency allowed by the order.
    activation : str or nn.Module class, default="relu"
    order : sequence of int or None, default=None
        A permutation of ``range(d)``: ``order[0]`` is the first feature (it
        depends on nothing), ``order[-1]`` the last. None is the natural order.
    n_context : int, default=0
        Width of an optional conditioning input.
    zero_init_last : bool, default=False
        Start the output layer at zero, so that a layer using this network
        begins as a fixed elementwise map (the identity for the layers here).

    Notes
    -----
    ``forward(x)`` returns a tensor of shape ``(n, params_per_feature, d)``
    whose entry ``[:, p, i]`` is parameter ``p`` of feature ``i``.
    """

    # Buffers, declared for the type checker (register_buffer sets them).
    order: Tensor

    def __init__(
        self,
        n_features: int,
        params_per_feature: int,
        hidden_dims: Sequence[int] = (64, 64),
        activation: str | type[nn.Module] = "relu",
        order: Sequence[int] | Tensor | None = None,
        n_context: int = 0,
        zero_init_last: bool = False,
    ) -> None:
        super().__init__()
        if n_features < 1 or params_per_feature < 1:
            raise ValueError(
                f"n_features and params_per_feature must be positive, got {n_features} and {params_per_feature}."
            )
        self.n_features = n_features
        self.params_per_feature = params_per_feature
        self.n_context = n_context
        order = _check_order(order, n_features)
        self.register_buffer("order", order)

        input_degrees = torch.empty(n_features, dtype=torch.long)
        input_degrees[order] = torch.arange(1, n_features + 1)
        # Context columns sit after the features and have degree 0.
        previous = torch.cat([input_degrees, torch.zeros(n_context, dtype=torch.long)])
        activation_class = resolve_activation(activation)
        layers: list[nn.Module] = []
        # Hidden degrees cycle through 1 .. d - 1, or 0 .. d - 1 with a
        # context: degree-0 units see only the context, and without them the
        # first feature's outputs (degree 1) could not depend on the context.
        lowest = 0 if n_context or n_features == 1 else 1
        for width in hidden_dims:
            degrees = torch.arange(width) % (n_features - lowest) + lowest
            layers += [MaskedLinear(degrees[:, None] >= previous[None, :]), activation_class()]
            previous = degrees
        output_degrees = input_degrees.repeat(params_per_feature)
        last = MaskedLinear(output_degrees[:, None] > previous[None, :])
        if zero_init_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        self.network = nn.Sequential(*layers)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Autoregressive parameters of every feature.

        Parameters
        ----------
        x : Tensor of shape (n, d)
        context : Tensor of shape (n, n_context), optional

        Returns
        -------
        params : Tensor of shape (n, params_per_feature, d)
        """
        context = check_context(self, context)
        if context is not None:
            x = torch.cat([x, context], dim=1)
        return self.network(x).view(x.shape[0], self.params_per_feature, self.n_features)


class Autoregressive(Bijection):
    """Generic autoregressive bijection, ``z_i = g(x_i; theta_i(x_<i))``.

    The structure: a :class:`MADE` computes every feature's parameters and
    an :class:`~skflow.flows.elementwise.ElementwiseMap` ``g`` applies them.
    ``forward`` (data to latent) computes every ``theta_i`` from the data in
    one MADE pass. ``inverse`` (latent to data) needs the data it is still
    producing: starting from zeros it applies ``g``'s inverse with parameters
    from the current estimate ``d`` times; after pass ``k`` the first ``k``
    features of the order are exact, so ``d`` passes give the exact inverse.

    Parameters
    ----------
    conditioner : MADE
        Its ``params_per_feature`` must equal ``elementwise.n_params``.
    elementwise : ElementwiseMap
        The map applied to each feature.
    """

    def __init__(self, conditioner: MADE, elementwise: ElementwiseMap) -> None:
        super().__init__()
        if not isinstance(elementwise, ElementwiseMap):
            raise TypeError(f"elementwise must be an ElementwiseMap, got {type(elementwise).__name__}.")
        if conditioner.params_per_feature != elementwise.n_params:
            raise ValueError(
                f"{type(self).__name__} needs a MADE with params_per_feature={elementwise.n_params}, "
                f"got {conditioner.params_per_feature}."
            )
        self.n_features = conditioner.n_features
        self.n_context = conditioner.n_context
        self.conditioner = conditioner
        self.elementwise = elementwise

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.elementwise(x, self.conditioner(x, context))

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = torch.zeros_like(z)
        log_abs_det = z.new_zeros(z.shape[0])
        for _ in range(self.n_features):
            x, log_abs_det = self.elementwise.inverse(z, self.conditioner(x, context))
        return x, log_abs_det


class MaskedAffineAutoregressive(Autoregressive):
    """MAF layer: ``z_i = (x_i - mu_i(x_<i)) * exp(-a_i(x_<i))``.

    Density evaluation (data to latent) is one pass; sampling is ``d``
    sequential passes. ``log |det dz/dx| = -sum_i a_i``. This is the
    :class:`~skflow.flows.elementwise.Affine` map read in the generative
    direction, ``x_i = z_i * exp(a_i) + mu_i``, with its soft-clamped
    log-scale ``a = bound * tanh(a_raw / bound)``: no layer rescales a
    feature by more than ``exp(bound)``.

    Parameters
    ----------
    conditioner : MADE
        With ``params_per_feature=2``, outputs ``(mu, a_raw)``.
    scale_bound : float, default=3.0
        Bound on ``|a_i|``.
    """

    def __init__(self, conditioner: MADE, scale_bound: float = 3.0) -> None:
        super().__init__(conditioner, Inverted(Affine(scale_bound)))


class InverseAutoregressive(Bijection):
    """An autoregressive layer used the other way round (IAF).

    The wrapped layer's one-pass direction becomes the latent-to-data
    (sampling) direction and its ``d``-pass direction the data-to-latent
    (density) direction. With a :class:`MaskedAffineAutoregressive` inside
    this is the inverse autoregressive flow of Kingma et al. (2016): the
    conditioner reads the *latent* features, sampling costs one pass and
    evaluating the density of arbitrary data costs ``d`` passes (exactly,
    not only for the model's own samples).

    Parameters
    ----------
    layer : Autoregressive
    """

    def __init__(self, layer: Autoregressive) -> None:
        super().__init__()
        self.n_features = layer.n_features
        self.n_context = layer.n_context
        self.layer = layer

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.layer.inverse(x, context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.layer(z, context)
