"""The harvester: every block equals the layer's activation on the explicitly transformed input; bad arguments
are refused before anything is created; a store records what it was made from; a second writer is refused."""

import errno
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from groupcc.cli import main
from groupcc.errors import GroupccError
from groupcc.groups import GroupError, get_group, pair_action
from groupcc.training import harvest as harvest_module
from groupcc.training.activation_store import open_store
from groupcc.training.composer_training import default_config, load_composer, fit_composer
from groupcc.training.harvest import composer_harvest_batches, harvest, harvest_to_store, iter_harvest, resolve_layer, store_kind
from groupcc.training.runs import group_fingerprint


@pytest.mark.parametrize("kind", ["left", "right", "conjugation"])
def test_pair_actions_are_actions(kind):
    group = get_group("S3")
    moved = pair_action(group, kind)
    n = group.order
    for g in range(n):
        for h in range(n):
            gh = group.mul(g, h)
            composed = moved[h][moved[g]] if kind == "right" else moved[g][moved[h]]
            np.testing.assert_array_equal(moved[gh], composed)
    np.testing.assert_array_equal(moved[0], np.arange(n * n))
    with pytest.raises(GroupError, match="unknown action 'up'"):
        pair_action(group, "up")


def explicit(group, kind, g, a, b):
    if kind == "left":
        return group.mul(g, a), b
    if kind == "right":
        return a, group.mul(b, g)
    return group.conjugate(g, a), group.conjugate(g, b)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for arch, sizes in [("mlp", dict(d_embed=8, d_hidden=12)), ("transformer", dict(d_model=16, n_heads=2, d_head=8, d_mlp=12))]:
        path = tmp_path_factory.mktemp(arch)
        fit_composer(default_config("D3", arch, epochs=3, **sizes), path / "run", progress=False)
        out[arch] = load_composer(path / "run")
    return out


@pytest.mark.parametrize("arch, layer", [("mlp", "hidden"), ("mlp", "embed_a"), ("transformer", "resid_mid"), ("transformer", "hidden")])
@pytest.mark.parametrize("kind", ["left", "right", "conjugation"])
def test_blocks_equal_explicitly_transformed_inputs(runs, arch, layer, kind):
    run = runs[arch]
    group = run.group
    acts = torch.cat(list(composer_harvest_batches(run, layer, kind, progress=False, rows_per_forward=30))).numpy()
    n = group.order
    assert acts.shape[:2] == (n * n, n)
    module = resolve_layer(run.model, layer)
    for p in [0, 5, 17, 35]:
        a, b = divmod(p, n)
        for g in range(n):
            a2, b2 = explicit(group, kind, g, a, b)
            seen = []
            handle = module.register_forward_hook(lambda m, i, o: seen.append(o))
            with torch.no_grad():
                run.model(torch.tensor([a2]), torch.tensor([b2]))
            handle.remove()
            np.testing.assert_allclose(acts[p, g], seen[0][0].numpy(), rtol=1e-5, atol=1e-6)


def test_harvest_into_store_round_trips(runs, tmp_path):
    run = runs["mlp"]
    batches = composer_harvest_batches(run, "hidden", "left", progress=False, rows_per_forward=50)
    store = harvest_to_store(tmp_path / "acts", batches, run.group.order, group="D3", action="left", layer="hidden")
    direct = torch.cat(list(composer_harvest_batches(run, "hidden", "left", progress=False))).numpy()
    np.testing.assert_array_equal(open_store(tmp_path / "acts").read_rows(np.arange(36)), direct)
    assert store.describe()["group"] == "D3"


def test_bad_layer_and_nan_activations(runs, tmp_path):
    with pytest.raises(ValueError, match="layer 'mlp.fc9' not found in MLPComposer: expected one of .*hidden"):
        resolve_layer(runs["mlp"].model, "mlp.fc9")

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Identity()

        def forward(self, x):
            return self.layer(x / 0.0 * 0.0)

    batches = iter_harvest(Broken(), "layer", 4, lambda idx: torch.ones(len(idx), 3), lambda x: (x.repeat(2, 1),), 2, progress=False)
    with pytest.raises(ValueError, match="NaN or infinite"):
        harvest_to_store(tmp_path / "nan", batches, 2)
    assert not (tmp_path / "nan").exists()


def test_bad_arguments_are_refused_before_anything_is_loaded_or_created(runs, tmp_path):
    run = runs["mlp"]
    (tmp_path / "file").write_text("x")
    cases = [
        (dict(rows_per_forward=0), r"rows_per_forward = 0: expected an integer in \[1, "),
        (dict(rows_per_forward=2**64), r"rows_per_forward = 18446744073709551616: expected an integer"),
        (dict(layer="mlp.fc9"), "layer 'mlp.fc9' not found in MLPComposer"),
        (dict(layer=""), "layer '': expected a layer name"),
        (dict(action="up"), "action 'up': expected one of left, right, conjugation"),
        (dict(device="tpu"), "unknown device 'tpu'"),
        (dict(out=tmp_path / "file" / "acts"), "'.*file' is a file, not a directory"),
    ]
    if not torch.cuda.is_available():
        cases.append((dict(device="cuda"), "no CUDA GPU is available"))
    for options, message in cases:
        with pytest.raises(GroupccError, match=message):
            harvest(run.path, **{"out": tmp_path / "acts", "progress": False, **options})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_store_records_what_it_was_made_from(runs, tmp_path):
    run = runs["transformer"]
    store = harvest(run, "resid_mid", "conjugation", out=tmp_path / "acts", progress=False)
    manifest = store.manifest
    recorded = (manifest["group"], manifest["action"], manifest["layer"], manifest["source"])
    assert recorded == ("D3", "conjugation", "resid_mid", str(run.path.resolve()))
    assert manifest["metadata"] == {"store_kind": "composer", "task": "a*b", "arch": "transformer", "group_order": 6,
                                    "group_fingerprint": group_fingerprint(get_group("D3").mult_table)}
    assert store_kind(manifest) == "composer" and store_kind({"action": "dihedral-image"}) == "vision"
    with pytest.raises(GroupccError, match="is not an activation store .it has no manifest.json"):
        harvest(run, out=run.path, overwrite=True, progress=False)  # never replaces another kind of run
    assert (run.path / "model.safetensors").is_file()


def test_a_second_harvest_into_the_same_store_is_refused_and_the_first_completes(runs, tmp_path, monkeypatch):
    """While one harvest writes ``acts``, a second ``groupcc harvest`` (another process) into it is refused in one line."""
    run, out = runs["mlp"], tmp_path / "acts"
    second = {}
    batches = harvest_module.composer_harvest_batches

    def first_batches(*args, **kwargs):
        for index, batch in enumerate(batches(*args, **kwargs)):
            if index == 1:
                argv = [sys.executable, "-m", "groupcc", "harvest", "--run", str(run.path), "--out", str(out), "--quiet", "--overwrite"]
                second["result"] = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            yield batch

    monkeypatch.setattr(harvest_module, "composer_harvest_batches", first_batches)
    store = harvest(run, out=out, rows_per_forward=60, progress=False)
    result = second["result"]
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"groupcc: error: '{out}' is being written by process {os.getpid()}")
    direct = torch.cat(list(batches(run, "hidden", "left", progress=False))).numpy()
    np.testing.assert_array_equal(open_store(out).read_rows(np.arange(36)), direct)
    assert store.shape == (36, 6, 12) and sorted(p.name for p in tmp_path.iterdir()) == ["acts"]


def test_the_next_harvest_removes_what_a_killed_one_left(runs, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    staging = tmp_path / f".acts.{dead}.0badcafe.tmp"  # a SIGKILLed harvest's half-written store, and its lock
    staging.mkdir()
    (staging / "shard_00000.npy").write_bytes(b"\0" * 4096)
    (tmp_path / ".acts.lock").write_text(f"{dead} {os.uname().nodename}\n")
    harvest(runs["mlp"], out=tmp_path / "acts", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acts"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG])
def test_a_full_disk_is_one_line_and_leaves_nothing(runs, tmp_path, monkeypatch, capsys, code):
    def full(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(np, "save", full)  # the store's shards: a full disk, or a file over `ulimit -f`
    assert main(["harvest", "--run", str(runs["mlp"].path), "--out", str(tmp_path / "a" / "acts"), "--quiet"]) == 1
    assert capsys.readouterr().err == f"groupcc: error: cannot write activation store '{tmp_path / 'a' / 'acts'}': {os.strerror(code)}\n"
    assert list(tmp_path.iterdir()) == []  # no store, no staging directory, no lock, not even the parent it made
