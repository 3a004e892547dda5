"""Estimator-level tests of MAFDensity, IAFDensity and NeuralSplineDensity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.base import clone
from sklearn.datasets import make_moons
from sklearn.mixture import GaussianMixture
from torch.autograd.functional import jacobian

from skflow import IAFDensity, MAFDensity, NeuralSplineDensity

SMALL = {"hidden_dims": (32, 32), "max_epochs": 25, "batch_size": 128, "lr": 3e-3, "random_state": 0}

ESTIMATORS = {
    "maf": MAFDensity(n_layers=3, **SMALL),
    "iaf": IAFDensity(n_layers=3, **SMALL),
    "spline_coupling": NeuralSplineDensity(n_layers=2, n_bins=6, **SMALL),
    "spline_autoregressive": NeuralSplineDensity(variant="autoregressive", n_layers=2, n_bins=6, **SMALL),
}


@pytest.fixture(scope="module")
def moons() -> tuple[np.ndarray, np.ndarray]:
    train, _ = make_moons(600, noise=0.06, random_state=0)
    test, _ = make_moons(400, noise=0.06, random_state=1)
    return train, test


@pytest.fixture(scope="module")
def fitted(moons) -> dict:
    train, _ = moons
    # The math checks below feed CPU tensors to the torch models: fit on the CPU wherever the suite runs.
    return {name: clone(estimator).set_params(device="cpu").fit(train) for name, estimator in ESTIMATORS.items()}


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_beats_a_single_gaussian_on_held_out_moons(name, moons, fitted):
    train, test = moons
    gaussian = GaussianMixture(1, random_state=0).fit(train).score(test)
    score = fitted[name].score(test)
    # Short training still has to beat the best Gaussian clearly (nats/row).
    assert score > gaussian + 0.25, (score, gaussian)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_round_trip_and_finite_scores_beyond_the_training_range(name, moons, fitted):
    estimator = fitted[name]
    _, test = moons
    # Rows far outside anything seen in training (up to 50 training std).
    far = np.array([[50.0, -40.0], [-30.0, 25.0], [8.0, 8.0], [0.5, 0.25]])
    scores = estimator.score_samples(far)
    assert np.all(np.isfinite(scores))
    assert scores[0] < estimator.score_samples(test).min()
    both = np.vstack([test[:50], far])
    np.testing.assert_allclose(estimator.inverse_transform(estimator.transform(both)), both, atol=1e-3)


@pytest.fixture(scope="module")
def centred_moons() -> np.ndarray:
    train, _ = make_moons(600, noise=0.08, random_state=0)
    return train - train.mean(axis=0)


@pytest.mark.parametrize("variant", ["coupling", "autoregressive"])
def test_spline_round_trip_holds_ten_standard_deviations_out(variant, centred_moons):
    # Issue 12.7's setting, at 20 epochs instead of 40 (the flat regions are
    # already there). Ten standard deviations out the conditioners extrapolate
    # to bins of near-minimal height with knot slopes 100x their mean slope,
    # so one spline layer has slope ~2e-6 and two layers ~2e-9: float32
    # outputs cannot tell inputs 0.1 apart. The estimator's transform and
    # inverse_transform run exact flows in float64, where they can.
    estimator = NeuralSplineDensity(
        variant=variant,
        n_layers=4,
        hidden_dims=(32, 32),
        max_epochs=20,
        batch_size=128,
        random_state=0,
        device="cpu",  # the float32 guard below feeds the model CPU tensors
    ).fit(centred_moons)
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(400, 2))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    standardised = directions * rng.uniform(0.0, 10.0, size=(400, 1))
    rows = estimator.mean_ + standardised * estimator.scale_
    latent = estimator.transform(rows)
    assert np.abs(estimator.inverse_transform(latent) - rows).max() <= 1e-4
    # The map the estimator applies has the density's log-det: finite
    # differences of transform (float32's were -inf there) against
    # score_samples minus the latent's standard normal log-density.
    step = 1e-4
    columns = [
        (estimator.transform(rows + step * e) - estimator.transform(rows - step * e)) / (2 * step) for e in np.eye(2)
    ]
    sign, finite_difference = np.linalg.slogdet(np.stack(columns, axis=2))
    analytic = estimator.score_samples(rows) - norm.logpdf(latent).sum(axis=1)
    assert np.all(sign != 0) and np.abs(finite_difference - analytic).max() <= 2e-2
    # The case is a hard one: the same fitted model in float32 loses it.
    with torch.no_grad():
        x = torch.as_tensor(standardised, dtype=torch.float32)
        float32_error = (estimator.model_.decode(estimator.model_.encode(x)) - x).abs().max().item()
    assert float32_error > 1e-2, "the fitted flow is no longer flat far out; make this test harder"


def test_iaf_scores_arbitrary_data_exactly(fitted):
    """IAF's density at arbitrary points (not its own samples) matches change of
    variables with an autograd Jacobian, computed independently in float64."""
    estimator = fitted["iaf"]
    rng = np.random.default_rng(0)
    points = rng.uniform(-3, 3, size=(6, 2))
    model = estimator.model_.double()
    try:
        standardised = torch.as_tensor((points - estimator.mean_) / estimator.scale_)
        expected = []
        for row in standardised:
            latent = model.encode(row[None])[0]
            jac = jacobian(lambda r: model.encode(r[None])[0], row)
            log_density = -0.5 * (latent.pow(2).sum() + 2 * np.log(2 * np.pi)) + torch.linalg.slogdet(jac)[1]
            expected.append(float(log_density.detach()) - np.log(estimator.scale_).sum())
    finally:
        model.float()
    # The estimator computes in float32: agreement to float32 precision.
    np.testing.assert_allclose(estimator.score_samples(points), expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("name", ["iaf", "spline_autoregressive"])
def test_density_integrates_to_one_on_a_grid(name, fitted):
    estimator = fitted[name]
    axis = np.linspace(-4.0, 5.0, 181)
    step = axis[1] - axis[0]
    grid = np.stack(np.meshgrid(axis, axis - 1.5), axis=-1).reshape(-1, 2)
    mass = np.exp(estimator.score_samples(grid)).sum() * step**2
    assert abs(mass - 1) < 0.02, mass


def test_samples_follow_the_fitted_density(moons, fitted):
    train, _ = moons
    for name in ("maf", "iaf"):
        samples = fitted[name].sample(2000, random_state=0)
        assert samples.shape == (2000, 2) and np.all(np.isfinite(samples))
        # The sample mean of the fitted model sits near the data's mean.
        np.testing.assert_allclose(samples.mean(axis=0), train.mean(axis=0), atol=0.15)


def test_autoregressive_families_accept_one_feature_and_coupling_refuses_it():
    x = np.random.default_rng(1).normal(size=(64, 1))
    for estimator in (
        MAFDensity(n_layers=1, hidden_dims=(8,), max_epochs=2, random_state=0),
        NeuralSplineDensity(variant="autoregressive", n_layers=1, hidden_dims=(8,), max_epochs=2, random_state=0),
    ):
        assert np.all(np.isfinite(estimator.fit(x).score_samples(x)))
    with pytest.raises(ValueError, match="1 feature"):
        NeuralSplineDensity(max_epochs=1).fit(x)


@pytest.mark.parametrize(
    "estimator",
    [
        NeuralSplineDensity(variant="neither"),
        NeuralSplineDensity(n_bins=1),
        NeuralSplineDensity(tail_bound=0.0),
        MAFDensity(scale_bound=-1.0),
        IAFDensity(n_layers=0),
        MAFDensity(activation="no_such_activation"),
    ],
)
def test_bad_hyperparameters_raise_value_error(estimator):
    with pytest.raises(ValueError):
        estimator.fit(np.random.default_rng(2).normal(size=(20, 2)))
