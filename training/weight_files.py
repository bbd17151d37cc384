"""Reading a pretrained network's weights from a local file and checking them strictly against its architecture.

A weights file is a ``.safetensors`` file or a ``torch.save`` file (``.pt``/``.pth``, read with
``torch.load(weights_only=True)``, so it can hold tensors but never code) with the network's state dict, possibly
wrapped under ``"state_dict"`` or ``"model"`` and with the ``module.`` prefixes of a ``DataParallel`` checkpoint.
Keys and shapes must match the architecture's exactly: the first difference raises a one-line error naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import load_file

from groupcc.errors import GroupccError


class WeightsError(GroupccError):
    """A missing, unreadable or mismatched weights file (one line naming the file and what was expected)."""


def read_state_dict(path: str | Path, layout: str, error: type[WeightsError] = WeightsError) -> dict[str, torch.Tensor]:
    """The tensors of the weights file ``path`` under their own names (``module.`` prefixes stripped).

    ``layout`` names what the file should hold in messages (``"torchvision's MobileNetV2"``)."""
    path = Path(path)
    expected = f"expected a .safetensors or torch.save (.pt/.pth) file holding {layout} state dict"
    if not path.is_file():
        raise error(f"weights file {str(path)!r} not found: {expected}")
    try:
        loaded = load_file(path) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load and safetensors raise many kinds on a corrupt file
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise error(f"cannot read weights {str(path)!r} ({reason}): {expected}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise error(f"weights {str(path)!r} hold a {type(loaded).__name__}, not a state dict of tensors: {expected}")
    return {str(name).removeprefix("module."): tensor for name, tensor in loaded.items()}


def check_state_dict(path: str | Path, state: Mapping[str, torch.Tensor], shapes: Mapping[str, torch.Size], layout: str,
                     error: type[WeightsError] = WeightsError) -> None:
    """Raise ``error`` unless ``state`` has exactly the keys of ``shapes``, each with that shape. The message names
    the first missing key (in the architecture's order), else the first unexpected one, else the first bad shape."""
    path = str(path)
    for problem, names in (("missing", [n for n in shapes if n not in state]), ("unexpected", [n for n in state if n not in shapes])):
        if names:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise error(f"weights {path!r}: {len(names)} {problem} key(s) ({shown}); expected exactly the {len(shapes)} tensors of {layout} state dict")
    for name, shape in shapes.items():
        if state[name].shape != shape:
            raise error(f"weights {path!r}: tensor {name} has shape {tuple(state[name].shape)}, expected {tuple(shape)} ({layout} state dict)")
