"""The Python API as a user meets it: the README's "From Python" block runs as written, a crosscoder trains on a
numpy array and is analysed without touching the disk, the namespace cannot be shadowed, and run directories
get the permissions of the umask."""

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import groupcc

ROOT = Path(__file__).resolve().parents[2]


def readme_python_block() -> str:
    section = re.search(r"## From Python\n(.*?)\n## ", (ROOT / "README.md").read_text(), re.S).group(1)
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    previous = os.umask(0o022)
    try:
        exec(compile(readme_python_block(), "README.md", "exec"), {})
    finally:
        os.umask(previous)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("[") and "[3,1]" in printed[0]  # key irreps of the S4 composer
    stabiliser = [int(g) for g in re.findall(r"\d+", printed[1])]
    group = groupcc.get_group("S4")
    assert 0 in stabiliser and set(group.subgroup_generated(stabiliser)) == set(stabiliser)  # a subgroup
    # only the composer run was written, with the permissions umask 022 gives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    for path in (tmp_path / "runs").rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path


def test_a_crosscoder_on_a_numpy_array_in_three_lines_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    group = groupcc.get_group("D4")
    planted = groupcc.crosscoders.plant_group_features(group, d=12, n_features=8, seed=0)
    acts, _ = planted.sample(1024, np.random.default_rng(0), active=2.0, noise=0.01)
    crosscoder = groupcc.train_dictionary(acts, "crosscoder", n_features=16, sparsity="topk", k=2, steps=800, lr=3e-3, batch_size=256, progress=False)
    analysis = groupcc.analyze_dictionary(crosscoder, acts, "D4", progress=False)
    assert crosscoder.W_dec.shape == (16, 8, 12) and crosscoder.history[-1]["fvu"] < 0.3
    assert len(analysis.stabilisers) == 16 and analysis.families.n_families >= 1
    for members in analysis.stabilisers:
        assert set(group.subgroup_generated(members)) == set(members.tolist())
    assert list(tmp_path.iterdir()) == []


def test_train_dictionary_errors_name_the_value():
    with pytest.raises(groupcc.GroupccError, match="unknown option.*stepz"):
        groupcc.train_dictionary(np.ones((8, 4, 3)), "crosscoder", n_features=4, stepz=3)
    with pytest.raises(groupcc.GroupccError, match="4 blocks but S3 has 6 elements"):
        groupcc.train_dictionary(np.ones((8, 4, 3)), "crosscoder", n_features=4, group="S3")
    with pytest.raises(groupcc.GroupccError, match="expected an array or tensor"):
        groupcc.train_dictionary([1, 2], "sae", n_features=4)


def test_the_api_names_resolve_and_groups_stays_light():
    for name in groupcc.__all__:
        assert getattr(groupcc, name) is not None, name
    code = "import sys, groupcc.groups; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_the_folders_are_not_installed_at_top_level_and_user_files_do_not_shadow_them(tmp_path):
    for name in ["groups", "crosscoders", "training", "eval"]:
        found = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True, text=True)
        assert found.returncode != 0 and "No module named" in found.stderr, name
    (tmp_path / "eval.py").write_text("raise SystemExit('user eval.py imported')\n")
    (tmp_path / "groups.py").write_text("raise SystemExit('user groups.py imported')\n")
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "__init__.py").write_text("raise SystemExit('user training/ imported')\n")
    code = "import groupcc; print(groupcc.get_group('S3').order, groupcc.analyze_dictionary.__module__)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.stdout.split() == ["6", "groupcc.eval.pipeline"], result.stderr
    cli = subprocess.run([sys.executable, "-m", "groupcc", "groups", "info", "S3", "--json"], cwd=tmp_path, capture_output=True, text=True)
    assert cli.returncode == 0 and '"order": 6' in cli.stdout, cli.stderr
