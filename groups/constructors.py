"""Constructors for finite groups, and ``get_group`` for names such as ``C7``, ``D6``, ``S5``, ``A5``, ``S3xC2``."""

from __future__ import annotations

import itertools
import json
import math
import re
from functools import partial
from pathlib import Path

import numpy as np

from . import closed_forms
from .errors import GroupError
from .group import Group
from .limits import MAX_ORDER, check_order, factorial_order, order_text
from .permutations import (
    all_permutations,
    check_permutations,
    cycle_notation,
    permutation_closure,
    permutation_mult_table,
)


def _check_size(name: str, n, minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < minimum:
        raise GroupError(f"{name}: n must be an integer >= {minimum}, got {n!r}")
    if n > _MAX_DEGREE:  # refused before f"{n}" (Python will not print an integer of over 4300 digits)
        raise GroupError(f"{name}: n = {order_text(int(n))} is far above groupcc's maximum order of {MAX_ORDER}")
    return int(n)


#: Degrees above this are refused by size alone, before any factorial or label is formed.
_MAX_DEGREE = 10**15


def _power_label(base: str, k: int) -> str:
    return base if k == 1 else f"{base}^{k}"


def cyclic(n: int) -> Group:
    """The cyclic group ``C_n``; element ``k`` is ``r^k``, ``a·b = a + b mod n``."""
    n = _check_size("C_n", n)
    check_order(f"C{n}", n)
    table = np.empty((n, n), dtype=np.int64)
    _fill_sums(table, 1, n)
    labels = ["e"] + [_power_label("r", i) for i in range(1, n)]
    return Group(f"C{n}", table, labels, closed_forms.cyclic_irreps)


def _fill_sums(out: np.ndarray, sign: int, n: int, offset: int = 0) -> None:
    """``out[a, b] = (sign·a + b) mod n + offset`` in place, ``sign = ±1``. Row ``a`` is a window of the periodic
    sequence ``0..n-1, 0..n-1`` starting at ``sign·a mod n``: one copy per row, no ``[n, n]`` temporaries (an
    outer sum and a remainder over C10000's 10⁸ entries took 3.5 s and twice the memory)."""
    periodic = np.concatenate([np.arange(n), np.arange(n)]) + offset
    for a in range(n):
        start = (sign * a) % n
        out[a] = periodic[start:start + n]


def dihedral(n: int) -> Group:
    """The dihedral group ``D_n`` of order ``2n`` (symmetries of a regular n-gon).

    Element ``k`` is the rotation ``r^k`` and element ``n + k`` is ``s r^k`` (rotate by ``r^k``, then
    reflect), ``0 <= k < n``, with ``s r = r⁻¹ s``. Hence
    ``(s^f r^a)(s^h r^b) = s^(f+h) r^((-1)^h a + b)``.
    """
    n = _check_size("D_n", n)
    check_order(f"D{n}", 2 * n)
    table = np.empty((2 * n, 2 * n), dtype=np.int64)
    for f in (0, 1):  # quadrant [f, h]: (s^f r^a)(s^h r^b) = s^(f+h) r^((-1)^h a + b), filled in place
        for h in (0, 1):
            _fill_sums(table[f * n:(f + 1) * n, h * n:(h + 1) * n], -1 if h else 1, n, offset=((f + h) % 2) * n)
    labels = ["e"] + [_power_label("r", k) for k in range(1, n)] + ["s"] + [f"s {_power_label('r', k)}" for k in range(1, n)]
    return Group(f"D{n}", table, labels, closed_forms.dihedral_irreps)


def _permutation_group(name: str, perms: np.ndarray, irrep_builder=None) -> Group:
    labels = [cycle_notation(p) for p in perms]
    return Group(name, permutation_mult_table(perms), labels, irrep_builder, permutations=perms)


def symmetric(n: int) -> Group:
    """The symmetric group ``S_n`` of all permutations of ``n`` points, in lexicographic order of the
    image arrays (identity first). Labels are cycle notation with points ``1..n``; ``a·b`` applies ``b``
    first. Irreps by Young's orthogonal form."""
    n = _check_size("S_n", n)
    factorial_order(f"S{n}", n)
    return _permutation_group(f"S{n}", all_permutations(n), closed_forms.symmetric_irreps)


def alternating(n: int) -> Group:
    """The alternating group ``A_n`` of even permutations (lexicographic order, identity first).
    Irreps by restriction from ``S_n``."""
    n = _check_size("A_n", n)
    factorial_order(f"A{n}", n, divisor=2)
    parent = symmetric(n)
    return _permutation_group(f"A{n}", all_permutations(n, even_only=True), partial(closed_forms.alternating_irreps, parent=parent))


def direct_product(*groups: Group) -> Group:
    """``G_1 × ... × G_k``. Element ``(g_1, ..., g_k)`` has the mixed-radix index
    ``(((g_1)|G_2| + g_2)|G_3| + ...)``, so the identity is 0. Labels are tuples such as ``(r, s)``.
    Irreps are Kronecker products of the factors' irreps."""
    if len(groups) == 0:
        raise GroupError("direct_product needs at least one group")
    if len(groups) == 1:
        return groups[0]
    for g in groups:
        if not isinstance(g, Group):
            raise GroupError(f"direct_product takes Group objects, got {g!r}")
    left = direct_product(*groups[:-1])
    right = groups[-1]
    name = "x".join(g.name for g in groups)
    check_order(name, left.order * right.order)
    table = (left.mult_table[:, None, :, None] * right.order + right.mult_table[None, :, None, :]).reshape(
        left.order * right.order, left.order * right.order
    )
    labels = ["(" + ", ".join(parts) + ")" for parts in itertools.product(*(g.labels for g in groups))]
    return Group(name, table, labels, partial(closed_forms.product_irreps, left=left, right=right))


def from_permutations(generators, name: str | None = None) -> Group:
    """The group generated by permutations (each a list of 0-based images ``p[i]``), elements in
    lexicographic order (identity first), labels in cycle notation. Irreps by the generic algorithm."""
    gens = check_permutations(generators)
    perms = permutation_closure(gens)
    label = name or "<" + ", ".join(cycle_notation(g) for g in gens) + ">"
    return _permutation_group(label, perms)


def from_cayley_table(table, name: str = "G", labels=None) -> Group:
    """A group from its Cayley table ``table[a, b] = a·b`` (identity must be element 0).

    Checks, in order, and says which fails: square integer table, closure (entries in ``0..n-1``),
    identity (element 0 is a two-sided identity), inverses / cancellation (every row and column is a
    permutation: a Latin square), associativity. Associativity is checked by Light's test on a generating
    set: if ``(x·b)·y = x·(b·y)`` for all ``x, y`` and every ``b`` in a set ``S``, the same holds for all
    products of elements of ``S``; so checking a generating set (``O(n² |S|)``) proves it for all ``b``.
    """
    arr = _as_integer_table(table)
    n = arr.shape[0]
    check_order(name, n)
    if arr.min() < 0 or arr.max() >= n:
        bad = np.argwhere((arr < 0) | (arr >= n))[0]
        raise GroupError(f"not closed: table[{bad[0]}, {bad[1]}] = {arr[tuple(bad)]} is not an element 0..{n - 1}")
    identity_rows = np.flatnonzero((arr == np.arange(n)).all(axis=1) & (arr.T == np.arange(n)).all(axis=1))
    if 0 not in identity_rows:
        where = f"; element {identity_rows[0]} is the identity: reorder the table so that it comes first" if identity_rows.size else ""
        raise GroupError(f"no identity: element 0 is not a two-sided identity (row 0 and column 0 must be 0..{n - 1}){where}")
    full = np.arange(n)
    for axis, what in ((1, "row"), (0, "column")):
        ok = (np.sort(arr, axis=axis) == (full[None, :] if axis == 1 else full[:, None])).all(axis=axis)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise GroupError(f"no inverses: {what} {i} repeats an element (a group table is a Latin square)")
    failure = _associativity_failure(arr)
    if failure is not None:
        a, b, c = failure
        raise GroupError(f"not associative: ({a}·{b})·{c} = {arr[arr[a, b], c]} but {a}·({b}·{c}) = {arr[a, arr[b, c]]}")
    if labels is None:
        labels = [f"g{i}" for i in range(n)]
    return Group(name, arr, [str(label) for label in labels])


def _as_integer_table(table) -> np.ndarray:
    try:
        arr = np.asarray(table)
    except (TypeError, ValueError):
        raise GroupError("a Cayley table must be a square matrix of integers") from None
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.size == 0:
        raise GroupError(f"a Cayley table must be a non-empty square matrix, got shape {arr.shape}")
    if arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr == np.round(arr)).all():
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise GroupError(f"a Cayley table must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _magma_generators(table: np.ndarray) -> list[int]:
    """A small set of elements whose closure under the table's product is everything (greedy)."""
    n = table.shape[0]
    inside = np.zeros(n, dtype=bool)
    inside[0] = True
    generators: list[int] = []
    while not inside.all():
        g = int(np.flatnonzero(~inside)[-1])
        generators.append(g)
        inside[g] = True
        while True:  # close under the product
            members = np.flatnonzero(inside)
            products = np.unique(table[np.ix_(members, members)])
            if inside[products].all():
                break
            inside[products] = True
    return generators


def _associativity_failure(table: np.ndarray) -> tuple[int, int, int] | None:
    """A triple ``(a, b, c)`` with ``(ab)c != a(bc)``, or None (Light's test, see ``from_cayley_table``)."""
    for b in _magma_generators(table):
        lhs = table[table[:, b]][:, :]  # (x·b)·y  as [x, y]
        rhs = table[:, table[b, :]]  # x·(b·y)  as [x, y]
        bad = np.argwhere(lhs != rhs)
        if bad.size:
            x, y = bad[0]
            return int(x), b, int(y)
    return None


_NAME_PART = re.compile(r"^([CDSAQ])(\d+)$")
#: Longer numbers in a name (n >= 10¹⁵ = ``_MAX_DEGREE``) are refused by their length, before ``int()``.
_MAX_NAME_DIGITS = 15


def get_group(name: str) -> Group:
    """A group from its name: ``C<n>`` cyclic, ``D<n>`` dihedral of order ``2n``, ``S<n>`` symmetric,
    ``A<n>`` alternating, ``Q8`` quaternion, and direct products joined by ``x`` (``S3xC2``).

    The order of the whole product is checked against the cap from the names alone, before any factor
    (and its multiplication table) is built."""
    if not isinstance(name, str) or not name.strip():
        raise GroupError(f"unknown group name {name!r}: expected e.g. C7, D6, S5, A5, Q8 or S3xC2")
    parts = [_parse_factor(part, name) for part in name.strip().split("x")]
    if len(parts) > 1:
        check_order(name.strip(), math.prod(_factor_order(family, n) for family, n in parts))
    return direct_product(*(_named_factor(family, n) for family, n in parts))


def _parse_factor(part: str, full_name: str) -> tuple[str, int]:
    match = _NAME_PART.match(part)
    if not match:
        raise GroupError(
            f"unknown group name {full_name!r}: expected C<n>, D<n>, S<n>, A<n> (n >= 1), Q8, or a product such as S3xC2"
        )
    family, digits = match.group(1), match.group(2)
    if len(digits.lstrip("0")) > _MAX_NAME_DIGITS:
        raise GroupError(f"bad group name {_shorten(full_name)}: n has {len(digits.lstrip('0'))} digits, "
                         f"far above groupcc's maximum order of {MAX_ORDER}")
    n = int(digits)
    if family == "Q" and n != 8:
        raise GroupError(f"unknown group name {full_name!r}: the only quaternion group available is Q8")
    if n < 1:
        raise GroupError(f"bad group name {full_name!r}: {family}{n} needs n >= 1")
    return family, n


def _shorten(text: str, limit: int = 40) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def _factor_order(family: str, n: int) -> int:
    """The order of a named factor, exactly, without building it (each factor is refused alone when too large)."""
    if family in "SA":
        return factorial_order(f"{family}{n}", n, divisor=2 if family == "A" else 1)
    order = {"C": n, "D": 2 * n, "Q": 8}[family]
    check_order(f"{family}{n}", order)
    return order


def _named_factor(family: str, n: int) -> Group:
    if family == "Q":
        return quaternion()
    return {"C": cyclic, "D": dihedral, "S": symmetric, "A": alternating}[family](n)


def quaternion() -> Group:
    """The quaternion group ``Q8 = {±1, ±i, ±j, ±k}`` from its Cayley table (elements in that order)."""
    units = ["1", "i", "j", "k", "-1", "-i", "-j", "-k"]
    mult = {("i", "i"): "-1", ("i", "j"): "k", ("i", "k"): "-j", ("j", "i"): "-k", ("j", "j"): "-1", ("j", "k"): "i",
            ("k", "i"): "j", ("k", "j"): "-i", ("k", "k"): "-1"}

    def times(a: str, b: str) -> str:
        sign = (a.startswith("-")) ^ (b.startswith("-"))
        a0, b0 = a.lstrip("-"), b.lstrip("-")
        if a0 == "1":
            out = b0
        elif b0 == "1":
            out = a0
        else:
            out = mult[(a0, b0)]
        if sign:
            out = out[1:] if out.startswith("-") else "-" + out
        return out

    table = [[units.index(times(a, b)) for b in units] for a in units]
    return from_cayley_table(table, name="Q8", labels=units)


def read_cayley_table(path) -> Group:
    """A group from a Cayley table file: ``.npy``, ``.json`` (a list of rows) or text (``.csv``/``.txt``,
    entries separated by commas or white space). The group is named after the file."""
    file = Path(path)
    if not file.is_file():
        raise GroupError(f"Cayley table file {str(file)!r} does not exist")
    try:
        if file.suffix == ".npy":
            table = np.load(file, allow_pickle=False)
        elif file.suffix == ".json":
            table = json.loads(file.read_text())
        else:
            rows = [line.replace(",", " ").split() for line in file.read_text().splitlines() if line.strip()]
            table = [[int(entry) for entry in row] for row in rows]
    except (ValueError, OSError) as err:
        raise GroupError(f"cannot read a Cayley table from {str(file)!r}: {err}") from None
    if isinstance(table, list) and len({len(row) if isinstance(row, list) else -1 for row in table}) > 1:
        raise GroupError(f"{str(file)!r}: rows of the Cayley table have different lengths")
    try:
        return from_cayley_table(table, name=file.stem)
    except GroupError as err:
        raise GroupError(f"{str(file)!r} is not a group table: {err}") from None
