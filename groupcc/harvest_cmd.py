"""``groupcc harvest``: a composer layer's activations on all pairs under a group action, into a store."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from groupcc.errors import GroupccError

from groupcc.groups import PAIR_ACTIONS
from groupcc.training.composer_training import load_composer_run
from groupcc.training.composers import COMPOSER_LAYERS
from groupcc.training.harvest import composer_harvest_batches, harvest_to_store

ALL_LAYERS = sorted({name for names in COMPOSER_LAYERS.values() for name in names})


def add_harvest_command(commands) -> None:
    harvest = commands.add_parser("harvest", help="activations of a composer layer on every pair and its transforms")
    harvest.add_argument("--run", required=True, help="composer run directory")
    harvest.add_argument("--layer", required=True, help=f"layer name ({', '.join(ALL_LAYERS)}; or any submodule name)")
    harvest.add_argument("--action", default="left", choices=PAIR_ACTIONS, help="how g acts on the pair (a, b): left (g·a, b), right (a, b·g), conjugation")
    harvest.add_argument("--out", required=True, help="new activation store directory")
    harvest.add_argument("--overwrite", action="store_true", help="replace an existing store at --out")
    harvest.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    harvest.add_argument("--rows-per-forward", type=int, default=65_536, help="transformed inputs per forward pass")
    harvest.add_argument("--quiet", action="store_true")
    harvest.set_defaults(handler=run_harvest)


def run_harvest(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise GroupccError(f"output {str(out)!r} already exists: pass --overwrite to replace it")
    run = load_composer_run(args.run, device=args.device)
    batches = composer_harvest_batches(run, args.layer, args.action, progress=not args.quiet, rows_per_forward=args.rows_per_forward)
    if out.exists():
        shutil.rmtree(out)
    store = harvest_to_store(
        out, batches, run.group.order, group=run.config.group, action=args.action, layer=args.layer,
        source=str(run.path.resolve()), metadata={"task": run.config.task, "arch": run.config.architecture.arch},
    )
    info = store.describe()
    print(f"harvested {info['shape'][0]} inputs x {info['shape'][1]} group elements x width {info['shape'][2]} "
          f"from {args.layer!r} of {run.path} ({args.action} action) into {out}")
