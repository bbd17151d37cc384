"""Group actions as index permutations.

``action[g]`` is an index map ``h ↦ action[g, h]`` over the elements. For a left action
``action[g1·g2] = action[g1][action[g2]]`` (apply ``g2`` first); for a right action
``action[g1·g2] = action[g2][action[g1]]``.
"""

from __future__ import annotations

import numpy as np

from .group import Group


def left_multiplication(group: Group) -> np.ndarray:
    """``[g, h] = g·h`` (a left action)."""
    return np.array(group.mult_table)


def right_multiplication(group: Group) -> np.ndarray:
    """``[g, h] = h·g`` (a right action: applying ``g1`` then ``g2`` equals applying ``g1·g2``)."""
    return np.array(group.mult_table.T)


def conjugation(group: Group) -> np.ndarray:
    """``[g, h] = g·h·g⁻¹`` (a left action)."""
    everyone = np.arange(group.order)
    return group.conjugate(everyone[:, None], everyone[None, :])


def regular_representation(group: Group) -> np.ndarray:
    """Left-regular permutation matrices ``[|G|, |G|, |G|]``: ``L(g) e_h = e_{g·h}``, so ``L(g)L(h) = L(gh)``."""
    n = group.order
    mats = np.zeros((n, n, n))
    g, h = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    mats[g, group.mult_table, h] = 1.0
    return mats
