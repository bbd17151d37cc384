"""Matching features of a composer layer to irreps.

A feature's activation over all ``|G|²`` pairs, ``f(a, b)``, is centred and projected, for every non-trivial irrep
``ρ``, on the ``ρ(a)``, ``ρ(b)`` and ``ρ(w(a, b))`` terms (``w`` is the task, ``a·b`` by default), made mutually
orthogonal for any word by :func:`groupcc.eval.pair_terms.term_bases`, so the fractions add up to at most 1:

    fve_ρ(f) = Σ_{t ∈ a, b, w} ‖Q_{ρ,t}ᵀ f_c‖² / ‖f_c‖²   (the fraction explained by the union of the three spans)

The feature's irrep is the ``ρ`` with the largest ``fve_ρ``; when even that explains less than ``min_explained``
the feature is labelled :data:`MIXED` (a feature of several irreps at once, such as a lookup of one answer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from groupcc.groups import Group, GroupError

from .pair_terms import TERMS, term_bases, term_fractions


MIXED = "mixed"
DEAD = "dead"


@dataclass
class IrrepMatch:
    """Per feature: ``label`` (irrep name, :data:`MIXED` or :data:`DEAD`), ``explained`` (``fve`` of the label's
    irrep), and ``fve`` ``[F, num_irreps]`` (0 for the trivial irrep), ``term_fve`` ``[F, 3]`` of the label
    split into its ``ρ(a)``, ``ρ(b)``, ``ρ(w)`` parts."""

    irreps: list[str]
    labels: list[str]
    explained: np.ndarray
    fve: np.ndarray
    term_fve: np.ndarray

    def counts(self) -> dict[str, int]:
        names = [*self.irreps[1:], MIXED, DEAD]
        return {name: self.labels.count(name) for name in names if self.labels.count(name)}


def match_irreps(group: Group, feature_acts_PF: np.ndarray, answers: np.ndarray, min_explained: float = 0.5) -> IrrepMatch:
    """Label each feature of ``feature_acts_PF`` (``[|G|², F]``, pair ``a·|G| + b`` in row order) with an irrep."""
    n = group.order
    acts = np.asarray(feature_acts_PF, dtype=np.float64)
    if acts.ndim != 2 or acts.shape[0] != n * n:
        raise GroupError(f"irrep matching needs feature activations on all {n * n} pairs of {group.name} as [pairs, features], got shape {acts.shape}")
    centred = acts - acts.mean(axis=0)
    irreps = group.irreps()
    per_term = np.zeros((acts.shape[1], len(irreps), len(TERMS)))
    for r, irrep in enumerate(irreps[1:], start=1):
        fractions = term_fractions(centred, term_bases(group, [irrep], answers), per_column=True)
        per_term[:, r] = np.stack([fractions[term] for term in TERMS], axis=1)
    fve = per_term.sum(axis=2)
    best = fve.argmax(axis=1)
    explained = fve[np.arange(len(best)), best]
    firing = np.abs(acts).max(axis=0) > 0
    labels = [
        DEAD if not fires else (irreps[b].name if e >= min_explained else MIXED)
        for b, e, fires in zip(best, explained, firing)
    ]
    return IrrepMatch([irrep.name for irrep in irreps], labels, explained, fve, per_term[np.arange(len(best)), best])
