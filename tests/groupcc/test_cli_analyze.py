"""``groupcc demo`` end to end on a tiny setting (which runs ``analyze`` and ``report``), and the analysis errors."""

import json

import pytest

from groupcc.cli import main
from groupcc.training.composer_training import default_config, fit_composer


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
