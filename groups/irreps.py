"""Real irreducible representations: the ``Irrep`` object, decomposition of a representation into
irreducible pieces, and the generic algorithm that finds every real irrep of any finite group.

Over the reals an irrep has one of three types, read off its character ``χ``:

    ⟨χ, χ⟩ = (1/|G|) Σ_g χ(g)²  =  1 (type R), 2 (type C), 4 (type H)

and the Frobenius–Schur indicator ``ν = (1/|G|) Σ_g χ(g²)`` is 1, 0, -2 respectively (``ν`` of the real
character, i.e. the sum over the complex constituents). A real representation is irreducible exactly when
``(⟨χ, χ⟩, ν)`` is one of those three pairs; this is how the decomposition checks its pieces.
"""

from __future__ import annotations

import string
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

import numpy as np

from .cayley import extend_from_generators
from .errors import GroupError

if TYPE_CHECKING:  # pragma: no cover
    from .group import Group

TYPE_BY_NORM = {1: "R", 2: "C", 4: "H"}
_IRREDUCIBLE_NORM_AND_INDICATOR = {(1, 1), (2, 0), (4, -2)}
_DEFAULT_SEED = 0
_ATTEMPTS = 6


class Irrep:
    """A real irreducible representation of a finite group.

    Attributes:
        group: the group it represents.
        name: readable name, unique within the group (e.g. ``"[4,1]"``, ``"rot2"``, ``"trivial"``).
        matrices: ``[|G|, d, d]`` orthogonal matrices with ``matrices[g] @ matrices[h] == matrices[g·h]``.

    Closed forms may pass ``build`` (a function returning the matrices), ``dim`` and ``character`` instead of the
    matrices: the matrices are then made on first use. ``C10000`` has 5000 irreps whose matrices together take
    1.6 GB; its classes, types and character table need none of them.
    """

    def __init__(self, group: "Group", name: str, matrices: np.ndarray | None = None, *, build=None,
                 dim: int | None = None, character=None):
        if (matrices is None) == (build is None) or (build is not None and dim is None):
            raise GroupError(f"irrep {name!r}: give its matrices, or a function that builds them and their dimension")
        self.group = group
        self.name = name
        self._matrices = None if matrices is None else np.asarray(matrices)
        self._build = build
        self._dim = int(dim) if matrices is None else self._matrices.shape[1]
        self._character = character  # an array, a function returning one, or None (traces of the matrices)

    def __repr__(self) -> str:
        return f"Irrep(group={self.group!r}, name={self.name!r}, dim={self.dim})"

    @property
    def matrices(self) -> np.ndarray:
        if self._matrices is None:
            self._matrices = np.asarray(self._build(), dtype=float)
            self._build = None
        return self._matrices

    @property
    def dim(self) -> int:
        return self._dim

    @cached_property
    def character(self) -> np.ndarray:
        """``χ(g) = tr ρ(g)`` per element, ``[|G|]`` (from the closed form when one was given)."""
        if self._character is None:
            return np.trace(self.matrices, axis1=1, axis2=2)
        return np.asarray(self._character() if callable(self._character) else self._character, dtype=float)

    @cached_property
    def norm(self) -> int:
        """``⟨χ, χ⟩``: 1, 2 or 4 (the dimension of the commutant over the reals)."""
        return int(round(character_inner(self.character, self.character)))

    @property
    def type(self) -> str:
        """``"R"`` (real), ``"C"`` (complex type) or ``"H"`` (quaternionic type)."""
        return TYPE_BY_NORM.get(self.norm, "?")

    @cached_property
    def frobenius_schur(self) -> int:
        """``(1/|G|) Σ_g χ(g²)``: 1, 0, -2 for types R, C, H."""
        return frobenius_schur(self.group, self.character)

    @property
    def is_trivial(self) -> bool:
        return self.dim == 1 and bool(np.allclose(self.character, 1.0))

    def check(self, atol: float = 1e-8) -> None:
        """Raise :class:`GroupError` naming the first failed property: shape, orthogonality,
        homomorphism ``ρ(g)ρ(h) = ρ(gh)``, or irreducibility (type from ``⟨χ,χ⟩`` matching the
        Frobenius–Schur indicator)."""
        n, d = self.group.order, self.dim
        mats = self.matrices
        if mats.shape != (n, d, d):
            raise GroupError(f"irrep {self.name}: matrices have shape {mats.shape}, expected {(n, d, d)}")
        if not np.isfinite(mats).all():
            raise GroupError(f"irrep {self.name}: matrices contain NaN or infinity")
        gram = np.einsum("gji,gjk->gik", mats, mats)
        bad = np.abs(gram - np.eye(d)).max(axis=(1, 2)) > atol
        if bad.any():
            raise GroupError(f"irrep {self.name}: ρ({self.group.labels[int(np.argmax(bad))]}) is not orthogonal")
        traces = np.trace(mats, axis1=1, axis2=2)
        if np.abs(self.character - traces).max() > atol:  # a closed-form character must be the traces
            raise GroupError(f"irrep {self.name}: its character is not the trace of its matrices")
        table = self.group.mult_table
        side_by_side = mats.transpose(1, 0, 2)  # [j, h, k]: ρ(h) for every h as one d × |G|·d matrix
        flat = side_by_side.reshape(d, n * d)
        for g in range(n):  # ρ(g) ρ(h) == ρ(g·h) for all h at once: one matrix product per row of the table
            err = np.abs((mats[g] @ flat).reshape(d, n, d) - side_by_side[:, table[g]]).max()
            if err > atol:
                raise GroupError(f"irrep {self.name}: ρ(g)ρ(h) != ρ(gh) for g = {self.group.labels[g]} (error {err:.2e})")
        norm = character_inner(self.character, self.character)
        indicator = frobenius_schur(self.group, self.character)
        if (round(norm), round(indicator)) not in _IRREDUCIBLE_NORM_AND_INDICATOR or abs(norm - round(norm)) > 1e-6:
            raise GroupError(f"irrep {self.name}: not irreducible (⟨χ,χ⟩ = {norm:.4f}, Frobenius–Schur {indicator:.4f})")


# --------------------------------------------------------------------------- character arithmetic
def character_inner(chi_a: np.ndarray, chi_b: np.ndarray) -> float:
    """``(1/|G|) Σ_g χ_a(g) χ_b(g)`` for real characters (real characters satisfy ``χ(g⁻¹) = χ(g)``)."""
    return float(np.dot(chi_a, chi_b) / chi_a.shape[0])


def frobenius_schur(group: "Group", chi: np.ndarray) -> int:
    """Frobenius–Schur indicator ``(1/|G|) Σ_g χ(g²)``, rounded."""
    return int(round(float(chi[group.squares].sum()) / group.order))


def sort_irreps(irreps: list[Irrep]) -> list[Irrep]:
    """Trivial irrep first, then by dimension; the order within a dimension is kept."""
    return sorted(irreps, key=lambda irrep: (not irrep.is_trivial, irrep.dim))


def _character_key(chi: np.ndarray) -> tuple:
    """A deterministic, seed-independent ordering key for irreps of the same dimension."""
    return tuple(-np.round(chi, 6))


def dedupe_by_character(irreps: list[Irrep], atol: float = 1e-6) -> list[Irrep]:
    """Keep the first irrep of each character (isomorphic irreps have equal characters)."""
    kept: list[Irrep] = []
    for irrep in irreps:
        if not any(np.allclose(irrep.character, other.character, atol=atol) for other in kept):
            kept.append(irrep)
    return kept


def check_complete(group: "Group", irreps: list[Irrep]) -> None:
    """Raise unless the irreps are a complete set: ``Σ d²/⟨χ,χ⟩ = |G|`` and one irrep per real class."""
    total = sum(irrep.dim**2 / irrep.norm for irrep in irreps)
    if abs(total - group.order) > 1e-6 or len(irreps) != group.num_real_classes:
        raise GroupError(
            f"{group.name}: found {len(irreps)} irreps with Σ d²/⟨χ,χ⟩ = {total:g}; expected "
            f"{group.num_real_classes} irreps summing to {group.order}"
        )


# --------------------------------------------------------------------------- decomposition
def _eigenspaces(symmetric: np.ndarray, rel_tol: float = 1e-7) -> list[np.ndarray]:
    """Orthonormal bases ``[D, k]`` of the eigenspaces of a symmetric matrix, eigenvalues grouped by a
    relative tolerance."""
    values, vectors = np.linalg.eigh(symmetric)
    scale = max(float(np.abs(values).max()), 1e-300)
    cuts = np.flatnonzero(np.diff(values) > rel_tol * scale) + 1
    return [vectors[:, idx] for idx in np.split(np.arange(len(values)), cuts)]


def _is_irreducible(group: "Group", chi: np.ndarray) -> bool:
    norm = character_inner(chi, chi)
    if abs(norm - round(norm)) > 1e-6 or abs(chi[0] - round(chi[0])) > 1e-6:
        return False
    return (round(norm), frobenius_schur(group, chi)) in _IRREDUCIBLE_NORM_AND_INDICATOR


def decompose(group: "Group", matrices: np.ndarray, seed: int = _DEFAULT_SEED) -> list[np.ndarray]:
    """Split an orthogonal representation ``[|G|, D, D]`` into irreducible pieces ``[|G|, d, d]``.

    Averages a random symmetric matrix ``X`` over the group, ``P = (1/|G|) Σ_g M_g X M_gᵀ``. ``P`` is
    symmetric and commutes with every ``M_g``, so its eigenspaces are invariant; for a generic ``X`` each
    eigenspace is a single copy of an irrep (a symmetric element of the commutant ``M_m(R)``,
    ``M_m(C)`` or ``M_m(H)`` has generically simple eigenvalues over its field). Copies of the same irrep
    are all returned (they are equal up to a change of basis); a degenerate draw is retried with a new ``X``.
    """
    rng = np.random.default_rng(seed)
    dim = matrices.shape[1]
    for _ in range(_ATTEMPTS):
        x = rng.standard_normal((dim, dim))
        x = x + x.T
        averaged = np.einsum("gij,jk,glk->il", matrices, x, matrices) / group.order
        pieces = []
        for basis in _eigenspaces((averaged + averaged.T) / 2):
            piece = np.einsum("ji,gjk,kl->gil", basis, matrices, basis)
            if not _is_irreducible(group, np.trace(piece, axis1=1, axis2=2)):
                break
            pieces.append(piece)
        else:
            return pieces
    raise GroupError(f"{group.name}: could not split a {dim}-dimensional representation into irreps")


# --------------------------------------------------------------------------- the generic algorithm
def generic_irreps(group: "Group", seed: int = _DEFAULT_SEED) -> list[Irrep]:
    """Every real irrep of any finite group, from its multiplication table alone.

    Draw a random ``x: G → R`` with ``x(g) = x(g⁻¹)`` and form ``C[a, b] = x(b⁻¹a)``. ``C`` is symmetric
    and commutes with the left-regular permutations ``L(g)`` (``L(g) e_b = e_{gb}``), so (generically) each
    eigenspace of ``C`` is one copy of a real irrep. With ``Q`` an orthonormal basis of an eigenspace,
    ``ρ(g) = Qᵀ L(g) Q``, i.e. ``ρ(g)[i, j] = Σ_c Q[c, i] Q[g⁻¹c, j]``.

    The character of an eigenspace needs no matrices: its projector ``P = QQᵀ`` is left-invariant, so
    ``χ(g) = Σ_c P[c, g⁻¹c] = (|G| / |K|) Σ_{k ∈ K} P[e, k]`` with ``K`` the class of ``g⁻¹``.
    Eigenspaces are deduplicated by character, and only one per irrep is turned into matrices.
    """
    n = group.order
    inv, table = group.inverse, group.mult_table
    class_of = group.class_of
    class_sizes = np.bincount(class_of)
    left_inverse_rows = table[inv]  # left_inverse_rows[g, c] = g⁻¹·c
    rng = np.random.default_rng(seed)
    for _ in range(_ATTEMPTS):
        y = rng.standard_normal(n)
        x = (y + y[inv]) / 2
        commutant = x[left_inverse_rows].T  # C[a, b] = x(b⁻¹a)
        found: list[tuple[np.ndarray, np.ndarray]] = []  # (basis, character)
        degenerate = False
        for basis in _eigenspaces(commutant):
            identity_row = basis[0] @ basis.T  # P[e, k]
            class_sums = np.bincount(class_of, weights=identity_row, minlength=len(class_sizes))
            chi = n * class_sums[class_of[inv]] / class_sizes[class_of[inv]]
            if not _is_irreducible(group, chi) or abs(chi[0] - basis.shape[1]) > 1e-6:
                degenerate = True
                break
            if not any(np.allclose(chi, other, atol=1e-6) for _, other in found):
                found.append((basis, chi))
        if degenerate:
            continue
        found.sort(key=lambda item: (round(item[1][0]), _character_key(item[1])))
        irreps = [Irrep(group, "", _regular_block(group, basis, left_inverse_rows)) for basis, _ in found]
        try:
            check_complete(group, irreps)
        except GroupError:
            continue
        return name_by_dimension(irreps)
    raise GroupError(f"{group.name}: the generic irrep algorithm did not converge")


def _regular_block(group: "Group", basis: np.ndarray, left_inverse_rows: np.ndarray) -> np.ndarray:
    """``ρ(g) = Qᵀ L(g) Q`` for every ``g``, computed for a generating set only and extended along the Cayley graph.

    ``ρ(s)[i, j] = Σ_c Q[c, i] Q[s⁻¹c, j]`` costs ``|G|·d²`` per generator ``s``; every other element follows from
    ``ρ(s·x) = ρ(s) ρ(x)`` (:func:`groupcc.groups.cayley.extend_from_generators`, ``|G|·d³``), instead of
    ``|G|²·d²`` for ``Qᵀ L(g) Q`` at every ``g``, whose gathers of ``Q`` dominated the generic algorithm (PSL(2,19),
    order 3420, one thread: 75 s before, 17 s now, nearly all of it the eigendecomposition).

    It is as exact: for a computed eigenspace ``Q`` invariant up to ``ε``, the compressions ``Qᵀ L(g) Q`` are a
    homomorphism up to ``ε²`` (``ρ(g)ρ(h) − ρ(gh) = −Qᵀ L(g)(I − QQᵀ) L(h) Q``), so the generators' matrices satisfy
    the group's relations to rounding and their products are ``ρ`` to rounding (PSL(2,13): ``ρ(g)ρ(h) = ρ(gh)`` to
    6e-14; solving ``Q_R ρ(g) = Q[g⁻¹R]`` from ``d`` rows instead is first order in ``ε``, 2e-12 on A6)."""
    generators = group.generators
    at_generators = np.einsum("ci,scj->sij", basis, basis[left_inverse_rows[generators]])
    return extend_from_generators(group.mult_table, generators, at_generators)


def name_by_dimension(irreps: list[Irrep]) -> list[Irrep]:
    """Name irreps ``trivial``, then ``<dim><letter>`` in order (``1b``, ``2a``, ``3a``, ``3b`` ...)."""
    counts: dict[int, int] = {}
    for irrep in irreps:
        index = counts.get(irrep.dim, 0)
        counts[irrep.dim] = index + 1
        letter = string.ascii_lowercase[index] if index < 26 else f"_{index}"
        irrep.name = "trivial" if irrep.is_trivial else f"{irrep.dim}{letter}"
    return irreps


@lru_cache(maxsize=None)  # irreps hash by identity; progress measures ask for the same bases per checkpoint
def entry_basis(irrep: Irrep, tol: float = 1e-8) -> np.ndarray:
    """Orthonormal basis ``[|G|, r]`` of the span of the functions ``g ↦ ρ(g)_ij``."""
    entries = irrep.matrices.reshape(irrep.group.order, -1)
    u, s, _ = np.linalg.svd(entries, full_matrices=False)
    return u[:, : int((s > tol * s[0]).sum())]
