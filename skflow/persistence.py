"""Model files that hold only data: ``skflow.save`` and ``skflow.load``.

A pickle (and so a joblib file) is a program: unpickling a crafted file runs
whatever code its author chose. A skflow model file is instead one
`safetensors <https://github.com/huggingface/safetensors>`_ file: every
tensor and numeric array as raw bytes, plus a JSON document in the file's
metadata that names the estimator's class and holds its hyperparameters and
fitted attributes as plain data. Loading parses both, looks the class up in
an allow-list of skflow's public estimators, rebuilds the network with the
estimator's own ``build_model`` from the saved hyperparameters, and copies the
saved weights in. Nothing in the file is ever executed or imported.

What can be saved is decided at save time, and anything else is refused with
an explanation (a custom torch module passed as a hyperparameter, a wrapped
estimator from outside skflow, user callbacks): such objects are code, which
only a pickle can carry (``joblib.dump`` remains available for files you
trust).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch
from sklearn.base import BaseEstimator
from torch import nn

__all__ = ["ModelFileError", "ModelFileVersionWarning", "load", "read_metadata", "save"]

FORMAT = "skflow-model"
FORMAT_VERSION = 1
_METADATA_KEY = "skflow"

# Array dtypes stored as tensors; anything else (object, strings) goes to JSON.
_TENSOR_DTYPES = {
    np.dtype(np.float64),
    np.dtype(np.float32),
    np.dtype(np.float16),
    np.dtype(np.int64),
    np.dtype(np.int32),
    np.dtype(np.int16),
    np.dtype(np.int8),
    np.dtype(np.uint8),
    np.dtype(np.bool_),
}


class ModelFileError(ValueError):
    """A file is not a valid skflow model file (or was tampered with); nothing in it was run."""


class ModelFileVersionWarning(UserWarning):
    """A model file was written with other versions of skflow, torch or scikit-learn."""


def _versions() -> dict[str, str]:
    from . import __version__

    return {"skflow": __version__, "torch": torch.__version__, "scikit-learn": sklearn.__version__}


def allowed_classes() -> dict[str, type]:
    """The estimator classes a model file may name: skflow's public estimators, by public name."""
    import skflow

    classes = {}
    for name in skflow.__all__:
        obj = getattr(skflow, name, None)
        if isinstance(obj, type) and issubclass(obj, BaseEstimator) and obj.__module__.startswith("skflow."):
            classes[name] = obj
    return classes


# ---------------------------------------------------------------------- #
# Saving
# ---------------------------------------------------------------------- #
class _Encoder:
    """Turns an estimator into JSON-ready plain data plus a dict of tensors."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._names = {cls: name for name, cls in allowed_classes().items()}

    def _store(self, key: str, tensor: torch.Tensor) -> str:
        # Clones: safetensors refuses tensors that share memory (tied or viewed weights).
        self.tensors[key] = tensor.detach().to("cpu").contiguous().clone()
        return key

    def estimator(self, estimator: Any, where: str) -> dict:
        name = self._names.get(type(estimator))
        if name is None:
            raise TypeError(
                f"{where} is a {type(estimator).__module__}.{type(estimator).__qualname__}, which skflow "
                "cannot save: a model file names only skflow's own estimators, so that loading never runs "
                "code from the file. Use joblib.dump to pickle it (load such files only if you trust them)."
            )
        params = estimator.get_params(deep=False)
        fitted = {key: value for key, value in vars(estimator).items() if key not in params}
        encoded_fitted = {}
        for key, value in fitted.items():
            if isinstance(value, nn.Module):
                encoded_fitted[key] = self.module(estimator, key, value, f"{where}.{key}")
            else:
                encoded_fitted[key] = self.value(value, f"{where}.{key}")
        return {
            "class": name,
            "params": {key: self.value(value, f"{where} hyperparameter {key!r}") for key, value in params.items()},
            "fitted": encoded_fitted,
        }

    def module(self, estimator: Any, attribute: str, module: nn.Module, where: str) -> dict:
        if attribute != "model_" or not hasattr(estimator, "_empty_model"):
            raise TypeError(
                f"{where} is a torch module that skflow cannot rebuild; only an estimator's model_ (made by its "
                "build_model) can be saved. Use joblib.dump to pickle it (load such files only if you trust them)."
            )
        prefix = f"{where}/"
        for name, tensor in module.state_dict().items():
            self._store(prefix + name, tensor)
        # Plain settings that fitting changed on the modules after build_model
        # (an evaluation mode, a solver switched off, a counter): recorded so
        # the rebuilt model computes exactly what the saved one did.
        settings = {}
        for path, submodule in module.named_modules():
            for key, value in vars(submodule).items():
                if key.startswith("_") or key == "training":
                    continue
                if value is None or isinstance(value, (bool, int, float, str)):
                    settings[f"{path}:{key}"] = self.value(value, f"{where}.{path}.{key}")
        return {"@module": prefix, "settings": settings}

    def value(self, value: Any, where: str) -> Any:
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
            return int(value) if isinstance(value, int) else {"@numpy": value.dtype.name, "value": int(value)}
        if isinstance(value, np.bool_):
            return {"@numpy": "bool", "value": bool(value)}
        if isinstance(value, (float, np.floating)):
            number = float(value)
            encoded: Any = number if math.isfinite(number) else {"@float": repr(number)}
            if isinstance(value, np.floating):
                return {"@numpy": value.dtype.name, "value": encoded}
            return encoded
        if isinstance(value, list):
            return {"@list": [self.value(item, f"{where}[{i}]") for i, item in enumerate(value)]}
        if isinstance(value, tuple):
            return {"@tuple": [self.value(item, f"{where}[{i}]") for i, item in enumerate(value)]}
        if isinstance(value, dict):
            items = []
            for key, item in value.items():
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    raise TypeError(
                        f"{where} has a key {key!r} of type {type(key).__name__}, which skflow cannot save."
                    )
                items.append([key, self.value(item, f"{where}[{key!r}]")])
            return {"@dict": items}
        if isinstance(value, np.ndarray):
            if value.dtype in _TENSOR_DTYPES:
                return {"@array": self._store(where, torch.from_numpy(np.ascontiguousarray(value)))}
            if value.dtype.kind in "OU" and all(isinstance(item, str) for item in value.ravel()):
                return {"@strings": value.ravel().tolist(), "shape": list(value.shape), "dtype": value.dtype.kind}
            raise TypeError(f"{where} is an array of dtype {value.dtype}, which skflow cannot save.")
        if isinstance(value, torch.Tensor):
            return {"@tensor": self._store(where, value), "device": str(value.device)}
        if isinstance(value, torch.device):
            return {"@device": str(value)}
        if isinstance(value, np.random.RandomState):
            kind, keys, position, has_gauss, cached = value.get_state()
            keys = self.value(np.asarray(keys, dtype=np.int64), where)  # uint32 words, stored widened
            return {"@random_state": [kind, keys, int(position), int(has_gauss), float(cached)]}
        name = getattr(value, "__name__", "")
        if isinstance(value, type) and issubclass(value, nn.Module) and getattr(nn, name, None) is value:
            return {"@torch_nn": name}  # an activation class such as torch.nn.Tanh
        if isinstance(value, BaseEstimator):
            return {"@estimator": self.estimator(value, where)}
        if isinstance(value, nn.Module):
            raise TypeError(
                f"{where} is a custom torch module ({type(value).__qualname__}); a skflow model file holds only "
                "data, never code, so it cannot carry it. Use joblib.dump to pickle the estimator (load such "
                "files only if you trust them)."
            )
        raise TypeError(
            f"{where} holds a {type(value).__module__}.{type(value).__qualname__}, which a skflow model file "
            "cannot hold (only plain data: numbers, strings, arrays, lists and dicts of them, and skflow "
            "estimators). Use joblib.dump to pickle the estimator (load such files only if you trust them)."
            + (" Set callbacks=None before saving: callbacks only matter during fit." if "callbacks" in where else "")
        )


def save(estimator: Any, path: str | os.PathLike, *, metadata: dict | None = None) -> None:
    """Write an estimator to a model file that loading can never execute.

    Hyperparameters and fitted attributes are stored as JSON, tensors and
    numeric arrays with safetensors; the skflow, torch and scikit-learn
    versions are recorded. The file is written to a temporary name and moved
    into place, so an interrupted save never leaves a partial file.

    Parameters
    ----------
    estimator : skflow estimator
        Any public skflow estimator, fitted or not, including
        :class:`~skflow.DensityOutlierDetector` over a skflow estimator.
    path : str or path-like
        Destination (conventionally ``*.skflow``).
    metadata : dict or None, default=None
        Plain data to store beside the estimator (strings, numbers, arrays,
        lists and dicts of them), e.g. the preprocessing an application
        applied; read back with :func:`read_metadata`.

    Raises
    ------
    TypeError
        If the estimator holds something that is code rather than data
        (a custom torch module, a callable, a callback, an estimator from
        outside skflow): such estimators can only be pickled, e.g. with
        :func:`joblib.dump`.
    """
    from safetensors.torch import save_file

    encoder = _Encoder()
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": _versions(),
        "estimator": encoder.estimator(estimator, "the estimator"),
        "metadata": encoder.value(metadata or {}, "metadata"),
    }
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot save to {path}: the folder {directory} does not exist.")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    os.close(handle)
    try:
        save_file(encoder.tensors, temporary, metadata={_METADATA_KEY: json.dumps(document)})
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


# ---------------------------------------------------------------------- #
# Loading
# ---------------------------------------------------------------------- #
class _Decoder:
    """Rebuilds estimators from the JSON document and the file's tensors."""

    def __init__(self, tensors: dict[str, torch.Tensor], device: torch.device | None) -> None:
        self.tensors = tensors
        self.device = device
        self.classes = allowed_classes()
        self.fallback_devices: set[str] = set()

    def tensor(self, key: Any) -> torch.Tensor:
        if not isinstance(key, str) or key not in self.tensors:
            raise ModelFileError(f"the file refers to a tensor {key!r} that it does not contain.")
        return self.tensors[key]

    def estimator(self, document: Any) -> Any:
        if not isinstance(document, dict) or not isinstance(document.get("class"), str):
            raise ModelFileError("the file's estimator entry is malformed.")
        name = document["class"]
        cls = self.classes.get(name)
        if cls is None:
            raise ModelFileError(
                f"the file names the class {name!r}, which is not one of skflow's estimators "
                f"({', '.join(sorted(self.classes))}); refusing to load it."
            )
        params, fitted = document.get("params"), document.get("fitted")
        if not isinstance(params, dict) or not isinstance(fitted, dict):
            raise ModelFileError(f"the file's entry for {name} is malformed.")
        try:
            estimator = cls(**{key: self.value(value) for key, value in params.items()})
            estimator._validate_params()
        except ModelFileError:
            raise
        except (TypeError, ValueError) as error:
            raise ModelFileError(f"the file's hyperparameters for {name} are invalid: {error}") from error
        modules = {}
        for key, value in fitted.items():
            if isinstance(value, dict) and "@module" in value:
                modules[key] = value
            else:
                setattr(estimator, key, self.value(value))
        for key, value in modules.items():
            setattr(estimator, key, self.module(estimator, value))
        if modules:
            self.place(estimator)
        return estimator

    def module(self, estimator: Any, document: dict) -> nn.Module:
        prefix, settings = document.get("@module"), document.get("settings", {})
        if not isinstance(prefix, str) or not isinstance(settings, dict):
            raise ModelFileError("the file's model entry is malformed.")
        try:
            model = estimator._empty_model()
        except (TypeError, ValueError, RuntimeError, MemoryError) as error:
            raise ModelFileError(f"the file's hyperparameters do not build a model: {error}") from error
        state = {key[len(prefix) :]: tensor for key, tensor in self.tensors.items() if key.startswith(prefix)}
        expected = model.state_dict()
        for key, tensor in state.items():
            if key in expected and tuple(expected[key].shape) != tuple(tensor.shape):
                raise ModelFileError(
                    f"tensor {key!r} has shape {tuple(tensor.shape)} in the file, but the model its "
                    f"hyperparameters build needs {tuple(expected[key].shape)}."
                )
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ModelFileError(f"the file's weights do not fit the model: {error}") from error
        submodules = dict(model.named_modules())
        for address, value in settings.items():
            path, _, key = str(address).rpartition(":")
            target = submodules.get(path)
            decoded = self.value(value)
            declared = getattr(type(target), key, None)
            if target is None or key.startswith("_") or not (declared is None or _is_plain(declared)):
                raise ModelFileError(f"the file sets an unknown model attribute {address!r}.")
            if not _is_plain(decoded):
                raise ModelFileError(f"the file sets model attribute {address!r} to a non-plain value.")
            object.__setattr__(target, key, decoded)
        return model.eval()

    def place(self, estimator: Any) -> None:
        """Move a rebuilt model to the requested device, or the fitted one when it exists here."""
        from .base import resolve_device

        fitted = getattr(estimator, "device_", torch.device("cpu"))
        if self.device is not None:
            target = self.device
        else:
            try:
                target = resolve_device(fitted)
            except ValueError:
                self.fallback_devices.add(str(fitted))
                target = torch.device("cpu")
        estimator.model_.to(target)
        estimator.device_ = target

    def value(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, dict) and len(value) >= 1:
            tag = next(iter(value))
            body = value[tag]
            if tag == "@float" and body in ("nan", "inf", "-inf"):
                return float(body)
            if tag == "@numpy" and body in (
                "bool",
                "float64",
                "float32",
                "float16",
                "int64",
                "int32",
                "int16",
                "int8",
                "uint8",
            ):
                return np.dtype(body).type(self.value(value.get("value")))
            if tag == "@list" and isinstance(body, list):
                return [self.value(item) for item in body]
            if tag == "@tuple" and isinstance(body, list):
                return tuple(self.value(item) for item in body)
            if tag == "@dict" and isinstance(body, list):
                items = {}
                for item in body:
                    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], (str, int))):
                        raise ModelFileError("the file holds a malformed dict entry.")
                    items[item[0]] = self.value(item[1])
                return items
            if tag == "@array":
                return self.tensor(body).numpy().copy()
            if tag == "@strings" and isinstance(body, list) and all(isinstance(item, str) for item in body):
                dtype = object if value.get("dtype") == "O" else str
                return np.array(body, dtype=dtype).reshape(value.get("shape", [len(body)]))
            if tag == "@tensor":
                tensor = self.tensor(body).clone()
                return tensor.to(self.device) if self.device is not None else tensor
            if tag == "@device" and isinstance(body, str):
                return torch.device(body)
            if tag == "@random_state" and isinstance(body, list) and len(body) == 5:
                state = np.random.RandomState()
                keys = np.asarray(self.value(body[1]), dtype=np.uint32)
                state.set_state((str(body[0]), keys, int(body[2]), int(body[3]), float(body[4])))
                return state
            if tag == "@torch_nn" and isinstance(body, str):
                cls = getattr(nn, body, None)
                if isinstance(cls, type) and issubclass(cls, nn.Module):
                    return cls
            if tag == "@estimator":
                return self.estimator(body)
        raise ModelFileError(f"the file holds a value skflow does not recognise: {str(value)[:80]!r}.")


def _read(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The JSON document and the tensors of a model file, both only parsed."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ModelFileError(f"{path} is not a skflow model file (or it is damaged): {error}") from error
    try:
        document = json.loads(metadata[_METADATA_KEY])
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{path} is a safetensors file but not a skflow model file.") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a skflow model file.")
    if document.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} uses model file format {document.get('format_version')!r}; this skflow reads {FORMAT_VERSION}."
        )
    return document, tensors


def read_metadata(path: str | os.PathLike) -> dict:
    """The ``metadata`` dict saved with :func:`save` (empty if none), without loading the estimator.

    Raises
    ------
    ModelFileError
        As :func:`load`, if the file is not a valid skflow model file.
    """
    document, tensors = _read(Path(path))
    metadata = _Decoder(tensors, None).value(document.get("metadata", {"@dict": []}))
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{path} holds malformed metadata.")
    return metadata


def load(path: str | os.PathLike, *, device: str | torch.device | None = None) -> Any:
    """Read an estimator written by :func:`save`, without executing anything from the file.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`skflow.save` (or ``skflow fit``).
    device : str, torch.device or None, default=None
        Where to put the model. None: the device it was fitted on when it
        exists here, else the CPU (with a warning).

    Returns
    -------
    estimator : skflow estimator
        Fitted exactly as saved: same hyperparameters, attributes and weights.

    Raises
    ------
    ModelFileError
        If the file is not a skflow model file, is truncated or malformed,
        names a class outside skflow's estimators, or holds weights that do
        not fit the model its hyperparameters build.
    FileNotFoundError
        If there is no such file.

    Warns
    -----
    ModelFileVersionWarning
        If the file was written with another version of skflow, torch or
        scikit-learn.
    """
    path = Path(path)
    document, tensors = _read(path)
    saved, current = document.get("versions") or {}, _versions()
    different = [
        f"{name} {saved.get(name)} (here {version})" for name, version in current.items() if saved.get(name) != version
    ]
    if different:
        warnings.warn(
            f"{path} was written with {', '.join(different)}; it should load, but scores may differ slightly. "
            "Save it again with this installation to silence this warning.",
            ModelFileVersionWarning,
            stacklevel=2,
        )
    target = None
    if device is not None:
        from .base import resolve_device

        target = resolve_device(device)
    decoder = _Decoder(tensors, target)
    estimator = decoder.estimator(document.get("estimator"))
    for fitted_device in sorted(decoder.fallback_devices):
        warnings.warn(
            f"The model was fitted on {fitted_device}, which is not available here; it stays on the CPU.",
            UserWarning,
            stacklevel=2,
        )
    return estimator
