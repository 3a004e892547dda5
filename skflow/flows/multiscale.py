"""Glow's multiscale architecture for images, on flattened rows.

Every layer here is an ordinary :class:`~skflow.flows.core.Bijection` on rows
of shape ``(n, C*H*W)``: a flattened image in channel-major order, so that
``x.reshape(n, C, H, W)`` recovers it. The image layers reshape internally.
Keeping rows flat means a whole multiscale flow is a plain
:class:`~skflow.flows.core.Chain` onto a standard normal, i.e. an
:class:`~skflow.flows.core.ExactFlow`, and the estimator layer never learns
that it is modelling images.

The split of Glow's multiscale architecture needs no special tensor
plumbing in this layout: after a squeeze, the first half of the channels is
the first half of the flat row. "Factoring out" the second half to the prior
therefore means that every later layer acts on the leading features only
(:class:`OnLeadingFeatures`); the factored features pass through unchanged to
the standard normal base. Glow's learned conditional prior on the factored
half, ``z2 ~ N(mu(z1), sigma(z1)^2)``, is the same thing as one more affine
coupling that standardises ``z2`` given ``z1`` before it reaches the base, so
it is built from the same coupling layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..nn import resolve_activation
from .core import Bijection, Chain
from .coupling import AffineCoupling
from .linear import DataInitialized, InvertibleConv1x1

__all__ = [
    "ChannelActNorm",
    "ConvConditioner",
    "OnLeadingFeatures",
    "Squeeze",
    "check_image_shape",
    "conv_affine_coupling",
    "multiscale_glow",
]


def check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """Validate ``(C, H, W)`` and return it as a tuple of ints.

    Raises
    ------
    ValueError
        If it is not three positive integers.
    """
    try:
        shape = tuple(int(size) for size in image_shape)
    except (TypeError, ValueError):
        raise ValueError(f"image_shape must be three positive integers (C, H, W), got {image_shape!r}.") from None
    if len(shape) != 3 or min(shape) < 1 or any(size != given for size, given in zip(shape, image_shape)):
        raise ValueError(f"image_shape must be three positive integers (C, H, W), got {image_shape!r}.")
    return shape


class Squeeze(Bijection):
    """Space-to-depth: each 2x2 block of pixels becomes 4 channels.

    ``(C, H, W) -> (4C, H/2, W/2)``; the output channel ``4c + 2i + j`` holds
    the pixels ``(2h + i, 2w + j)`` of input channel ``c``. A permutation of
    the flat row, so the log-det is zero.

    Parameters
    ----------
    image_shape : tuple of int
        ``(C, H, W)`` of the input, with ``H`` and ``W`` even.
    """

    def __init__(self, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        channels, height, width = check_image_shape(image_shape)
        if height % 2 or width % 2:
            raise ValueError(f"Squeeze needs an even height and width, got image_shape={image_shape!r}.")
        self.image_shape = (channels, height, width)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """``(4C, H/2, W/2)``."""
        channels, height, width = self.image_shape
        return 4 * channels, height // 2, width // 2

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        n = x.shape[0]
        channels, height, width = self.image_shape
        blocks = x.reshape(n, channels, height // 2, 2, width // 2, 2)
        # (n, c, h, i, w, j) -> (n, c, i, j, h, w): channel index 4c + 2i + j.
        y = blocks.permute(0, 1, 3, 5, 2, 4).reshape(n, -1)
        return y, x.new_zeros(n)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        n = y.shape[0]
        channels, height, width = self.image_shape
        blocks = y.reshape(n, channels, 2, 2, height // 2, width // 2)
        x = blocks.permute(0, 1, 4, 2, 5, 3).reshape(n, -1)
        return x, y.new_zeros(n)


class ChannelActNorm(DataInitialized):
    """ActNorm per channel: ``y[c] = (x[c] + bias[c]) * exp(log_scale[c])``.

    One affine map per channel, shared by all pixels (Glow), so
    ``log |det J| = H * W * sum(log_scale)``. Data-dependent initialisation:
    the first batch seen in training mode leaves the layer with zero mean and
    unit variance per channel (statistics over rows and pixels).

    Parameters
    ----------
    image_shape : tuple of int
        ``(C, H, W)``.
    eps : float, default=1e-6
        Added to the standard deviation at initialisation (constant channels).
    """

    # Buffers, declared for the type checker (register_buffer sets them).
    initialized: Tensor

    def __init__(self, image_shape: tuple[int, int, int], eps: float = 1e-6) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        channels = self.image_shape[0]
        self.bias = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.register_buffer("initialized", torch.tensor(False))

    def _images(self, rows: Tensor) -> Tensor:
        channels, height, width = self.image_shape
        return rows.reshape(rows.shape[0], channels, height * width)

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        per_channel = self._images(x).transpose(0, 1).reshape(self.image_shape[0], -1)
        std = per_channel.std(dim=1, unbiased=False) if per_channel.shape[1] > 1 else torch.ones_like(self.bias)
        self.bias.copy_(-per_channel.mean(dim=1))
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(True)

    def _log_abs_det(self) -> Tensor:
        _, height, width = self.image_shape
        return height * width * self.log_scale.sum()

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training and self._needs_initialization():
            self._initialize(x)
        y = (self._images(x) + self.bias[:, None]) * torch.exp(self.log_scale)[:, None]
        return y.reshape(x.shape), self._log_abs_det().expand(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = self._images(y) * torch.exp(-self.log_scale)[:, None] - self.bias[:, None]
        return x.reshape(y.shape), (-self._log_abs_det()).expand(y.shape[0])


class ConvConditioner(nn.Module):
    """Small convolutional network used as a coupling conditioner on images.

    ``3x3 conv -> activation -> 1x1 conv -> activation -> 3x3 conv``, all
    with "same" zero padding, on flat rows: it reshapes ``(n, C_in*H*W)`` to
    images and returns ``(n, C_out*H*W)``. The last convolution starts at
    zero, so a coupling layer using it starts as the identity.

    Parameters
    ----------
    in_channels, out_channels : int
    spatial_shape : tuple of int
        ``(H, W)``.
    hidden_channels : int, default=64
    activation : str or nn.Module class, default="relu"
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spatial_shape: tuple[int, int],
        hidden_channels: int = 64,
        activation: str | type[nn.Module] = "relu",
    ) -> None:
        super().__init__()
        activation_class = resolve_activation(activation)
        self.in_channels = in_channels
        self.spatial_shape = (int(spatial_shape[0]), int(spatial_shape[1]))
        last = nn.Conv2d(hidden_channels, out_channels, kernel_size=3, padding=1)
        nn.init.zeros_(last.weight)
        assert last.bias is not None  # Conv2d has a bias by default
        nn.init.zeros_(last.bias)
        self.network = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, kernel_size=3, padding=1),
            activation_class(),
            nn.Conv2d(hidden_channels, hidden_channels, kernel_size=1),
            activation_class(),
            last,
        )

    def forward(self, rows: Tensor) -> Tensor:
        height, width = self.spatial_shape
        expected = self.in_channels * height * width
        if rows.shape[1] != expected:
            # A context concatenated to the input would land here: image
            # couplings do not support conditioning.
            raise ValueError(
                f"ConvConditioner expects rows of {expected} features (C={self.in_channels}, H={height}, "
                f"W={width}), got {rows.shape[1]}; image couplings take no context."
            )
        images = rows.reshape(rows.shape[0], self.in_channels, height, width)
        return self.network(images).reshape(rows.shape[0], -1)


def conv_affine_coupling(
    image_shape: tuple[int, int, int],
    hidden_channels: int = 64,
    activation: str | type[nn.Module] = "relu",
    scale_bound: float = 3.0,
    flip: bool = False,
    n_kept_channels: int | None = None,
) -> AffineCoupling:
    """Affine coupling over channels of a flattened image.

    In channel-major rows the first ``k`` channels are the first ``k*H*W``
    features, so the channel split is :class:`AffineCoupling`'s feature split
    and the layer is an ``AffineCoupling`` with a :class:`ConvConditioner`.
    The conditioner's output channels ``[0, C_t)`` are shifts and
    ``[C_t, 2 C_t)`` raw log-scales, which is the ``(n, 2, C_t*H*W)`` layout
    ``AffineCoupling`` reads.

    Parameters
    ----------
    image_shape : tuple of int
        ``(C, H, W)``, ``C >= 2``.
    hidden_channels, activation
        See :class:`ConvConditioner`.
    scale_bound : float, default=3.0
        See :class:`~skflow.flows.coupling.AffineCoupling`.
    flip : bool, default=False
        Keep the last channels unchanged instead of the first.
    n_kept_channels : int, optional
        Channels passed unchanged; ``C // 2`` by default.

    Returns
    -------
    AffineCoupling
    """
    channels, height, width = check_image_shape(image_shape)
    if channels < 2:
        raise ValueError(f"A channel coupling needs at least 2 channels, got image_shape={image_shape!r}.")
    kept = channels // 2 if n_kept_channels is None else n_kept_channels
    conditioner = ConvConditioner(kept, 2 * (channels - kept), (height, width), hidden_channels, activation)
    return AffineCoupling(
        channels * height * width, kept * height * width, conditioner, flip=flip, scale_bound=scale_bound
    )


class OnLeadingFeatures(Bijection):
    """Apply a bijection to the first ``n_active`` features; pass the rest.

    This is Glow's split in the flat layout: features beyond ``n_active``
    were factored out to the base distribution at an earlier level.

    Parameters
    ----------
    bijection : Bijection
        Acts on rows of ``n_active`` features.
    n_active : int
    """

    def __init__(self, bijection: Bijection, n_active: int) -> None:
        super().__init__()
        self.bijection = bijection
        self.n_active = n_active

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        active, passive = x[:, : self.n_active], x[:, self.n_active :]
        y, log_abs_det = self.bijection(active, context)
        return torch.cat([y, passive], dim=1), log_abs_det

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        active, passive = y[:, : self.n_active], y[:, self.n_active :]
        x, log_abs_det = self.bijection.inverse(active, context)
        return torch.cat([x, passive], dim=1), log_abs_det


def multiscale_glow(
    image_shape: tuple[int, int, int],
    n_levels: int = 2,
    n_steps: int = 4,
    hidden_channels: int = 64,
    activation: str | type[nn.Module] = "relu",
    scale_bound: float = 3.0,
    learned_prior: bool = True,
) -> Chain:
    """Glow's multiscale data-to-latent map on flattened images.

    Per level: squeeze, then ``n_steps`` steps of (per-channel ActNorm,
    invertible 1x1 convolution, convolutional affine coupling); every level
    but the last then factors out half of its channels (optionally through a
    learned conditional prior, see the module docstring). The last level's
    output and all factored parts form the latent, of the same size
    ``C*H*W``; under the model it is standard normal.

    Parameters
    ----------
    image_shape : tuple of int
        ``(C, H, W)``; ``H`` and ``W`` must be divisible by ``2**n_levels``.
    n_levels : int, default=2
        Number of levels ``L``.
    n_steps : int, default=4
        Steps ``K`` per level.
    hidden_channels, activation, scale_bound
        Coupling settings, see :func:`conv_affine_coupling`.
    learned_prior : bool, default=True
        Standardise each factored half by a mean and scale computed from the
        kept half (Glow's learned prior), instead of sending it to the
        standard normal as it is.

    Returns
    -------
    Chain
        Bijection on rows of shape ``(n, C*H*W)``.
    """
    channels, height, width = check_image_shape(image_shape)
    if n_levels < 1:
        raise ValueError(f"n_levels must be at least 1, got {n_levels}.")
    if n_steps < 1:
        raise ValueError(f"n_steps must be at least 1, got {n_steps}.")
    factor = 2**n_levels
    if height % factor or width % factor:
        raise ValueError(
            f"With n_levels={n_levels} the image is squeezed {n_levels} times, so its height and width must be "
            f"divisible by {factor}; got image_shape={image_shape!r}. Use fewer levels."
        )
    layers: list[Bijection] = []
    shape = (channels, height, width)
    for level in range(n_levels):
        squeeze = Squeeze(shape)
        shape = squeeze.output_shape
        level_layers: list[Bijection] = [squeeze]
        for step in range(n_steps):
            level_layers += [
                ChannelActNorm(shape),
                InvertibleConv1x1(shape),
                conv_affine_coupling(shape, hidden_channels, activation, scale_bound, flip=step % 2 == 1),
            ]
        if level < n_levels - 1:
            if learned_prior:
                # Identity part = kept channels (first half); transformed = factored half.
                level_layers.append(conv_affine_coupling(shape, hidden_channels, activation, scale_bound))
            next_shape = (shape[0] // 2, shape[1], shape[2])
        n_active = shape[0] * shape[1] * shape[2]
        level_chain = Chain(level_layers)
        is_whole_row = n_active == channels * height * width
        layers.append(level_chain if is_whole_row else OnLeadingFeatures(level_chain, n_active))
        if level < n_levels - 1:
            shape = next_shape
    return Chain(layers)
