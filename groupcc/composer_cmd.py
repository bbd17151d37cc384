"""``groupcc composer train`` and ``groupcc composer eval``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from groupcc.eval.composer_evaluation import evaluate_composer
from groupcc.eval.composer_metrics import DEFAULT_KEY_THRESHOLD
from groupcc.training.composer_training import ComposerTrainingConfig, default_config, fit_composer, load_composer
from groupcc.training.composers import ACTIVATIONS, COMPOSER_LAYERS, ComposerArchitecture

from .options import add_options, option_values

# Below this test accuracy a composer has not learned the group operation, only its training pairs.
GENERALISED_ACCURACY = 0.99

TRAINING_OPTIONS = ["task", "seed", "epochs", "train_frac", "lr", "weight_decay", "n_checkpoints", "device"]
ARCH_OPTIONS = ["activation", "d_embed", "d_hidden", "d_model", "n_heads", "d_head", "d_mlp"]


def add_composer_commands(commands) -> None:
    composer = commands.add_parser("composer", help="train composer models on a group and reverse-engineer them")
    sub = composer.add_subparsers(dest="composer_command", required=True, parser_class=type(composer))

    train = sub.add_parser("train", help="train an MLP or Transformer composer (paper defaults for the paper's groups)")
    train.add_argument("--group", required=True, help="group name, e.g. S5, C113, D59, A5, S3xC2")
    train.add_argument("--arch", choices=sorted(COMPOSER_LAYERS), default="mlp")
    train.add_argument("--out", help="run directory (default runs/<group>_<arch>_s<seed>)")
    # Every default is None: default_config() then picks the paper's settings for its groups.
    add_options(train, ComposerTrainingConfig, TRAINING_OPTIONS, flags={"n_checkpoints": "--checkpoints"},
                defaults={"epochs": None, "train_frac": None, "lr": None, "weight_decay": None, "n_checkpoints": None},
                helps={"task": "word in a and b, e.g. a*b, a*b*a^-1, a^-1*b", "epochs": "full-batch epochs (default: the paper's for its groups)",
                       "train_frac": "fraction of the |G|² pairs used for training (default: the paper's for its groups)",
                       "n_checkpoints": "number of log-spaced checkpoints", "device": "auto (CUDA when present), cpu, cuda"})
    add_options(train, ComposerArchitecture, ARCH_OPTIONS, choices={"activation": sorted(ACTIVATIONS)},
                defaults={name: None for name in ARCH_OPTIONS}, helps={name: "(default: the paper's)" for name in ARCH_OPTIONS})
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out (its config is used)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run in --out (once the new one is complete)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=run_train)

    evaluate = sub.add_parser("eval", help="the paper's metrics, progress measures and plots for a trained run")
    evaluate.add_argument("run", help="run directory written by 'groupcc composer train'")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.add_argument("--threshold", type=float, default=DEFAULT_KEY_THRESHOLD, help="logit similarity above which a non-trivial irrep is key")
    evaluate.add_argument("--no-progress", action="store_true", help="skip the metrics over checkpoints")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(handler=run_eval)


def run_train(args: argparse.Namespace) -> None:
    config = default_config(args.group, args.arch, **option_values(args, TRAINING_OPTIONS + ARCH_OPTIONS))
    out = Path(args.out or f"runs/{args.group}_{args.arch}_s{config.seed}")
    existed = out.is_dir() and any(out.iterdir())
    try:
        metrics = fit_composer(config, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    except KeyboardInterrupt:
        if args.overwrite and existed and not args.resume:
            raise SystemExit(f"groupcc: interrupted before the new run was complete: {out} is unchanged") from None
        raise SystemExit(f"groupcc: interrupted; the state is saved: continue with 'groupcc composer train --group {args.group} --out {out} --resume'") from None
    print(
        f"trained {config.architecture.arch} on {config.group} ({config.task}) for {metrics['epochs_done']} epochs in "
        f"{metrics['wall_time_s']} s on {metrics['device']}: train loss {metrics['train_loss']:.2e}, "
        f"test loss {metrics['test_loss']:.2e}, test accuracy {metrics['test_accuracy']:.2%}\n"
        f"run: {out}   next: groupcc composer eval {out}"
    )
    if metrics["test_accuracy"] < GENERALISED_ACCURACY:
        # The representation-theoretic metrics describe a generalising algorithm; on a model that only
        # memorised its training pairs they are not meaningful, so say so before the user runs eval.
        print(
            f"warning: test accuracy {metrics['test_accuracy']:.2%} < {GENERALISED_ACCURACY:.0%}: the model memorised its "
            f"training pairs without generalising; try a larger --train-frac (now {config.train_frac}) or more "
            f"--epochs (now {config.epochs}), or another --seed",
            file=sys.stderr,
        )


def run_eval(args: argparse.Namespace) -> None:
    run = load_composer(args.run)
    metrics = evaluate_composer(run, key_threshold=args.threshold, over_checkpoints=not args.no_progress, progress=not args.quiet)
    print(json.dumps(metrics, indent=1) if args.json else format_metrics(run, metrics))


def format_metrics(run, metrics: dict) -> str:
    irreps = {irrep.name: irrep for irrep in run.group.irreps()}
    keys = ", ".join(f"{name} (dim {irreps[name].dim}, sim {metrics['logit_similarity'][name]:.3f})" for name in metrics["key_irreps"])
    fve = "  ".join(f"{name} {value:.2%}" for name, value in metrics["fve"].items())
    return "\n".join([
        f"{run.config.group} {run.config.architecture.arch} ({run.config.task}), run {run.path}",
        f"key irreps (logit similarity > {metrics['key_threshold']}): {keys or 'none'}",
        f"FVE  {fve}  MLP {metrics['fve_mlp']:.2%}  ρ(ab) {metrics['fve_rho_ab']:.2%}",
        f"loss test {metrics['test_loss']:.2e} (accuracy {metrics['test_accuracy']:.2%})  "
        f"excluded {metrics['excluded_loss']:.3g}  restricted {metrics['restricted_loss']:.2e}",
        f"wrote {run.path / 'metrics.json'} and plots in {run.path / 'plots'}",
    ])
