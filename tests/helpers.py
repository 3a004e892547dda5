"""Helpers shared by the test batteries: parametrisation over the registry,
small seeded datasets, a cache of fitted estimators and parameter
randomisation for bijections.

Nothing here asserts; the batteries do.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from sklearn.base import clone
from skorch.callbacks import Callback
from torch import Tensor, nn

from skflow.flows import FlowModel
from tests.registry import FAST_ESTIMATORS, expected_failures


def all_subclasses(cls: type) -> set[type]:
    """Every class that inherits from ``cls``, at any depth (imported ones only)."""
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | all_subclasses(sub)
    return found


class DensityOnlyModel(FlowModel):
    """Base of test doubles for the training engine, which only trains and validates.

    Subclasses define ``log_prob`` (and ``loss`` when it differs from
    ``-log_prob``); the maps the engine never calls refuse to run.
    """

    def sample(self, n_samples: int, generator: torch.Generator | None = None, context: Tensor | None = None) -> Tensor:
        raise NotImplementedError("a test double of the engine draws no samples")

    def encode(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        raise NotImplementedError("a test double of the engine has no latent space")

    def decode(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        raise NotImplementedError("a test double of the engine has no latent space")


def estimator_id(index: int) -> str:
    """Readable test id of the ``index``-th registered estimator."""
    return f"{index}-{type(FAST_ESTIMATORS[index]).__name__}"


def estimator_params(battery: str) -> list:
    """One ``pytest.param(index)`` per registered estimator.

    A family that cannot pass ``battery`` lists it, with a reason, in its
    ``EXPECTED_FAILURES`` (tests/registry.py); the test is then a strict xfail, so the
    declaration fails as soon as it becomes stale.
    """
    params = []
    for index, estimator in enumerate(FAST_ESTIMATORS):
        reason = expected_failures(estimator).get(battery)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(index, id=estimator_id(index), marks=marks))
    return params


def fresh_estimator(index: int, **params):
    """An unfitted copy of the ``index``-th registered estimator (never the registry's own object)."""
    return clone(FAST_ESTIMATORS[index]).set_params(**params)


def correlated_data(n_samples: int = 400, n_features: int = 3, seed: int = 0) -> np.ndarray:
    """Rows of a skewed, correlated distribution in original (non-standard) units."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n_samples, n_features))
    mixing = np.eye(n_features) + 0.5 * np.tril(np.ones((n_features, n_features)), -1)
    skewed = latent @ mixing.T + 0.3 * latent[:, :1] ** 2
    return 3.0 * skewed + np.arange(n_features) * 10.0


def two_blobs_2d(n_samples: int = 600, seed: int = 0) -> np.ndarray:
    """A bimodal 2-D data set (two correlated Gaussian blobs)."""
    rng = np.random.default_rng(seed)
    half = n_samples // 2
    first = rng.normal(size=(half, 2)) @ np.array([[1.0, 0.0], [0.6, 0.5]]) + [-2.0, 0.0]
    second = rng.normal(size=(n_samples - half, 2)) * 0.7 + [2.0, 1.0]
    return np.vstack([first, second])


@functools.cache
def fitted_estimator(index: int, dataset: str = "correlated"):
    """The ``index``-th registered estimator fitted once per session on ``dataset``.

    Shared between tests: callers must not refit or mutate it.
    """
    X = DATASETS[dataset]()
    return fresh_estimator(index).fit(X)


DATASETS = {"correlated": correlated_data, "blobs": two_blobs_2d}


# ---------------------------------------------------------------------- #
# Bijections
# ---------------------------------------------------------------------- #
@torch.no_grad()
def randomise_parameters(
    module: nn.Module, n_features: int, scale: float = 0.3, seed: int = 0, n_context: int = 0
) -> nn.Module:
    """Move a bijection away from its initialisation, in place, and return it.

    One forward pass in training mode first lets data-dependent
    initialisations (ActNorm) run, so they cannot overwrite the random values
    later; then every parameter gets small random values (no layer stays at
    its identity initialisation), any boolean ``initialized`` buffer is set,
    and the module goes to evaluation mode, where each sample is mapped
    independently of the rest of the batch.
    """
    generator = torch.Generator().manual_seed(seed)
    dtype = next((p.dtype for p in module.parameters()), torch.get_default_dtype())
    module.train()
    context = torch.randn(16, n_context, generator=generator, dtype=dtype) if n_context else None
    module(torch.randn(16, n_features, generator=generator, dtype=dtype), context)
    for parameter in module.parameters():
        parameter.copy_(scale * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    for name, buffer in module.named_buffers():
        if name.split(".")[-1] == "initialized" and buffer.dtype == torch.bool:
            buffer.fill_(True)
    return module.eval()


class RecordLearningRates(Callback):
    """A skorch callback that records the optimiser's learning rate at the start of each epoch."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_epoch_begin(self, net, **kwargs) -> None:
        self.rates.append(net.optimizer_.param_groups[0]["lr"])
