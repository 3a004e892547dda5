"""Bad-input battery: malformed data, unfitted use, diverging training and
invalid hyperparameters, for every registered estimator.

Error messages are matched on scikit-learn's own wording, since skflow
validates through ``validate_data`` and ``_parameter_constraints``.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError

from skflow import TrainingDivergedError
from skflow.training import EXPLOSION_MARGIN_PER_FEATURE, gaussian_reference_loss
from tests.helpers import correlated_data, estimator_params, fitted_estimator, fresh_estimator

X_GOOD = correlated_data(60, seed=3)


def _with_nan() -> np.ndarray:
    X = X_GOOD.copy()
    X[5, 1] = np.nan
    return X


def _with_inf() -> np.ndarray:
    X = X_GOOD.copy()
    X[7, 0] = np.inf
    return X


BAD_DATA = {
    "nan": (_with_nan, "Input X contains NaN"),
    "inf": (_with_inf, "Input X contains infinity"),
    "empty": (lambda: np.empty((0, 3)), r"Found array with 0 sample\(s\)"),
    "one_dimensional": (lambda: X_GOOD[:, 0], "Expected 2D array, got 1D array instead"),
    "strings": (lambda: X_GOOD.astype(str), "dtype='numeric' is not compatible with arrays of bytes/strings"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
@pytest.mark.parametrize("index", estimator_params("skflow_bad_input"))
def test_fit_rejects_bad_data(index: int, case: str) -> None:
    make, message = BAD_DATA[case]
    with pytest.raises(ValueError, match=message):
        fresh_estimator(index).fit(make())


@pytest.mark.parametrize("method", ["score_samples", "score", "transform"])
@pytest.mark.parametrize("case", list(BAD_DATA))
@pytest.mark.parametrize("index", estimator_params("skflow_bad_input"))
def test_fitted_methods_reject_bad_data(index: int, case: str, method: str) -> None:
    make, message = BAD_DATA[case]
    with pytest.raises(ValueError, match=message):
        getattr(fitted_estimator(index), method)(make())


@pytest.mark.parametrize("method", ["score_samples", "score", "transform"])
@pytest.mark.parametrize("index", estimator_params("skflow_bad_input"))
def test_wrong_number_of_features(index: int, method: str) -> None:
    estimator = fitted_estimator(index)
    with pytest.raises(ValueError, match=r"X has 2 features, but \w+ is expecting 3 features as input"):
        getattr(estimator, method)(X_GOOD[:, :2])


@pytest.mark.parametrize("index", estimator_params("skflow_bad_input"))
def test_inverse_transform_rejects_wrong_latent_width(index: int) -> None:
    estimator = fitted_estimator(index)
    width = estimator.transform(X_GOOD[:2]).shape[1]
    with pytest.raises(ValueError, match="features"):
        estimator.inverse_transform(np.zeros((2, width + 1)))


@pytest.mark.parametrize("index", estimator_params("skflow_bad_input"))
def test_sample_rejects_bad_counts(index: int) -> None:
    estimator = fitted_estimator(index)
    for n_samples in (0, -3, 2.5, True, np.True_, "3"):
        with pytest.raises(ValueError, match="n_samples"):
            estimator.sample(n_samples)


@pytest.mark.parametrize("index", estimator_params("skflow_bad_input"))
def test_every_method_before_fit_raises_not_fitted(index: int) -> None:
    estimator = fresh_estimator(index)
    calls = {
        "score_samples": lambda: estimator.score_samples(X_GOOD),
        "score": lambda: estimator.score(X_GOOD),
        "sample": lambda: estimator.sample(3),
        "transform": lambda: estimator.transform(X_GOOD),
        "inverse_transform": lambda: estimator.inverse_transform(X_GOOD),
        "get_feature_names_out": lambda: estimator.get_feature_names_out(),
    }
    for name, call in calls.items():
        with pytest.raises(NotFittedError):
            call()
            pytest.fail(f"{name} did not raise NotFittedError")


BAD_HYPERPARAMETERS = {
    "max_epochs": 0,
    "batch_size": 0,
    "lr": 0.0,
    "weight_decay": -1.0,
    "validation_fraction": 1.5,
    "patience": 0,
    "gradient_clip": -1.0,
    "verbose": "loud",
    "dequantize": "bogus",
    "noise_std": -0.1,
    "device": 3,
}


@pytest.mark.parametrize("name", list(BAD_HYPERPARAMETERS))
@pytest.mark.parametrize("index", estimator_params("skflow_bad_input"))
def test_invalid_hyperparameter_raises_at_fit(index: int, name: str) -> None:
    estimator = fresh_estimator(index, **{name: BAD_HYPERPARAMETERS[name]})  # stored untouched ...
    with pytest.raises(InvalidParameterError, match=f"The '{name}' parameter of"):
        estimator.fit(X_GOOD)  # ... and rejected at fit


BAD_LAYER_WIDTHS = [(0,), (-5,), (2.5,), ("a",), (True,), (16, 0), [np.float64(8.0)], (None,)]


@pytest.mark.parametrize("widths", BAD_LAYER_WIDTHS, ids=repr)
@pytest.mark.parametrize("index", estimator_params("skflow_bad_input"))
def test_layer_widths_must_be_positive_integers(index: int, widths) -> None:
    if "hidden_dims" not in fresh_estimator(index).get_params():
        pytest.skip("this family has no hidden_dims")
    estimator = fresh_estimator(index, hidden_dims=widths)
    message = "The 'hidden_dims' parameter of .* must be a tuple or list of positive integers. Got"
    with pytest.raises(InvalidParameterError, match=message):
        estimator.fit(X_GOOD)
    assert not hasattr(estimator, "model_")


@pytest.mark.parametrize("index", estimator_params("skflow_bad_input"))
def test_valid_layer_widths_of_any_integer_type_are_accepted(index: int) -> None:
    if "hidden_dims" not in fresh_estimator(index).get_params():
        pytest.skip("this family has no hidden_dims")
    fresh_estimator(index, hidden_dims=[np.int64(4)], max_epochs=1).fit(X_GOOD)


def _fit_with_huge_learning_rate(estimator):
    """Fit with lr=1e3; returns the RuntimeWarnings raised, or the divergence error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            estimator.fit(X_GOOD)
        except TrainingDivergedError as error:
            return error
    return [w for w in caught if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("index", estimator_params("skflow_divergence"))
def test_diverging_fit_never_returns_nan_scores(index: int) -> None:
    estimator = fresh_estimator(index, lr=1e3, gradient_clip=None, max_epochs=3)
    outcome = _fit_with_huge_learning_rate(estimator)
    if isinstance(outcome, TrainingDivergedError):
        assert not hasattr(estimator, "model_"), "a failed fit left a model behind"
        return
    scores = estimator.score_samples(X_GOOD)
    assert not np.isnan(scores).any()
    if outcome:  # recovered: the best sound epoch's weights were restored
        assert np.isfinite(scores).all()
        assert 1 <= estimator.best_epoch_ < estimator.n_iter_ + 1
    # Whatever fit returns is no absurd model: in standardised units its mean
    # log-likelihood stays within the engine's bound of a standard normal's
    # (twice the margin: the bound was checked on held-out rows).
    standardised = torch.as_tensor((X_GOOD - estimator.mean_) / estimator.scale_)
    mean_log_likelihood = float(np.mean(scores)) + float(np.log(estimator.scale_).sum())
    floor = -gaussian_reference_loss(standardised) - 2 * EXPLOSION_MARGIN_PER_FEATURE * X_GOOD.shape[1]
    assert mean_log_likelihood > floor, f"fit returned an absurd model (mean log-likelihood {mean_log_likelihood:.4g})"


@pytest.mark.parametrize("index", estimator_params("skflow_bad_input"))
def test_failed_fit_leaves_previous_fit_intact(index: int) -> None:
    estimator = pickle.loads(pickle.dumps(fitted_estimator(index)))  # a private copy
    before = estimator.score_samples(X_GOOD)
    params_before = estimator.get_params()
    with pytest.raises(ValueError):
        estimator.fit(_with_nan())
    np.testing.assert_array_equal(estimator.score_samples(X_GOOD), before)
    estimator.set_params(lr=1e3, gradient_clip=None, max_epochs=3)
    outcome = _fit_with_huge_learning_rate(estimator)
    if isinstance(outcome, TrainingDivergedError):
        np.testing.assert_array_equal(estimator.score_samples(X_GOOD), before)
    estimator.set_params(**{key: params_before[key] for key in ("lr", "gradient_clip", "max_epochs")})
    assert estimator.get_params() == params_before
