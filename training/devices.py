"""Device selection: ``auto`` means CUDA when a GPU is present, else the CPU."""

from __future__ import annotations

import torch

from groupcc.errors import GroupccError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GroupccError(f"device {name!r} requested but no CUDA GPU is available: expected auto or cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise GroupccError(f"unknown device {name!r}: expected auto, cpu, cuda or cuda:N") from None
