"""Real photographs without downloads: random square crops of the photos that ship inside installed packages.

The photos (:data:`PHOTOS`) are files in the wheels of scikit-image (its ``data`` folder: only the files in the
wheel, not those ``skimage.data`` fetches with pooch), scikit-learn (the sample images ``china.jpg`` and
``flower.jpg`` of ``sklearn.datasets.load_sample_images``) and matplotlib (``grace_hopper.jpg`` of
``matplotlib.cbook.get_sample_data``). scikit-learn and matplotlib are dependencies of groupcc; scikit-image is
optional (the ``photos`` extra), and without it the set has only their three photos. Files are found through
``importlib`` (the packages are not imported) and read with Pillow; grey photos become RGB.

Crop ``i`` (seeded, :class:`PhotoCrops`): a photo drawn uniformly, a side of ``scale × `` its short side with the
scale drawn from :data:`SCALES`, a position drawn uniformly inside the photo, resized to ``size × size``
(Pillow's antialiasing bilinear resampling). Crops are made when they are read, a batch at a time, so a data set
of any length costs the memory of the decoded photos and one batch. Each crop's source (file and crop box) is
recorded, so a store says where every one of its images came from.
"""

from __future__ import annotations

import importlib.util
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from groupcc.errors import GroupccError

#: (package, file inside the package) of every photo used, when the package is installed.
PHOTOS: tuple[tuple[str, str], ...] = (
    *(("skimage", f"data/{name}") for name in (
        "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
        "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg",
        "text.png")),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)
#: Crop sides as fractions of a photo's short side.
SCALES = (0.5, 0.25, 0.125)
#: Smallest crop side in pixels.
MIN_SIZE = 8


class PhotosError(GroupccError):
    """Bad photo crop settings, or photos that differ from those a store recorded (one line naming the value)."""


def available_photos() -> dict[str, Path]:
    """``"package/file"`` -> path of each photo of :data:`PHOTOS` whose package is installed, in that order."""
    found = {}
    for package, file in PHOTOS:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations))) / file
            if path.is_file():
                found[f"{package}/{file}"] = path
    return found


class PhotoCrops:
    """``n_images`` seeded random square crops of the available photos, ``[N, 3, size, size]`` floats in [0, 1].

    Reads like a tensor of images: ``len``, ``shape``, ``ndim`` and indexing by an index array or tensor (a batch
    ``[B, 3, size, size]``); :attr:`sources` gives each crop's ``{"file", "box"}`` (``box`` = left, top, right,
    bottom in the photo's pixels)."""

    ndim = 4

    def __init__(self, n_images: int, size: int, seed: int = 0, scales: Sequence[float] = SCALES):
        if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
            raise PhotosError(f"n_images = {n_images!r}: expected a positive number of photo crops")
        if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE:
            raise PhotosError(f"size = {size!r}: expected a crop side of at least {MIN_SIZE} pixels")
        if not scales or not all(0 < s <= 1 for s in scales):
            raise PhotosError(f"scales = {list(scales)!r}: expected fractions of a photo's short side in (0, 1]")
        self.paths = available_photos()
        if not self.paths:
            raise PhotosError("no photos found: expected scikit-learn's or matplotlib's sample images to be installed")
        self.size, self.seed, self.scales = size, seed, tuple(float(s) for s in scales)
        self.sources = self._draw_crops(n_images)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.sources), 3, self.size, self.size)

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, indices) -> torch.Tensor:
        indices = np.atleast_1d(np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices))
        return torch.from_numpy(np.stack([self._crop(self.sources[int(i)]) for i in indices]))

    def metadata(self) -> dict:
        """What a store records about these images (enough to make them again, and where each came from)."""
        return {"images": "photos", "seed": self.seed, "size": self.size, "scales": list(self.scales),
                "photos": list(self.paths), "sources": self.sources}

    def check_sources(self, sources: list[dict]) -> None:
        """Fail unless these crops are the recorded ones (same photos installed, same crop boxes)."""
        if sources != self.sources:
            raise PhotosError("the installed photos differ from those the store recorded (another scikit-image, "
                              "or scikit-image added or removed): expected the same files and crop boxes")

    @cached_property
    def _photos(self) -> dict[str, Image.Image]:
        return {name: Image.open(path).convert("RGB") for name, path in self.paths.items()}

    def _draw_crops(self, n_images: int) -> list[dict]:
        sizes = {}
        for name, path in self.paths.items():
            with Image.open(path) as photo:
                sizes[name] = photo.size
        names, rng = list(self.paths), np.random.default_rng(self.seed)
        sources = []
        for _ in range(n_images):
            name = names[int(rng.integers(len(names)))]
            width, height = sizes[name]
            side = max(1, round(self.scales[int(rng.integers(len(self.scales)))] * min(width, height)))
            left, top = int(rng.integers(width - side + 1)), int(rng.integers(height - side + 1))
            sources.append({"file": name, "box": [left, top, left + side, top + side]})
        return sources

    def _crop(self, source: dict) -> np.ndarray:
        crop = self._photos[source["file"]].resize((self.size, self.size), Image.BILINEAR, box=tuple(source["box"]))
        return np.ascontiguousarray(np.moveaxis(np.asarray(crop, dtype=np.float32) / 255, -1, 0))
