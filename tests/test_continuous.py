"""CNFDensity and FlowMatchingDensity as estimators.

scikit-learn's common checks and the shared batteries run over the registry's
fast configurations (tests/test_estimator_checks.py, tests/test_density.py);
here: statistical checks against known densities: a Gaussian (true log-density in
closed form) and two moons against a one-component Gaussian mixture.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.datasets import make_moons
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture

from skflow import CNFDensity, FlowMatchingDensity
from tests.helpers import RecordLearningRates
from tests.registry import FAST_ESTIMATORS

CONTINUOUS = [est for est in FAST_ESTIMATORS if isinstance(est, (CNFDensity, FlowMatchingDensity))]


def test_registry_holds_both_families() -> None:
    assert {type(est) for est in CONTINUOUS} == {CNFDensity, FlowMatchingDensity}


# Tiny fixed-step configurations; a test overrides what it is about.
_FAST_CONTINUOUS = {
    "hidden_dims": (16,),
    "solver": "rk4",
    "n_steps": 4,
    "max_epochs": 2,
    "batch_size": 64,
    "random_state": 0,
}


def fast_cnf(**params):
    return CNFDensity(**{**_FAST_CONTINUOUS, **params})


def fast_flow_matching(**params):
    return FlowMatchingDensity(**{**_FAST_CONTINUOUS, **params})


@pytest.fixture(scope="module")
def moons() -> tuple[np.ndarray, np.ndarray]:
    train, _ = make_moons(1000, noise=0.08, random_state=0)
    test, _ = make_moons(1000, noise=0.08, random_state=1)
    return train, test


def test_cnf_fitted_to_a_gaussian_approaches_its_log_density() -> None:
    rng = np.random.default_rng(0)
    covariance = np.array([[2.0, 1.2], [1.2, 1.5]])  # correlated: the flow must learn a shear
    mean = np.array([1.0, -2.0])
    train = rng.multivariate_normal(mean, covariance, size=400)
    test = rng.multivariate_normal(mean, covariance, size=500)
    truth = multivariate_normal(mean, covariance).logpdf(test)
    settings = {"trace_estimator": "exact", "kinetic_weight": 0.0, "jacobian_weight": 0.0, "validation_fraction": None}
    untrained = fast_cnf(max_epochs=1, lr=1e-6, **settings).fit(train)
    fitted = fast_cnf(max_epochs=40, lr=2e-2, batch_size=400, patience=None, **settings).fit(train)
    error_untrained = np.mean(np.abs(untrained.score_samples(test) - truth))
    error_fitted = np.mean(np.abs(fitted.score_samples(test) - truth))
    assert error_fitted < 0.15
    assert error_fitted < error_untrained / 2
    assert fitted.score(test) == pytest.approx(truth.mean(), abs=0.05)


def test_flow_matching_beats_a_gaussian_on_moons(moons) -> None:
    train, test = moons
    flow = fast_flow_matching(
        hidden_dims=(64, 64),
        activation="silu",
        n_steps=8,
        max_epochs=60,
        batch_size=100,
        lr=5e-3,
        validation_fraction=None,
        patience=None,
    ).fit(train)
    gaussian = GaussianMixture(1, random_state=0).fit(train)
    assert flow.score(test) > gaussian.score(test) + 0.3
    samples = flow.sample(2000, random_state=0)
    assert np.allclose(samples.mean(0), train.mean(0), atol=0.1)
    assert np.allclose(samples.std(0), train.std(0), rtol=0.15)
    assert np.allclose(np.corrcoef(samples.T)[0, 1], np.corrcoef(train.T)[0, 1], atol=0.1)


@pytest.mark.parametrize("factory", [fast_cnf, fast_flow_matching])
def test_pickle_determinism_and_round_trip(factory, moons) -> None:
    train, test = moons[0][:300], moons[1][:50]
    first, second = factory().fit(train), factory().fit(train)
    scores = first.score_samples(test)
    assert np.all(np.isfinite(scores))
    assert np.array_equal(scores, second.score_samples(test))
    restored = pickle.loads(pickle.dumps(first))
    assert np.array_equal(scores, restored.score_samples(test))
    assert np.array_equal(first.sample(5, random_state=3), restored.sample(5, random_state=3))
    codes = first.transform(test)
    assert codes.shape == (50, 2)
    assert np.allclose(first.inverse_transform(codes), test, atol=1e-4)


def test_nfe_reports_the_last_solve(moons) -> None:
    flow = fast_cnf(n_steps=3)
    with pytest.raises(NotFittedError):
        _ = flow.nfe_
    flow.fit(moons[0][:200])
    flow.score_samples(moons[1][:10])
    assert flow.nfe_ == 12
    adaptive = fast_cnf(solver="dopri5", rtol=1e-3, atol=1e-3).fit(moons[0][:200])
    adaptive.score_samples(moons[1][:10])
    loose = adaptive.nfe_
    adaptive.set_params(rtol=1e-7, atol=1e-7)  # takes effect at the next fit only
    assert adaptive.model_.solver.rtol == 1e-3
    assert loose > 0


def test_rnode_training_runs_with_adjoint_and_flow_matching_validates_cheaply(moons) -> None:
    train = moons[0][:200]
    flow = fast_cnf(adjoint=True, kinetic_weight=0.1, jacobian_weight=0.1, trace_estimator="gaussian").fit(train)
    assert all(np.isfinite(row["train_loss"]) for row in flow.history_)
    matching = fast_flow_matching(n_steps=6, validation_n_steps=2).fit(train)
    # RK4 evaluates the field 4 times per step: validation solves in 2 steps,
    # every density reported after fit in n_steps=6.
    parameter = next(matching.model_.parameters())
    with torch.no_grad():
        matching.model_.validation_log_prob(torch.zeros(3, 2, dtype=parameter.dtype, device=parameter.device))
    assert matching.nfe_ == 8
    matching.score_samples(moons[1][:5])
    assert matching.nfe_ == 24


def test_augmented_cnf(moons) -> None:
    train, test = moons[0][:300], moons[1][:20]
    flow = fast_cnf(n_augment=2, n_importance_samples=8).fit(train)
    scores = flow.score_samples(test)
    assert scores.shape == (20,) and np.all(np.isfinite(scores))
    assert np.array_equal(scores[5:], flow.score_samples(test[5:]))  # draws shared by all rows
    codes = flow.transform(test)
    assert codes.shape == (20, 4)
    assert flow.get_feature_names_out().shape == (4,)
    assert np.allclose(flow.inverse_transform(codes), test, atol=1e-4)
    assert flow.sample(7, random_state=0).shape == (7, 2)


def test_bad_parameters_raise(moons) -> None:
    with pytest.raises(ValueError, match="smooth"):
        fast_cnf(activation="relu").fit(moons[0][:50])
    with pytest.raises(ValueError, match="solver"):
        fast_flow_matching(solver="euler").fit(moons[0][:50])
    with pytest.raises(ValueError, match="sigma_min"):
        fast_flow_matching(sigma_min=1.5).fit(moons[0][:50])
    with pytest.raises(ValueError, match="hidden_dims"):
        fast_flow_matching(hidden_dims="wide").fit(moons[0][:50])
    with pytest.raises(ValueError, match="lr_schedule"):
        fast_flow_matching(lr_schedule="linear").fit(moons[0][:50])
    with pytest.raises(ValueError):
        fast_cnf().fit(np.array([[0.0, np.inf], [1.0, 2.0], [0.5, 0.1]]))


@pytest.mark.parametrize("family", [CNFDensity, FlowMatchingDensity])
def test_default_solver_scores_do_not_depend_on_the_batch(family) -> None:
    # The solver settings stay the defaults (adaptive dopri5, its tolerances,
    # exact trace); only the training budget is cut to keep the test fast.
    from sklearn.utils.estimator_checks import check_methods_subset_invariance

    estimator = family(hidden_dims=(16,), max_epochs=3, random_state=0)
    assert estimator.solver == "dopri5"
    check_methods_subset_invariance(family.__name__, estimator)
    fitted = family(hidden_dims=(16,), max_epochs=3, random_state=0).fit(make_moons(200, random_state=0)[0])
    rows = make_moons(40, noise=0.1, random_state=1)[0] * 1.5
    together = fitted.score_samples(rows)
    one_by_one = np.array([fitted.score_samples(row[None])[0] for row in rows])
    assert np.allclose(together, one_by_one, rtol=0, atol=1e-9)


def test_flow_matching_auto_width_scales_with_the_features() -> None:
    estimator = FlowMatchingDensity()
    assert estimator.hidden_dims == "auto" and estimator.lr_schedule == "constant"
    for n_features, width in ((2, 128), (16, 128), (20, 160), (64, 512)):
        layers = estimator.build_model(n_features).dynamics.field.layers
        assert [layer.out_features for layer in layers] == [width, width, n_features]
    explicit = FlowMatchingDensity(hidden_dims=[32]).build_model(64).dynamics.field.layers
    assert [layer.out_features for layer in explicit] == [32, 64]


def test_flow_matching_fit_decays_the_learning_rate(moons) -> None:
    for schedule, lr in (("cosine", 0.01), ("constant", 0.02)):
        recorder = RecordLearningRates()
        fast_flow_matching(max_epochs=4, lr=lr, lr_schedule=schedule, callbacks=[recorder]).fit(moons[0][:200])
        factors = [(1 + np.cos(np.pi * epoch / 4)) / 2 if schedule == "cosine" else 1.0 for epoch in range(4)]
        np.testing.assert_allclose(recorder.rates, lr * np.array(factors), rtol=1e-12)
