"""The one number validator of config values, at the bottom of the layers so that every config dataclass
(dictionaries in ``crosscoders``, trainers and runs in ``training``, analyses in ``eval``) checks its fields
the same way and words its refusals the same way."""

from __future__ import annotations

import math

from groupcc.errors import GroupccError

#: The largest integer a config value may take (seeds, counts, sizes): what fits a signed 64-bit integer.
MAX_INT = 2**63 - 1


def check_number(name: str, value, low: float | None = None, high: float | None = None, *, integer: bool = False,
                 low_open: bool = False, high_open: bool = False, error: type[GroupccError] = GroupccError):
    """``value`` when it is a finite number (an ``int`` when ``integer``, at most :data:`MAX_INT`; never a
    ``bool``) in the interval from ``low`` to ``high`` (closed unless ``*_open``), else a one-line ``error``
    (a :class:`GroupccError` class, the caller's own) naming the value and the interval. Config dataclasses
    validate their fields with it before anything is created."""
    kinds = (int,) if integer else (int, float)
    high = MAX_INT if integer and high is None else high
    ok = isinstance(value, kinds) and not isinstance(value, bool) and _finite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        bounds = (f"{'(' if low_open or low is None else '['}{'-inf' if low is None else low}, "
                  f"{'inf' if high is None else high}{')' if high_open or high is None else ']'}")
        raise error(f"{name} = {value!r}: expected {'an integer' if integer else 'a finite number'} in {bounds}")
    return value


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond float range
        return False
