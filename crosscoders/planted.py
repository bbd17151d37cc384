"""Synthetic activations with planted group-structured features, the ground truth for testing dictionaries.

An orthogonal representation ``M: G → O(d)`` (``M_g M_h = M_{gh}``) transforms the input space. Planted
feature ``k`` is a unit direction ``u_k``; its block for group element ``g`` is ``M_g u_k``. An input has a
sparse non-negative code ``c`` and its activation on the transformed input ``g·x`` is
``a(g·x) = Σ_k c_k M_g u_k + noise``, i.e. ``a(g·x) = M_g a(x)`` up to noise (a linearly equivariant layer).
A group crosscoder should recover the stacked blocks ``[M_g u_k]_g``; an SAE on block 0 should recover ``u_k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from groupcc.groups import Group

from .errors import DictionaryError


def orthogonal_representation(group: Group, d: int, rng: np.random.Generator) -> np.ndarray:
    """``[|G|, d, d]``: a direct sum of the group's real irreps, taking the non-trivial ones in turn while they
    fit and filling what is left with the trivial one, conjugated by a random orthogonal matrix ``Q``:
    ``M_g = Q (⊕ ρ(g)) Qᵀ``."""
    irreps = group.irreps()
    nontrivial = [rho for rho in irreps if not rho.is_trivial] or irreps
    blocks, size = [], 0
    while size < d:
        fitting = [rho for rho in nontrivial if rho.dim <= d - size] or [irreps[0]]
        rho = fitting[len(blocks) % len(fitting)]
        blocks.append(rho.matrices)
        size += rho.dim
    direct_sum = np.zeros((group.order, d, d))
    start = 0
    for mats in blocks:
        direct_sum[:, start:start + mats.shape[1], start:start + mats.shape[1]] = mats
        start += mats.shape[1]
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return q @ direct_sum @ q.T


@dataclass(frozen=True)
class PlantedFeatures:
    """Planted features ``[K, |G|, d]`` (block ``g`` of feature ``k`` is ``M_g u_k``, unit norm) and ``M`` ``[|G|, d, d]``."""

    features_KBD: np.ndarray
    representation_GDD: np.ndarray

    def sample(self, n: int, rng: np.random.Generator, active: float = 3.0, noise: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
        """``(acts [n, |G|, d] float32, codes [n, K])``: each feature is on with probability ``active / K``, with
        a magnitude uniform in ``[0.5, 1.5]``; Gaussian noise of standard deviation ``noise`` per coordinate."""
        n_features = self.features_KBD.shape[0]
        on = rng.random((n, n_features)) < active / n_features
        codes = on * rng.uniform(0.5, 1.5, (n, n_features))
        acts = np.einsum("nk,kbd->nbd", codes, self.features_KBD)
        acts += noise * rng.standard_normal(acts.shape)
        return acts.astype(np.float32), codes


def plant_group_features(group: Group, d: int, n_features: int, seed: int = 0) -> PlantedFeatures:
    """``n_features`` random unit directions ``u_k`` in ``R^d`` and their blocks ``M_g u_k`` under a random
    orthogonal representation of ``group`` (:func:`orthogonal_representation`)."""
    rng = np.random.default_rng(seed)
    representation = orthogonal_representation(group, d, rng)
    directions = rng.standard_normal((n_features, d))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    features = np.einsum("bij,kj->kbi", representation, directions)
    return PlantedFeatures(features, representation)


def best_cosines(decoder_FBD: torch.Tensor | np.ndarray, planted_KBD: np.ndarray) -> np.ndarray:
    """``[K]``: for each planted feature, the largest cosine with a decoder row, blocks concatenated."""
    decoder = np.asarray(torch.as_tensor(decoder_FBD).detach().cpu(), dtype=np.float64).reshape(len(decoder_FBD), -1)
    planted = np.asarray(planted_KBD, dtype=np.float64).reshape(len(planted_KBD), -1)
    if decoder.shape[1] != planted.shape[1]:
        raise DictionaryError(f"decoder rows have {decoder.shape[1]} entries, planted features {planted.shape[1]}: expected equal")
    decoder /= np.maximum(np.linalg.norm(decoder, axis=1, keepdims=True), 1e-12)
    planted /= np.linalg.norm(planted, axis=1, keepdims=True)
    return (planted @ decoder.T).max(axis=1)


def recovered_fraction(decoder_FBD: torch.Tensor | np.ndarray, planted_KBD: np.ndarray, min_cosine: float = 0.95) -> float:
    """The fraction of planted features matched by a decoder row with cosine at least ``min_cosine``."""
    return float((best_cosines(decoder_FBD, planted_KBD) >= min_cosine).mean())
