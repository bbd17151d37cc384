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


def test_the_batch_size_adapts_to_a_small_store_and_an_sae_records_what_it_reads(acts, tmp_path, capsys):
    """D3 has 36 pairs: without --batch-size a step reads all 36 (the old default 1024 failed here)."""
    out = tmp_path / "sae"
    argv = ["dict", "train", "--acts", str(acts / "acts"), "--kind", "sae", "--features", "8", "--k", "2", "--steps", "5",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert "(last training batch)" in capsys.readouterr().out
    record = json.loads((out / "config.json").read_text())
    assert record["dictionary"]["sae_input"] == "identity" and record["data"]["blocks"] == [0]
    assert json.loads((out / "metrics.json").read_text())["training"]["batch_size"] == 36
    assert main([*argv[:-1], "--batch-size", "37", "--overwrite"]) == 1
    assert "batch_size = 37 exceeds the 36 inputs" in capsys.readouterr().err


def test_harvest_overwrite_with_a_bad_layer_leaves_the_old_store_untouched(acts, tmp_path, capsys):
    store = tmp_path / "acts"
    assert main(["harvest", "--run", str(acts / "run"), "--layer", "hidden", "--out", str(store), "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in store.iterdir()}
    capsys.readouterr()
    assert main(["harvest", "--run", str(acts / "run"), "--layer", "hiden", "--out", str(store), "--overwrite", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "layer 'hiden' not found" in err
    assert {p.name: p.read_bytes() for p in store.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acts"]  # no temporary left beside it
