"""Functions on the ``|G|²`` pairs split into ``ρ(a)``, ``ρ(b)`` and ``ρ(w(a, b))`` terms, exactly, for any word ``w``.

Pair ``p = (a, b)`` has index ``a·|G| + b``. For an irrep ``ρ`` with orthonormal entry basis ``Q_ρ`` ``[|G|, r]``
(see :func:`groupcc.groups.entry_basis`), ``Q_ρ[x(p)]/sqrt|G|`` spans the functions ``p ↦ ρ(x(p))_ij`` for the
element ``x(p)`` = ``a``, ``b`` or ``w(a, b)``.

For the product ``w = a·b`` the three spans of non-trivial irreps are mutually orthogonal and orthonormal as they
stand (Schur orthogonality; ``a`` and ``b`` are independent and ``a·b`` is uniform and independent of each). For
other words they are not: for ``w = a b a⁻¹``, ``E_a ρ(a b a⁻¹) = (χ_ρ(b)/d) I`` overlaps ``ρ(b)``; for
``w = a² b`` the ``ρ(w)`` vectors of several irreps need not even be orthonormal. Summing separate projections
then counts the shared part twice (fractions up to 2).

So the terms are made exact by orthogonalising in a fixed order: ``ρ(a)`` first, then the part of ``ρ(b)``
orthogonal to it, then the part of ``ρ(w)`` orthogonal to both. Each term is an orthonormal basis, the three are
mutually orthogonal, and their union spans exactly ``span(ρ(a)) + span(ρ(b)) + span(ρ(w))``. The fractions are
therefore each in ``[0, 1]`` and sum to the fraction explained by the union. Shared parts are attributed to the
input terms: ``ρ(w)`` is credited only with what the inputs' own irreps cannot explain, which is the conservative
reading of "the network computes ``ρ(w)``". For ``a·b`` the result equals the separate projections.
"""

from __future__ import annotations

import numpy as np

from groupcc.groups import Group, Irrep, entry_basis

TERMS = ("rho_a", "rho_b", "rho_ab")

# Singular values below this (on vectors of norm <= 1) are directions already in the earlier terms.
_RANK_TOLERANCE = 1e-6


def term_elements(group: Group, answers: np.ndarray) -> dict[str, np.ndarray]:
    """The element ``a``, ``b`` and ``w(a, b)`` of every pair."""
    pairs = np.arange(group.order**2)
    return {"rho_a": pairs // group.order, "rho_b": pairs % group.order, "rho_ab": np.asarray(answers)}


def _orthonormal_complement(vectors: np.ndarray, earlier: np.ndarray | None) -> np.ndarray:
    """Orthonormal basis of the part of ``span(vectors)`` orthogonal to the orthonormal columns ``earlier``."""
    if earlier is not None and earlier.shape[1]:
        vectors = vectors - earlier @ (earlier.T @ vectors)
        vectors = vectors - earlier @ (earlier.T @ vectors)  # a second pass: classical Gram-Schmidt loses orthogonality once
    if vectors.shape[1] == 0:
        return vectors
    u, s, _ = np.linalg.svd(vectors, full_matrices=False)
    return u[:, s > _RANK_TOLERANCE]


def _entry_columns(group: Group, irreps: list[Irrep], elements: np.ndarray) -> np.ndarray:
    """``[|G|², Σ r_ρ]``: the lifted entry bases of the irreps side by side."""
    columns = [entry_basis(irrep)[elements] / np.sqrt(group.order) for irrep in irreps]
    return np.concatenate(columns, axis=1) if columns else np.zeros((len(elements), 0))


def span_basis(group: Group, irreps: list[Irrep], elements: np.ndarray) -> np.ndarray:
    """Orthonormal basis ``[|G|², r]`` of the span of ``p ↦ ρ(elements[p])_ij`` over all the given irreps."""
    return _orthonormal_complement(_entry_columns(group, irreps, elements), None)


def term_bases(group: Group, irreps: list[Irrep], answers: np.ndarray) -> dict[str, np.ndarray]:
    """Mutually orthogonal orthonormal bases ``[|G|², r_t]`` of the three terms, orthogonalised in the order of
    :data:`TERMS` (see the module docstring)."""
    bases, earlier = {}, None
    for term, elements in term_elements(group, answers).items():
        bases[term] = _orthonormal_complement(_entry_columns(group, irreps, elements), earlier)
        earlier = bases[term] if earlier is None else np.concatenate([earlier, bases[term]], axis=1)
    return bases


def term_fractions(centred_PH: np.ndarray, bases: dict[str, np.ndarray], per_column: bool = False):
    """Fraction of ``‖C‖²`` in each term: ``‖Q_tᵀ C‖² / ‖C‖²``, over the whole matrix or (``per_column``) per
    column ``[H]``. Columns with no variance get 0."""
    total = (centred_PH**2).sum(axis=0) if per_column else float((centred_PH**2).sum())
    out = {}
    for term, basis in bases.items():
        captured = ((basis.T @ centred_PH) ** 2).sum(axis=0)
        if per_column:
            out[term] = np.divide(captured, total, out=np.zeros_like(captured), where=total > 0)
        else:
            out[term] = float(captured.sum() / total) if total > 0 else 0.0
    return out
