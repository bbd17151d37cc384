"""``groupcc groups info``: text and JSON output, and one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from groupcc.cli import main
from groupcc.groups import get_group


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_s6_json(capsys):
    code, out, err = run_cli(capsys, "groups", "info", "S6", "--json")
    assert code == 0 and err == ""
    info = json.loads(out)
    assert info["order"] == 720
    assert [irrep["dim"] for irrep in info["irreps"]] == [1, 1, 5, 5, 5, 5, 9, 9, 10, 10, 16]
    assert {irrep["type"] for irrep in info["irreps"]} == {"R"}
    assert len(info["classes"]) == 11 and sum(c["size"] for c in info["classes"]) == 720
    table = np.array(info["character_table"], dtype=float)
    sizes = np.array([c["size"] for c in info["classes"]])
    # Column orthogonality and row orthogonality (all irreps of S_n are type R).
    np.testing.assert_allclose((table * sizes) @ table.T / 720, np.eye(11), atol=1e-9)
    np.testing.assert_allclose(table[:, 0], [i["dim"] for i in info["irreps"]])


@pytest.mark.parametrize("name", ["C7", "D6", "A4", "Q8", "S3xC2"])
def test_json_character_tables_match_the_library(capsys, name):
    code, out, _ = run_cli(capsys, "groups", "info", name, "--json")
    info = json.loads(out)
    group = get_group(name)
    np.testing.assert_allclose(np.array(info["character_table"], dtype=float), group.character_table(), atol=1e-9)
    assert [i["type"] for i in info["irreps"]] == [i.type for i in group.irreps()]


def test_text_output_and_table_file(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "groups", "info", "A5")
    assert code == 0 and "A5: order 60, 5 conjugacy classes, 5 real irreps" in out and "1.618" in out
    np.save(tmp_path / "quaternions.npy", get_group("Q8").mult_table)
    code, out, _ = run_cli(capsys, "groups", "info", str(tmp_path / "quaternions.npy"), "--json")
    assert code == 0 and sorted(i["type"] for i in json.loads(out)["irreps"]) == ["H", "R", "R", "R", "R"]


def test_errors_are_one_line(capsys, tmp_path):
    (tmp_path / "notagroup.csv").write_text("0,1,2\n1,0,0\n2,1,0\n")
    for spec in ["S0", "X5", "D0", str(tmp_path / "notagroup.csv"), str(tmp_path / "missing.npy")]:
        code, out, err = run_cli(capsys, "groups", "info", spec)
        assert code != 0 and out == ""
        assert err.count("\n") == 1 and err.startswith("groupcc: error: ") and "Traceback" not in err


def test_console_entry_point_has_no_traceback():
    result = subprocess.run([sys.executable, "-m", "groupcc.cli", "groups", "info", "X5"], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == "groupcc: error: unknown group name 'X5': expected C<n>, D<n>, S<n>, A<n> (n >= 1), Q8, or a product such as S3xC2"
