"""The finite group object: a multiplication table plus everything derived from it.

Conventions (used throughout groupcc):
- elements are the integers ``0..order-1`` and the identity is ``0``;
- ``mult_table[a, b]`` is the index of ``a·b``;
- for permutation groups ``a·b`` means "apply ``b`` first, then ``a``", i.e. ``(a·b)(i) = a(b(i))``.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from .cayley import spanning_tree
from .errors import GroupError

if TYPE_CHECKING:  # pragma: no cover
    from .irreps import Irrep


class Group:
    """A finite group given by its multiplication table.

    Build one with the constructors in :mod:`groupcc.groups.constructors` (``cyclic``, ``dihedral``,
    ``symmetric``, ``alternating``, ``direct_product``, ``from_cayley_table``, ``from_permutations``,
    ``get_group``) rather than directly: they validate the table and attach the closed-form irreps.

    Args:
        name: a readable name such as ``"S5"``.
        mult_table: ``[n, n]`` integer array; ``mult_table[a, b]`` is the index of ``a·b``. Trusted
            (no validation here).
        labels: readable label per element.
        irrep_builder: function ``Group -> list[Irrep]`` giving the closed-form irreps; ``None`` means
            the generic algorithm of :func:`groupcc.groups.irreps.generic_irreps`.
        permutations: for permutation groups, ``[n, degree]`` array of images (0-based), row ``g`` is
            the permutation of element ``g``.
    """

    def __init__(
        self,
        name: str,
        mult_table: np.ndarray,
        labels: Sequence[str],
        irrep_builder: Callable[["Group"], list["Irrep"]] | None = None,
        permutations: np.ndarray | None = None,
    ):
        table = np.ascontiguousarray(mult_table, dtype=np.int64)
        if table.ndim != 2 or table.shape[0] != table.shape[1] or table.shape[0] == 0:
            raise GroupError(f"multiplication table must be a non-empty square matrix, got shape {table.shape}")
        if len(labels) != table.shape[0]:
            raise GroupError(f"{name}: {len(labels)} labels for {table.shape[0]} elements")
        self.name = name
        self.mult_table = table
        self.mult_table.setflags(write=False)
        self.labels = list(labels)
        self.permutations = permutations
        self._irrep_builder = irrep_builder
        self._irreps: list[Irrep] | None = None

    # ----------------------------------------------------------------- basic structure
    @property
    def order(self) -> int:
        return self.mult_table.shape[0]

    def __len__(self) -> int:
        return self.order

    def __repr__(self) -> str:
        return f"Group({self.name!r}, order={self.order})"

    @cached_property
    def inverse(self) -> np.ndarray:
        """``inverse[g]`` is the index of ``g⁻¹`` (the column where row ``g`` holds the identity)."""
        rows, cols = np.nonzero(self.mult_table == 0)
        inv = np.empty(self.order, dtype=np.int64)
        inv[rows] = cols
        inv.setflags(write=False)
        return inv

    def mul(self, a, b):
        """``a·b`` for element indices or integer arrays of them (broadcasting)."""
        return self.mult_table[a, b]

    def power(self, g: int, k: int) -> int:
        """``g^k`` for any integer ``k`` (negative powers use the inverse)."""
        base = int(g) if k >= 0 else int(self.inverse[g])
        result = 0
        for _ in range(abs(k) % int(self.element_orders[base])):
            result = int(self.mult_table[result, base])
        return result

    def index_of(self, label: str) -> int:
        """Element index of a label as printed by ``labels`` (e.g. ``"s r^2"``, ``"(1 2 3)"``)."""
        try:
            return self._label_index[label]
        except KeyError:
            raise GroupError(f"{self.name} has no element labelled {label!r}") from None

    @cached_property
    def _label_index(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    @cached_property
    def generators(self) -> np.ndarray:
        """A small generating set (empty for the trivial group): the first element not yet reached, repeatedly,
        with a breadth-first search of the Cayley graph (``O(|G|)`` per generator) after each."""
        rows: list[np.ndarray] = []
        chosen: list[int] = []
        reached = np.zeros(self.order, dtype=bool)
        reached[0] = True
        while not reached.all():
            chosen.append(int(np.flatnonzero(~reached)[0]))
            rows.append(self.mult_table[chosen[-1]])
            reached, _ = spanning_tree(rows, self.order)
        return np.array(chosen, dtype=np.int64)

    @cached_property
    def is_abelian(self) -> bool:
        """Every generator commutes with every element (``s·g = g·s``): ``O(|G|·|S|)``, not a transposed copy of the
        table (2 s for C10000)."""
        return all(np.array_equal(self.mult_table[s], self.mult_table[:, s]) for s in self.generators)

    @cached_property
    def squares(self) -> np.ndarray:
        """``squares[g] = g·g`` (for Frobenius–Schur indicators)."""
        elements = np.arange(self.order)
        squares = self.mult_table[elements, elements]
        squares.setflags(write=False)
        return squares

    @cached_property
    def element_orders(self) -> np.ndarray:
        """``element_orders[g]`` is the least ``k >= 1`` with ``g^k = e``.

        One walk ``g, g², ..., g^m = e`` per cyclic subgroup not yet covered gives every power at once:
        ``ord(g^k) = m / gcd(k, m)``. C10000 takes one walk of 10⁴ steps instead of 10⁴ passes over all elements."""
        orders = np.zeros(self.order, dtype=np.int64)
        orders[0] = 1
        table = self.mult_table
        for g in range(1, self.order):
            if orders[g]:
                continue
            powers = [g]
            while powers[-1] != 0:
                powers.append(int(table[powers[-1], g]))
            m = len(powers)  # powers[k - 1] = g^k, and g^m = e
            orders[powers] = m // np.gcd(np.arange(1, m + 1), m)
        orders.setflags(write=False)
        return orders

    # ----------------------------------------------------------------- conjugacy
    def conjugate(self, g, h):
        """``g·h·g⁻¹`` (broadcasting over index arrays)."""
        return self.mult_table[self.mult_table[g, h], self.inverse[g]]

    def conjugacy_classes(self) -> list[np.ndarray]:
        """The conjugacy classes as sorted index arrays, ordered by their smallest element (identity first)."""
        return [members.copy() for members in self._classes]

    @cached_property
    def _classes(self) -> list[np.ndarray]:
        if self.is_abelian:  # g·h·g⁻¹ = h: every element is its own class (C10000 needs no 10⁸ conjugations)
            return [np.array([h]) for h in range(self.order)]
        seen = np.zeros(self.order, dtype=bool)
        classes = []
        everyone = np.arange(self.order)
        for h in range(self.order):
            if not seen[h]:
                members = np.unique(self.conjugate(everyone, h))
                seen[members] = True
                classes.append(members)
        return classes

    @cached_property
    def class_of(self) -> np.ndarray:
        """``class_of[g]`` is the index (into ``conjugacy_classes()``) of the class of ``g``."""
        class_of = np.empty(self.order, dtype=np.int64)
        for index, members in enumerate(self._classes):
            class_of[members] = index
        return class_of

    @cached_property
    def num_real_classes(self) -> int:
        """Number of classes once each class is merged with its inverse class.

        This is the number of real irreducible representations (over the reals, a complex irrep and its
        conjugate merge into one irrep of type C)."""
        pairs = {tuple(sorted((c, int(self.class_of[self.inverse[members[0]]])))) for c, members in enumerate(self._classes)}
        return len(pairs)

    # ----------------------------------------------------------------- subgroups and cosets
    def subgroup_generated(self, elements: Sequence[int] | np.ndarray) -> np.ndarray:
        """Sorted indices of the subgroup generated by ``elements`` (the trivial subgroup for none)."""
        gens = self._check_elements(elements)
        members = np.zeros(self.order, dtype=bool)
        members[0] = True
        frontier = np.array([0])
        while frontier.size:
            products = np.unique(self.mult_table[np.ix_(frontier, gens)]) if gens.size else np.array([], int)
            new = products[~members[products]]
            members[new] = True
            frontier = new
        return np.flatnonzero(members)

    def is_subgroup(self, elements: Sequence[int] | np.ndarray) -> bool:
        """True when ``elements`` contains the identity and is closed under products and inverses."""
        subset = np.unique(self._check_elements(elements))
        if subset.size == 0 or subset[0] != 0:
            return False
        inside = np.zeros(self.order, dtype=bool)
        inside[subset] = True
        return bool(inside[self.mult_table[np.ix_(subset, subset)]].all() and inside[self.inverse[subset]].all())

    def left_cosets(self, subgroup: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        """The left cosets ``gH`` of a subgroup, each sorted, ordered by smallest element (``H`` first)."""
        return self._cosets(subgroup, left=True)

    def right_cosets(self, subgroup: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        """The right cosets ``Hg`` of a subgroup, each sorted, ordered by smallest element (``H`` first)."""
        return self._cosets(subgroup, left=False)

    def _cosets(self, subgroup, left: bool) -> list[np.ndarray]:
        members = np.unique(self._check_elements(subgroup))
        if not self.is_subgroup(members):
            raise GroupError(f"elements {members.tolist()} do not form a subgroup of {self.name}")
        seen = np.zeros(self.order, dtype=bool)
        cosets = []
        for g in range(self.order):
            if seen[g]:
                continue
            coset = np.sort(self.mult_table[g, members] if left else self.mult_table[members, g])
            seen[coset] = True
            cosets.append(coset)
        return cosets

    def _check_elements(self, elements) -> np.ndarray:
        arr = np.asarray(elements, dtype=np.int64).reshape(-1)
        bad = arr[(arr < 0) | (arr >= self.order)]
        if bad.size:
            raise GroupError(f"element {int(bad[0])} is not in {self.name} (expected 0..{self.order - 1})")
        return arr

    # ----------------------------------------------------------------- representations
    def irreps(self) -> list["Irrep"]:
        """Every real irreducible representation, trivial first, then by dimension (computed once)."""
        if self._irreps is None:
            from .irreps import generic_irreps, sort_irreps

            builder = self._irrep_builder or generic_irreps
            self._irreps = sort_irreps(builder(self))
        return list(self._irreps)

    def character_table(self) -> np.ndarray:
        """``[num_irreps, num_classes]`` characters, rows in ``irreps()`` order, columns in class order."""
        reps = [int(members[0]) for members in self._classes]
        return np.stack([irrep.character[reps] for irrep in self.irreps()])
