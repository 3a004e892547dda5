"""The ``skflow`` command line, driven as a user would: a subprocess on files."""

from __future__ import annotations

import shutil
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
    import skflow

    result = run_cli("score", "numeric.csv", "--model", str(fitted_model), "--out", "scores.csv", cwd=workdir)
    assert result.returncode == 0, result.stderr
    scores = pd.read_csv(workdir / "scores.csv")
    assert list(scores.columns) == ["log_density"]
    estimator = skflow.load(fitted_model)
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
    ("args", "code", "message"),
    [
        (("fit", "missing.csv", "--model", "realnvp", "--out", "m.skflow"), 1, "data file not found"),
        (("fit", "numeric.csv", "--model", "nosuchflow", "--out", "m.skflow"), 2, "unknown model family"),
        (
            ("fit", "numeric.csv", "--model", "realnvp", "--param", "n_layerz=2", "--out", "m"),
            2,
            "no parameter(s) n_layerz",
        ),
        (("score", "numeric.csv", "--model", "numeric.csv"), 1, "not a model file"),
        (
            ("fit", "numeric.csv", "--model", "realnvp", "--param", "max_epochs=0", "--out", "m"),
            2,
            "invalid hyperparameter: The 'max_epochs' parameter",
        ),
    ],
)
def test_user_errors_exit_with_an_actionable_message(
    workdir: Path,
    args: tuple,
    code: int,
    message: str,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In-process (same code path as the console script) to keep the suite fast.
    monkeypatch.chdir(workdir)
    assert main(list(args)) == code
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


@pytest.fixture(scope="module")
def gappy(workdir: Path) -> Path:
    """numeric.csv with holes: row 3 lacks 'a', row 10 lacks 'b' and 'c', row 407 (an outlier) lacks 'c'."""
    table = pd.read_csv(workdir / "numeric.csv")
    table.loc[3, "a"] = np.nan
    table.loc[10, ["b", "c"]] = np.nan
    table.loc[407, "c"] = np.nan
    table.to_csv(workdir / "gappy.csv", index=False)
    return workdir / "gappy.csv"


@pytest.mark.parametrize("command", ["fit", "score", "detect"])
def test_missing_values_without_an_option_are_named_not_a_traceback(
    workdir: Path, gappy: Path, fitted_model: Path, command: str
) -> None:
    model = "realnvp" if command in ("fit", "detect") else str(fitted_model)
    extra = ("--out", "m.skflow") if command == "fit" else ()
    result = (
        run_cli(command, gappy.name, "--model", model, *FAST, *extra, cwd=workdir)
        if command != "score"
        else (run_cli(command, gappy.name, "--model", model, cwd=workdir))
    )
    assert result.returncode == 1
    assert "missing values (3 rows; columns a, b, c)" in result.stderr
    assert "--dropna" in result.stderr and "--impute" in result.stderr and "Traceback" not in result.stderr


def test_dropna_skips_incomplete_rows_in_fit_score_and_detect(workdir: Path, gappy: Path, fitted_model: Path) -> None:
    fit = run_cli("fit", gappy.name, "--model", "realnvp", *FAST, "--dropna", "--out", "dropna.skflow", cwd=workdir)
    assert fit.returncode == 0, fit.stderr
    assert "on 405 rows x 3 columns" in fit.stderr

    score = run_cli("score", gappy.name, "--model", str(fitted_model), "--dropna", "--out", "d.csv", cwd=workdir)
    assert score.returncode == 0, score.stderr
    scores = pd.read_csv(workdir / "d.csv")
    assert list(scores.columns) == ["row", "log_density"]
    assert sorted(set(range(408)) - set(scores["row"])) == [3, 10, 407]
    # Each kept row's score is the model's log-density of that very input row.
    import skflow

    estimator = skflow.load(fitted_model)
    complete = pd.read_csv(workdir / "numeric.csv").iloc[scores["row"]]
    np.testing.assert_allclose(scores["log_density"], estimator.score_samples(complete), rtol=1e-6)

    detect = run_cli(
        "detect",
        gappy.name,
        "--model",
        str(fitted_model),
        "--dropna",
        "--contamination",
        "0.05",
        "--out",
        "dd.csv",
        cwd=workdir,
    )
    assert detect.returncode == 0, detect.stderr
    flagged = pd.read_csv(workdir / "dd.csv")
    assert len(flagged) == 405 and not flagged[["a", "b", "c"]].isna().any().any()


def test_impute_fills_with_training_statistics_saved_in_the_model(workdir: Path, gappy: Path) -> None:
    fit = run_cli(
        "fit", gappy.name, "--model", "realnvp", *FAST, "--impute", "median", "--out", "imp.skflow", cwd=workdir
    )
    assert fit.returncode == 0, fit.stderr
    assert "on 408 rows x 3 columns" in fit.stderr
    import skflow
    from skflow.persistence import read_metadata

    imputer = read_metadata(workdir / "imp.skflow")["imputer"]
    training = pd.read_csv(gappy)
    # The saved statistics are the training table's own column medians (NaN skipped).
    assert imputer["strategy"] == "median"
    np.testing.assert_allclose(imputer["statistics"], np.nanmedian(training.to_numpy(), axis=0))

    # Scoring a one-row table with a hole: the hole is filled with the training
    # median, not with a statistic of the (single-row) table being scored.
    probe = pd.DataFrame({"a": [np.nan], "b": [0.5], "c": [-0.25]})
    probe.to_csv(workdir / "probe.csv", index=False)
    score = run_cli("score", "probe.csv", "--model", "imp.skflow", "--impute", "median", "--out", "p.csv", cwd=workdir)
    assert score.returncode == 0, score.stderr
    filled = probe.fillna({"a": np.nanmedian(training["a"])})
    expected = skflow.load(workdir / "imp.skflow").score_samples(filled)
    np.testing.assert_allclose(pd.read_csv(workdir / "p.csv")["log_density"], expected, rtol=1e-6)

    other = run_cli("score", "probe.csv", "--model", "imp.skflow", "--impute", "mean", cwd=workdir)
    assert other.returncode == 1 and "fitted with --impute median" in other.stderr


def test_detect_with_a_family_imputes_and_keeps_the_input_values(workdir: Path, gappy: Path) -> None:
    result = run_cli(
        "detect",
        gappy.name,
        "--model",
        "realnvp",
        *FAST,
        "--impute",
        "mean",
        "--contamination",
        "0.02",
        "--out",
        "di.csv",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    flagged = pd.read_csv(workdir / "di.csv")
    assert len(flagged) == 408
    # The output shows the data as given (holes stay holes); every row is scored.
    assert flagged[["a", "b", "c"]].isna().sum().tolist() == [1, 1, 2]
    assert np.isfinite(flagged["score"]).all()
    planted = np.r_[np.zeros(400), np.ones(8)]
    assert roc_auc_score(planted, -flagged["score"]) > 0.99


def test_dropna_and_impute_are_exclusive(workdir: Path, gappy: Path) -> None:
    result = run_cli("score", gappy.name, "--model", "m", "--dropna", "--impute", "mean", cwd=workdir)
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


def test_parquet_without_pyarrow_names_the_extra(
    workdir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pyarrow(*args, **kwargs):
        raise ImportError("Missing optional dependency 'pyarrow'.")

    monkeypatch.chdir(workdir)
    (workdir / "table.parquet").write_bytes(b"PAR1")
    monkeypatch.setattr(pd, "read_parquet", no_pyarrow)
    assert main(["fit", "table.parquet", "--model", "realnvp", "--out", "m.skflow"]) == 1
    assert "pip install 'skflow[parquet]'" in capsys.readouterr().err


# ---------------------------------------------------------------------- #
# User errors never show a traceback; exit codes 0 / 1 / 2 / 130
# ---------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def bad_tables(tmp_path_factory: pytest.TempPathFactory, workdir: Path, fitted_model: Path) -> Path:
    """A folder of its own (so the checks for written files see only these commands), with bad tables."""
    directory = tmp_path_factory.mktemp("cli_errors")
    shutil.copy(workdir / "numeric.csv", directory / "numeric.csv")
    shutil.copy(fitted_model, directory / "model.skflow")
    rng = np.random.default_rng(1)
    table = pd.DataFrame(rng.normal(size=(50, 3)), columns=["a", "b", "c"])
    table.iloc[2, 1] = np.nan
    table.to_csv(directory / "with_nan.csv", index=False)
    table.iloc[2, 1] = 0.0
    table.iloc[40, 2] = -np.inf
    table.to_csv(directory / "with_inf.csv", index=False)
    (directory / "header_only.csv").write_text("a,b,c\n")
    return directory


CLI_USER_ERRORS = {
    "nan cell": (
        ("fit", "with_nan.csv", "--model", "realnvp", *FAST, "--out", "m.skflow"),
        1,
        "column 'b' row 3 (nan)",
    ),
    "inf cell": (("score", "with_inf.csv", "--model", "model.skflow"), 1, "column 'c' row 41 (-inf)"),
    "header only": (("fit", "header_only.csv", "--model", "realnvp", "--out", "m.skflow"), 1, "has no rows"),
    "diverged fit": (
        ("fit", "numeric.csv", "--model", "nice", "--param", "lr=1e3", "--param", "gradient_clip=None", "--out", "m"),
        1,
        "fitting failed: Training diverged",
    ),
    "absurd size": (
        ("fit", "numeric.csv", "--model", "realnvp", "--param", "hidden_dims=(10000000000000,)", "--out", "m.skflow"),
        1,
        "out of memory",
    ),
    "missing output folder": (
        ("fit", "numeric.csv", "--model", "realnvp", *FAST, "--out", "no/such/folder/m.skflow"),
        2,
        "the folder no/such/folder does not exist",
    ),
    "not a model": (("sample", "--model", "numeric.csv"), 1, "is not a model file"),
    "bad layer widths": (
        ("fit", "numeric.csv", "--model", "realnvp", "--param", "hidden_dims=(0,)", "--out", "m.skflow"),
        2,
        "must be a tuple or list of positive integers",
    ),
    "bad count": (("sample", "--model", "model.skflow", "-n", "0"), 2, "-n must be a positive number"),
}


@pytest.mark.parametrize("case", list(CLI_USER_ERRORS))
def test_user_errors_give_a_message_and_an_exit_code_never_a_traceback(case: str, bad_tables: Path) -> None:
    args, code, message = CLI_USER_ERRORS[case]
    result = run_cli(*args, cwd=bad_tables)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (bad_tables / "m.skflow").exists() and not (bad_tables / "m").exists()
    if case == "missing output folder":
        assert "fitted" not in result.stderr, "the folder must be checked before training"


def test_help_states_the_exit_codes(capsys: pytest.CaptureFixture) -> None:
    for command in ([], ["fit"], ["score"], ["detect"], ["sample"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "0 success, 1 runtime failure" in text and "2 usage error, 130 interrupted" in text


def test_model_files_are_safe_files(workdir: Path, fitted_model: Path) -> None:
    import skflow

    with pytest.raises(Exception) as not_a_pickle:
        import joblib

        joblib.load(fitted_model)
    assert not_a_pickle.value is not None
    loaded = skflow.load(fitted_model)
    assert list(loaded.feature_names_in_) == ["a", "b", "c"]
