"""The ``groupcc`` command line.

Every error a user can cause (bad values, missing or corrupt files, an output that cannot be written, a full disk,
a second writer) is reported as one line on stderr, ``groupcc: error: ...``, with a non-zero exit status, never
as a traceback. Only ``groups info`` runs without torch: the other commands' modules are imported when the
command line names them (or for ``--help``).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import signal
import sys

from groupcc.errors import GroupccError

#: Errors that are the user's to fix, reported in one line: every groupcc error, and every error of the operating
#: system (no such file, permission denied, read-only file system, no space left, file too large). Anything else
#: is a bug and keeps its traceback.
USER_ERRORS = (GroupccError, OSError)

#: Top-level command -> (module under ``groupcc``, function that adds its parsers). Each module is imported
#: only when its command is used (or the whole command line is built, for ``--help``).
COMMAND_MODULES = {
    "composer": ("composer_cmd", "add_composer_commands"),
    "harvest": ("harvest_cmd", "add_harvest_command"),
    "dict": ("dict_cmd", "add_dict_commands"),
    "analyze": ("analyze_cmd", "add_analyze_commands"),
    "report": ("analyze_cmd", "add_analyze_commands"),
    "demo": ("demo", "add_demo_command"),
    "vision": ("vision_cmd", "add_vision_commands"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(2, f"groupcc: error: {one_line(message)} (see '{self.prog} --help')\n")


@functools.cache
def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line; with ``command`` (a top-level command name) only the parsers that command needs, so that
    ``groups info`` does not import torch. Built once per process (the demo and tests run many commands)."""
    parser = _Parser(prog="groupcc", description="Symmetric features in neural networks: groups, SAEs and group crosscoders.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    groups = commands.add_parser("groups", help="finite groups and their real irreps")
    group_commands = groups.add_subparsers(dest="groups_command", required=True, parser_class=_Parser)
    info = group_commands.add_parser("info", help="order, conjugacy classes, irreps and character table of a group")
    info.add_argument("group", help="a group name (C7, D6, S5, A5, Q8, S3xC2) or a Cayley table file (.npy, .json, .csv, .txt)")
    info.add_argument("--json", action="store_true", help="print JSON (schema in the README)")
    info.set_defaults(handler=_groups_info)

    if command == "groups":
        return parser
    wanted = [COMMAND_MODULES[command]] if command in COMMAND_MODULES else dict.fromkeys(COMMAND_MODULES.values())
    for module, adder in wanted:
        getattr(importlib.import_module(f"groupcc.{module}"), adder)(commands)
    return parser


def _groups_info(args: argparse.Namespace) -> None:
    from .group_info import groups_info

    print(groups_info(args.group, args.json))


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv`` (default: the process's arguments) with the parsers its first word needs."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return build_parser(argv[0] if argv else None).parse_args(argv)


def one_line(text: str) -> str:
    """The first non-empty line of ``text``."""
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def error_message(err: BaseException) -> str:
    """The one line printed for a user error. An operating-system error names its file and reason
    (``'/data/acts': No space left on device``)."""
    if isinstance(err, OSError) and not isinstance(err, GroupccError) and err.strerror:
        files = [repr(str(name)) for name in (err.filename, err.filename2) if name is not None]
        return f"{' -> '.join(files)}: {err.strerror}" if files else err.strerror
    return one_line(str(err)) or type(err).__name__


#: Commands that run data-parallel under ``torchrun`` (:mod:`groupcc.training.distributed`).
DATA_PARALLEL_COMMANDS = ("harvest", "vision harvest", "dict train")


def command_name(args: argparse.Namespace) -> str:
    """``dict train``, ``harvest``...: the command and its subcommand."""
    sub = getattr(args, f"{args.command}_command", None)
    return f"{args.command} {sub}" if sub else args.command


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    return _main_on_ranks(args) if launched_by_torchrun() else _run(args)


def launched_by_torchrun() -> bool:
    """Whether this process is one of several ranks started by ``torchrun`` (``WORLD_SIZE`` > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def _run(args: argparse.Namespace, silent=lambda err: False, prefix: str = "groupcc: error") -> int:
    """Run the parsed command; a user error is one line on stderr, ``<prefix>: ...`` (none when ``silent(error)``)."""
    try:
        args.handler(args)
    except BrokenPipeError:  # output piped into `head`: not an error of ours
        sys.stdout = open(os.devnull, "w")
        return 1
    except USER_ERRORS as err:
        if not silent(err):  # one write per line: ranks under torchrun share stderr, and print() writes twice
            sys.stderr.write(f"{prefix}: {error_message(err)}\n")
            sys.stderr.flush()
        return 1
    except MemoryError:
        print("groupcc: error: out of memory: expected smaller sizes (fewer features, rows or a smaller group)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("groupcc: interrupted", file=sys.stderr)
        return 130
    return 0


def _main_on_ranks(args: argparse.Namespace) -> int:
    """One rank of a ``torchrun`` launch: join the process group, run the command; rank 0 alone prints (results,
    progress and an error all ranks agreed on), the others print only errors of their own."""
    name = command_name(args)
    if name not in DATA_PARALLEL_COMMANDS:
        print(f"groupcc: error: {name!r} does not run on several ranks: expected one of {', '.join(DATA_PARALLEL_COMMANDS)} "
              "under torchrun", file=sys.stderr)
        return 2
    from groupcc.training.distributed import RankFailure, join_world, leave_world

    try:
        world = join_world(getattr(args, "device", "auto"))
    except (RuntimeError, ValueError) as err:
        print(f"groupcc: error: cannot join the torchrun process group: {one_line(str(err))}", file=sys.stderr)
        return 1
    # torchrun stops the other ranks with SIGTERM when one fails: unwind (removing staged output) instead of dying
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if not world.is_main:
            if hasattr(args, "quiet"):
                args.quiet = True
            sys.stdout = open(os.devnull, "w")
        # every rank raises an error the ranks agreed on: rank 0 prints it; the others name themselves
        status = _run(args, silent=lambda err: isinstance(err, RankFailure) and not world.is_main,
                      prefix="groupcc: error" if world.is_main else f"groupcc: error (rank {world.rank})")
    finally:
        leave_world()
    return status


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
