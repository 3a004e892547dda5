"""FlowRegressor and FlowClassifier against independent ground truth.

Densities are checked by numerical integration over a grid of targets,
point predictions and quantiles against integrals of the model's own density
(a different code path: sampling versus change of variables), Bayes' rule by
recomputing it from the per-class likelihoods, and a known heteroscedastic
Gaussian by its closed-form conditional log-likelihood.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import expit, logsumexp
from scipy.stats import norm
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import skflow
from skflow import (
    CNFDensity,
    FlowClassifier,
    FlowMatchingDensity,
    FlowRegressor,
    GlowDensity,
    IAFDensity,
    InjectiveFlowEstimator,
    MAFDensity,
    NeuralSplineDensity,
    NICEDensity,
    PlanarFlowDensity,
    RealNVPDensity,
)

FAST = {"max_epochs": 3, "batch_size": 64, "random_state": 0}
# One fast configuration per family that can be conditioned.
CONDITIONAL_FAMILIES = {
    "realnvp": RealNVPDensity(n_layers=2, hidden_dims=(16,), n_base_components=2, **FAST),
    "nice": NICEDensity(n_layers=2, hidden_dims=(16,), **FAST),
    "glow": GlowDensity(n_steps=2, hidden_dims=(16,), **FAST),
    "maf": MAFDensity(n_layers=2, hidden_dims=(16,), **FAST),
    "iaf": IAFDensity(n_layers=2, hidden_dims=(16,), **FAST),
    "spline_coupling": NeuralSplineDensity(n_layers=2, n_bins=4, hidden_dims=(16,), **FAST),
    "spline_autoregressive": NeuralSplineDensity(
        variant="autoregressive", n_layers=2, n_bins=4, hidden_dims=(16,), **FAST
    ),
    "planar": PlanarFlowDensity(n_layers=3, orientation="generative", **FAST),
    "cnf": CNFDensity(hidden_dims=(8,), solver="rk4", n_steps=8, trace_estimator="exact", **FAST),
    "flow_matching": FlowMatchingDensity(hidden_dims=(8,), solver="rk4", n_steps=8, validation_n_steps=2, **FAST),
}


def heteroscedastic(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """y | x ~ N(2 + sin(2 x0) + 0.5 x1, (0.2 + 0.3 |x0|)^2), in non-standard units; returns X, y, mean, sd."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, size=(n, 2))
    mean = 2 + np.sin(2 * X[:, 0]) + 0.5 * X[:, 1]
    sd = 0.2 + 0.3 * np.abs(X[:, 0])
    return X, mean + sd * rng.normal(size=n), mean, sd


def _integral_over_y(regressor: FlowRegressor, x: np.ndarray, grid: np.ndarray) -> float:
    density = np.exp(regressor.score_samples(np.repeat(x[None], len(grid), axis=0), grid))
    return float(np.trapezoid(density, grid))


@pytest.mark.parametrize("name", list(CONDITIONAL_FAMILIES))
def test_conditional_density_integrates_to_one_for_every_family(name):
    X, y, _, _ = heteroscedastic(200)
    regressor = FlowRegressor(flow=CONDITIONAL_FAMILIES[name], n_predict_samples=50).fit(X, 10 * y)
    grid = np.linspace(10 * y.min() - 60, 10 * y.max() + 60, 4001)
    for x in X[:2]:
        assert _integral_over_y(regressor, x, grid) == pytest.approx(1.0, abs=2e-2)
    # The density depends on x (the context reaches the model).
    scores = regressor.score_samples(X[:2], 10 * y[:2])
    swapped = regressor.score_samples(X[1::-1], 10 * y[:2])
    assert not np.allclose(scores, swapped)


def test_learns_a_heteroscedastic_gaussian():
    X, y, _, sd = heteroscedastic(1500)
    X_test, y_test, mean_test, sd_test = heteroscedastic(500, seed=1)
    flow = RealNVPDensity(n_layers=4, hidden_dims=(64, 64), max_epochs=150, patience=20, random_state=0)
    regressor = FlowRegressor(flow=flow, n_predict_samples=400).fit(X, y)
    truth = norm.logpdf(y_test, mean_test, sd_test).mean()
    homoscedastic = norm.logpdf(y_test, mean_test, np.sqrt(np.mean(sd**2))).mean()
    score = regressor.score(X_test, y_test)
    # Within 0.1 nats of the true conditional law, and better than knowing
    # the mean exactly with a constant spread (heteroscedasticity learned).
    assert score > truth - 0.1
    assert score > homoscedastic
    # 90% intervals cover about 90% of held-out targets (+-4 binomial sd).
    interval = regressor.predict_interval(X_test, alpha=0.1)
    coverage = np.mean((interval[:, 0] <= y_test) & (y_test <= interval[:, 1]))
    assert abs(coverage - 0.9) < 4 * np.sqrt(0.09 / 500)
    error = regressor.predict(X_test) - mean_test
    print("conditional mean RMSE", np.sqrt(np.mean(error**2)), "noise sd", np.sqrt(np.mean(sd_test**2)))
    assert np.sqrt(np.mean(error**2)) < 0.25  # the noise alone has sd ~0.6


def test_predictions_agree_with_the_density():
    # Sampling (inverse pass) against the density (forward pass): the mean and
    # quantiles from draws equal integrals of exp(score_samples) over y.
    X, y, _, _ = heteroscedastic(300)
    flow = NeuralSplineDensity(n_layers=2, n_bins=6, hidden_dims=(32,), max_epochs=20, random_state=0)
    regressor = FlowRegressor(flow=flow, n_predict_samples=4000).fit(X, y)
    grid = np.linspace(y.min() - 6, y.max() + 6, 6001)
    x = X[:3]
    predicted_mean = regressor.predict(x)
    quantiles = regressor.predict_quantiles(x, [0.1, 0.5, 0.9])
    for row in range(3):
        density = np.exp(regressor.score_samples(np.repeat(x[row][None], len(grid), axis=0), grid))
        mass = np.trapezoid(density, grid)
        mean = np.trapezoid(grid * density, grid) / mass
        sd = np.sqrt(np.trapezoid((grid - mean) ** 2 * density, grid) / mass)
        assert predicted_mean[row] == pytest.approx(mean, abs=5 * sd / np.sqrt(4000))
        cdf = np.cumsum(density) * (grid[1] - grid[0]) / mass
        for level, value in zip([0.1, 0.5, 0.9], quantiles[row], strict=True):
            assert np.interp(value, grid, cdf) == pytest.approx(level, abs=0.025)


def test_shapes_single_and_multi_output():
    X, y, _, _ = heteroscedastic(120)
    flow = RealNVPDensity(n_layers=2, hidden_dims=(8,), max_epochs=2, random_state=0)
    single = FlowRegressor(flow=flow, n_predict_samples=20).fit(X, y)
    assert single.predict(X[:4]).shape == (4,)
    assert single.sample_y(X[:4], 3).shape == (4, 3)
    assert single.predict_quantiles(X[:4], [0.2, 0.8]).shape == (4, 2)
    assert single.predict_interval(X[:4]).shape == (4, 2)
    Y = np.column_stack([y, y**2, -y])
    multi = FlowRegressor(flow=flow, n_predict_samples=20, context_embedding=(16, 4)).fit(X, Y)
    assert multi.predict(X[:4]).shape == (4, 3)
    assert multi.sample_y(X[:4], 5).shape == (4, 3, 5)
    assert multi.predict_quantiles(X[:4], [0.2, 0.8]).shape == (4, 3, 2)
    assert multi.predict_interval(X[:4]).shape == (4, 3, 2)
    assert multi.model_.embedding is not None
    np.testing.assert_array_equal(multi.sample_y(X[:2], 4, random_state=3), multi.sample_y(X[:2], 4, random_state=3))
    with pytest.raises(ValueError, match="target column"):
        multi.score_samples(X[:4], y[:4])
    with pytest.raises(ValueError, match="alpha"):
        single.predict_interval(X[:2], alpha=1.5)
    with pytest.raises(ValueError, match="quantiles"):
        single.predict_quantiles(X[:2], [1.2])


def test_predictions_do_not_depend_on_other_rows():
    X, y, _, _ = heteroscedastic(120)
    flow = RealNVPDensity(n_layers=2, hidden_dims=(8,), max_epochs=2, random_state=0)
    regressor = FlowRegressor(flow=flow, n_predict_samples=30).fit(X, y)
    order = np.random.default_rng(0).permutation(40)
    for method in (regressor.predict, regressor.predict_interval):
        full = method(X[:40])
        np.testing.assert_array_equal(method(X[:40][order]), full[order])
        np.testing.assert_array_equal(method(X[5:9]), full[5:9])
    np.testing.assert_array_equal(regressor.score_samples(X[order], y[order]), regressor.score_samples(X, y)[order])


def test_every_registered_family_is_conditioned_here_or_refused():
    """Families come from skflow.registry: each either takes a context (and is tested above) or is refused."""
    import inspect

    from skflow.registry import FAMILIES

    tested = {type(flow) for flow in CONDITIONAL_FAMILIES.values()}
    for family in FAMILIES.values():
        if "n_context" in inspect.signature(family.build_model).parameters:
            assert family in tested, f"{family.__name__} takes a context: add it to CONDITIONAL_FAMILIES"
        else:
            with pytest.raises(ValueError, match="cannot be conditioned"):
                FlowRegressor(flow=family())._flow_template(100)


def test_families_without_context_are_refused():
    X, y, _, _ = heteroscedastic(60)
    with pytest.raises(ValueError, match="cannot be conditioned"):
        FlowRegressor(flow=InjectiveFlowEstimator(n_components=1, max_epochs=1)).fit(X, y)


def test_categoricals_through_a_column_transformer():
    rng = np.random.default_rng(0)
    colour = rng.choice(["red", "green", "blue"], size=600)
    size = rng.normal(size=600)
    shift = pd.Series(colour).map({"red": -3.0, "green": 0.0, "blue": 3.0}).to_numpy()
    y = shift + 0.5 * size + 0.3 * rng.normal(size=600)
    frame = pd.DataFrame({"colour": colour, "size": size})
    encode = ColumnTransformer([("colour", OneHotEncoder(), ["colour"]), ("size", StandardScaler(), ["size"])])
    flow = RealNVPDensity(n_layers=2, hidden_dims=(32,), max_epochs=60, random_state=0)
    model = make_pipeline(encode, FlowRegressor(flow=flow, n_predict_samples=200)).fit(frame, y)
    predicted = model.predict(pd.DataFrame({"colour": ["red", "green", "blue"], "size": [0.0, 0.0, 0.0]}))
    np.testing.assert_allclose(predicted, [-3.0, 0.0, 3.0], atol=0.4)
    # y's marginal spread (~2.5) gives about -2.4 nats; the true conditional
    # law about -0.2 (noise sd 0.3, in expectation). 60 epochs, kept short for
    # the suite, reach within about half a nat of it.
    truth = norm.logpdf(y - shift - 0.5 * size, scale=0.3).mean()
    assert model.score(frame, y) > truth - 0.6


def test_grid_search_selects_by_likelihood_and_r2_is_a_scoring_option():
    X, y, _, _ = heteroscedastic(200)
    flow = RealNVPDensity(n_layers=1, hidden_dims=(8,), max_epochs=3, random_state=0)
    search = GridSearchCV(FlowRegressor(flow=flow, n_predict_samples=20), {"flow__lr": [1e-4, 1e-2]}, cv=2).fit(X, y)
    best = search.best_estimator_
    assert search.best_score_ == pytest.approx(max(search.cv_results_["mean_test_score"]))
    assert np.isfinite(best.score(X, y))
    r2 = GridSearchCV(FlowRegressor(flow=flow, n_predict_samples=20), {"flow__lr": [1e-2]}, cv=2, scoring="r2").fit(
        X, y
    )
    assert r2.best_score_ < 1.0


def test_zero_weights_equal_dropping_rows_in_the_regressor():
    X, y, _, _ = heteroscedastic(150)
    weights = np.where(np.arange(150) < 30, 0.0, 1.0)
    flow = RealNVPDensity(n_layers=1, hidden_dims=(8,), max_epochs=3, random_state=0)
    zeroed = FlowRegressor(flow=flow).fit(X, y, sample_weight=weights)
    dropped = FlowRegressor(flow=flow).fit(X[30:], y[30:], sample_weight=weights[30:])
    np.testing.assert_array_equal(zeroed.score_samples(X, y), dropped.score_samples(X, y))


def test_location_scale_step_is_a_heteroscedastic_gaussian_change_of_variables():
    # With the family's layers at their identity start and a standard normal
    # base, log p(y | c) must be the closed-form N(y; m(c), s(c)^2) of the
    # step's shift and log-scale, and decode must invert encode.
    from skflow.flows.conditional import ConditionalFlow
    from skflow.nn import MLP

    torch.manual_seed(0)
    # No ActNorm: its data-dependent initialisation is not an identity start.
    family = NeuralSplineDensity(n_layers=2, n_bins=4, hidden_dims=(8,), actnorm=False).build_model(2, n_context=3)
    step = MLP(3, 4, (8,), "tanh", zero_init_last=True)
    model = ConditionalFlow(family, 2, 3, location_scale=step).double()
    rows = torch.randn(50, 5, dtype=torch.float64)
    with torch.no_grad():
        # Zero last layer: the step starts as the identity, the model as N(0, I).
        np.testing.assert_allclose(
            model.log_prob(rows).numpy(), norm.logpdf(rows[:, :2].numpy()).sum(axis=1), rtol=1e-12
        )
        torch.nn.init.normal_(step[-1].weight)
        torch.nn.init.normal_(step[-1].bias)
        shift, log_scale = step(rows[:, 2:]).split(2, dim=1)
        expected = norm.logpdf(rows[:, :2].numpy(), shift.numpy(), np.exp(log_scale.numpy())).sum(axis=1)
        np.testing.assert_allclose(model.log_prob(rows).numpy(), expected, rtol=1e-10)
        latent = model.encode(rows)
        np.testing.assert_allclose(model.decode(latent, rows[:, 2:]).numpy(), rows[:, :2].numpy(), atol=1e-10)
        # Draws given one context follow N(m, s^2): mean and sd within 5 standard errors.
        context = rows[:1, 2:].repeat(20000, 1)
        draws = model.sample_given(context, torch.Generator().manual_seed(0)).numpy()
        sd = np.exp(log_scale[0].numpy())
        assert np.all(np.abs(draws.mean(axis=0) - shift[0].numpy()) < 5 * sd / np.sqrt(20000))
        assert np.all(np.abs(draws.std(axis=0) / sd - 1) < 5 / np.sqrt(2 * 20000))


def test_location_scale_is_used_where_the_loss_is_a_likelihood():
    X, y, _, _ = heteroscedastic(60)
    spline = FlowRegressor(flow=CONDITIONAL_FAMILIES["spline_coupling"]).fit(X, y)
    assert spline.model_.location_scale is not None
    plain = FlowRegressor(flow=CONDITIONAL_FAMILIES["spline_coupling"], location_scale=False).fit(X, y)
    assert plain.model_.location_scale is None
    # Flow matching trains on a regression surrogate, to which the step's
    # log-det cannot be added: "auto" leaves it out, True is refused.
    matching = FlowRegressor(flow=CONDITIONAL_FAMILIES["flow_matching"]).fit(X, y)
    assert matching.model_.location_scale is None
    with pytest.raises(ValueError, match="maximum likelihood"):
        FlowRegressor(flow=CONDITIONAL_FAMILIES["flow_matching"], location_scale=True).fit(X, y)


@pytest.mark.parametrize("estimator", ["regressor", "classifier"])
def test_a_float64_flow_trains_and_scores_in_float64(estimator):
    # Targets 1e-9 standard deviations apart are one float32 number but two
    # float64 ones: a float64 model fed float64 rows scores them differently,
    # by the slope of the log-density (a central difference at a wide step)
    # times the offset.
    X, y, _, _ = heteroscedastic(120)
    flow = RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=3, random_state=0, dtype="float64")
    if estimator == "regressor":
        model = FlowRegressor(flow=flow, n_predict_samples=20).fit(X, y)
        scale = model.target_scale_[0]

        def score(offset: float) -> np.ndarray:
            return model.score_samples(X[:5], y[:5] + offset * scale)

        assert model.sample_y(X[:2], 3).dtype == np.float64
    else:
        model = FlowClassifier(flow=flow, strategy="conditional").fit(X, (y > np.median(y)).astype(int))
        scale = model.target_scale_[0]

        def score(offset: float) -> np.ndarray:
            shifted = X[:5].copy()
            shifted[:, 0] += offset * scale
            return model.class_log_likelihood(shifted)[:, 0]

    tensors = [*model.model_.parameters(), *model.model_.buffers()]
    assert all(tensor.dtype == torch.float64 for tensor in tensors if tensor.is_floating_point())
    step, wide = 1e-9, 1e-4
    slope = (score(wide) - score(-wide)) / (2 * wide)
    assert np.all(np.abs(slope) > 1e-3)
    np.testing.assert_allclose((score(step) - score(0.0)) / step, slope, rtol=1e-2)


# ---------------------------------------------------------------------- #
# Classifier
# ---------------------------------------------------------------------- #
def _blobs(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice([0, 1, 2], size=n, p=[0.5, 0.3, 0.2])
    centres = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    return centres[y] + rng.normal(size=(n, 2)) * [0.6, 0.9], np.array(["a", "b", "c"])[y]


@pytest.mark.parametrize("strategy", ["per_class", "conditional"])
def test_classifier_is_bayes_rule_over_its_class_densities(strategy):
    X, y = _blobs()
    flow = RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=40, random_state=0)
    classifier = FlowClassifier(flow=flow, strategy=strategy).fit(X, y)
    np.testing.assert_allclose(classifier.class_prior_, [np.mean(y == k) for k in "abc"])
    log_likelihood = classifier.class_log_likelihood(X[:20])
    # Posterior: likelihoods tempered by the fitted T; log p(x): untempered.
    tempered = log_likelihood / classifier.temperature_ + np.log(classifier.class_prior_)
    np.testing.assert_allclose(
        classifier.predict_proba(X[:20]), np.exp(tempered - logsumexp(tempered, axis=1)[:, None])
    )
    joint = log_likelihood + np.log(classifier.class_prior_)
    np.testing.assert_allclose(classifier.score_samples(X[:20]), logsumexp(joint, axis=1))
    assert classifier.score(X, y) > 0.9
    # Each class density is normalised: integrate over a 2-D grid.
    axis = np.linspace(-9, 9, 241)
    grid = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    cell = (axis[1] - axis[0]) ** 2
    masses = np.exp(classifier.class_log_likelihood(grid)).sum(axis=0) * cell
    np.testing.assert_allclose(masses, 1.0, atol=0.03)
    # A point far from every class has a lower mixture density than any training row.
    assert classifier.score_samples([[12.0, -12.0]])[0] < classifier.score_samples(X).min()


@pytest.mark.parametrize("strategy", ["per_class", "conditional"])
def test_temperature_minimises_the_log_loss_of_rows_no_flow_trained_on(strategy):
    X, y = _blobs(240)
    flow = RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=15, random_state=0, validation_fraction=0.25)
    classifier = FlowClassifier(flow=flow, strategy=strategy).fit(X, y)
    plain = FlowClassifier(flow=flow, strategy=strategy, calibration=None).fit(X, y)
    assert plain.temperature_ == 1.0
    # Same flows either way: calibration only changes the posterior.
    np.testing.assert_array_equal(classifier.class_log_likelihood(X), plain.class_log_likelihood(X))
    # The held-out rows: each class's (or the shared flow's) validation split.
    codes = np.searchsorted(classifier.classes_, y)
    if strategy == "per_class":
        held = np.concatenate(
            [np.flatnonzero(codes == k)[e._validation_index] for k, e in enumerate(classifier.estimators_)]
        )
    else:
        held = classifier._validation_index
    assert classifier.n_calibration_rows_ == len(held) > 0.2 * len(X)
    # Brute force over a fine grid of T: the fitted T is the grid's best to
    # within the grid's resolution (the loss is flat near its minimum).
    log_likelihood = classifier.class_log_likelihood(X[held])
    grid = np.exp(np.linspace(0, 7, 2801))  # the documented range, 1 <= T <= e^7

    def held_out_log_loss(temperature: float) -> float:
        joint = log_likelihood / temperature + np.log(classifier.class_prior_)
        return -np.mean((joint - logsumexp(joint, axis=1, keepdims=True))[np.arange(len(held)), codes[held]])

    losses = np.array([held_out_log_loss(t) for t in grid])
    assert held_out_log_loss(classifier.temperature_) <= losses.min() + 1e-6
    assert held_out_log_loss(classifier.temperature_) <= held_out_log_loss(1.0)


def test_default_classifier_flow_is_the_documented_one_and_learns():
    X, y = _blobs(300)
    classifier = FlowClassifier().fit(X, y)
    documented = {
        "n_layers": 4,
        "hidden_dims": (64, 64),
        "max_epochs": 60,
        "patience": 15,
        "weight_decay": 1e-4,
        "noise_std": 0.1,
    }
    assert classifier.strategy == "ensemble"
    assert [member.strategy for member in classifier.members_] == ["per_class", "conditional"]
    for member in classifier.members_:
        assert isinstance(member.flow_, RealNVPDensity)
        assert {key: member.flow_.get_params()[key] for key in documented} == documented
        assert member.flow_.init == "identity"
    assert classifier.score(X, y) > 0.9
    assert classifier.temperature_.shape == (2,) and np.all(classifier.temperature_ >= 1.0)


def test_separable_held_out_rows_do_not_sharpen_the_posterior():
    # Classes 6 sd apart: every held-out row is classified right, by 6 nats
    # or more, so their log-loss keeps falling as T -> 0. T stays at 1, the
    # flows' own posterior, instead of sharpening every probability to 0 or 1.
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 150)
    X = np.c_[np.where(y == 0, -3.0, 3.0), np.zeros(300)] + rng.normal(size=(300, 2))
    flow = RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=15, random_state=0, validation_fraction=0.2)
    classifier = FlowClassifier(flow=flow, strategy="per_class").fit(X, y)
    held = np.concatenate([np.flatnonzero(y == k)[e._validation_index] for k, e in enumerate(classifier.estimators_)])
    log_ratio = np.diff(classifier.class_log_likelihood(X[held]), axis=1).ravel()
    assert np.all(np.sign(log_ratio) == np.where(y[held] == 1, 1, -1)), "the test needs separable held-out rows"
    assert classifier.temperature_ == 1.0
    plain = FlowClassifier(flow=flow, strategy="per_class", calibration=None).fit(X, y)
    np.testing.assert_allclose(classifier.predict_proba(X), plain.predict_proba(X))


def test_the_engine_reports_the_rows_it_validated_on():
    # The reported held-out rows are those behind the recorded validation
    # loss: their mean NLL under the restored (best-epoch) model equals it.
    X, _ = _blobs(200)
    estimator = RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=5, random_state=0, dtype="float64")
    estimator.fit(X)
    held = estimator._validation_index
    assert len(held) == 20 and len(np.unique(held)) == 20
    best = estimator.history_[estimator.best_epoch_ - 1]["valid_loss"]
    assert -estimator.score_samples(X[held]).mean() - np.log(estimator.scale_).sum() == pytest.approx(best, rel=1e-9)
    others = np.setdiff1d(np.arange(200), held)[:20]
    assert -estimator.score_samples(X[others]).mean() - np.log(estimator.scale_).sum() != pytest.approx(best, rel=1e-3)


def test_classifier_priors_and_weights():
    X, y = _blobs()
    flow = RealNVPDensity(n_layers=1, hidden_dims=(8,), max_epochs=3, random_state=0)
    uniform = FlowClassifier(flow=flow, priors=[1 / 3, 1 / 3, 1 / 3]).fit(X, y)
    np.testing.assert_allclose(uniform.class_prior_, 1 / 3)
    weights = np.where(y == "a", 2.0, 1.0)
    weighted = FlowClassifier(flow=flow).fit(X, y, sample_weight=weights)
    mass = np.array([weights[y == k].sum() for k in "abc"])
    np.testing.assert_allclose(weighted.class_prior_, mass / mass.sum())
    with pytest.raises(ValueError, match="priors"):
        FlowClassifier(flow=flow, priors=[0.5, 0.5]).fit(X, y)


def _two_gaussians(n_per_class: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit-variance Gaussians centred at (-1, 0) and (1, 0): ``P(1 | x) = sigmoid(2 x0)`` with equal priors."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n_per_class)
    return rng.normal(size=(len(y), 2)) + np.c_[np.where(y == 0, -1.0, 1.0), np.zeros(len(y))], y


def test_ensemble_averages_its_members_posteriors_and_mixes_their_densities():
    X, y = _blobs()
    flow = RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=20, random_state=0)
    ensemble = FlowClassifier(flow=flow).fit(X, y)
    # Each member is the classifier of its strategy fitted alone: same rows,
    # same seeds, same held-out rows and so the same T.
    alone = [FlowClassifier(flow=flow, strategy=s).fit(X, y) for s in ("per_class", "conditional")]
    np.testing.assert_array_equal(ensemble.temperature_, [model.temperature_ for model in alone])
    np.testing.assert_array_equal(ensemble.n_calibration_rows_, [model.n_calibration_rows_ for model in alone])
    rows = X[:30]
    probabilities = [model.predict_proba(rows) for model in alone]
    assert np.abs(probabilities[0] - probabilities[1]).max() > 1e-3, "the members must differ for the test to bite"
    np.testing.assert_allclose(ensemble.predict_proba(rows), (probabilities[0] + probabilities[1]) / 2, rtol=1e-10)
    np.testing.assert_allclose(ensemble.predict_proba(rows).sum(axis=1), 1.0)
    np.testing.assert_array_equal(ensemble.predict(rows), ensemble.classes_[ensemble.predict_proba(rows).argmax(1)])
    # Densities: the equal mixture of the two models' class densities, still
    # normalised (integrated over a grid) and still the class mixture's log p(x).
    densities = [np.exp(model.class_log_likelihood(rows)) for model in alone]
    np.testing.assert_allclose(
        np.exp(ensemble.class_log_likelihood(rows)), (densities[0] + densities[1]) / 2, rtol=1e-10
    )
    joint = ensemble.class_log_likelihood(rows) + np.log(ensemble.class_prior_)
    np.testing.assert_allclose(ensemble.score_samples(rows), logsumexp(joint, axis=1), rtol=1e-12)
    axis = np.linspace(-9, 9, 241)
    grid = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    masses = np.exp(ensemble.class_log_likelihood(grid)).sum(axis=0) * (axis[1] - axis[0]) ** 2
    np.testing.assert_allclose(masses, 1.0, atol=0.03)
    # Deterministic with the flow's random_state.
    again = FlowClassifier(flow=flow).fit(X, y)
    np.testing.assert_array_equal(again.predict_proba(rows), ensemble.predict_proba(rows))


def test_ensemble_posterior_matches_the_closed_form_bayes_posterior():
    X, y = _two_gaussians()
    flow = RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=40, random_state=0)
    classifier = FlowClassifier(flow=flow).fit(X, y)
    rng = np.random.default_rng(1)
    rows = np.c_[np.linspace(-2.5, 2.5, 51), rng.normal(size=51)]
    error = np.abs(classifier.predict_proba(rows)[:, 1] - expit(2 * rows[:, 0]))
    # Measured: mean 0.020, max 0.055. A posterior with the log-odds halved
    # or doubled is off by 0.11 and 0.07 on average, the priors alone by 0.37.
    assert error.mean() < 0.04 and error.max() < 0.1


def test_ensemble_integer_weights_match_repeated_rows():
    # Full-batch training without noise (see tests/test_sample_weight.py):
    # the weighted fit equals the fit of the repeated rows up to float32
    # summation order. The held-out rows are the same too (copies of a row
    # are held out together), so are both members' T.
    X, y = _two_gaussians(80)
    weights = np.where(X[:, 1] > 0.3, 3, 1)
    flow = RealNVPDensity(
        n_layers=2,
        hidden_dims=(16,),
        actnorm=False,
        init="identity",
        max_epochs=30,
        batch_size=100_000,
        validation_fraction=0.2,
        patience=None,
        noise_std=0.0,
        random_state=0,
    )
    weighted = FlowClassifier(flow=flow).fit(X, y, sample_weight=weights)
    repeated = FlowClassifier(flow=flow).fit(np.repeat(X, weights, axis=0), np.repeat(y, weights))
    unweighted = FlowClassifier(flow=flow).fit(X, y)
    np.testing.assert_allclose(weighted.class_prior_, repeated.class_prior_, rtol=1e-12)
    np.testing.assert_allclose(weighted.temperature_, repeated.temperature_, rtol=1e-3)
    rows = np.random.default_rng(2).normal(size=(200, 2)) * 1.5
    # Measured: 1.3e-6 nats and 1.7e-7 in probability; ignoring the weights
    # moves them by 6.5 nats and 0.26.
    np.testing.assert_allclose(weighted.class_log_likelihood(rows), repeated.class_log_likelihood(rows), atol=5e-3)
    np.testing.assert_allclose(weighted.predict_proba(rows), repeated.predict_proba(rows), atol=1e-3)
    assert np.abs(weighted.predict_proba(rows) - unweighted.predict_proba(rows)).max() > 0.05


@pytest.mark.parametrize("strategy", ["ensemble", "per_class", "conditional"])
def test_classifier_round_trips_through_pickle_and_model_files(strategy, tmp_path):
    X, y = _blobs(200)
    flow = RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=5, random_state=0)
    classifier = FlowClassifier(flow=flow, strategy=strategy).fit(X, y)
    expected = classifier.predict_proba(X[:20]), classifier.score_samples(X[:20])
    skflow.save(classifier, tmp_path / "classifier.skflow")
    for loaded in (pickle.loads(pickle.dumps(classifier)), skflow.load(tmp_path / "classifier.skflow")):
        np.testing.assert_array_equal(loaded.predict_proba(X[:20]), expected[0])
        np.testing.assert_array_equal(loaded.score_samples(X[:20]), expected[1])
        np.testing.assert_array_equal(loaded.predict(X[:20]), classifier.predict(X[:20]))
    unfitted = clone(classifier)
    assert unfitted.get_params()["strategy"] == strategy and not hasattr(unfitted, "classes_")


def test_regressor_round_trips_through_a_model_file(tmp_path):
    X, y, _, _ = heteroscedastic(200)
    flow = RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=5, random_state=0, dtype="float64")
    regressor = FlowRegressor(flow=flow, n_predict_samples=20).fit(X, y)
    skflow.save(regressor, tmp_path / "regressor.skflow")
    loaded = skflow.load(tmp_path / "regressor.skflow")
    np.testing.assert_array_equal(loaded.score_samples(X[:20], y[:20]), regressor.score_samples(X[:20], y[:20]))
    np.testing.assert_array_equal(loaded.predict(X[:5]), regressor.predict(X[:5]))


def test_ensemble_fitted_on_cuda_predicts_and_round_trips(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    X, y = _blobs(200)
    flow = RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=5, random_state=0, device="cuda")
    classifier = FlowClassifier(flow=flow).fit(X, y)
    shared = classifier.members_[1]
    assert shared.device_.type == "cuda" and next(shared.model_.parameters()).is_cuda
    assert all(estimator.device_.type == "cuda" for estimator in classifier.members_[0].estimators_)
    proba = classifier.predict_proba(X[:20])
    members = [member.predict_proba(X[:20]) for member in classifier.members_]
    np.testing.assert_allclose(proba, (members[0] + members[1]) / 2, rtol=1e-10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # Pickles hold CPU tensors (the shared flow's scores then come from the
    # CPU: float32 rounding apart); a model file loads where asked.
    np.testing.assert_allclose(pickle.loads(pickle.dumps(classifier)).predict_proba(X[:20]), proba, atol=1e-5)
    skflow.save(classifier, tmp_path / "cuda.skflow")
    on_cpu = skflow.load(tmp_path / "cuda.skflow", device="cpu")
    assert on_cpu.members_[1].device_.type == "cpu"
    np.testing.assert_allclose(on_cpu.predict_proba(X[:20]), proba, atol=1e-5)


def test_a_refit_forgets_the_previous_strategy_and_a_failed_one_changes_nothing():
    X, y = _blobs(200)
    flow = RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=5, random_state=0)
    classifier = FlowClassifier(flow=flow).fit(X, y)
    classifier.set_params(strategy="per_class").fit(X, y)
    assert not hasattr(classifier, "members_") and not hasattr(classifier, "model_")
    alone = FlowClassifier(flow=flow, strategy="per_class").fit(X, y)
    np.testing.assert_array_equal(classifier.predict_proba(X[:20]), alone.predict_proba(X[:20]))
    before = classifier.predict_proba(X[:20])
    with pytest.raises(ValueError, match="priors"):
        classifier.set_params(strategy="ensemble", priors=[0.5, 0.5]).fit(X, y)
    assert not hasattr(classifier, "members_")
    np.testing.assert_array_equal(classifier.predict_proba(X[:20]), before)


_NEEDS_Y = (
    "score_samples(X, y) is log p(y | x) and needs y; predict's order and subset invariance: "
    "test_predictions_do_not_depend_on_other_rows"
)
_STOCHASTIC = "mini-batch training: weights equal repeated rows in expectation only (tests/test_sample_weight.py)"


@parametrize_with_checks(
    [
        FlowRegressor(
            flow=RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=3, random_state=0), n_predict_samples=20
        ),
        FlowClassifier(flow=RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=3, random_state=0)),
        FlowClassifier(
            flow=RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=3, random_state=0), strategy="per_class"
        ),
        FlowClassifier(
            flow=RealNVPDensity(n_layers=2, hidden_dims=(16,), max_epochs=3, random_state=0), strategy="conditional"
        ),
    ],
    expected_failed_checks=lambda estimator: {
        "check_sample_weight_equivalence_on_dense_data": _STOCHASTIC,
        **(
            {"check_methods_sample_order_invariance": _NEEDS_Y, "check_methods_subset_invariance": _NEEDS_Y}
            if isinstance(estimator, FlowRegressor)
            else {}
        ),
        **(
            {
                "check_classifiers_train": (
                    "after the checks' 3 epochs the shared conditional flow has not separated the classes yet "
                    "(sklearn asks 83% training accuracy); test_classifier_is_bayes_rule_over_its_class_densities "
                    "checks it learns"
                )
            }
            if getattr(estimator, "strategy", None) == "conditional"
            else {}
        ),
    },
)
def test_sklearn_common_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("name", list(CONDITIONAL_FAMILIES))
def test_conditional_scores_stay_finite_and_decrease_far_out(name):
    # As for the unconditional estimators (tests/test_density.py): targets
    # beyond ~1e19 standard deviations overflow float32 and are rescored in
    # float64, so p(y | x) stays finite and keeps decreasing outwards.
    X, y, _, _ = heteroscedastic(200)
    regressor = FlowRegressor(flow=CONDITIONAL_FAMILIES[name]).fit(X, y)
    radii = 10.0 ** np.arange(0, 31, 2)
    targets = y.mean() + radii * y.std()
    scores = regressor.score_samples(np.repeat(X[:1], len(radii), axis=0), targets)
    assert np.isfinite(scores).all(), f"non-finite scores at radii {radii[~np.isfinite(scores)]}"
    assert np.all(np.diff(scores) < 0), f"scores do not decrease outwards: {scores}"
