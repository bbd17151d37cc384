"""``groupcc demo``: the whole chain on a small built-in default.

composer train → composer eval → harvest → dict train (crosscoder, SAE) → dict eval → analyze → report.
Each step calls the library and is printed as the ``groupcc`` command line that does the same, so the demo
doubles as a recipe for other groups.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import time
from pathlib import Path

from groupcc.errors import GroupccError
from groupcc.eval.analysis import AnalysisSettings
from groupcc.eval.composer_evaluation import evaluate_composer
from groupcc.eval.dictionary_metrics import evaluate_dictionary_run
from groupcc.eval.pipeline import analyze_runs
from groupcc.eval.report import write_report
from groupcc.groups import get_group
from groupcc.training.composer_training import default_config, fit_composer
from groupcc.training.dictionary_trainer import train_dictionary
from groupcc.training.harvest import harvest
from groupcc.training.runs import lock, read_json

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
    get_group(args.group)  # fail on a bad name before anything is written
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise GroupccError(f"demo directory {str(out)!r} already exists: pass --overwrite to replace it, or choose another --out")
    started = time.perf_counter()
    # Built in place, not beside: its runs record each other's paths (the store its composer, a dictionary its store).
    with lock(out):
        if out.exists():
            shutil.rmtree(out)
        for command, step in zip(demo_commands(args, out), demo_steps(args, out)):
            print(f"\n$ groupcc {shlex.join(command)}", flush=True)
            print(step())
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s. Open the report: {out / 'analysis' / 'report.html'}")


def demo_steps(args: argparse.Namespace, out: Path) -> list:
    """The library calls behind :func:`demo_commands`, one per command, each returning what the command prints."""
    composer, acts, analysis = out / "composer", out / "acts", out / "analysis"
    settings = {**DEMO_COMPOSER[args.arch], **({"epochs": args.epochs} if args.epochs else {})}
    progress = not args.quiet
    order = get_group(args.group).order
    dictionary = {
        "n_features": args.features or demo_features(order), "sparsity": DEMO_DICTIONARY["sparsity"],
        "l1_coefficient": DEMO_DICTIONARY["l1"], "steps": args.steps, "batch_size": min(DEMO_DICTIONARY["batch_size"], order**2),
        "lr": DEMO_DICTIONARY["lr"], "seed": args.seed, "device": args.device, "progress": progress,
    }

    def train():
        config = default_config(args.group, args.arch, seed=args.seed, device=args.device, **settings)
        metrics = fit_composer(config, composer, progress=progress)
        return f"trained {args.arch} on {args.group}: test accuracy {metrics['test_accuracy']:.2%}"

    def evaluate():
        metrics = evaluate_composer(composer, progress=progress)
        return f"key irreps {', '.join(metrics['key_irreps']) or 'none'}; MLP FVE {metrics['fve_mlp']:.2%}"

    def collect():
        store = harvest(composer, DEMO_LAYER[args.arch], args.action, out=acts, device=args.device, progress=progress)
        return f"harvested {' x '.join(map(str, store.shape))} activations"

    def dictionary_step(kind: str):
        def step():
            trained = train_dictionary(acts, kind, out=out / kind, **dictionary)
            return f"trained a {kind}: FVU {trained.history[-1]['fvu']:.4f} (last training batch)"
        return step

    def evaluation(kind: str):
        def step():
            summary = evaluate_dictionary_run(out / kind, acts, progress=progress)
            return f"{kind}: FVU {summary['fvu']:.4f}, L0 {summary['l0']:.2f}"
        return step

    def analyze():
        directory = analyze_runs([out / "crosscoder", out / "sae"], out=analysis, settings=AnalysisSettings(seed=args.seed), progress=progress)
        comparison = read_json(directory / "analysis.json")["comparison"]
        return "\n".join(f"{name}: ARI {scores['ari']:.3f}, purity {scores['purity']:.3f}, {scores['n_families']} families"
                         for name, scores in comparison.items() if "ari" in scores)

    def report():
        html, markdown = write_report(analysis)
        return f"report: {html}"

    return [train, evaluate, collect, dictionary_step("crosscoder"), dictionary_step("sae"), evaluation("crosscoder"),
            evaluation("sae"), analyze, report]
