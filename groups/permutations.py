"""Permutation helpers: closure under generators, multiplication tables and cycle notation.

A permutation of degree ``m`` is an integer array ``p`` of its images, 0-based: ``p[i]`` is the image of ``i``.
The product follows the groupcc convention ``(a·b)(i) = a(b(i))`` ("apply ``b`` first"), so
``compose(a, b) == a[b]``.
"""

from __future__ import annotations

import itertools

import numpy as np

from .cayley import spanning_tree
from .errors import GroupError
from .limits import MAX_ORDER

_KEY_WEIGHTS_SEED = 20231


def check_permutations(generators, degree: int | None = None) -> np.ndarray:
    """Validate generators as a ``[k, m]`` array of permutations of ``0..m-1``."""
    try:
        gens = np.asarray(generators, dtype=np.int64)
    except (TypeError, ValueError):
        raise GroupError(f"permutation generators must be lists of integers, got {generators!r}") from None
    if gens.ndim == 1:
        gens = gens[None, :]
    if gens.ndim != 2 or (gens.size == 0 and degree is None):
        raise GroupError(f"expected a list of permutations (each a list of images 0..m-1), got shape {gens.shape}")
    if degree is not None and gens.shape[1] != degree:
        raise GroupError(f"permutations must have degree {degree}, got {gens.shape[1]}")
    for row, perm in enumerate(gens):
        if not np.array_equal(np.sort(perm), np.arange(gens.shape[1])):
            raise GroupError(f"generator {row} = {perm.tolist()} is not a permutation of 0..{gens.shape[1] - 1}")
    return gens


def permutation_keys(perms: np.ndarray) -> np.ndarray:
    """A 64-bit hash per row; distinct permutations get distinct keys with overwhelming probability
    (callers check uniqueness where it matters)."""
    weights = np.random.default_rng(_KEY_WEIGHTS_SEED).integers(1, 2**63, size=perms.shape[-1], dtype=np.uint64)
    with np.errstate(over="ignore"):
        return (perms.astype(np.uint64) * weights).sum(axis=-1, dtype=np.uint64)


def permutation_closure(generators: np.ndarray, max_order: int = MAX_ORDER) -> np.ndarray:
    """All products of the generators, as a ``[n, m]`` array sorted lexicographically (identity first)."""
    degree = generators.shape[1]
    identity = np.arange(degree)[None, :]
    elements = [identity]
    seen = set(permutation_keys(identity).tolist())
    frontier = identity
    total = 1
    while frontier.shape[0]:
        candidates = generators[:, frontier].reshape(-1, degree)  # gen ∘ p for every gen, p
        keys = permutation_keys(candidates)
        _, first = np.unique(keys, return_index=True)
        fresh = [i for i in first if keys[i].item() not in seen]
        frontier = candidates[fresh]
        seen.update(keys[fresh].tolist())
        elements.append(frontier)
        total += len(fresh)
        if total > max_order:
            raise GroupError(f"the permutations generate a group of order > {max_order}, larger than groupcc supports")
    perms = np.concatenate(elements)
    order = np.lexsort(perms.T[::-1])
    return perms[order]


def permutation_mult_table(perms: np.ndarray) -> np.ndarray:
    """``table[a, b]`` = index of ``perms[a] ∘ perms[b]`` (apply ``b`` first), for a set of permutations
    closed under composition.

    Only the rows of a few generators are found by hashing products; every other row follows from
    ``table[s·g, h] = table[s, table[g, h]]`` along a breadth-first spanning tree of the Cayley graph,
    which is one gather per row instead of ``|G|`` hash look-ups.
    """
    n = perms.shape[0]
    keys = permutation_keys(perms)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    if np.any(sorted_keys[1:] == sorted_keys[:-1]):  # pragma: no cover - a 2^-64 event
        raise GroupError("permutation hash collision; please report this")

    def left_row(g: int) -> np.ndarray:
        product_keys = permutation_keys(perms[g][perms])  # perms[g] ∘ perms[h] for every h
        slot = np.minimum(np.searchsorted(sorted_keys, product_keys), n - 1)
        if not np.array_equal(sorted_keys[slot], product_keys):
            raise GroupError("the permutations are not closed under composition")
        return order[slot]

    generator_rows: list[np.ndarray] = []
    reached = np.zeros(n, dtype=bool)
    reached[0] = True
    steps: list = []  # the trivial group needs no generators
    while not reached.all():  # add generators until they generate everything
        generator_rows.append(left_row(int(np.flatnonzero(~reached)[0])))
        reached, steps = spanning_tree(generator_rows, n)
    table = np.empty((n, n), dtype=np.int64)
    table[0] = np.arange(n)
    for s, targets, sources in steps:
        table[targets] = generator_rows[s][table[sources]]
    return table


def all_permutations(degree: int, even_only: bool = False) -> np.ndarray:
    """Every permutation of ``0..degree-1`` in lexicographic order (identity first); optionally only the even ones."""
    perms = np.array(list(itertools.permutations(range(degree))), dtype=np.int64).reshape(-1, degree)
    if even_only:
        perms = perms[permutation_signs(perms) == 1]
    return perms


def permutation_signs(perms: np.ndarray) -> np.ndarray:
    """Sign (+1 / -1) of each row, from the parity of its number of inversions."""
    m = perms.shape[1]
    inversions = np.zeros(perms.shape[0], dtype=np.int64)
    for i in range(m):
        inversions += (perms[:, i:i + 1] > perms[:, i + 1:]).sum(axis=1)
    return np.where(inversions % 2 == 0, 1, -1)


def cycle_notation(perm: np.ndarray) -> str:
    """Cycle notation with points numbered from 1, fixed points omitted; the identity is ``()``."""
    seen = np.zeros(len(perm), dtype=bool)
    cycles = []
    for start in range(len(perm)):
        if seen[start] or perm[start] == start:
            seen[start] = True
            continue
        cycle, point = [], start
        while not seen[point]:
            seen[point] = True
            cycle.append(str(point + 1))
            point = int(perm[point])
        cycles.append("(" + " ".join(cycle) + ")")
    return "".join(cycles) or "()"
