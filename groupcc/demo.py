"""``groupcc demo``: the whole chain on a small built-in default, as the commands a user would type.

composer train → composer eval → harvest → dict train (crosscoder, SAE) → dict eval → analyze → report.
Each step is printed as its ``groupcc`` command line, so the demo doubles as a recipe for other groups.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import time
from pathlib import Path

from groupcc.errors import GroupccError

from groupcc.groups import get_group

#: Small enough for a laptop CPU: S4 (24 elements) groks in seconds with most pairs in the training set.
DEMO_COMPOSER = {"mlp": {"epochs": 8000, "train_frac": 0.8, "lr": 3e-3}, "transformer": {"epochs": 20000, "train_frac": 0.8, "lr": 3e-3}}
DEMO_LAYER = {"mlp": "hidden", "transformer": "hidden"}
#: ReLU + L1 dictionaries: their features follow the composer's irreps (top-k ones tend to memorise single pairs).
DEMO_DICTIONARY = {"sparsity": "l1", "l1": 2.0, "steps": 3000, "batch_size": 256, "lr": 1e-3}


def demo_features(group_order: int) -> int:
    """``|G|²/9`` features, clipped to 16..128: with as many features as a few per pair a dictionary memorises
    pairs (features that fire on one pair mix every irrep); measured on S4 and D6."""
    return int(min(128, max(16, group_order**2 // 9)))


def add_demo_command(commands) -> None:
    demo = commands.add_parser("demo", help="the whole chain on a small default: composer, crosscoder and SAE, analysis, report")
    demo.add_argument("--out", default="runs/demo", help="directory for every run of the demo (default runs/demo)")
    demo.add_argument("--group", default="S4", help="group of the composer (default S4)")
    demo.add_argument("--arch", choices=["mlp", "transformer"], default="mlp")
    demo.add_argument("--action", default="left", help="group action on the pairs (left, right, conjugation)")
    demo.add_argument("--epochs", type=int, help="composer epochs (default: 8000 for the MLP, 20000 for the Transformer)")
    demo.add_argument("--features", type=int, help="dictionary features (default |G|²/9, clipped to 16..128)")
    demo.add_argument("--steps", type=int, default=DEMO_DICTIONARY["steps"], help="dictionary training steps")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing demo directory")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(handler=run_demo)


def demo_commands(args: argparse.Namespace, out: Path) -> list[list[str]]:
    """The ``groupcc`` command lines of the demo, in order."""
    composer, acts, report = out / "composer", out / "acts", out / "analysis"
    settings = {**DEMO_COMPOSER[args.arch], **({"epochs": args.epochs} if args.epochs else {})}
    quiet = ["--quiet"] if args.quiet else []
    order = get_group(args.group).order
    batch_size = min(DEMO_DICTIONARY["batch_size"], order**2)  # a batch cannot exceed the pairs
    dictionary = [
        "--features", str(args.features or demo_features(order)), "--sparsity", DEMO_DICTIONARY["sparsity"], "--l1", str(DEMO_DICTIONARY["l1"]),
        "--steps", str(args.steps), "--batch-size", str(batch_size), "--lr", str(DEMO_DICTIONARY["lr"]),
        "--seed", str(args.seed), "--device", args.device, *quiet,
    ]
    return [
        ["composer", "train", "--group", args.group, "--arch", args.arch, "--seed", str(args.seed), "--out", str(composer),
         "--epochs", str(settings["epochs"]), "--train-frac", str(settings["train_frac"]), "--lr", str(settings["lr"]),
         "--device", args.device, *quiet],
        ["composer", "eval", str(composer), *quiet],
        ["harvest", "--run", str(composer), "--layer", DEMO_LAYER[args.arch], "--action", args.action, "--out", str(acts),
         "--device", args.device, *quiet],
        ["dict", "train", "--acts", str(acts), "--kind", "crosscoder", "--out", str(out / "crosscoder"), *dictionary],
        ["dict", "train", "--acts", str(acts), "--kind", "sae", "--sae-input", "identity", "--out", str(out / "sae"), *dictionary],
        ["dict", "eval", str(out / "crosscoder"), "--acts", str(acts), *quiet],
        ["dict", "eval", str(out / "sae"), "--acts", str(acts), *quiet],
        ["analyze", str(out / "crosscoder"), "--compare", str(out / "sae"), "--out", str(report), "--seed", str(args.seed), *quiet],
        ["report", str(report)],
    ]


def run_demo(args: argparse.Namespace) -> None:
    from .cli import run_command

    get_group(args.group)  # fail on a bad name before anything is written
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise GroupccError(f"demo directory {str(out)!r} already exists: pass --overwrite to replace it, or choose another --out")
        shutil.rmtree(out)
    started = time.perf_counter()
    for command in demo_commands(args, out):
        print(f"\n$ groupcc {shlex.join(command)}", flush=True)
        run_command(command)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s. Open the report: {out / 'analysis' / 'report.html'}")
