"""``groupcc dict train`` and ``groupcc dict eval``: SAEs and group crosscoders on an activation store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from groupcc.crosscoders import DictionaryConfig, load_dictionary, read_dictionary_record
from groupcc.eval.dictionary_metrics import evaluate_dictionary, plot_feature_density
from groupcc.errors import GroupccError
from groupcc.training.activation_store import ActivationSource, ActivationStore, SelectBlocks, open_store
from groupcc.training.dictionary_trainer import TrainerConfig, train_dictionary
from groupcc.training.run_files import atomic_write_json

SAE_INPUTS = ("identity", "all")


def add_dict_commands(commands) -> None:
    dictionary = commands.add_parser("dict", help="train and evaluate SAEs and group crosscoders")
    sub = dictionary.add_subparsers(dest="dict_command", required=True, parser_class=type(dictionary))

    train = sub.add_parser("train", help="train a dictionary on an activation store")
    train.add_argument("--acts", required=True, help="activation store (from 'groupcc harvest')")
    train.add_argument("--kind", choices=["crosscoder", "sae"], required=True)
    train.add_argument("--features", type=int, required=True, help="number of dictionary features F")
    train.add_argument("--sparsity", choices=["l1", "topk", "batchtopk"], default="topk")
    train.add_argument("--k", type=int, default=32, help="active features per input (topk, batchtopk)")
    train.add_argument("--l1", type=float, default=5.0, dest="l1_coefficient", help="L1 coefficient (l1 sparsity)")
    train.add_argument("--encoder-reads", choices=["identity", "all"], default="identity", help="crosscoder encoder input")
    train.add_argument("--sae-input", choices=SAE_INPUTS, default="identity",
                       help="SAE inputs: the identity block only, or every block as its own sample")
    train.add_argument("--steps", type=int, default=5000)
    train.add_argument("--batch-size", type=int, default=1024)
    train.add_argument("--lr", type=float, default=3e-4)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    train.add_argument("--out", required=True, help="run directory")
    train.add_argument("--resume", action="store_true")
    train.add_argument("--overwrite", action="store_true")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(handler=run_train)

    evaluate = sub.add_parser("eval", help="FVU (pooled and per block), L0, dead and dense fractions")
    evaluate.add_argument("run", help="dictionary run directory")
    evaluate.add_argument("--acts", required=True, help="activation store to evaluate on")
    evaluate.add_argument("--max-rows", type=int, help="evaluate on at most this many rows")
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--quiet", action="store_true")
    evaluate.set_defaults(handler=run_eval)


def dictionary_input(store: ActivationSource, kind: str, sae_input: str | None) -> ActivationSource:
    """The store as this dictionary sees it: an SAE reads block 0 (``identity``) or every block (``all``)."""
    if kind == "sae" and sae_input == "identity":
        return SelectBlocks(store, [0])
    return store


def check_same_group(dictionary_dir: Path, record: dict, store: ActivationStore) -> str | None:
    """The store's group name (``None`` when it records none), which must be the one the dictionary was trained under."""
    name = store.manifest.get("group")
    trained_on = record["dictionary"].get("group")
    if trained_on not in (None, name):
        raise GroupccError(f"dictionary {str(dictionary_dir)!r} was trained on group {trained_on}, but {str(store.path)!r} holds activations of {name}")
    return name


def run_train(args: argparse.Namespace) -> None:
    store = open_store(args.acts)
    data = dictionary_input(store, args.kind, args.sae_input)
    group = store.manifest.get("group")
    config = DictionaryConfig(
        kind=args.kind, d=store.d, n_features=args.features, n_blocks=store.n_blocks if args.kind == "crosscoder" else 1,
        sparsity=args.sparsity, k=args.k, l1_coefficient=args.l1_coefficient, encoder_reads=args.encoder_reads, group=group,
    )
    trainer = TrainerConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device)
    record = {"acts": str(Path(args.acts).resolve()), "sae_input": args.sae_input if args.kind == "sae" else None}
    result = train_dictionary(data, config, trainer, args.out, resume=args.resume, overwrite=args.overwrite,
                              progress=not args.quiet, record=record)
    last = result.history[-1] if result.history else {}
    print(f"trained a {args.kind} ({args.sparsity}, F = {args.features}) on {args.acts} for {args.steps} steps: "
          f"FVU {last.get('fvu', float('nan')):.4f}, L0 {last.get('l0', float('nan')):.2f}\n"
          f"run: {args.out}   next: groupcc dict eval {args.out} --acts {args.acts}")


def run_eval(args: argparse.Namespace) -> None:
    record = read_dictionary_record(args.run)
    dictionary = load_dictionary(args.run)
    store = open_store(args.acts)
    check_same_group(Path(args.run), record, store)
    data = dictionary_input(store, dictionary.config.kind, record.get("sae_input"))
    metrics = evaluate_dictionary(dictionary, data, max_rows=args.max_rows, progress=not args.quiet)
    summary = {"acts": str(Path(args.acts).resolve()), **metrics.summary()}
    atomic_write_json(Path(args.run) / "evaluation.json", summary)
    plot_feature_density(metrics, Path(args.run) / "plots" / "feature_density.png", title=f"{dictionary.config.kind} feature density")
    if args.json:
        print(json.dumps(summary, indent=1))
        return
    blocks = summary["fvu_per_block"]
    print(f"{dictionary.config.kind} ({dictionary.config.sparsity}, F = {dictionary.config.n_features}) on {summary['n_inputs']} inputs: "
          f"FVU {summary['fvu']:.4f} (identity block {blocks[0]:.4f}, worst block {max(blocks):.4f}), L0 {summary['l0']:.2f}, "
          f"dead {summary['dead_fraction']:.1%}, dense {summary['dense_fraction']:.1%}\n"
          f"wrote {Path(args.run) / 'evaluation.json'} and {Path(args.run) / 'plots' / 'feature_density.png'}")
