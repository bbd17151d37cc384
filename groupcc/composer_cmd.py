"""``groupcc composer train`` and ``groupcc composer eval``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from groupcc.eval.composer_evaluation import evaluate_composer
from groupcc.eval.composer_metrics import DEFAULT_KEY_THRESHOLD, run_held_out_margins
from groupcc.eval.composer_table import composer_table, to_csv, to_markdown
from groupcc.training.composer_training import (
    ComposerTrainingConfig,
    check_resume,
    default_config,
    fit_composer_seeds,
    load_composer,
    load_training_config,
    seed_directories,
)
from groupcc.training.composers import ACTIVATIONS, COMPOSER_LAYERS, INITS, ComposerArchitecture
from groupcc.training.paper_import import import_paper_run
from groupcc.training.runs import METRICS, read_json

from .options import add_options, option_values

# Below this test accuracy a composer has not learned the group operation, only its training pairs.
GENERALISED_ACCURACY = 0.99
# Up to this many logits (|G|³) a run that did not generalise is diagnosed with held_out_margins after training.
DIAGNOSED_LOGITS = 10**7

TRAINING_OPTIONS = ["task", "seed", "epochs", "train_frac", "lr", "weight_decay", "n_checkpoints", "patience", "device"]
MAX_SEEDS = 64
ARCH_OPTIONS = ["activation", "d_embed", "d_hidden", "d_model", "n_heads", "d_head", "d_mlp", "init"]


def add_composer_commands(commands) -> None:
    composer = commands.add_parser("composer", help="train composer models on a group and reverse-engineer them")
    sub = composer.add_subparsers(dest="composer_command", required=True, parser_class=type(composer))

    train = sub.add_parser("train", help="train an MLP or Transformer composer (paper defaults for the paper's groups)")
    train.add_argument("--group", required=True, help="group name, e.g. S5, C113, D59, A5, S3xC2")
    train.add_argument("--arch", choices=sorted(COMPOSER_LAYERS), default="mlp")
    train.add_argument("--out", help="run directory (default runs/<group>_<arch>_s<seed>)")
    # Every default is None: default_config() then picks the paper's settings for its groups.
    add_options(train, ComposerTrainingConfig, TRAINING_OPTIONS, flags={"n_checkpoints": "--checkpoints"},
                defaults={"seed": None, "epochs": None, "train_frac": None, "lr": None, "weight_decay": None, "n_checkpoints": None, "patience": None},
                helps={"task": "word in a and b, e.g. a*b, a*b*a^-1, a^-1*b", "epochs": "full-batch epochs (default: the paper's for its groups)",
                       "train_frac": "fraction of the |G|² pairs used for training (default: the paper's for its groups)",
                       "n_checkpoints": "number of log-spaced checkpoints", "device": "auto (CUDA when present), cpu, cuda",
                       "patience": "early stopping: stop once test accuracy has been 100% for this many epochs and the test loss "
                                   "has not reached half its earlier best in them; 0 trains every epoch (default: on for groups outside "
                                   "the paper's table)"})
    add_options(train, ComposerArchitecture, ARCH_OPTIONS, choices={"activation": sorted(ACTIVATIONS), "init": list(INITS)},
                defaults={name: None for name in ARCH_OPTIONS},
                helps={**{name: "(default: the paper's)" for name in ARCH_OPTIONS},
                       "init": "weight initialisation: paper (as the paper's code; default) or legacy (groupcc < 0.2: MLP embeddings 16x larger)"})
    train.add_argument("--seeds", type=seed_list, help="train several seeds at once as one batched model, e.g. 1-4 or 1,3,5; "
                       "each goes to <out>/s<seed> (default out: runs/<group>_<arch>)")
    train.add_argument("--no-early-stop", action="store_true", help="train every epoch (same as --patience 0)")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out (its config is used)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run in --out (once the new one is complete)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=run_train)

    imports = sub.add_parser("import", help="import a run directory of the paper's code (cfg.json + model.pt) as a composer run")
    imports.add_argument("paper_run", help="the paper's run directory: cfg.json and model.pt (a state dict)")
    imports.add_argument("--out", required=True, help="composer run directory to write")
    imports.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    imports.set_defaults(handler=run_import)

    table = sub.add_parser("table", help="the paper's Table 3 for trained runs: mean ± sd over seeds beside the paper's values")
    table.add_argument("runs", nargs="+", help="composer run directories (several seeds of a group form one row)")
    table.add_argument("--format", choices=["markdown", "csv"], default="markdown")
    table.add_argument("--threshold", type=float, default=DEFAULT_KEY_THRESHOLD, help="logit similarity above which a non-trivial irrep is key")
    table.set_defaults(handler=run_table)

    evaluate = sub.add_parser("eval", help="the paper's metrics, progress measures and plots for a trained run")
    evaluate.add_argument("run", help="run directory written by 'groupcc composer train'")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.add_argument("--threshold", type=float, default=DEFAULT_KEY_THRESHOLD, help="logit similarity above which a non-trivial irrep is key")
    evaluate.add_argument("--no-progress", action="store_true", help="skip the metrics over checkpoints")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(handler=run_eval)


def seed_list(text: str) -> list[int]:
    """``"1-4"``, ``"1,3,5"`` or ``"1-3,7"`` as a list of distinct seeds (argparse type: errors are one line)."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            first, last = int(low), int(high) if high else int(low)
            if first < 0 or last < first or last - first >= MAX_SEEDS:
                raise ValueError
            seeds.extend(range(first, last + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seeds >= 0 such as 1-4 or 1,3,5") from None
    if len(set(seeds)) != len(seeds) or len(seeds) > MAX_SEEDS or max(seeds) >= 2**63:
        raise argparse.ArgumentTypeError(f"{text!r}: expected at most {MAX_SEEDS} distinct seeds below 2^63")
    return seeds


def run_train(args: argparse.Namespace) -> None:
    options = option_values(args, TRAINING_OPTIONS + ARCH_OPTIONS)
    if args.no_early_stop:
        options["patience"] = 0
    if args.seeds and args.seed is not None:
        raise SystemExit("groupcc: give either --seed or --seeds, not both")
    config = default_config(args.group, args.arch, **options)
    if args.seeds:
        outs = seed_directories(args.out or f"runs/{args.group}_{args.arch}", args.seeds)
        where = f"--seeds {','.join(map(str, args.seeds))}" + (f" --out {args.out}" if args.out else "")
    else:
        outs = [Path(args.out or f"runs/{args.group}_{args.arch}_s{config.seed}")]
        where = f"--out {outs[0]}"
    if args.resume:
        check_resume(outs, args.group, args.arch, options)
    existed = any(out.is_dir() and any(out.iterdir()) for out in outs)
    try:
        all_metrics = fit_composer_seeds(config, args.seeds or [config.seed], outs, resume=args.resume,
                                         overwrite=args.overwrite, progress=not args.quiet)
    except KeyboardInterrupt:
        if args.overwrite and existed and not args.resume:
            raise SystemExit(f"groupcc: interrupted before the new run was complete: {', '.join(map(str, outs))} unchanged") from None
        raise SystemExit(f"groupcc: interrupted; the state is saved: continue with 'groupcc composer train --group {args.group} "
                         f"--arch {args.arch} {where} --resume'") from None
    for out, metrics in zip(outs, all_metrics):
        config = load_training_config(out)  # on resume, the run's own settings
        seed = config.seed
        stopped = " (stopped early: converged)" if metrics["stopped_early"] else ""
        print(
            f"trained {config.architecture.arch} on {config.group} ({config.task}), seed {seed}, for {metrics['epochs_done']} "
            f"epochs{stopped} in {metrics['wall_time_s']} s on {metrics['device']}: train loss {metrics['train_loss']:.2e}, "
            f"test loss {metrics['test_loss']:.2e}, test accuracy {metrics['test_accuracy']:.2%}\n"
            f"run: {out}   next: groupcc composer eval {out}"
        )
        if metrics["test_accuracy"] < GENERALISED_ACCURACY:
            # The representation-theoretic metrics describe a generalising algorithm; on a model that only
            # memorised its training pairs they are not meaningful, so say so before the user runs eval.
            print(
                f"warning: seed {seed}: test accuracy {metrics['test_accuracy']:.2%} < {GENERALISED_ACCURACY:.0%}: the model "
                f"fits its training pairs without generalising; try a larger --train-frac (now {config.train_frac}) "
                f"or more --epochs (now {config.epochs}), or another seed",
                file=sys.stderr,
            )
            run = load_composer(out)
            if run.group.order**3 <= DIAGNOSED_LOGITS:
                margins = run_held_out_margins(run)
                if margins["interaction_answer_first"] > margins["answer_first"] and margins["row_column"] < 0:
                    # The tiny groups' failure (README, small groups): the algorithm is there, the veto wins.
                    print(f"  the interaction of a and b in the logits ranks the held-out answer first on "
                          f"{margins['interaction_answer_first']:.0%} of the test pairs, but their separate row and column "
                          f"part outweighs it (mean margin {margins['row_column']:+.3g}), as in the README's tiny groups; "
                          f"'groupcc composer eval {out}' prints both", file=sys.stderr)


def run_import(args: argparse.Namespace) -> None:
    run, accuracy = import_paper_run(args.paper_run, args.out, overwrite=args.overwrite)
    print(f"imported the paper's {run.config.architecture.arch} on {run.config.group} (seed {run.config.seed}, "
          f"{len(run.data.train)} training pairs) into {args.out}   next: groupcc composer eval {args.out}")
    if accuracy < 1.0:
        print(f"warning: the imported model computes the product on {accuracy:.2%} of the pairs, not all: the checkpoint "
              f"is not a trained {run.config.group} composer, or its element order is not the paper's", file=sys.stderr)


def run_table(args: argparse.Namespace) -> None:
    rows = composer_table(args.runs, key_threshold=args.threshold)
    print(to_csv(rows) if args.format == "csv" else to_markdown(rows), end="")


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
        f"excluded {metrics['excluded_loss']:.3g}  restricted {metrics['restricted_loss']:.2e}  (the paper's definitions)",
        "ours: restricted with the mean kept " + f"{metrics['restricted_loss_with_mean']:.2e}"
        + (f", excluded through the residual path {metrics['excluded_loss_with_residual']:.3g}" if "excluded_loss_with_residual" in metrics else ""),
        *held_out_line(metrics),
        *paper_summary_line(run),
        f"wrote {run.path / 'metrics.json'} and plots in {run.path / 'plots'}",
    ])


def held_out_line(metrics: dict) -> list[str]:
    margins = metrics.get("held_out_margins")
    if not margins or margins["logits"] != margins["logits"]:  # no test pairs (NaN)
        return []
    return [f"held-out answer's logit margin (mean over test pairs): {margins['logits']:+.3g}, of which row and column "
            f"part {margins['row_column']:+.3g}, interaction {margins['interaction']:+.3g} (the interaction ranks it "
            f"first on {margins['interaction_answer_first']:.0%})"]


#: The paper's summary_metrics.json keys beside ours (an imported run keeps that file's numbers).
PAPER_SUMMARY_KEYS = [("W_a", "percent_x_embed_explained"), ("W_b", "percent_y_embed_explained"),
                      ("W_U", "percent_unembed_explained"), ("MLP", "percent_hidden_explained"),
                      ("ρ(ab)", "percent_hidden_xy_explained"), ("excluded", "total_hidden_excluded_loss"),
                      ("restricted", "total_hidden_restricted_loss"), ("test loss", "test_loss")]


def paper_summary_line(run) -> list[str]:
    """For a run imported from the paper's code with its summary_metrics.json: the paper's stored numbers."""
    path = run.path / METRICS
    stored = read_json(path, what="composer metrics", expect=dict).get("imported", {}).get("paper_summary_metrics") if path.exists() else None
    if not stored:
        return []
    parts = [f"{name} {stored[key]:.2%}" if not name.endswith(("loss", "excluded", "restricted")) else f"{name} {stored[key]:.3g}"
             for name, key in PAPER_SUMMARY_KEYS if key in stored]
    return [f"the paper's stored metrics (summary_metrics.json): {'  '.join(parts)}"] if parts else []
