"""The ``skflow`` command line: fit, score, detect and sample on CSV or Parquet.

Examples
--------
::

    skflow fit data.csv --model realnvp --param n_layers=4 --out model.skflow
    skflow score data.csv --model model.skflow --out scores.csv
    skflow detect data.csv --model realnvp --contamination 0.01 --out flagged.csv
    skflow fit gappy.csv --model maf --impute median --out model.skflow
    skflow sample --model model.skflow -n 1000 --out samples.csv
    skflow demo

Missing values stop fit, score and detect with a message naming the columns,
unless ``--dropna`` skips those rows or ``--impute mean|median`` fills them
(a model fitted with ``--impute`` keeps its training statistics for scoring).

Exit codes: 0 success, 1 a runtime failure (the data, the model file or the
fit; the message says which), 2 a usage error (arguments, hyperparameters,
an output folder that does not exist), 130 interrupted (Ctrl-C; nothing is
written). A user error never prints a Python traceback.

Model files are written by :func:`skflow.save`: plain data that loading
never executes.
"""

from __future__ import annotations

import argparse
import ast
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.utils._param_validation import InvalidParameterError

from . import __version__
from .outlier import DETECTOR_NOISE_STD, DensityOutlierDetector
from .persistence import ModelFileError, ModelFileVersionWarning, read_metadata
from .persistence import load as load_estimator
from .persistence import save as save_estimator
from .registry import FAMILIES
from .training import TrainingDivergedError

__all__ = ["main"]

# Parquet support is an optional extra of the package (pyproject.toml).
PARQUET_INSTALL = "pyarrow: pip install 'skflow[parquet]'"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_CODES_HELP = (
    "exit status: 0 success, 1 runtime failure (data, model file or fit), 2 usage error, 130 interrupted (Ctrl-C)"
)


class CommandError(Exception):
    """A problem the user can fix at run time; printed without a traceback, exit code 1."""

    exit_code = EXIT_FAILURE


class UsageError(CommandError):
    """A wrong argument or hyperparameter; printed without a traceback, exit code 2."""

    exit_code = EXIT_USAGE


# ---------------------------------------------------------------------- #
# Reading and writing
# ---------------------------------------------------------------------- #
def read_table(path: str, drop_non_numeric: bool = False) -> pd.DataFrame:
    """Read a CSV or Parquet file into a numeric DataFrame.

    Raises
    ------
    CommandError
        If the file is missing or unreadable, or has non-numeric columns
        (unless ``drop_non_numeric``), naming them.
    """
    file = Path(path)
    if not file.exists():
        raise CommandError(f"data file not found: {path}")
    try:
        if file.suffix.lower() in {".parquet", ".pq"}:
            table = pd.read_parquet(file)
        else:
            table = pd.read_csv(file)
    except ImportError as error:
        raise CommandError(f"reading {path} needs {PARQUET_INSTALL} ({error})") from error
    except (ValueError, OSError, pd.errors.ParserError) as error:
        raise CommandError(f"could not read {path}: {error}") from error
    if table.shape[0] == 0:
        # Before the dtype check: the columns of a header-only CSV read as text.
        raise CommandError(f"{path} has no rows (only a header)." if table.shape[1] else f"{path} is empty.")
    non_numeric = [str(column) for column in table.columns if not pd.api.types.is_numeric_dtype(table[column])]
    if non_numeric:
        if not drop_non_numeric:
            raise CommandError(
                f"{path} has non-numeric columns: {', '.join(non_numeric)}. "
                "Encode them as numbers, or pass --drop-non-numeric to ignore them."
            )
        table = table.drop(columns=non_numeric)
    if table.shape[1] == 0:
        raise CommandError(f"{path} has no numeric columns.")
    return table


def _cells(table: pd.DataFrame, bad: np.ndarray) -> str:
    """The first few cells flagged in ``bad`` (same shape as ``table``), by column name and row.

    Rows are counted from 1 among the data rows, after the header (a CSV's
    line number is one more).
    """
    values = table.to_numpy(dtype=np.float64, na_value=np.nan)
    rows, columns = np.nonzero(bad)
    cells = [
        f"column {table.columns[column]!r} row {row + 1} ({values[row, column]})"
        for row, column in zip(rows[:5], columns[:5], strict=True)
    ]
    return "; ".join(cells) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")


def check_finite(table: pd.DataFrame, path: str) -> None:
    """Raise a CommandError naming the columns and rows of missing or infinite cells."""
    bad = ~np.isfinite(table.to_numpy(dtype=np.float64, na_value=np.nan))
    if bad.any():
        raise CommandError(
            f"{path} has {int(bad.sum())} missing or infinite cell(s): {_cells(table, bad)}. "
            "Replace or drop them first (rows are counted from 1, after the header)."
        )


def check_output_folder(path: str | None) -> None:
    """Fail before any work when the folder of an output file does not exist."""
    if path is None:
        return
    folder = Path(path).parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {path}: the folder {folder} does not exist.")


def write_table(table: pd.DataFrame, path: str | None) -> None:
    """Write to CSV/Parquet by extension, or CSV on standard output when no path.

    A file is written under a temporary name and then moved into place, so
    an interrupted write leaves no partial file.
    """
    if path is None:
        table.to_csv(sys.stdout, index=False)
        return
    target = Path(path)
    temporary = target.with_name(f".{target.name}.partial")
    try:
        if target.suffix.lower() in {".parquet", ".pq"}:
            table.to_parquet(temporary, index=False)
        else:
            table.to_csv(temporary, index=False)
        temporary.replace(target)
    except ImportError as error:
        raise CommandError(f"writing {path} needs {PARQUET_INSTALL} ({error})") from error
    except OSError as error:
        raise CommandError(f"could not write {path}: {error}") from error
    finally:
        temporary.unlink(missing_ok=True)


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """Turn ``key=value`` strings into hyperparameters (Python literals or strings)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, separator, text = pair.partition("=")
        if not separator or not key:
            raise UsageError(f"--param expects key=value, got {pair!r}")
        try:
            params[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            params[key] = text
    return params


def make_estimator(family: str, params: dict[str, Any], verbose: int) -> Any:
    """A fresh estimator of the named family with the given hyperparameters."""
    estimator_class = FAMILIES.get(family.lower())
    if estimator_class is None:
        raise UsageError(f"unknown model family {family!r}; choose one of: {', '.join(FAMILIES)}")
    class_name = estimator_class.__name__
    valid = estimator_class().get_params()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise UsageError(
            f"{class_name} has no parameter(s) {', '.join(unknown)}; valid ones: {', '.join(sorted(valid))}"
        )
    params = {"verbose": verbose, **params}
    return estimator_class(**params)


def save_model(estimator: Any, path: str, imputer: dict | None = None, columns: list[str] | None = None) -> None:
    """Write a fitted estimator with :func:`skflow.save` (plain data; loading runs nothing).

    ``imputer`` (the training statistics of ``--impute``, reused when
    scoring) and ``columns`` (the training column names, when the estimator
    does not know them, e.g. after a streamed fit) travel as plain data in
    the file's metadata.
    """
    metadata = {key: value for key, value in (("imputer", imputer), ("columns", columns)) if value is not None}
    try:
        save_estimator(estimator, path, metadata=metadata)
    except OSError as error:
        raise CommandError(f"could not write {path}: {error}") from error


def load_model(path: str) -> tuple[Any, list[str] | None, dict | None]:
    """Load a model written by ``skflow fit`` or :func:`skflow.save`: its feature names (if any) and imputer."""
    if not Path(path).is_file():
        raise CommandError(f"model file not found: {path}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ModelFileVersionWarning)
        try:
            estimator = load_estimator(path)
            metadata = read_metadata(path)
            imputer = metadata.get("imputer")
        except ModelFileError as error:
            raise CommandError(f"{path} is not a model file written by 'skflow fit' or skflow.save: {error}") from error
    for warning in caught:
        print(f"skflow: warning: {warning.message}", file=sys.stderr)
    names = getattr(estimator, "feature_names_in_", metadata.get("columns"))
    columns = None if names is None else [str(name) for name in names]
    if imputer is not None and not _is_imputer(imputer, getattr(estimator, "n_features_in_", -1)):
        raise CommandError(f"{path} holds a malformed --impute entry.")
    return estimator, columns, imputer


def _is_imputer(imputer: Any, n_features: int) -> bool:
    """Whether ``imputer`` is what ``handle_missing`` saves: a strategy and one number per column."""
    return (
        isinstance(imputer, dict)
        and imputer.get("strategy") in ("mean", "median")
        and isinstance(imputer.get("statistics"), list)
        and len(imputer["statistics"]) == n_features
        and all(isinstance(value, float) for value in imputer["statistics"])
    )


def fit_estimator(estimator: Any, fit: Any) -> Any:
    """Run ``fit()``, turning the failures a user can cause into CommandErrors."""
    try:
        return fit()
    except InvalidParameterError as error:
        raise UsageError(f"invalid hyperparameter: {error}") from error
    except TrainingDivergedError as error:
        raise CommandError(f"fitting failed: {error}") from error
    except (MemoryError, torch.cuda.OutOfMemoryError) as error:
        raise CommandError(_out_of_memory(error)) from error
    except RuntimeError as error:
        if "alloc" in str(error).lower() or "memory" in str(error).lower():
            raise CommandError(_out_of_memory(error)) from error
        raise
    except ValueError as error:
        raise CommandError(f"fitting failed: {error}") from error


def _out_of_memory(error: BaseException) -> str:
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return (
        f"out of memory ({first_line[:200]}). A --param such as hidden_dims, n_layers or batch_size may be "
        "far too large for this machine."
    )


def _select_columns(table: pd.DataFrame, columns: list[str] | None, path: str, estimator: Any) -> pd.DataFrame:
    if columns is None:  # a model fitted on an unnamed array: columns by position
        n_features = getattr(estimator, "n_features_in_", table.shape[1])
        if table.shape[1] != n_features:
            raise CommandError(f"{path} has {table.shape[1]} columns; the model expects {n_features}.")
        return table
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise CommandError(f"{path} lacks column(s) the model was fitted on: {', '.join(missing)}")
    return table[columns]


def handle_missing(
    table: pd.DataFrame, path: str, args: argparse.Namespace, imputer: Any = None
) -> tuple[pd.DataFrame, np.ndarray, Any]:
    """Apply ``--dropna`` or ``--impute`` to a table before a model sees it.

    Parameters
    ----------
    table : DataFrame of shape (n_rows, n_columns)
        The numeric columns the model uses.
    path : str
        The file the table came from, for messages.
    args : argparse.Namespace
        The command's options: ``dropna`` (bool) and ``impute`` (None, "mean" or "median").
    imputer : dict or None
        The imputer saved with the model (``skflow fit --impute``),
        ``{"strategy": "mean" | "median", "statistics": [one float per
        column]}``: its training statistics fill the gaps. None: with
        ``--impute``, the statistics of ``table`` are used.

    Returns
    -------
    table : DataFrame of shape (n_kept, n_columns)
        Without missing values.
    kept : ndarray of shape (n_rows,), dtype bool
        Which input rows are in ``table`` (all of them unless ``--dropna``).
    imputer : dict or None
        The imputer used (as above), or None when nothing was imputed.

    Raises
    ------
    CommandError
        If the table has missing values and neither option was given (naming
        the columns), if ``--dropna`` leaves no row, or if ``--impute`` names
        another strategy than the imputer saved with the model.
    """
    missing = table.isna().to_numpy()
    kept = np.ones(len(table), dtype=bool)
    if args.dropna:
        kept = ~missing.any(axis=1)
        if not kept.any():
            raise CommandError(f"every row of {path} has a missing value; nothing is left after --dropna.")
        return table[kept], kept, None
    if args.impute is None:
        if missing.any():
            columns = [str(column) for column, gaps in zip(table.columns, missing.any(axis=0)) if gaps]
            raise CommandError(
                f"{path} has missing values ({int(missing.any(axis=1).sum())} rows; columns {', '.join(columns)}): "
                f"{_cells(table, missing)}. Pass --dropna to skip those rows, or --impute mean|median to fill them."
            )
        return table, kept, imputer
    from sklearn.impute import SimpleImputer

    if imputer is None:
        all_missing = [str(column) for column, empty in zip(table.columns, missing.all(axis=0)) if empty]
        if all_missing:
            raise CommandError(f"cannot impute columns of {path} that have no value at all: {', '.join(all_missing)}")
        # Kept as plain data (strategy and one statistic per column), which
        # the safe model file stores.
        statistics = SimpleImputer(strategy=args.impute).fit(table).statistics_
        imputer = {"strategy": args.impute, "statistics": [float(value) for value in statistics]}
    elif imputer["strategy"] != args.impute:
        strategy = imputer["strategy"]
        raise CommandError(
            f"the model was fitted with --impute {strategy}; its training {strategy}s fill the "
            f"gaps, so pass --impute {strategy} (or --dropna)."
        )
    filled = table.fillna(dict(zip(table.columns, imputer["statistics"], strict=True))).astype(np.float64)
    return filled, kept, imputer


def _verbosity(args: argparse.Namespace, writes_stdout: bool) -> int:
    """Progress bars only on a terminal, and never into a table on stdout."""
    if args.quiet or writes_stdout or not sys.stderr.isatty():
        return 0
    return 2


# ---------------------------------------------------------------------- #
# Commands
# ---------------------------------------------------------------------- #
def command_fit(args: argparse.Namespace) -> None:
    check_output_folder(args.out)  # before training, so no fit is lost to a typo
    if Path(args.data).is_dir():
        _fit_parquet_folder(args)
        return
    table = read_table(args.data, args.drop_non_numeric)
    table, _, imputer = handle_missing(table, args.data, args)
    check_finite(table, args.data)
    estimator = make_estimator(args.model, parse_params(args.param), _verbosity(args, writes_stdout=False))
    fit_estimator(estimator, lambda: estimator.fit(table))
    save_model(estimator, args.out, imputer)
    print(
        f"fitted {type(estimator).__name__} on {table.shape[0]} rows x {table.shape[1]} columns "
        f"({getattr(estimator, 'n_iter_', '?')} epochs); mean log-likelihood {estimator.score(table):.4f}; "
        f"saved to {args.out}",
        file=sys.stderr,
    )


def _fit_parquet_folder(args: argparse.Namespace) -> None:
    """``skflow fit FOLDER``: a streaming fit over the folder's Parquet files, one row group at a time."""
    from .streaming import ParquetSource

    if args.dropna or args.impute:
        raise CommandError("--dropna and --impute need the table in memory; a Parquet folder is streamed.")
    try:
        source = ParquetSource(args.data)
    except ImportError as error:
        raise CommandError(f"reading {args.data} needs an optional package: {error}") from error
    except (ValueError, OSError) as error:
        raise CommandError(f"could not read {args.data}: {error}") from error
    estimator = make_estimator(args.model, parse_params(args.param), _verbosity(args, writes_stdout=False))
    fit_estimator(estimator, lambda: estimator.fit(source))
    names = source.feature_names if source.feature_names is not None else range(source.n_features)
    save_model(estimator, args.out, columns=[str(column) for column in names])
    print(
        f"fitted {type(estimator).__name__} on {source.n_rows} rows x {source.n_features} columns streamed from "
        f"{source.n_chunks} row groups ({getattr(estimator, 'n_iter_', '?')} epochs); saved to {args.out}",
        file=sys.stderr,
    )


def command_score(args: argparse.Namespace) -> None:
    check_output_folder(args.out)
    estimator, columns, imputer = load_model(args.model)
    table = _select_columns(read_table(args.data, args.drop_non_numeric), columns, args.data, estimator)
    table, kept, _ = handle_missing(table, args.data, args, imputer)
    check_finite(table, args.data)
    scores = pd.DataFrame({"log_density": estimator.score_samples(table)})
    if args.dropna:
        # Rows were skipped: say which input row (0-based) each score belongs to.
        scores.insert(0, "row", np.flatnonzero(kept))
    write_table(scores, args.out)


def command_detect(args: argparse.Namespace) -> None:
    check_output_folder(args.out)
    table = read_table(args.data, args.drop_non_numeric)
    if Path(args.model).suffix == ".skflow" or Path(args.model).exists():
        estimator, columns, imputer = load_model(args.model)
        table = _select_columns(table, columns, args.data, estimator)
        complete, kept, _ = handle_missing(table, args.data, args, imputer)
        table = table[kept]
        check_finite(complete, args.data)
        scores = estimator.score_samples(complete)
        # A saved density model has no training scores here: flag the given
        # share of the rows scored now, those of lowest density.
        threshold = np.quantile(scores, args.contamination)
        outlier = scores < threshold
    else:
        # A family named here gets the detector's noise regularisation unless
        # the user sets noise_std, as DensityOutlierDetector's own default does.
        params = {"noise_std": DETECTOR_NOISE_STD, **parse_params(args.param)}
        estimator = make_estimator(args.model, params, _verbosity(args, writes_stdout=args.out is None))
        detector = DensityOutlierDetector(estimator=estimator, contamination=args.contamination)
        complete, kept, _ = handle_missing(table, args.data, args)
        table = table[kept]
        check_finite(complete, args.data)
        labels = fit_estimator(detector, lambda: detector.fit_predict(complete))
        scores = detector.score_samples(complete)
        outlier = labels == -1
    result = table.copy()
    result["score"] = scores
    result["outlier"] = outlier
    write_table(result, args.out)
    print(f"flagged {int(np.sum(outlier))} of {len(result)} rows as outliers", file=sys.stderr)


def command_sample(args: argparse.Namespace) -> None:
    if args.n_samples < 1:
        raise UsageError("-n must be a positive number of samples")
    check_output_folder(args.out)
    estimator, columns, _ = load_model(args.model)
    try:
        # A DataFrame keeps grid-mapped integer columns integer in the output file.
        samples = estimator.set_output(transform="pandas").sample(
            args.n_samples, random_state=args.seed, dequantized=args.dequantized
        )
    except (MemoryError, torch.cuda.OutOfMemoryError) as error:
        raise CommandError(_out_of_memory(error)) from error
    if columns is not None:
        samples.columns = columns
    write_table(samples, args.out)


def command_demo(args: argparse.Namespace) -> None:
    from .demo import main as demo_main

    demo_main([])


# ---------------------------------------------------------------------- #
# Parser
# ---------------------------------------------------------------------- #
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skflow", description="Normalizing flows on tabular files (CSV or Parquet).", epilog=EXIT_CODES_HELP
    )
    parser.add_argument("--version", action="version", version=f"skflow {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    families = ", ".join(FAMILIES)

    def add_data(command: argparse.ArgumentParser) -> None:
        command.add_argument("data", help="input table, CSV or Parquet (by extension)")
        command.add_argument(
            "--drop-non-numeric", action="store_true", help="ignore non-numeric columns instead of failing"
        )
        command.add_argument("--quiet", action="store_true", help="no progress output")
        missing = command.add_mutually_exclusive_group()
        missing.add_argument("--dropna", action="store_true", help="skip rows that have a missing value")
        missing.add_argument(
            "--impute",
            choices=["mean", "median"],
            help="fill missing values with each column's mean or median (of the training table when the "
            "model was fitted with --impute, else of DATA)",
        )

    fit = commands.add_parser(
        "fit",
        help="fit a flow to a table and save it",
        description="Fit a flow and save it. DATA may be a folder of Parquet files, streamed one row group at a time.",
        epilog=EXIT_CODES_HELP,
    )
    add_data(fit)
    fit.add_argument("--model", required=True, help=f"model family: {families}")
    fit.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="hyperparameter (repeatable)")
    fit.add_argument(
        "--out", required=True, help="where to save the fitted model (e.g. model.skflow; written by skflow.save)"
    )
    fit.set_defaults(handler=command_fit)

    score = commands.add_parser(
        "score",
        help="log-density of each row",
        description="Write the log-density of each row (column log_density).",
        epilog=EXIT_CODES_HELP,
    )
    add_data(score)
    score.add_argument("--model", required=True, help="a model file written by 'skflow fit'")
    score.add_argument("--out", help="output CSV/Parquet (default: CSV on standard output)")
    score.set_defaults(handler=command_score)

    detect = commands.add_parser(
        "detect",
        help="flag outliers",
        description="Score each row (higher = more normal) and flag outliers. With a family name the "
        "detector is fitted on DATA; with a model file the given share of DATA's rows of lowest density "
        "is flagged. Output: DATA's columns plus 'score' and 'outlier'.",
        epilog=EXIT_CODES_HELP,
    )
    add_data(detect)
    detect.add_argument("--model", required=True, help=f"a model file or a family to fit: {families}")
    detect.add_argument("--contamination", type=float, default=0.01, help="share of rows to flag (default 0.01)")
    detect.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"hyperparameter of the family (repeatable); noise_std defaults to {DETECTOR_NOISE_STD} here",
    )
    detect.add_argument("--out", help="output CSV/Parquet (default: CSV on standard output)")
    detect.set_defaults(handler=command_detect)

    sample = commands.add_parser(
        "sample", help="draw rows from a fitted model", description="Draw rows from a model.", epilog=EXIT_CODES_HELP
    )
    sample.add_argument("--model", required=True, help="a model file written by 'skflow fit'")
    sample.add_argument("-n", "--n-samples", type=int, default=1000, help="number of rows (default 1000)")
    sample.add_argument("--seed", type=int, default=None, help="seed for a repeatable draw")
    sample.add_argument(
        "--dequantized",
        choices=("grid", "continuous"),
        default="grid",
        help="columns dequantised in training: 'grid' maps draws to their values (integers stay integers, "
        "the default), 'continuous' keeps the continuous draw",
    )
    sample.add_argument("--out", help="output CSV/Parquet (default: CSV on standard output)")
    sample.set_defaults(handler=command_sample)

    demo = commands.add_parser("demo", help="RealNVP vs a Gaussian mixture on digits", description="The README demo.")
    demo.set_defaults(handler=command_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``skflow`` console script; returns the exit status (see the module docstring)."""
    try:
        args = build_parser().parse_args(argv)  # argparse exits with 2 on a usage error
        if getattr(args, "contamination", 0.01) is not None and not 0 < getattr(args, "contamination", 0.01) <= 0.5:
            raise UsageError("--contamination must lie in (0, 0.5]")
        args.handler(args)
    except KeyboardInterrupt:
        print("skflow: interrupted; no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CommandError as error:
        print(f"skflow: error: {error}", file=sys.stderr)
        return error.exit_code
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
