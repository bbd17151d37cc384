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


#: Actions of G on composer inputs, the pairs ``(a, b)`` (index ``a·|G| + b``).
PAIR_ACTIONS = ("left", "right", "conjugation")


def pair_action(group: Group, kind: str) -> np.ndarray:
    """``[|G|, |G|²]`` index map over pairs: ``[g, p]`` is the index of the pair ``p = (a, b)`` moved by ``g``:

    - ``left``: ``(g·a, b)`` (a left action);
    - ``right``: ``(a, b·g)`` (a right action: applying ``g1`` then ``g2`` equals applying ``g1·g2``);
    - ``conjugation``: ``(g·a·g⁻¹, g·b·g⁻¹)`` (a left action; it fixes the answer's conjugacy class).
    """
    from .errors import GroupError

    n = group.order
    g = np.arange(n)[:, None]
    a, b = np.divmod(np.arange(n * n), n)
    if kind == "left":
        return group.mult_table[g, a[None, :]] * n + b[None, :]
    if kind == "right":
        return a[None, :] * n + group.mult_table[b[None, :], g]
    if kind == "conjugation":
        return group.conjugate(g, a[None, :]) * n + group.conjugate(g, b[None, :])
    raise GroupError(f"unknown action {kind!r} on pairs: expected one of {', '.join(PAIR_ACTIONS)}")
