"""Torch layer of skflow: invertible layers and flow models (no scikit-learn here)."""

from .core import Bijection, Chain, ExactFlow, FlowModel, StandardNormal
from .coupling import AdditiveCoupling, AffineCoupling, Coupling
from .linear import ActNorm, Permutation

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "Bijection",
    "Chain",
    "Coupling",
    "ExactFlow",
    "FlowModel",
    "Permutation",
    "StandardNormal",
]
