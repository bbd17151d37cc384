"""Command-line options generated from the library's config dataclasses (and function signatures), so that an
option's name, type and default have one definition, in the library; validation stays in the dataclass.

``--foo-bar`` is field ``foo_bar``; an ``int``/``float``/``str`` field takes one value of that type, a ``bool``
field is a switch, a ``tuple[int, ...]`` field takes comma-separated integers (``--sizes 32,64,256``), a
``X | None`` field defaults to ``None`` (the library picks). Help texts come from the
dataclass docstring's ``Attributes:`` section when it has one, else from the command.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing

#: argparse types for the annotations the configs use.
SCALARS = {int: int, float: float, str: str}


def parameters(source) -> dict[str, inspect.Parameter]:
    """The keyword parameters of a dataclass (its ``__init__``) or a function, by name."""
    init_fields = {f.name for f in dataclasses.fields(source) if f.init} if dataclasses.is_dataclass(source) else None
    signature = inspect.signature(source)
    return {name: p for name, p in signature.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and (init_fields is None or name in init_fields)}


def documented(source) -> dict[str, str]:
    """``name: text`` entries of the docstring's ``Attributes:`` or ``Args:`` section (``a, b: text`` documents both)."""
    doc = inspect.getdoc(source) or ""
    match = re.search(r"^(?:Attributes|Args):\n(.*?)(?:\n\S|\Z)", doc, re.S | re.M)
    if not match:
        return {}
    helps: dict[str, str] = {}
    names: list[str] = []
    for line in match.group(1).splitlines():
        entry = re.match(r"^    ([a-z_0-9, ]+): (.*)$", line)
        if entry:
            names = [name.strip() for name in entry.group(1).split(",")]
            for name in names:
                helps[name] = entry.group(2).strip()
        elif line.strip() and names:
            for name in names:
                helps[name] += " " + line.strip()
    return {name: re.sub(r"``([^`]*)``", r"\1", text) for name, text in helps.items()}


def add_options(parser: argparse.ArgumentParser, source, names: list[str], *, flags: dict[str, str] | None = None,
                helps: dict[str, str] | None = None, choices: dict[str, typing.Sequence] | None = None,
                defaults: dict[str, object] | None = None, required: typing.Collection[str] = ()) -> None:
    """Add ``--<name>`` for each of ``names`` (fields of the dataclass or parameters of the function ``source``),
    typed and defaulted as there. ``flags`` renames options (``{"n_features": "--features"}``), ``helps`` adds or
    replaces help texts, ``defaults`` replaces a default for this command, ``required`` options have none."""
    flags, helps, choices, defaults = flags or {}, helps or {}, choices or {}, defaults or {}
    found = parameters(source)
    hints = typing.get_type_hints(source.__init__ if dataclasses.is_dataclass(source) else source)
    docs = documented(source)
    for name in names:
        if name not in found:
            raise KeyError(f"{name!r} is not an option of {source.__name__}")  # a programming error, not a user's
        default = defaults.get(name, found[name].default)
        kind = _scalar(hints.get(name))
        flag = flags.get(name, "--" + name.replace("_", "-"))
        text = helps.get(name) or docs.get(name) or ""
        options: dict = {"dest": name}
        if kind is bool:
            options.update(action="store_true")
        else:
            options.update(type=kind, choices=choices.get(name), metavar=None if name in choices else name.upper())
            if name in required:
                options["required"] = True
            else:
                options["default"] = default
                if "default" not in text:  # a help text that explains its own default keeps it
                    text = f"{text} (default: {'chosen from the data' if default is None else default})".strip()
        parser.add_argument(flag, help=text.replace("%", "%%"), **options)


def option_values(args: argparse.Namespace, names: list[str]) -> dict:
    """The parsed values of ``names``, leaving out those that were not given and default to ``None``."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _scalar(hint):
    """``int``, ``float``, ``str``, ``bool`` or :func:`_integers` for an annotation, looking through ``X | None``."""
    if typing.get_origin(hint) is tuple:
        return _integers
    arguments = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_args(hint) else [hint]
    kind = arguments[0] if arguments else str
    if kind is bool:
        return bool
    return SCALARS.get(kind, str)


def _integers(text: str) -> tuple[int, ...]:
    """``"32,64,256"`` -> ``(32, 64, 256)`` (the dataclass validates the values). Every part must be an integer:
    ``""`` or ``"32,,64"`` is refused rather than read as fewer values (leaving the option out gives its default)."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 32,64,256 "
                                         "(leave the option out for its default)") from None
