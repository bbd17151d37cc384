"""Reports of an analysis directory: self-contained HTML, Markdown with relative plot links, clear errors."""

import base64
import json
import os
import re
import urllib.parse
from pathlib import Path

import pytest

from groupcc.eval.plots import new_figure, save_figure
from groupcc.eval.report import MAX_FILE_BYTES, find_analysis, read_inside, write_report
from groupcc.errors import GroupccError

IRREPS = [{"name": "[4]", "dim": 1, "type": "R"}, {"name": "[1,1,1,1]", "dim": 1, "type": "R"},
          {"name": "[2,2]", "dim": 2, "type": "R"}, {"name": "[3,1]", "dim": 3, "type": "R"},
          {"name": "[2,1,1]", "dim": 3, "type": "R"}]


def family_row(family, size, irreps, spectrum, representative=17):
    return {"family": family, "size": size, "stabiliser_orders": {"6": 34, "2": 29, "1": 25},
            "mean_spectrum": dict(zip([irrep["name"] for irrep in IRREPS], spectrum)), "mean_frequency": 0.2,
            "representative": representative, "irreps": irreps}


def dictionary_record(kind):
    record = {
        "path": f"/runs/{kind}", "config": {"kind": kind, "sparsity": "l1", "n_features": 128},
        "evaluation": {"fvu": 0.0512, "l0": 3.5, "dead_fraction": 0.0, "dense_fraction": 0.0},
        "kind": kind, "n_features": 128, "n_firing": 128,
        "families": {"n_families": 2, "chosen_automatically": True, "silhouette": {"2": 0.75},
                     "table": [family_row(0, 88, {"[3,1]": 88}, [0.5, 0.0, 0.1, 0.3, 0.1]),
                               family_row(1, 40, {"[2,2]": 40}, [0.4, 0.0, 0.6, 0.0, 0.0])]},
        "features": [],
        "features_per_irrep": {"[2,2]": 40, "[3,1]": 88},
    }
    if kind == "sae":
        record["mean_equivariance"] = 0.7812
        record["decoder_families"] = {"n_families": 1, "chosen_automatically": False,
                                      "table": [family_row(0, 128, {"[3,1]": 88, "[2,2]": 40}, [0.2] * 5, None)]}
    return record


def full_analysis(plots):
    return {
        "format": "groupcc-analysis", "version": 1,
        "title": "S4 <script>alert(1)</script> composer", "group": "S4", "group_order": 24,
        "action": "left", "layer": "hidden", "acts": "/stores/s4", "irreps": IRREPS,
        "composer": {"run": "/runs/composer", "arch": "mlp", "task": "a*b", "key_irreps": ["[2,2]", "[3,1]"],
                     "metrics": {"test_accuracy": 1.0, "fve": {"W_a": 0.98, "W_b": 0.97}, "restricted_loss": 3.7e-07}},
        "settings": {"stabiliser_tolerance": 0.1},
        "dictionaries": {"crosscoder": dictionary_record("crosscoder"), "sae": dictionary_record("sae")},
        "comparison": {
            "crosscoder_vs_irreps": {"ari": 0.9871, "nmi": 0.9654, "purity": 1.0, "n_families": 2, "n_labels": 2, "n_items": 128},
            "sae_vs_crosscoder": {"ari": 0.4123, "nmi": 0.5561, "purity": 0.8, "n_families": 2, "n_labels": 2,
                                  "n_items": 120, "mean_partner_cosine": 0.7351},
            "features_per_irrep": {"crosscoder": {"[2,2]": 40, "[3,1]": 88}},
        },
        "plots": plots,
    }


def write_analysis(directory: Path, analysis) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "analysis.json").write_text(json.dumps(analysis) if not isinstance(analysis, str) else analysis)
    return directory


def make_png(path: Path) -> Path:
    fig, axes = new_figure()
    axes[0].plot([0, 1, 2], [1, 0, 1])
    return save_figure(fig, path)


@pytest.fixture
def analysis_dir(tmp_path):
    directory = tmp_path / "run" / "analysis"
    make_png(directory / "plots" / "blocks.png")
    plots = [{"file": "plots/blocks.png", "title": "Family blocks", "caption": "Block norms per family."}]
    return write_analysis(directory, full_analysis(plots))


def test_html_is_self_contained_and_embeds_the_plot(analysis_dir):
    html_path, markdown_path = write_report(analysis_dir)
    assert html_path == analysis_dir / "report.html" and markdown_path == analysis_dir / "report.md"
    text = html_path.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert [base64.b64decode(image) for image in images] == [(analysis_dir / "plots" / "blocks.png").read_bytes()]
    assert "http://" not in text and "https://" not in text and 'src="/' not in text
    assert "<link" not in text and "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "Family blocks" in text and "Block norms per family." in text


def test_tables_show_families_comparisons_and_metrics(analysis_dir):
    html_path, markdown_path = write_report(analysis_dir)
    assert "\\|H\\|=6×34" in markdown_path.read_text()  # "|" escaped inside a Markdown table cell
    for text in (html_path.read_text(), markdown_path.read_text().replace("\\|", "|")):
        assert "[3,1]×88" in text and "|H|=6×34" in text
        assert "[3,1] 30%" in text and "[2,2] 10%" in text  # top two non-trivial irreps of family 0
        assert "0.412" in text and "0.556" in text and "0.735" in text  # SAE vs crosscoder ARI, NMI, cosine
        assert "0.987" in text and "0.0512" in text and "0.781" in text  # ARI vs irreps, FVU, equivariance
        assert "3.7e-07" in text and "20%" in text


def test_markdown_has_tables_and_a_relative_link_to_the_plot(analysis_dir, tmp_path):
    out = tmp_path / "elsewhere" / "report"
    _, markdown_path = write_report(analysis_dir, out_dir=out)
    assert markdown_path.parent == out and (out / "report.html").is_file()
    text = markdown_path.read_text()
    assert "| family | size | irreps | stabiliser orders |" in text
    assert re.search(r"^\| --- \|", text, re.MULTILINE)
    assert "\\<script>" in text and "<script>" not in text.replace("\\<script>", "")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 1 and not links[0].startswith("/")
    target = (out / urllib.parse.unquote(links[0])).resolve()
    assert target == (analysis_dir / "plots" / "blocks.png").resolve()


def test_finds_the_analysis_from_the_run_directory(analysis_dir):
    run = analysis_dir.parent
    assert find_analysis(run) == analysis_dir
    assert find_analysis(analysis_dir) == analysis_dir
    html_path, _ = write_report(run)
    assert html_path.parent == analysis_dir


def test_missing_directory_or_file_names_the_path(tmp_path):
    for path in (tmp_path / "nowhere", tmp_path):
        with pytest.raises(GroupccError, match=re.escape(str(path))) as error:
            find_analysis(path)
        assert "analysis.json" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("content", ['{"format": "groupcc-anal', json.dumps({"format": "something-else"}), "[1, 2]"])
def test_corrupt_or_foreign_analysis_names_the_file(tmp_path, content):
    directory = write_analysis(tmp_path / "bad", content)
    with pytest.raises(GroupccError, match=re.escape(str(directory / "analysis.json"))) as error:
        write_report(directory)
    assert "\n" not in str(error.value)
    assert not (directory / "report.html").exists() and not (directory / "report.md").exists()


def test_missing_plot_is_skipped_with_a_note(analysis_dir):
    plots = [{"file": "plots/gone.png", "title": "Gone plot", "caption": "never drawn"},
             {"file": "plots/blocks.png", "title": "Family blocks", "caption": ""}]
    write_analysis(analysis_dir, full_analysis(plots))
    html_path, markdown_path = write_report(analysis_dir)
    for text in (html_path.read_text(), markdown_path.read_text()):
        assert "Gone plot" in text and "skipped" in text and "gone.png" in text
    assert html_path.read_text().count("data:image/png;base64,") == 1
    assert markdown_path.read_text().count("![") == 1


@pytest.mark.parametrize("path", [("dictionaries",), ("irreps",), ("composer",), ("composer", "metrics"), ("comparison",),
                                  ("dictionaries", "crosscoder", "families", "table"), ("comparison", "features_per_irrep")])
@pytest.mark.parametrize("bad", [[1], "x", 3, None, [[1]]])
def test_fields_of_the_wrong_type_read_as_missing(tmp_path, path, bad):
    analysis = full_analysis([])
    node = analysis
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad  # used to raise IndexError, TypeError or AttributeError
    html_path, markdown_path = write_report(write_analysis(tmp_path / "analysis", analysis))
    assert "Dictionary metrics" in markdown_path.read_text() or path == ("dictionaries",)


def test_minimal_analysis_renders(tmp_path):
    crosscoder = dictionary_record("crosscoder")
    del crosscoder["evaluation"], crosscoder["features_per_irrep"]
    for row in crosscoder["families"]["table"]:
        del row["irreps"]
    minimal = {"format": "groupcc-analysis", "version": 1, "group": "D4", "group_order": 8, "action": "rotate",
               "layer": "conv2", "acts": "/stores/d4", "composer": None,
               "dictionaries": {"crosscoder": crosscoder}, "plots": []}
    directory = write_analysis(tmp_path / "minimal", minimal)
    html_path, markdown_path = write_report(directory)
    html_text, markdown_text = html_path.read_text(), markdown_path.read_text()
    assert "groupcc analysis of D4" in html_text and "Crosscoder families" in markdown_text
    assert "Composer" not in html_text and "SAE vs crosscoder" not in html_text and "<img" not in html_text
    assert "| family | size | stabiliser orders |" in markdown_text


# ---------------------------------------------------------------------------------------------- hostile directories


def outside_png(path: Path, marker: bytes) -> Path:
    """A valid PNG outside the analysis directory whose bytes (and so base64) carry ``marker``."""
    make_png(path)
    path.write_bytes(path.read_bytes() + marker)  # trailing bytes after IEND: still a PNG to a browser
    return path


def test_a_poisoned_analysis_embeds_nothing_from_outside(analysis_dir, tmp_path):
    marker = b"SECRET-" + bytes(range(256)) * 4
    secret = outside_png(tmp_path / "secret.png", marker)
    plots_dir = analysis_dir / "plots"
    (plots_dir / "link_out.png").symlink_to(secret)
    (plots_dir / "zero.png").symlink_to("/dev/zero")
    (plots_dir / "dir.png").mkdir()
    os.mkfifo(plots_dir / "fifo.png")
    with open(plots_dir / "huge.png", "wb") as file:  # sparse: nothing is written but the size
        file.write(b"\x89PNG\r\n\x1a\n")
        file.truncate(MAX_FILE_BYTES + 1)
    (plots_dir / "text.png").write_text("not a png")
    (plots_dir / "link_in.png").symlink_to(plots_dir / "blocks.png")  # a link inside the directory is fine
    hostile = ["../../secret.png", str(secret), "plots/link_out.png", "/dev/zero", "plots/zero.png", "plots/dir.png",
               "plots/fifo.png", "plots/huge.png", "plots/text.png", "plots/../../../secret.png", "bad\x00name.png",
               "plots/blocks.png/../../../secret.png", "", "."]
    plots = [{"file": name, "title": f"hostile {i}"} for i, name in enumerate(hostile)]
    plots += [{"file": "plots/blocks.png", "title": "Family blocks"}, {"file": "plots/link_in.png", "title": "Linked"}]
    write_analysis(analysis_dir, full_analysis(plots))
    warnings = []
    html_path, markdown_path = write_report(analysis_dir, warn=warnings.append)
    html_text, markdown_text = html_path.read_text(), markdown_path.read_text()
    images = [base64.b64decode(image) for image in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html_text)]
    inside = (plots_dir / "blocks.png").read_bytes()
    assert images == [inside, inside]  # the two good plots, nothing else
    assert b"SECRET" not in b"".join(images) and base64.b64encode(secret.read_bytes()).decode() not in html_text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown_text)
    assert [(analysis_dir / urllib.parse.unquote(link)).resolve() for link in links] == [(plots_dir / "blocks.png").resolve()] * 2
    assert len(warnings) == len(hostile) and all("\n" not in line and "skipped" in line for line in warnings)
    for i in range(len(hostile)):
        assert f"Plot 'hostile {i}' skipped" in markdown_text and f"Plot &#x27;hostile {i}&#x27; skipped" in html_text
    assert "outside the analysis directory" in " ".join(warnings) and "not a regular file" in " ".join(warnings)
    assert f"more than {MAX_FILE_BYTES} bytes" in " ".join(warnings) and "not a PNG image" in " ".join(warnings)


def test_a_hard_link_to_a_file_outside_is_skipped_and_an_analysis_json_with_one_refused(analysis_dir, tmp_path):
    secret = outside_png(tmp_path / "secret.png", b"SECRET")
    os.link(secret, analysis_dir / "plots" / "hard.png")  # resolves inside the directory, but is the outside file
    write_analysis(analysis_dir, full_analysis([{"file": "plots/hard.png", "title": "Hard"},
                                                {"file": "plots/blocks.png", "title": "Family blocks"}]))
    warnings = []
    html_path, _ = write_report(analysis_dir, warn=warnings.append)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html_path.read_text())
    assert [base64.b64decode(image) for image in images] == [(analysis_dir / "plots" / "blocks.png").read_bytes()]
    assert warnings == [f"plot 'Hard' skipped: {str((analysis_dir / 'plots' / 'hard.png').resolve())!r} has 2 hard links: "
                        "expected a file with no other name, which a hard link to a file outside the analysis directory would have"]
    elsewhere = write_analysis(tmp_path / "elsewhere", full_analysis([]))
    (tmp_path / "linked").mkdir()
    os.link(elsewhere / "analysis.json", tmp_path / "linked" / "analysis.json")
    with pytest.raises(GroupccError, match="has 2 hard links") as error:
        write_report(tmp_path / "linked")
    assert "\n" not in str(error.value) and not (tmp_path / "linked" / "report.html").exists()


def test_skipped_plots_are_reported_on_stderr_by_default(analysis_dir, capsys):
    write_analysis(analysis_dir, full_analysis([{"file": "/etc/passwd.png", "title": "Leak"}]))
    write_report(analysis_dir)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("groupcc: warning: plot 'Leak' skipped: ")


def test_an_analysis_json_that_points_outside_or_is_not_a_file_is_refused(tmp_path):
    elsewhere = write_analysis(tmp_path / "elsewhere", full_analysis([]))
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "analysis.json").symlink_to(elsewhere / "analysis.json")
    with pytest.raises(GroupccError, match="outside the analysis directory") as error:
        write_report(linked)
    assert "\n" not in str(error.value) and not (linked / "report.html").exists()
    huge = tmp_path / "huge"
    huge.mkdir()
    with open(huge / "analysis.json", "wb") as file:
        file.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(GroupccError, match="more than"):
        write_report(huge)
    with pytest.raises(GroupccError, match="not a regular file"):
        read_inside(tmp_path, "elsewhere")
