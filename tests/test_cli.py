"""The ``skflow`` command line, driven as a user would: a subprocess on files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from skflow.cli import main

FAST = ["--param", "n_layers=2", "--param", "hidden_dims=(16,)", "--param", "max_epochs=5", "--param", "random_state=0"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "skflow.cli", *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV of 400 Gaussian rows plus 8 far outliers (the last rows) and a text column."""
    directory = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    values = np.vstack([rng.normal(size=(400, 3)), rng.normal(8.0, 0.5, size=(8, 3))])
    table = pd.DataFrame(values, columns=["a", "b", "c"])
    table.to_csv(directory / "numeric.csv", index=False)
    table.assign(city="x").to_csv(directory / "mixed.csv", index=False)
    return directory


@pytest.fixture(scope="module")
def fitted_model(workdir: Path) -> Path:
    result = run_cli("fit", "numeric.csv", "--model", "realnvp", *FAST, "--out", "model.skflow", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "fitted RealNVPDensity on 408 rows x 3 columns" in result.stderr
    return workdir / "model.skflow"


def test_score_writes_one_log_density_per_row_matching_the_python_api(workdir: Path, fitted_model: Path) -> None:
    import joblib

    result = run_cli("score", "numeric.csv", "--model", str(fitted_model), "--out", "scores.csv", cwd=workdir)
    assert result.returncode == 0, result.stderr
    scores = pd.read_csv(workdir / "scores.csv")
    assert list(scores.columns) == ["log_density"]
    estimator = joblib.load(fitted_model)["estimator"]
    expected = estimator.score_samples(pd.read_csv(workdir / "numeric.csv"))
    np.testing.assert_allclose(scores["log_density"].to_numpy(), expected, rtol=1e-6)


def test_score_to_stdout_is_a_csv(workdir: Path, fitted_model: Path) -> None:
    result = run_cli("score", "numeric.csv", "--model", str(fitted_model), cwd=workdir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "log_density" and len(lines) == 409


def test_detect_with_a_family_flags_the_planted_outliers(workdir: Path) -> None:
    result = run_cli(
        "detect",
        "numeric.csv",
        "--model",
        "realnvp",
        *FAST,
        "--contamination",
        "0.02",
        "--out",
        "flagged.csv",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    flagged = pd.read_csv(workdir / "flagged.csv")
    assert list(flagged.columns) == ["a", "b", "c", "score", "outlier"]
    planted = np.r_[np.zeros(400), np.ones(8)]
    assert roc_auc_score(planted, -flagged["score"]) > 0.99
    assert flagged["outlier"].to_numpy()[-8:].all()


def test_detect_with_a_saved_model_flags_the_requested_share(workdir: Path, fitted_model: Path) -> None:
    result = run_cli(
        "detect",
        "numeric.csv",
        "--model",
        str(fitted_model),
        "--contamination",
        "0.05",
        "--out",
        "f2.csv",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    flagged = pd.read_csv(workdir / "f2.csv")
    assert flagged["outlier"].sum() == pytest.approx(0.05 * 408, abs=1)


def test_sample_writes_rows_with_the_training_columns(workdir: Path, fitted_model: Path) -> None:
    result = run_cli("sample", "--model", str(fitted_model), "-n", "50", "--seed", "0", "--out", "s.csv", cwd=workdir)
    assert result.returncode == 0, result.stderr
    samples = pd.read_csv(workdir / "s.csv")
    assert samples.shape == (50, 3) and list(samples.columns) == ["a", "b", "c"]
    assert np.isfinite(samples.to_numpy()).all()


def test_non_numeric_columns_are_named_or_dropped(workdir: Path) -> None:
    rejected = run_cli("fit", "mixed.csv", "--model", "realnvp", *FAST, "--out", "m.skflow", cwd=workdir)
    assert rejected.returncode == 1
    assert "non-numeric columns: city" in rejected.stderr and "Traceback" not in rejected.stderr
    dropped = run_cli(
        "fit", "mixed.csv", "--model", "realnvp", *FAST, "--drop-non-numeric", "--out", "m.skflow", cwd=workdir
    )
    assert dropped.returncode == 0, dropped.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("fit", "missing.csv", "--model", "realnvp", "--out", "m.skflow"), "data file not found"),
        (("fit", "numeric.csv", "--model", "nosuchflow", "--out", "m.skflow"), "unknown model family"),
        (
            ("fit", "numeric.csv", "--model", "realnvp", "--param", "n_layerz=2", "--out", "m"),
            "no parameter(s) n_layerz",
        ),
        (("score", "numeric.csv", "--model", "numeric.csv"), "not a model file"),
        (("fit", "numeric.csv", "--model", "realnvp", "--param", "max_epochs=0", "--out", "m"), "fitting failed"),
    ],
)
def test_user_errors_exit_1_with_an_actionable_message(
    workdir: Path, args: tuple, message: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In-process (same code path as the console script) to keep the suite fast.
    monkeypatch.chdir(workdir)
    assert main(list(args)) == 1
    assert message in capsys.readouterr().err


def test_usage_errors_exit_2_and_every_command_has_help(
    workdir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workdir)
    with pytest.raises(SystemExit) as missing_arguments:
        main(["fit"])
    assert missing_arguments.value.code == 2
    assert main(["detect", "numeric.csv", "--model", "realnvp", "--contamination", "0.9"]) == 2
    for command in ("fit", "score", "detect", "sample", "demo"):
        with pytest.raises(SystemExit) as shown_help:
            main([command, "--help"])
        assert shown_help.value.code == 0 and "usage: skflow" in capsys.readouterr().out


def test_sample_keeps_integer_columns_integer_and_in_range(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pd.DataFrame({"digit": rng.integers(0, 10, 300), "x": rng.normal(size=300)}).to_csv(tmp_path / "t.csv", index=False)
    assert run_cli("fit", "t.csv", "--model", "realnvp", *FAST, "--out", "m.skflow", cwd=tmp_path).returncode == 0
    result = run_cli("sample", "--model", "m.skflow", "-n", "200", "--seed", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.strip().splitlines()
    digits = [row.split(",")[0] for row in rows]
    assert header == "digit,x" and all(digit.isdigit() and 0 <= int(digit) <= 9 for digit in digits)
    result = run_cli("sample", "--model", "m.skflow", "-n", "20", "--dequantized", "continuous", cwd=tmp_path)
    assert any("." in row.split(",")[0] for row in result.stdout.strip().splitlines()[1:])
