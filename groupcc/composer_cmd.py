"""``groupcc composer train`` and ``groupcc composer eval``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from groupcc.eval.composer_metrics import DEFAULT_KEY_THRESHOLD, composer_metrics, progress_measures
from groupcc.eval.composer_plots import plot_logit_similarity, plot_progress_measures, plot_training_curves
from groupcc.training.composer_training import default_config, load_composer_run, train_composer
from groupcc.training.run_files import atomic_write_json, read_json

# Below this test accuracy a composer has not learned the group operation, only its training pairs.
GENERALISED_ACCURACY = 0.99

ARCH_OPTIONS = ["activation", "d_embed", "d_hidden", "d_model", "n_heads", "d_head", "d_mlp"]


def add_composer_commands(commands) -> None:
    composer = commands.add_parser("composer", help="train composer models on a group and reverse-engineer them")
    sub = composer.add_subparsers(dest="composer_command", required=True, parser_class=type(composer))

    train = sub.add_parser("train", help="train an MLP or Transformer composer (paper defaults for the paper's groups)")
    train.add_argument("--group", required=True, help="group name, e.g. S5, C113, D59, A5, S3xC2")
    train.add_argument("--arch", choices=["mlp", "transformer"], default="mlp")
    train.add_argument("--task", default="a*b", help="word in a and b, e.g. a*b, a*b*a^-1, a^-1*b (default a*b)")
    train.add_argument("--seed", type=int, default=1)
    train.add_argument("--out", help="run directory (default runs/<group>_<arch>_s<seed>)")
    train.add_argument("--epochs", type=int, help="full-batch epochs (default: the paper's for its groups)")
    train.add_argument("--train-frac", type=float, help="fraction of the |G|² pairs used for training")
    train.add_argument("--lr", type=float)
    train.add_argument("--weight-decay", type=float)
    train.add_argument("--checkpoints", type=int, dest="n_checkpoints", help="number of log-spaced checkpoints (default 40)")
    train.add_argument("--activation", choices=["relu", "gelu", "quadratic"])
    for name in ARCH_OPTIONS[1:]:
        train.add_argument(f"--{name.replace('_', '-')}", type=int, dest=name)
    train.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out (its config is used)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
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
    overrides = {name: getattr(args, name) for name in ARCH_OPTIONS}
    overrides.update(task=args.task, seed=args.seed, epochs=args.epochs, train_frac=args.train_frac, lr=args.lr,
                     weight_decay=args.weight_decay, n_checkpoints=args.n_checkpoints, device=args.device)
    config = default_config(args.group, args.arch, **overrides)
    out = Path(args.out or f"runs/{args.group}_{args.arch}_s{args.seed}")
    resume_hint = f"groupcc: interrupted; the state is saved: continue with 'groupcc composer train --group {args.group} --out {out} --resume'"
    try:
        metrics = train_composer(config, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    except KeyboardInterrupt:
        raise SystemExit(resume_hint) from None
    if metrics.get("interrupted"):  # SIGTERM: the loop saved its state and stopped
        raise SystemExit(resume_hint)
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
    run = load_composer_run(args.run)
    metrics = composer_metrics(run, key_threshold=args.threshold)
    plots = run.path / "plots"
    history_file = run.path / "history.json"
    if history_file.exists():
        plot_training_curves(read_json(history_file), plots / "training_curves.png", title=f"{run.config.group} {run.config.architecture.arch}")
    plot_logit_similarity(metrics["logit_similarity"], metrics["key_irreps"], args.threshold, plots / "logit_similarity.png")
    if not args.no_progress and run.checkpoints():
        records = progress_measures(run, metrics["key_irreps"], progress=not args.quiet)
        atomic_write_json(run.path / "progress.json", records)
        plot_progress_measures(records, plots / "progress_measures.png")
    existing = read_json(run.path / "metrics.json") if (run.path / "metrics.json").exists() else {}
    existing["interpretability"] = metrics
    atomic_write_json(run.path / "metrics.json", existing)
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
