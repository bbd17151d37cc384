"""Evaluating a trained composer run: the paper's metrics, progress measures over its checkpoints and the plots,
written into the run directory (``metrics.json`` section ``interpretability``, ``progress.json``, ``plots/``)."""

from __future__ import annotations

from pathlib import Path

from groupcc.training.composer_training import ComposerRun, load_composer
from groupcc.training.runs import HISTORY, PLOTS, read_json, update_metrics, write_json

from .composer_metrics import DEFAULT_KEY_THRESHOLD, composer_metrics, progress_measures
from .composer_plots import plot_logit_similarity, plot_progress_measures, plot_training_curves


def evaluate_composer(run: ComposerRun | str | Path, *, key_threshold: float = DEFAULT_KEY_THRESHOLD,
                      over_checkpoints: bool = True, progress: bool = True) -> dict:
    """The metrics of :func:`groupcc.eval.composer_metrics.composer_metrics` for a run (a loaded one or its
    directory); also writes them into its ``metrics.json``, its training curves and logit similarities as
    plots and, with ``over_checkpoints``, the progress measures of every checkpoint (``progress.json`` and a plot)."""
    run = run if isinstance(run, ComposerRun) else load_composer(run)
    metrics = composer_metrics(run, key_threshold=key_threshold)
    plots = run.path / PLOTS
    if (run.path / HISTORY).exists():
        plot_training_curves(read_json(run.path / HISTORY, expect=list), plots / "training_curves.png",
                             title=f"{run.config.group} {run.config.architecture.arch}")
    plot_logit_similarity(metrics["logit_similarity"], metrics["key_irreps"], key_threshold, plots / "logit_similarity.png")
    if over_checkpoints and run.checkpoints():
        records = progress_measures(run, metrics["key_irreps"], progress=progress)
        write_json(run.path / "progress.json", records)
        plot_progress_measures(records, plots / "progress_measures.png")
    update_metrics(run.path, "composer", interpretability=metrics)
    return metrics
