"""Sphinx helpers of skflow's documentation.

* ``markdown-tables``: renders a markdown report written by a benchmark
  script (headings, paragraphs, bullet lists and pipe tables) in place, so
  the documentation shows the numbers of ``benchmarks/results/`` exactly as
  the scripts wrote them, and follows them when they are regenerated.
* ``benchmark-table``: renders one table from a JSON result file of
  ``benchmarks/results/``; each table layout is a function below.
* Checks, run at the start of every build, that ``api.rst`` lists every
  name of ``skflow.__all__`` and ``skflow.flows.__all__`` (so a new public
  name cannot stay undocumented) and that every ``examples/plot_*.py``
  starts with the title sphinx-gallery needs.
* Two docstring adjustments for rendering: members that a class inherits
  from scikit-learn or torch are left to those projects' documentation, and
  trailing underscores in parameter types (``ndarray of shape
  (n_features_in_,)``, scikit-learn's convention) are escaped, since rst
  reads ``name_`` as a link.
* A resolver for cross-references that name an object by the module it is
  defined in (``skflow.base.FlowEstimator``) while the API pages document it
  where users import it from (``skflow.FlowEstimator``).
"""

from __future__ import annotations

import ast
import importlib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import make_refnode

logger = logging.getLogger(__name__)

# A markdown column separator row: | --- | ---: | :---: |
_SEPARATOR = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_INLINE_CODE = re.compile(r"(?<!`)`([^`]+)`(?!`)")


def _markdown_inline_to_rst(text: str) -> str:
    """Markdown inline code to rst literals; bold (``**x**``) is the same in both."""
    return _INLINE_CODE.sub(lambda match: f"``{match.group(1)}``", text)


def _split_row(line: str) -> list[str]:
    line = line.strip().removeprefix("|").removesuffix("|")
    return [cell.strip() for cell in line.split("|")]


def _numeric_columns(separator: str) -> list[bool]:
    return [cell.endswith(":") and not cell.startswith(":") for cell in _split_row(separator)]


class _TableBuilder(SphinxDirective):
    """Builds a docutils table whose cells are parsed as inline rst."""

    def build_table(
        self, header: list[str], rows: list[list[str]], right_aligned: list[bool], caption: str | None = None
    ) -> nodes.table:
        table = nodes.table(classes=["skflow-results"])
        if caption:
            title, _ = self.state.inline_text(caption, self.lineno)
            table += nodes.title("", "", *title)
        group = nodes.tgroup(cols=len(header))
        table += group
        for _ in header:
            group += nodes.colspec(colwidth=1)
        head = nodes.thead()
        head += self._row(header, right_aligned)
        group += head
        body = nodes.tbody()
        for cells in rows:
            padded = list(cells) + [""] * (len(header) - len(cells))
            body += self._row(padded[: len(header)], right_aligned)
        group += body
        return table

    def _row(self, cells: list[str], right_aligned: list[bool]) -> nodes.row:
        row = nodes.row()
        for index, text in enumerate(cells):
            entry = nodes.entry(classes=["text-end"] if index < len(right_aligned) and right_aligned[index] else [])
            if text:
                inline, messages = self.state.inline_text(_markdown_inline_to_rst(text), self.lineno)
                entry += nodes.paragraph("", "", *inline)
                entry += messages
            row += entry
        return row

    def source_path(self) -> Path:
        relative, absolute = self.env.relfn2path(self.arguments[0], self.env.docname)
        self.env.note_dependency(relative)
        return Path(absolute)


class MarkdownTables(_TableBuilder):
    """Render a benchmark script's markdown report.

    The argument is the markdown file, relative to the current document. ``#``
    headings are dropped (the page gives its own title), ``##`` headings
    become rubrics, pipe tables become tables, and other paragraphs are parsed
    as rst after inline code is converted. ``:json-key:`` reads the markdown
    from a key of a JSON file instead.
    """

    required_arguments = 1
    option_spec: ClassVar[dict] = {"json-key": directives.unchanged, "only-sections": directives.unchanged}
    # ``:only-sections:`` takes ``##`` headings separated by semicolons; the
    # text before the first ``##`` heading (the command line) is always kept.

    def run(self) -> list[nodes.Node]:
        path = self.source_path()
        text = path.read_text(encoding="utf-8")
        if "json-key" in self.options:
            text = json.loads(text)[self.options["json-key"]]
        wanted = None
        if "only-sections" in self.options:
            wanted = {name.strip() for name in self.options["only-sections"].split(";")}
        result: list[nodes.Node] = []
        section: str | None = None
        for block in re.split(r"\n\s*\n", text.strip()):
            lines = block.splitlines()
            first = lines[0].strip()
            if first.startswith("## ") and len(lines) == 1:
                section = first[3:].strip()
                if wanted is None or section in wanted:
                    result.append(nodes.rubric(section, section))
                continue
            if first.startswith("# ") and len(lines) == 1:
                continue
            if wanted is not None and section is not None and section not in wanted:
                continue
            if len(lines) >= 2 and first.startswith("|") and _SEPARATOR.match(lines[1].strip()):
                header = _split_row(lines[0])
                rows = [_split_row(line) for line in lines[2:] if line.strip()]
                result.append(self.build_table(header, rows, _numeric_columns(lines[1])))
                continue
            container = nodes.container()
            content = StringList([_markdown_inline_to_rst(line) for line in lines], source=str(path))
            self.state.nested_parse(content, self.content_offset, container)
            result.extend(container.children)
        return result


# ---------------------------------------------------------------------- #
# Tables from the JSON result files
# ---------------------------------------------------------------------- #
def _number(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    value = float(value)
    if math.isnan(value):
        return ""
    return f"{value:,.{digits}f}"


Table = tuple[list[str], list[list[str]], list[bool]]


def _tabular_density(data: Any) -> Table:
    header = [
        "dataset", "train rows", "features",
        "RealNVP mean", "RealNVP 1% quantile", "RealNVP min", "RealNVP s", "RealNVP epochs",
        "GMM mean", "GMM 1% quantile", "GMM min", "GMM config", "higher mean",
    ]  # fmt: skip
    rows = []
    for record in data:
        flow, mixture = record["realnvp"], record["gmm"]
        rows.append([
            record["dataset"], str(record["n_train"]), str(record["n_features"]),
            _number(flow["mean"]), _number(flow["q01"]), _number(flow["min"]), _number(flow["seconds"], 1),
            str(flow["epochs"]),
            _number(mixture["mean"]), _number(mixture["q01"]), _number(mixture["min"]), mixture["config"],
            "RealNVP" if flow["mean"] > mixture["mean"] else "GMM",
        ])  # fmt: skip
    return header, rows, [False] + [True] * 10 + [False, False]


def _glow_digits_bpd(data: Any) -> Table:
    header = ["model", "test bits/dim", "train bits/dim", "fit s", "epochs (best)", "parameters"]
    rows = []
    for record in data["results"]:
        epochs = "" if record["epochs"] is None else f"{record['epochs']} ({record['best_epoch']})"
        rows.append([
            record["model"], _number(record["test_bpd"], 3), _number(record["train_bpd"], 3),
            _number(record["fit_seconds"], 0), epochs, f"{record['n_parameters']:,}",
        ])  # fmt: skip
    return header, rows, [False, True, True, True, True, True]


def _continuous_rows(records: list[dict], with_dataset: bool) -> Table:
    header = (["dataset"] if with_dataset else []) + [
        "model", "epochs", "s/epoch", "fit s", "score s", "test log-lik", "NFE at evaluation",
    ]  # fmt: skip
    rows = []
    for record in records:
        nfe = record.get("nfe_at_evaluation")
        rows.append(([record["dataset"]] if with_dataset else []) + [
            record["model"], str(record["epochs"]), _number(record["seconds_per_epoch"], 3),
            _number(record["fit_seconds"], 1), _number(record["score_seconds"], 2),
            _number(record["test_log_likelihood"], 3), "" if nfe is None else str(nfe),
        ])  # fmt: skip
    return header, rows, ([False] if with_dataset else []) + [False] + [True] * 6


def _continuous_density(data: Any) -> Table:
    return _continuous_rows(data["density"], with_dataset=True)


def _continuous_rnode(data: Any) -> Table:
    return _continuous_rows(data["rnode"], with_dataset=False)


def _continuous_zuko(data: Any) -> Table:
    header, rows, right = _continuous_rows(data["zuko"], with_dataset=False)
    for row, record in zip(rows, data["zuko"], strict=True):
        row.append(f"{record['n_parameters']:,}")
    return header + ["parameters"], rows, right + [True]


def _fif_steps(data: Any) -> Table:
    header = ["latent dim d", "autoencoder ms", "FIF ms", "exact ms", "FIF / autoencoder", "exact / FIF"]
    rows = [
        [
            str(record["n_components"]), _number(record["autoencoder_ms"], 1), _number(record["fif_ms"], 1),
            _number(record["exact_ms"], 1), _number(record["fif_over_autoencoder"], 2) + "x",
            _number(record["exact_over_fif"], 2) + "x",
        ]
        for record in data["step_costs"]
    ]  # fmt: skip
    return header, rows, [True] * 6


def _fif_digits(data: Any) -> Table:
    header = [
        "components", "FIF MSE/pixel", "PCA MSE/pixel", "FIF log-lik", "FIF on-manifold log-lik",
        "PCA log-lik", "FIF epochs (best)", "FIF fit s",
    ]  # fmt: skip
    rows = [
        [
            str(record["n_components"]), _number(record["fif_mse"]), _number(record["pca_mse"]),
            _number(record["fif_loglik"], 1), _number(record["fif_manifold_loglik"], 1),
            _number(record["pca_loglik"], 1), f"{record['fif_epochs']} ({record['fif_best_epoch']})",
            _number(record["fif_fit_seconds"], 0),
        ]
        for record in data["digits"]
    ]  # fmt: skip
    return header, rows, [True] * 8


def _planar_orientation(data: Any) -> Table:
    header = ["dataset", "model", "layers", "test log-lik", "epochs", "seconds"]
    rows = [
        [
            record["dataset"], record["model"], "" if record["n_layers"] is None else str(record["n_layers"]),
            _number(record["test_loglik"], 3), "" if record["epochs"] is None else str(record["epochs"]),
            _number(record["seconds"], 1),
        ]
        for record in data["rows"]
    ]  # fmt: skip
    return header, rows, [False, False, True, True, True, True]


TABLES: dict[str, Callable[[Any], Table]] = {
    "tabular_density": _tabular_density,
    "glow_digits_bpd": _glow_digits_bpd,
    "continuous_density": _continuous_density,
    "continuous_rnode": _continuous_rnode,
    "continuous_zuko": _continuous_zuko,
    "fif_steps": _fif_steps,
    "fif_digits": _fif_digits,
    "planar_orientation": _planar_orientation,
}


class BenchmarkTable(_TableBuilder):
    """One table from a JSON file of ``benchmarks/results/``.

    The argument is the JSON file, relative to the current document;
    ``:layout:`` names the function of ``TABLES`` that reads it. The caption
    names the file the numbers come from.
    """

    required_arguments = 1
    option_spec: ClassVar[dict] = {"layout": directives.unchanged_required}

    def run(self) -> list[nodes.Node]:
        path = self.source_path()
        layout = self.options["layout"]
        if layout not in TABLES:
            raise self.error(f"unknown benchmark table layout {layout!r}; known: {', '.join(TABLES)}")
        header, rows, right = TABLES[layout](json.loads(path.read_text(encoding="utf-8")))
        caption = f"From ``benchmarks/results/{path.name}``"
        return [self.build_table(header, rows, right, caption)]


# ---------------------------------------------------------------------- #
# Docstrings
# ---------------------------------------------------------------------- #
def skip_foreign_member(app: Sphinx, what: str, name: str, obj: Any, skip: bool, options: Any) -> bool | None:
    """Leave out members defined outside skflow (scikit-learn's mixins, torch's Module)."""
    if what != "class":
        return None
    target = obj.fget if isinstance(obj, property) else obj
    module = getattr(target, "__module__", None)
    if isinstance(module, str) and module.startswith("skflow"):
        return None
    return True


_PARAMETER_LINE = re.compile(r"^(\s*\*\*.+?\*\* : )(.+)$")
_TRAILING_UNDERSCORE = re.compile(r"(?<=\w)_(?=\W|$)")


def escape_type_underscores(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """``(n_features_in_,)`` in a numpydoc type is text, not a link target (runs after numpydoc)."""
    for index, line in enumerate(lines):
        match = _PARAMETER_LINE.match(line)
        if match is None:
            continue
        pieces = match.group(2).split("`")
        # Even pieces lie outside backticks; roles and literals stay as written.
        pieces[::2] = [_TRAILING_UNDERSCORE.sub(r"\\_", piece) for piece in pieces[::2]]
        lines[index] = match.group(1) + "`".join(pieces)


# ---------------------------------------------------------------------- #
# Every public name is in the API reference
# ---------------------------------------------------------------------- #
def check_api_coverage(app: Sphinx) -> None:
    api = (Path(app.srcdir) / "api.rst").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\s{3,}~?([\w.]+)\s*$", api, flags=re.MULTILINE))
    listed = {name.rsplit(".", 1)[-1] for name in listed}
    for module_name in ("skflow", "skflow.flows"):
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if not name.startswith("__") and name not in listed:
                logger.warning(f"docs/api.rst does not list {module_name}.{name}, a public name of {module_name}")


# ---------------------------------------------------------------------- #
# Gallery examples have a title
# ---------------------------------------------------------------------- #
def check_example_titles(app: Sphinx) -> None:
    """Say plainly which example lacks the title line sphinx-gallery needs.

    Without it sphinx-gallery still renders the page, but untitled, and the
    build then fails on warnings that do not name the cause.
    """
    examples_dirs = app.config.sphinx_gallery_conf.get("examples_dirs", [])
    for directory in [examples_dirs] if isinstance(examples_dirs, str) else examples_dirs:
        for path in sorted((Path(app.srcdir) / directory).glob("plot_*.py")):
            docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
            lines = docstring.strip().splitlines()
            title = lines[0].strip() if lines else ""
            underline = lines[1].strip() if len(lines) > 1 else ""
            if not title or len(underline) < len(title) or set(underline) != {"="}:
                logger.warning(
                    f"{path.name}: the module docstring must start with a title line underlined with '=' "
                    "(sphinx-gallery's format)"
                )


def remove_stale_examples(app: Sphinx) -> None:
    """Delete the gallery pages of examples that no longer exist.

    sphinx-gallery keeps them, and an orphaned page fails the build. Runs
    before sphinx-gallery writes the gallery.
    """
    conf = app.config.sphinx_gallery_conf
    pairs = zip(
        [conf["examples_dirs"]] if isinstance(conf["examples_dirs"], str) else conf["examples_dirs"],
        [conf["gallery_dirs"]] if isinstance(conf["gallery_dirs"], str) else conf["gallery_dirs"],
        strict=True,
    )
    for examples_dir, gallery_dir in pairs:
        sources = {path.stem for path in (Path(app.srcdir) / examples_dir).glob("plot_*.py")}
        for page in (Path(app.srcdir) / gallery_dir).glob("plot_*"):
            if page.is_file() and page.name.split(".")[0] not in sources:
                page.unlink()


# ---------------------------------------------------------------------- #
# skflow.<module>.Name -> the page that documents skflow.Name
# ---------------------------------------------------------------------- #
def _module_prefix(target: str) -> int:
    """Number of leading components of ``target`` that form an importable module."""
    parts = target.split(".")
    for count in range(len(parts) - 1, 0, -1):
        try:
            importlib.import_module(".".join(parts[:count]))
        except ImportError:
            continue
        return count
    return 0


def resolve_alias(app: Sphinx, env: Any, node: nodes.Element, contnode: nodes.Node) -> nodes.Node | None:
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget") or ""
    if target.startswith("skflow."):
        suffix = ".".join(target.split(".")[_module_prefix(target) :])
    elif "." not in target and (node.get("py:module") or "").startswith("skflow"):
        suffix = target
    else:
        return None
    if not suffix:
        return None
    objects = env.get_domain("py").objects
    matches = [name for name in objects if name.startswith("skflow.") and name.endswith("." + suffix)]
    if len(matches) != 1:
        return None
    entry = objects[matches[0]]
    return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, matches[0])


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("markdown-tables", MarkdownTables)
    app.add_directive("benchmark-table", BenchmarkTable)
    app.connect("builder-inited", check_api_coverage)
    app.connect("builder-inited", check_example_titles)
    app.connect("builder-inited", remove_stale_examples, priority=100)
    app.connect("autodoc-skip-member", skip_foreign_member)
    app.connect("autodoc-process-docstring", escape_type_underscores, priority=900)
    app.connect("missing-reference", resolve_alias)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
