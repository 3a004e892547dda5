"""The PCA start of the injective flow (``InjectiveFlowEstimator(init="pca")``).

Ground truth is independent of skflow's power sums: scikit-learn's ``PCA``
(``whiten=True`` for the codes, its reconstruction, and ``get_covariance``
for probabilistic PCA's density, evaluated with scipy) and numpy's
covariance and eigendecomposition. scikit-learn's PCA divides the covariance
by ``n - 1``; the start is the maximum-likelihood one (divisor ``n``), so
its whitened codes are scikit-learn's times ``sqrt(n / (n - 1))``. Its
reconstruction and its probabilistic-PCA density do not depend on that
factor once the covariance is taken with divisor ``n``.

"Untrained" fits run one epoch at a learning rate of 1e-12, which moves
every weight by about 1e-12 (Adam's step is about ``lr``), so the fitted
model is the model as built, through the public API.
"""

from __future__ import annotations

import pickle
from functools import partial

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.utils._param_validation import InvalidParameterError
from skorch.callbacks import Callback
from torch import nn

import skflow
from skflow import InjectiveFlowEstimator
from skflow.flows.injective import LinearSkip

SMALL = {"hidden_dims": (16,), "n_residual_blocks": 1, "random_state": 0, "init": "pca"}
# noise_std=0 and no dequantisation: the start is then PCA of the standardised rows themselves.
EXACT = {"noise_std": 0.0, "dequantize": False}
UNTRAINED = {"max_epochs": 1, "lr": 1e-12, "validation_fraction": None}
# float32 weights and rows: whitened codes of unit variance agree to ~1e-6.
TOLERANCE = {"float32": 2e-5, "float64": 1e-9}


def correlated_rows(n: int = 300, d: int = 6, seed: int = 0) -> np.ndarray:
    """Correlated rows with distinct principal variances, in non-standard units (means and scales far from 0, 1)."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) + 2 * np.eye(d)
    return rng.normal(size=(n, d)) @ mixing.T * np.arange(1, d + 1) + np.linspace(-5, 20, d)


def standardised(X: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    mean = np.average(X, axis=0, weights=weights)
    return (X - mean) / np.sqrt(np.average((X - mean) ** 2, axis=0, weights=weights))


def ml_ppca(rows: np.ndarray, d: int) -> multivariate_normal:
    """Probabilistic PCA fitted by maximum likelihood (divisor n) to standardised rows, as a scipy Gaussian."""
    n = len(rows)
    covariance = PCA(n_components=d).fit(rows).get_covariance() * (n - 1) / n
    return multivariate_normal(rows.mean(axis=0), covariance)


def whitened_pca_codes(fitted: np.ndarray, rows: np.ndarray, d: int) -> np.ndarray:
    """Codes of ``rows`` under whitened PCA of ``fitted`` with the maximum-likelihood variances (divisor n)."""
    n = len(fitted)
    return PCA(n_components=d, whiten=True).fit(fitted).transform(rows) * np.sqrt(n / (n - 1))


def training_side(X: np.ndarray, flow: InjectiveFlowEstimator) -> np.ndarray:
    """The rows of ``X`` the engine trained on (all but the held-out ones)."""
    return np.delete(X, flow._validation_index, axis=0)


# ---------------------------------------------------------------------- #
# The untrained model is PCA
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_untrained_model_is_whitened_pca(dtype: str) -> None:
    X = correlated_rows()
    n, d = len(X), 2
    flow = InjectiveFlowEstimator(n_components=d, **SMALL, **EXACT, **UNTRAINED, dtype=dtype).fit(X)
    rows = standardised(X)
    np.testing.assert_allclose(flow.mean_, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(flow.scale_, X.std(axis=0), rtol=1e-12)
    pca = PCA(n_components=d, whiten=True).fit(rows)
    atol = TOLERANCE[dtype]
    # Same components, same signs (the largest loading of each is positive, as scikit-learn makes it).
    np.testing.assert_allclose(flow.transform(X), pca.transform(rows) * np.sqrt(n / (n - 1)), atol=atol, rtol=0)
    reconstruction = pca.inverse_transform(pca.transform(rows)) * X.std(axis=0) + X.mean(axis=0)
    np.testing.assert_allclose(
        flow.inverse_transform(flow.transform(X)), reconstruction, atol=atol * np.abs(X).max(), rtol=0
    )
    # The density: probabilistic PCA in standardised units, brought to the user's units by the scale.
    expected = ml_ppca(rows, d).logpdf(rows) - np.log(X.std(axis=0)).sum()
    np.testing.assert_allclose(flow.score_samples(X), expected, atol=1e3 * atol, rtol=0)
    assert flow.score_samples(X).dtype == np.float64


def test_noise_and_dequantisation_variances_are_part_of_the_start() -> None:
    """The networks see the rows plus noise: the start is PCA of the covariance of what they see."""
    X = correlated_rows(400, 5, seed=1)
    X[:, 1] = np.round(X[:, 1] / 3)  # an integer column: dequantised over unit bins
    noise_std = 0.2
    flow = InjectiveFlowEstimator(n_components=2, **SMALL, **UNTRAINED, noise_std=noise_std, dtype="float64").fit(X)
    assert flow.dequantized_features_.tolist() == [False, True, False, False, False]
    rows = (X - flow.mean_) / flow.scale_
    extra = (flow.dequantization_widths_ / flow.scale_) ** 2 / 12 + noise_std**2
    covariance = np.cov(rows.T, bias=True) + np.diag(extra)
    values, vectors = np.linalg.eigh(covariance)
    top = vectors[:, ::-1][:, :2]
    expected = rows @ top / np.sqrt(values[::-1][:2])
    codes = flow.transform(X)
    signs = np.sign(np.sum(codes * expected, axis=0))  # numpy's eigenvectors have arbitrary signs
    np.testing.assert_allclose(codes, expected * signs, atol=1e-9, rtol=0)
    # Without the extra variance the codes would differ visibly.
    plain = PCA(n_components=2, whiten=True).fit(rows).transform(rows) * np.sqrt(len(X) / (len(X) - 1))
    assert np.abs(np.abs(codes) - np.abs(plain)).max() > 1e-3


def test_integer_weights_equal_repeated_rows() -> None:
    X = correlated_rows(80, 5, seed=4)
    weights = np.random.default_rng(4).integers(1, 4, size=len(X)).astype(float)
    repeated = np.repeat(X, weights.astype(int), axis=0)
    settings = {**SMALL, **EXACT, **UNTRAINED, "dtype": "float64", "n_components": 3}
    by_weight = InjectiveFlowEstimator(**settings).fit(X, sample_weight=weights)
    by_copies = InjectiveFlowEstimator(**settings).fit(repeated)
    np.testing.assert_allclose(by_weight.mean_, by_copies.mean_, rtol=1e-12)
    np.testing.assert_allclose(by_weight.scale_, by_copies.scale_, rtol=1e-12)
    np.testing.assert_allclose(by_weight.transform(X), by_copies.transform(X), atol=1e-9, rtol=0)
    # And both are PCA of the repeated rows.
    rows = standardised(repeated)
    n = len(repeated)
    expected = PCA(n_components=3, whiten=True).fit(rows).transform(standardised(X, weights)) * np.sqrt(n / (n - 1))
    np.testing.assert_allclose(by_weight.transform(X), expected, atol=1e-9, rtol=0)


def test_start_networks_are_the_default_networks_beside_a_linear_map() -> None:
    X = correlated_rows()
    flow = InjectiveFlowEstimator(n_components=2, **SMALL, **UNTRAINED).fit(X)
    encoder_maps = [m for m in flow.model_.encoder.modules() if isinstance(m, LinearSkip)]
    decoder_maps = [m for m in flow.model_.decoder.modules() if isinstance(m, LinearSkip)]
    assert len(encoder_maps) == len(decoder_maps) == 1
    assert encoder_maps[0].linear.weight.shape == (2, 6) and decoder_maps[0].linear.weight.shape == (6, 2)
    # init="random" builds the networks as before the PCA start existed: no linear map.
    plain = InjectiveFlowEstimator(n_components=2, hidden_dims=(16,), max_epochs=1, random_state=0, init="random")
    assert not any(isinstance(m, LinearSkip) for m in plain.fit(X).model_.modules())


def test_auto_is_pca_for_the_default_networks_and_random_for_custom_ones() -> None:
    X = correlated_rows(200)
    rows = standardised(X)
    default = InjectiveFlowEstimator(n_components=2, hidden_dims=(16,), **EXACT, **UNTRAINED, dtype="float64")
    assert default.init == "auto"
    np.testing.assert_allclose(default.fit(X).transform(X), whitened_pca_codes(rows, rows, 2), atol=1e-9, rtol=0)
    custom = InjectiveFlowEstimator(n_components=2, encoder=nn.Linear, decoder=nn.Linear, max_epochs=1).fit(X)
    assert isinstance(custom.model_.encoder, nn.Linear) and isinstance(custom.model_.decoder, nn.Linear)
    assert not hasattr(custom, "_pending_start")


def test_training_moves_every_part_of_the_start() -> None:
    """The zero last layers are trained (the model can leave PCA), and so is the linear map."""
    t = np.random.default_rng(2).uniform(-2.5, 2.5, size=600)
    X = np.column_stack([t, np.sin(2 * t), 0.5 * t]) + 0.02 * np.random.default_rng(3).normal(size=(600, 3))
    settings = {**SMALL, "n_components": 1, "batch_size": 32, "validation_fraction": None}
    flow = InjectiveFlowEstimator(**settings, max_epochs=20, lr=3e-3).fit(X)
    start = InjectiveFlowEstimator(**{**settings, **UNTRAINED}).fit(X)
    for trained, initial in zip(flow.model_.parameters(), start.model_.parameters(), strict=True):
        assert (trained - initial).abs().max() > 1e-4
    # PCA keeps only the line through the sine's trend; the curve is learned (0.53 -> 0.03 when written).
    assert flow.reconstruction_error(X).mean() < 0.2 * start.reconstruction_error(X).mean()


# ---------------------------------------------------------------------- #
# The start is a candidate for the weights kept (epoch 0)
# ---------------------------------------------------------------------- #
def held_out_start_loss(X: np.ndarray, flow: InjectiveFlowEstimator) -> float:
    """The start's mean held-out criterion (standardised units), from scikit-learn's PCA of the training side.

    The start never sees the rows it is compared on. ``selection="likelihood"``:
    probabilistic PCA's negative log-density (scipy). ``"objective"``:
    ``beta ||r||^2 + ||z||^2 / 2 + d/2 log(2 pi) - 1/2 log det(J_f J_f^T)``
    with ``z = Lambda^{-1/2} V^T (x - m)``, ``r = (I - V V^T)(x - m)`` and the
    constant ``J_f = Lambda^{-1/2} V^T``, so the log-det is ``-sum(log Lambda)``.
    """
    rows = standardised(X)
    fitted, held_out = training_side(rows, flow), rows[flow._validation_index]
    d = flow.n_components
    if flow.selection == "likelihood":
        return float(-ml_ppca(fitted, d).logpdf(held_out).mean())
    pca = PCA(n_components=d).fit(fitted)
    variances = pca.explained_variance_ * (len(fitted) - 1) / len(fitted)
    centred = held_out - pca.mean_
    codes = centred @ pca.components_.T / np.sqrt(variances)
    residual = centred - centred @ pca.components_.T @ pca.components_
    objective = (
        flow.beta * (residual**2).sum(axis=1)
        + 0.5 * (codes**2).sum(axis=1)
        + 0.5 * d * np.log(2 * np.pi)
        + 0.5 * np.log(variances).sum()
    )
    return float(objective.mean())


SELECTIONS = pytest.mark.parametrize("selection", ["objective", "likelihood"])


@SELECTIONS
def test_the_start_is_kept_when_no_epoch_beats_it(selection: str) -> None:
    """Gaussian rows (PCA is the right model) and a reckless learning rate: every epoch is worse than the start.

    The start competed as PCA of the training side; once kept, it is PCA of all rows.
    """
    X = correlated_rows(400, 5, seed=9)
    flow = InjectiveFlowEstimator(
        n_components=2,
        **SMALL,
        **EXACT,
        max_epochs=3,
        lr=0.05,
        validation_fraction=0.25,
        dtype="float64",
        selection=selection,
    ).fit(X)
    start_loss = held_out_start_loss(X, flow)
    assert all(row["valid_loss"] > start_loss for row in flow.history_)
    assert flow.best_epoch_ == 0 and flow.n_iter_ == 3
    rows = standardised(X)
    np.testing.assert_allclose(flow.transform(X), whitened_pca_codes(rows, rows, 2), atol=1e-9, rtol=0)
    expected = ml_ppca(rows, 2).logpdf(rows) - np.log(X.std(axis=0)).sum()
    np.testing.assert_allclose(flow.score_samples(X), expected, atol=1e-8, rtol=0)
    # The training side's PCA, which competed, is visibly different.
    assert np.abs(flow.transform(X) - whitened_pca_codes(training_side(rows, flow), rows, 2)).max() > 1e-3


class CodesAtEpochEnd(Callback):
    """Records the codes the model in training gives ``rows`` (standardised units) at the end of each epoch."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows
        self.codes: list[np.ndarray] = []

    def on_epoch_end(self, net, **kwargs) -> None:
        with torch.no_grad():
            self.codes.append(net.module_.encode(torch.as_tensor(self.rows)).numpy())


def test_the_start_leaves_out_the_rows_it_is_compared_on() -> None:
    """With a validation split, training starts at PCA of the training side (the engine's split, known in advance)."""
    X = correlated_rows(300, 5, seed=11)
    rows = standardised(X)
    record = CodesAtEpochEnd(rows)
    flow = InjectiveFlowEstimator(
        n_components=2, **SMALL, **EXACT, max_epochs=1, lr=1e-12, dtype="float64", callbacks=[record]
    ).fit(X)  # validation_fraction=0.1, the default
    assert len(flow._validation_index) == 30
    training = whitened_pca_codes(training_side(rows, flow), rows, 2)
    np.testing.assert_allclose(record.codes[0], training, atol=1e-9, rtol=0)
    assert np.abs(training - whitened_pca_codes(rows, rows, 2)).max() > 1e-3  # the held-out rows matter
    # Epoch 1 (the start, moved by 1e-12) is kept, or the start itself, then refitted on all rows.
    kept = training if flow.best_epoch_ == 1 else whitened_pca_codes(rows, rows, 2)
    np.testing.assert_allclose(flow.transform(X), kept, atol=1e-9, rtol=0)


@SELECTIONS
def test_an_epoch_that_beats_the_start_is_kept(selection: str) -> None:
    """A noisy sinusoid is far from linear: training improves on PCA, and the best epoch is kept."""
    rng = np.random.default_rng(5)
    t = rng.uniform(-3, 3, size=800)
    X = np.column_stack([t, np.sin(2 * t)]) + 0.05 * rng.normal(size=(800, 2))
    flow = InjectiveFlowEstimator(
        n_components=1,
        **SMALL,
        **EXACT,
        max_epochs=15,
        lr=5e-3,
        validation_fraction=0.25,
        dtype="float64",
        selection=selection,
    ).fit(X)
    start_loss = held_out_start_loss(X, flow)
    assert flow.best_epoch_ >= 1
    assert flow.history_[flow.best_epoch_ - 1]["valid_loss"] < start_loss


# ---------------------------------------------------------------------- #
# Persistence, parameters, what the start cannot do
# ---------------------------------------------------------------------- #
def test_save_load_pickle_and_clone_keep_the_start(tmp_path) -> None:
    X = correlated_rows(200)
    flow = InjectiveFlowEstimator(n_components=2, **SMALL, max_epochs=3).fit(X)
    expected, codes = flow.score_samples(X), flow.transform(X)
    skflow.save(flow, tmp_path / "fif.skflow")
    loaded = skflow.load(tmp_path / "fif.skflow")
    assert loaded.init == "pca"
    np.testing.assert_array_equal(loaded.score_samples(X), expected)
    np.testing.assert_array_equal(loaded.transform(X), codes)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(flow)).score_samples(X), expected)
    assert not hasattr(flow, "_pending_start")  # the fit's set-up is not saved with the model
    assert clone(flow).init == "pca"
    assert InjectiveFlowEstimator().init == "auto"


@pytest.mark.parametrize("value", ["PCA", "gaussian", None])
def test_invalid_init_is_rejected(value) -> None:
    with pytest.raises(InvalidParameterError, match="The 'init' parameter of InjectiveFlowEstimator"):
        InjectiveFlowEstimator(init=value).fit(correlated_rows(50))


@pytest.mark.parametrize("network", ["encoder", "decoder"])
def test_custom_networks_refuse_the_pca_start(network: str) -> None:
    X = correlated_rows(60)
    estimator = InjectiveFlowEstimator(n_components=2, init="pca", max_epochs=1, **{network: nn.Linear})
    with pytest.raises(ValueError, match="init='pca' .* cannot start a custom encoder or decoder"):
        estimator.fit(X)
    # The same networks train from a random start.
    InjectiveFlowEstimator(n_components=2, max_epochs=1, **{network: partial(nn.Linear)}).fit(X)


def test_warm_start_is_refused_and_keeps_the_fitted_start() -> None:
    """The injective flow does not continue a fit (see its _NOT_INCREMENTAL): nothing is initialised again."""
    X = correlated_rows(150)
    flow = InjectiveFlowEstimator(n_components=2, **SMALL, **UNTRAINED).fit(X)
    codes = flow.transform(X)
    with pytest.raises(ValueError, match="warm_start"):
        flow.set_params(warm_start=True).fit(correlated_rows(150, seed=7))
    np.testing.assert_array_equal(flow.transform(X), codes)


def test_float64_start_on_cuda_is_pca() -> None:
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    X = correlated_rows()
    n = len(X)
    flow = InjectiveFlowEstimator(n_components=2, **SMALL, **EXACT, **UNTRAINED, dtype="float64", device="cuda").fit(X)
    assert flow.device_.type == "cuda"
    rows = standardised(X)
    pca = PCA(n_components=2, whiten=True).fit(rows)
    np.testing.assert_allclose(flow.transform(X), pca.transform(rows) * np.sqrt(n / (n - 1)), atol=1e-9, rtol=0)
    expected = ml_ppca(rows, 2).logpdf(rows) - np.log(X.std(axis=0)).sum()
    np.testing.assert_allclose(flow.score_samples(X), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("fraction", "expect_split"), [(0.2, True), (0.1, True), (None, False), (0.001, False)])
def test_validation_index_is_the_engines_split(fraction, expect_split) -> None:
    """The split known before training (what the start leaves out) is the one train_model then makes."""
    from skflow.flows import Chain, ExactFlow, StandardNormal
    from skflow.flows.linear import LULinear
    from skflow.training import train_model, validation_index

    rows = torch.as_tensor(correlated_rows(200, 3, seed=12), dtype=torch.float32)
    rows[100:140] = rows[3]  # copies of one row: held out together or not at all
    model = ExactFlow(Chain([LULinear(3)]), StandardNormal(3))
    result = train_model(
        model, rows, max_epochs=1, batch_size=64, lr=1e-3, validation_fraction=fraction, random_state=7
    )
    expected = validation_index(rows, fraction, 7)
    if expect_split:
        np.testing.assert_array_equal(expected, result.validation_index)
        copies = np.isin([3, *range(100, 140)], expected)
        assert copies.all() or not copies.any()
    else:
        assert expected is None and result.validation_index is None


def test_a_large_beta_objective_is_not_taken_for_divergence() -> None:
    """The objective's beta ||r||^2 is no log-density: its held-out value is bounded relative to epoch 1.

    Held to a likelihood's absolute bound (a standard normal's loss plus 20
    nats per feature), a random start at beta=100 on the noisy sine was
    reported as diverged at epoch 1 (held-out objective 74.3, bound 42.8).
    """
    rng = np.random.default_rng(0)
    position = rng.normal(size=2000)
    X = np.c_[position, np.sin(np.pi * position / 2)] + 0.1 * rng.normal(size=(2000, 2))
    settings = {"n_components": 1, "beta": 100.0, "hidden_dims": (64, 64), "n_residual_blocks": 1}
    flow = InjectiveFlowEstimator(**settings, max_epochs=3, batch_size=128, lr=3e-3, init="random", random_state=0)
    flow.fit(X)
    assert flow.history_[0]["valid_loss"] > 0.5 * X.shape[1] * np.log(2 * np.pi) + 20 * X.shape[1]
    assert flow.n_iter_ == 3 and np.isfinite(flow.score_samples(X)).all()
    assert not flow.model_.validates_a_likelihood
    assert flow.set_params(selection="likelihood").fit(X).model_.validates_a_likelihood
