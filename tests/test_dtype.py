"""The ``dtype`` hyperparameter: float32 by default, float64 from the input tensors through training and inference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.base import clone
from torch import Tensor

from skflow.base import FlowEstimator
from skflow.flows import ActNorm, Chain, ExactFlow, StandardNormal
from tests.helpers import estimator_id
from tests.registry import FAST_ESTIMATORS


class _RecordingFlow(ExactFlow):
    """An exact flow that records the dtype of every batch it is given."""

    def __init__(self, n_features: int) -> None:
        super().__init__(Chain([ActNorm(n_features)]), StandardNormal(n_features))
        self.seen: list[tuple[str, torch.dtype]] = []

    def loss(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        self.seen.append(("loss", x.dtype))
        return super().loss(x, context)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        self.seen.append(("log_prob", x.dtype))
        return super().log_prob(x, context)


class DiagonalGaussian(FlowEstimator):
    """One ActNorm onto N(0, I): a density known in closed form from its parameters."""

    def build_model(self, n_features: int) -> _RecordingFlow:
        return _RecordingFlow(n_features)


def _data(n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) * [1.0, 20.0, 0.01] + [5.0, -300.0, 0.2]


def _closed_form_log_density(estimator: DiagonalGaussian, X: np.ndarray) -> np.ndarray:
    """log p(x) from the fitted parameters, in numpy float64 (independent of torch's arithmetic)."""
    actnorm = estimator.model_.transform.bijections[0]
    bias = actnorm.bias.detach().double().cpu().numpy()
    log_scale = actnorm.log_scale.detach().double().cpu().numpy()
    z = ((X - estimator.mean_) / estimator.scale_ + bias) * np.exp(log_scale)
    log_normal = -0.5 * (z**2 + math.log(2 * math.pi)).sum(axis=1)
    return log_normal + log_scale.sum() - np.log(estimator.scale_).sum()


def _fit(dtype) -> DiagonalGaussian:
    X = _data()
    return DiagonalGaussian(
        max_epochs=2, batch_size=100, lr=1e-2, validation_fraction=0.25, random_state=0, dtype=dtype
    ).fit(X)


@pytest.mark.parametrize("dtype", ["float64", np.float64])
def test_float64_runs_through_training_and_inference(dtype) -> None:
    estimator = _fit(dtype)
    model = estimator.model_
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    stages = {stage for stage, _ in model.seen}
    assert stages == {"loss", "log_prob"}, "training and validation batches were both seen"
    assert {seen for _, seen in model.seen} == {torch.float64}
    model.seen.clear()
    X_test = _data(50, seed=1)
    scores = estimator.score_samples(X_test)
    assert model.seen and {seen for _, seen in model.seen} == {torch.float64}
    # Exact to float64 rounding against the closed form.
    np.testing.assert_allclose(scores, _closed_form_log_density(estimator, X_test), rtol=0, atol=1e-10)
    assert estimator.model_.sample(3).dtype == torch.float64
    Z = estimator.transform(X_test)
    np.testing.assert_allclose(estimator.inverse_transform(Z), X_test, rtol=1e-12, atol=1e-9)


def test_float32_is_the_default_and_is_visibly_less_exact() -> None:
    estimator = _fit("float32")
    assert DiagonalGaussian().dtype == "float32"
    assert {p.dtype for p in estimator.model_.parameters()} == {torch.float32}
    assert {seen for _, seen in estimator.model_.seen} == {torch.float32}
    X_test = _data(50, seed=1)
    error = np.abs(estimator.score_samples(X_test) - _closed_form_log_density(estimator, X_test))
    # float32 rounding shows (so the float64 test above can tell the two apart), but stays small.
    assert 1e-9 < error.max() < 1e-3


def test_invalid_dtype_is_rejected_with_sklearns_message() -> None:
    with pytest.raises(ValueError, match="'dtype' parameter"):
        DiagonalGaussian(dtype="float16").fit(_data())
    with pytest.raises(ValueError, match="'dtype' parameter"):
        DiagonalGaussian(dtype=np.int64).fit(_data())


@pytest.mark.parametrize("index", range(len(FAST_ESTIMATORS)), ids=estimator_id)
def test_every_family_fits_and_scores_in_float64(index: int) -> None:
    X = np.random.default_rng(index).normal(size=(120, 2))
    estimator = clone(FAST_ESTIMATORS[index]).set_params(dtype="float64", max_epochs=1).fit(X)
    floating = [t for t in [*estimator.model_.parameters(), *estimator.model_.buffers()] if t.is_floating_point()]
    assert floating and all(t.dtype == torch.float64 for t in floating)
    assert np.all(np.isfinite(estimator.score_samples(X[:10])))
