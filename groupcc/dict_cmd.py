"""``groupcc dict train`` and ``groupcc dict eval``: SAEs and group crosscoders on an activation store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from groupcc.crosscoders.config import ENCODER_READS, KINDS, SAE_INPUTS, SPARSITIES, DictionaryConfig
from groupcc.eval.dictionary_metrics import evaluate_dictionary_run
from groupcc.training.dictionary_trainer import TrainerConfig, train_dictionary

from .options import add_options, option_values

DICTIONARY_OPTIONS = ["sparsity", "k", "l1_coefficient", "encoder_reads", "sae_input", "aux_k", "aux_coefficient",
                      "dead_after_steps", "threshold_momentum", "decoder_init_norm"]
TRAINER_OPTIONS = ["steps", "batch_size", "lr", "beta1", "beta2", "lr_warmup_fraction", "lr_decay_fraction",
                   "l1_warmup_fraction", "grad_clip_norm", "seed", "device", "log_every", "checkpoint_every",
                   "window_shards", "init_sample_rows"]


def add_dict_commands(commands) -> None:
    dictionary = commands.add_parser("dict", help="train and evaluate SAEs and group crosscoders")
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
    evaluate.add_argument("--max-rows", type=int, help="evaluate on at most this many rows")
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--quiet", action="store_true")
    evaluate.set_defaults(handler=run_eval)


def run_train(args: argparse.Namespace) -> None:
    options = option_values(args, DICTIONARY_OPTIONS + TRAINER_OPTIONS)
    dictionary = train_dictionary(args.acts, args.kind, n_features=args.n_features, out=args.out, resume=args.resume,
                                  overwrite=args.overwrite, progress=not args.quiet, **options)
    last = dictionary.history[-1] if dictionary.history else {}
    print(f"trained a {args.kind} ({args.sparsity}, F = {args.n_features}) on {args.acts} for {args.steps} steps: "
          f"FVU {last.get('fvu', float('nan')):.4f}, L0 {last.get('l0', float('nan')):.2f} (last training batch)\n"
          f"run: {args.out}   next: groupcc dict eval {args.out} --acts {args.acts}")


def run_eval(args: argparse.Namespace) -> None:
    summary = evaluate_dictionary_run(args.run, args.acts, max_rows=args.max_rows, progress=not args.quiet)
    if args.json:
        print(json.dumps(summary, indent=1))
        return
    blocks = summary["fvu_per_block"]
    print(f"{summary['kind']} ({summary['sparsity']}, F = {summary['n_features']}) on {summary['n_inputs']} inputs: "
          f"FVU {summary['fvu']:.4f} (identity block {blocks[0]:.4f}, worst block {max(blocks):.4f}), L0 {summary['l0']:.2f}, "
          f"dead {summary['dead_fraction']:.1%}, dense {summary['dense_fraction']:.1%}\n"
          f"wrote {Path(args.run) / 'evaluation.json'} and {Path(args.run) / 'plots' / 'feature_density.png'}")
