"""``groupcc harvest``: a composer layer's activations on all pairs under a group action, into a store."""

from __future__ import annotations

import argparse

from groupcc.groups import PAIR_ACTIONS
from groupcc.training.composers import COMPOSER_LAYERS
from groupcc.training.harvest import harvest

from .options import add_options, option_values

ALL_LAYERS = sorted({name for names in COMPOSER_LAYERS.values() for name in names})
OPTIONS = ["layer", "action", "device", "rows_per_forward"]


def add_harvest_command(commands) -> None:
    command = commands.add_parser("harvest", help="activations of a composer layer on every pair and its transforms")
    command.add_argument("--run", required=True, help="composer run directory")
    add_options(command, harvest, OPTIONS, choices={"action": PAIR_ACTIONS}, helps={
        "layer": f"layer name ({', '.join(ALL_LAYERS)}; or any submodule name)",
        "action": "how g acts on the pair (a, b): left (g·a, b), right (a, b·g), conjugation",
        "device": "auto (CUDA when present), cpu, cuda",
        "rows_per_forward": "transformed inputs per forward pass",
    })
    command.add_argument("--out", required=True, help="new activation store directory")
    command.add_argument("--overwrite", action="store_true", help="replace an existing store at --out (once the new one is complete)")
    command.add_argument("--quiet", action="store_true", help="no progress bar")
    command.set_defaults(handler=run_harvest)


def run_harvest(args: argparse.Namespace) -> None:
    store = harvest(args.run, out=args.out, overwrite=args.overwrite, progress=not args.quiet, **option_values(args, OPTIONS))
    n, blocks, width = store.shape
    print(f"harvested {n} inputs x {blocks} group elements x width {width} "
          f"from {args.layer!r} of {args.run} ({args.action} action) into {args.out}")
