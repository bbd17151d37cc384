"""Table 3 of Chughtai, Chan & Nanda (2023) for a set of composer runs: one row per group and architecture, each
metric as mean ± spread over the seeds run, beside the paper's value (mean of its 4 seeds)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from groupcc.errors import GroupccError
from groupcc.training.composer_training import ComposerRun, load_composer
from groupcc.training.runs import METRICS, read_json

from .composer_metrics import DEFAULT_KEY_THRESHOLD, composer_metrics

#: Table 3's columns per architecture: (heading, key of our metrics), FVEs are fractions, losses raw.
COLUMNS = {
    "mlp": [("W_a", "fve.W_a"), ("W_b", "fve.W_b"), ("W_U", "fve.W_U"), ("MLP", "fve_mlp"), ("ρ(ab)", "fve_rho_ab"),
            ("test loss", "test_loss"), ("excluded", "excluded_loss"), ("restricted", "restricted_loss")],
    "transformer": [("W_E", "fve.W_E"), ("W_L", "fve.W_L"), ("MLP", "fve_mlp"), ("ρ(ab)", "fve_rho_ab"),
                    ("test loss", "test_loss"), ("excluded", "excluded_loss"), ("restricted", "restricted_loss")],
}
FRACTIONS = {"fve.W_a", "fve.W_b", "fve.W_U", "fve.W_E", "fve.W_L", "fve_mlp", "fve_rho_ab"}

#: The paper's Table 3 (mean of 4 seeds), in the order of :data:`COLUMNS`.
PAPER_TABLE3 = {
    ("C113", "mlp"): [0.9953, 0.9939, 0.9805, 0.9025, 0.1203, 1.63e-05, 5.95, 6.88e-03],
    ("C118", "mlp"): [0.9975, 0.9974, 0.9843, 0.9584, 0.1326, 5.39e-06, 8.72, 3.60e-03],
    ("D59", "mlp"): [0.9971, 0.9973, 0.9852, 0.8768, 0.1244, 6.34e-06, 12.37, 1.60e-06],
    ("D61", "mlp"): [0.9926, 0.9945, 0.9826, 0.8761, 0.1248, 1.79e-05, 12.00, 1.69e-06],
    ("S5", "mlp"): [1.0000, 0.9999, 0.9414, 0.8891, 0.1213, 1.02e-05, 11.72, 2.21e-07],
    ("S6", "mlp"): [0.9965, 0.9978, 0.9367, 0.8638, 0.0898, 4.95e-05, 12.17, 2.66e-06],
    ("A5", "mlp"): [0.9904, 0.9931, 0.9327, 0.8669, 0.1026, 1.94e-05, 9.82, 5.28e-07],
    ("C113", "transformer"): [0.9518, 0.9952, 0.9212, 0.1677, 2.67e-07, 9.42, 2.12e-02],
    ("C118", "transformer"): [0.9405, 0.9964, 0.9463, 0.1711, 1.73e-07, 15.93, 2.55e-01],
    ("D59", "transformer"): [0.9858, 0.9853, 0.8501, 0.1085, 3.20e-06, 46.42, 2.82e-05],
    ("D61", "transformer"): [0.9833, 0.9740, 0.8559, 0.1111, 1.63e-02, 41.64, 9.60e-02],
    ("S5", "transformer"): [0.9984, 0.9997, 0.8528, 0.1023, 1.43e-07, 17.77, 4.44e-09],
    ("S6", "transformer"): [0.9994, 0.9993, 0.8632, 0.0935, 2.21e-06, 291.67, 1.05e-06],
    ("A5", "transformer"): [0.9753, 0.9740, 0.8356, 0.0822, 4.88e-02, 19.76, 7.70e-04],
}


@dataclass
class TableRow:
    group: str
    arch: str
    task: str
    seeds: list[int] = field(default_factory=list)
    values: list[list[float]] = field(default_factory=list)  # per column, one value per seed

    def paper(self) -> list[float] | None:
        return PAPER_TABLE3.get((self.group, self.arch)) if self.task == "a*b" else None


def _lookup(metrics: dict, key: str) -> float:
    value = metrics
    for part in key.split("."):
        value = value[part]
    return float(value)


def run_metrics(run: ComposerRun, key_threshold: float = DEFAULT_KEY_THRESHOLD) -> dict:
    """The run's stored interpretability metrics when they were computed with this threshold and this version's
    definitions, else computed now (in memory; the run directory is not written)."""
    stored = read_json(run.path / METRICS, what="composer metrics", expect=dict).get("interpretability") if (run.path / METRICS).exists() else None
    if stored and stored.get("key_threshold") == key_threshold and "restricted_loss_with_mean" in stored:
        return stored
    return composer_metrics(run, key_threshold=key_threshold)


def composer_table(run_dirs: list[str | Path], key_threshold: float = DEFAULT_KEY_THRESHOLD) -> list[TableRow]:
    """One row per (group, architecture, task) over the given runs, seeds in the order given."""
    if not run_dirs:
        raise GroupccError("composer table needs at least one run directory")
    rows: dict[tuple, TableRow] = {}
    for path in run_dirs:
        run = load_composer(path)
        config = run.config
        key = (config.group, config.architecture.arch, config.task)
        row = rows.setdefault(key, TableRow(*key, values=[[] for _ in COLUMNS[config.architecture.arch]]))
        if config.seed in row.seeds:
            raise GroupccError(f"{str(path)!r}: seed {config.seed} of {config.group} {config.architecture.arch} is given twice")
        metrics = run_metrics(run, key_threshold)
        row.seeds.append(config.seed)
        for column, (_, name) in zip(row.values, COLUMNS[config.architecture.arch]):
            column.append(_lookup(metrics, name))
    return list(rows.values())


def _mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one seed)."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def _format(value: float, fraction: bool) -> str:
    if not math.isfinite(value):
        return "nan"
    return f"{100 * value:.2f} %" if fraction else f"{value:.3g}"


def to_markdown(rows: list[TableRow]) -> str:
    """Table 3's layout, one table per architecture: ``mean ± sd (paper)`` per cell."""
    out = []
    for arch in ("mlp", "transformer"):
        chosen = [row for row in rows if row.arch == arch]
        if not chosen:
            continue
        headings = [heading for heading, _ in COLUMNS[arch]]
        out.append(f"**{'MLP' if arch == 'mlp' else 'Transformer'}** (mean ± sd over seeds; the paper's mean of 4 seeds in brackets)\n")
        out.append("| group | seeds | " + " | ".join(headings) + " |")
        out.append("|---|---|" + "---|" * len(headings))
        for row in chosen:
            paper = row.paper()
            cells = []
            for index, ((_, name), values) in enumerate(zip(COLUMNS[arch], row.values)):
                mean, spread = _mean_spread(values)
                fraction = name in FRACTIONS
                cell = _format(mean, fraction) + (f" ± {_format(spread, fraction)}" if len(values) > 1 else "")
                if paper is not None:
                    cell += f" ({_format(paper[index], fraction)})"
                cells.append(cell)
            task = "" if row.task == "a*b" else f" ({row.task})"
            out.append(f"| {row.group}{task} | {','.join(map(str, row.seeds))} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def to_csv(rows: list[TableRow]) -> str:
    """One line per (row, metric): group, arch, task, seeds, metric, mean, sd, paper, and the per-seed values."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["group", "arch", "task", "seeds", "metric", "mean", "sd", "paper", "values"])
    for row in rows:
        paper = row.paper()
        for index, ((heading, _), values) in enumerate(zip(COLUMNS[row.arch], row.values)):
            mean, spread = _mean_spread(values)
            writer.writerow([row.group, row.arch, row.task, " ".join(map(str, row.seeds)), heading, repr(mean), repr(spread),
                             "" if paper is None else repr(paper[index]), " ".join(repr(v) for v in values)])
    return buffer.getvalue()
