"""PlanarFlowDensity: exact scores on arbitrary data, learning, configuration."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons
from sklearn.mixture import GaussianMixture
from torch.autograd.functional import jacobian

from skflow import PlanarFlowDensity
from skflow.flows import ActNorm, GaussianMixtureBase, InversePlanarFlow, PlanarFlow


@pytest.fixture(scope="module", params=["generative", "normalizing"])
def moons(request):
    X, _ = make_moons(500, noise=0.1, random_state=0)
    X_test, _ = make_moons(500, noise=0.1, random_state=1)
    flow = PlanarFlowDensity(
        n_layers=8, orientation=request.param, max_epochs=40, batch_size=250, lr=1e-2, random_state=0
    ).fit(X)
    return flow, X, X_test


def _change_of_variables(flow: PlanarFlowDensity, X: np.ndarray) -> np.ndarray:
    """log p(x) from the autograd Jacobian of the encoder, in float64."""
    model = copy.deepcopy(flow.model_).double().cpu()  # the reference runs on the CPU
    standardised = torch.as_tensor((X - flow.mean_) / flow.scale_, dtype=torch.float64)
    values = []
    for row in standardised:
        latent = model.encode(row.unsqueeze(0))
        matrix = jacobian(lambda r: model.encode(r.unsqueeze(0)).squeeze(0), row)
        log_base = -0.5 * (latent.pow(2).sum() + latent.shape[1] * np.log(2 * np.pi))
        values.append(float((log_base + torch.linalg.slogdet(matrix).logabsdet).detach()))
    return np.array(values) - np.log(flow.scale_).sum()


def test_score_samples_is_exact_on_arbitrary_points(moons):
    flow, _, X_test = moons
    rng = np.random.default_rng(0)
    # Held-out rows and points far outside the training range.
    points = np.vstack([X_test[:5], rng.normal(scale=100.0, size=(5, 2))])
    expected = _change_of_variables(flow, points)
    # The estimator runs in float32; the reference in float64.
    np.testing.assert_allclose(flow.score_samples(points), expected, rtol=1e-4, atol=1e-3)


def test_score_of_own_samples_matches_the_sampling_direction(moons):
    """Two routes to log p(x) at x = g(z): the root solve, and the cheap map's log-det."""
    flow, _, _ = moons
    model = copy.deepcopy(flow.model_).double().cpu()  # the reference runs on the CPU
    latent = torch.randn(20, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        data, log_det_sampling = model.transform.inverse(latent)
        by_sampling = model.base.log_prob(latent) - log_det_sampling
        by_solve = model.log_prob(data)
    torch.testing.assert_close(by_solve, by_sampling, rtol=0, atol=1e-10)


def test_far_points_round_trip_through_transform(moons):
    flow, _, _ = moons
    far = np.random.default_rng(1).normal(scale=100.0, size=(50, 2))
    recovered = flow.inverse_transform(flow.transform(far))
    np.testing.assert_allclose(recovered, far, rtol=0, atol=1e-4 * 100)
    assert np.isfinite(flow.score_samples(far)).all()


def test_learns_moons_better_than_a_gaussian(moons):
    flow, X, X_test = moons
    gaussian = GaussianMixture(1, random_state=0).fit(X)
    assert flow.score(X_test) > gaussian.score(X_test) + 0.1


@pytest.mark.parametrize("orientation, layer_class", [("generative", PlanarFlow), ("normalizing", InversePlanarFlow)])
def test_model_structure_and_mixture_base(orientation, layer_class):
    flow = PlanarFlowDensity(n_layers=3, orientation=orientation, n_base_components=2)
    torch.manual_seed(0)
    model = flow.build_model(2)
    layers = list(model.transform.bijections)
    assert isinstance(layers[0], ActNorm) and all(type(layer) is layer_class for layer in layers[1:])
    assert len(layers) == 4
    assert isinstance(model.base, GaussianMixtureBase)
    assert len(PlanarFlowDensity(n_layers=3, actnorm=False).build_model(2).transform.bijections) == 3


def test_single_feature_and_mixture_base_fit():
    X = np.concatenate([np.random.default_rng(0).normal(-3, 0.5, 150), np.random.default_rng(1).normal(3, 0.5, 150)])
    flow = PlanarFlowDensity(n_layers=4, max_epochs=5, n_base_components=2, random_state=0).fit(X[:, None])
    grid = np.linspace(-60, 60, 24001)[:, None]
    density = np.exp(flow.score_samples(grid))
    # The 1-D density integrates to one.
    assert np.trapezoid(density, grid[:, 0]) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("params", [{"n_layers": 0}, {"n_layers": 2.5}, {"actnorm": "yes"}, {"orientation": "up"}])
def test_invalid_hyperparameters_raise(params):
    with pytest.raises(ValueError):
        PlanarFlowDensity(**params, max_epochs=1).fit(np.random.default_rng(0).normal(size=(20, 2)))
