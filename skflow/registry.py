"""The one list of skflow's flow families.

A family is registered here once, under the name the command line knows it
by. Everything else that enumerates the families derives from this list or
is checked against it by ``tests/test_registry.py``: the CLI's ``--model``
choices (derived), and skflow's public names, the API page of the docs, the
README's estimator table and the test registry (``tests/registry.py``),
each of which the tests require to list every family. What a new family adds,
place by place, is in ``docs/architecture.rst`` ("Adding a family").
"""

from __future__ import annotations

from .base import FlowEstimator
from .continuous import CNFDensity, FlowMatchingDensity
from .glow import GlowDensity
from .injective import FreeFormFlowDensity, InjectiveFlowEstimator
from .maf import IAFDensity, MAFDensity
from .nice import NICEDensity
from .planar import PlanarFlowDensity
from .realnvp import RealNVPDensity
from .spline import NeuralSplineDensity

__all__ = ["FAMILIES"]

# Command-line name -> estimator class, in the order the CLI lists them.
FAMILIES: dict[str, type[FlowEstimator]] = {
    "realnvp": RealNVPDensity,
    "nice": NICEDensity,
    "glow": GlowDensity,
    "maf": MAFDensity,
    "iaf": IAFDensity,
    "spline": NeuralSplineDensity,
    "planar": PlanarFlowDensity,
    "cnf": CNFDensity,
    "flowmatching": FlowMatchingDensity,
    "fif": InjectiveFlowEstimator,
    "fff": FreeFormFlowDensity,
}
