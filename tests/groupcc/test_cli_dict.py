"""``groupcc harvest``, ``dict train`` and ``dict eval`` end to end on a tiny composer, and their errors."""

import json

import pytest

from groupcc.cli import main
from groupcc.training.composer_training import default_config, fit_composer


@pytest.fixture(scope="module")
def acts(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    fit_composer(default_config("D3", "mlp", epochs=200, d_embed=16, d_hidden=16), root / "run", progress=False)
    assert main(["harvest", "--run", str(root / "run"), "--layer", "hidden", "--out", str(root / "acts"), "--quiet"]) == 0
    return root


@pytest.mark.parametrize("kind", ["crosscoder", "sae"])
def test_dict_train_and_eval(acts, tmp_path, capsys, kind):
    out = tmp_path / kind
    argv = ["dict", "train", "--acts", str(acts / "acts"), "--kind", kind, "--features", "32", "--sparsity", "topk",
            "--k", "4", "--steps", "60", "--batch-size", "16", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["dict", "eval", str(out), "--acts", str(acts / "acts"), "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["fvu_per_block"]) == (6 if kind == "crosscoder" else 1)
    assert 0 <= summary["fvu"] < 1 and summary["l0"] <= 4 + 1e-9
    assert json.loads((out / "evaluation.json").read_text())["fvu"] == summary["fvu"]
    assert (out / "plots" / "feature_density.png").exists() and (out / "config.json").exists()


def test_errors_are_one_line(acts, tmp_path, capsys):
    fit_composer(default_config("C6", "mlp", epochs=5, d_embed=8, d_hidden=8), tmp_path / "c6", progress=False)
    assert main(["harvest", "--run", str(tmp_path / "c6"), "--layer", "hidden", "--out", str(tmp_path / "c6acts"), "--quiet"]) == 0
    main(["dict", "train", "--acts", str(acts / "acts"), "--kind", "crosscoder", "--features", "8", "--steps", "5",
          "--batch-size", "8", "--k", "2", "--out", str(tmp_path / "cc"), "--quiet"])
    capsys.readouterr()
    cases = [
        ["harvest", "--run", str(acts / "run"), "--layer", "nope", "--out", str(tmp_path / "x")],
        ["harvest", "--run", str(acts / "run"), "--layer", "hidden", "--out", str(acts / "acts")],
        ["dict", "train", "--acts", str(tmp_path / "missing"), "--kind", "sae", "--features", "8", "--out", str(tmp_path / "y")],
        ["dict", "eval", str(tmp_path / "cc"), "--acts", str(tmp_path / "c6acts")],  # another group and width
        ["dict", "eval", str(tmp_path / "nothing"), "--acts", str(acts / "acts")],
    ]
    for argv in cases:
        assert main(argv) != 0, argv
        out, err = capsys.readouterr()
        assert err.count("\n") == 1 and err.startswith("groupcc: error: "), (argv, err)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
