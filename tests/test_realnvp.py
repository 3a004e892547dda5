"""RealNVPDensity: its architecture options and its life inside scikit-learn
(pipelines, model selection, pandas output, early stopping, callbacks)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from skorch.callbacks import Callback

from skflow import RealNVPDensity, TrainingDivergedError
from skflow.flows import ActNorm, AffineCoupling, Permutation
from tests.helpers import correlated_data

TINY = {"n_layers": 2, "hidden_dims": (8,), "max_epochs": 3, "batch_size": 64, "random_state": 0}


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return correlated_data(300)


@pytest.fixture(scope="module")
def fitted(data) -> RealNVPDensity:
    return RealNVPDensity(**TINY).fit(data)


@pytest.mark.parametrize(("permutation", "actnorm"), [("random", True), ("alternate", False)])
def test_architecture_follows_hyperparameters(data, permutation: str, actnorm: bool) -> None:
    estimator = RealNVPDensity(**{**TINY, "n_layers": 3}, permutation=permutation, actnorm=actnorm).fit(data)
    layers = list(estimator.model_.transform.bijections)
    couplings = [layer for layer in layers if isinstance(layer, AffineCoupling)]
    assert len(couplings) == 3
    assert sum(isinstance(layer, ActNorm) for layer in layers) == (3 if actnorm else 0)
    assert sum(isinstance(layer, Permutation) for layer in layers) == (3 if permutation == "random" else 0)
    if permutation == "alternate":
        assert [layer.flip for layer in couplings] == [False, True, False]


def test_one_feature_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least 2 features"):
        RealNVPDensity(**TINY).fit(np.random.default_rng(0).normal(size=(50, 1)))


@pytest.mark.parametrize(
    ("name", "value"), [("permutation", "bogus"), ("n_layers", 0), ("scale_bound", 0.0), ("max_epochs", 0)]
)
def test_bad_hyperparameters_raise_at_fit(data, name: str, value) -> None:
    with pytest.raises(InvalidParameterError, match=f"The '{name}' parameter of RealNVPDensity"):
        RealNVPDensity(**{**TINY, name: value}).fit(data)


def test_bad_activation_raises_at_fit(data) -> None:
    with pytest.raises(ValueError, match="Unknown activation"):
        RealNVPDensity(**TINY, activation="sigmoidish").fit(data)


def test_transform_inverse_transform_round_trip(fitted, data) -> None:
    latent = fitted.transform(data)
    assert latent.shape == data.shape
    np.testing.assert_allclose(fitted.inverse_transform(latent), data, atol=1e-4 * np.abs(data).max())


def test_sample_shape_and_reproducibility(fitted) -> None:
    first = fitted.sample(40, random_state=5)
    assert first.shape == (40, 3) and first.dtype == np.float64
    np.testing.assert_array_equal(fitted.sample(40, random_state=5), first)
    assert not np.allclose(fitted.sample(40, random_state=6), first)
    # Sampling does not consume torch's global generator.
    state = torch.get_rng_state()
    fitted.sample(10)
    assert torch.equal(torch.get_rng_state(), state)


def test_pipeline_with_standard_scaler(data) -> None:
    pipeline = Pipeline([("scale", StandardScaler()), ("flow", RealNVPDensity(**TINY))]).fit(data)
    scores = pipeline.score_samples(data)
    assert scores.shape == (len(data),) and np.isfinite(scores).all()
    # The flow standardises internally, so a scaler in front only changes the
    # units: scores differ by the log-Jacobian of the scaler.
    direct = RealNVPDensity(**TINY).fit(data)
    scaler = pipeline.named_steps["scale"]
    np.testing.assert_allclose(scores, direct.score_samples(data) + np.log(scaler.scale_).sum(), atol=1e-3)


def test_grid_search_selects_by_likelihood(data) -> None:
    data = data[:150]
    grid = {"max_epochs": [1, 10]}
    # The identity start: the last check needs a grid whose better point is
    # known in advance. From the Gaussian start (the default) one epoch is
    # already close to the best Gaussian of these nearly Gaussian rows, and
    # ten epochs at this rate overfit the 100 training rows.
    base = RealNVPDensity(n_layers=2, hidden_dims=(8,), batch_size=25, lr=2e-2, init="identity", random_state=0)
    search = GridSearchCV(base, grid, cv=3).fit(data)
    # Independent recomputation of the cross-validated log-likelihoods.
    folds = list(KFold(3).split(data))
    manual = [
        np.mean([base.set_params(max_epochs=e).fit(data[train]).score(data[test]) for train, test in folds])
        for e in grid["max_epochs"]
    ]
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], manual, rtol=1e-6)
    assert search.best_params_ == {"max_epochs": grid["max_epochs"][int(np.argmax(manual))]}
    assert search.best_params_ == {"max_epochs": 10}, "10 epochs should beat 1 epoch on held-out likelihood"


def test_cross_val_score(data) -> None:
    scores = cross_val_score(RealNVPDensity(**TINY), data, cv=3)
    assert scores.shape == (3,) and np.isfinite(scores).all()


def test_pandas_feature_names_and_output(data) -> None:
    frame = pd.DataFrame(data, columns=["height", "weight", "age"])
    estimator = RealNVPDensity(**TINY).fit(frame)
    assert list(estimator.feature_names_in_) == ["height", "weight", "age"]
    names = estimator.get_feature_names_out()
    assert list(names) == ["realnvpdensity0", "realnvpdensity1", "realnvpdensity2"]
    estimator.set_output(transform="pandas")
    latent = estimator.transform(frame)
    assert isinstance(latent, pd.DataFrame) and list(latent.columns) == list(names)
    np.testing.assert_allclose(latent.to_numpy(), RealNVPDensity(**TINY).fit(data).transform(data), atol=1e-6)
    with pytest.warns(UserWarning, match="feature names"):
        estimator.score_samples(data)  # fitted with names, scored without


class ValidationRecorder(Callback):
    """Records, per epoch, the model's NLL on skorch's validation rows (independent of skorch's own bookkeeping)."""

    def initialize(self):
        self.nll_per_epoch: list[float] = []
        self.valid_rows = None
        self.epochs = 0
        return self

    def on_epoch_end(self, net, dataset_valid=None, **kwargs):
        self.epochs += 1
        subset = dataset_valid
        self.valid_rows = subset.dataset.X[torch.as_tensor(subset.indices)].clone()
        module = net.module_
        was_training = module.training
        module.eval()
        with torch.no_grad():
            self.nll_per_epoch.append(-module.log_prob(self.valid_rows).mean().item())
        module.train(was_training)


def test_early_stopping_restores_best_weights(data) -> None:
    recorder = ValidationRecorder()
    estimator = RealNVPDensity(
        n_layers=2,
        hidden_dims=(32,),
        max_epochs=60,
        batch_size=16,
        lr=3e-2,
        patience=3,
        random_state=0,
        callbacks=[recorder],
    ).fit(data[:120])
    history = estimator.history_
    valid = np.array([row["valid_loss"] for row in history])
    assert estimator.n_iter_ == len(history) == recorder.epochs
    assert estimator.n_iter_ < 60, "training should have stopped early"
    assert estimator.best_epoch_ == int(np.argmin(valid)) + 1
    # The history's validation loss is the NLL of the rows we recorded ...
    np.testing.assert_allclose(valid, recorder.nll_per_epoch, rtol=1e-5)
    # ... and the returned model is the best epoch's: same NLL on those rows.
    with torch.no_grad():
        restored = -estimator.model_.log_prob(recorder.valid_rows).mean().item()
    assert restored == pytest.approx(valid[estimator.best_epoch_ - 1], rel=1e-5)
    assert estimator.best_epoch_ < estimator.n_iter_, "the last epoch should not be the best here"


def test_verbose_zero_prints_nothing(data, capsys) -> None:
    RealNVPDensity(**TINY, verbose=0).fit(data)
    assert capsys.readouterr().out == ""
    RealNVPDensity(**TINY, verbose=2).fit(data)
    assert "valid_loss" in capsys.readouterr().out


class PoisonWeightsInEpoch(Callback):
    """Sets one weight to NaN at the start of a given epoch: a divergence on cue."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if training and len(net.history) == self.epoch:
            with torch.no_grad():
                next(net.module_.parameters()).fill_(float("nan"))


def test_divergence_mid_training_restores_best_finite_epoch(data) -> None:
    estimator = RealNVPDensity(**{**TINY, "max_epochs": 6}, patience=None, callbacks=[PoisonWeightsInEpoch(3)])
    with pytest.warns(RuntimeWarning, match="restored the weights of epoch"):
        estimator.fit(data)
    assert estimator.n_iter_ == 3 and estimator.best_epoch_ in (1, 2)
    assert np.isfinite(estimator.score_samples(data)).all()
    assert all(torch.isfinite(p).all() for p in estimator.model_.parameters())


def test_huge_learning_rate_diverges_and_keeps_previous_fit(fitted, data) -> None:
    import pickle

    estimator = pickle.loads(pickle.dumps(fitted))
    before = estimator.score_samples(data)
    estimator.set_params(lr=1e3)
    with pytest.raises(TrainingDivergedError, match="diverged"):
        estimator.fit(data)
    np.testing.assert_array_equal(estimator.score_samples(data), before)
    assert estimator.n_iter_ == fitted.n_iter_
