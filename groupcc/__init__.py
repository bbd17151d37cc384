"""groupcc: symmetric features in neural networks, with group representation theory, sparse autoencoders and
group crosscoders.

The everyday API, importable from ``groupcc`` directly::

    import groupcc as gcc
    run = gcc.train_composer("S4", out="runs/s4", epochs=8000, train_frac=0.8, lr=3e-3)
    acts = gcc.harvest(run, "hidden")                          # [|G|², |G|, d], in memory
    crosscoder = gcc.train_dictionary(acts, "crosscoder", n_features=64, sparsity="l1", l1_coefficient=2.0)
    analysis = gcc.analyze_dictionary(crosscoder, acts)        # stabilisers, spectra, families, irreps

The layers underneath (``groupcc.groups``, ``groupcc.crosscoders``, ``groupcc.training``, ``groupcc.eval``) hold
everything else. Names are imported on first use, so ``import groupcc.groups`` stays numpy-only.
"""

from __future__ import annotations

import importlib

#: Public name -> module that defines it.
API = {
    # groups
    "Group": "groupcc.groups", "Irrep": "groupcc.groups", "get_group": "groupcc.groups",
    "from_cayley_table": "groupcc.groups", "from_permutations": "groupcc.groups",
    "read_cayley_table": "groupcc.groups", "fourier_transform": "groupcc.groups", "irrep_spectrum": "groupcc.groups",
    # errors
    "GroupccError": "groupcc.errors",
    # dictionaries
    "Dictionary": "groupcc.crosscoders", "DictionaryConfig": "groupcc.crosscoders",
    "train_dictionary": "groupcc.training.dictionary_trainer", "TrainerConfig": "groupcc.training.dictionary_trainer",
    "load_dictionary": "groupcc.training.dictionary_files", "save_dictionary": "groupcc.training.dictionary_files",
    "evaluate_dictionary": "groupcc.eval.dictionary_metrics",
    "export_saelens": "groupcc.training.saelens_format", "import_saelens": "groupcc.training.saelens_format",
    # composers
    "train_composer": "groupcc.training.composer_training", "load_composer": "groupcc.training.composer_training",
    "evaluate_composer": "groupcc.eval.composer_evaluation",
    # activations
    "harvest": "groupcc.training.harvest", "harvest_images": "groupcc.training.vision_harvest",
    "open_store": "groupcc.training.activation_store", "write_store": "groupcc.training.activation_store",
    # analysis
    "analyze_dictionary": "groupcc.eval.pipeline", "AnalysisSettings": "groupcc.eval.analysis",
    "stabiliser": "groupcc.eval.transform_blocks", "write_report": "groupcc.eval.report",
}

#: The layers, reachable as attributes too (``groupcc.eval.analysis`` after ``import groupcc``).
LAYERS = ("groups", "crosscoders", "training", "eval")

__all__ = sorted(API)


def __getattr__(name: str):
    if name in LAYERS:
        return importlib.import_module(f"groupcc.{name}")
    if name not in API:
        raise AttributeError(f"module 'groupcc' has no attribute {name!r}")
    value = getattr(importlib.import_module(API[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(API) | set(LAYERS))
