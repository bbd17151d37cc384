"""Small groups under the default settings: test accuracy, epochs and wall time per group, architecture and seed.

Trains every group with no tuning flags (``groupcc.train_composer(group, arch, seeds=[1, 2])``, the two seeds
batched), the way ``groupcc composer train --group G [--arch transformer]`` does, and prints one JSON line per run
and a Markdown table at the end (the README's table of small groups comes from here).

    python benchmarks/bench_small_groups.py [--arch mlp|transformer|both] [--groups C5,D7,...] [--seeds 1,2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from groupcc.training.composer_training import train_composer

# A5 (order 60) is in the paper's table and gets the paper's settings (250k epochs), not the small-group ones.
NAMED = ([f"C{n}" for n in range(5, 61)] + [f"D{n}" for n in range(3, 31)]
         + ["S3", "S4", "A4", "Q8", "S3xC2", "C2xC2xC2"])
TRANSFORMER_SAMPLE = ["C5", "C7", "C10", "C13", "C31", "C60", "D3", "D7", "D15", "D30", "S3", "S4", "A4", "Q8",
                      "S3xC2", "C2xC2xC2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["mlp", "transformer", "both"], default="both")
    parser.add_argument("--groups", help="comma-separated (default: all named groups for the MLP, a sample for the Transformer)")
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for arch in (["mlp", "transformer"] if args.arch == "both" else [args.arch]):
        groups = args.groups.split(",") if args.groups else (NAMED if arch == "mlp" else TRANSFORMER_SAMPLE)
        for group in groups:
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                runs = train_composer(group, arch, out=Path(tmp), seeds=seeds, progress=False)
                wall = time.perf_counter() - started
                metrics = [json.loads((run.path / "metrics.json").read_text())["training"] for run in runs]
            row = {"group": group, "arch": arch, "order": runs[0].group.order, "train_frac": runs[0].config.train_frac,
                   "lr": runs[0].config.lr, "seeds": seeds, "test_accuracy": [m["test_accuracy"] for m in metrics],
                   "epochs": metrics[0]["epochs_done"], "stopped_early": metrics[0]["stopped_early"], "wall_s": round(wall, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| group | order | arch | train frac | test accuracy (seeds " + ", ".join(map(str, seeds)) + ") | epochs | wall (s, seeds batched) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        accuracy = " / ".join(f"{a:.1%}" for a in r["test_accuracy"])
        print(f"| {r['group']} | {r['order']} | {r['arch']} | {r['train_frac']} | {accuracy} | {r['epochs']} | {r['wall_s']} |")


if __name__ == "__main__":
    main()
