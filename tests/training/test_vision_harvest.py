"""The dihedral image action (action law, exactness, masks) and the vision harvester against explicit transforms."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from groupcc.errors import GroupccError
from groupcc.training.harvest import capture_output, resolve_layer
from groupcc.training.image_actions import DihedralImageAction, ImageActionError, disc_mask, rotate
from groupcc.training.mobilenet import build_mobilenet_v2, default_weights, load_mobilenet_v2
from groupcc.training.photos import PhotoCrops
from groupcc.training.vision_harvest import (
    UpToLayer,
    VisionInputError,
    centre_of,
    harvest_images,
    iter_vision_harvest,
    load_image_array,
    to_nchw,
    vision_images,
)
from groupcc.training.vision_models import load_vision_model


def smooth_images(n=2, size=33, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, size, size, generator=generator)
    return F.avg_pool2d(F.pad(images, (2, 2, 2, 2), mode="replicate"), 5, 1)  # smooth, so interpolation is accurate


@given(n=st.sampled_from([1, 2, 4]), g=st.integers(0, 7), h=st.integers(0, 7))
def test_action_law_is_exact_for_multiples_of_90_degrees(n, g, h):
    action = DihedralImageAction(n)
    g, h = g % action.order, h % action.order
    x = torch.rand(3, 2, 6, 6)
    left = action.apply(action.apply(x, h), g)
    assert torch.equal(left, action.apply(x, int(action.group.mult_table[g, h])))


def blobs(size=33):
    """A smooth image (three Gaussian blobs): bilinear resampling is accurate on it."""
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    image = sum(torch.exp(-((coords[:, None] - r) ** 2 + (coords[None] - c) ** 2) / (2 * s * s)) for r, c, s in [(5, -3, 3), (-6, 2, 2.5), (0, 8, 3)])
    return image[None, None]


def test_action_law_holds_up_to_interpolation_for_d8():
    action = DihedralImageAction("D8")
    x = blobs()
    scale = action.prepare(x).norm()
    worst = max(
        ((action.apply(action.apply(x, h), g) - action.apply(x, int(action.group.mult_table[g, h]))).norm() / scale).item()
        for g in range(16) for h in range(16)
    )
    assert worst < 0.05


def test_rotations_and_reflections_are_the_expected_ones():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    d4 = DihedralImageAction("D4")
    assert torch.equal(d4.apply(x, 1), torch.rot90(x, 1, dims=(-2, -1)))  # r: a quarter turn counter-clockwise
    assert torch.equal(d4.apply(x, 4), x.flip(-1))  # s: the left-right mirror
    assert torch.equal(d4.apply(x, 0), x)
    # the interpolated rotation agrees with the exact one at 90°
    y = smooth_images(1, 9)
    assert torch.allclose(rotate(y, math.pi / 2), torch.rot90(y, 1, dims=(-2, -1)), atol=1e-5)
    # D8 masks every image to the inscribed disc, and its quarter turns are still exact
    d8 = DihedralImageAction("D8")
    z = torch.rand(1, 1, 9, 9)
    assert torch.equal(d8.apply(z, 2), torch.rot90(z * disc_mask(9), 1, dims=(-2, -1)))
    assert disc_mask(9)[4, 4] == 1 and disc_mask(9)[0, 0] == 0


def test_action_errors():
    with pytest.raises(ImageActionError, match="multiple of 90"):
        DihedralImageAction("D8", exact=True)
    with pytest.raises(ImageActionError, match="dihedral"):
        DihedralImageAction("S4")
    with pytest.raises(ImageActionError, match="square"):
        DihedralImageAction("D4").orbit(torch.zeros(1, 1, 4, 5))


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.conv2(self.conv1(x)).mean(dim=(-2, -1)))


def explicit_layer(model, images):
    return model.conv2(model.conv1(images))


@pytest.mark.parametrize("group", ["D4", "D8"])
@pytest.mark.parametrize("position", ["centre", "pooled", "all"])
def test_harvester_equals_explicitly_transformed_inputs(group, position):
    model, action = TinyCNN().eval(), DihedralImageAction(group)
    images = smooth_images(5, 12)
    acts = torch.cat(list(iter_vision_harvest(model, "conv2", images, action, position, rows_per_forward=16, progress=False)))
    with torch.no_grad():
        for g in range(action.order):
            maps = explicit_layer(model, action.apply(images, g))
            if position == "centre":
                expected = centre_of(maps)
            elif position == "pooled":
                expected = maps.mean(dim=(-2, -1))
            else:  # mapped back onto the positions of x, then one row per (image, position)
                expected = action.apply_inverse(maps, g).permute(0, 2, 3, 1).reshape(-1, maps.shape[1])
            torch.testing.assert_close(acts[:, g], expected, rtol=1e-5, atol=1e-6)
    assert acts.shape[0] == (5 * 144 if position == "all" else 5)


def test_harvester_errors():
    model, action = TinyCNN(), DihedralImageAction("D4")
    with pytest.raises(VisionInputError, match="channels"):
        list(iter_vision_harvest(model, "conv2", torch.zeros(2, 3, 8, 8), action, progress=False))
    with pytest.raises(VisionInputError, match="position"):
        list(iter_vision_harvest(model, "conv2", torch.zeros(2, 1, 8, 8), action, "corner", progress=False))
    with pytest.raises(Exception, match="not found"):
        list(iter_vision_harvest(model, "conv9", torch.zeros(2, 1, 8, 8), action, progress=False))


def test_image_loading(tmp_path):
    from matplotlib.image import imsave

    array = np.random.default_rng(0).integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", array)
    loaded = load_image_array(tmp_path / "images.npy")
    assert loaded.shape == (3, 3, 8, 8) and loaded.max() <= 1
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(2):
        imsave(folder / f"{i}.png", array[i])
    assert load_image_array(folder).shape == (2, 3, 8, 8)
    with pytest.raises(VisionInputError, match="square"):
        to_nchw(np.zeros((2, 8, 9), dtype=np.float32), "x")
    with pytest.raises(VisionInputError, match=r"^images in 'x' have values in \[-0.5, 300\]: expected floats in \[0, 1\]"):
        to_nchw(np.array([-0.5, 300], dtype=np.float32).repeat(32).reshape(1, 8, 8), "x")
    assert to_nchw(np.zeros((0, 8, 8), dtype=np.float32), "x").shape == (0, 1, 8, 8)  # no images: refused by the harvest
    with pytest.raises(VisionInputError, match="do not exist"):
        load_image_array(tmp_path / "missing")
    imsave(folder / "odd.png", np.zeros((5, 5, 3), dtype=np.uint8))
    with pytest.raises(VisionInputError, match="one size"):
        load_image_array(folder)


@pytest.mark.parametrize("images", ["shapes", "photos", "missing.npy"])
@pytest.mark.parametrize("option, value, match", [
    ("n_images", 2**63, r"n_images = 9223372036854775808: expected an integer in \[1, 10000000\]"),
    ("size", 2**63, r"size = 9223372036854775808: expected an integer in \[8, 4096\]"),
    ("seed", -1, r"seed = -1: expected an integer in \[0, 9223372036854775807\]"),
    ("seed", 2**63, r"seed = 9223372036854775808: expected an integer in \[0, 9223372036854775807\]"),
    ("max_offset", float("nan"), r"max_offset = nan: expected a finite number in \[0, 16.0\]"),
    ("max_offset", 16.5, r"max_offset = 16.5: expected a finite number in \[0, 16.0\]"),  # the shape's centre off the image
])
def test_image_numbers_are_checked_before_any_image_is_made_or_read(images, option, value, match):
    options = {"n_images": 4, "size": 32, "seed": 0, "max_offset": 0.0, option: value}
    with pytest.raises(VisionInputError, match=f"^{match}$"):
        vision_images(images, **options)


def test_an_empty_weights_path_is_refused_not_read_as_no_weights():
    with pytest.raises(GroupccError, match=r"^weights '': expected the path of a weights file, or no weights at all$"):
        load_vision_model("torch.nn:Identity", "")


def test_an_import_path_that_needs_arguments_or_has_no_layers_is_one_line():
    with pytest.raises(GroupccError, match=r"^cannot build 'torch.nn:Linear' without arguments \(missing a required argument: "
                                           r"'in_features'\): expected a torch.nn.Module, or a class or factory that takes none$"):
        load_vision_model("torch.nn:Linear")
    with pytest.raises(GroupccError, match=r"^cannot build 'os:system' without arguments"):  # and the command is never run
        load_vision_model("os:system")
    with pytest.raises(GroupccError, match=r"^layer 'x' not found in ReLU: expected a model with submodules to read \(it has none\)$"):
        resolve_layer(load_vision_model("torch.nn:ReLU"), "x")


def test_batched_harvest_equals_one_image_per_forward():
    """Any batch size gives the rows of a harvest one image (its |G| transforms) per forward pass, in order, up to
    float32 rounding (oneDNN picks its convolution kernels by batch size, so the last bits may differ)."""
    torch.manual_seed(0)
    model, action = build_mobilenet_v2().eval(), DihedralImageAction("D4")
    images = PhotoCrops(5, 33, seed=2)
    one = torch.cat(list(iter_vision_harvest(model, "features.3", images, action, rows_per_forward=1, progress=False)))
    for rows in (20, 1000):
        batched = torch.cat(list(iter_vision_harvest(model, "features.3", images, action, rows_per_forward=rows, progress=False)))
        torch.testing.assert_close(batched, one, rtol=1e-5, atol=1e-6)
    assert one.shape == (5, 8, 24)


class CountingImages:
    """An image source that records how many images each read asks for."""

    def __init__(self, images):
        self.images, self.reads = images, []
        self.shape, self.ndim = images.shape, 4

    def __len__(self):
        return len(self.images)

    def __getitem__(self, indices):
        self.reads.append(len(indices))
        return self.images[indices]


def test_memory_is_bounded_by_the_batch_size_not_the_data_set():
    model, forwards = TinyCNN().eval(), []
    model.conv1.register_forward_hook(lambda _m, inputs, _out: forwards.append(len(inputs[0])))
    for n in (5, 23):
        images = CountingImages(smooth_images(n, 8))
        forwards.clear()
        acts = harvest_images(model, "conv2", images, "D4", batch_size=20, progress=False)
        assert acts.shape == (n, 8, 6)
        assert max(images.reads) == 2 and sum(images.reads) == n  # 20 rows = the 8 transforms of 2 images
        assert max(forwards) == 16
    with pytest.raises(VisionInputError, match=r"batch_size = 0: expected an integer in \[1, 9223372036854775807\]"):
        harvest_images(model, "conv2", smooth_images(2, 8), "D4", batch_size=0, progress=False)


class SharedReLU(nn.Module):
    """One ReLU module used twice in the forward pass, and a head that counts its calls."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2, self.relu, self.head = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 1)
        self.head_calls = 0

    def forward(self, x):
        hidden = self.relu(self.conv2(self.relu(self.conv1(x))))
        self.head_calls += 1
        return self.head(hidden)


def test_the_forward_pass_stops_after_the_layer_unless_it_runs_twice():
    model, images, action = SharedReLU().eval(), smooth_images(6, 8), DihedralImageAction("D4")
    list(iter_vision_harvest(model, "conv1", images, action, rows_per_forward=8, progress=False))
    assert model.head_calls == 1  # 6 forward passes: the first runs the whole model, the others stop after conv1
    model.head_calls = 0
    acts = torch.cat(list(iter_vision_harvest(model, "relu", images, action, rows_per_forward=8, progress=False)))
    assert model.head_calls == 6  # the ReLU runs twice per pass: every pass runs to the end, and reads its last call
    assert not model.training and not model.relu.training  # the harvest leaves the model's mode as it was
    assert [name for name, _ in UpToLayer(model, "relu").named_modules()] == [name for name, _ in model.named_modules()]
    with torch.no_grad():
        expected = centre_of(model.relu(model.conv2(model.relu(model.conv1(action.apply(images, 3))))))
    torch.testing.assert_close(acts[:, 3], expected)


@pytest.mark.parametrize("group", ["D4", "D8"])
def test_mobilenet_on_photos_stores_the_layer_on_every_transform(group):
    """The harvest of MobileNetV2 (ImageNet weights when installed) on photo crops: block g of each row is the
    centre of features.3 on g·x."""
    if default_weights() is not None:
        model = load_mobilenet_v2()
    else:
        torch.manual_seed(0)
        model = build_mobilenet_v2().eval()
    action, images = DihedralImageAction(group), PhotoCrops(2, 33, seed=1)
    x = images[np.arange(2)]
    acts = harvest_images(model, "features.3", images, group, progress=False)
    with torch.no_grad(), capture_output(resolve_layer(model, "features.3")) as outputs:
        for g in range(action.order):
            outputs.clear()
            model(action.apply(x, g))
            stored = torch.from_numpy(acts.read_rows(np.arange(2))[:, g])
            torch.testing.assert_close(stored, centre_of(outputs[0]), rtol=1e-5, atol=1e-5)
