"""``groupcc groups info``: a group's classes, irreps and character table, as text or JSON."""

from __future__ import annotations

import os

import numpy as np

from groupcc.groups import Group, get_group, read_cayley_table


def resolve_group(spec: str) -> Group:
    """A group from a name (``S5``, ``D6``, ``S3xC2``...) or the path of a Cayley table file."""
    if os.sep in spec or os.path.splitext(spec)[1] in {".npy", ".json", ".csv", ".txt"} or os.path.exists(spec):
        return read_cayley_table(spec)
    return get_group(spec)


#: Character tables with more entries than this are left out of ``groups info`` (``"character_table": null`` in
#: JSON, a note in text): C10000's has 5001 × 10000 = 5·10⁷ entries, hundreds of MB of text. At the cap (e.g. C1414,
#: S7's 15 × 15 far below it) the whole command takes about a second.
MAX_CHARACTER_TABLE_ENTRIES = 1_000_000


def _clean(values: np.ndarray) -> list:
    """Rows of values as lists: integers as ints, other values rounded to 10 decimals (and no negative zero)."""
    rounded = np.round(np.asarray(values, dtype=float), 10) + 0.0
    whole = np.abs(rounded - np.round(rounded)) < 1e-9
    cells = rounded.astype(object)
    cells[whole] = [int(v) for v in np.round(rounded[whole]).astype(np.int64)]
    return cells.tolist()


def describe_group(group: Group) -> dict:
    """The JSON document printed by ``groupcc groups info --json`` (schema in the README). ``character_table`` is
    ``None`` when it would have more than :data:`MAX_CHARACTER_TABLE_ENTRIES` entries."""
    classes = group.conjugacy_classes()
    irreps = group.irreps()
    shown = len(irreps) * len(classes) <= MAX_CHARACTER_TABLE_ENTRIES
    return {
        "name": group.name,
        "order": group.order,
        "abelian": group.is_abelian,
        "classes": [
            {
                "size": int(len(members)),
                "representative": group.labels[int(members[0])],
                "representative_index": int(members[0]),
                "element_order": int(group.element_orders[members[0]]),
            }
            for members in classes
        ],
        "irreps": [
            {"name": irrep.name, "dim": irrep.dim, "type": irrep.type, "frobenius_schur": irrep.frobenius_schur}
            for irrep in irreps
        ],
        "character_table": _clean(group.character_table()) if shown else None,
    }


def _format_value(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def format_group(info: dict) -> str:
    """Human-readable rendering of :func:`describe_group`."""
    lines = [f"{info['name']}: order {info['order']}, {len(info['classes'])} conjugacy classes, "
             f"{len(info['irreps'])} real irreps{' (abelian)' if info['abelian'] else ''}", ""]
    lines.append("irreps:")
    width = max(len(irrep["name"]) for irrep in info["irreps"])
    for irrep in info["irreps"]:
        lines.append(f"  {irrep['name']:<{width}}  dim {irrep['dim']:>3}  type {irrep['type']}")
    if info["character_table"] is None:
        entries = len(info["irreps"]) * len(info["classes"])
        lines += ["", f"character table omitted: {len(info['irreps'])} irreps × {len(info['classes'])} classes = "
                      f"{entries:,} entries, more than the {MAX_CHARACTER_TABLE_ENTRIES:,} shown "
                      "(Group.character_table() in Python has it)"]
        return "\n".join(lines)
    lines += ["", "character table (columns: conjugacy classes):"]
    headers = [c["representative"] for c in info["classes"]]
    cells = [[_format_value(v) for v in row] for row in info["character_table"]]
    col_width = [max(len(h), *(len(row[j]) for row in cells), len(str(c["size"]))) for j, (h, c) in enumerate(zip(headers, info["classes"]))]
    label = "class"
    name_width = max(width, len(label), len("size"), len("order"))

    def row(name: str, values: list[str]) -> str:
        return f"  {name:<{name_width}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(values, col_width))

    lines.append(row(label, headers))
    lines.append(row("size", [str(c["size"]) for c in info["classes"]]))
    lines.append(row("order", [str(c["element_order"]) for c in info["classes"]]))
    lines.append("  " + "-" * (name_width + sum(w + 2 for w in col_width)))
    for irrep, values in zip(info["irreps"], cells):
        lines.append(row(irrep["name"], values))
    return "\n".join(lines)


def groups_info(spec: str, as_json: bool) -> str:
    import json

    info = describe_group(resolve_group(spec))
    return json.dumps(info, indent=1) if as_json else format_group(info)
