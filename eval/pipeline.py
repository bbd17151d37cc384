"""The analysis pipeline behind ``groupcc analyze``: load a dictionary (and optionally a second one of the other
kind), its activations and, for composer activations, the composer run; analyse, compare, plot, and write
``analysis.json`` with the plots into an analysis directory (atomically: a failed run leaves nothing).

The analysis directory is self-contained: plots made earlier by other commands (the composer's training curves,
a dictionary's feature density) are copied into its ``plots/``, so the report only ever reads files inside it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from groupcc.errors import GroupccError
from groupcc.groups import PAIR_ACTIONS, Group, get_group
from groupcc.crosscoders import Dictionary
from groupcc.training.activation_store import ActivationSource, ActivationStore, as_activation_source, dictionary_input, open_store
from groupcc.training.composer_training import load_composer
from groupcc.training.dictionary_files import check_same_group, load_dictionary, read_dictionary_record
from groupcc.training.image_actions import DihedralImageAction
from groupcc.training.harvest import store_kind
from groupcc.training.runs import (HISTORY, METRICS, PLOTS, StagedDirectory, atomic_write, check_output, check_replaceable,
                                   group_fingerprint, lock, make_directory, read_json, write_json)
from groupcc.training.vision_harvest import stored_images

from .analysis import AnalysisSettings, DictionaryAnalysis, analysis_summary, analyze_features, compare_dictionaries
from .analysis_plots import plot_dictionary_history, plot_feature_images, plot_family_blocks, plot_family_labels, plot_family_sizes, plot_family_spectra
from .composer_metrics import composer_metrics
from .dictionary_metrics import evaluate_dictionary
from .report import FORMAT

VERSION = 1
COMPOSER_PLOTS = {
    "training_curves.png": ("composer training curves", "Train and test loss and test accuracy over epochs."),
    "logit_similarity.png": ("logit similarity per irrep", "Key irreps in red (similarity above the threshold)."),
    "progress_measures.png": ("progress measures", "Key-irrep FVE and restricted/excluded loss over the checkpoints."),
}


def recorded_acts(dictionary_dir: Path, record: dict) -> str:
    """The activation store a dictionary was trained on, as its ``config.json`` records it."""
    acts = record.get("acts") or record.get("data", {}).get("store")
    if not acts:
        raise GroupccError(f"{str(dictionary_dir)!r} does not record its activations: give the activation store")
    return acts


def check_group(dictionary_dir: Path, record: dict, store: ActivationStore) -> Group:
    """The store's group, which must be the one the dictionary was trained under (by name) and the one the store
    was harvested under (by multiplication table, :func:`check_store_group`)."""
    name = check_same_group(dictionary_dir, record, store)
    if not name:
        raise GroupccError(f"activation store {str(store.path)!r} records no group: expected activations harvested under a group")
    group = get_group(name)
    check_store_group(store, group)
    return group


def check_store_group(source: ActivationSource, group: Group) -> None:
    """The multiplication-table fingerprint the store recorded when it was harvested must be ``group``'s: a group
    renamed in the manifest (C6 for S3, of the same order) is refused."""
    recorded = (source.manifest.get("metadata") or {}).get("group_fingerprint")
    if recorded is not None and recorded != group_fingerprint(group.mult_table):
        raise GroupccError(f"{source.label} names group {group.name}, but was harvested under a group with another "
                           f"multiplication table (fingerprint {recorded}, {group.name}'s is {group_fingerprint(group.mult_table)}): "
                           "expected the group it was harvested under")


def check_fits(dictionary_dir: Path, record: dict, store: ActivationSource) -> None:
    """What the dictionary's record says it was trained on (``data``: group, kind of activations, action, layer,
    model and width) must be what ``store`` holds; the first difference is a one-line error naming both.
    (Other inputs of the same model, layer and action, e.g. a held-out store, fit.)"""
    trained = record.get("data") or {}
    if not isinstance(trained, dict) or not trained:
        return  # trained on an array: nothing recorded to check
    shape = trained.get("shape") if isinstance(trained.get("shape"), list) and len(trained["shape"]) == 3 else [None] * 3
    recorded_kind = store_kind({"action": trained.get("action")}) if trained.get("action") else None
    for what, then, now in [
        ("group", trained.get("group"), store.manifest.get("group")),
        ("kind", recorded_kind, store_kind(store.manifest)),
        ("action", trained.get("action"), store.manifest.get("action")),
        ("layer", trained.get("layer"), store.manifest.get("layer")),
        ("model", trained.get("source"), store.manifest.get("source")),
        ("width", shape[2], store.d),
    ]:
        if then is not None and now is not None and then != now:
            raise GroupccError(f"dictionary {str(dictionary_dir)!r} was trained on activations with {what} {then!r}, but "
                               f"{store.label} has {what} {now!r}: expected activations of the same model, layer, action and group")


def check_analysis_output(out: Path, overwrite: bool) -> None:
    """Before any work: ``out`` must be writable, and new or (with ``overwrite``) an earlier analysis, never another
    kind of run that replacing would delete."""
    check_output(out, "analysis directory")
    check_replaceable(out, overwrite, "analysis.json", "analysis directory")


def composer_context(store: ActivationSource, group: Group) -> tuple[dict | None, object]:
    """For activations of a composer run on all pairs: the run's summary (key irreps, metrics) and its answers."""
    source = store.manifest.get("source")
    if store.manifest.get("action") not in PAIR_ACTIONS or store.n_rows != group.order**2:
        return None, None  # not composer activations on all pairs
    if not source or not (Path(source) / "config.json").is_file():
        raise GroupccError(f"the composer run {source!r} that {store.label} was harvested from is missing: "
                           "expected its directory (needed for the irreps of the features)")
    run = load_composer(source)
    if run.config.group != store.manifest.get("group"):
        raise GroupccError(f"composer run {source!r} is on {run.config.group} but the store says {store.manifest.get('group')}")
    saved = read_json(run.path / METRICS, expect=dict).get("interpretability") if (run.path / METRICS).exists() else None
    metrics = saved or composer_metrics(run)
    summary = {
        "run": str(run.path.resolve()), "arch": run.config.architecture.arch, "task": run.config.task,
        "key_irreps": metrics["key_irreps"],
        "metrics": {key: value for key, value in metrics.items() if key not in ("key_irreps", "logit_similarity")},
    }
    return summary, run.data.answer.cpu().numpy()


def input_label_context(store: ActivationSource) -> tuple[np.ndarray, list[str]] | None:
    """Per-row input classes recorded by the harvester (the shape generator's kinds), if any. With all positions
    harvested, every row of an image carries the image's class."""
    metadata = store.manifest.get("metadata") or {}
    labels, names = metadata.get("labels"), metadata.get("label_names")
    if not labels or not names:
        return None
    labels = np.asarray(labels)
    if store.n_rows % len(labels):
        raise GroupccError(f"{store.label} has {store.n_rows} rows but {len(labels)} input labels: expected a multiple")
    return np.repeat(labels, store.n_rows // len(labels)), list(names)


def analyze_dictionary(
    dictionary: Dictionary | str | Path,
    acts,
    group: str | Group | None = None,
    *,
    progress: bool = True,
    **settings,
) -> DictionaryAnalysis:
    """Analyse the features of ``dictionary`` (a trained one, or its run directory) on ``acts`` (an array or tensor
    ``[N, |G|, d]``, an activation store or its path): stabilisers, irrep spectra, families, and for an SAE its
    equivariant matching. ``group`` (a name or a :class:`Group`) defaults to the one the activations or the
    dictionary record. When the activations are a composer's on all pairs (harvested by
    :func:`groupcc.training.harvest.harvest`), every feature also gets the irrep that explains its activation;
    for generated shapes, the shape it responds to. ``settings``: fields of :class:`AnalysisSettings`."""
    if not isinstance(dictionary, Dictionary):
        dictionary = load_dictionary(dictionary)
    source = as_activation_source(acts)
    group = group or source.manifest.get("group") or dictionary.config.group
    if group is None:
        raise GroupccError("no group given, and neither the activations nor the dictionary record one: pass the group")
    group = get_group(group) if isinstance(group, str) else group
    if source.manifest.get("group") not in (None, group.name):
        raise GroupccError(f"group {group.name} given, but the activations were harvested under {source.manifest['group']}")
    check_store_group(source, group)
    composer, answers = composer_context(source, group)
    input_labels = None if composer else input_label_context(source)
    return analyze_features(dictionary, source, group, answers=answers, input_labels=input_labels,
                            settings=AnalysisSettings(**settings), progress=progress)


def analyze_runs(
    dictionary_dirs: list[str | Path],
    *,
    acts: str | Path | None = None,
    out: str | Path | None = None,
    settings: AnalysisSettings = AnalysisSettings(),
    overwrite: bool = True,
    progress: bool = True,
) -> Path:
    """Analyse one dictionary, or a crosscoder and an SAE of the same activations, into ``out``
    (default ``<first dictionary>/analysis``); returns the analysis directory.

    Before any work: the settings, the output (writable; new, or an earlier analysis when ``overwrite``), and that
    every dictionary fits the activations (:func:`check_fits`, :func:`check_group`). ``out`` is locked against a
    second writer from the start; it is written whole or not at all."""
    if not isinstance(settings, AnalysisSettings):
        raise GroupccError(f"settings of type {type(settings).__name__}: expected AnalysisSettings")
    for what, path in [*(("dictionary", d) for d in dictionary_dirs), ("activations", acts), ("analysis directory", out)]:
        if path is not None and not str(path).strip():
            raise GroupccError(f"{what} path {str(path)!r}: expected a directory path")
    dirs = [Path(d) for d in dictionary_dirs]
    if not 1 <= len(dirs) <= 2:
        raise GroupccError(f"got {len(dirs)} dictionaries: expected one, or a crosscoder and an SAE")
    out = Path(out) if out is not None else dirs[0] / "analysis"
    records = [read_dictionary_record(d) for d in dirs]
    kinds = [record["dictionary"]["kind"] for record in records]
    if len(set(kinds)) != len(kinds):
        raise GroupccError(f"compare a crosscoder with an SAE: got two dictionaries of kind {kinds[0]!r}")
    check_analysis_output(out, overwrite)
    with lock(out):
        store = open_store(recorded_acts(dirs[0], records[0]) if acts is None else acts)
        for directory, record in zip(dirs, records):
            check_fits(directory, record, store)
        group = check_group(dirs[0], records[0], store)
        for directory, record in zip(dirs[1:], records[1:]):
            check_group(directory, record, store)
        composer, answers = composer_context(store, group)
        input_labels = None if composer else input_label_context(store)
        analyses: dict[str, DictionaryAnalysis] = {}
        entries: dict[str, dict] = {}
        for directory, record in zip(dirs, records):
            dictionary = load_dictionary(directory)
            analysis = analyze_features(dictionary, store, group, answers=answers, input_labels=input_labels,
                                        settings=settings, progress=progress)
            analyses[analysis.kind] = analysis
            entries[analysis.kind] = {
                "path": str(directory.resolve()), "config": record["dictionary"],
                "evaluation": _evaluation(directory, dictionary, store, record, progress), **analysis_summary(analysis),
            }
        comparison = compare_dictionaries(analyses.get("crosscoder"), analyses.get("sae"))
        with StagedDirectory(out, overwrite=overwrite, what="analysis directory") as staging:
            _write_analysis(staging, analyses, entries, comparison, dirs, store, group, composer, settings)
    return out


def _write_analysis(staging: Path, analyses: dict[str, DictionaryAnalysis], entries: dict[str, dict], comparison: dict,
                    dirs: list[Path], store: ActivationStore, group: Group, composer: dict | None, settings: AnalysisSettings) -> None:
    """The analysis directory's files: per-feature arrays, plots, ``config.json`` (what was analysed: the
    dictionaries, the activations and what they were made from, the settings), ``metrics.json``, ``analysis.json``."""
    for kind, analysis in analyses.items():
        arrays = feature_arrays(analysis)
        atomic_write(staging / f"{kind}_features.safetensors", lambda tmp, arrays=arrays: save_file(arrays, tmp))
    plots = _plots(staging, analyses, dirs, composer, *_vision_images(store, group))
    title = f"{group.name}" + (f" {composer['arch']} composer" if composer else "") + f", layer {store.manifest.get('layer')}, {store.manifest.get('action')} action"
    made_from = {
        "store": str(Path(store.path).resolve()), "kind": store_kind(store.manifest), "group": group.name,
        "group_order": group.order, "group_fingerprint": group_fingerprint(group.mult_table),
        "action": store.manifest.get("action"), "layer": store.manifest.get("layer"), "model": store.manifest.get("source"),
        "shape": list(store.shape),
    }
    write_json(staging / "config.json", {
        "kind": "analysis", "dictionaries": {kind: entry["path"] for kind, entry in entries.items()},
        "acts": made_from["store"], "made_from": made_from, "settings": settings.__dict__,
    })
    write_json(staging / METRICS, {
        "kind": "analysis", "comparison": comparison,
        "families": {kind: entry["families"]["n_families"] for kind, entry in entries.items()},
        "firing_features": {kind: entry["n_firing"] for kind, entry in entries.items()},
    })
    write_json(staging / "analysis.json", {
        "format": FORMAT, "version": VERSION, "title": title,
        "group": group.name, "group_order": group.order, "action": store.manifest.get("action"), "layer": store.manifest.get("layer"),
        "acts": made_from["store"],
        "irreps": [{"name": irrep.name, "dim": irrep.dim, "type": irrep.type} for irrep in group.irreps()],
        "composer": composer,
        "label_kind": next((a.truth.kind for a in analyses.values() if a.truth is not None), None),
        "settings": settings.__dict__,
        "dictionaries": entries,
        "comparison": comparison,
        "plots": plots,
    })


def feature_arrays(analysis: DictionaryAnalysis) -> dict[str, np.ndarray]:
    """Per-feature arrays for reloading without recomputing: block norms ``[F, |G|]``, stabiliser masks
    ``[F, |G|]``, spectra, signatures, families, firing frequencies (and irrep FVEs for composers)."""
    mask = np.zeros((len(analysis.frequency), analysis.group.order), dtype=np.uint8)
    for i, members in enumerate(analysis.stabilisers):
        mask[i, members] = 1
    arrays = {
        "block_norms": analysis.block_norms().astype(np.float32),
        "stabiliser_mask": mask,
        "spectrum": analysis.spectrum.astype(np.float32),
        "signature": analysis.signatures.astype(np.float32),
        "family": analysis.family.astype(np.int64),
        "frequency": analysis.frequency.astype(np.float32),
    }
    if analysis.irreps is not None:
        arrays["irrep_fve"] = analysis.irreps.fve.astype(np.float32)
    if analysis.decoder_family is not None:
        arrays["decoder_family"] = analysis.decoder_family.astype(np.int64)
    return {name: np.ascontiguousarray(value) for name, value in arrays.items()}


def _vision_images(store: ActivationStore, group: Group) -> tuple[torch.Tensor | None, DihedralImageAction | None]:
    """The images of a vision store harvested at the centre or pooled (one row per image), for feature pictures."""
    metadata = store.manifest.get("metadata") or {}
    if store.manifest.get("action") != "dihedral-image" or metadata.get("position") == "all":
        return None, None
    images = stored_images(metadata)
    if len(images) != store.n_rows:
        raise GroupccError(f"{str(store.path)!r} has {store.n_rows} rows but its images number {len(images)}")
    return images, DihedralImageAction(group)


def _evaluation(directory: Path, dictionary, store: ActivationStore, record: dict, progress: bool) -> dict:
    """The dictionary's ``evaluation.json`` when ``dict eval`` wrote one for these activations, else computed now."""
    saved = directory / "evaluation.json"
    if saved.is_file():
        evaluation = read_json(saved, what="dictionary run", expect=dict)
        if evaluation.get("acts") == str(Path(store.path).resolve()):
            return evaluation
    data = dictionary_input(store, dictionary.config)
    return evaluate_dictionary(dictionary, data, progress=progress).summary()


def _plots(staging: Path, analyses: dict[str, DictionaryAnalysis], dirs: list[Path], composer: dict | None,
           images: torch.Tensor | None = None, action: DihedralImageAction | None = None) -> list[dict]:
    plots: list[dict] = []

    def add(file: Path, title: str, caption: str) -> None:
        plots.append({"file": str(file.relative_to(staging)), "title": title, "caption": caption})

    def add_copy(file: Path, name: str, title: str, caption: str) -> None:
        """A plot made by another command, copied in so that the analysis directory is self-contained."""
        if file.is_file():
            copy = make_directory(staging / PLOTS) / name
            shutil.copyfile(file, copy)
            add(copy, title, caption)

    if composer:
        for name, (title, caption) in COMPOSER_PLOTS.items():
            add_copy(Path(composer["run"]) / PLOTS / name, f"composer_{name}", title, caption)
    for (kind, analysis), directory in zip(analyses.items(), dirs):
        label = "crosscoder" if kind == "crosscoder" else "SAE (equivariant matching)"
        add(plot_family_blocks(analysis, staging / "plots" / f"{kind}_family_blocks.png", f"{label}: one feature per family"),
            f"{label}: block similarity of each family's representative",
            "cos(B[g], B[h]) over pairs of group elements; the stabiliser is the set of h with B[g·h] = B[g].")
        add(plot_family_spectra(analysis, staging / "plots" / f"{kind}_family_spectra.png", f"{label}: irrep spectra"),
            f"{label}: irrep spectrum per family", "Mean energy fraction per irrep of the block autocorrelation φ(h) = mean_g S[g, g·h].")
        if analysis.truth is not None:
            name = analysis.truth.kind
            add(plot_family_labels(analysis, staging / "plots" / f"{kind}_families_vs_{name}s.png", f"{label}: families × {name}s"),
                f"{label}: families against the {name}s of the features",
                "Counts of firing features. " + ("The irrep explaining most of the feature's activation over all pairs." if name == "irrep"
                                                 else f"The {name} of the inputs on which the feature is most active."))
        history_file = directory / HISTORY
        if history_file.is_file() and isinstance(history := read_json(history_file), list) and history:
            add(plot_dictionary_history(history, staging / PLOTS / f"{kind}_training.png", kind),
                f"{kind} training", "FVU and L0 on the training batches.")
        add_copy(directory / PLOTS / "feature_density.png", f"{kind}_feature_density.png", f"{kind} feature density",
                 "How often each feature fires (from groupcc dict eval).")
    if images is not None:
        for kind, analysis in analyses.items():
            add(plot_feature_images(analysis, images.numpy(), lambda image, g: action.apply(torch.as_tensor(image), g).numpy(),
                                    staging / "plots" / f"{kind}_feature_images.png", f"{kind}: top images per family, and the top image under each transform"),
                f"{kind}: what each family's representative responds to",
                "Left: the most activating images (activation below each). Right: the top image under the group's transforms g, "
                "as seen by the feature's blocks g.")
    clusterings = {f"{kind} families": analysis.family for kind, analysis in analyses.items()}
    if "sae" in analyses and analyses["sae"].decoder_family is not None:
        clusterings["SAE decoder-similarity families"] = analyses["sae"].decoder_family
    add(plot_family_sizes(clusterings, staging / "plots" / "family_sizes.png"), "family sizes", "Firing features per family.")
    return plots
