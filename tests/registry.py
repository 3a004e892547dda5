"""What the shared test batteries run over.

Every flow family registers here, once:

* ``FAST_ESTIMATORS``: a small, fast configuration of its estimator (a few
  epochs, tiny networks, fixed seed). The estimator-level batteries
  (scikit-learn common checks, persistence, determinism, density
  normalisation, bad input) run over every entry.
* ``BIJECTIONS``: factories ``n_features -> Bijection`` for each invertible
  layer it adds. The layer-level batteries (log-det against the autograd
  Jacobian, inverse round trip) run over every entry, in float64, after the
  parameters have been randomised so that no layer is tested at its identity
  initialisation.
* ``EXPECTED_FAILURES``: checks an estimator class cannot pass, with the
  reason, keyed by class name.

The families themselves are registered in ``skflow/registry.py``;
``tests/test_registry.py`` fails when one of them has no ``FAST_ESTIMATORS``
entry here. Add an entry with a one-line edit; keep configurations small enough that the
whole suite stays within a few minutes on two CPU cores.
"""

from __future__ import annotations

from collections.abc import Callable

from skflow import GlowDensity, IAFDensity, MAFDensity, NeuralSplineDensity, NICEDensity, RealNVPDensity
from skflow.base import FlowEstimator
from skflow.continuous import CNFDensity, FlowMatchingDensity
from skflow.flows import (
    MADE,
    ActNorm,
    Additive,
    AdditiveCoupling,
    Affine,
    AffineCoupling,
    Autoregressive,
    Bijection,
    Chain,
    Coupling,
    InverseAutoregressive,
    Inverted,
    MaskedAffineAutoregressive,
    MaskedRationalQuadraticAutoregressive,
    Permutation,
    RationalQuadraticCoupling,
    RationalQuadraticSpline,
)
from skflow.flows.linear import DiagonalScaling, InvertibleConv1x1, LULinear
from skflow.flows.multiscale import ChannelActNorm, conv_affine_coupling
from skflow.flows.planar import InversePlanarFlow, PlanarFlow
from skflow.injective import FreeFormFlowDensity, InjectiveFlowEstimator
from skflow.nn import MLP
from skflow.planar import PlanarFlowDensity


def _affine_coupling(n_features: int, flip: bool = False) -> Bijection:
    kept = n_features // 2
    return AffineCoupling(n_features, kept, MLP(kept, 2 * (n_features - kept), (16,), "tanh"), flip=flip)


def _additive_coupling(n_features: int) -> Bijection:
    kept = n_features // 2
    return AdditiveCoupling(n_features, kept, MLP(kept, n_features - kept, (16,), "tanh"))


FAST_ESTIMATORS: list[FlowEstimator] = [
    RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=3, batch_size=64, random_state=0),
    CNFDensity(hidden_dims=(8,), solver="rk4", n_steps=2, max_epochs=2, batch_size=64, random_state=0),
    FlowMatchingDensity(
        hidden_dims=(8,), solver="rk4", n_steps=2, validation_n_steps=2, max_epochs=2, batch_size=64, random_state=0
    ),
    PlanarFlowDensity(n_layers=4, orientation="generative", max_epochs=3, batch_size=64, random_state=0),
    MAFDensity(n_layers=2, hidden_dims=(16,), max_epochs=3, batch_size=64, random_state=0),
    IAFDensity(n_layers=2, hidden_dims=(16,), max_epochs=3, batch_size=64, random_state=0),
    NeuralSplineDensity(n_layers=2, n_bins=4, hidden_dims=(16,), max_epochs=3, batch_size=64, random_state=0),
    NeuralSplineDensity(
        variant="autoregressive", n_layers=2, n_bins=4, hidden_dims=(16,), max_epochs=3, batch_size=64, random_state=0
    ),
    InjectiveFlowEstimator(
        n_components=1, hidden_dims=(16,), n_residual_blocks=1, max_epochs=3, batch_size=64, random_state=0
    ),
    FreeFormFlowDensity(hidden_dims=(16,), n_residual_blocks=1, max_epochs=3, batch_size=64, random_state=0),
    NICEDensity(n_layers=2, hidden_dims=(16,), max_epochs=3, batch_size=64, random_state=0),
    GlowDensity(n_steps=2, hidden_dims=(16,), max_epochs=3, batch_size=64, random_state=0),
]

# Checks an estimator class cannot pass, each with its reason, keyed by class
# name: scikit-learn common checks by name ("check_fit2d_1feature", ...) and
# skflow's own shared batteries ("skflow_density_normalisation", ...). An
# entry applies to the class and its subclasses (FlowEstimator's to every
# family). The batteries mark these xfail (strict), so a stale entry fails as
# loudly as a new bug. This knowledge is the tests', not the library's.
# InjectiveFlowEstimator is not listed: its default start (init="auto": PCA) is
# probabilistic PCA, a normalised density, and the 3-epoch registry fit stays near it.
_NOT_NORMALISED_WHEN_UNTRAINED = (
    "the free-form density is normalised only once the decoder inverts the encoder (and, for d < D, the "
    "off-manifold Gaussian's tube approximation holds); the 3-epoch registry fit is far from that. "
    "tests/test_injective.py integrates trained models instead."
)
EXPECTED_FAILURES: dict[str, dict[str, str]] = {
    "FlowEstimator": {
        "check_sample_weight_equivalence_on_dense_data": (
            "mini-batch training with a random validation split: an integer weight equals repeated rows in "
            "expectation, not draw for draw (exactly with full-batch training: tests/test_sample_weight.py)"
        ),
    },
    "FreeFormFlowDensity": {"skflow_density_normalisation": _NOT_NORMALISED_WHEN_UNTRAINED},
}


def expected_failures(estimator: object) -> dict[str, str]:
    """The checks ``estimator`` is expected to fail, with reasons (from its class and its bases)."""
    failures: dict[str, str] = {}
    for cls in reversed(type(estimator).__mro__):
        failures.update(EXPECTED_FAILURES.get(cls.__name__, {}))
    return failures


BIJECTIONS: dict[str, Callable[[int], Bijection]] = {
    "affine_coupling": _affine_coupling,
    "affine_coupling_flipped": lambda d: _affine_coupling(d, flip=True),
    "additive_coupling": _additive_coupling,
    "actnorm": ActNorm,
    "permutation": Permutation.reverse,
    "planar": PlanarFlow,
    "planar_inverse": InversePlanarFlow,
    "maf_affine": lambda d: MaskedAffineAutoregressive(MADE(d, 2, (16,), "tanh", order=list(range(d))[::-1])),
    "iaf_affine": lambda d: InverseAutoregressive(MaskedAffineAutoregressive(MADE(d, 2, (16, 16), "tanh"))),
    "spline_coupling": lambda d: RationalQuadraticCoupling(
        d, d // 2, MLP(d // 2, (d - d // 2) * 14, (16,), "tanh"), n_bins=5
    ),
    "spline_autoregressive": lambda d: MaskedRationalQuadraticAutoregressive(MADE(d, 14, (16,), "tanh"), n_bins=5),
    # Every elementwise map in both structures, beyond the named layers above.
    "additive_autoregressive": lambda d: Autoregressive(MADE(d, 1, (16,), "tanh"), Additive()),
    "affine_autoregressive_forward": lambda d: Autoregressive(MADE(d, 2, (16,), "tanh"), Affine(scale_bound=2.0)),
    "inverted_spline_coupling": lambda d: Coupling(
        d, d // 2, MLP(d // 2, (d - d // 2) * 14, (16,), "tanh"), Inverted(RationalQuadraticSpline(n_bins=5))
    ),
    "diagonal_scaling": DiagonalScaling,
    "lu_linear": LULinear,
    "conv1x1": lambda d: InvertibleConv1x1((d, 1, 1)),  # channel mixing; H*W factor: tests/flows/test_glow_layers.py
    "channel_actnorm": lambda d: ChannelActNorm((1, 1, d)),  # d pixels of one channel share the affine map
    "conv_coupling": lambda d: conv_affine_coupling((d, 1, 1), hidden_channels=4, activation="tanh"),
    "chain": lambda d: Chain([ActNorm(d), _affine_coupling(d), Permutation.reverse(d), _affine_coupling(d, True)]),
}


def _conditional_coupling(kind: str, n_features: int, n_context: int) -> Bijection:
    # n_features == 1: nothing to keep, the context alone sets the map.
    kept = n_features // 2
    width = {"affine": 2, "additive": 1, "spline": 14}[kind] * (n_features - kept)
    conditioner = MLP(kept + n_context, width, (16,), "tanh")
    if kind == "affine":
        return AffineCoupling(n_features, kept, conditioner, flip=True, n_context=n_context)
    if kind == "additive":
        return AdditiveCoupling(n_features, kept, conditioner, n_context=n_context)
    return RationalQuadraticCoupling(n_features, kept, conditioner, n_bins=5, n_context=n_context)


# Every layer that takes a context, built with one: factories
# ``(n_features, n_context) -> Bijection``. The context battery
# (tests/flows/test_bijections.py) runs over all of them.
CONDITIONAL_BIJECTIONS: dict[str, Callable[[int, int], Bijection]] = {
    "affine_coupling": lambda d, c: _conditional_coupling("affine", d, c),
    "additive_coupling": lambda d, c: _conditional_coupling("additive", d, c),
    "spline_coupling": lambda d, c: _conditional_coupling("spline", d, c),
    "maf_affine": lambda d, c: MaskedAffineAutoregressive(MADE(d, 2, (16,), "tanh", n_context=c)),
    "iaf_affine": lambda d, c: InverseAutoregressive(
        MaskedAffineAutoregressive(MADE(d, 2, (16,), "tanh", n_context=c))
    ),
    "spline_autoregressive": lambda d, c: MaskedRationalQuadraticAutoregressive(
        MADE(d, 14, (16,), "tanh", n_context=c), n_bins=5
    ),
    "planar": lambda d, c: PlanarFlow(d, n_context=c),
    "planar_inverse": lambda d, c: InversePlanarFlow(d, n_context=c),
    # Glow's tabular step: only its coupling sees the context.
    "glow_step": lambda d, c: Chain([ActNorm(d), LULinear(d), _conditional_coupling("affine", d, c)]),
}
