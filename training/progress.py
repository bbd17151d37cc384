"""Progress bars for long loops: tqdm on a terminal; in a log file (not a terminal) at most one update every
:data:`LOG_INTERVAL_S` seconds, so a log does not fill with thousands of ``\\r`` updates; none when quiet."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

#: Seconds between updates when the output is not a terminal.
LOG_INTERVAL_S = 30.0


def progress_bar(iterable=None, *, enabled: bool = True, **options) -> tqdm:
    """``tqdm(iterable, **options)``, disabled when not ``enabled``, throttled when stderr is not a terminal."""
    if not enabled:
        return tqdm(iterable, disable=True, **options)
    if not sys.stderr.isatty():
        options = {"mininterval": LOG_INTERVAL_S, "maxinterval": LOG_INTERVAL_S * 2, "ascii": True, **options}
    return tqdm(iterable, **options)
