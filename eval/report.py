"""Human-readable reports of an analysis directory (``analysis.json`` + ``plots/``, see ``groupcc analyze``).

The report is built once as a list of blocks (headings, paragraphs, tables of strings, figures) and rendered
twice: ``report.html`` is self-contained and offline (inline style, plots embedded as base64 ``data:`` URLs),
``report.md`` uses GitHub-flavoured Markdown tables and links the plots relative to itself.

A report may be built from someone else's analysis directory, so it reads nothing outside it
(:func:`read_inside`): every file named in ``analysis.json`` is resolved (symbolic links followed) and must lie
inside the resolved directory, be a regular file (not a device such as ``/dev/zero``, a FIFO or a directory) with
no other name (a hard link inside the directory to a file outside it resolves inside, so any file with more than
one link is refused) and hold at most :data:`MAX_FILE_BYTES`; plots must also be PNG files and embed at most :data:`MAX_EMBEDDED_BYTES` in
all. A plot that fails is skipped: the report says so in its place and a one-line warning goes to stderr. An
``analysis.json`` that fails is refused with a one-line error. Within it, a field of the wrong JSON type (a list
where an object belongs) reads as missing, shown as a dash like a field that is absent.
"""

from __future__ import annotations

import base64
import html
import json
import math
import mimetypes
import os
import re
import stat
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from groupcc.errors import GroupccError
from groupcc.training.runs import make_directory, write_text

ANALYSIS_FILE = "analysis.json"
ANALYSIS_SUBDIR = "analysis"
FORMAT = "groupcc-analysis"
MISSING = "–"
DICTIONARY_ORDER = ("crosscoder", "sae")
DISPLAY_NAMES = {"crosscoder": "Crosscoder", "sae": "SAE"}
#: Largest file the report reads (``analysis.json`` or one plot): 64 MiB. groupcc's own plots are well under 1 MB.
MAX_FILE_BYTES = 64 * 2**20
#: Most plot bytes one report embeds (a list naming one big file many times would otherwise multiply it): 256 MiB.
MAX_EMBEDDED_BYTES = 256 * 2**20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Figure:
    path: Path
    data: bytes
    title: str
    caption: str


Block = Heading | Paragraph | Table | Figure


# ---------------------------------------------------------------------------------------------- finding, reading


def find_analysis(run: str | Path) -> Path:
    """The analysis directory of ``run``: ``run`` itself when it holds ``analysis.json``, else ``run/analysis``.
    A missing, unreadable or foreign ``analysis.json`` raises a one-line :class:`GroupccError`."""
    return load_analysis(run)[0]


def load_analysis(run: str | Path) -> tuple[Path, dict]:
    """The analysis directory of ``run`` (see :func:`find_analysis`) and its parsed ``analysis.json``."""
    directory = _locate(Path(run))
    return directory, read_analysis(directory / ANALYSIS_FILE)


def _locate(run: Path) -> Path:
    for directory in (run, run / ANALYSIS_SUBDIR):
        if (directory / ANALYSIS_FILE).is_file():
            return directory
    raise GroupccError(
        f"{str(run)!r} is not an analysis directory: expected {ANALYSIS_FILE} in it or in its {ANALYSIS_SUBDIR}/ subfolder"
    )


def read_analysis(file: str | Path) -> dict:
    """Parse an ``analysis.json`` (read with :func:`read_inside` its own directory); a corrupt, unreadable or
    oversized file, one outside its directory, or another format raises a one-line :class:`GroupccError`."""
    file = Path(file)
    data = read_inside(file.parent, file.name)
    try:
        analysis = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GroupccError(f"{str(file)!r} is corrupt: {err}") from None
    if not isinstance(analysis, dict) or analysis.get("format") != FORMAT:
        raise GroupccError(f"{str(file)!r} is not a groupcc analysis: expected format {FORMAT!r}")
    return analysis


def resolve_inside(directory: str | Path, name: str) -> Path:
    """``directory / name`` with every symbolic link resolved, or a one-line :class:`GroupccError` when that is
    not strictly inside the resolved ``directory`` (``../x``, an absolute path, a link to elsewhere)."""
    try:
        root = Path(directory).resolve()
        target = (root / name).resolve()
    except (OSError, ValueError, RuntimeError) as err:  # a NUL byte, a name too long, a loop of links
        raise GroupccError(f"{name!r} cannot be resolved: {err}") from None
    if target == root or not target.is_relative_to(root):
        raise GroupccError(f"{name!r} is outside the analysis directory {str(root)!r}")
    return target


def read_inside(directory: str | Path, name: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file ``name`` inside ``directory`` (:func:`resolve_inside`), at most ``limit``
    bytes; otherwise a one-line :class:`GroupccError` saying why.

    The resolved path is opened without following a final link and without blocking (a FIFO), and the type and
    size are checked on the open descriptor, so what is checked is what is read; at most ``limit + 1`` bytes are
    read even if the file grows meanwhile."""
    target = resolve_inside(directory, name)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(target, flags)
    except OSError as err:
        raise GroupccError(f"{str(target)!r} could not be read: {err.strerror or err}") from None
    too_big = GroupccError(f"{str(target)!r} holds more than {limit} bytes, the most a report reads")
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise GroupccError(f"{str(target)!r} is not a regular file")
        if info.st_nlink > 1:  # the other names of a hard link may lie anywhere: it may be a file from outside
            raise GroupccError(f"{str(target)!r} has {info.st_nlink} hard links: expected a file with no other name, "
                               "which a hard link to a file outside the analysis directory would have")
        if info.st_size > limit:
            raise too_big
        with os.fdopen(descriptor, "rb") as file:
            descriptor = None  # closed with the file object
            data = file.read(limit + 1)
    except OSError as err:
        raise GroupccError(f"{str(target)!r} could not be read: {err.strerror or err}") from None
    finally:
        if descriptor is not None:
            os.close(descriptor)
    if len(data) > limit:
        raise too_big
    return data


def _print_warning(message: str) -> None:
    print(f"groupcc: warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- writing


def write_report(run: str | Path, out_dir: str | Path | None = None,
                 warn: Callable[[str], None] = _print_warning) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` (each atomically) into ``out_dir`` (default: the analysis
    directory of ``run``) and return their paths. ``warn`` receives one line per plot that was skipped (default:
    printed to stderr as ``groupcc: warning: ...``)."""
    directory, analysis = load_analysis(run)
    out = Path(out_dir) if out_dir is not None else directory
    make_directory(out)
    blocks = build_report(analysis, directory, warn)
    title = _title(analysis)
    html_path, markdown_path = out / "report.html", out / "report.md"
    write_text(html_path, render_html(title, blocks))
    write_text(markdown_path, render_markdown(blocks, out))
    return html_path, markdown_path


# ---------------------------------------------------------------------------------------------- content


def build_report(analysis: dict, directory: Path, warn: Callable[[str], None] = _print_warning) -> list[Block]:
    """Every block of the report, in order; plot files are read from inside the analysis ``directory`` only
    (:func:`read_inside`), and ``warn`` gets a line for each one skipped."""
    dictionaries = _dictionaries(analysis)
    trivial = _trivial_irrep(analysis)
    kind = analysis.get("label_kind") or "irrep"  # what the features are labelled with: irreps, or input classes
    blocks: list[Block] = [Heading(_title(analysis), 1), Paragraph(_summary(analysis))]
    blocks += _composer_section(analysis.get("composer"))
    blocks += _comparison_section(_object(analysis.get("comparison")))
    blocks += _metrics_section(dictionaries)
    for name, record in dictionaries.items():
        blocks += _families_section(name, record, trivial, kind)
    blocks += _label_counts_section(analysis, dictionaries, kind)
    blocks += _plots_section(analysis.get("plots") or [], directory, warn)
    return blocks


def _title(analysis: dict) -> str:
    return str(analysis.get("title") or f"groupcc analysis of {analysis.get('group', 'a group')}")


def _summary(analysis: dict) -> str:
    names = ", ".join(_dictionaries(analysis)) or "none"
    return (
        f"Group {analysis.get('group', '?')} (order {_number(analysis.get('group_order'))}), "
        f"layer {analysis.get('layer', '?')}, {analysis.get('action', '?')} action; "
        f"activations from {analysis.get('acts', '?')}. Dictionaries analysed: {names}."
    )


def _dictionaries(analysis: dict) -> dict[str, dict]:
    """The dictionary records, crosscoder first, then the SAE, then any other."""
    found = _object(analysis.get("dictionaries"))
    order = [name for name in DICTIONARY_ORDER if name in found] + [name for name in found if name not in DICTIONARY_ORDER]
    return {name: found[name] for name in order if isinstance(found[name], dict)}


def _trivial_irrep(analysis: dict) -> str | None:
    """The trivial irrep's name: irreps are listed trivial first (``group.irreps()`` order)."""
    irreps = _objects(analysis.get("irreps"))
    name = irreps[0].get("name") if irreps else None
    return name if isinstance(name, str) else None


def _composer_section(composer) -> list[Block]:
    composer = _object(composer)
    if not composer:
        return []
    key_irreps = ", ".join(str(name) for name in _list(composer.get("key_irreps"))) or "none"
    text = (
        f"{composer.get('arch', '?')} composer for {composer.get('task', '?')} (run {composer.get('run', '?')}). "
        f"Key irreps: {key_irreps}."
    )
    rows = [[name, _number(value)] for name, value in _flatten(_object(composer.get("metrics")))]
    return [Heading("Composer"), Paragraph(text)] + ([Table(["metric", "value"], rows)] if rows else [])


def _flatten(metrics: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested metric dicts as ``("fve W_a", 0.98)`` pairs."""
    pairs = []
    for name, value in metrics.items():
        label = f"{prefix}{name}"
        pairs += _flatten(value, f"{label} ") if isinstance(value, dict) else [(label, value)]
    return pairs


COMPARISON_COLUMNS = [("ARI", "ari", "number"), ("NMI", "nmi", "number"), ("purity", "purity", "number"),
                      ("families", "n_families", "number"), ("labels", "n_labels", "number"),
                      ("items", "n_items", "number"), ("partner cosine", "mean_partner_cosine", "number")]


def _comparison_section(comparison: dict) -> list[Block]:
    records = {name: value for name, value in comparison.items() if not name.startswith("features_per_") and isinstance(value, dict)}
    if not records:
        return []
    columns = [column for column in COMPARISON_COLUMNS
               if column[1] != "mean_partner_cosine" or any("mean_partner_cosine" in r for r in records.values())]
    table = _record_table("comparison", {name.replace("_", " "): record for name, record in records.items()}, columns)
    return [Heading("SAE vs crosscoder"), table]


METRIC_COLUMNS = [("kind", "kind", "text"), ("sparsity", "config.sparsity", "text"), ("F", "n_features", "number"),
                  ("firing features", "n_firing", "number"), ("families", "families.n_families", "number"),
                  ("FVU", "evaluation.fvu", "number"), ("L0", "evaluation.l0", "number"),
                  ("dead fraction", "evaluation.dead_fraction", "percent"),
                  ("mean equivariance", "mean_equivariance", "number")]


def _metrics_section(dictionaries: dict[str, dict]) -> list[Block]:
    if not dictionaries:
        return []
    return [Heading("Dictionary metrics"), _record_table("dictionary", dictionaries, METRIC_COLUMNS)]


def _record_table(first: str, records: dict[str, dict], columns: list[tuple[str, str, str]]) -> Table:
    """One row per record: its name, then each column's (dotted) key formatted as ``text``, ``number`` or ``percent``."""
    rows = [[name] + [FORMATTERS[style](_lookup(record, key)) for _, key, style in columns] for name, record in records.items()]
    return Table([first] + [header for header, _, _ in columns], rows)


def _lookup(record: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def _families_section(name: str, record: dict, trivial: str | None, kind: str) -> list[Block]:
    blocks: list[Block] = []
    display = DISPLAY_NAMES.get(name, name)
    for label, families in ((f"{display} families", record.get("families")),
                            (f"{display} decoder families", record.get("decoder_families"))):
        table = _objects(families.get("table")) if isinstance(families, dict) else []
        if table:
            blocks += [Heading(label), Paragraph(_families_text(families)), _family_table(table, trivial, kind)]
    return blocks


def _families_text(families: dict) -> str:
    how = "chosen automatically (best silhouette)" if families.get("chosen_automatically") else "fixed"
    count = families.get("n_families")
    return f"{_number(count)} {'family' if count == 1 else 'families'}, number {how}."


def _family_table(table: list[dict], trivial: str | None, kind: str) -> Table:
    key = f"{kind}s"
    with_labels = any(key in row for row in table)
    header = ["family", "size"] + ([key] if with_labels else []) + [
        "stabiliser orders", "top non-trivial irreps", "mean frequency", "representative"]
    rows = []
    for row in table:
        labels = [_counts(row.get(key), "{}×{}")] if with_labels else []
        rows.append([_number(row.get("family")), _number(row.get("size"))] + labels + [
            _counts(row.get("stabiliser_orders"), "|H|={}×{}"), _top_irreps(row.get("mean_spectrum"), trivial),
            _percent(row.get("mean_frequency")), _number(row.get("representative"))])
    return Table(header, rows)


def _counts(counts: dict | None, pattern: str) -> str:
    return ", ".join(pattern.format(name, count) for name, count in _object(counts).items()) or MISSING


def _top_irreps(spectrum: dict | None, trivial: str | None, top: int = 2) -> str:
    """The ``top`` non-trivial irreps with the largest (non-zero) share of the spectrum's total energy."""
    spectrum = {name: value for name, value in _object(spectrum).items() if isinstance(value, (int, float))}
    total = sum(spectrum.values())
    if not spectrum or not total > 0:
        return MISSING
    ranked = sorted((item for item in spectrum.items() if item[0] != trivial and item[1] > 0), key=lambda item: -item[1])[:top]
    return ", ".join(f"{name} {_percent(value / total)}" for name, value in ranked) or MISSING


def _label_counts_section(analysis: dict, dictionaries: dict[str, dict], kind: str) -> list[Block]:
    key = f"features_per_{kind}"
    fallback = _object(_object(analysis.get("comparison")).get(key))
    counts = {name: _object(record.get(key)) or _object(fallback.get(name)) for name, record in dictionaries.items()}
    counts = {name: value for name, value in counts.items() if value}
    if not counts:
        return []
    known = [irrep["name"] for irrep in _objects(analysis.get("irreps")) if isinstance(irrep.get("name"), str)] if kind == "irrep" else []
    seen = {label for value in counts.values() for label in value}
    order = [name for name in known if name in seen] + sorted(seen - set(known))
    rows = [[label] + [_number(value.get(label, 0)) for value in counts.values()] for label in order]
    return [Heading(f"Features per {kind}"), Table([kind] + list(counts), rows)]


def _object(value) -> dict:
    """``value`` when it is a JSON object, else empty: a field of the wrong type reads as missing (shown as a dash)."""
    return value if isinstance(value, dict) else {}


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _objects(value) -> list[dict]:
    """The JSON objects in the list ``value`` (nothing when it is not a list)."""
    return [item for item in _list(value) if isinstance(item, dict)]


def _plots_section(plots, directory: Path, warn: Callable[[str], None]) -> list[Block]:
    budget = [MAX_EMBEDDED_BYTES]  # bytes left to embed, shared by the plots in order
    blocks: list[Block] = [_plot(plot, directory, budget, warn) for plot in _objects(plots)]
    return [Heading("Plots")] + blocks if blocks else []


def _plot(plot: dict, directory: Path, budget: list[int], warn: Callable[[str], None]) -> Figure | Paragraph:
    """The plot as a figure, or a note in its place (and a warning) when its file is not a PNG file inside the
    analysis directory that :func:`read_inside` accepts, or would take the embedded plots over
    :data:`MAX_EMBEDDED_BYTES` (a report built from someone else's analysis must not embed other local files)."""
    name = str(plot.get("file", ""))
    title = str(plot.get("title") or Path(name).name or name)
    try:
        path = resolve_inside(directory, name)
        if path.suffix.lower() != ".png":
            raise GroupccError(f"{name!r} is not a .png file")
        data = read_inside(directory, name)
        if not data.startswith(PNG_SIGNATURE):
            raise GroupccError(f"{str(path)!r} is not a PNG image")
        if len(data) > budget[0]:
            raise GroupccError(f"{str(path)!r} would take the embedded plots over {MAX_EMBEDDED_BYTES} bytes")
    except GroupccError as err:
        warn(f"plot {title!r} skipped: {err}")
        return Paragraph(f"Plot {title!r} skipped: {err}.")
    budget[0] -= len(data)
    return Figure(path, data, title, str(plot.get("caption") or ""))


# ---------------------------------------------------------------------------------------------- number formats


def _number(value) -> str:
    """Integers as they are, floats to 3 significant digits, ``None`` as a dash."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3g}"
    return str(value)


def _percent(value) -> str:
    """A fraction as a percentage with 3 significant digits."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return _number(value)
    return f"{100 * value:.3g}%"


FORMATTERS = {"text": lambda value: MISSING if value is None else str(value), "number": _number, "percent": _percent}


# ---------------------------------------------------------------------------------------------- HTML


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70em; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; }
figcaption { color: #444; margin-top: 0.3em; }
"""


def render_html(title: str, blocks: list[Block]) -> str:
    """A self-contained HTML page: inline style, images as ``data:`` URLs, every text escaped."""
    body = "\n".join(_html_block(block) for block in blocks)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _html_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, Table):
        return _html_table(block)
    return _html_figure(block)


def _html_table(table: Table) -> str:
    def row(cells, tag):
        return "<tr>" + "".join(f"<{tag}>{html.escape(cell)}</{tag}>" for cell in cells) + "</tr>"

    body = "\n".join(row(cells, "td") for cells in table.rows)
    return f"<table>\n<thead>{row(table.header, 'th')}</thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _html_figure(figure: Figure) -> str:
    mime = mimetypes.guess_type(figure.path.name)[0] or "image/png"
    source = f"data:{mime};base64,{base64.b64encode(figure.data).decode('ascii')}"
    caption = f"<strong>{html.escape(figure.title)}.</strong> {html.escape(figure.caption)}"
    return f'<figure>\n<img alt="{html.escape(figure.title)}" src="{source}">\n<figcaption>{caption}</figcaption>\n</figure>'


# ---------------------------------------------------------------------------------------------- Markdown


def render_markdown(blocks: list[Block], out_dir: str | Path) -> str:
    """GitHub-flavoured Markdown; plots are linked relative to ``out_dir`` (the Markdown file's directory)."""
    return "\n\n".join(_markdown_block(block, Path(out_dir)) for block in blocks) + "\n"


def _markdown_block(block: Block, out_dir: Path) -> str:
    if isinstance(block, Heading):
        return "#" * block.level + " " + _md(block.text)
    if isinstance(block, Paragraph):
        return _md(block.text)
    if isinstance(block, Table):
        lines = [block.header, ["---"] * len(block.header)] + block.rows
        return "\n".join("| " + " | ".join(_md(cell) for cell in cells) + " |" for cells in lines)
    alt = re.sub(r"([\[\]])", r"\\\1", _md(block.title))
    return f"![{alt}]({_link(block.path, out_dir)})\n\n**{_md(block.title)}.** {_md(block.caption)}"


def _md(text: str) -> str:
    """Backslash-escape the characters that would turn text into Markdown or HTML (``|`` would split a table cell)."""
    return re.sub(r"([\\`*|<&])", r"\\\1", " ".join(str(text).split()))


def _link(path: Path, out_dir: Path) -> str:
    """``path`` relative to ``out_dir`` (absolute when it is on another drive), URL-quoted."""
    try:
        target = os.path.relpath(os.path.abspath(path), os.path.abspath(out_dir))
    except ValueError:
        target = os.path.abspath(path)
    return urllib.parse.quote(Path(target).as_posix(), safe="/:")
