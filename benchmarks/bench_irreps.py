"""Seconds to build every real irrep of S6, A7, S7 and of a 720-element group known only by its Cayley table.

Each line also times a reference in the same process:
- closed forms (Young's orthogonal form, restriction to A_n) against groupcc's generic algorithm on the
  same multiplication table;
- groupcc's generic algorithm against a plain version of it that turns every eigenspace into matrices and
  deduplicates afterwards (groupcc computes characters from one projector row and builds matrices once per irrep).

Usage: python benchmarks/bench_irreps.py [--full]   (--full also runs the generic algorithm on S7, minutes)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from groupcc.groups import from_cayley_table, generic_irreps, get_group
from groupcc.groups.irreps import _eigenspaces


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def plain_generic_irreps(group, seed: int = 0) -> list[np.ndarray]:
    """Reference: the DESIGN.md recipe done directly — ρ(g) = Qᵀ L(g) Q for every eigenspace, then dedupe
    by the traces."""
    n = group.order
    inv, table = group.inverse, group.mult_table
    y = np.random.default_rng(seed).standard_normal(n)
    x = (y + y[inv]) / 2
    commutant = x[table[inv]].T
    kept, characters = [], []
    for basis in _eigenspaces(commutant):
        mats = np.stack([basis.T @ basis[table[inv[g]]] for g in range(n)])
        chi = np.trace(mats, axis1=1, axis2=2)
        if not any(np.allclose(chi, other, atol=1e-6) for other in characters):
            kept.append(mats)
            characters.append(chi)
    return kept


def report(label: str, seconds: float, dims: list[int], reference: str | None = None, ref_seconds: float | None = None):
    line = f"{label:<34} {seconds:8.2f} s   irrep dims {dims}"
    if reference is not None:
        line += f"\n{'':<34} reference ({reference}): {ref_seconds:.2f} s  ->  {ref_seconds / seconds:.1f}x"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also run the generic algorithm on S7 (slow)")
    args = parser.parse_args()

    for name in ["S6", "A7", "S7"]:
        group, build = timed(lambda: get_group(name))
        irreps, seconds = timed(group.irreps)
        dims = [irrep.dim for irrep in irreps]
        print(f"{name}: building the group (order {group.order}, multiplication table) took {build:.2f} s")
        if name != "S7" or args.full:
            _, ref = timed(lambda: generic_irreps(group))
            report(f"{name} irreps (closed form)", seconds, dims, "generic algorithm on the same table", ref)
        else:
            report(f"{name} irreps (closed form)", seconds, dims)

    table = get_group("S6").mult_table
    rng = np.random.default_rng(1)
    relabel = np.concatenate([[0], 1 + rng.permutation(719)])  # hide the structure: a random relabelling
    hidden = np.empty_like(table)
    hidden[np.ix_(relabel, relabel)] = relabel[table]
    group, build = timed(lambda: from_cayley_table(hidden, name="table720"))
    print(f"table720: validating the Cayley table took {build:.2f} s")
    irreps, seconds = timed(group.irreps)
    _, ref = timed(lambda: plain_generic_irreps(group))
    report("720-element Cayley table (generic)", seconds + build, [i.dim for i in irreps], "plain generic recipe", ref + build)


if __name__ == "__main__":
    main()
