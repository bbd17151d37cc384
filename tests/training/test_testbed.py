"""The vision testbed: generated shapes have the symmetries they claim, training writes a reloadable run."""

import json
import math

import pytest
import torch

from groupcc.errors import GroupccError
from groupcc.groups import limits
from groupcc.training.harvest import capture_output
from groupcc.training.shapes import SHAPE_KINDS, SHAPE_SYMMETRY, generate_shapes
from groupcc.training.testbed import TESTBED_LAYERS, TestbedCNN, TestbedConfig, load_testbed, train_testbed


def exact_shape(kind: str, orientation: float, size: int = 32) -> torch.Tensor:
    return generate_shapes(1, size, kinds=(kind,), jitter=False, orientation=orientation).images[0, 0]


def transform(image: torch.Tensor, quarter_turns: int, mirrored: bool) -> torch.Tensor:
    """The optional mirror x ↦ −x, then the rotation by ``quarter_turns``·π/2 (counter-clockwise)."""
    if mirrored:
        image = torch.flip(image, dims=(-1,))
    return torch.rot90(image, quarter_turns, dims=(-2, -1))


def relative_change(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


def test_generator_is_deterministic_and_in_range():
    shapes = generate_shapes(200, size=24, seed=3)
    again = generate_shapes(200, size=24, seed=3)
    other = generate_shapes(200, size=24, seed=4)
    assert shapes.images.shape == (200, 1, 24, 24) and shapes.images.dtype == torch.float32
    assert float(shapes.images.min()) >= 0.0 and float(shapes.images.max()) <= 1.0
    assert (shapes.images.flatten(1).amax(1) > 0.3).all()  # every image shows a shape
    torch.testing.assert_close(shapes.images, again.images, rtol=0, atol=0)
    torch.testing.assert_close(shapes.orientation, again.orientation, rtol=0, atol=0)
    assert not torch.equal(shapes.images, other.images)
    assert set(shapes.kind.tolist()) == set(range(len(SHAPE_KINDS))) and shapes.kinds == SHAPE_KINDS
    lines = shapes.kind == SHAPE_KINDS.index("line")
    assert float(shapes.orientation[lines].max()) < math.pi and float(shapes.orientation.max()) < 2 * math.pi


def test_half_turn_fixes_a_line_but_not_a_curve_and_quarter_turn_fixes_a_ring():
    angle = 0.7
    line, curve = exact_shape("line", angle), exact_shape("curve", angle)
    assert relative_change(line, torch.rot90(line, 2)) < 1e-5
    assert relative_change(curve, torch.rot90(curve, 2)) > 0.5
    for invariant in ("ring", "dot"):
        image = exact_shape(invariant, angle)
        assert relative_change(image, torch.rot90(image, 1)) < 1e-5
    # with jitter the line is only close to its half turn (the offset moves it by at most a pixel)
    jittered = generate_shapes(50, kinds=("line",), seed=1).images
    assert relative_change(jittered, torch.rot90(jittered, 2, dims=(-2, -1))) < 0.9 * relative_change(jittered, jittered.roll(1, 0))


def test_curve_is_its_own_mirror_image_about_its_axis():
    curve = exact_shape("curve", 0.0)  # axis along x: the reflection through it is y ↦ −y, a flip of the rows
    assert relative_change(curve, torch.flip(curve, dims=(0,))) < 1e-5
    assert relative_change(curve, torch.flip(curve, dims=(1,))) > 0.5


@pytest.mark.parametrize("kind", SHAPE_KINDS)
def test_stabilisers_in_d4_match_the_images(kind):
    symmetry = SHAPE_SYMMETRY[kind]
    for eighth in range(8):
        orientation = eighth * math.pi / 4
        image = exact_shape(kind, orientation)
        for mirrored in (False, True):
            for k in range(4):
                fixed = relative_change(image, transform(image, k, mirrored)) < 1e-4
                assert fixed == symmetry.fixes(orientation, k * math.pi / 2, mirrored), (kind, orientation, mirrored, k)
        assert len(symmetry.dihedral_stabiliser(orientation, 4)) == {"line": 4, "curve": 2, "corner": 2}.get(kind, 8)


def test_rotating_an_image_rotates_its_orientation():
    for kind in ("line", "curve", "corner"):
        image = exact_shape(kind, 0.3)
        assert relative_change(exact_shape(kind, 0.3 + math.pi / 2), torch.rot90(image, 1)) < 1e-5


def test_layers_keep_the_image_size():
    model = TestbedCNN()
    images = generate_shapes(3, size=20).images
    for name, channels in TESTBED_LAYERS.items():
        with capture_output(getattr(model, name)) as outputs, torch.no_grad():
            logits, vectors = model(images)
        assert outputs[0].shape == (3, channels, 20, 20) and float(outputs[0].min()) >= 0.0
    assert logits.shape == (3, len(SHAPE_KINDS)) and vectors.shape == (3, len(SHAPE_KINDS), 2)


def test_bad_kinds_are_rejected():
    with pytest.raises(GroupccError, match="bad shape kinds.*'star'"):
        generate_shapes(4, kinds=("line", "star"))
    with pytest.raises(GroupccError, match=r"epochs = 0: expected an integer in \[1, 1000000\]"):
        TestbedConfig(epochs=0)


def test_shapes_that_would_not_fit_in_memory_are_refused_before_drawing(monkeypatch):
    monkeypatch.setattr(limits, "physical_memory_bytes", lambda: 16 * 10**9)
    with pytest.raises(GroupccError, match=r"^100000 shapes of 1024x1024 pixels would need about 2.52 TB of memory, .*: "
                                           r"expected fewer or smaller images$"):
        generate_shapes(100_000, size=1024)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    config = TestbedConfig(size=16, n_train=800, n_test=200, epochs=6, batch_size=32, lr=1e-2, seed=1, device="cpu")
    out = tmp_path_factory.mktemp("testbed") / "run"
    assert train_testbed(config, out, progress=False) == out
    return config, out


def test_training_writes_a_reloadable_run_that_beats_chance(tiny_run):
    config, out = tiny_run
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "history.json", "metrics.json", "model.safetensors"]
    assert json.loads((out / "config.json").read_text())["kind"] == "testbed"
    metrics = json.loads((out / "metrics.json").read_text())["training"]
    assert metrics["test_kind_accuracy"] > 0.5  # chance: 0.2
    assert metrics["test_orientation_error_deg"] < 30  # chance: 45° for lines, 90° for curves and corners
    assert len(json.loads((out / "history.json").read_text())) == config.epochs
    model, loaded = load_testbed(out)
    assert loaded == config
    images = generate_shapes(16, size=config.size, seed=9).images
    again, _ = load_testbed(out)
    for first, second in zip(model(images), again(images)):
        torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_existing_output_and_missing_or_corrupt_runs_are_errors(tiny_run, tmp_path):
    config, out = tiny_run
    with pytest.raises(GroupccError, match="already exists: overwrite it"):
        train_testbed(config, out, progress=False)
    composer = tmp_path / "composer"
    composer.mkdir()
    (composer / "config.json").write_text('{"kind": "composer"}')
    with pytest.raises(GroupccError, match=r"'.*composer' exists and is not a testbed run \(its config.json records 'composer', not "
                                           r"'testbed'\): expected a new path, or an earlier testbed run to replace"):
        train_testbed(config, composer, overwrite=True, progress=False)  # another kind of run is never replaced
    assert [p.name for p in composer.iterdir()] == ["config.json"]
    with pytest.raises(GroupccError, match="does not exist"):
        load_testbed(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    with pytest.raises(GroupccError, match="no config.json"):
        load_testbed(broken)
    (broken / "config.json").write_text((out / "config.json").read_text())
    with pytest.raises(GroupccError, match="no model.safetensors"):
        load_testbed(broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(GroupccError, match="model.safetensors' is missing or corrupt"):
        load_testbed(broken)
