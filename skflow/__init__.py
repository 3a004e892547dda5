"""skflow: normalizing flows as scikit-learn estimators."""

from .base import FlowEstimator
from .realnvp import RealNVPDensity
from .training import TrainingDivergedError

__version__ = "0.1.0"

__all__ = ["FlowEstimator", "RealNVPDensity", "TrainingDivergedError", "__version__"]
