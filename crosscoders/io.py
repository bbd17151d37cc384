"""Saving and loading dictionaries, and directories that appear atomically.

A dictionary directory holds ``config.json`` (``{"format", "version", "dictionary": <DictionaryConfig>, ...}``
plus whatever the caller records, e.g. how it was trained) and ``dictionary.safetensors`` (parameters and the
buffers ``input_scale``, ``threshold``, ``steps_since_fired``). Loading it gives bit-for-bit the same dictionary.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import DictionaryConfig
from .dictionary import Dictionary
from .errors import DictionaryError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "dictionary.safetensors"
FORMAT = "groupcc-dictionary"
VERSION = 1


class AtomicDirectory:
    """A directory built under a temporary name beside ``target`` and renamed to ``target`` by :meth:`commit`
    (:meth:`abort` removes it), so ``target`` is never seen half-written. As a context manager it yields the
    temporary path, commits on success and aborts on an exception. An existing ``target`` is replaced only
    when ``overwrite`` (else :class:`FileExistsError`)."""

    def __init__(self, target: str | Path, overwrite: bool = False):
        self.target = Path(target)
        if self.target.exists() and not overwrite:
            raise FileExistsError(f"{str(self.target)!r} already exists")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent))

    def commit(self) -> Path:
        if self.target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", suffix=".old", dir=self.target.parent))
            os.replace(self.target, old / self.target.name)
            os.replace(self.path, self.target)
            shutil.rmtree(old)
        else:
            os.replace(self.path, self.target)
        return self.target

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_dictionary_files(dictionary: Dictionary, directory: str | Path, record: dict | None = None) -> None:
    """Write ``dictionary.safetensors`` then ``config.json`` into ``directory``, each atomically (temp file, rename)."""
    directory = Path(directory)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in dictionary.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp))
    config = json.dumps(dictionary_record(dictionary.config, record), indent=1) + "\n"
    atomic_write(directory / CONFIG_FILE, lambda tmp: Path(tmp).write_text(config))


def dictionary_record(config: DictionaryConfig, record: dict | None = None) -> dict:
    """The content of ``config.json``: format, version, the dictionary config and the caller's ``record``."""
    return {"format": FORMAT, "version": VERSION, "dictionary": config.to_dict(), **(record or {})}


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path`` (removed on error)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_dictionary(dictionary: Dictionary, path: str | Path, record: dict | None = None, overwrite: bool = False) -> Path:
    """Save atomically to the directory ``path``; ``record`` (JSON-able) is stored beside the config."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise DictionaryError(f"{str(path)!r} already exists: expected a new path (or pass overwrite=True)")
    with AtomicDirectory(path, overwrite=True) as tmp:
        write_dictionary_files(dictionary, tmp, record)
    return path


def load_json(file: str | Path, error: type[Exception]):
    """Parse a JSON file; a corrupt one raises ``error`` with a one-line message naming the file."""
    try:
        return json.loads(Path(file).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{str(file)!r} is corrupt: {err}") from None


def read_dictionary_record(path: str | Path) -> dict:
    """The parsed ``config.json`` of a dictionary directory (one-line :class:`DictionaryError` if missing or corrupt)."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise DictionaryError(f"{str(path)!r} is not a dictionary directory: expected {CONFIG_FILE} and {WEIGHTS_FILE} in it")
    record = load_json(file, DictionaryError)
    if not isinstance(record, dict) or record.get("format") != FORMAT or "dictionary" not in record:
        raise DictionaryError(f"{str(file)!r} is not a groupcc dictionary config: expected format {FORMAT!r} and a 'dictionary' entry")
    return record


def load_dictionary(path: str | Path, device: str | torch.device = "cpu") -> Dictionary:
    """Load a directory written by :func:`save_dictionary` (in eval mode)."""
    config = DictionaryConfig.from_dict(read_dictionary_record(path)["dictionary"])
    file = Path(path) / WEIGHTS_FILE
    if not file.is_file():
        raise DictionaryError(f"{str(path)!r} has no {WEIGHTS_FILE}: expected the dictionary weights there")
    try:
        tensors = load_file(file)
    except (SafetensorError, OSError, ValueError) as err:
        raise DictionaryError(f"{str(file)!r} is corrupt: {err}") from None
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
