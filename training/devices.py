"""Device selection (``auto`` means CUDA when a GPU is present, else the CPU) and the CPU's float mode in training."""

from __future__ import annotations

from contextlib import contextmanager

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


@contextmanager
def flushing_subnormals():
    """Subnormal floats (below 1.2e-38) count as zero on the CPU inside the block (training loops).

    Adam's moments of weights whose gradient is about zero (dead units, long after the loss has converged) decay
    into the subnormal range, where x86 arithmetic is many times slower: the paper-length S5 MLP fell from
    21 to 4 epochs/s after 150 000 epochs with 21 000 subnormal moments. Flushing them moves nothing measurable (an
    update ``m / (sqrt(v) + eps)`` with ``m, v < 1e-38`` is zero either way). Afterwards the flag is set back to
    torch's default, off (torch offers no way to read it first)."""
    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)
