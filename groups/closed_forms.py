"""Closed-form real irreps: cyclic, dihedral, symmetric (Young's orthogonal form), alternating
(restriction from S_n) and direct products (Kronecker products with the type rules).

Each builder returns a complete list of irreps; ``Group.irreps()`` sorts it. The generic algorithm in
:mod:`groupcc.groups.irreps` is an independent check of all of them (see the tests).
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import TYPE_CHECKING

import numpy as np

from .cayley import extend_from_generators
from .permutations import permutation_keys
from .irreps import Irrep, check_complete, decompose, dedupe_by_character, _character_key

if TYPE_CHECKING:  # pragma: no cover
    from .group import Group


def _rotation(theta: np.ndarray) -> np.ndarray:
    """``[len(theta), 2, 2]`` rotation matrices ``R(θ)``."""
    c, s = np.cos(theta), np.sin(theta)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def _one_dim(group: "Group", name: str, values: np.ndarray) -> Irrep:
    return Irrep(group, name, np.asarray(values, dtype=float).reshape(-1, 1, 1))


# --------------------------------------------------------------------------- cyclic
def _angles(n: int, j: int) -> np.ndarray:
    """``θ_k = 2π (j·k mod n) / n`` for ``k = 0..n-1`` (reduced mod ``n`` first: exact for every ``k``)."""
    return 2 * np.pi * ((j * np.arange(n)) % n) / n


def _cyclic_rotations(n: int, j: int) -> np.ndarray:
    return _rotation(_angles(n, j))


def _cyclic_character(n: int, j: int) -> np.ndarray:
    return 2 * np.cos(_angles(n, j))


def cyclic_irreps(group: "Group") -> list[Irrep]:
    """``C_n`` (element ``k`` = ``r^k``): trivial; ``sign`` ``r^k ↦ (-1)^k`` when ``n`` is even;
    ``rot{j}``: ``r^k ↦ R(2πjk/n)`` for ``0 < j < n/2`` (type C), with character ``2cos(2πjk/n)``.

    The 2-dim matrices are made only when an irrep's ``matrices`` are used: ``C_n`` has about ``n/2`` of them,
    ``16·n²`` bytes in all (1.6 GB for ``C10000``), and characters need none."""
    n = group.order
    k = np.arange(n)
    irreps = [_one_dim(group, "trivial", np.ones(n))]
    if n % 2 == 0:
        irreps.append(_one_dim(group, "sign", (-1.0) ** k))
    irreps += [Irrep(group, f"rot{j}", build=partial(_cyclic_rotations, n, j), dim=2,
                     character=partial(_cyclic_character, n, j)) for j in range(1, (n + 1) // 2)]
    return irreps


# --------------------------------------------------------------------------- dihedral
_REFLECTION = np.diag([1.0, -1.0])


def _dihedral_matrices(n: int, j: int) -> np.ndarray:
    rotations = _cyclic_rotations(n, j)
    return np.concatenate([rotations, _REFLECTION @ rotations])


def _dihedral_character(n: int, j: int) -> np.ndarray:
    """``2cos(2πjk/n)`` on ``r^k`` and ``tr(diag(1,-1) R(θ)) = 0`` on every reflection ``s r^k``."""
    return np.concatenate([_cyclic_character(n, j), np.zeros(n)])


def dihedral_irreps(group: "Group") -> list[Irrep]:
    """``D_n`` of order ``2n`` (element ``k`` = ``r^k``, element ``n + k`` = ``s r^k``):
    trivial; ``sign`` (``r ↦ 1, s ↦ -1``); for even ``n`` also ``alt`` (``r ↦ -1, s ↦ 1``) and
    ``alt-sign`` (``r ↦ -1, s ↦ -1``); and ``rot{j}``: ``r^k ↦ R(2πjk/n)``, ``s ↦ diag(1, -1)``
    for ``0 < j < n/2`` (type R). As for ``C_n``, the 2-dim matrices are made on first use."""
    n = group.order // 2
    k = np.arange(n)
    ones, flip = np.ones(n), -np.ones(n)
    alternating = (-1.0) ** k
    irreps = [
        _one_dim(group, "trivial", np.concatenate([ones, ones])),
        _one_dim(group, "sign", np.concatenate([ones, flip])),
    ]
    if n % 2 == 0:
        irreps.append(_one_dim(group, "alt", np.concatenate([alternating, alternating])))
        irreps.append(_one_dim(group, "alt-sign", np.concatenate([alternating, -alternating])))
    irreps += [Irrep(group, f"rot{j}", build=partial(_dihedral_matrices, n, j), dim=2,
                     character=partial(_dihedral_character, n, j)) for j in range(1, (n + 1) // 2)]
    return irreps


# --------------------------------------------------------------------------- symmetric: Young's orthogonal form
def partitions(n: int) -> list[tuple[int, ...]]:
    """Partitions of ``n`` in reverse lexicographic order (``(n,)`` first, ``(1,)*n`` last)."""
    def parts(remaining: int, largest: int):
        if remaining == 0:
            yield ()
            return
        for first in range(min(remaining, largest), 0, -1):
            for rest in parts(remaining - first, first):
                yield (first,) + rest
    return list(parts(n, n))


def transpose_partition(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sum(1 for row in shape if row > col) for col in range(shape[0])) if shape else ()


@lru_cache(maxsize=None)
def standard_tableaux(shape: tuple[int, ...]) -> tuple[tuple[tuple[int, int], ...], ...]:
    """Standard Young tableaux of ``shape``; each is a tuple giving the ``(row, col)`` cell of entries
    ``1..n`` in order. Built by placing ``n`` in each removable corner of ``shape``."""
    n = sum(shape)
    if n == 0:
        return ((),)
    tableaux = []
    for row, length in enumerate(shape):
        if row + 1 == len(shape) or shape[row + 1] < length:  # (row, length-1) is a removable corner
            smaller = tuple(r - 1 if i == row else r for i, r in enumerate(shape))
            smaller = tuple(r for r in smaller if r > 0)
            for tableau in standard_tableaux(smaller):
                tableaux.append(tableau + ((row, length - 1),))
    return tuple(sorted(tableaux))


def young_generators(shape: tuple[int, ...]) -> np.ndarray:
    """Young's orthogonal form of the adjacent transpositions: ``[n-1, d, d]``, entry ``k-1`` is ``ρ(s_k)``,
    ``s_k = (k, k+1)``. With ``T'`` = ``T`` with ``k, k+1`` swapped and axial distance
    ``r = c_T(k+1) - c_T(k)`` (content = column − row): ``ρ(s_k) e_T = e_T`` (same row), ``-e_T`` (same
    column), else ``(1/r) e_T + sqrt(1 - 1/r²) e_{T'}``."""
    tableaux = standard_tableaux(shape)
    index = {t: i for i, t in enumerate(tableaux)}
    n, d = sum(shape), len(tableaux)
    gens = np.zeros((max(n - 1, 0), d, d))
    for k in range(n - 1):  # swaps entries k+1 and k+2 (0-based positions k, k+1)
        for col, tableau in enumerate(tableaux):
            (row_a, col_a), (row_b, col_b) = tableau[k], tableau[k + 1]
            if row_a == row_b:
                gens[k, col, col] = 1.0
            elif col_a == col_b:
                gens[k, col, col] = -1.0
            else:
                r = (col_b - row_b) - (col_a - row_a)
                swapped = tableau[:k] + (tableau[k + 1], tableau[k]) + tableau[k + 2:]
                gens[k, col, col] = 1.0 / r
                gens[k, index[swapped], col] = np.sqrt(1.0 - 1.0 / r**2)
    return gens


def _adjacent_transposition_elements(group: "Group") -> list[int]:
    """Indices of ``s_k = (k, k+1)``, ``k = 1..n-1``, in a symmetric group built by :func:`symmetric`."""
    degree = group.permutations.shape[1]
    rows = []
    for k in range(degree - 1):
        perm = np.arange(degree)
        perm[[k, k + 1]] = perm[[k + 1, k]]
        rows.append(int(np.flatnonzero((group.permutations == perm).all(axis=1))[0]))
    return rows


def _shape_name(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def symmetric_irreps(group: "Group") -> list[Irrep]:
    """``S_n``: one irrep per partition ``λ`` of ``n`` (named like ``[4,1]``), all of type R."""
    degree = group.permutations.shape[1]
    generators = _adjacent_transposition_elements(group)
    irreps = []
    for shape in partitions(degree):
        mats = extend_from_generators(group.mult_table, generators, young_generators(shape))
        irreps.append(Irrep(group, _shape_name(shape), mats))
    return irreps


# --------------------------------------------------------------------------- alternating
def alternating_irreps(group: "Group", parent: "Group") -> list[Irrep]:
    """``A_n`` from ``S_n`` (``parent``): ``λ`` and its transpose restrict to the same irrep; a
    self-transposed ``λ`` splits into two (``[λ]+``, ``[λ]-``) when the split characters are real, and
    otherwise stays one irrep of type C (found by :func:`groupcc.groups.irreps.decompose`)."""
    in_parent = np.flatnonzero(np.isin(permutation_keys(parent.permutations), permutation_keys(group.permutations)))
    parent_irreps = {irrep.name: irrep for irrep in parent.irreps()}
    irreps = []
    degree = parent.permutations.shape[1]
    for shape in partitions(degree):
        conjugate = transpose_partition(shape)
        if shape < conjugate:
            continue  # covered by its transpose
        restricted = parent_irreps[_shape_name(shape)].matrices[in_parent]
        name = _shape_name(shape)
        if shape != conjugate:
            irreps.append(Irrep(group, name, restricted))
            continue
        pieces = dedupe_by_character([Irrep(group, "", piece) for piece in decompose(group, restricted)])
        pieces.sort(key=lambda irrep: _character_key(irrep.character))
        suffixes = ["+", "-"] if len(pieces) == 2 else [""]
        for irrep, suffix in zip(pieces, suffixes):
            irrep.name = name + suffix
            irreps.append(irrep)
    check_complete(group, irreps)
    return irreps


# --------------------------------------------------------------------------- direct products
def product_irreps(group: "Group", left: "Group", right: "Group") -> list[Irrep]:
    """Irreps of ``left × right`` (element ``(a, b)`` has index ``a·|right| + b``) from Kronecker products
    ``ρ ⊗ σ``. The product is irreducible, of the type of ``σ``, when ``ρ`` has type R (and vice versa);
    when neither has type R it is split with :func:`groupcc.groups.irreps.decompose` (C ⊗ C is a sum of two
    type-C irreps, H ⊗ H of four copies of one type-R irrep, C ⊗ H of two copies of one type-C irrep)."""
    irreps = []
    for rho in left.irreps():
        for sigma in right.irreps():
            d = rho.dim * sigma.dim
            mats = np.einsum("aij,bkl->abikjl", rho.matrices, sigma.matrices).reshape(group.order, d, d)
            name = f"{rho.name}⊗{sigma.name}"
            if rho.type == "R" or sigma.type == "R":
                irreps.append(Irrep(group, name, mats))
                continue
            pieces = dedupe_by_character([Irrep(group, "", piece) for piece in decompose(group, mats)])
            pieces.sort(key=lambda irrep: _character_key(irrep.character))
            for i, piece in enumerate(pieces):
                piece.name = f"{name}:{i}" if len(pieces) > 1 else name
                irreps.append(piece)
    irreps = dedupe_by_character(irreps)
    check_complete(group, irreps)
    return irreps
