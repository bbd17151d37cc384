"""The dihedral group ``D_n`` acting on images (and on feature maps): an optional reflection, then a rotation.

Element ``g`` of ``groups.dihedral(n)`` is ``r^k`` (index ``k``) or ``s·r^k`` (index ``n + k``). On an image,
``T(r)`` rotates by ``2π/n`` counter-clockwise about the centre and ``T(s)`` mirrors left-right, and
``T(s·r^k) = T(s)T(r^k) = T(r^{-k})T(s)``: a reflection, then a rotation by ``-2πk/n``. Since a mirror turns a
rotation into its inverse, ``T`` is a homomorphism: ``T(g·h) = T(g)T(h)``, i.e. ``(g·h)·x = g·(h·x)``.

Rotations by multiples of 90° are exact (``torch.rot90``). Other angles resample bilinearly
(``grid_sample``); then every image is first multiplied by the disc inscribed in the square, so that the corners,
which a rotation would move outside the frame, never leak in, and all transforms see the same pixels. The
interpolated action satisfies the action law only up to interpolation error.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from groupcc.errors import GroupccError

from groupcc.groups import Group, dihedral


class ImageActionError(GroupccError):
    """Images or a group the dihedral image action cannot handle (one line naming the value)."""


def parse_dihedral(group: Group | str | int) -> tuple[Group, int]:
    """The group ``D_n`` (by name ``"D8"``, by ``n``, or a dihedral :class:`Group`) and its ``n``."""
    if isinstance(group, int):
        return dihedral(group), group
    name = group if isinstance(group, str) else group.name
    if not (name.startswith("D") and name[1:].isdigit() and int(name[1:]) >= 1):
        raise ImageActionError(f"images transform under a dihedral group D<n>, got {name!r}")
    n = int(name[1:])
    return (dihedral(n) if isinstance(group, str) else group), n


class DihedralImageAction:
    """``T(g)`` for every element of ``D_n`` on ``[..., H, W]`` tensors (square, on any device).

    ``exact=True`` demands that every rotation is a multiple of 90° (``n`` divides 4) and fails otherwise;
    ``exact=None`` (default) uses exact rotations where possible and interpolation elsewhere."""

    def __init__(self, group: Group | str | int, exact: bool | None = None):
        self.group, self.n = parse_dihedral(group)
        self.exact = 4 % self.n == 0
        if exact and not self.exact:
            raise ImageActionError(f"D{self.n} rotates by 360°/{self.n}, which is not a multiple of 90°: exact rotations need n in 1, 2, 4")

    @property
    def order(self) -> int:
        return self.group.order

    def reflection_and_turn(self, g: int) -> tuple[bool, int]:
        """``T(g) = R(2π·turn/n) ∘ M^reflect`` with ``M`` the left-right mirror."""
        if not 0 <= g < 2 * self.n:
            raise ImageActionError(f"D{self.n} has elements 0..{2 * self.n - 1}, got {g}")
        return (False, g) if g < self.n else (True, (-(g - self.n)) % self.n)

    def check_images(self, images: torch.Tensor) -> None:
        if images.ndim < 2 or images.shape[-1] != images.shape[-2]:
            raise ImageActionError(f"images must be square [..., H, W] to rotate about their centre, got shape {tuple(images.shape)}")

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Images as every transform sees them: masked to the inscribed disc when some angle is interpolated."""
        self.check_images(images)
        return images if self.exact else images * disc_mask(images.shape[-1], images.device, images.dtype)

    def apply(self, images: torch.Tensor, g: int, prepared: bool = False) -> torch.Tensor:
        """``T(g)`` applied to ``images`` ``[..., H, W]`` (call :meth:`prepare` first or pass ``prepared=False``)."""
        images = images if prepared else self.prepare(images)
        reflect, turn = self.reflection_and_turn(g)
        if reflect:
            images = images.flip(-1)
        quarter_turns = turn * 4 / self.n
        if quarter_turns == int(quarter_turns):
            return torch.rot90(images, int(quarter_turns), dims=(-2, -1))
        return rotate(images, 2 * math.pi * turn / self.n)

    def apply_inverse(self, images: torch.Tensor, g: int) -> torch.Tensor:
        """``T(g)⁻¹ = T(g⁻¹)``: maps a feature map of ``g·x`` back onto the positions of ``x``."""
        return self.apply(images, int(self.group.inverse[g]), prepared=True)

    def orbit(self, images: torch.Tensor) -> torch.Tensor:
        """``[|G|·N, ...]``: every transform of a batch ``[N, ...]``, element-major (all of ``g = 0`` first)."""
        prepared = self.prepare(images)
        return torch.cat([self.apply(prepared, g, prepared=True) for g in range(self.order)])


def disc_mask(size: int, device=None, dtype=torch.float32, edge: float = 2.0) -> torch.Tensor:
    """``[size, size]``: the disc inscribed in the square, 1 inside and falling linearly to 0 over the last ``edge``
    pixels of its radius (a hard edge would be resampled differently by each rotation)."""
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    radius = torch.sqrt(coords[:, None] ** 2 + coords[None, :] ** 2)
    return ((size / 2 - 0.5 - radius) / edge).clamp(0, 1)


def rotate(images: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate ``[..., H, W]`` counter-clockwise by ``angle`` (radians) about the centre, bilinear, zeros outside.

    Counter-clockwise as seen with row 0 at the top, the same sense as ``torch.rot90(x, 1, dims=(-2, -1))``:
    the output pixel at ``(row, col)`` reads the input at the position rotated back by ``angle``."""
    shape = images.shape
    flat = images.reshape(-1, 1, shape[-2], shape[-1]) if images.ndim != 4 else images
    cos, sin = math.cos(angle), math.sin(angle)
    # affine_grid maps output (x = column, y = row) in [-1, 1] to the input position it samples
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta.expand(flat.shape[0], 2, 3), list(flat.shape), align_corners=False)
    return F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False).reshape(shape)
