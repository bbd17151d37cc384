"""Transform blocks of crosscoder features: norms, similarities, stabilisers and irrep spectra.

Feature ``i`` of a group crosscoder has one decoder block per group element, ``B_i[g] = W_dec[i, g] ∈ R^d``:
what the activation of ``g·x`` looks like when the feature fires on ``x``. Replacing ``x`` by ``h·x`` gives the
*transformed copy* of the feature, with blocks ``g ↦ B_i[g·h]`` (right translation of the block index).

- block similarity ``S_i[g, h] = cos(B_i[g], B_i[h])``;
- block autocorrelation ``φ_i(h) = mean_g S_i[g, g·h]``; its irrep spectrum is the Plancherel energy per irrep.
  For the transformed copy by ``k``, ``φ'(h) = φ(k⁻¹hk)``: the spectrum is unchanged;
- stabiliser: the ``h`` with ``B_i[g·h] ≈ B_i[g]`` for every ``g``, measured by the relative deviation
  ``δ_i(h)² = Σ_g ‖B_i[g·h] − B_i[g]‖² / Σ_g ‖B_i[g]‖²``. With a tolerance the passing set need not be closed,
  so the stabiliser is grown greedily from the identity, adding passing elements (smallest ``δ`` first) only
  while the generated subgroup stays inside the passing set: the result is always a subgroup. The transformed
  copy by ``k`` is fixed by the conjugate ``kHk⁻¹`` (``B[g·h·k] = B[g·k]`` for all ``g`` iff ``k⁻¹hk ∈ H``), so the
  stabiliser's order is unchanged.
"""

from __future__ import annotations

import numpy as np

from groupcc.groups import Group, GroupError, irrep_spectrum


def check_blocks(group: Group, blocks_FBD: np.ndarray) -> np.ndarray:
    """``blocks_FBD`` as float64 ``[F, |G|, d]``, or a one-line error naming the shape and the group."""
    blocks = np.asarray(blocks_FBD, dtype=np.float64)
    if blocks.ndim != 3 or blocks.shape[1] != group.order:
        raise GroupError(f"transform blocks must have shape [features, {group.order}, d] for {group.name}, got {blocks.shape}")
    if not np.isfinite(blocks).all():
        raise GroupError("transform blocks contain NaN or inf: expected finite decoder weights")
    return blocks


def block_norms(blocks_FBD: np.ndarray) -> np.ndarray:
    """``[F, B]``: ``‖B_i[g]‖``."""
    return np.linalg.norm(blocks_FBD, axis=-1)


def block_similarity(blocks_FBD: np.ndarray) -> np.ndarray:
    """``[F, B, B]``: ``S_i[g, h] = cos(B_i[g], B_i[h])`` (0 where a block is zero)."""
    norms = block_norms(blocks_FBD)
    unit = np.divide(blocks_FBD, norms[..., None], out=np.zeros_like(blocks_FBD), where=norms[..., None] > 0)
    return np.einsum("fgd,fhd->fgh", unit, unit)


def autocorrelation(group: Group, similarity_FBB: np.ndarray) -> np.ndarray:
    """``[F, |G|]``: ``φ_i(h) = mean_g S_i[g, g·h]``."""
    g = np.arange(group.order)[:, None]
    return similarity_FBB[:, g, group.mult_table].mean(axis=1)


def spectra(group: Group, blocks_FBD: np.ndarray) -> np.ndarray:
    """``[F, num_irreps]``: the irrep spectrum (energy fractions, in ``group.irreps()`` order) of ``φ_i``."""
    return irrep_spectrum(group, autocorrelation(group, block_similarity(blocks_FBD)))


def translation_deviation(group: Group, blocks_FBD: np.ndarray) -> np.ndarray:
    """``[F, |G|]``: ``δ_i(h) = sqrt(Σ_g ‖B_i[g·h] − B_i[g]‖² / Σ_g ‖B_i[g]‖²)`` (0 at the identity; 0 for a zero feature).

    Uses ``Σ_g ‖B[gh] − B[g]‖² = 2(Σ_g ‖B[g]‖² − Σ_g ⟨B[gh], B[g]⟩)`` so that only the Gram matrix is formed."""
    gram = np.einsum("fgd,fhd->fgh", blocks_FBD, blocks_FBD)
    g = np.arange(group.order)[:, None]
    overlap = gram[:, g, group.mult_table].sum(axis=1)  # [F, h]: Σ_g ⟨B[g], B[g·h]⟩
    energy = np.trace(gram, axis1=1, axis2=2)[:, None]
    ratio = np.divide(2 * (energy - overlap), energy, out=np.zeros_like(overlap), where=energy > 0)
    ratio[:, 0] = 0.0  # exactly, not a rounding residue whose square root is 1e-8
    return np.sqrt(np.clip(ratio, 0.0, None))


def subgroup_within(group: Group, deviation: np.ndarray, tolerance: float) -> np.ndarray:
    """The largest subgroup found by greedy growth inside ``{h : deviation[h] ≤ tolerance}`` (sorted indices)."""
    passing = deviation <= tolerance
    passing[0] = True
    members = np.array([0])
    for h in np.argsort(deviation, kind="stable"):
        if not passing[h] or h in members:
            continue
        grown = group.subgroup_generated(np.append(members, h))
        if passing[grown].all():
            members = grown
    return members


def stabilisers(group: Group, blocks_FBD: np.ndarray, tolerance: float = 0.1) -> list[np.ndarray]:
    """The stabiliser subgroup of every feature (see the module docstring); ``tolerance`` bounds ``δ_i(h)``."""
    if not 0 <= tolerance < 2:
        raise GroupError(f"stabiliser tolerance must be in [0, 2) (a relative deviation), got {tolerance}")
    return [subgroup_within(group, row, tolerance) for row in translation_deviation(group, check_blocks(group, blocks_FBD))]


def stabiliser(blocks_GD: np.ndarray, group: Group, tolerance: float = 0.1) -> np.ndarray:
    """The stabiliser subgroup (sorted element indices) of one feature's transform blocks ``[|G|, d]``: the ``h``
    with ``B[g·h] ≈ B[g]`` for all ``g``, to a relative deviation ``tolerance``."""
    return stabilisers(group, np.asarray(blocks_GD)[None], tolerance)[0]


def transformed_copy(group: Group, blocks_FBD: np.ndarray, h: int) -> np.ndarray:
    """The blocks of the features transformed by ``h``: ``g ↦ B[g·h]``."""
    return blocks_FBD[:, group.mult_table[:, h]]
