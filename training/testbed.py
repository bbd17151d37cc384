"""The vision testbed: a small CNN trained on the generated shapes of :mod:`groupcc.training.shapes`, so that
group crosscoders on its layers can be checked against ground-truth symmetry families.

Task. :class:`TestbedCNN` predicts the kind (cross-entropy) and, for the oriented kinds, the orientation as the
unit vector ``(cos mθ, sin mθ)`` with ``m`` the kind's rotation order (``m = 2`` for lines, whose orientation is
only defined modulo ``π``; ``m = 1`` for curves and corners), one vector per kind, trained with a squared error
on the true kind's vector. The features are globally pooled (average and max) before the heads, so the position
of a stroke is lost: the orientation can only come from *which* channels respond, which forces the convolutional layers to be
orientation-selective (and telling a line from a curve or a corner forces them to see curvature and endings).
A forward hook on ``model.conv1``/``conv2``/``conv3`` reads the post-ReLU feature map, whose spatial size equals
the image's (same padding), so the centre position is well defined.

A testbed run directory holds ``config.json`` (``"kind": "testbed"``), ``model.safetensors``, ``history.json``
(per-epoch losses and accuracies) and ``metrics.json`` (final train/test kind accuracy, orientation accuracy and
error, wall time); it appears atomically (built under a temporary name, then renamed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from groupcc.errors import GroupccError

from .devices import resolve_device
from .progress import progress_bar
from .runs import (
    CONFIG,
    HISTORY,
    METRICS,
    StagedDirectory,
    check_number,
    check_output,
    check_replaceable,
    read_json,
    read_safetensors,
    write_json,
    write_safetensors,
)
from .shapes import (MAX_IMAGE_SIZE, MAX_IMAGES, MIN_IMAGE_SIZE, SHAPE_KINDS, SHAPE_SYMMETRY, ShapeImages, check_kinds,
                     generate_shapes)


# --------------------------------------------------------------------------- the model
#: The hookable layers (post-ReLU feature maps of the image's spatial size) and their channel counts.
TESTBED_LAYERS: dict[str, int] = {"conv1": 8, "conv2": 16, "conv3": 32}
_KERNELS = {"conv1": 5, "conv2": 3, "conv3": 3}


class TestbedCNN(nn.Module):
    """``conv1`` (8 channels, 5×5) → ``conv2`` (16, 3×3) → ``conv3`` (32, 3×3), each a conv + ReLU submodule with
    same padding (so feature maps keep the image's size and the centre position is well defined), global average
    and max pooling (concatenated, ``[N, 64]``), a hidden layer of ``hidden`` units, then two heads: kind logits ``[N, K]`` and per-kind orientation
    vectors ``[N, K, 2]`` (see the module docstring)."""

    __test__ = False  # not a pytest class despite its name

    def __init__(self, n_kinds: int = len(SHAPE_KINDS), hidden: int = 64):
        super().__init__()
        channels = [1, *TESTBED_LAYERS.values()]
        for (name, width), previous in zip(TESTBED_LAYERS.items(), channels):
            kernel = _KERNELS[name]
            setattr(self, name, nn.Sequential(nn.Conv2d(previous, width, kernel, padding=kernel // 2), nn.ReLU()))
        self.n_kinds = n_kinds
        self.hidden = nn.Sequential(nn.Linear(2 * channels[-1], hidden), nn.ReLU())
        self.kind_head = nn.Linear(hidden, n_kinds)
        self.orientation_head = nn.Linear(hidden, 2 * n_kinds)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.conv3(self.conv2(self.conv1(images)))
        pooled = torch.cat([features.mean(dim=(-2, -1)), features.amax(dim=(-2, -1))], dim=-1)
        hidden = self.hidden(pooled)
        return self.kind_head(hidden), self.orientation_head(hidden).reshape(-1, self.n_kinds, 2)


# --------------------------------------------------------------------------- training
@dataclass
class TestbedConfig:
    """Everything that defines a testbed run (written to ``config.json``). The train and test images are the
    first ``n_train`` and the last ``n_test`` of ``generate_shapes(n_train + n_test, size, kinds, seed)``."""

    __test__ = False

    size: int = 32
    n_train: int = 6000
    n_test: int = 1000
    kinds: tuple[str, ...] = SHAPE_KINDS
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    device: str = "auto"
    kind: str = field(default="testbed", init=False)

    def __post_init__(self):
        self.kinds = check_kinds(self.kinds)
        check_number("n_train", self.n_train, 1, MAX_IMAGES, integer=True)
        check_number("n_test", self.n_test, 1, MAX_IMAGES, integer=True)
        check_number("epochs", self.epochs, 1, 10**6, integer=True)
        check_number("batch_size", self.batch_size, 1, MAX_IMAGES, integer=True)
        check_number("size", self.size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, integer=True)
        check_number("lr", self.lr, 0, 10, low_open=True)
        check_number("seed", self.seed, 0, integer=True)

    def to_dict(self) -> dict:
        return asdict(self) | {"kinds": list(self.kinds)}

    @classmethod
    def from_dict(cls, data: dict) -> TestbedConfig:
        data = {k: v for k, v in data.items() if k != "kind"}
        return cls(**data)


#: An orientation counts as right when within this angle of the truth (half a bin of 16 per turn).
ORIENTATION_TOLERANCE = math.pi / 16


def orientation_targets(kind: torch.Tensor, orientation: torch.Tensor, kinds: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos mθ, sin mθ)`` ``[N, 2]`` with ``m`` the kind's rotation order, and the ``[N]`` mask of oriented kinds."""
    order = torch.tensor([SHAPE_SYMMETRY[k].rotation_order for k in kinds], dtype=orientation.dtype, device=orientation.device)[kind]
    angle = order * orientation
    return torch.stack([angle.cos(), angle.sin()], dim=-1), order > 0


def _losses(model: TestbedCNN, images, kind, targets, oriented) -> tuple[torch.Tensor, torch.Tensor]:
    logits, vectors = model(images)
    predicted = vectors[torch.arange(len(kind), device=kind.device), kind]
    orientation_loss = ((predicted - targets) ** 2).sum(-1)[oriented].mean() if oriented.any() else logits.new_zeros(())
    return F.cross_entropy(logits, kind), orientation_loss


@torch.no_grad()
def evaluate_testbed(model: TestbedCNN, data: ShapeImages, batch_size: int = 1024) -> dict:
    """Kind accuracy, and over the oriented kinds the mean orientation error (degrees, of the true kind's
    vector, divided by the rotation order) and the fraction within :data:`ORIENTATION_TOLERANCE`."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct, errors = [], []
    for start in range(0, len(data), batch_size):
        images = data.images[start:start + batch_size].to(device)
        kind = data.kind[start:start + batch_size].to(device)
        targets, oriented = orientation_targets(kind, data.orientation[start:start + batch_size].to(device), data.kinds)
        logits, vectors = model(images)
        correct.append((logits.argmax(-1) == kind).cpu())
        predicted = vectors[torch.arange(len(kind), device=device), kind]
        order = targets.new_tensor([max(SHAPE_SYMMETRY[k].rotation_order, 1) for k in data.kinds])[kind]
        cross = predicted[:, 0] * targets[:, 1] - predicted[:, 1] * targets[:, 0]
        dot = (predicted * targets).sum(-1)
        errors.append((torch.atan2(cross, dot).abs() / order)[oriented].cpu())
    model.train(was_training)
    error = torch.cat(errors).double()
    return {
        "kind_accuracy": float(torch.cat(correct).double().mean()),
        "orientation_error_deg": float(error.mean().rad2deg()) if len(error) else float("nan"),
        "orientation_accuracy": float((error <= ORIENTATION_TOLERANCE).double().mean()) if len(error) else float("nan"),
    }


def train_testbed(config: TestbedConfig, out: str | Path, overwrite: bool = False, progress: bool = True) -> Path:
    """Train a :class:`TestbedCNN` (Adam with a cosine learning-rate decay, cross-entropy on the kind plus the
    squared orientation error) and write its run directory ``out`` atomically; returns ``out``. An existing
    non-empty ``out`` is an error unless ``overwrite``."""
    out = check_output(out, "testbed run")
    check_replaceable(out, overwrite, CONFIG, "testbed run", kind="testbed")
    device = resolve_device(config.device)
    started = time.monotonic()
    shapes = generate_shapes(config.n_train + config.n_test, config.size, config.kinds, config.seed)
    train, test = _split(shapes, config.n_train)
    torch.manual_seed(config.seed)
    model = TestbedCNN(len(config.kinds)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    n_batches = math.ceil(config.n_train / config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs * n_batches)
    images, kind = train.images.to(device), train.kind.to(device)
    targets, oriented = orientation_targets(kind, train.orientation.to(device), config.kinds)
    order_generator = torch.Generator().manual_seed(config.seed)
    history = []
    with progress_bar(total=config.epochs * n_batches, enabled=progress, desc="testbed", unit="batch") as bar:
        for epoch in range(1, config.epochs + 1):
            order = torch.randperm(config.n_train, generator=order_generator).to(device)
            summed = torch.zeros(2, device=device)
            for batch in order.split(config.batch_size):
                kind_loss, orientation_loss = _losses(model, images[batch], kind[batch], targets[batch], oriented[batch])
                optimizer.zero_grad(set_to_none=True)
                (kind_loss + orientation_loss).backward()
                optimizer.step()
                schedule.step()
                summed += torch.stack([kind_loss, orientation_loss]).detach()
                bar.update(1)
            kind_loss, orientation_loss = (summed / n_batches).tolist()
            record = {"epoch": epoch, "kind_loss": kind_loss, "orientation_loss": orientation_loss}
            record |= {f"test_{k}": v for k, v in evaluate_testbed(model, test).items()}
            history.append(record)
            bar.set_postfix(acc=f"{record['test_kind_accuracy']:.3f}", err=f"{record['test_orientation_error_deg']:.1f}°")
    metrics = {f"train_{k}": v for k, v in evaluate_testbed(model, train).items()}
    metrics |= {f"test_{k}": v for k, v in evaluate_testbed(model, test).items()}
    metrics |= {"epochs_done": config.epochs, "wall_time_s": round(time.monotonic() - started, 2), "device": str(device)}
    with StagedDirectory(out, overwrite=True, what="testbed run") as tmp:
        write_json(tmp / CONFIG, config.to_dict())
        write_safetensors(tmp / "model.safetensors", model.state_dict())
        write_json(tmp / HISTORY, history)
        write_json(tmp / METRICS, {"kind": "testbed", "training": metrics})
    return out


def _split(shapes: ShapeImages, n_first: int) -> tuple[ShapeImages, ShapeImages]:
    parts = [slice(None, n_first), slice(n_first, None)]
    return tuple(ShapeImages(shapes.images[p], shapes.kind[p], shapes.orientation[p], shapes.kinds) for p in parts)


def load_testbed(run_dir: str | Path, device: str = "cpu") -> tuple[TestbedCNN, TestbedConfig]:
    """Reload a trained testbed (in eval mode) and its config; errors name the missing or corrupt file."""
    path = Path(run_dir)
    if not path.is_dir():
        raise GroupccError(f"testbed run directory {str(path)!r} does not exist")
    data = read_json(path / "config.json", what="testbed run")
    found = data.get("kind") if isinstance(data, dict) else None
    if found != "testbed":
        raise GroupccError(f"{str(path)!r} is not a testbed run: config.json has kind {found!r}, expected 'testbed'")
    try:
        config = TestbedConfig.from_dict(data)
    except TypeError as err:
        raise GroupccError(f"{str(path / 'config.json')!r} is not a valid testbed config ({err})") from None
    weights = path / "model.safetensors"
    if not weights.exists():
        raise GroupccError(f"{str(path)!r} has no model.safetensors: expected a finished testbed run")
    model = TestbedCNN(len(config.kinds))
    try:
        model.load_state_dict(read_safetensors(weights))
    except RuntimeError as err:
        raise GroupccError(f"{str(weights)!r} does not fit the testbed CNN: {str(err).splitlines()[0]}") from None
    return model.eval().to(resolve_device(device)), config
