"""Breadth-first spanning trees of Cayley graphs, used to extend anything multiplicative (a row of the
multiplication table, a representation matrix) from generators to the whole group."""

from __future__ import annotations

import numpy as np


def spanning_tree(generator_rows: list[np.ndarray], order: int) -> tuple[np.ndarray, list[tuple[int, np.ndarray, np.ndarray]]]:
    """Breadth-first search from the identity ``0`` along the edges ``x → rows[s][x]`` (``x ↦ s·x`` for the
    generator ``s``).

    Returns the mask of reached elements and the steps ``(s, targets, sources)`` with
    ``targets = rows[s][sources]``; every source is the identity or a target of an earlier step, so
    ``value(s·x) = value(s) ∘ value(x)`` can be filled in step order.
    """
    reached = np.zeros(order, dtype=bool)
    reached[0] = True
    steps = []
    frontier = np.array([0])
    while frontier.size:
        grown = []
        for s, row in enumerate(generator_rows):
            fresh = ~reached[row[frontier]]
            targets, first = np.unique(row[frontier][fresh], return_index=True)
            sources = frontier[fresh][first]
            reached[targets] = True
            steps.append((s, targets, sources))
            grown.append(targets)
        frontier = np.concatenate(grown) if grown else np.array([], dtype=np.int64)
    return reached, steps


def extend_from_generators(mult_table: np.ndarray, generator_elements, generator_matrices: np.ndarray) -> np.ndarray:
    """``[|G|, d, d]`` matrices of a representation from those of generators (``generator_matrices[s]`` is the
    matrix of element ``generator_elements[s]``), along a spanning tree of the Cayley graph: ``ρ(s·x) = ρ(s) ρ(x)``.
    One batched product per tree step: ``|G|·d³`` flops."""
    order, d = mult_table.shape[0], generator_matrices.shape[-1]
    mats = np.empty((order, d, d))
    mats[0] = np.eye(d)
    _, steps = spanning_tree([mult_table[element] for element in generator_elements], order)
    for s, targets, sources in steps:
        mats[targets] = np.matmul(generator_matrices[s], mats[sources])
    return mats
