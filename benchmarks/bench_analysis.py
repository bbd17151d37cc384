"""Speed of the feature analysis (stabilisers, spectra, signatures, families) for a crosscoder of S5 size.

Compares :func:`groupcc.eval.transform_blocks.translation_deviation` (one Gram matrix per feature, then an index
gather) with a plain loop that forms ``B[g·h] − B[g]`` for every ``h``, in the same process, and times the
whole per-feature analysis. Run: ``python benchmarks/bench_analysis.py [--group S5] [--features 512] [--d 128]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from groupcc.eval.families import cluster, signatures
from groupcc.eval.transform_blocks import spectra, stabilisers, translation_deviation
from groupcc.groups import get_group


def plain_deviation(group, blocks_FBD: np.ndarray) -> np.ndarray:
    """``δ_i(h)`` straight from the definition: ``sqrt(Σ_g ‖B[g·h] − B[g]‖² / Σ_g ‖B[g]‖²)``."""
    energy = (blocks_FBD**2).sum(axis=(1, 2))
    out = np.zeros((blocks_FBD.shape[0], group.order))
    for h in range(group.order):
        moved = blocks_FBD[:, group.mult_table[:, h]]
        out[:, h] = np.sqrt(((moved - blocks_FBD) ** 2).sum(axis=(1, 2)) / energy)
    return out


def timed(function, *args, repeats: int = 3):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", default="S5")
    parser.add_argument("--features", type=int, default=512)
    parser.add_argument("--d", type=int, default=128)
    args = parser.parse_args()
    group = get_group(args.group)
    group.irreps()  # built once, outside the timings
    blocks = np.random.default_rng(0).normal(size=(args.features, group.order, args.d))

    fast_s, fast = timed(translation_deviation, group, blocks)
    plain_s, plain = timed(plain_deviation, group, blocks, repeats=1)
    assert np.allclose(fast[:, 1:], plain[:, 1:], atol=1e-8)
    print(f"{args.group}, F = {args.features}, d = {args.d}")
    print(f"translation deviation: {fast_s:.3f} s   plain loop {plain_s:.3f} s   ratio {plain_s / fast_s:.1f}x")

    stab_s, subgroups = timed(stabilisers, group, blocks, 0.1, repeats=1)
    spectra_s, _ = timed(spectra, group, blocks, repeats=1)
    orders = np.array([len(s) for s in subgroups])
    signature_s, sig = timed(signatures, group, blocks, orders, repeats=1)
    cluster_s, _ = timed(cluster, sig, repeats=1)
    total = stab_s + spectra_s + signature_s + cluster_s
    print(f"stabilisers {stab_s:.3f} s, spectra {spectra_s:.3f} s, signatures {signature_s:.3f} s, families {cluster_s:.3f} s: "
          f"{total:.2f} s for {args.features} features")


if __name__ == "__main__":
    main()
