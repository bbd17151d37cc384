"""InceptionV1 in torch-lucent's layout: hookable layers with the listed widths, exact weight round trips, and
one-line errors for bad weight files."""

from contextlib import ExitStack

import pytest
import torch

from groupcc.training.harvest import capture_output, resolve_layer
from groupcc.training.inception import (
    INCEPTION_LAYERS,
    InceptionWeightsError,
    build_inception_v1,
    load_inception_v1,
    lucent_state_dict,
    save_inception_weights,
)

SIZE = 96
#: How many times each layer's map is smaller than the image.
DOWNSAMPLING = {"conv2d0": 2, "conv2d1": 4, "conv2d2": 4, "mixed3a": 8, "mixed3b": 8, "mixed5a": 32, "mixed5b": 32}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_inception_v1().eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def logits(model, images):
    with torch.no_grad():
        return model(images)


def test_layers_have_listed_channels_and_sizes(model, images):
    with torch.no_grad(), ExitStack() as stack:
        outputs = {name: stack.enter_context(capture_output(resolve_layer(model, name))) for name in [*INCEPTION_LAYERS, "mixed3b.3x3"]}
        out = model(images)
    assert out.shape == (2, 1008) and torch.isfinite(out).all()
    assert INCEPTION_LAYERS["mixed3b"] == 480
    for name, channels in INCEPTION_LAYERS.items():
        side = SIZE // DOWNSAMPLING.get(name, 16)
        assert outputs[name][0].shape == (2, channels, side, side), name
        assert (outputs[name][0] >= 0).all(), name
    # a mixed block concatenates 1x1 (128), 3x3 (192), 5x5, pool_reduce
    assert torch.equal(outputs["mixed3b"][0][:, 128:320], outputs["mixed3b.3x3"][0])


def test_state_dict_uses_lucent_names_and_shapes(model):
    state = lucent_state_dict(model)
    assert len(state) == 2 * (3 + 9 * 6) + 2
    assert state["conv2d0_pre_relu_conv.weight"].shape == (64, 3, 7, 7)
    assert state["mixed3b_3x3_bottleneck_pre_relu_conv.weight"].shape == (128, 256, 1, 1)
    assert state["mixed4a_3x3_pre_relu_conv.weight"].shape == (204, 96, 3, 3)
    assert state["mixed5b_5x5_pre_relu_conv.bias"].shape == (128,)
    assert state["softmax2_pre_activation_matmul.weight"].shape == (1008, 1024)


def test_safetensors_round_trip(model, images, logits, tmp_path):
    path = tmp_path / "inception.safetensors"
    save_inception_weights(model, path)
    loaded = load_inception_v1(path)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(images), logits)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module_prefix", "native_names"])
def test_torch_state_dict_round_trip(model, images, logits, tmp_path, wrap):
    state = model.state_dict() if wrap == "native_names" else lucent_state_dict(model)
    if wrap == "module_prefix":
        state = {f"module.{name}": tensor for name, tensor in state.items()}
    path = tmp_path / "inception.pt"
    torch.save({wrap: state, "epoch": 3} if wrap in ("state_dict", "model") else state, path)
    with torch.no_grad():
        assert torch.equal(load_inception_v1(path)(images), logits)


def _corrupt(path):
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(2), dtype=torch.uint8).numpy().tobytes())


def _without_one(state):
    return {name: t for name, t in state.items() if name != "mixed4c_5x5_pre_relu_conv.weight"}


def _with_extra(state):
    return {**state, "softmax0_pre_activation_matmul.weight": torch.zeros(3)}


def _with_bad_shape(state):
    return {**state, "mixed3b_1x1_pre_relu_conv.weight": torch.zeros(128, 255, 1, 1)}


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("absent.pt", None, "not found"),
        ("corrupt.pt", _corrupt, "cannot read"),
        ("corrupt.safetensors", _corrupt, "cannot read"),
        ("missing.pt", _without_one, "1 missing key(s) (mixed4c_5x5_pre_relu_conv.weight)"),
        ("extra.pt", _with_extra, "1 unexpected key(s) (softmax0_pre_activation_matmul.weight)"),
        ("shape.pt", _with_bad_shape, "mixed3b_1x1_pre_relu_conv.weight has shape (128, 255, 1, 1), expected (128, 256, 1, 1)"),
        ("list.pt", lambda state: list(state.values()), "not a state dict"),
    ],
)
def test_bad_weight_files_raise_one_line(model, tmp_path, name, make, message):
    path = tmp_path / name
    if make is _corrupt:
        _corrupt(path)
    elif make is not None:
        torch.save(make(lucent_state_dict(model)), path)
    with pytest.raises(InceptionWeightsError) as info:
        load_inception_v1(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text and message in text


def test_save_needs_safetensors_suffix(model, tmp_path):
    with pytest.raises(InceptionWeightsError, match="expected a path ending in .safetensors"):
        save_inception_weights(model, tmp_path / "weights.pt")
    assert not any(tmp_path.iterdir())
