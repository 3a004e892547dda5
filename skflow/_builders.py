"""Builders that several flow families share: layer stacks, variable orders
and the feature checks that go with them.

Families are peers: each ``<family>.py`` imports what it shares from here
(and from ``base.py`` and ``flows/``), never from another family's module,
so a family can change or disappear without touching the others
(``tests/test_layering.py`` checks this).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .flows.core import Bijection
from .flows.linear import Permutation

__all__ = ["autoregressive_order", "check_coupling_features", "coupling_stack"]


def check_coupling_features(estimator: object, n_features: int, n_context: int = 0) -> None:
    """Coupling flows split the features in two, so they need at least two.

    A conditional flow of one feature is the exception: its couplings
    transform that feature with parameters computed from the context alone.

    Parameters
    ----------
    estimator : object
        The estimator being built; its class name goes into the message.
    n_features : int
    n_context : int, default=0

    Raises
    ------
    ValueError
        If ``n_features < 2`` without a context.
    """
    if n_features < 2 and not (n_features == 1 and n_context > 0):
        raise ValueError(
            f"{type(estimator).__name__} needs at least 2 features, got {n_features} feature(s); "
            "a coupling layer splits the features in two."
        )


def coupling_stack(
    n_features: int,
    n_layers: int,
    permutation: str,
    make_coupling: Callable[[int, bool], Bijection],
) -> list[list[Bijection]]:
    """Coupling layers interleaved with feature mixing, one list per layer.

    ``make_coupling(kept, flip)`` builds one coupling that leaves ``kept``
    features unchanged (the first ones, or the last ones when ``flip``).

    ``"alternate"`` alternates which half is kept. ``"random"`` inserts a
    fixed random permutation (drawn from torch's seeded generator) before each
    coupling, redrawn whenever it would make a coupling transform exactly the
    features its predecessor transformed: with two features that would
    otherwise happen half the time and waste the layer.

    Parameters
    ----------
    n_features : int
    n_layers : int
    permutation : {"alternate", "random"}
    make_coupling : callable ``(kept, flip) -> Bijection``

    Returns
    -------
    layers : list of list of Bijection
        Per coupling, the mixing bijections followed by the coupling.
    """
    kept_first = n_features // 2
    if n_features == 1:  # conditional flow of one feature: nothing to split or mix
        return [[make_coupling(0, False)] for _ in range(n_layers)]
    if permutation == "alternate":
        return [
            [make_coupling(n_features - kept_first if index % 2 else kept_first, bool(index % 2))]
            for index in range(n_layers)
        ]
    arrangement = torch.arange(n_features)  # original feature at each position
    previously_transformed: set[int] = set()
    stack = []
    for _ in range(n_layers):
        for _attempt in range(100):
            order = torch.randperm(n_features)
            transformed = set(arrangement[order][kept_first:].tolist())
            if transformed != previously_transformed:
                break
        arrangement, previously_transformed = arrangement[order], transformed
        stack.append([Permutation(order), make_coupling(kept_first, False)])
    return stack


def autoregressive_order(n_features: int, layer_index: int) -> list[int]:
    """Variable order of layer ``layer_index``: natural, reversed on odd layers.

    Reversing between layers lets the features that were conditioned on least
    in one layer be conditioned on most in the next.

    Returns
    -------
    order : list of int
        A permutation of ``range(n_features)``.
    """
    order = list(range(n_features))
    return order[::-1] if layer_index % 2 else order
