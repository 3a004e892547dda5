"""Torch layer of skflow: invertible layers and flow models (no scikit-learn here)."""

from .autoregressive import MADE, Autoregressive, InverseAutoregressive, MaskedAffineAutoregressive
from .conditional import ConditionalFlow
from .core import Bijection, Chain, ExactFlow, FlowModel, StandardNormal
from .coupling import AdditiveCoupling, AffineCoupling, Coupling
from .distributions import GaussianMixtureBase
from .elementwise import Additive, Affine, ElementwiseMap, Inverted
from .injective import FreeFormFlow, FreeFormInjectiveFlow
from .linear import ActNorm, DiagonalScaling, InvertibleConv1x1, LULinear, Permutation
from .multiscale import ChannelActNorm, OnLeadingFeatures, Squeeze, multiscale_glow
from .planar import InversePlanarFlow, PlanarFlow
from .splines import MaskedRationalQuadraticAutoregressive, RationalQuadraticCoupling, RationalQuadraticSpline

__all__ = [
    "MADE",
    "ActNorm",
    "Additive",
    "AdditiveCoupling",
    "Affine",
    "AffineCoupling",
    "Autoregressive",
    "Bijection",
    "Chain",
    "ChannelActNorm",
    "ConditionalFlow",
    "Coupling",
    "DiagonalScaling",
    "ElementwiseMap",
    "ExactFlow",
    "FlowModel",
    "FreeFormFlow",
    "FreeFormInjectiveFlow",
    "GaussianMixtureBase",
    "InverseAutoregressive",
    "InversePlanarFlow",
    "Inverted",
    "InvertibleConv1x1",
    "LULinear",
    "MaskedAffineAutoregressive",
    "MaskedRationalQuadraticAutoregressive",
    "OnLeadingFeatures",
    "Permutation",
    "PlanarFlow",
    "RationalQuadraticCoupling",
    "RationalQuadraticSpline",
    "Squeeze",
    "StandardNormal",
    "multiscale_glow",
]
