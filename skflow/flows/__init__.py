"""Torch layer of skflow: invertible layers and flow models (no scikit-learn here)."""

from .autoregressive import MADE, InverseAutoregressive, MaskedAffineAutoregressive
from .core import Bijection, Chain, ExactFlow, FlowModel, StandardNormal
from .coupling import AdditiveCoupling, AffineCoupling, Coupling
from .distributions import GaussianMixtureBase
from .injective import FreeFormFlow, FreeFormInjectiveFlow
from .linear import ActNorm, DiagonalScaling, InvertibleConv1x1, LULinear, Permutation
from .multiscale import ChannelActNorm, OnLeadingFeatures, Squeeze, multiscale_glow
from .planar import InversePlanarFlow, PlanarFlow
from .splines import MaskedRationalQuadraticAutoregressive, RationalQuadraticCoupling

__all__ = [
    "MADE",
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "Bijection",
    "Chain",
    "ChannelActNorm",
    "Coupling",
    "DiagonalScaling",
    "ExactFlow",
    "FlowModel",
    "FreeFormFlow",
    "FreeFormInjectiveFlow",
    "GaussianMixtureBase",
    "InverseAutoregressive",
    "InversePlanarFlow",
    "InvertibleConv1x1",
    "LULinear",
    "MaskedAffineAutoregressive",
    "MaskedRationalQuadraticAutoregressive",
    "OnLeadingFeatures",
    "Permutation",
    "PlanarFlow",
    "RationalQuadraticCoupling",
    "Squeeze",
    "StandardNormal",
    "multiscale_glow",
]
