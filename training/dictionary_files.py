"""Saving and loading dictionaries as directories (written atomically through :mod:`groupcc.training.runs`).

A dictionary directory holds ``config.json`` (``{"format", "version", "dictionary": <DictionaryConfig>, ...}``
plus whatever the caller records, e.g. how it was trained) and ``dictionary.safetensors`` (parameters and the
buffers ``input_scale``, ``threshold``, ``steps_since_fired``). Loading it gives bit-for-bit the same dictionary.
"""

from __future__ import annotations

from pathlib import Path

import torch

from groupcc.crosscoders import Dictionary, DictionaryConfig, DictionaryError

from .runs import CONFIG, RunError, StagedDirectory, check_replaceable, read_json, read_safetensors, write_json, write_safetensors

WEIGHTS_FILE = "dictionary.safetensors"
#: A training run's held-out split: ``train_rows`` and ``held_out_rows``, row indices into its activations.
SPLIT_FILE = "split.safetensors"
FORMAT = "groupcc-dictionary"
VERSION = 1


def write_dictionary_files(dictionary: Dictionary, directory: str | Path, record: dict | None = None) -> None:
    """Write ``dictionary.safetensors`` then ``config.json`` into ``directory``, each atomically (temp file, rename)."""
    directory = Path(directory)
    write_safetensors(directory / WEIGHTS_FILE, dictionary.state_dict())
    write_json(directory / CONFIG, dictionary_record(dictionary.config, record))


def dictionary_record(config: DictionaryConfig, record: dict | None = None) -> dict:
    """The content of ``config.json``: format, version, the dictionary config and the caller's ``record``."""
    return {"format": FORMAT, "version": VERSION, "dictionary": config.to_dict(), **(record or {})}


def save_dictionary(dictionary: Dictionary, path: str | Path, record: dict | None = None, overwrite: bool = False) -> Path:
    """Save atomically to the directory ``path``; ``record`` (JSON-able) is stored beside the config."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise DictionaryError(f"{str(path)!r} already exists: expected a new path (or pass overwrite=True)")
    check_replaceable(path, overwrite, CONFIG, "dictionary", kind=FORMAT)  # another run or folder is never replaced
    with StagedDirectory(path, overwrite=True, what="dictionary") as tmp:
        write_dictionary_files(dictionary, tmp, record)
    return path


def read_dictionary_record(path: str | Path) -> dict:
    """The parsed ``config.json`` of a dictionary directory (one-line :class:`DictionaryError` if missing or corrupt)."""
    file = Path(path) / CONFIG
    if not file.is_file():
        raise DictionaryError(f"{str(path)!r} is not a dictionary directory: expected {CONFIG} and {WEIGHTS_FILE} in it")
    try:
        record = read_json(file)
    except RunError as err:
        raise DictionaryError(str(err)) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or "dictionary" not in record:
        raise DictionaryError(f"{str(file)!r} is not a groupcc dictionary config: expected format {FORMAT!r} and a 'dictionary' entry")
    return record


def dictionary_values(record: dict) -> dict:
    """The dictionary config of a record; runs written before ``sae_input`` was a config field kept it beside."""
    values = dict(record["dictionary"])
    if values.get("kind") == "sae" and "sae_input" not in values and record.get("sae_input"):
        values["sae_input"] = record["sae_input"]
    return values


def load_dictionary(path: str | Path, device: str | torch.device = "cpu") -> Dictionary:
    """Load a directory written by :func:`save_dictionary` (in eval mode)."""
    config = DictionaryConfig.from_dict(dictionary_values(read_dictionary_record(path)))
    file = Path(path) / WEIGHTS_FILE
    if not file.is_file():
        raise DictionaryError(f"{str(path)!r} has no {WEIGHTS_FILE}: expected the dictionary weights there")
    try:
        tensors = read_safetensors(file, what="dictionary weights")
    except RunError as err:
        raise DictionaryError(str(err)) from None
    dictionary = Dictionary(config)
    _check_tensors(tensors, dictionary.state_dict(), file)
    dictionary.load_state_dict(tensors)
    return dictionary.to(device).eval()


def _check_tensors(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], file: Path) -> None:
    if set(found) != set(expected):
        raise DictionaryError(f"{str(file)!r} holds tensors {sorted(found)}: expected {sorted(expected)}")
    for name, tensor in expected.items():
        if found[name].shape != tensor.shape or found[name].dtype != tensor.dtype:
            raise DictionaryError(
                f"{str(file)!r}: {name} is {found[name].dtype} {list(found[name].shape)}, "
                f"expected {tensor.dtype} {list(tensor.shape)} from config.json"
            )


def check_same_group(dictionary_dir: str | Path, record: dict, store) -> str | None:
    """The group name an activation store records (``None`` when it records none), which must be the one the
    dictionary in ``dictionary_dir`` (its ``config.json`` parsed as ``record``) was trained under."""
    name = store.manifest.get("group")
    trained_on = record["dictionary"].get("group")
    if trained_on not in (None, name):
        raise DictionaryError(f"dictionary {str(dictionary_dir)!r} was trained on group {trained_on}, but {str(store.path)!r} holds activations of {name}")
    return name
