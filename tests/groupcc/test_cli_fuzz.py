"""Fuzzing the command line: every option of every command, given a bad value, fails with a non-zero exit status
and exactly one line on stderr (``groupcc: error: ...``), never a traceback, and creates or changes nothing.

The commands and their options are read from the argparse parser, so a new option (or command) is fuzzed without
touching this file. Each command starts from a valid command line on tiny fixture runs (so that a bad value that
slips through finishes quickly, and fails the test by exiting 0); one option at a time gets a bad value of a kind
that fits its type (an ``int`` gets negative, zero, beyond 64 bits or non-numeric text; a ``float`` NaN, infinities,
negative or text; a name or input path text that names nothing, a regular file, an empty directory, a name too
long or an empty string; ``--out`` a regular file, a path under one, ``.``, an existing run of another kind, a
name too long). The error must also name the value or its option, which shows that the command failed on the
fuzzed value and not on its base command line. The CLI runs in-process (``groupcc.cli.main``), much faster than a
subprocess; a command that runs past :data:`TIME_LIMIT_S` accepted its bad value.

Also here: operating-system errors (a full disk, no permission) and running out of memory are one line, a bug keeps
its traceback, and ``groupcc groups info`` does not import torch.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from groupcc import group_info
from groupcc.cli import build_parser, main

#: Options for which 0 is a meaningful value (0 is a bad value for every other integer option).
ZERO_ALLOWED = {"seed", "patience"}
#: Options whose value is an output directory (gets output-path bad values).
OUTPUTS = {"out"}

INT_TEXT = ["abc", "1.5", "", "1e3", "nan", "0x1F", "2**64"]
FLOAT_TEXT = ["abc", "", "1,5", "one"]


def leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every command that runs something (``("composer", "train")``...), with its parser."""
    subparsers = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not subparsers:
        return {prefix: parser}
    found = {}
    for name, sub in subparsers[0].choices.items():
        found.update(leaf_commands(sub, prefix + (name,)))
    return found


def takes_a_value(action: argparse.Action) -> bool:
    return not isinstance(action, (argparse._HelpAction, argparse._StoreConstAction, argparse._StoreTrueAction,
                                   argparse._StoreFalseAction, argparse._CountAction, argparse._VersionAction))


def flag(action: argparse.Action) -> str:
    return action.option_strings[0] if action.option_strings else action.dest


def kinds_of_bad_value(action: argparse.Action) -> list[str]:
    if action.dest in OUTPUTS:
        return ["out_file", "out_under_file", "out_dot", "out_other_run", "out_long"]
    if action.choices is not None:
        return ["not_a_choice"]
    if action.type is int:
        return ["negative", "huge", "int_text"] + ([] if action.dest in ZERO_ALLOWED else ["zero"])
    if action.type is float:
        return ["nan", "inf", "negative_float", "float_text"]
    return ["missing", "file", "empty_dir", "long", "empty"]


COMMANDS = leaf_commands(build_parser())
#: ``(command, option dest, kind of bad value)`` for every option that takes a value, of every command.
CASES = [(command, action.dest, kind) for command, parser in COMMANDS.items() for action in parser._actions if takes_a_value(action)
         for kind in kinds_of_bad_value(action)]


def bad_value(kind: str, action: argparse.Action, root: Path) -> st.SearchStrategy[str]:
    inputs = root / "inputs"
    names = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=8)
    return {
        "negative": st.integers(-(2**70), -1).map(str),
        "zero": st.just("0"),
        "huge": st.integers(2**63, 2**80).map(str),
        "int_text": st.sampled_from(INT_TEXT),
        "nan": st.sampled_from(["nan", "NaN", "-nan"]),
        "inf": st.sampled_from(["inf", "-inf", "1e999", "Infinity"]),
        "negative_float": st.floats(-1e6, -1e-6).map(repr),
        "float_text": st.sampled_from(FLOAT_TEXT),
        "not_a_choice": names.filter(lambda text: text not in (action.choices or ())),
        "missing": names.map(lambda text: f"zz_{text}"),
        "file": st.just(str(inputs / "a_file")),
        "empty_dir": st.just(str(inputs / "empty")),
        "long": st.integers(256, 300).map(lambda n: "x" * n),
        "empty": st.just(""),
        "out_file": st.just(str(inputs / "a_file")),
        "out_under_file": names.map(lambda text: str(inputs / "a_file" / text)),
        "out_dot": st.sampled_from([".", "..", str(root / "cwd" / "..")]),
        "out_other_run": st.sampled_from([str(inputs / name) for name in ("composer", "acts", "crosscoder")]),
        "out_long": st.integers(256, 300).map(lambda n: str(root / "cwd" / ("x" * n))),
    }[kind]


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Tiny runs of every kind under ``inputs/``, and ``cwd/`` (the working directory while fuzzing)."""
    root = tmp_path_factory.mktemp("fuzz")
    inputs, cwd = root / "inputs", root / "cwd"
    inputs.mkdir()
    cwd.mkdir()
    (inputs / "a_file").write_text("not a run\n")
    (inputs / "empty").mkdir()
    steps = [
        ["composer", "train", "--group", "S3", "--out", inputs / "composer", "--epochs", "5", "--d-embed", "4", "--d-hidden", "4"],
        ["harvest", "--run", inputs / "composer", "--out", inputs / "acts"],
        ["dict", "train", "--acts", inputs / "acts", "--kind", "crosscoder", "--features", "4", "--steps", "4", "--sparsity", "l1",
         "--out", inputs / "crosscoder"],
        ["dict", "train", "--acts", inputs / "acts", "--kind", "sae", "--features", "4", "--steps", "4", "--sparsity", "l1",
         "--out", inputs / "sae"],
        ["analyze", inputs / "crosscoder", "--compare", inputs / "sae", "--out", inputs / "analysis"],
        ["vision", "train-testbed", "--out", inputs / "testbed", "--size", "16", "--n-train", "16", "--n-test", "8",
         "--epochs", "1", "--batch-size", "8"],
    ]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        for argv in steps:
            assert main([str(a) for a in argv] + ["--quiet"]) == 0, argv
        assert main(["dict", "export", str(inputs / "sae"), "--out", str(inputs / "saelens")]) == 0
    write_paper_run(inputs / "paper")
    previous = os.getcwd()
    os.chdir(cwd)
    yield root
    os.chdir(previous)


def write_paper_run(path: Path) -> None:
    """A run of the paper's code (``cfg.json`` + ``model.pt``): an untrained C3 MLP in the paper's layout."""
    path.mkdir()
    (path / "cfg.json").write_text(json.dumps({
        "lr": 0.001, "weight_decay": 1, "betas": [0.9, 0.98], "layers": {"embed_dim": 4, "hidden_dim": 4}, "model": "OneLayerMLP",
        "group": "CyclicGroup", "group_parameter": 3, "frac_train": 0.5, "num_epochs": 10, "seed": 2}))
    weights = torch.Generator().manual_seed(0)
    torch.save({name: torch.randn(*shape, generator=weights) for name, shape in
                {"W_x": (3, 4), "W_y": (3, 4), "W": (8, 4), "W_U": (4, 3)}.items()}, path / "model.pt")


#: Valid command lines (option dest -> value; ``NEW`` is a fresh output path per example), with tiny sizes.
NEW = object()


def base_options(command: tuple[str, ...], root: Path) -> dict:
    inputs = root / "inputs"
    return {
        ("groups", "info"): {"group": "S3"},
        ("composer", "train"): {"group": "S3", "out": NEW, "epochs": "2", "d_embed": "4", "d_hidden": "4", "d_model": "4",
                                "n_heads": "1", "d_head": "4", "d_mlp": "4"},
        ("composer", "eval"): {"run": inputs / "composer"},
        ("composer", "import"): {"paper_run": inputs / "paper", "out": NEW},
        ("composer", "table"): {"runs": [inputs / "composer"]},
        ("harvest",): {"run": inputs / "composer", "out": NEW},
        ("dict", "train"): {"acts": inputs / "acts", "kind": "crosscoder", "n_features": "4", "steps": "2", "k": "2", "aux_k": "2",
                            "out": NEW},
        ("dict", "eval"): {"run": inputs / "crosscoder", "acts": inputs / "acts"},
        ("dict", "export"): {"run": inputs / "sae", "out": NEW},
        ("dict", "import"): {"path": inputs / "saelens", "out": NEW},
        ("analyze",): {"dictionary": inputs / "crosscoder", "compare": inputs / "sae", "out": NEW},
        ("report",): {"run": inputs / "analysis", "out": NEW},
        ("demo",): {"group": "S3", "epochs": "2", "features": "4", "steps": "2", "out": NEW},
        ("vision", "harvest"): {"model": inputs / "testbed", "layer": "conv2", "group": "D4", "n_images": "4", "size": "16", "out": NEW},
        ("vision", "train-testbed"): {"size": "16", "n_train": "16", "n_test": "8", "epochs": "1", "batch_size": "8", "out": NEW},
    }.get(command)


def command_line(command: tuple[str, ...], parser: argparse.ArgumentParser, root: Path, new_out: Path, replaced: str, value: str) -> list[str]:
    """The command's valid command line with option ``replaced`` set to ``value``. A command without a known base
    (a new one) gets its required options: a fresh path for an output, the fixture composer run for anything else."""
    base = base_options(command, root)
    if base is None:
        base = {action.dest: (NEW if action.dest in OUTPUTS else root / "inputs" / "composer")
                for action in parser._actions if takes_a_value(action) and (action.required or not action.option_strings)}
    options = {**base, replaced: value}
    argv = list(command)
    for action in parser._actions:
        if action.dest == "quiet" and action.option_strings:
            argv.append(flag(action))
        if action.dest not in options or not takes_a_value(action):
            continue
        given = options[action.dest]
        given = new_out if given is NEW else given
        values = [str(v) for v in given] if isinstance(given, list) and action.dest != replaced else [str(given)]
        # "--flag=value" so that a value starting with "-" is not read as an option
        argv += [f"{flag(action)}={values[0]}"] if action.option_strings else values
    return argv


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with, for files, size and modification time."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(directory, name), root)] = ("dir",)
        for name in files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            found[os.path.relpath(path, root)] = (info.st_size, info.st_mtime_ns)
    return found


def remove_new(root: Path, before: dict[str, tuple]) -> None:
    """Undo what a failing example created, so that the next examples start from the same fixtures."""
    for path in sorted(set(snapshot(root)) - set(before), key=len):
        shutil.rmtree(root / path, ignore_errors=True) if (root / path).is_dir() else (root / path).unlink(missing_ok=True)


#: Seconds a bad value may run before it counts as accepted (a huge step count would train for ever).
TIME_LIMIT_S = 10


class Overran(BaseException):
    """Raised by the alarm when a command runs past :data:`TIME_LIMIT_S` (not an error the CLI could catch)."""


def _overran(*_):
    raise Overran(f"still running after {TIME_LIMIT_S} s: the bad value was accepted")


def run_in_process(argv: list[str]) -> tuple[object, str, str | None]:
    """``(exit status, stderr, traceback or None)`` of ``groupcc argv``, stopped after :data:`TIME_LIMIT_S`."""
    err = io.StringIO()
    crashed = None
    previous = signal.signal(signal.SIGALRM, _overran)
    signal.alarm(TIME_LIMIT_S)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
        except BaseException:  # noqa: BLE001 - exactly what the test looks for
            code, crashed = None, traceback.format_exc()
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    return code, err.getvalue(), crashed


def names_the_value(message: str, value: str, action: argparse.Action) -> bool:
    """Whether the error names the bad value (as given, or as parsed: ``1e999`` is ``inf``) or its option; this
    also shows that the command failed on the fuzzed value, not on something wrong in its base command line."""
    candidates = {value, repr(value), flag(action), action.dest, action.dest.replace("_", " ")}
    if action.type in (int, float):
        try:
            parsed = action.type(value)
            candidates |= {str(parsed), repr(parsed)}
        except (ValueError, OverflowError):
            pass
    if value.strip():  # a path, or the file in its way
        candidates |= {str(Path(value)), str(Path(value).absolute()), *(str(p) for p in Path(value).parents if str(p) != ".")}
    else:  # an empty path reads as the working directory
        candidates.add("'.'")
    return any(candidate and candidate.lower() in message.lower() for candidate in candidates)


_examples = itertools.count()


def problem_with(command: tuple[str, ...], action: argparse.Action, kind: str, value: str, root: Path) -> str | None:
    """What is wrong with how ``groupcc`` handles ``value`` for ``action`` (None: one line, nothing left)."""
    argv = command_line(command, COMMANDS[command], root, root / "cwd" / f"new{next(_examples)}", action.dest, value)
    before = snapshot(root)
    code, err, crashed = run_in_process(argv)
    after = snapshot(root)
    changed = sorted(path for path in set(before) | set(after) if before.get(path) != after.get(path))
    remove_new(root, before)
    case = f"groupcc {' '.join(argv)}  [{kind}]"
    lines = err.splitlines()
    if crashed is not None:
        return f"{case}: traceback\n{crashed}"
    if code in (0, None):
        return f"{case}: exit status {code}, stderr {err!r}"
    if len(lines) != 1 or not lines[0].startswith("groupcc: error: "):
        return f"{case}: stderr {err!r}"
    if changed:
        return f"{case}: created or changed {changed[:5]}"
    if not names_the_value(lines[0], value, action):
        return f"{case}: the error names neither the value nor the option: {err!r}"
    return None


@pytest.mark.parametrize("command", list(COMMANDS), ids=" ".join)
# One example runs every (option, kind of bad value) of the command, each value drawn by hypothesis; no shrinking
# (a bad value is already simple) and no example database (it would be written into the working directory).
@settings(max_examples=1, phases=[Phase.explicit, Phase.generate], database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_every_bad_value_fails_in_one_line_and_leaves_nothing(root, command, data):
    problems = []
    for case_command, dest, kind in CASES:
        action = next(a for a in COMMANDS[command]._actions if a.dest == dest) if case_command == command else None
        if action is None:
            continue
        value = data.draw(bad_value(kind, action, root), label=f"{flag(action)} [{kind}]")
        problem = problem_with(command, action, kind, value, root)
        if problem:
            problems.append(problem)
    assert not problems, f"{len(problems)} bad values mishandled:\n" + "\n".join(problems)


@pytest.mark.parametrize("error, line", [
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/acts/shard_00003.npy"), "'/data/acts/shard_00003.npy': No space left on device"),
    (PermissionError(errno.EACCES, os.strerror(errno.EACCES)), "Permission denied"),
    (MemoryError(), "out of memory: expected smaller sizes (fewer features, rows or a smaller group)"),
])
def test_operating_system_errors_are_one_line(monkeypatch, capsys, error, line):
    def failing(*args):
        raise error

    monkeypatch.setattr(group_info, "groups_info", failing)
    assert main(["groups", "info", "S3"]) == 1
    assert capsys.readouterr().err == f"groupcc: error: {line}\n"


def test_a_bug_keeps_its_traceback(monkeypatch):
    def failing(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(group_info, "groups_info", failing)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["groups", "info", "S3"])


def test_groups_info_does_not_import_torch():
    code = "import sys; from groupcc.cli import main; main(['groups', 'info', 'S3']); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "False"
