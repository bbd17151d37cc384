"""``groupcc demo`` end to end on a tiny setting (which runs ``analyze`` and ``report``), and the analysis errors: bad
settings, activations that do not fit the dictionary (named), outputs that are other runs or are being written."""

import json
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors import SafetensorError

from groupcc.cli import main
from groupcc.eval import pipeline
from groupcc.training.activation_store import open_store, write_store
from groupcc.training.composer_training import default_config, fit_composer
from groupcc.training.runs import lock


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    argv = ["demo", "--out", str(out), "--group", "S3", "--epochs", "1500", "--features", "24", "--steps", "400", "--quiet"]
    assert main(argv) == 0
    return out


def test_demo_writes_every_run_and_a_report(demo):
    for file in ["analysis/config.json", "analysis/metrics.json", "analysis/crosscoder_features.safetensors", "analysis/sae_features.safetensors", "composer/metrics.json", "acts/manifest.json", "crosscoder/dictionary.safetensors", "sae/evaluation.json",
                 "analysis/analysis.json", "analysis/report.html", "analysis/report.md"]:
        assert (demo / file).is_file(), file
    analysis = json.loads((demo / "analysis" / "analysis.json").read_text())
    assert analysis["group"] == "S3" and set(analysis["dictionaries"]) == {"crosscoder", "sae"}
    assert analysis["composer"]["key_irreps"]
    for name in ["crosscoder_vs_irreps", "sae_equivariant_vs_irreps", "sae_vs_crosscoder"]:
        assert 0 <= analysis["comparison"][name]["purity"] <= 1
    for entry in analysis["dictionaries"].values():
        for feature in entry["features"]:
            assert feature["stabiliser"][0] == 0 and 6 % feature["stabiliser_order"] == 0  # a subgroup of S3
    for plot in analysis["plots"]:
        assert (demo / "analysis" / plot["file"]).is_file()
    html = (demo / "analysis" / "report.html").read_text()
    assert "data:image/png;base64," in html and "https://" not in html


def test_analyze_json_and_fixed_families(demo, tmp_path, capsys):
    argv = ["analyze", str(demo / "crosscoder"), "--out", str(tmp_path / "a"), "--families", "2", "--json", "--quiet"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["families"] == {"crosscoder": 2}
    assert main(["report", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "report.html").is_file()


def test_errors_are_one_line_and_leave_nothing(demo, tmp_path, capsys):
    fit_composer(default_config("C6", "mlp", epochs=5, d_embed=8, d_hidden=8), tmp_path / "c6", progress=False)
    assert main(["harvest", "--run", str(tmp_path / "c6"), "--layer", "hidden", "--out", str(tmp_path / "c6acts"), "--quiet"]) == 0
    capsys.readouterr()
    cases = [
        ["analyze", str(tmp_path / "missing"), "--out", str(tmp_path / "x1")],
        ["analyze", str(demo / "crosscoder"), "--acts", str(tmp_path / "c6acts"), "--out", str(tmp_path / "x2")],  # another group
        ["analyze", str(demo / "crosscoder"), "--acts", str(tmp_path / "no_acts"), "--out", str(tmp_path / "x3")],
        ["analyze", str(demo / "crosscoder"), "--compare", str(demo / "crosscoder"), "--out", str(tmp_path / "x4")],
        ["report", str(tmp_path)],
        ["demo", "--group", "X9", "--out", str(tmp_path / "x5")],
        ["demo", "--out", str(demo)],  # exists, no --overwrite
    ]
    for argv in cases:
        assert main(argv) == 1, argv
        out, err = capsys.readouterr()
        assert err.count("\n") == 1 and err.startswith("groupcc: error: "), (argv, err)
    for name in ["x1", "x2", "x3", "x4", "x5"]:
        assert not (tmp_path / name).exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def fails_in_one_line(argv, capsys, message=None) -> str:
    assert main([str(a) for a in argv]) == 1, argv
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("groupcc: error: ") and "Traceback" not in err, (argv, err)
    if message:
        assert re.search(message, err), (message, err)
    return err


def store_copy(original: Path, target: Path, **changes) -> Path:
    """A copy of an activation store with manifest entries changed (``metadata__x`` changes ``metadata.x``)."""
    shutil.copytree(original, target)
    manifest = json.loads((target / "manifest.json").read_text())
    for key, value in changes.items():
        entry, _, sub = key.partition("__")
        if sub:
            manifest[entry][sub] = value
        else:
            manifest[key] = value
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def test_bad_settings_are_refused_before_anything_is_written(demo, capsys):
    crosscoder = demo / "crosscoder"
    before = sorted(p.name for p in crosscoder.iterdir())
    for options, message in [
        (["--matching-rows", "0"], r"matching_rows = 0: expected an integer in \[1, "),
        (["--families", "1000"], "n_families = 1000: expected at most the dictionary's 24 features"),
        (["--min-explained", "2"], r"min_explained = 2.0: expected a finite number in \[0, 1\]"),
        (["--tolerance", "nan"], "stabiliser_tolerance = nan"),
        (["--max-families", "-3"], "max_families = -3"),
        (["--seed", str(2**64)], "seed = 18446744073709551616: expected an integer in"),
    ]:
        fails_in_one_line(["analyze", crosscoder, "--quiet", *options], capsys, message)
    assert sorted(p.name for p in crosscoder.iterdir()) == before  # no analysis/, no lock, no temporaries


def test_activations_that_do_not_fit_the_dictionary_are_refused_naming_the_mismatch(demo, tmp_path, capsys):
    acts, crosscoder = demo / "acts", demo / "crosscoder"
    width = json.loads((acts / "manifest.json").read_text())["shape"][2]
    vision = write_store(tmp_path / "vision", open_store(acts).read_rows(np.arange(36)), group="S3", action="dihedral-image",
                         layer="hidden", source="testbed", metadata={"images": "shapes"})
    assert main(["harvest", "--run", str(demo / "composer"), "--layer", "hidden_pre", "--out", str(tmp_path / "pre"), "--quiet"]) == 0
    store_copy(acts, tmp_path / "c6", group="C6")
    store_copy(acts, tmp_path / "other_model", source=str(tmp_path / "another_composer"))
    capsys.readouterr()
    for store, message in [
        (vision.path, r"trained on activations with kind 'composer', but activation store '.*vision' has kind 'vision'"),
        (tmp_path / "pre", r"with layer 'hidden', but activation store '.*pre' has layer 'hidden_pre'"),
        (tmp_path / "c6", r"with group 'S3', but activation store '.*c6' has group 'C6'"),
        (tmp_path / "other_model", r"with model '.*composer', but activation store '.*other_model' has model '.*another_composer'"),
    ]:
        assert open_store(store).shape[1:] == (6, width)  # the same shape: only the records tell them apart
        fails_in_one_line(["analyze", crosscoder, "--acts", store, "--out", tmp_path / "a", "--quiet"], capsys, message)
    # the group renamed everywhere to another of the same order: the store's table fingerprint still says S3
    store_copy(acts, tmp_path / "renamed", group="C6")
    shutil.copytree(crosscoder, tmp_path / "renamed_crosscoder")
    record = json.loads((tmp_path / "renamed_crosscoder" / "config.json").read_text())
    record["dictionary"]["group"] = record["data"]["group"] = "C6"
    (tmp_path / "renamed_crosscoder" / "config.json").write_text(json.dumps(record))
    fails_in_one_line(["analyze", tmp_path / "renamed_crosscoder", "--acts", tmp_path / "renamed", "--out", tmp_path / "a", "--quiet"],
                      capsys, "names group C6, but was harvested under a group with another multiplication table")
    assert not (tmp_path / "a").exists() and not (tmp_path / "renamed_crosscoder" / "analysis").exists()


def test_outputs_other_runs_and_second_writers_are_refused(demo, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    fails_in_one_line(["analyze", demo / "crosscoder", "--out", demo / "composer", "--quiet"], capsys,
                      "is not an analysis directory .it has no analysis.json")
    assert (demo / "composer" / "model.safetensors").is_file()
    fails_in_one_line(["analyze", demo / "crosscoder", "--out", tmp_path / "file" / "a", "--quiet"], capsys, "is a file, not a directory")
    fails_in_one_line(["report", demo / "analysis", "--out", tmp_path / "file" / "r"], capsys, "is a file, not a directory")
    fails_in_one_line(["report", demo / "analysis", "--out", demo / "composer"], capsys, "is not a report directory .it has no report.html")
    held, release = threading.Event(), threading.Event()

    def other_writer():
        with lock(tmp_path / "busy"), lock(demo / "analysis"):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=other_writer)
    thread.start()
    held.wait(30)
    try:
        fails_in_one_line(["analyze", demo / "crosscoder", "--out", tmp_path / "busy", "--quiet"], capsys, "is being written by process")
        fails_in_one_line(["report", demo / "analysis", "--out", tmp_path / "r"], capsys, "is being written by process")
    finally:
        release.set()
        thread.join()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_demo_values_are_checked_before_anything_is_written(demo, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for options, message in [
        (["--epochs", "0"], r"epochs = 0: expected an integer in \[1, "),
        (["--features", "0"], "features = 0"),
        (["--steps", "-1"], "steps = -1"),
        (["--seed", str(2**64)], "seed = 18446744073709551616"),
        (["--group", "S5", "--features", "100000"], r"the demo on S5 with 100000 features would need about .* TB of memory"),
        (["--group", "S21"], "S21 has order 51090942171709440000, above groupcc's maximum"),
        (["--out", tmp_path / "file" / "demo"], "is a file, not a directory"),
    ]:
        fails_in_one_line(["demo", "--out", tmp_path / "d", "--quiet", "--epochs", "2", "--steps", "2", *options], capsys, message)
    fails_in_one_line(["demo", "--out", demo / "crosscoder", "--overwrite", "--quiet"], capsys, "which are not a demo's")
    assert (demo / "crosscoder" / "dictionary.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_full_disk_during_an_analysis_leaves_nothing(demo, tmp_path, monkeypatch, capsys):
    def full(*args, **kwargs):  # what safetensors raises when the disk fills
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(pipeline, "save_file", full)
    fails_in_one_line(["analyze", demo / "crosscoder", "--out", tmp_path / "new" / "a", "--quiet"], capsys,
                      r"cannot write '.*crosscoder_features.safetensors': .*No space left on device")
    assert list(tmp_path.iterdir()) == []
