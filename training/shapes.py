"""Generated images of oriented shapes whose symmetries are known: the data of the vision testbed
(:mod:`groupcc.training.testbed`), so that group crosscoders can be checked against ground-truth symmetry families.

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from groupcc.errors import GroupccError
from groupcc.groups.limits import array_bytes, memory_refusal

#: Bounds on image counts and sides, generated or read from files (the testbed's and a vision harvest's): beyond
#: them the arrays would not fit in memory anyway (a typo, not a plan). Below the smallest side a shape has no
#: room to show its orientation.
MAX_IMAGES = 10**7
MIN_IMAGE_SIZE = 8
MAX_IMAGE_SIZE = 4096
#: float64 arrays of all the images that drawing them holds at once: the images and the distances and coverage
#: of the shapes of one kind (at most all of them).
DRAWING_COPIES = 3


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
    kinds = check_kinds(kinds)
    if n_images < 1 or size < MIN_IMAGE_SIZE or max_offset < 0:
        raise GroupccError(f"cannot generate {n_images} images of size {size} with offsets up to {max_offset}: expected n_images >= 1, "
                           f"size >= {MIN_IMAGE_SIZE} and max_offset >= 0")
    refusal = memory_refusal(f"{n_images} shapes of {size}x{size} pixels", array_bytes((DRAWING_COPIES, n_images, size, size), 8))
    if refusal:
        raise GroupccError(f"{refusal}: expected fewer or smaller images")
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


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
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
