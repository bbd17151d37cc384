"""SAE features seen through the group: equivariant matching and virtual transform blocks.

An SAE has one decoder direction per feature, so it has no transform blocks of its own. Equivariant matching
gives it some: when feature ``i`` fires on ``x``, the activation of ``g·x`` is explained by the feature ``j`` whose
activations on transformed inputs follow ``i``'s, ``f_j(g·x) ≈ c·f_i(x)``. With ``j_g`` the best such feature
(cosine over inputs) and ``c_g = ⟨f_{j_g}∘g, f_i⟩ / ‖f_i‖²``, the *virtual blocks* are
``V_i[g] = c_g · W_dec[j_g]``: the same meaning as a crosscoder's ``B_i[g]``, so the same stabilisers, spectra
and family signatures apply. The mean matching cosine over ``g`` measures how equivariant the SAE is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class EquivariantMatch:
    """``partner[g, i]``: the feature ``j_g`` for feature ``i``; ``cosine[g, i]``: its matching cosine;
    ``amplitude[g, i]``: ``c_g``; ``[|G|, F]`` each."""

    partner: np.ndarray
    cosine: np.ndarray
    amplitude: np.ndarray

    def equivariance(self) -> np.ndarray:
        """``[F]``: mean matching cosine over the group elements."""
        return self.cosine.mean(axis=0)


def unit_columns(codes_NF: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns scaled to unit norm (zero columns stay zero) and the norms."""
    norms = np.linalg.norm(codes_NF, axis=0)
    return np.divide(codes_NF, norms, out=np.zeros_like(codes_NF), where=norms > 0), norms


def equivariant_match(identity_codes_NF: np.ndarray, block_codes_GNF: np.ndarray) -> EquivariantMatch:
    """Match every feature to its partner under every group element.

    ``identity_codes_NF``: ``f_j(x)``; ``block_codes_GNF[g]``: ``f_j(g·x)`` for the same inputs ``x``."""
    base = np.asarray(identity_codes_NF, dtype=np.float64)
    unit_base, base_norms = unit_columns(base)
    n_group, _, n_features = block_codes_GNF.shape
    partner = np.zeros((n_group, n_features), dtype=np.int64)
    cosine = np.zeros((n_group, n_features))
    amplitude = np.zeros((n_group, n_features))
    columns = np.arange(n_features)
    for g in range(n_group):
        moved = np.asarray(block_codes_GNF[g], dtype=np.float64)
        unit_moved, _ = unit_columns(moved)
        similarity = unit_base.T @ unit_moved  # [i, j]: cos(f_i, f_j∘g)
        partner[g] = similarity.argmax(axis=1)
        cosine[g] = similarity[columns, partner[g]]
        overlap = (base * moved[:, partner[g]]).sum(axis=0)
        amplitude[g] = np.divide(overlap, base_norms**2, out=np.zeros(n_features), where=base_norms > 0)
    return EquivariantMatch(partner, cosine, amplitude)


def virtual_blocks(match: EquivariantMatch, decoder_FD: np.ndarray) -> np.ndarray:
    """``[F, |G|, d]``: ``V_i[g] = c_g · W_dec[j_g]``."""
    return np.asarray(decoder_FD)[match.partner.T] * match.amplitude.T[..., None]


def decoder_distances(decoder_FD: np.ndarray) -> np.ndarray:
    """``[F, F]``: ``1 − cos`` between decoder directions (the distance for decoder-similarity families)."""
    unit, _ = unit_columns(np.asarray(decoder_FD, dtype=np.float64).T)
    return np.clip(1.0 - unit.T @ unit, 0.0, 2.0)
