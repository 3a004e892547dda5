"""skflow: normalizing flows as scikit-learn estimators."""

from .base import FlowEstimator
from .conditional import FlowClassifier, FlowRegressor
from .continuous import CNFDensity, FlowMatchingDensity
from .glow import GlowDensity
from .injective import FreeFormFlowDensity, InjectiveFlowEstimator
from .maf import IAFDensity, MAFDensity
from .nice import NICEDensity
from .outlier import DensityOutlierDetector
from .persistence import ModelFileError, ModelFileVersionWarning, load, save
from .planar import PlanarFlowDensity
from .plotting import DensityDisplay, ExplainedVarianceDisplay, TrainingCurveDisplay
from .realnvp import RealNVPDensity
from .spline import NeuralSplineDensity
from .streaming import ChunkedSource, MemmapSource, ParquetSource
from .training import TrainingDivergedError

__version__ = "0.1.0"

__all__ = [
    "CNFDensity",
    "ChunkedSource",
    "DensityDisplay",
    "DensityOutlierDetector",
    "ExplainedVarianceDisplay",
    "FlowClassifier",
    "FlowEstimator",
    "FlowMatchingDensity",
    "FlowRegressor",
    "FreeFormFlowDensity",
    "GlowDensity",
    "IAFDensity",
    "InjectiveFlowEstimator",
    "MAFDensity",
    "MemmapSource",
    "ModelFileError",
    "ModelFileVersionWarning",
    "NICEDensity",
    "NeuralSplineDensity",
    "ParquetSource",
    "PlanarFlowDensity",
    "RealNVPDensity",
    "TrainingCurveDisplay",
    "TrainingDivergedError",
    "__version__",
    "load",
    "save",
]
