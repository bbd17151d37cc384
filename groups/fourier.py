"""The Fourier transform on a finite group, its inverse, and the irrep spectrum of a function.

For real irreps ``ρ`` of dimension ``d_ρ`` and ``k_ρ = ⟨χ_ρ, χ_ρ⟩`` (1, 2, 4 for types R, C, H):

    f̂(ρ) = Σ_g f(g) ρ(g)
    f(g) = (1/|G|) Σ_ρ (d_ρ / k_ρ) tr(f̂(ρ) ρ(g)ᵀ)
    Σ_g f(g)² = (1/|G|) Σ_ρ (d_ρ / k_ρ) ‖f̂(ρ)‖²_F        (Plancherel)

(A type-C or H irrep of real dimension ``d`` occurs ``d/k`` times in the regular representation, which
is where the weight ``d/k`` comes from.) The irrep spectrum of ``f`` is the Plancherel energy per irrep.
"""

from __future__ import annotations

import numpy as np

from .errors import GroupError
from .group import Group


def _check_function(group: Group, f) -> np.ndarray:
    arr = np.asarray(f, dtype=float)
    if arr.ndim == 0 or arr.shape[-1] != group.order:
        raise GroupError(f"a function on {group.name} needs a last axis of length {group.order}, got shape {arr.shape}")
    return arr


def fourier_transform(group: Group, f) -> list[np.ndarray]:
    """``f̂(ρ) = Σ_g f(g) ρ(g)`` for every irrep in ``group.irreps()`` order; ``f`` is ``[..., |G|]`` and
    each result is ``[..., d_ρ, d_ρ]``."""
    values = _check_function(group, f)
    return [np.einsum("...g,gij->...ij", values, irrep.matrices) for irrep in group.irreps()]


def inverse_fourier_transform(group: Group, coefficients: list[np.ndarray]) -> np.ndarray:
    """``f(g) = (1/|G|) Σ_ρ (d_ρ/k_ρ) tr(f̂(ρ) ρ(g)ᵀ)``; returns ``[..., |G|]``."""
    irreps = group.irreps()
    if len(coefficients) != len(irreps):
        raise GroupError(f"{group.name} has {len(irreps)} irreps, got {len(coefficients)} Fourier coefficients")
    total = 0.0
    for irrep, coefficient in zip(irreps, coefficients):
        coefficient = np.asarray(coefficient, dtype=float)
        if coefficient.shape[-2:] != (irrep.dim, irrep.dim):
            raise GroupError(f"coefficient for irrep {irrep.name} must end in {(irrep.dim, irrep.dim)}, got {coefficient.shape}")
        total = total + (irrep.dim / irrep.norm) * np.einsum("...ij,gij->...g", coefficient, irrep.matrices)
    return np.asarray(total) / group.order


def irrep_energies(group: Group, f) -> np.ndarray:
    """Plancherel energy per irrep, ``(1/|G|)(d_ρ/k_ρ)‖f̂(ρ)‖²``: ``[..., num_irreps]``, summing to ``Σ_g f(g)²``."""
    coefficients = fourier_transform(group, f)
    return np.stack(
        [(irrep.dim / irrep.norm) * (c**2).sum(axis=(-2, -1)) / group.order for irrep, c in zip(group.irreps(), coefficients)],
        axis=-1,
    )


def irrep_spectrum(group: Group, f) -> np.ndarray:
    """Fraction of the energy ``Σ_g f(g)²`` carried by each irrep: ``[..., num_irreps]``, summing to 1
    (all zeros for the zero function)."""
    energies = irrep_energies(group, f)
    total = energies.sum(axis=-1, keepdims=True)
    return np.divide(energies, total, out=np.zeros_like(energies), where=total > 0)
