"""Size limits: the largest group groupcc builds, memory estimates, and the one-line refusals that name them.

Every size refusal uses this module, so the cap and the estimates have one definition:

- a group of order ``n`` holds an ``int64`` multiplication table, ``8·n²`` bytes; :data:`MAX_ORDER` caps ``n``
  (10 000: a 0.8 GB table; C_n and D_n at the cap build in seconds because their irreps are closed forms
  whose matrices are made only when asked for);
- orders are exact Python integers (``math.factorial``, never ``int64``, which overflows at ``21!``);
- :func:`memory_refusal` compares any estimate with three quarters of the machine's physical memory (or a given
  budget), for callers whose size is a product of options (a dictionary's ``features × |G| × d``).
"""

from __future__ import annotations

import math
import os
from typing import Iterable

from .errors import GroupError

#: Largest group order groupcc builds (its multiplication table is ``8·n²`` bytes: 0.8 GB at the cap; S7 = 5040 fits).
MAX_ORDER = 10_000
#: Bytes per entry of a multiplication table (``int64``).
TABLE_ITEM_BYTES = 8
#: Degrees up to which ``n!`` is computed exactly for a message (``math.factorial(10⁴)`` takes milliseconds);
#: beyond, the order is given from ``log Γ(n+1)``.
EXACT_FACTORIAL_DEGREE = 10_000
_EXACT_DIGITS = 30


def table_bytes(order: int) -> int:
    """Bytes of the ``[n, n]`` int64 multiplication table of a group of order ``n``: ``8·n²``."""
    return TABLE_ITEM_BYTES * int(order) ** 2


def array_bytes(shape: Iterable[int], itemsize: int = 4) -> int:
    """Bytes of an array of ``shape`` with ``itemsize``-byte entries, as an exact Python integer (no overflow)."""
    return int(itemsize) * math.prod(int(size) for size in shape)


def _scientific(log10_value: float) -> str:
    """``10^log10_value`` as ``m.mme+X`` for values beyond float range (exponent and mantissa from the log)."""
    exponent = math.floor(log10_value)
    return f"{10 ** (log10_value - exponent):.3g}e+{exponent}"


def order_text(order: int) -> str:
    """An order exactly when it has at most 30 digits, else ``≈ m.mme+X`` (``math.log10`` takes big integers)."""
    if order < 10**_EXACT_DIGITS:
        return str(order)
    return "≈ " + _scientific(math.log10(order))


def bytes_text(n_bytes: int | float) -> str:
    """A byte count in the largest decimal unit that keeps it >= 1 (B, KB, MB, GB, TB), in scientific form beyond
    10⁴ TB (from the logarithm, so that any integer works)."""
    if n_bytes >= 1e16:
        return f"{_scientific(math.log10(n_bytes) - 12)} TB"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n_bytes >= scale:
            value = n_bytes / scale
            return f"{value:.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"
    return f"{int(n_bytes)} B"


def _refusal(name: str, order_words: str, memory_words: str) -> GroupError:
    return GroupError(
        f"{name} has order {order_words}, above groupcc's maximum of {MAX_ORDER}: "
        f"its multiplication table alone would need {memory_words} (8·|G|² bytes)"
    )


def check_order(name: str, order: int) -> None:
    """Refuse a group of order above :data:`MAX_ORDER`, naming the exact order and the table's memory."""
    if order > MAX_ORDER:
        raise _refusal(name, order_text(order), bytes_text(table_bytes(order)))


def factorial_order(name: str, degree: int, divisor: int = 1) -> int:
    """``degree! // divisor`` (at least 1), the order of ``S_n`` (divisor 1) or ``A_n`` (divisor 2), checked
    against :data:`MAX_ORDER` before anything is built. Huge degrees are refused from ``log10 n! = lgamma(n+1)/ln 10``
    without computing the factorial."""
    if degree > EXACT_FACTORIAL_DEGREE:
        log10_order = math.lgamma(degree + 1) / math.log(10) - math.log10(divisor)
        log10_bytes = math.log10(TABLE_ITEM_BYTES) + 2 * log10_order
        raise _refusal(name, "≈ " + _scientific(log10_order), f"{_scientific(log10_bytes - 12)} TB")
    order = max(math.factorial(degree) // divisor, 1)
    check_order(name, order)
    return order


def physical_memory_bytes() -> int | None:
    """The machine's physical memory (``sysconf``), or ``None`` where the platform does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


#: Share of the physical memory an estimate may take by default: the rest is for what estimates leave out
#: (activations, batches, the interpreter, other processes).
MEMORY_FRACTION = 0.75


def memory_refusal(what: str, n_bytes: int, budget: int | None = None) -> str | None:
    """``None`` when ``n_bytes`` fits in ``budget`` (default: :data:`MEMORY_FRACTION` of the physical memory), else
    a one-line message naming ``what`` and both sizes, for the caller to raise as its own error class before it
    allocates anything."""
    if budget is None:
        physical = physical_memory_bytes()
        if physical is None:
            return None
        budget, words = int(MEMORY_FRACTION * physical), f"{MEMORY_FRACTION:.0%} of this machine's {bytes_text(physical)}"
    else:
        words = bytes_text(budget)
    if n_bytes <= budget:
        return None
    return f"{what} would need about {bytes_text(n_bytes)} of memory, more than the {words} available"
