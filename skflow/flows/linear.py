"""Linear bijections: ActNorm, fixed permutations, diagonal scaling, the
LU-parameterised dense linear map and the invertible 1x1 convolution.

These mix or rescale features between coupling layers. Their log-dets are
constant in ``x``, so they cost at most one small matrix operation per call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .core import Bijection

__all__ = ["ActNorm", "DiagonalScaling", "InvertibleConv1x1", "LULinear", "Permutation"]


class DataInitialized(Bijection):
    """A layer that initialises itself from its first training batch (ActNorm and its image form).

    Whether that has happened lives in a boolean buffer, ``initialized``, so
    that it survives ``state_dict`` and pickling. Reading a buffer's value in
    Python is a device read, and on a GPU a synchronisation that stalls the
    queue of kernels at every training step of every such layer (and a graph
    break under ``torch.compile``). Once the buffer has been seen set, a plain
    attribute remembers it; loading a state dict makes the layer look again.
    """

    initialized: Tensor
    _seen_initialized: bool = False

    def _needs_initialization(self) -> bool:
        if self._seen_initialized:
            return False
        if bool(self.initialized):
            self._seen_initialized = True
            return False
        return True

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        # The loaded buffer decides; it is read again at the next training step.
        self._seen_initialized = False
        super()._load_from_state_dict(*args, **kwargs)


class ActNorm(DataInitialized):
    """Per-feature affine map ``y = (x + bias) * exp(log_scale)``.

    With data-dependent initialisation (Kingma & Dhariwal, 2018): the first
    batch seen in training mode sets ``bias`` and ``log_scale`` so that this
    batch leaves the layer with zero mean and unit variance per feature.
    Afterwards both are ordinary trainable parameters.

    Parameters
    ----------
    n_features : int
    eps : float, default=1e-6
        Added to the batch standard deviation at initialisation, so constant
        features do not produce infinite scales.
    max_init_scale : float, default=10.0
        A feature whose first-batch standard deviation is below
        ``1 / max_init_scale`` keeps scale 1 instead. Such a feature is
        (nearly) constant within the batch, as rare-valued or duplicated
        columns of real tables often are; normalising it would multiply it by
        up to ``1/eps``, and a stack of ActNorms would compound the factor,
        turning the first differing row of a later batch into an infinite
        loss.
    """

    # Buffers, declared for the type checker (register_buffer sets them).
    initialized: Tensor

    def __init__(self, n_features: int, eps: float = 1e-6, max_init_scale: float = 10.0) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n_features))
        self.log_scale = nn.Parameter(torch.zeros(n_features))
        self.eps = eps
        self.max_init_scale = max_init_scale
        # A buffer, not a Python flag, so the state survives state_dict and pickling.
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        std = x.std(dim=0, unbiased=False) if x.shape[0] > 1 else torch.ones_like(x[0])
        self.bias.copy_(-x.mean(dim=0))
        log_scale = -torch.log(std + self.eps)
        self.log_scale.copy_(torch.where(log_scale > math.log(self.max_init_scale), 0.0, log_scale))
        self.initialized.fill_(True)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training and self._needs_initialization():
            self._initialize(x)
        y = (x + self.bias) * torch.exp(self.log_scale)
        return y, self.log_scale.sum().expand(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = y * torch.exp(-self.log_scale) - self.bias
        return x, (-self.log_scale.sum()).expand(y.shape[0])


class Permutation(Bijection):
    """Fixed permutation of the features (log-det zero).

    Parameters
    ----------
    permutation : Tensor of shape (d,)
        ``y[:, i] = x[:, permutation[i]]``.
    """

    # Buffers, declared for the type checker (register_buffer sets them).
    permutation: Tensor
    inverse_permutation: Tensor

    def __init__(self, permutation: Tensor) -> None:
        super().__init__()
        permutation = torch.as_tensor(permutation, dtype=torch.long)
        # A repeated or missing index would silently drop features.
        if permutation.dim() != 1 or not torch.equal(torch.sort(permutation).values, torch.arange(len(permutation))):
            raise ValueError(f"permutation must be a permutation of 0..d-1, got {permutation.tolist()}.")
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    @classmethod
    def random(cls, n_features: int, generator: torch.Generator | None = None) -> Permutation:
        """A uniformly random permutation of ``n_features`` features."""
        return cls(torch.randperm(n_features, generator=generator))

    @classmethod
    def reverse(cls, n_features: int) -> Permutation:
        """The permutation that reverses the feature order."""
        return cls(torch.arange(n_features - 1, -1, -1))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        # index_select is about twice as fast as fancy indexing, forward and backward.
        return x.index_select(1, self.permutation), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y.index_select(1, self.inverse_permutation), y.new_zeros(y.shape[0])


class DiagonalScaling(Bijection):
    """Learned per-feature scaling ``y = x * exp(log_scale)`` (NICE's last layer).

    Additive coupling layers are volume preserving, so a NICE flow gets all
    of its log-det from this layer: ``log |det| = sum(log_scale)``. Unlike
    :class:`ActNorm` it has no bias (the coupling layers already shift) and no
    data-dependent initialisation: it starts as the identity.

    Parameters
    ----------
    n_features : int
    """

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(n_features))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x * torch.exp(self.log_scale), self.log_scale.sum().expand(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y * torch.exp(-self.log_scale), (-self.log_scale.sum()).expand(y.shape[0])


class LULinear(Bijection):
    """Invertible dense linear map ``y = x W^T`` in LU parameterisation (Glow).

    ``W = P L (U + diag(sign(s) * exp(log|s|)))`` with ``P`` a fixed
    permutation matrix, ``L`` unit lower triangular, ``U`` strictly upper
    triangular and the diagonal ``s`` stored as fixed signs and learned
    log-magnitudes. Then ``log |det W| = sum(log|s|)`` costs O(d) instead of
    O(d^3), ``W`` can never become singular, and the inverse is two
    triangular solves.

    By default the map starts as a random rotation (an orthogonal matrix
    drawn from torch's global generator, so the estimator's seed fixes it),
    which mixes all features from the first step, as Glow does.

    Parameters
    ----------
    n_features : int
        Dimension ``d``.
    weight : Tensor of shape (d, d) or None, default=None
        An invertible starting matrix ``W`` instead of the random rotation
        (e.g. a whitening matrix). It is factorised in float64 and the
        layer takes ``weight``'s dtype.
    """

    # Buffers, declared for the type checker (register_buffer sets them).
    permutation: Tensor
    sign: Tensor
    lower_mask: Tensor
    eye: Tensor

    def __init__(self, n_features: int, weight: Tensor | None = None) -> None:
        super().__init__()
        if n_features < 1:
            raise ValueError(f"n_features must be positive, got {n_features}.")
        self.n_features = n_features
        if weight is None:
            rotation, _ = torch.linalg.qr(torch.randn(n_features, n_features))
            permutation, lower, upper = torch.linalg.lu(rotation)
            dtype = rotation.dtype
        else:
            if weight.shape != (n_features, n_features):
                raise ValueError(f"weight must have shape ({n_features}, {n_features}), got {tuple(weight.shape)}.")
            dtype = weight.dtype
            # Factorised in float64 whatever the layer's dtype: the factors of
            # an ill-conditioned matrix lose digits in float32.
            permutation, lower, upper = (
                factor.to(dtype) for factor in torch.linalg.lu(weight.detach().to(torch.float64))
            )
            if not torch.all(torch.diagonal(upper) != 0):
                raise ValueError("weight must be invertible.")
        diagonal = torch.diagonal(upper)
        self.register_buffer("permutation", permutation)
        self.register_buffer("sign", torch.sign(diagonal))
        # Masks as buffers so they follow .double()/.to() with the parameters.
        self.register_buffer(
            "lower_mask", torch.tril(torch.ones(n_features, n_features, dtype=dtype), diagonal=-1), persistent=False
        )
        self.register_buffer("eye", torch.eye(n_features, dtype=dtype), persistent=False)
        self.lower = nn.Parameter(lower * self.lower_mask)
        self.upper = nn.Parameter(upper * self.lower_mask.T)
        self.log_abs_diagonal = nn.Parameter(torch.log(diagonal.abs()))

    def _factors(self) -> tuple[Tensor, Tensor]:
        """The unit lower and the full upper triangular factors of ``P^T W``."""
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign * torch.exp(self.log_abs_diagonal))
        return lower, upper

    def weight(self) -> Tensor:
        """The matrix ``W``, shape ``(d, d)``."""
        lower, upper = self._factors()
        # P (L U) as a gather of rows: the same numbers as the product with
        # the permutation matrix (each entry is one product by 1), without a
        # dense d^3 product forward and backward (a third of a training step
        # at d = 1,555). The indices are read from the buffer each time, so
        # they follow load_state_dict.
        return (lower @ upper).index_select(0, self.permutation.argmax(dim=1))

    def log_abs_det_weight(self) -> Tensor:
        """``log |det W|`` (a scalar tensor)."""
        return self.log_abs_diagonal.sum()

    def _multiply(self, rows: Tensor) -> Tensor:
        # A contiguous W^T: with the transposed view, MKL's small-matrix
        # kernel rounds a row differently by its position in the batch
        # (seen at d=5), so a row's score depended on the rows around it.
        return rows @ self.weight().T.contiguous()

    def _solve(self, rows: Tensor) -> Tensor:
        """``rows @ W^{-T}``: solve ``W x = y`` for every row ``y``."""
        lower, upper = self._factors()
        columns = self.permutation.T @ rows.T
        columns = torch.linalg.solve_triangular(lower, columns, upper=False, unitriangular=True)
        columns = torch.linalg.solve_triangular(upper, columns, upper=True)
        return columns.T

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._multiply(x), self.log_abs_det_weight().expand(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._solve(y), (-self.log_abs_det_weight()).expand(y.shape[0])


class InvertibleConv1x1(LULinear):
    """Glow's invertible 1x1 convolution on flattened images.

    The same ``C x C`` matrix ``W`` (LU-parameterised, see :class:`LULinear`)
    mixes the channels at every pixel, so
    ``log |det J| = H * W * sum(log|s|)``.

    Rows are flattened images in channel-major order, i.e.
    ``x.reshape(n, C, H, W)`` recovers the image; this keeps the layer a
    :class:`~skflow.flows.core.Bijection` on ``(n, C*H*W)`` rows that chains
    with every other layer.

    Parameters
    ----------
    image_shape : tuple of int
        ``(C, H, W)``.
    """

    def __init__(self, image_shape: tuple[int, int, int]) -> None:
        channels, height, width = (int(size) for size in image_shape)
        if min(channels, height, width) < 1:
            raise ValueError(f"image_shape must be three positive integers (C, H, W), got {image_shape!r}.")
        super().__init__(channels)
        self.image_shape = (channels, height, width)

    def _per_pixel(self, rows: Tensor, linear_map: Callable[[Tensor], Tensor]) -> Tensor:
        channels, height, width = self.image_shape
        n = rows.shape[0]
        pixels = rows.reshape(n, channels, height * width).transpose(1, 2).reshape(n * height * width, channels)
        mapped = linear_map(pixels)
        return mapped.reshape(n, height * width, channels).transpose(1, 2).reshape(n, channels * height * width)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _, height, width = self.image_shape
        log_abs_det = height * width * self.log_abs_det_weight()
        return self._per_pixel(x, self._multiply), log_abs_det.expand(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _, height, width = self.image_shape
        log_abs_det = -height * width * self.log_abs_det_weight()
        return self._per_pixel(y, self._solve), log_abs_det.expand(y.shape[0])
