"""Photo crops from installed packages: which photos are found, seeded crops that match their recorded sources,
regeneration from a store's metadata, and one-line errors."""

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from groupcc.training.photos import PHOTOS, SCALES, PhotoCrops, PhotosError, available_photos
from groupcc.training.vision_harvest import stored_images, vision_images


def test_photos_come_from_installed_packages_only():
    found = available_photos()
    # scikit-learn and matplotlib are dependencies: their three photos are always there
    assert {"sklearn/datasets/images/china.jpg", "sklearn/datasets/images/flower.jpg",
            "matplotlib/mpl-data/sample_data/grace_hopper.jpg"} <= set(found)
    if importlib.util.find_spec("skimage") is not None:  # every listed scikit-image file is in its wheel (no pooch)
        assert len(found) == len(PHOTOS)
    assert all(path.is_file() for path in found.values())


def test_crops_are_seeded_and_match_their_recorded_boxes():
    crops = PhotoCrops(12, 24, seed=5)
    images = crops[torch.arange(12)]
    assert images.shape == crops.shape == (12, 3, 24, 24) and images.dtype == torch.float32
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    assert torch.equal(PhotoCrops(12, 24, seed=5)[np.arange(12)], images)
    assert PhotoCrops(12, 24, seed=6).sources != crops.sources
    sizes = {name: Image.open(path).size for name, path in crops.paths.items()}
    for i, source in enumerate(crops.sources):
        left, top, right, bottom = source["box"]
        width, height = sizes[source["file"]]
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        assert right - left == bottom - top
        assert any(abs((right - left) - s * min(width, height)) <= 0.5 for s in SCALES)
        expected = Image.open(crops.paths[source["file"]]).convert("RGB").crop(source["box"]).resize((24, 24), Image.BILINEAR)
        pixels = torch.from_numpy(np.moveaxis(np.asarray(expected, dtype=np.float32) / 255, -1, 0))
        # a crop, then a resize: the same up to rounding, but at the edges, where the resize with a box also reads
        # the photo just outside the box
        assert (images[i] - pixels)[:, 1:-1, 1:-1].abs().max() <= 1 / 255 + 1e-6
    assert torch.equal(crops[[3]][0], images[3])


def test_images_are_made_again_from_the_metadata_and_checked():
    images, metadata = vision_images("photos", 6, 16, 1)
    assert metadata["images"] == "photos" and len(metadata["sources"]) == 6
    again = stored_images({**metadata, "n_images": 6})
    assert torch.equal(again, images[np.arange(6)])
    moved = [dict(s, box=[b + 1 for b in s["box"]]) for s in metadata["sources"]]
    with pytest.raises(PhotosError, match="differ from those the store recorded"):
        stored_images({**metadata, "n_images": 6, "sources": moved})


@pytest.mark.parametrize("kwargs, message", [
    ({"n_images": 0, "size": 16}, "n_images = 0: expected a positive number"),
    ({"n_images": 2, "size": 4}, "size = 4: expected a crop side of at least 8"),
    ({"n_images": 2, "size": 16, "scales": [0.5, 2]}, "scales = [0.5, 2]"),
])
def test_bad_settings_raise_one_line(kwargs, message):
    with pytest.raises(PhotosError) as info:
        PhotoCrops(**kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
