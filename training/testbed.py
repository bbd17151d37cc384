"""The vision testbed: generated images of oriented shapes whose symmetries are known, and a small CNN trained
on them, so that group crosscoders on its layers can be checked against ground-truth symmetry families.

Geometry. An image of ``size × size`` pixels has its origin at the image centre, ``x`` to the right and ``y`` up:
pixel ``[row i, column j]`` sits at ``(j − c, c − i)`` with ``c = (size − 1)/2``. With these coordinates
``torch.rot90(img, 1, dims=(-2, -1))`` is the rotation by ``+π/2`` (counter-clockwise as displayed) and
``torch.flip(img, dims=(-1,))`` is the mirror ``x ↦ −x``. ``D_n`` acts on images by an optional mirror, then a
rotation by ``2πk/n`` about the centre; a mirror followed by a rotation by ``α`` is the reflection through the
axis at angle ``π/2 + α/2``.

Shapes (:data:`SHAPE_KINDS`), each drawn through the image centre with an orientation ``θ``:

- ``line``: a segment through the centre along direction ``θ`` (``θ`` taken in ``[0, π)``);
- ``curve``: an arc of a circle of radius ``R`` whose midpoint is the image centre and whose circle centre lies
  at ``R·(cos θ, sin θ)``: the arc bulges away from ``θ`` and opens towards it. ``R`` is small (about an eighth
  of the image) so that the bend shows inside ``conv3``'s 9-pixel receptive field at the centre: with a wider
  arc the centre position sees an almost straight stroke and cannot tell a curve from a line;
- ``corner``: two segments leaving the centre at angles ``θ ± α/2`` (``α`` about 90°): ``θ`` is the bisector;
- ``ring``: a circle about the centre; ``dot``: a filled disc at the centre (``θ`` is meaningless for both).

Their stabilisers (:data:`SHAPE_SYMMETRY`): a line is fixed by the half turn and by the reflections through its
axis and through the perpendicular axis; a curve and a corner only by the reflection through their axis ``θ``
(no rotation but the identity); a ring and a dot by everything. Under ``D_n`` (``n`` even) this gives the three
symmetry families the analysis clusters features into: line-like (stabiliser contains ``r^{n/2}``), curve-like
(stabiliser has no non-trivial rotation) and invariant.

Jitter (on by default) varies the stroke thickness, the lengths and radii, the corner angle, the contrast and
moves the shape by at most ``max_offset`` pixels; with ``jitter=False`` every image of a kind and orientation is
the exact rendering, so its symmetries hold to float precision whenever the transform maps the pixel grid to
itself (multiples of 90°, mirrors).

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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from groupcc.errors import GroupccError

from .devices import resolve_device
from .progress import progress_bar
from .runs import CONFIG, HISTORY, METRICS, StagedDirectory, read_json, read_safetensors, write_json, write_safetensors


# --------------------------------------------------------------------------- shapes and their symmetries
@dataclass(frozen=True)
class ShapeSymmetry:
    """Which rotations and reflections fix a shape drawn with orientation ``θ``.

    ``rotation_order`` ``m``: the shape is fixed by the rotations by multiples of ``2π/m`` (``0``: by every
    rotation). ``mirror_axes``: the axes of its mirror symmetries, as angles relative to ``θ`` (``None``: every
    axis).
    """

    rotation_order: int
    mirror_axes: tuple[float, ...] | None
    description: str

    def fixes(self, orientation: float, rotation: float, mirrored: bool = False) -> bool:
        """Whether the optional mirror ``x ↦ −x`` followed by the rotation by ``rotation`` (radians) maps the
        shape with this ``orientation`` to itself. That composite is the rotation itself, or, mirrored, the
        reflection through the axis at ``π/2 + rotation/2``."""
        if not mirrored:
            return self.rotation_order == 0 or _is_multiple(rotation, 2 * math.pi / self.rotation_order)
        if self.mirror_axes is None:
            return True
        axis = math.pi / 2 + rotation / 2
        return any(_is_multiple(axis - orientation - offset, math.pi) for offset in self.mirror_axes)

    def dihedral_stabiliser(self, orientation: float, n: int) -> list[tuple[bool, int]]:
        """The elements ``(mirrored, k)`` of ``D_n`` (mirror if ``mirrored``, then rotate by ``2πk/n``) fixing it."""
        return [(m, k) for m in (False, True) for k in range(n) if self.fixes(orientation, 2 * math.pi * k / n, m)]


def _is_multiple(angle: float, period: float, tol: float = 1e-6) -> bool:
    remainder = math.remainder(angle, period)
    return abs(remainder) < tol


#: The shape kinds, in label order.
SHAPE_KINDS: tuple[str, ...] = ("line", "curve", "corner", "ring", "dot")

#: Each kind's stabiliser; see :meth:`ShapeSymmetry.fixes`.
SHAPE_SYMMETRY: dict[str, ShapeSymmetry] = {
    "line": ShapeSymmetry(2, (0.0, math.pi / 2), "fixed by the half turn and the reflections through its axis and the perpendicular axis (line-like)"),
    "curve": ShapeSymmetry(1, (0.0,), "fixed only by the reflection through its axis θ; no rotation but the identity (curve-like)"),
    "corner": ShapeSymmetry(1, (0.0,), "fixed only by the reflection through its bisector θ; no rotation but the identity (curve-like)"),
    "ring": ShapeSymmetry(0, None, "fixed by every rotation and reflection (invariant)"),
    "dot": ShapeSymmetry(0, None, "fixed by every rotation and reflection (invariant)"),
}


@dataclass
class ShapeImages:
    """Generated images and their ground truth.

    ``images``: ``[N, 1, size, size]`` float32 in ``[0, 1]``; ``kind``: ``[N]`` int64 index into ``kinds``;
    ``orientation``: ``[N]`` float32 radians (in ``[0, π)`` for lines, ``[0, 2π)`` otherwise; meaningless for
    ring and dot).
    """

    images: torch.Tensor
    kind: torch.Tensor
    orientation: torch.Tensor
    kinds: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.kind)


@dataclass
class _StrokeParameters:
    """Per-image drawing parameters (arrays of length N), in pixels and radians."""

    thickness: np.ndarray
    length: np.ndarray  # line half-length, corner arm, curve/ring radius, dot radius
    spread: np.ndarray  # curve arc half-angle, corner opening angle
    offset: np.ndarray  # [N, 2] shift of the shape's anchor from the image centre
    contrast: np.ndarray


# Jitter ranges (low, high) and the exact value used without jitter; lengths are fractions of the image size.
_THICKNESS = (1.2, 2.2, 1.6)
_LENGTH = {"line": (0.25, 0.4, 0.32), "curve": (0.1, 0.15, 0.125), "corner": (0.25, 0.35, 0.3), "ring": (0.15, 0.25, 0.2), "dot": (0.06, 0.1, 0.08)}
_SPREAD = {"curve": (math.radians(50), math.radians(80), math.radians(65)), "corner": (math.radians(75), math.radians(105), math.radians(90))}
_CONTRAST = (0.6, 1.0, 1.0)


def generate_shapes(
    n_images: int,
    size: int = 32,
    kinds: Sequence[str] = SHAPE_KINDS,
    seed: int = 0,
    jitter: bool = True,
    max_offset: float = 1.0,
    orientation: float | None = None,
) -> ShapeImages:
    """``n_images`` antialiased shapes of uniformly random kinds (from ``kinds``) and orientations (uniform in
    ``[0, 2π)``, reduced to ``[0, π)`` for lines), deterministic per ``seed``. ``jitter=False`` draws every
    shape with its nominal thickness, size, angle and full contrast, exactly at the centre; ``orientation``
    fixes every image's orientation (for symmetry checks)."""
    kinds = _check_kinds(kinds)
    if n_images < 1 or size < 8 or max_offset < 0:
        raise GroupccError(f"cannot generate {n_images} images of size {size} with offsets up to {max_offset}: expected n_images >= 1, size >= 8 and max_offset >= 0")
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, len(kinds), n_images)
    theta = rng.uniform(0, 2 * math.pi, n_images) if orientation is None else np.full(n_images, float(orientation))
    names = np.array(kinds)[kind]
    theta = np.where(names == "line", np.mod(theta, math.pi), np.mod(theta, 2 * math.pi))
    params = _stroke_parameters(names, size, rng, jitter, max_offset)
    coordinate = np.arange(size) - (size - 1) / 2
    x, y = coordinate[None, None, :], -coordinate[None, :, None]
    images = np.zeros((n_images, size, size))
    for name in kinds:
        chosen = names == name
        if chosen.any():
            distance = _DISTANCE[name](x, y, theta[chosen], _select(params, chosen))
            half_width = params.length[chosen] if name == "dot" else params.thickness[chosen] / 2
            coverage = np.clip(half_width[:, None, None] + 0.5 - distance, 0.0, 1.0)
            images[chosen] = params.contrast[chosen, None, None] * coverage
    return ShapeImages(
        images=torch.from_numpy(images[:, None].astype(np.float32)),
        kind=torch.from_numpy(kind.astype(np.int64)),
        orientation=torch.from_numpy(theta.astype(np.float32)),
        kinds=kinds,
    )


def _check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in SHAPE_SYMMETRY]
    if unknown or not kinds or len(set(kinds)) != len(kinds):
        raise GroupccError(f"bad shape kinds {list(kinds)}: expected distinct names among {', '.join(SHAPE_KINDS)}")
    return kinds


def _stroke_parameters(names: np.ndarray, size: int, rng: np.random.Generator, jitter: bool, max_offset: float) -> _StrokeParameters:
    n = len(names)

    def draw(low_high_nominal) -> np.ndarray:
        low, high, nominal = low_high_nominal
        return rng.uniform(low, high, n) if jitter else np.full(n, nominal)

    def per_kind(table) -> np.ndarray:
        values = {name: draw(table[name]) for name in table}
        return np.select([names == name for name in table], list(values.values()), default=0.0)

    offset = rng.uniform(-max_offset, max_offset, (n, 2)) if jitter else np.zeros((n, 2))
    return _StrokeParameters(draw(_THICKNESS), per_kind(_LENGTH) * size, per_kind(_SPREAD), offset, draw(_CONTRAST))


def _select(params: _StrokeParameters, chosen: np.ndarray) -> _StrokeParameters:
    return _StrokeParameters(**{f.name: getattr(params, f.name)[chosen] for f in fields(params)})


def _column(values: np.ndarray) -> np.ndarray:
    return values[:, None, None]


def _segment_distance(x, y, ax, ay, bx, by) -> np.ndarray:
    """Distance from the pixels ``(x, y)`` to the segments ``a → b`` (``[n]`` each): ``[n, size, size]``."""
    ax, ay, bx, by = (_column(v) for v in (ax, ay, bx, by))
    dx, dy = bx - ax, by - ay
    t = np.clip(((x - ax) * dx + (y - ay) * dy) / np.maximum(dx**2 + dy**2, 1e-12), 0.0, 1.0)
    return np.hypot(x - ax - t * dx, y - ay - t * dy)


def _line_distance(x, y, theta, p: _StrokeParameters) -> np.ndarray:
    ux, uy = p.length * np.cos(theta), p.length * np.sin(theta)
    ox, oy = p.offset[:, 0], p.offset[:, 1]
    return _segment_distance(x, y, ox - ux, oy - uy, ox + ux, oy + uy)


def _corner_distance(x, y, theta, p: _StrokeParameters) -> np.ndarray:
    ox, oy = p.offset[:, 0], p.offset[:, 1]
    arms = [theta + sign * p.spread / 2 for sign in (-1, 1)]
    return np.minimum(*(_segment_distance(x, y, ox, oy, ox + p.length * np.cos(a), oy + p.length * np.sin(a)) for a in arms))


def _curve_distance(x, y, theta, p: _StrokeParameters) -> np.ndarray:
    """Distance to the arc of half-angle ``spread`` around the direction ``θ + π`` seen from the circle centre
    ``offset + R(cos θ, sin θ)``: the radial distance inside the arc's angular range, else the nearer endpoint."""
    radius = _column(p.length)
    cx, cy = _column(p.offset[:, 0] + p.length * np.cos(theta)), _column(p.offset[:, 1] + p.length * np.sin(theta))
    vx, vy = x - cx, y - cy
    middle = _column(theta + math.pi)
    inside = np.abs(np.angle(np.exp(1j * (np.arctan2(vy, vx) - middle)))) <= _column(p.spread)
    ends = [middle + sign * _column(p.spread) for sign in (-1, 1)]
    to_ends = np.minimum(*(np.hypot(vx - radius * np.cos(e), vy - radius * np.sin(e)) for e in ends))
    return np.where(inside, np.abs(np.hypot(vx, vy) - radius), to_ends)


def _ring_distance(x, y, theta, p: _StrokeParameters) -> np.ndarray:
    return np.abs(np.hypot(x - _column(p.offset[:, 0]), y - _column(p.offset[:, 1])) - _column(p.length))


def _dot_distance(x, y, theta, p: _StrokeParameters) -> np.ndarray:
    """Distance to the dot's centre (its radius is the half-width of the stroke)."""
    return np.hypot(x - _column(p.offset[:, 0]), y - _column(p.offset[:, 1]))


_DISTANCE = {"line": _line_distance, "curve": _curve_distance, "corner": _corner_distance, "ring": _ring_distance, "dot": _dot_distance}


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
        self.kinds = _check_kinds(self.kinds)
        for name in ("n_train", "n_test", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise GroupccError(f"testbed {name} must be >= 1, got {getattr(self, name)}")
        if self.size < 8:
            raise GroupccError(f"testbed image size must be >= 8, got {self.size}")
        if not self.lr > 0:
            raise GroupccError(f"testbed learning rate must be > 0, got {self.lr}")

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
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise GroupccError(f"output directory {str(out)!r} already exists: overwrite it, or choose another path")
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
