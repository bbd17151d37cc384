"""Transform blocks of crosscoder features: norms, similarities, stabilisers and irrep spectra.

Feature ``i`` of a group crosscoder has one decoder block per group element, ``B_i[g] = W_dec[i, g] ∈ R^d``:
what the activation of ``g·x`` looks like when the feature fires on ``x``. Replacing ``x`` by ``h·x`` gives the
*transformed copy* of the feature, with blocks ``g ↦ B_i[g·h]`` (right translation of the block index).

- block similarity ``S_i[g, h] = cos(B_i[g], B_i[h])``;
- block autocorrelation ``φ_i(h) = mean_g S_i[g, g·h]``; its irrep spectrum is the Plancherel energy per irrep.
  For the transformed copy by ``k``, ``φ'(h) = φ(k⁻¹hk)``: the spectrum is unchanged;
- stabiliser: the ``h`` with ``B_i[g·h] ≈ B_i[g]`` for every ``g`` (right translation of the block index: a feature
  whose blocks depend only on the left coset ``g·H`` has stabiliser ``H``), measured by the relative deviation
  ``δ_i(h)² = Σ_g ‖B_i[g·h] − B_i[g]‖² / Σ_g ‖B_i[g]‖²``. With a tolerance the passing set
  ``S = {h : δ_i(h) ≤ tolerance}`` need not be closed, so the stabiliser is the largest subgroup inside ``S``
  (ties broken by the smaller mean ``δ`` over it; :func:`groupcc.groups.subgroups.largest_subgroup_within`): always a
  subgroup. The transformed copy by ``k`` is fixed by the conjugate ``kHk⁻¹`` (``B[g·h·k] = B[g·k]`` for all ``g`` iff
  ``k⁻¹hk ∈ H``), so the stabiliser's order is unchanged.
"""

from __future__ import annotations

import numpy as np

from groupcc.groups import Group, GroupError, irrep_spectrum
from groupcc.groups.subgroups import largest_subgroup_within


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


#: Where the Gram-matrix formula gives ``δ² <`` this, ``δ`` is recomputed from the differences themselves.
DIRECT_BELOW = 1e-6
#: Floats per temporary array (``[features, |G|, |G|]`` Gram matrices, ``[pairs, |G|, d]`` differences): 128 MB.
_CHUNK_FLOATS = 1 << 24


def translation_deviation(group: Group, blocks_FBD: np.ndarray) -> np.ndarray:
    """``[F, |G|]``: ``δ_i(h) = sqrt(Σ_g ‖B_i[g·h] − B_i[g]‖² / Σ_g ‖B_i[g]‖²)`` (0 at the identity; 0 for a zero feature).

    In float64 whatever the input. First from the Gram matrix, ``Σ_g ‖B[gh] − B[g]‖² = 2(E − O)`` with
    ``E = Σ_g ‖B[g]‖²`` and ``O = Σ_g ⟨B[gh], B[g]⟩`` (one matrix product per feature, fast); but ``E − O``
    cancels when ``B[gh] ≈ B[g]``: its rounding error is about ``|G|·ε·E``, so an exact symmetry would measure
    ``δ ≈ sqrt(|G|·ε)`` instead of 0 (planted exact symmetries of S4 and A5: up to 9e-4 from a float32 Gram matrix,
    5e-8 from a float64 one). So every ``(i, h)`` with ``δ² <`` :data:`DIRECT_BELOW` is recomputed as
    ``Σ_g ‖B[gh] − B[g]‖²`` from the differences, which is exactly 0 for an exact symmetry and accurate to rounding
    for a near one (those pairs are few: the near-stabilisers)."""
    blocks = np.asarray(blocks_FBD, dtype=np.float64)
    n_features, order, width = blocks.shape
    energy = (blocks**2).sum(axis=(1, 2))  # [F]: E
    squared = np.empty((n_features, order))  # [F, h]: Σ_g ‖B[gh] − B[g]‖²
    g = np.arange(order)[:, None]
    step = max(1, _CHUNK_FLOATS // (order * order))
    for start in range(0, n_features, step):
        chunk = blocks[start:start + step]
        gram = chunk @ chunk.transpose(0, 2, 1)  # [f, g, g']: ⟨B[g], B[g']⟩
        overlap = gram[:, g, group.mult_table].sum(axis=1)  # [f, h]: O = Σ_g ⟨B[g], B[g·h]⟩
        squared[start:start + step] = 2 * (energy[start:start + step, None] - overlap)
    nonzero = energy > 0
    ratio = np.divide(squared, energy[:, None], out=np.zeros_like(squared), where=nonzero[:, None])
    features, shifts = np.nonzero((ratio < DIRECT_BELOW) & nonzero[:, None])
    step = max(1, _CHUNK_FLOATS // max(order * width, 1))
    for start in range(0, len(features), step):
        f, h = features[start:start + step], shifts[start:start + step]
        moved = blocks[f[:, None], group.mult_table[:, h].T]  # [pair, g] -> B_f[g·h]
        ratio[f, h] = ((moved - blocks[f]) ** 2).sum(axis=(1, 2)) / energy[f]
    return np.sqrt(np.clip(ratio, 0.0, None))


def subgroup_within(group: Group, deviation: np.ndarray, tolerance: float) -> np.ndarray:
    """The largest subgroup inside ``{h : deviation[h] ≤ tolerance}`` (the identity always counts as inside), ties
    broken by the smaller mean deviation over it: sorted indices (see the module docstring)."""
    deviation = np.asarray(deviation, dtype=float)
    return largest_subgroup_within(group, deviation <= tolerance, weights=deviation)


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
