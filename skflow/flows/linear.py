"""Linear bijections: ActNorm and fixed permutations.

These mix or rescale features between coupling layers. Their log-dets are
constant in ``x``, so they cost one elementwise operation per call.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .core import Bijection

__all__ = ["ActNorm", "Permutation"]


class ActNorm(Bijection):
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
    """

    def __init__(self, n_features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n_features))
        self.log_scale = nn.Parameter(torch.zeros(n_features))
        self.eps = eps
        # A buffer, not a Python flag, so the state survives state_dict and pickling.
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        std = x.std(dim=0, unbiased=False) if x.shape[0] > 1 else torch.ones_like(x[0])
        self.bias.copy_(-x.mean(dim=0))
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(True)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized):
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

    def __init__(self, permutation: Tensor) -> None:
        super().__init__()
        permutation = torch.as_tensor(permutation, dtype=torch.long)
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
        return x[:, self.permutation], x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y[:, self.inverse_permutation], y.new_zeros(y.shape[0])
