"""The ``groupcc`` command line.

Every error a user can cause (bad group name, bad table, bad arguments) is reported as one line on stderr
with a non-zero exit status, never as a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from groupcc.errors import GroupccError

#: Errors that are the user's to fix: reported in one line. Anything else is a bug and keeps its traceback.
USER_ERRORS = (GroupccError, FileNotFoundError, FileExistsError)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(2, f"groupcc: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="groupcc", description="Symmetric features in neural networks: groups, SAEs and group crosscoders.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    groups = commands.add_parser("groups", help="finite groups and their real irreps")
    group_commands = groups.add_subparsers(dest="groups_command", required=True, parser_class=_Parser)
    info = group_commands.add_parser("info", help="order, conjugacy classes, irreps and character table of a group")
    info.add_argument("group", help="a group name (C7, D6, S5, A5, Q8, S3xC2) or a Cayley table file (.npy, .json, .csv, .txt)")
    info.add_argument("--json", action="store_true", help="print JSON (schema in the README)")
    info.set_defaults(handler=_groups_info)

    from .analyze_cmd import add_analyze_commands
    from .composer_cmd import add_composer_commands
    from .demo import add_demo_command
    from .vision_cmd import add_vision_commands
    from .dict_cmd import add_dict_commands
    from .harvest_cmd import add_harvest_command

    add_composer_commands(commands)
    add_harvest_command(commands)
    add_dict_commands(commands)
    add_analyze_commands(commands)
    add_demo_command(commands)
    add_vision_commands(commands)
    return parser


def _groups_info(args: argparse.Namespace) -> None:
    from .group_info import groups_info

    print(groups_info(args.group, args.json))


def run_command(argv: list[str]) -> None:
    """Parse and run one command; user errors propagate (the demo chains commands this way)."""
    args = build_parser().parse_args(argv)
    args.handler(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except USER_ERRORS as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"groupcc: error: {message}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head`: not an error of ours
        sys.stdout = open(os.devnull, "w")
        return 1
    except KeyboardInterrupt:
        print("groupcc: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
