"""Run directories: atomic writes (temp file + rename, so no half-written file is ever left), JSON and
safetensors I/O with clear errors, and device selection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from groupcc.crosscoders.io import atomic_write, load_json
from groupcc.errors import GroupccError


def _atomic_replace(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)


def atomic_write_json(path: str | Path, data) -> None:
    def write(tmp):
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=1)
            handle.write("\n")

    _atomic_replace(Path(path), write)


def atomic_save_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    _atomic_replace(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_json(path: str | Path, what: str = "run"):
    """Parse a JSON file; a missing or corrupt file raises a one-line :class:`GroupccError`."""
    file = Path(path)
    if not file.exists():
        raise GroupccError(f"{str(file.parent)!r} is not a {what} directory: it has no {file.name}")
    return load_json(file, GroupccError)


def prepare_run_dir(path: str | Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Create an empty run directory. An existing non-empty one is an error unless ``overwrite`` (it is
    replaced) or ``resume`` (it is kept)."""
    out = Path(path)
    if out.exists() and any(out.iterdir()):
        if overwrite:
            shutil.rmtree(out)
        elif not resume:
            raise GroupccError(f"output directory {str(out)!r} already exists: pass --resume to continue it or --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    return out


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GroupccError(f"device {name!r} requested but no CUDA GPU is available (use --device auto or cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise GroupccError(f"unknown device {name!r}: expected auto, cpu, cuda or cuda:N") from None
