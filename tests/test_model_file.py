"""The safe model format (``skflow.save`` / ``skflow.load``) and pickling that
never changes the live estimator.

Round trips must reproduce scores bit for bit; hostile files (a pickle
payload, a tampered class name, a wrong tensor shape, a truncated file) must
be rejected with a clear error before anything in them could run, which the
tests check with payloads that would create a marker file.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from sklearn.neighbors import KernelDensity

import skflow
from skflow import DensityOutlierDetector, FreeFormFlowDensity, ModelFileError, ModelFileVersionWarning, RealNVPDensity
from tests.helpers import correlated_data, estimator_params, fitted_estimator, fresh_estimator
from tests.registry import FAST_ESTIMATORS

X_SCORE = correlated_data(50, seed=1)


def _read(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    with safe_open(str(path), framework="pt") as handle:
        document = json.loads(handle.metadata()["skflow"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    return document, tensors


def _write(path: Path, document: dict, tensors: dict[str, torch.Tensor]) -> None:
    save_file(tensors, str(path), metadata={"skflow": json.dumps(document)})


@pytest.fixture(scope="module")
def saved_realnvp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model_file") / "realnvp.skflow"
    skflow.save(fitted_estimator(0), path)
    return path


# ---------------------------------------------------------------------- #
# Round trips
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("index", estimator_params("skflow_safe_format"))
def test_round_trip_gives_bitwise_equal_results(index: int, tmp_path: Path) -> None:
    estimator = fitted_estimator(index)
    path = tmp_path / "model.skflow"
    skflow.save(estimator, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same versions, same device: no warning at all
        loaded = skflow.load(path)
    assert type(loaded) is type(estimator)
    assert loaded.get_params() == estimator.get_params()
    np.testing.assert_array_equal(loaded.score_samples(X_SCORE), estimator.score_samples(X_SCORE))
    np.testing.assert_array_equal(loaded.transform(X_SCORE), estimator.transform(X_SCORE))
    np.testing.assert_array_equal(loaded.sample(7, random_state=3), estimator.sample(7, random_state=3))
    for name in ("mean_", "scale_", "n_iter_", "best_epoch_", "history_", "n_features_in_", "device_"):
        np.testing.assert_equal(getattr(loaded, name), getattr(estimator, name))
    assert not loaded.model_.training


def test_round_trip_keeps_feature_names_and_an_unfitted_estimator(tmp_path: Path) -> None:
    pandas = pytest.importorskip("pandas")
    table = pandas.DataFrame(X_SCORE, columns=["a", "b", "c"])
    estimator = fresh_estimator(0).fit(table)
    skflow.save(estimator, tmp_path / "named.skflow")
    loaded = skflow.load(tmp_path / "named.skflow")
    assert list(loaded.feature_names_in_) == ["a", "b", "c"] and loaded.feature_names_in_.dtype == object
    np.testing.assert_array_equal(loaded.score_samples(table), estimator.score_samples(table))

    unfitted = RealNVPDensity(n_layers=3, hidden_dims=[7, 5], random_state=np.random.RandomState(4))
    skflow.save(unfitted, tmp_path / "unfitted.skflow")
    again = skflow.load(tmp_path / "unfitted.skflow")
    assert not hasattr(again, "model_") and again.hidden_dims == [7, 5] and again.n_layers == 3
    # A RandomState is saved with its full state: both draw the same numbers next.
    assert again.random_state.randint(10**9) == unfitted.random_state.randint(10**9)


def test_outlier_detector_over_a_skflow_estimator_round_trips(tmp_path: Path) -> None:
    X = correlated_data(200, seed=5)
    detector = DensityOutlierDetector(estimator=fresh_estimator(0), contamination=0.05).fit(X)
    skflow.save(detector, tmp_path / "detector.skflow")
    loaded = skflow.load(tmp_path / "detector.skflow")
    assert type(loaded.estimator_) is RealNVPDensity
    np.testing.assert_array_equal(loaded.decision_function(X_SCORE), detector.decision_function(X_SCORE))
    np.testing.assert_array_equal(loaded.predict(X_SCORE), detector.predict(X_SCORE))
    assert loaded.offset_ == detector.offset_


def test_a_model_fitted_on_a_missing_device_loads_on_the_cpu_with_a_warning(
    saved_realnvp: Path, tmp_path: Path
) -> None:
    document, tensors = _read(saved_realnvp)
    # As written by a fit on the second GPU of another machine (the weights are CPU bytes either way).
    document["estimator"]["fitted"]["device_"] = {"@device": "cuda:7"}
    _write(tmp_path / "gpu.skflow", document, tensors)
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7, so the model would rightly load there")
    with pytest.warns(UserWarning, match=r"fitted on cuda:7, which is not available here; it stays on the CPU"):
        loaded = skflow.load(tmp_path / "gpu.skflow")
    assert loaded.device_ == torch.device("cpu")
    # Against the same file loaded on the CPU on purpose (the registry fit may
    # have run on a GPU, whose scores round differently).
    on_cpu = skflow.load(saved_realnvp, device="cpu")
    np.testing.assert_array_equal(loaded.score_samples(X_SCORE), on_cpu.score_samples(X_SCORE))


def test_a_gpu_fitted_model_loads_on_the_cpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    import tempfile

    estimator = fresh_estimator(0, device="cuda").fit(correlated_data())
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "gpu.skflow"
        skflow.save(estimator, path)
        on_gpu = skflow.load(path)
        on_cpu = skflow.load(path, device="cpu")
    assert on_gpu.device_.type == "cuda" and on_cpu.device_ == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in on_cpu.model_.parameters())
    np.testing.assert_array_equal(on_gpu.score_samples(X_SCORE), estimator.score_samples(X_SCORE))
    np.testing.assert_allclose(on_cpu.score_samples(X_SCORE), estimator.score_samples(X_SCORE), rtol=1e-4, atol=1e-4)


def test_other_versions_load_with_a_warning(saved_realnvp: Path, tmp_path: Path) -> None:
    document, tensors = _read(saved_realnvp)
    assert set(document["versions"]) == {"skflow", "torch", "scikit-learn"}
    document["versions"]["torch"] = "1.0.0"
    _write(tmp_path / "old.skflow", document, tensors)
    with pytest.warns(ModelFileVersionWarning, match=r"torch 1\.0\.0 \(here "):
        loaded = skflow.load(tmp_path / "old.skflow")
    np.testing.assert_array_equal(loaded.score_samples(X_SCORE), fitted_estimator(0).score_samples(X_SCORE))


# ---------------------------------------------------------------------- #
# What cannot be saved is refused at save time
# ---------------------------------------------------------------------- #
class _UserNetwork(torch.nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class _MyRealNVP(RealNVPDensity):
    """A user's subclass: its code lives outside skflow."""


UNSAVABLE = {
    "custom torch module": (
        lambda: FreeFormFlowDensity(encoder=_UserNetwork(3, 3), max_epochs=1),
        r"custom torch module \(_UserNetwork\)",
    ),
    "custom network factory": (
        lambda: FreeFormFlowDensity(decoder=lambda n_in, n_out: _UserNetwork(n_in, n_out), max_epochs=1),
        "hyperparameter 'decoder' holds a builtins.function",
    ),
    "non-skflow wrapped estimator": (
        lambda: DensityOutlierDetector(estimator=KernelDensity()),
        "KernelDensity, which skflow cannot save",
    ),
    "user subclass": (lambda: _MyRealNVP(), "_MyRealNVP, which skflow cannot save"),
    "callbacks": (lambda: RealNVPDensity(callbacks=[object()]), "Set callbacks=None before saving"),
}


@pytest.mark.parametrize("case", list(UNSAVABLE))
def test_what_is_code_is_refused_at_save_time(case: str, tmp_path: Path) -> None:
    make, message = UNSAVABLE[case]
    with pytest.raises(TypeError, match=message) as refused:
        skflow.save(make(), tmp_path / "refused.skflow")
    assert "joblib.dump" in str(refused.value) or "callbacks" in case
    assert list(tmp_path.iterdir()) == [], "a refused save left a file behind"


def test_saving_into_a_missing_folder_fails_before_writing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        skflow.save(fitted_estimator(0), tmp_path / "no" / "such" / "model.skflow")


# ---------------------------------------------------------------------- #
# Hostile or damaged files are rejected and nothing in them runs
# ---------------------------------------------------------------------- #
class _CreatesMarker:
    """Unpickling this object creates the file at ``path`` (a stand-in for any code)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.path, "w"))


def test_a_pickle_payload_is_rejected_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.skflow"
    joblib.dump({"format": "skflow-model", "estimator": _CreatesMarker(str(marker))}, evil)
    with pytest.raises(ModelFileError, match="not a skflow model file"):
        skflow.load(evil)
    assert not marker.exists(), "loading executed code from the file"
    # Control: the payload is live, so the test above could have failed.
    joblib.load(evil)
    assert marker.exists()


def test_a_pickle_hidden_in_the_document_stays_inert_data(saved_realnvp: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    document, tensors = _read(saved_realnvp)
    payload = pickle.dumps(_CreatesMarker(str(marker)), protocol=0).decode("latin-1")
    document["estimator"]["fitted"]["pickled"] = {"@pickle": payload}
    _write(tmp_path / "evil.skflow", document, tensors)
    with pytest.raises(ModelFileError, match="does not recognise"):
        skflow.load(tmp_path / "evil.skflow")
    assert not marker.exists()


@pytest.mark.parametrize(
    "name", ["os.system", "builtins.eval", "skflow.persistence._Encoder", "BaseEstimator", "sklearn.svm.SVC"]
)
def test_a_tampered_class_name_is_rejected(name: str, saved_realnvp: Path, tmp_path: Path) -> None:
    document, tensors = _read(saved_realnvp)
    document["estimator"]["class"] = name
    _write(tmp_path / "tampered.skflow", document, tensors)
    with pytest.raises(ModelFileError, match=rf"names the class '{name}', which is not one of skflow's estimators"):
        skflow.load(tmp_path / "tampered.skflow")


def test_a_tampered_activation_class_is_rejected(saved_realnvp: Path, tmp_path: Path) -> None:
    document, tensors = _read(saved_realnvp)
    document["estimator"]["params"]["activation"] = {"@torch_nn": "functional"}
    _write(tmp_path / "tampered.skflow", document, tensors)
    with pytest.raises(ModelFileError, match="does not recognise"):
        skflow.load(tmp_path / "tampered.skflow")


def test_a_wrong_tensor_shape_is_rejected(saved_realnvp: Path, tmp_path: Path) -> None:
    document, tensors = _read(saved_realnvp)
    key = next(key for key, tensor in tensors.items() if "/" in key and tensor.ndim == 2)
    tensors[key] = torch.zeros(tensors[key].shape[0] + 1, tensors[key].shape[1])
    _write(tmp_path / "reshaped.skflow", document, tensors)
    with pytest.raises(ModelFileError, match=r"has shape .* in the file, but the model its hyperparameters build"):
        skflow.load(tmp_path / "reshaped.skflow")


def test_a_missing_or_extra_tensor_is_rejected(saved_realnvp: Path, tmp_path: Path) -> None:
    document, tensors = _read(saved_realnvp)
    key = next(key for key in tensors if "/" in key)
    _write(tmp_path / "missing.skflow", document, {k: v for k, v in tensors.items() if k != key})
    with pytest.raises(ModelFileError, match="weights do not fit the model"):
        skflow.load(tmp_path / "missing.skflow")
    document["estimator"]["params"]["n_layers"] = 1  # fewer layers than the weights describe
    _write(tmp_path / "extra.skflow", document, tensors)
    with pytest.raises(ModelFileError, match="weights do not fit the model"):
        skflow.load(tmp_path / "extra.skflow")


def test_invalid_saved_hyperparameters_are_rejected(saved_realnvp: Path, tmp_path: Path) -> None:
    document, tensors = _read(saved_realnvp)
    document["estimator"]["params"]["hidden_dims"] = {"@tuple": [-4]}
    _write(tmp_path / "invalid.skflow", document, tensors)
    with pytest.raises(ModelFileError, match="hyperparameters for RealNVPDensity are invalid"):
        skflow.load(tmp_path / "invalid.skflow")


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.99])
def test_a_truncated_file_is_rejected(keep: float, saved_realnvp: Path, tmp_path: Path) -> None:
    data = saved_realnvp.read_bytes()
    (tmp_path / "truncated.skflow").write_bytes(data[: int(keep * len(data))])
    with pytest.raises(ModelFileError, match="not a skflow model file"):
        skflow.load(tmp_path / "truncated.skflow")


def test_a_safetensors_file_from_elsewhere_is_rejected(tmp_path: Path) -> None:
    save_file({"weight": torch.zeros(2)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(ModelFileError, match="not a skflow model file"):
        skflow.load(tmp_path / "weights.safetensors")
    with pytest.raises(FileNotFoundError):
        skflow.load(tmp_path / "absent.skflow")


# ---------------------------------------------------------------------- #
# Pickling never changes the live estimator
# ---------------------------------------------------------------------- #
def test_pickling_a_model_fitted_on_another_device_leaves_the_live_estimator_unchanged() -> None:
    estimator = fresh_estimator(0, device="cpu").fit(correlated_data(200))
    expected = estimator.score_samples(X_SCORE)
    # Simulate a model fitted on a GPU: only device_ says so (the weights are
    # on the CPU here), which is all __getstate__ looks at.
    estimator.device_ = torch.device("cuda:3")
    contents = dict(vars(estimator))
    payload = pickle.dumps(estimator)
    assert vars(estimator) == contents and all(vars(estimator)[k] is v for k, v in contents.items())
    assert estimator.device_ == torch.device("cuda:3") and "_fitted_device" not in vars(estimator)
    if torch.cuda.device_count() > 3:
        pytest.skip("this machine has a cuda:3, so the pickle would rightly load there")
    with pytest.warns(UserWarning, match=r"fitted on cuda:3, which is not available here; it stays on the CPU"):
        loaded = pickle.loads(payload)
    assert loaded.device_ == torch.device("cpu") and "_fitted_device" not in vars(loaded)
    np.testing.assert_array_equal(loaded.score_samples(X_SCORE), expected)


def test_a_gpu_fitted_pickle_loads_back_onto_the_gpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    estimator = fresh_estimator(0, device="cuda").fit(correlated_data(200))
    model = estimator.model_
    payload = pickle.dumps(estimator)
    assert estimator.model_ is model and estimator.device_.type == "cuda"
    assert all(p.device.type == "cuda" for p in model.parameters()), "pickling moved the live model"
    loaded = pickle.loads(payload)
    assert loaded.device_.type == "cuda" and all(p.device.type == "cuda" for p in loaded.model_.parameters())
    np.testing.assert_array_equal(loaded.score_samples(X_SCORE), estimator.score_samples(X_SCORE))


def test_every_registered_family_is_covered() -> None:
    # The safe format's allow-list is derived from skflow's public names.
    allowed = set(skflow.persistence.allowed_classes().values())
    assert {type(estimator) for estimator in FAST_ESTIMATORS} <= allowed
    assert DensityOutlierDetector in allowed


def test_a_saved_model_continues_training_exactly_as_the_original(tmp_path: Path) -> None:
    # The optimiser's moments travel too, so partial_fit on the loaded copy
    # takes the very same steps as on the original.
    X, chunk = correlated_data(200, seed=6), correlated_data(100, seed=7)
    original = fresh_estimator(0).partial_fit(X)
    skflow.save(original, tmp_path / "stream.skflow")
    loaded = skflow.load(tmp_path / "stream.skflow")
    original.partial_fit(chunk)
    loaded.partial_fit(chunk)
    np.testing.assert_array_equal(loaded.score_samples(X_SCORE), original.score_samples(X_SCORE))
