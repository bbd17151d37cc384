"""The trained Table 3 composers shipped in benchmarks/table3: each is a run of the paper's settings that computes
the product, and its stored metrics (the README's Table 3 rows) are what this version's evaluation computes."""

from pathlib import Path

import numpy as np
import pytest
import torch

from groupcc.eval.composer_metrics import composer_metrics
from groupcc.eval.composer_table import COLUMNS, _lookup, composer_table
from groupcc.training.composer_training import PAPER_SETTINGS, load_composer
from groupcc.training.runs import METRICS, read_json

TABLE3 = Path(__file__).resolve().parents[2] / "benchmarks" / "table3"
RUNS = sorted(path for path in TABLE3.iterdir() if (path / "config.json").exists())


def test_there_are_shipped_runs():
    assert len(RUNS) >= 2


@pytest.mark.parametrize("path", RUNS, ids=[path.name for path in RUNS])
def test_a_shipped_run_has_the_papers_settings_and_computes_the_product(path):
    run = load_composer(path)
    config = run.config
    assert (config.train_frac, config.epochs) == PAPER_SETTINGS[config.group][config.architecture.arch]
    assert (config.task, config.lr, config.weight_decay, config.architecture.init, config.patience) == ("a*b", 1e-3, 1.0, "paper", 0)
    assert path.name == f"{config.group}_{config.architecture.arch}_s{config.seed}"
    with torch.no_grad():
        predicted = run.model(run.data.a, run.data.b).argmax(-1)
    assert torch.equal(predicted, run.data.answer)  # every pair, training and test
    assert len(run.data.train) == int(config.train_frac * run.group.order**2)  # the paper's floored split


@pytest.mark.parametrize("path", RUNS, ids=[path.name for path in RUNS])
def test_the_stored_table3_metrics_are_what_this_version_computes(path):
    # If this fails after a change to the evaluation, the README's Table 3 rows are stale: re-run
    # 'groupcc composer eval' on these runs and update the README with 'groupcc composer table benchmarks/table3/*_s*'.
    run = load_composer(path)
    stored = read_json(path / METRICS, expect=dict)["interpretability"]
    now = composer_metrics(run)
    assert now["key_irreps"] == stored["key_irreps"]
    for _, key in COLUMNS[run.config.architecture.arch]:
        assert _lookup(now, key) == pytest.approx(_lookup(stored, key), rel=1e-6, abs=1e-12), key


def test_the_shipped_runs_tabulate_with_their_seeds():
    rows = composer_table(RUNS)
    assert sum(len(row.seeds) for row in rows) == len(RUNS)
    for row in rows:
        assert row.paper() is not None
        assert all(np.isfinite(values).all() for values in row.values)
