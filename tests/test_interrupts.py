"""Ctrl-C during fit: the KeyboardInterrupt reaches the caller (skorch would
swallow it and return a half-trained model) and an earlier fit survives
exactly, for every registered family; a real SIGINT ends ``skflow fit`` with
exit status 130 and no model file."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from skorch.callbacks import Callback, EarlyStopping

from tests.helpers import correlated_data, estimator_params, fitted_estimator, fresh_estimator

REPO_ROOT = Path(__file__).resolve().parents[1]
X_FIT = correlated_data(300, seed=2)
X_SCORE = correlated_data(40, seed=4)


class InterruptMidEpoch(Callback):
    """Raises KeyboardInterrupt after the second training batch of the second epoch, as Ctrl-C would."""

    def initialize(self) -> InterruptMidEpoch:
        self.batches = 0
        return self

    def on_batch_end(self, net, batch=None, training=False, **kwargs) -> None:
        if training and len(net.history) == 2:
            self.batches += 1
            if self.batches == 2:
                raise KeyboardInterrupt


@pytest.mark.parametrize("index", estimator_params("skflow_interrupt"))
def test_interrupt_propagates_and_keeps_the_earlier_fit_exactly(index: int) -> None:
    estimator = pickle.loads(pickle.dumps(fitted_estimator(index)))  # a private fitted copy
    before_scores = estimator.score_samples(X_SCORE)
    estimator.set_params(callbacks=[InterruptMidEpoch()], max_epochs=5, batch_size=64)
    before = dict(vars(estimator))
    weights = {key: value.clone() for key, value in estimator.model_.state_dict().items()}
    params = estimator.get_params()
    with pytest.raises(KeyboardInterrupt):
        estimator.fit(X_FIT)
    assert (
        all(vars(estimator)[key] is value for key, value in before.items()) and vars(estimator).keys() == before.keys()
    )
    for key, value in estimator.model_.state_dict().items():
        assert value.equal(weights[key]), f"weight {key} changed"
    np.testing.assert_array_equal(estimator.score_samples(X_SCORE), before_scores)
    assert estimator.get_params() == params


@pytest.mark.parametrize("index", estimator_params("skflow_interrupt"))
def test_interrupted_first_fit_leaves_the_estimator_unfitted(index: int) -> None:
    estimator = fresh_estimator(index, callbacks=[InterruptMidEpoch()], max_epochs=5, batch_size=64)
    with pytest.raises(KeyboardInterrupt):
        estimator.fit(X_FIT)
    assert not hasattr(estimator, "model_") and not hasattr(estimator, "n_features_in_")


def test_a_callback_that_stops_training_the_skorch_way_still_just_stops() -> None:
    # skorch callbacks end training by raising KeyboardInterrupt from on_epoch_end;
    # that is a request to stop, not the user's Ctrl-C.
    estimator = fresh_estimator(0, max_epochs=200, patience=None, validation_fraction=0.2)
    estimator.set_params(callbacks=[EarlyStopping(patience=1, threshold=10.0, threshold_mode="abs")])
    estimator.fit(X_FIT)
    assert estimator.n_iter_ == 2


_CLI_UNDER_SIGINT = """
import sys
from skflow.cli import main
print("ready", flush=True)
sys.exit(main(sys.argv[1:]))
"""


def test_real_sigint_exits_130_and_writes_no_model_file(tmp_path: Path) -> None:
    np.savetxt(tmp_path / "data.csv", correlated_data(2000), delimiter=",", header="a,b,c", comments="")
    args = ["fit", "data.csv", "--model", "realnvp", "--param", "max_epochs=100000", "--param", "patience=None"]
    process = subprocess.Popen(
        [sys.executable, "-c", _CLI_UNDER_SIGINT, *args, "--out", "model.skflow"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))},
    )
    try:
        assert process.stdout.readline().strip() == "ready"  # skflow imported; training starts next
        time.sleep(3.0)
        assert process.poll() is None, "the fit ended before it could be interrupted"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data.csv"], "an interrupted fit wrote a file"


class InterruptFirstEpoch(Callback):
    """Raises KeyboardInterrupt after the second training batch of the first epoch."""

    def initialize(self) -> InterruptFirstEpoch:
        self.batches = 0
        return self

    def on_batch_end(self, net, batch=None, training=False, **kwargs) -> None:
        self.batches += training
        if self.batches == 2:
            raise KeyboardInterrupt


@pytest.mark.parametrize("how", ["warm_start", "partial_fit"])
def test_interrupted_continuation_keeps_the_earlier_fit_exactly(how: str) -> None:
    estimator = pickle.loads(pickle.dumps(fitted_estimator(0)))
    before_scores = estimator.score_samples(X_SCORE)
    weights = {key: value.clone() for key, value in estimator.model_.state_dict().items()}
    estimator.set_params(callbacks=[InterruptFirstEpoch()], batch_size=32, warm_start=how == "warm_start")
    n_iter = estimator.n_iter_
    with pytest.raises(KeyboardInterrupt):
        estimator.fit(X_FIT) if how == "warm_start" else estimator.partial_fit(X_FIT)
    assert estimator.n_iter_ == n_iter
    for key, value in estimator.model_.state_dict().items():
        assert value.equal(weights[key]), f"weight {key} changed"
    np.testing.assert_array_equal(estimator.score_samples(X_SCORE), before_scores)
