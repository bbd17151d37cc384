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
        ["dict", "eval", str(tmp_path / "cc"), "--acts", str(acts / "acts"), "--split", "held-out"],  # trained without one
        ["dict", "train", "--acts", str(acts / "acts"), "--kind", "sae", "--features", "8", "--val-fraction", "1.5", "--out", str(tmp_path / "y")],
        ["dict", "train", "--acts", str(acts / "acts"), "--kind", "sae", "--features", "8", "--sparsity", "matryoshka",
         "--matryoshka-sizes", "4,5", "--out", str(tmp_path / "y")],
        ["dict", "import", str(tmp_path / "nothing"), "--out", str(tmp_path / "y")],
    ]
    for argv in cases:
        assert main(argv) != 0, argv
        out, err = capsys.readouterr()
        assert err.count("\n") == 1 and err.startswith("groupcc: error: "), (argv, err)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize("sizes", ["", "4,,8", "4,8,"])
def test_matryoshka_sizes_with_an_empty_part_are_refused_not_read_as_fewer_sizes(tmp_path, capsys, sizes):
    with pytest.raises(SystemExit) as exit_:
        main(["dict", "train", "--acts", str(tmp_path), "--kind", "sae", "--features", "8", "--sparsity", "matryoshka",
              "--matryoshka-sizes", sizes, "--out", str(tmp_path / "y")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (f"groupcc: error: argument --matryoshka-sizes: {sizes!r}: expected comma-separated integers, "
                                       "e.g. 32,64,256 (leave the option out for its default) (see 'groupcc dict train --help')\n")


def test_dict_train_with_a_held_out_split_prints_and_records_held_out_figures(acts, tmp_path, capsys):
    """D3 under the left action: 6 orbits of 6 pairs; 0.25 of 36 inputs is 9, so 2 orbits (12 inputs) are held out."""
    out = tmp_path / "cc"
    argv = ["dict", "train", "--acts", str(acts / "acts"), "--kind", "crosscoder", "--features", "16", "--sparsity", "batchtopk",
            "--k", "2", "--steps", "40", "--batch-size", "8", "--val-fraction", "0.25", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "held-out FVU" in printed and "(12 held-out inputs)" in printed and "training batch" not in printed
    assert json.loads((out / "metrics.json").read_text())["held_out"]["n_inputs"] == 12
    assert main(["dict", "eval", str(out), "--acts", str(acts / "acts"), "--split", "held-out", "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["split"] == "held-out" and summary["n_inputs"] == 12
    assert summary["l0"] == pytest.approx(2.0)  # the saved threshold is calibrated on the held-out inputs


@pytest.mark.parametrize("sparsity", ["jumprelu", "matryoshka"])
def test_dict_train_offers_jumprelu_and_matryoshka(acts, tmp_path, capsys, sparsity):
    extra = ["--matryoshka-sizes", "4,16"] if sparsity == "matryoshka" else ["--l0-coefficient", "0.5"]
    argv = ["dict", "train", "--acts", str(acts / "acts"), "--kind", "crosscoder", "--features", "16", "--sparsity", sparsity,
            "--k", "2", "--steps", "20", "--batch-size", "8", "--unit-norm-decoder", *extra, "--out", str(tmp_path / "run"), "--quiet"]
    assert main(argv) == 0
    record = json.loads((tmp_path / "run" / "config.json").read_text())["dictionary"]
    assert record["sparsity"] == sparsity and record["unit_norm_decoder"] is True
    assert record["matryoshka_sizes"] == ([4, 16] if sparsity == "matryoshka" else [])


def test_dict_export_and_import_round_trip_on_the_command_line(acts, tmp_path, capsys):
    run, exported, imported = tmp_path / "sae", tmp_path / "saelens", tmp_path / "imported"
    assert main(["dict", "train", "--acts", str(acts / "acts"), "--kind", "sae", "--features", "16", "--k", "3", "--steps", "20",
                 "--batch-size", "8", "--out", str(run), "--quiet"]) == 0
    assert main(["dict", "export", str(run), "--format", "saelens", "--out", str(exported)]) == 0
    assert {p.name for p in exported.iterdir()} == {"cfg.json", "sae_weights.safetensors"}
    assert main(["dict", "import", str(exported), "--out", str(imported), "--group", "D3"]) == 0
    capsys.readouterr()
    figures = []
    for directory in (run, imported):
        assert main(["dict", "eval", str(directory), "--acts", str(acts / "acts"), "--json", "--quiet"]) == 0
        figures.append({key: value for key, value in json.loads(capsys.readouterr().out).items() if key in ("fvu", "l0", "dead_fraction")})
    assert figures[0] == figures[1]


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


def test_overwrite_replaces_only_an_earlier_output_of_the_same_kind(acts, tmp_path, capsys):
    """--overwrite used to replace whatever was there: the store being read, the composer run, a folder of notes."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("precious")
    train = ["dict", "train", "--acts", str(acts / "acts"), "--kind", "sae", "--features", "4", "--sparsity", "l1", "--steps", "2",
             "--overwrite", "--quiet", "--out"]
    cases = [(train + [str(acts / "acts")], "'{}' exists and is not a dictionary run (it has no config.json)"),
             (train + [str(acts / "run")], "'{}' exists and is not a dictionary run (its config.json records 'composer', not 'groupcc-dictionary')"),
             (train + [str(tmp_path / "notes")], "'{}' exists and is not a dictionary run (it has no config.json)"),
             (["dict", "import", str(tmp_path / "saelens"), "--overwrite", "--out", str(acts / "run")],
              "'{}' exists and is not a dictionary (its config.json records 'composer', not 'groupcc-dictionary')"),
             (["dict", "export", str(tmp_path / "sae"), "--overwrite", "--out", str(tmp_path / "sae")],
              "'{}' exists and is not a SAELens export (it has no sae_weights.safetensors)")]
    assert main(train[:-2] + ["--out", str(tmp_path / "sae")]) == 0
    assert main(["dict", "export", str(tmp_path / "sae"), "--out", str(tmp_path / "saelens")]) == 0
    capsys.readouterr()
    files = {path: path.read_bytes() for path in [*acts.rglob("*"), *tmp_path.rglob("*")] if path.is_file()}
    for argv, message in cases:
        assert main(argv) == 1, argv
        assert capsys.readouterr().err.startswith(f"groupcc: error: {message.format(argv[-1])}: expected a new path"), argv
    assert {path: path.read_bytes() for path in [*acts.rglob("*"), *tmp_path.rglob("*")] if path.is_file()} == files
    assert main(train + [str(tmp_path / "sae")]) == 0  # an earlier dictionary run is replaced


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
