"""Comparing clusterings: with ground-truth labels and with each other (scikit-learn's ARI and NMI, and purity)."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from .equivariant_matching import unit_columns


def purity(families: Sequence, truth: Sequence) -> float:
    """Fraction of items whose label is their family's most common label: ``(1/n) Σ_families max_label count``."""
    if len(families) != len(truth):
        raise ValueError(f"purity needs as many family labels as true labels, got {len(families)} and {len(truth)}")
    if not len(families):
        return float("nan")
    by_family: dict = {}
    for family, label in zip(families, truth):
        by_family.setdefault(family, Counter())[label] += 1
    return sum(counts.most_common(1)[0][1] for counts in by_family.values()) / len(families)


def compare_labels(families: Sequence, truth: Sequence) -> dict:
    """``{"ari", "nmi", "purity", "n_families", "n_labels", "n_items"}`` of a clustering against reference labels
    (scores ``None`` when there is nothing to compare, so the record stays strict JSON)."""
    families, truth = [str(x) for x in families], [str(x) for x in truth]
    if len(families) != len(truth):
        raise ValueError(f"cannot compare {len(families)} family labels with {len(truth)} reference labels")
    if not families:
        return {"ari": None, "nmi": None, "purity": None, "n_families": 0, "n_labels": 0, "n_items": 0}
    return {
        "ari": float(adjusted_rand_score(truth, families)),
        "nmi": float(normalized_mutual_info_score(truth, families)),
        "purity": float(purity(families, truth)),
        "n_families": len(set(families)),
        "n_labels": len(set(truth)),
        "n_items": len(families),
    }


def confusion(families: Sequence[int], truth: Sequence[str], label_order: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """``[n_families, n_labels]`` counts of each reference label in each family (families ``0..max``)."""
    labels = list(label_order) if label_order is not None else sorted(set(truth))
    index = {label: j for j, label in enumerate(labels)}
    table = np.zeros((max(families, default=-1) + 1, len(labels)), dtype=int)
    for family, label in zip(families, truth):
        table[family, index[label]] += 1
    return table, labels


def best_partners(codes_a_NF: np.ndarray, codes_b_NG: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every feature of ``a``, the feature of ``b`` with the most similar activations on the same inputs
    (cosine over inputs), and that cosine: ``[F_a]`` each."""
    unit_a, _ = unit_columns(np.asarray(codes_a_NF, dtype=np.float64))
    unit_b, _ = unit_columns(np.asarray(codes_b_NG, dtype=np.float64))
    similarity = unit_a.T @ unit_b
    partners = similarity.argmax(axis=1)
    return partners, similarity[np.arange(len(partners)), partners]
