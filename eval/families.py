"""Families of features: features clustered on signatures that a group transform leaves unchanged.

The signature of a feature with transform blocks ``B[g]`` (``[|G|, d]``) has three parts, each unchanged when the
feature is replaced by a transformed copy ``g ↦ B[g·h]`` (Plancherel energies are invariant under translation,
and the stabiliser of the copy is conjugate to the original's):

- the energy fractions of the *centred* blocks ``B[g] − mean_g B`` per non-trivial irrep (summing to 1; all zero
  for an invariant feature): ``E_ρ = (d_ρ/k_ρ)‖B̂(ρ)‖²/|G|`` with ``B̂(ρ) = Σ_g B[g] ⊗ ρ(g)``;
- the invariant fraction ``|G|·‖mean_g B‖² / Σ_g ‖B[g]‖²``;
- the stabiliser order as ``log|H| / log|G|``.

Clustering is agglomerative (average linkage, Euclidean) on the signatures; the number of families is the one
with the best silhouette score among ``2..max_families``, or 1 when every signature is within ``merge_distance``
of the others (nothing to split) or ``max_families`` is 1, unless the caller fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import silhouette_score

from groupcc.groups import Group, GroupError, irrep_energies

def block_energies(group: Group, blocks_FBD: np.ndarray) -> np.ndarray:
    """``[F, num_irreps]``: Plancherel energy of the blocks per irrep, summed over the ``d`` coordinates."""
    return irrep_energies(group, np.swapaxes(blocks_FBD, 1, 2)).sum(axis=1)


def signatures(group: Group, blocks_FBD: np.ndarray, stabiliser_orders: np.ndarray) -> np.ndarray:
    """``[F, num_irreps + 1]``: non-trivial energy fractions, invariant fraction, log stabiliser order (see module)."""
    energies = block_energies(group, blocks_FBD)
    total = energies.sum(axis=1, keepdims=True)
    varying = energies[:, 1:].sum(axis=1, keepdims=True)
    spectrum = np.divide(energies[:, 1:], varying, out=np.zeros_like(energies[:, 1:]), where=varying > 1e-12 * total)
    invariant = np.divide(energies[:, :1], total, out=np.zeros_like(total), where=total > 0)
    stabiliser = np.log(np.asarray(stabiliser_orders, dtype=float))[:, None] / max(np.log(group.order), 1e-12)
    return np.hstack([spectrum, invariant, stabiliser])


@dataclass
class Clustering:
    """``labels[i]``: family of item ``i`` (``0..n_families-1``, largest family first); ``silhouette`` per tried
    number of families (empty when it was fixed)."""

    labels: np.ndarray
    n_families: int
    silhouette: dict[int, float]
    chosen_automatically: bool


def cluster(
    points: np.ndarray,
    n_families: int | None = None,
    *,
    max_families: int = 12,
    merge_distance: float = 0.05,
    metric: str = "euclidean",
) -> Clustering:
    """Agglomerative clustering (average linkage) of ``points`` ``[n, k]``, or of a precomputed distance
    matrix with ``metric="precomputed"``; see the module docstring for how the number is chosen."""
    points = np.asarray(points, dtype=float)
    n = points.shape[0]
    if n_families is not None and not 1 <= n_families <= max(n, 1):
        raise GroupError(f"number of families must be between 1 and the {n} features, got {n_families}")
    if n <= 1:
        return Clustering(np.zeros(n, dtype=int), n, {}, n_families is None)
    distances = points if metric == "precomputed" else np.linalg.norm(points[:, None] - points[None], axis=-1)
    if n_families is not None:
        return Clustering(_relabel_by_size(_agglomerate(distances, n_families)), n_families, {}, False)
    if distances.max() <= merge_distance or max_families < 2:
        return Clustering(np.zeros(n, dtype=int), 1, {}, True)
    scores = {}
    best = None
    for k in range(2, min(max_families, n - 1) + 1):
        labels = _agglomerate(distances, k)
        scores[k] = float(silhouette_score(distances, labels, metric="precomputed"))
        if best is None or scores[k] > scores[best[0]] + 1e-9:
            best = (k, labels)
    if best is None:  # two points that are far apart
        return Clustering(np.arange(n), n, {}, True)
    return Clustering(_relabel_by_size(best[1]), best[0], scores, True)


def _agglomerate(distances: np.ndarray, k: int) -> np.ndarray:
    model = AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage="average")
    return model.fit_predict(distances)


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Family 0 is the largest (ties by first member), so labels are stable across runs."""
    ids, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = sorted(range(len(ids)), key=lambda j: (-counts[j], first[j]))
    mapping = {ids[j]: rank for rank, j in enumerate(order)}
    return np.array([mapping[label] for label in labels])
