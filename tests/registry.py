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

Add an entry with a one-line edit; keep configurations small enough that the
whole suite stays within a few minutes on two CPU cores.
"""

from __future__ import annotations

from collections.abc import Callable

from skflow import RealNVPDensity
from skflow.base import FlowEstimator
from skflow.flows import ActNorm, AdditiveCoupling, AffineCoupling, Bijection, Chain, Permutation
from skflow.nn import MLP


def _affine_coupling(n_features: int, flip: bool = False) -> Bijection:
    kept = n_features // 2
    return AffineCoupling(n_features, kept, MLP(kept, 2 * (n_features - kept), (16,), "tanh"), flip=flip)


def _additive_coupling(n_features: int) -> Bijection:
    kept = n_features // 2
    return AdditiveCoupling(n_features, kept, MLP(kept, n_features - kept, (16,), "tanh"))


FAST_ESTIMATORS: list[FlowEstimator] = [
    RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=3, batch_size=64, random_state=0),
]

BIJECTIONS: dict[str, Callable[[int], Bijection]] = {
    "affine_coupling": _affine_coupling,
    "affine_coupling_flipped": lambda d: _affine_coupling(d, flip=True),
    "additive_coupling": _additive_coupling,
    "actnorm": ActNorm,
    "permutation": Permutation.reverse,
    "chain": lambda d: Chain([ActNorm(d), _affine_coupling(d), Permutation.reverse(d), _affine_coupling(d, True)]),
}
