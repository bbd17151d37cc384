"""Run directories: permissions from the umask, atomic and strict writes, locks, overwrite that keeps the old run
until the new one is complete, stale temporaries cleaned, one bit-exact checkpoint format."""

import errno
import json
import os
import stat
import subprocess
import sys
import threading

import pytest
import torch

from groupcc.groups import get_group
from groupcc.training import runs
from groupcc.training.runs import (
    RunError,
    StagedDirectory,
    check_output,
    check_replaceable,
    group_fingerprint,
    load_state,
    lock,
    open_run,
    read_json,
    save_state,
    write_json,
    write_safetensors,
)


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def modes(root):
    return {path.relative_to(root).as_posix(): stat.S_IMODE(path.stat().st_mode) for path in [root, *root.rglob("*")]}


def test_files_and_directories_get_the_permissions_of_the_umask(tmp_path, umask_022):
    with open_run(tmp_path / "run") as run:
        write_json(run / "config.json", {"a": 1})
        write_safetensors(run / "sub" / "w.safetensors", {"w": torch.ones(2)})
    found = modes(tmp_path / "run")
    assert found == {".": 0o755, "config.json": 0o644, "sub": 0o755, "sub/w.safetensors": 0o644}
    with StagedDirectory(tmp_path / "staged") as staging:
        write_json(staging / "x.json", [1])
    assert modes(tmp_path / "staged") == {".": 0o755, "x.json": 0o644}


def test_json_is_strict():
    with pytest.raises(RunError, match="non-finite"):
        write_json("/nonexistent/never-written.json", {"fvu": float("nan")})


def dead_pid() -> str:
    return subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()


def test_a_second_writer_is_refused_with_one_line(tmp_path):
    held, release, errors = threading.Event(), threading.Event(), []

    def first_writer():
        with lock(tmp_path / "run"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=first_writer)
    thread.start()
    held.wait(10)
    try:
        for second in (lambda: open_run(tmp_path / "run"), lambda: lock(tmp_path / "run"), lambda: StagedDirectory(tmp_path / "run")):
            with pytest.raises(RunError, match=r"'.*run' is being written by process \d+") as err:
                with second():
                    errors.append("entered")
            assert "\n" not in str(err.value)
    finally:
        release.set()
        thread.join()
    assert errors == [] and list(tmp_path.iterdir()) == []  # the lock is gone, nothing was created


def test_the_holder_may_take_its_lock_again(tmp_path):
    with lock(tmp_path / "store"):
        with StagedDirectory(tmp_path / "store") as staging:  # a writer inside a command that holds the lock
            write_json(staging / "manifest.json", {})
        assert (tmp_path / ".store.lock").is_file()  # released with the outermost hold only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_a_failed_writer_removes_the_parents_it_created(tmp_path):
    with pytest.raises(ValueError):
        with open_run(tmp_path / "a" / "b" / "run") as run:
            write_json(run / "config.json", {})
            raise ValueError("bad data")
    with pytest.raises(ValueError):
        with StagedDirectory(tmp_path / "c" / "store") as staging:
            write_json(staging / "manifest.json", {})
            raise ValueError("bad data")
    assert list(tmp_path.iterdir()) == []


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (tmp_path / ".run.lock").write_text(f"{dead} {os.uname().nodename}\n")
    with open_run(tmp_path / "run") as run:
        write_json(run / "config.json", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_keeps_the_old_run_until_the_new_one_is_complete(tmp_path):
    with open_run(tmp_path / "run") as run:
        write_json(run / "config.json", {"version": "old"})
    with pytest.raises(RuntimeError):
        with open_run(tmp_path / "run", overwrite=True) as staging:
            assert staging != tmp_path / "run"
            write_json(staging / "config.json", {"version": "new"})
            raise RuntimeError("a typo in --layer")
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {"version": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    with open_run(tmp_path / "run", overwrite=True) as staging:
        write_json(staging / "config.json", {"version": "new"})
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {"version": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_existing_run_needs_resume_or_overwrite_and_a_failed_new_run_leaves_nothing(tmp_path):
    with open_run(tmp_path / "run") as run:
        write_json(run / "config.json", {})
    with pytest.raises(RunError, match="already exists: resume it, overwrite it, or choose another path"):
        with open_run(tmp_path / "run"):
            pass
    with pytest.raises(ValueError):
        with open_run(tmp_path / "new") as run:
            write_json(run / "config.json", {})
            raise ValueError("bad data")
    assert not (tmp_path / "new").exists()
    with pytest.raises(KeyboardInterrupt):  # an interrupted new run is kept, to be resumed
        with open_run(tmp_path / "interrupted") as run:
            write_json(run / "config.json", {})
            raise KeyboardInterrupt
    assert (tmp_path / "interrupted" / "config.json").is_file()


def test_a_failed_or_refused_resume_keeps_the_run(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with open_run(tmp_path / "run") as run:
            write_json(run / "config.json", {"step": 1})
            raise KeyboardInterrupt
    with pytest.raises(RunError, match="contradicts the run"):
        with open_run(tmp_path / "run", resume=True) as run:
            write_json(run / "state.json", {"step": 2})
            raise RunError("contradicts the run")
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {"step": 1}
    with pytest.raises(ValueError):  # an empty directory given to resume is emptied again
        with open_run(tmp_path / "empty", resume=True) as run:
            write_json(run / "config.json", {})
            raise ValueError("bad data")
    assert not (tmp_path / "empty").exists()


def test_an_output_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="a file is in the way"):
        write_json(tmp_path / "file" / "run" / "config.json", {})


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_one(tmp_path):
    dead = dead_pid()
    stale = tmp_path / f".store.{dead}.abcd1234.tmp"
    stale.mkdir()
    (stale / "shard_00000.npy").write_bytes(b"x" * 100)
    mine = tmp_path / f".store.{os.getpid()}.abcd1234.tmp"  # a live writer's: kept
    mine.mkdir()
    (tmp_path / f".other.{dead}.abcd1234.tmp").mkdir()  # another output's: not this writer's to remove
    (tmp_path / ".store.lock").write_text(f"{dead} {os.uname().nodename}\n")  # SIGKILLed: its lock stayed
    with StagedDirectory(tmp_path / "store") as staging:
        write_json(staging / "manifest.json", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["store", mine.name, f".other.{dead}.abcd1234.tmp"])


def test_a_resumed_run_loses_the_temporaries_of_its_killed_writer(tmp_path):
    dead = dead_pid()
    with pytest.raises(KeyboardInterrupt):
        with open_run(tmp_path / "run") as run:
            write_json(run / "config.json", {})
            (run / "checkpoints").mkdir()
            (run / "checkpoints" / f".epoch_1.safetensors.{dead}.0123abcd.tmp").write_bytes(b"half")
            (run / f".state.safetensors.{dead}.0123abcd.tmp").write_bytes(b"half")
            raise KeyboardInterrupt
    with open_run(tmp_path / "run", resume=True) as run:
        pass
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == ["checkpoints", "config.json"]


def test_outputs_that_cannot_be_written_are_refused_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="'.*file' is a file, not a directory"):
        check_output(tmp_path / "file" / "a" / "store", "activation store")
    with pytest.raises(RunError, match="is a file: expected a directory path"):
        check_output(tmp_path / "file")
    monkeypatch.setattr(runs.os, "access", lambda path, mode: False)  # as on a read-only file system
    with pytest.raises(RunError, match=r"cannot create analysis directory '.*new': '.*' is not writable"):
        check_output(tmp_path / "new", "analysis directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_only_a_run_of_the_same_kind_is_replaced(tmp_path):
    write_json(tmp_path / "run" / "config.json", {})
    with pytest.raises(RunError, match="is not an activation store .it has no manifest.json"):
        check_replaceable(tmp_path / "run", True, "manifest.json", "activation store")
    write_json(tmp_path / "store" / "manifest.json", {})
    with pytest.raises(RunError, match="already exists: overwrite it"):
        check_replaceable(tmp_path / "store", False, "manifest.json", "activation store")
    check_replaceable(tmp_path / "store", True, "manifest.json", "activation store")
    check_replaceable(tmp_path / "new", False, "manifest.json", "activation store")
    # runs that all hold a config.json are told apart by the kind it records
    (tmp_path / "composer").mkdir()
    write_json(tmp_path / "composer" / "config.json", {"kind": "composer"})
    check_replaceable(tmp_path / "composer", True, "config.json", "composer run", kind="composer")
    with pytest.raises(RunError, match=r"^'.*composer' exists and is not a testbed run \(its config.json records 'composer', not "
                                       r"'testbed'\): expected a new path, or an earlier testbed run to replace$"):
        check_replaceable(tmp_path / "composer", True, "config.json", "testbed run", kind="testbed")
    write_json(tmp_path / "composer" / "config.json", [])  # unreadable as a record: no kind
    with pytest.raises(RunError, match=r"records None, not 'composer'"):
        check_replaceable(tmp_path / "composer", True, "config.json", "composer run", kind="composer")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EROFS])
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, code):
    real_write = os.write

    def failing_write(fd, data):
        if len(data) > 100:
            raise OSError(code, os.strerror(code))
        return real_write(fd, data)

    with pytest.raises(RunError) as err:
        with StagedDirectory(tmp_path / "store") as staging:
            write_json(staging / "small.json", {})
            monkeypatch.setattr(runs.os, "write", failing_write)
            runs.atomic_write(staging / "shard.bin", lambda tmp: os.write(os.open(tmp, os.O_WRONLY), b"x" * 1000))
    assert str(err.value).startswith("cannot write '") and str(err.value).endswith(f"shard.bin': {os.strerror(code)}")
    monkeypatch.undo()
    with pytest.raises(RunError, match="No space left on device"):  # safetensors reports it as its own error
        runs.atomic_write(tmp_path / "w.safetensors", lambda tmp: (_ for _ in ()).throw(runs.SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)")))
    assert list(tmp_path.iterdir()) == []


def test_a_failed_swap_keeps_the_old_run_and_removes_the_new(tmp_path, monkeypatch):
    write_json(tmp_path / "store" / "manifest.json", {"version": "old"})
    staged = StagedDirectory(tmp_path / "store", overwrite=True)
    write_json(staged.path / "manifest.json", {"version": "new"})
    real_replace = os.replace

    def failing_replace(source, target):
        if str(source) == str(staged.path):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        return real_replace(source, target)

    monkeypatch.setattr(runs.os, "replace", failing_replace)
    with pytest.raises(RunError, match="cannot move output '.*store' into place"):
        staged.commit()
    assert json.loads((tmp_path / "store" / "manifest.json").read_text()) == {"version": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_read_json_refuses_another_json_type_than_expected(tmp_path):
    for text, expect, found in (("[]", dict, "array"), ("null", dict, "null"), ("3", list, "number"), ("true", dict, "boolean"), ("{}", list, "object")):
        (tmp_path / "x.json").write_text(text)
        with pytest.raises(RunError, match=rf"^'.*x.json' is corrupt: expected a JSON \w+, found {found}$"):
            read_json(tmp_path / "x.json", expect=expect)
    assert read_json(tmp_path / "x.json") == {} and read_json(tmp_path / "x.json", expect=dict) == {}


def test_a_group_is_recognised_by_its_table():
    assert get_group("S3").order == get_group("C6").order
    assert group_fingerprint(get_group("S3").mult_table) != group_fingerprint(get_group("C6").mult_table)
    assert group_fingerprint(get_group("S3").mult_table) == group_fingerprint(get_group("S3").mult_table.astype("int32"))


def test_a_saved_state_restores_model_and_optimiser_bit_exactly(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.98))
    x = torch.randn(8, 3)
    for _ in range(3):
        optimizer.zero_grad()
        model(x).pow(2).sum().backward()
        optimizer.step()
    save_state(tmp_path / "state.safetensors", model, optimizer, {"step": 3, "history": [{"loss": 1.5}]})
    twin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    twin_optimizer = torch.optim.AdamW(twin.parameters(), lr=1e-2, betas=(0.9, 0.98))
    assert load_state(tmp_path / "state.safetensors", twin, twin_optimizer) == {"step": 3, "history": [{"loss": 1.5}]}
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        assert torch.equal(a, b)
    for net, opt in ((model, optimizer), (twin, twin_optimizer)):
        opt.zero_grad()
        net(x).pow(2).sum().backward()
        opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    (tmp_path / "bad.safetensors").write_bytes(b"not a state")
    with pytest.raises(RunError, match="cannot resume from .*bad.safetensors"):
        load_state(tmp_path / "bad.safetensors", twin, twin_optimizer)
