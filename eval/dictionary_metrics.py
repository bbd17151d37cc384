"""How well a dictionary reconstructs activations and how its features fire, streamed over a source
(the metrics themselves, FVU per block and pooled, L0, feature density, are defined in
:mod:`groupcc.crosscoders.metrics`); ``dict eval``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from groupcc.crosscoders import Dictionary, DictionaryError
from groupcc.crosscoders.metrics import DictionaryMetrics, evaluate_batches
from groupcc.groups.validation import check_number
from groupcc.training.activation_store import ActivationSource, RowSubset, dictionary_input, open_store
from groupcc.training.dictionary_files import SPLIT_FILE, check_same_group, load_dictionary, read_dictionary_record
from groupcc.training.progress import progress_bar
from groupcc.training.runs import PLOTS, RunError, read_safetensors, write_json

#: What ``dict eval --split`` evaluates on: every row, or a run's held-out or training inputs.
SPLITS = ("all", "held-out", "train")

from .plots import new_figure, save_figure


def evaluate_dictionary(
    dictionary: Dictionary,
    source: ActivationSource,
    *,
    batch_size: int = 4096,
    max_rows: int | None = None,
    dense_threshold: float = 0.1,
    progress: bool = True,
) -> DictionaryMetrics:
    """Stream ``source`` (at most ``max_rows`` rows, in order) through ``dictionary`` in eval mode on its own device.
    An SAE on multi-block activations reads what its config's ``sae_input`` says (block 0, or every block)."""
    if max_rows is not None:
        check_number("max_rows", max_rows, 1, integer=True, error=DictionaryError)
    data = dictionary_input(source, dictionary.config)
    rows = data.n_rows if max_rows is None else min(max_rows, data.n_rows)
    chunks = progress_bar(data.chunks(batch_size, rows), total=-(-rows // batch_size), enabled=progress, desc="evaluate")
    return evaluate_batches(dictionary, chunks, dense_threshold)


def split_rows_of_run(run_dir: str | Path, record: dict, store: ActivationSource, split: str) -> np.ndarray:
    """The row indices of a run's ``"held-out"`` or ``"train"`` inputs (its ``split.safetensors``), checked against
    the store it is evaluated on (the one it was trained on has as many rows as the run records)."""
    file = Path(run_dir) / SPLIT_FILE
    if not file.is_file():
        raise DictionaryError(f"{str(run_dir)!r} has no {SPLIT_FILE}: expected a run trained with a held-out split (val_fraction > 0)")
    try:
        rows = read_safetensors(file, what="split")["held_out_rows" if split == "held-out" else "train_rows"].numpy()
    except (RunError, KeyError) as err:
        raise DictionaryError(f"{str(file)!r} is not a split file: {err}") from None
    trained_on = record.get("data", {}).get("shape", [store.n_rows])[0]
    if store.n_rows != trained_on or rows.max() >= store.n_rows:
        raise DictionaryError(f"{store.label} has {store.n_rows} rows, the run was trained on {trained_on}: expected the store it was trained on")
    return rows


def plot_feature_density(metrics: DictionaryMetrics, path: str | Path, title: str = "feature density") -> Path:
    """Histogram of ``log10`` feature density (dead features counted in the legend), saved as a PNG."""
    density = metrics.feature_density
    fig, (axis,) = new_figure()
    alive = density[density > 0]
    if alive.size:
        axis.hist(np.log10(alive), bins=50, color="tab:blue", label=f"{alive.size} firing")
    axis.axvline(np.log10(metrics.dense_threshold), color="tab:red", linestyle="--", label=f"dense (> {metrics.dense_threshold:g})")
    axis.set_xlabel("log10 fraction of inputs on which the feature fires")
    axis.set_ylabel("features")
    axis.set_title(f"{title}: {int((density == 0).sum())} dead of {density.size}")
    axis.legend()
    return save_figure(fig, path)


def evaluate_dictionary_run(run_dir: str | Path, acts: str | Path, *, split: str = "all", max_rows: int | None = None,
                            progress: bool = True) -> dict:
    """Evaluate a dictionary run directory on an activation store (of the group it was trained under): writes
    ``evaluation.json`` and ``plots/feature_density.png`` into the run and returns the summary (with the
    dictionary's kind, sparsity and number of features). ``split``: ``"all"`` rows, or the run's ``"held-out"``
    or ``"train"`` inputs (a run trained with a held-out split, on this store)."""
    if split not in SPLITS:
        raise DictionaryError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    record = read_dictionary_record(run_dir)
    dictionary = load_dictionary(run_dir)
    store = open_store(acts)
    check_same_group(run_dir, record, store)
    source = store if split == "all" else RowSubset(store, split_rows_of_run(run_dir, record, store, split))
    metrics = evaluate_dictionary(dictionary, source, max_rows=max_rows, progress=progress)
    config = dictionary.config
    summary = {"acts": str(Path(acts).resolve()), "split": split, "kind": config.kind, "sparsity": config.sparsity,
               "n_features": config.n_features, **metrics.summary()}
    write_json(Path(run_dir) / "evaluation.json", summary)
    plot_feature_density(metrics, Path(run_dir) / PLOTS / "feature_density.png", title=f"{config.kind} feature density")
    return summary
