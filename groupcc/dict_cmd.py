"""``groupcc dict train``, ``dict eval``, ``dict export`` and ``dict import``: SAEs and group crosscoders on an
activation store, and SAEs in SAELens's layout."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from groupcc.crosscoders.config import ENCODER_READS, KINDS, SAE_INPUTS, SPARSITIES, DictionaryConfig
from groupcc.eval.dictionary_metrics import SPLITS, evaluate_dictionary_run
from groupcc.training.dictionary_trainer import TrainerConfig, train_dictionary
from groupcc.training.saelens_format import export_saelens, import_saelens_run

from .options import add_options, option_values

DICTIONARY_OPTIONS = ["sparsity", "k", "l1_coefficient", "l0_coefficient", "jumprelu_bandwidth", "jumprelu_init_threshold",
                      "matryoshka_sizes", "encoder_reads", "sae_input", "aux_k", "aux_coefficient", "dead_after_steps",
                      "threshold_momentum", "decoder_init_norm", "unit_norm_decoder"]
TRAINER_OPTIONS = ["steps", "batch_size", "lr", "beta1", "beta2", "lr_warmup_fraction", "lr_decay_fraction",
                   "l1_warmup_fraction", "grad_clip_norm", "seed", "device", "log_every", "checkpoint_every",
                   "window_shards", "init_sample_rows", "val_fraction", "val_log_rows"]
EXPORT_FORMATS = ("saelens",)


def add_dict_commands(commands) -> None:
    dictionary = commands.add_parser("dict", help="train, evaluate, export and import SAEs and group crosscoders")
    sub = dictionary.add_subparsers(dest="dict_command", required=True, parser_class=type(dictionary))

    train = sub.add_parser("train", help="train a dictionary on an activation store")
    train.add_argument("--acts", required=True, help="activation store (from 'groupcc harvest')")
    add_options(train, DictionaryConfig, ["kind", "n_features", *DICTIONARY_OPTIONS], flags={"n_features": "--features", "l1_coefficient": "--l1"},
                choices={"kind": KINDS, "sparsity": SPARSITIES, "encoder_reads": ENCODER_READS, "sae_input": SAE_INPUTS},
                required={"kind", "n_features"})
    add_options(train, TrainerConfig, TRAINER_OPTIONS)
    train.add_argument("--out", required=True, help="run directory")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run in --out (once the new one is complete)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=run_train)

    evaluate = sub.add_parser("eval", help="FVU (pooled and per block), L0, dead and dense fractions")
    evaluate.add_argument("run", help="dictionary run directory")
    evaluate.add_argument("--acts", required=True, help="activation store to evaluate on")
    evaluate.add_argument("--split", choices=SPLITS, default="all",
                          help="the run's held-out or training inputs (a run trained with --val-fraction), or all rows (default: all)")
    evaluate.add_argument("--max-rows", type=int, help="evaluate on at most this many rows")
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--quiet", action="store_true")
    evaluate.set_defaults(handler=run_eval)

    export = sub.add_parser("export", help="write a dictionary in another tool's file layout (an SAE for SAELens)")
    export.add_argument("run", help="dictionary run directory")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="saelens", help="file layout (default: saelens)")
    export.add_argument("--out", required=True, help="new directory (cfg.json + sae_weights.safetensors)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    export.set_defaults(handler=run_export)

    imported = sub.add_parser("import", help="read an SAE in SAELens's layout into a dictionary directory")
    imported.add_argument("path", help="SAELens SAE directory (cfg.json + sae_weights.safetensors)")
    imported.add_argument("--out", required=True, help="new dictionary directory")
    imported.add_argument("--group", help="group of the activations it will be analysed on, e.g. S4")
    imported.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    imported.set_defaults(handler=run_import)


def run_train(args: argparse.Namespace) -> None:
    options = option_values(args, DICTIONARY_OPTIONS + TRAINER_OPTIONS)
    dictionary = train_dictionary(args.acts, args.kind, n_features=args.n_features, out=args.out, resume=args.resume,
                                  overwrite=args.overwrite, progress=not args.quiet, **options)
    print(f"trained a {args.kind} ({args.sparsity}, F = {args.n_features}) on {args.acts} for {args.steps} steps: "
          f"{final_figures(dictionary.history, dictionary.held_out)}\n"
          f"run: {args.out}   next: groupcc dict eval {args.out} --acts {args.acts}")


def final_figures(history: list[dict], held_out: dict | None) -> str:
    """The end-of-training figures: held-out ones when there is a split, else the last training batch's."""
    if held_out is not None:
        return (f"held-out FVU {held_out['fvu']:.4f}, L0 {held_out['l0']:.2f}, dead {held_out['dead_fraction']:.1%} "
                f"({held_out['n_inputs']} held-out inputs)")
    last = history[-1] if history else {}
    return f"FVU {last.get('fvu', float('nan')):.4f}, L0 {last.get('l0', float('nan')):.2f} (last training batch)"


def run_eval(args: argparse.Namespace) -> None:
    summary = evaluate_dictionary_run(args.run, args.acts, split=args.split, max_rows=args.max_rows, progress=not args.quiet)
    if args.json:
        print(json.dumps(summary, indent=1))
        return
    blocks = summary["fvu_per_block"]
    inputs = f"{summary['n_inputs']} {'' if args.split == 'all' else args.split + ' '}inputs"
    print(f"{summary['kind']} ({summary['sparsity']}, F = {summary['n_features']}) on {inputs}: "
          f"FVU {summary['fvu']:.4f} (identity block {blocks[0]:.4f}, worst block {max(blocks):.4f}), L0 {summary['l0']:.2f}, "
          f"dead {summary['dead_fraction']:.1%}, dense {summary['dense_fraction']:.1%}\n"
          f"wrote {Path(args.run) / 'evaluation.json'} and {Path(args.run) / 'plots' / 'feature_density.png'}")


def run_export(args: argparse.Namespace) -> None:
    out = export_saelens(args.run, args.out, overwrite=args.overwrite)
    print(f"wrote {out} (SAELens: SAE.load_from_disk({str(out)!r}))")


def run_import(args: argparse.Namespace) -> None:
    out = import_saelens_run(args.path, args.out, group=args.group, overwrite=args.overwrite)
    print(f"imported {args.path} into {out}   next: groupcc dict eval {out} --acts STORE")
