"""InceptionV1 (GoogLeNet) as studied in the Distill circuits thread, loaded from a local weights file.

The architecture and parameter layout follow torch-lucent's ``lucent.modelzoo.inceptionv1.InceptionV1`` (a port,
by ProGamerGov, of the TensorFlow ``inception5h`` graph used by Lucid), so that its state dict loads with strict
key and shape matching. Nothing is ever downloaded: :func:`load_inception_v1` reads the file the user names.

Input: RGB images in ``[0, 1]``, ``[N, 3, H, W]``. The model scales them itself to the TensorFlow range,
``x·255 − 117`` (``[-117, 138]``), which lucent's ``render_vis`` applies before calling its own model
(``transform.preprocess_inceptionv1``); so ``InceptionV1()(x)`` here equals lucent's logits on ``x·255 − 117``.
Images are typically 224×224; any size from about 64 runs. Every stride-2 stage floors the size by half:
``conv2d0`` is ``H//2``, ``conv2d1``/``conv2d2`` ``H//4``, ``mixed3*`` ``H//8``, ``mixed4*`` ``H//16``, ``mixed5*``
``H//32`` (7×7 at 224).

Layers (channels, :data:`INCEPTION_LAYERS`): ``conv2d0`` 64, ``conv2d1`` 64, ``conv2d2`` 192, ``mixed3a`` 256,
``mixed3b`` 480, ``mixed4a`` 508, ``mixed4b`` 512, ``mixed4c`` 512, ``mixed4d`` 528, ``mixed4e`` 832, ``mixed5a`` 832,
``mixed5b`` 1024. Each is a submodule whose output is the layer's activation after its ReLU (for a mixed block, the
concatenation of its branches ``1x1, 3x3, 5x5, pool_reduce``), so a forward hook on ``model.mixed3b`` reads
``[N, 480, H//8, W//8]``. A branch such as lucent's ``mixed3b_3x3`` is the submodule ``mixed3b.3x3``.

Parameters: lucent names every convolution ``<layer>_pre_relu_conv`` (e.g. ``mixed3b_3x3_bottleneck_pre_relu_conv``)
and the classifier ``softmax2_pre_activation_matmul`` (1024 → 1008 classes). Here they sit in nested modules
(``mixed3b.3x3_bottleneck.pre_relu_conv``); :func:`lucent_key` maps between the two by joining the module path
with ``_``. The forward returns the logits; lucent's ``softmax2`` is their softmax over dim 1. Lucent's head
averages the 7×7 ``mixed5b`` map; here the average is over whatever size the map has (the same at 224).
Lucent's default "redirected" ReLU changes only gradients, not activations; this model uses the plain ReLU.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .runs import write_safetensors
from .weight_files import WeightsError, check_state_dict, read_state_dict

#: Hookable layer name -> channels of its activation.
INCEPTION_LAYERS: dict[str, int] = {
    "conv2d0": 64, "conv2d1": 64, "conv2d2": 192,
    "mixed3a": 256, "mixed3b": 480,
    "mixed4a": 508, "mixed4b": 512, "mixed4c": 512, "mixed4d": 528, "mixed4e": 832,
    "mixed5a": 832, "mixed5b": 1024,
}

#: Mixed block -> branch widths (1x1, 3x3_bottleneck, 3x3, 5x5_bottleneck, 5x5, pool_reduce), in forward order.
_MIXED_WIDTHS: dict[str, tuple[int, int, int, int, int, int]] = {
    "mixed3a": (64, 96, 128, 16, 32, 32),
    "mixed3b": (128, 128, 192, 32, 96, 64),
    "mixed4a": (192, 96, 204, 16, 48, 64),
    "mixed4b": (160, 112, 224, 24, 64, 64),
    "mixed4c": (128, 128, 256, 24, 64, 64),
    "mixed4d": (112, 144, 288, 32, 64, 64),
    "mixed4e": (256, 160, 320, 32, 128, 128),
    "mixed5a": (256, 160, 320, 48, 128, 128),
    "mixed5b": (384, 192, 384, 48, 128, 128),
}
#: Mixed blocks preceded by a stride-2 max pool.
_POOL_BEFORE = ("mixed4a", "mixed5a")
N_CLASSES = 1008
LAYOUT = "lucent's InceptionV1"


class InceptionWeightsError(WeightsError):
    """A missing, unreadable or mismatched InceptionV1 weights file (one line naming the file)."""


class ConvReLU(nn.Module):
    """Zero padding ``(left, right, top, bottom)``, a convolution named ``pre_relu_conv``, then ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: tuple[int, ...] | None = None):
        super().__init__()
        self.pre_relu_conv = nn.Conv2d(c_in, c_out, kernel, stride)
        self.padding = padding if padding is not None else (kernel // 2,) * 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.pre_relu_conv(F.pad(x, self.padding)))


class Mixed(nn.Module):
    """An Inception block: the channel concatenation of four branches, each ending in a ReLU:
    ``1x1``; ``3x3_bottleneck → 3x3``; ``5x5_bottleneck → 5x5``; 3×3 max pool (stride 1) ``→ pool_reduce``."""

    def __init__(self, c_in: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        w1, w3r, w3, w5r, w5, wp = widths
        branches = {
            "1x1": ConvReLU(c_in, w1, 1),
            "3x3_bottleneck": ConvReLU(c_in, w3r, 1), "3x3": ConvReLU(w3r, w3, 3),
            "5x5_bottleneck": ConvReLU(c_in, w5r, 1), "5x5": ConvReLU(w5r, w5, 5),
            "pool_reduce": ConvReLU(c_in, wp, 1),
        }
        for name, branch in branches.items():
            self.add_module(name, branch)
        self.channels = w1 + w3 + w5 + wp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self._modules
        pooled = F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([b["1x1"](x), b["3x3"](b["3x3_bottleneck"](x)), b["5x5"](b["5x5_bottleneck"](x)), b["pool_reduce"](pooled)], 1)


def _max_pool_halve(x: torch.Tensor) -> torch.Tensor:
    """3×3 max pool, stride 2, after padding the right and bottom by one (TensorFlow ``SAME``): ``H → H//2``."""
    return F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, stride=2)


def _local_response_norm(x: torch.Tensor) -> torch.Tensor:
    return F.local_response_norm(x, size=9, alpha=9.99999974738e-05, beta=0.5, k=1)


class InceptionV1(nn.Module):
    """InceptionV1 in torch-lucent's layout (see the module docstring). ``forward(x_N3HW in [0, 1])`` returns the
    logits ``[N, 1008]``; hook the layers in :data:`INCEPTION_LAYERS` for activations."""

    def __init__(self):
        super().__init__()
        self.conv2d0 = ConvReLU(3, 64, 7, stride=2, padding=(2, 3, 2, 3))
        self.conv2d1 = ConvReLU(64, 64, 1)
        self.conv2d2 = ConvReLU(64, 192, 3)
        c_in = 192
        for name, widths in _MIXED_WIDTHS.items():
            block = Mixed(c_in, widths)
            self.add_module(name, block)
            c_in = block.channels
        self.softmax2_pre_activation_matmul = nn.Linear(c_in, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2d0(x * 255 - 117)
        x = self.conv2d1(_local_response_norm(_max_pool_halve(x)))
        x = _max_pool_halve(_local_response_norm(self.conv2d2(x)))
        for name in _MIXED_WIDTHS:
            x = self._modules[name](_max_pool_halve(x) if name in _POOL_BEFORE else x)
        pooled = F.avg_pool2d(x, kernel_size=x.shape[-2:]).flatten(1)
        return self.softmax2_pre_activation_matmul(pooled)


def build_inception_v1() -> InceptionV1:
    """A randomly initialised InceptionV1 (seed with ``torch.manual_seed`` first for reproducibility)."""
    return InceptionV1()


def lucent_key(name: str) -> str:
    """Lucent's name for a state-dict entry: the module path joined with ``_`` (``mixed3b.3x3.pre_relu_conv.weight``
    → ``mixed3b_3x3_pre_relu_conv.weight``). Lucent's own names are returned unchanged."""
    module, _, tensor = name.rpartition(".")
    return f"{module.replace('.', '_')}.{tensor}" if module else name


def lucent_state_dict(model: InceptionV1) -> dict[str, torch.Tensor]:
    """``model``'s parameters under lucent's names (what ``lucent``'s ``InceptionV1.load_state_dict`` takes)."""
    return {lucent_key(name): tensor for name, tensor in model.state_dict().items()}


def save_inception_weights(model: InceptionV1, path: str | Path) -> None:
    """Write ``model``'s weights, under lucent's names, to the ``.safetensors`` file ``path`` (atomically)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise InceptionWeightsError(f"InceptionV1 weights are saved as safetensors: expected a path ending in .safetensors, got {str(path)!r}")
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in lucent_state_dict(model).items()}
    write_safetensors(path, tensors, metadata={"format": "lucent-inceptionv1"})


def load_inception_v1(path: str | Path, device: str | torch.device = "cpu") -> InceptionV1:
    """InceptionV1 in eval mode with the weights of the local file ``path``; nothing is downloaded.

    ``path`` is a ``.safetensors`` file or a ``torch.save`` file (``.pt``/``.pth``) holding lucent's InceptionV1
    state dict, possibly wrapped under ``"state_dict"`` or ``"model"`` and with ``module.`` prefixes. Keys and
    shapes must match exactly; any mismatch raises a one-line :class:`InceptionWeightsError`.
    """
    path = Path(path)
    state = _read_state_dict(path)
    model = InceptionV1()
    native = {lucent_key(name): name for name in model.state_dict()}
    check_state_dict(path, state, {name: tensor.shape for name, tensor in lucent_state_dict(model).items()}, LAYOUT, InceptionWeightsError)
    model.load_state_dict({native[name]: tensor for name, tensor in state.items()})
    return model.to(device).eval()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of the weights file, under lucent's names."""
    state = read_state_dict(path, LAYOUT, InceptionWeightsError)
    return {lucent_key(name): tensor for name, tensor in state.items()}
