"""Harvesting a vision model's layer on every dihedral transform of a set of images.

``acts[i, g]`` is the layer's activation on ``g·x_i`` (see :mod:`groupcc.training.image_actions`), read at

- ``centre``: the centre of the feature map (the mean of the 2×2 central positions when the size is even:
  they are permuted among themselves by the exact transforms, so the position is the same point for all ``g``);
- ``pooled``: the mean over all positions;
- ``all``: every position as its own input. The feature map of ``g·x`` is first mapped back by ``T(g)⁻¹``, so that
  position ``p`` of every block is the same point of ``x``; rows are ``(image, position)``, image-major.

Images come from a ``.npy`` array, a folder of PNG/JPEG files, the built-in shape generator (``shapes``) or crops of
the photographs that ship inside installed packages (``photos``, :mod:`groupcc.training.photos`).

Batches: each forward pass runs ``batch_size`` rows, the ``|G|`` transforms of ``batch_size // |G|`` images (at
least one image), so memory is bounded by the batch size whatever the number of images; images are read from their
source a batch at a time. The forward pass stops once the layer has run (:class:`UpToLayer`): what comes after the
layer cannot change its output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from groupcc.errors import GroupccError
from groupcc.groups.validation import check_number

from .activation_store import ActivationSource
from .harvest import check_new_output, collect, iter_harvest, resolve_layer
from .image_actions import DihedralImageAction
from .photos import PhotoCrops
from .shapes import MAX_IMAGE_SIZE, MAX_IMAGES, MIN_IMAGE_SIZE, SHAPE_KINDS, generate_shapes

POSITIONS = ("centre", "pooled", "all")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Rows (images × transforms) per forward pass when none is given: CPUs run small batches fastest (they stay in
#: cache), GPUs large ones.
DEFAULT_BATCH = {"cpu": 32, "cuda": 1024}
#: What ``images`` may be: a tensor, or anything that reads like one (``len``, ``shape``, ``ndim``, indexing by an
#: index tensor), such as :class:`groupcc.training.photos.PhotoCrops`.
Images = torch.Tensor | PhotoCrops


class VisionInputError(GroupccError):
    """Images or a position the vision harvester cannot use (one line naming the value)."""


def centre_of(maps: torch.Tensor) -> torch.Tensor:
    """``[rows, C]``: the centre of ``[rows, C, H, W]`` (mean of the central 1 or 2 rows and columns)."""
    h, w = maps.shape[-2:]
    rows = slice((h - 1) // 2, h // 2 + 1)
    cols = slice((w - 1) // 2, w // 2 + 1)
    return maps[..., rows, cols].mean(dim=(-2, -1))


class PositionReducer:
    """The ``reduce`` of :func:`groupcc.training.harvest.iter_harvest` for a position; remembers the layer's channels."""

    def __init__(self, position: str, action: DihedralImageAction):
        if position not in POSITIONS:
            raise VisionInputError(f"unknown position {position!r}: expected one of {', '.join(POSITIONS)}")
        self.position, self.action, self.channels = position, action, None

    def __call__(self, maps: torch.Tensor) -> torch.Tensor:
        if maps.ndim != 4:
            raise VisionInputError(f"the layer's output has shape {tuple(maps.shape)}: expected a feature map [N, C, H, W]")
        self.channels = maps.shape[1]
        if self.position == "centre":
            return centre_of(maps)
        if self.position == "pooled":
            return maps.mean(dim=(-2, -1))
        per_element = maps.unflatten(0, (self.action.order, -1))
        back = torch.stack([self.action.apply_inverse(per_element[g], g) for g in range(self.action.order)])
        return back.flatten(0, 1).flatten(1)  # [|G|·B, C·H·W]


class _LayerReached(Exception):
    """Raised by a forward hook to end a forward pass once the harvested layer has run."""


class UpToLayer(nn.Module):
    """``model`` run only as far as its submodule ``layer``, with the model's own submodule names.

    The first forward pass runs the whole model and counts the layer's calls; later passes end right after the
    layer's output (a forward hook raises, after the harvest's own hook has read the output) when it runs once
    per pass. A module that runs several times per pass (a shared ReLU) keeps the full pass, so that its last
    output is read, as without this wrapper."""

    def __init__(self, model: nn.Module, layer: str):
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        # a tuple, so that neither is a submodule and named_modules() stays the model's own
        self._model_and_layer = (model, resolve_layer(model, layer))
        self._calls_per_pass: int | None = None
        self.training = model.training

    def train(self, mode: bool = True) -> "UpToLayer":
        self._model_and_layer[0].train(mode)
        self.training = mode
        return self

    def forward(self, *args):
        model, layer = self._model_and_layer
        if self._calls_per_pass is None:
            calls: list[int] = []
            handle = layer.register_forward_hook(lambda *_: calls.append(1))
            try:
                output = model(*args)
            finally:
                handle.remove()
            self._calls_per_pass = len(calls)
            return output
        if self._calls_per_pass != 1:
            return model(*args)
        handle = layer.register_forward_hook(_stop_forward)
        try:
            return model(*args)
        except _LayerReached:
            return None
        finally:
            handle.remove()


def _stop_forward(*_) -> None:
    raise _LayerReached


def check_model_input(model: nn.Module, images: Images) -> None:
    """Fail in one line when the images' channels do not match the model's first convolution."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if images.ndim != 4:
        raise VisionInputError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
    if first is not None and first.in_channels != images.shape[1]:
        raise VisionInputError(f"the images have {images.shape[1]} channels but the model's first convolution expects {first.in_channels}")


@torch.no_grad()
def iter_vision_harvest(
    model: nn.Module,
    layer: str,
    images_NCHW: Images,
    action: DihedralImageAction,
    position: str = "centre",
    rows_per_forward: int | None = None,
    progress: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield ``[B, |G|, C]`` activation batches (``[B·H·W, |G|, C]`` for ``all`` positions), in input order.
    Each forward pass runs ``B·|G|`` rows, ``B = max(1, rows_per_forward // |G|)`` (default
    :data:`DEFAULT_BATCH` for the model's device); the images are read and moved to that device batch by batch."""
    check_model_input(model, images_NCHW)
    action.check_images(images_NCHW)
    device = model_device(model)
    rows_per_forward = check_batch_size(rows_per_forward, device)
    reducer = PositionReducer(position, action)
    batches = iter_harvest(
        UpToLayer(model, layer), layer, len(images_NCHW), lambda idx: images_NCHW[torch.as_tensor(idx)].to(device),
        lambda batch: (action.orbit(batch),), action.order, rows_per_forward=rows_per_forward,
        reduce=reducer, progress=progress,
    )
    for acts in batches:
        if position == "all":  # [B, |G|, C·H·W] -> [B·H·W, |G|, C]
            acts = acts.unflatten(2, (reducer.channels, -1)).permute(0, 3, 1, 2).flatten(0, 1)
        yield acts


def model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def check_batch_size(batch_size: int | None, device: torch.device) -> int:
    """``batch_size`` rows per forward pass, or the device's default (:data:`DEFAULT_BATCH`) for ``None``."""
    if batch_size is None:
        return DEFAULT_BATCH.get(device.type, DEFAULT_BATCH["cuda"])
    return check_number("batch_size", batch_size, 1, integer=True, error=VisionInputError)  # as a composer harvest's rows per forward


def harvest_images(
    model: nn.Module,
    layer: str,
    images_NCHW: Images,
    group: str = "D4",
    *,
    position: str = "centre",
    exact: bool = False,
    batch_size: int | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    metadata: dict | None = None,
    source: str | None = None,
    progress: bool = True,
) -> ActivationSource:
    """A vision layer's activations on every rotation and reflection of ``images_NCHW`` under the dihedral ``group``
    (``exact``: refuse angles that are not multiples of 90°), read at ``position``: ``[N, |G|, C]`` (``N·H·W`` rows
    for ``all``). ``batch_size``: images × transforms per forward pass (see :func:`iter_vision_harvest`).
    ``metadata`` (how the images were made, see :func:`vision_images`) and ``source`` (the model) are recorded,
    with what the analysis needs to redraw the images. A store at ``out`` when given, else in memory."""
    check_new_output(out, overwrite)
    check_batch_size(batch_size, model_device(model))
    action = DihedralImageAction(group, exact=exact or None)
    batches = iter_vision_harvest(model, layer, images_NCHW, action, position, rows_per_forward=batch_size, progress=progress)
    metadata = {**(metadata or {}), "position": position, "n_images": len(images_NCHW), "image_shape": list(images_NCHW.shape[1:])}
    return collect(batches, out, action.order, overwrite=overwrite, group=action.group.name, action="dihedral-image",
                   layer=layer, source=source, metadata=metadata)


def vision_images(images: str, n_images: int, size: int = 32, seed: int = 0, max_offset: float = 0.0) -> tuple[Images, dict]:
    """Images ``[N, C, H, W]`` from ``shapes`` (the generator; ``size``, ``seed``, shapes moved by at most
    ``max_offset`` pixels off the centre, which keeps their symmetries about it exact by default), ``photos``
    (``n_images`` seeded crops of the packaged photographs, ``size`` pixels square, made as they are read) or a
    ``.npy``/folder path (at most ``n_images``), and the store metadata that describes them (for generated shapes:
    each image's kind; for photos: each crop's file and box). The numbers are checked whatever the images, before
    any is made or read."""
    check_number("n_images", n_images, 1, MAX_IMAGES, integer=True, error=VisionInputError)
    check_number("size", size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, integer=True, error=VisionInputError)
    check_number("seed", seed, 0, integer=True, error=VisionInputError)
    # beyond half the side a shape's centre would leave the image
    check_number("max_offset", max_offset, 0, size / 2, error=VisionInputError)
    if images == "photos":
        crops = PhotoCrops(n_images, size, seed)
        return crops, crops.metadata()
    if images == "shapes":
        shapes = generate_shapes(n_images, size=size, seed=seed, max_offset=max_offset)
        metadata = {
            "images": "shapes", "seed": seed, "size": size, "max_offset": max_offset, "label_names": list(SHAPE_KINDS),
            "labels": np.asarray(shapes.kind).tolist(), "orientation": np.round(np.asarray(shapes.orientation), 5).tolist(),
        }
        return torch.as_tensor(shapes.images), metadata
    loaded = load_image_array(images)[:n_images]
    return loaded, {"images": str(Path(images).resolve())}


def stored_images(metadata: dict) -> torch.Tensor:
    """The images a vision store was harvested from, from its metadata (made again for ``shapes`` and ``photos``)."""
    if "images" not in metadata or "n_images" not in metadata:
        raise VisionInputError("the activation store does not record its images: expected a store from 'groupcc vision harvest'")
    if metadata["images"] == "photos":
        crops = PhotoCrops(metadata["n_images"], metadata["size"], metadata["seed"], metadata["scales"])
        crops.check_sources(metadata["sources"])
        return crops[np.arange(len(crops))]
    images, _ = vision_images(metadata["images"], metadata["n_images"], metadata.get("size", 32), metadata.get("seed", 0),
                              metadata.get("max_offset", 0.0))
    return images


def load_image_array(path: str | Path) -> torch.Tensor:
    """A ``.npy`` array ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]`` (C of 1, 3 or 4; alpha dropped), or a
    folder of PNG/JPEG images of one size, as float32 ``[N, C, H, W]`` in [0, 1] (uint8 values are divided by 255)."""
    path = Path(path)
    if not path.exists():
        raise VisionInputError(f"images {str(path)!r} do not exist: expected a .npy array or a folder of {'/'.join(IMAGE_SUFFIXES)} files")
    if path.is_dir():
        array = _read_folder(path)
    else:
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise VisionInputError(f"cannot read images from {str(path)!r}: {err}") from None
    return to_nchw(array, str(path))


def _read_folder(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise VisionInputError(f"folder {str(path)!r} has no {'/'.join(IMAGE_SUFFIXES)} images")
    images = []
    for file in files:
        try:
            image = np.asarray(imread(file))
        except (OSError, ValueError, SyntaxError) as err:
            raise VisionInputError(f"cannot read image {str(file)!r}: {err}") from None
        if image.dtype == np.uint8:
            image = image.astype(np.float32) / 255
        if images and image.shape != images[0].shape:
            raise VisionInputError(f"image {str(file)!r} has shape {image.shape}, but {str(files[0])!r} has {images[0].shape}: expected one size")
        images.append(image)
    return np.stack(images)


def to_nchw(array: np.ndarray, where: str) -> torch.Tensor:
    """Images as float32 ``[N, C, H, W]`` in [0, 1]; see :func:`load_image_array` for the accepted layouts."""
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255
    if not np.issubdtype(array.dtype, np.floating):
        raise VisionInputError(f"images in {where!r} are {array.dtype}: expected floats in [0, 1] or uint8")
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3, 4) and array.shape[1] not in (1, 3, 4):
        array = np.moveaxis(array, -1, 1)
    if array.ndim != 4 or array.shape[1] not in (1, 3, 4):
        raise VisionInputError(f"images in {where!r} have shape {array.shape}: expected [N, H, W], [N, H, W, C] or [N, C, H, W] with C in 1, 3, 4")
    if array.shape[1] == 4:
        array = array[:, :3]
    if array.shape[-1] != array.shape[-2]:
        raise VisionInputError(f"images in {where!r} are {array.shape[-2]}×{array.shape[-1]}: expected square images (they rotate about the centre)")
    if not np.isfinite(array).all():
        raise VisionInputError(f"images in {where!r} contain NaN or inf")
    if array.size and (array.min() < 0 or array.max() > 1):  # e.g. [0, 255] floats: the models expect [0, 1]
        raise VisionInputError(f"images in {where!r} have values in [{array.min():g}, {array.max():g}]: expected floats in [0, 1] "
                               "(or uint8, read as value / 255)")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
