"""Words in two letters ``a`` and ``b`` (such as ``a*b``, ``a*b*a^-1``, ``a^-1*b``), evaluated on every pair
of group elements: the tasks composer models learn."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import GroupError
from .group import Group

_FACTOR = re.compile(r"^([ab])(?:\^(-?\d+))?$")
MAX_POWER_DIGITS = 18  # powers are reduced modulo the group's exponent; longer ones are typos
MAX_FACTORS = 64


@dataclass(frozen=True)
class Word:
    """A product of powers of ``a`` and ``b``, left to right: ``[("a", 1), ("b", 1), ("a", -1)]`` is ``a·b·a⁻¹``."""

    factors: tuple[tuple[str, int], ...]

    def __str__(self) -> str:
        return "*".join(letter if power == 1 else f"{letter}^{power}" for letter, power in self.factors)

    def evaluate(self, group: Group) -> np.ndarray:
        """``[|G|, |G|]`` table: entry ``[a, b]`` is the index of the word at ``(a, b)``."""
        n = group.order
        grids = {"a": np.repeat(np.arange(n)[:, None], n, 1), "b": np.repeat(np.arange(n)[None, :], n, 0)}
        result = np.zeros((n, n), dtype=np.int64)
        for letter, power in self.factors:
            result = group.mult_table[result, power_table(group, power)[grids[letter]]]
        return result


def power_table(group: Group, k: int) -> np.ndarray:
    """``[|G|]``: ``g^k`` for every element (negative ``k`` uses inverses)."""
    base = np.arange(group.order) if k >= 0 else group.inverse.copy()
    result = np.zeros(group.order, dtype=np.int64)
    for _ in range(abs(k) % int(np.lcm.reduce(group.element_orders))):  # g^exponent = e: reduce first (Python ints)
        result = group.mult_table[result, base]
    return result


def parse_word(text: str) -> Word:
    """Parse ``"a*b*a^-1"`` (factors ``a`` or ``b`` with an optional integer power, joined by ``*``)."""
    factors = []
    for part in str(text).replace(" ", "").split("*"):
        match = _FACTOR.match(part)
        if not match:
            raise GroupError(
                f"bad word {text!r}: expected factors 'a' or 'b' with an optional power such as a^-1 or b^2, joined by '*'"
            )
        power = match.group(2) or "1"
        if len(power.lstrip("-")) > MAX_POWER_DIGITS:
            raise GroupError(f"bad word {text!r}: power {power} has more than {MAX_POWER_DIGITS} digits")
        factors.append((match.group(1), int(power)))
    if len(factors) > MAX_FACTORS:
        raise GroupError(f"bad word {text!r}: {len(factors)} factors, expected at most {MAX_FACTORS}")
    return Word(tuple(factors))
