"""Several seeds trained as one batched model against the same seeds trained one after another, paper-size S5
MLP composer (|G| = 120, embeddings 256, hidden 128, 5760 training pairs, full batch, AdamW, float64 loss), in
the same process: epochs per second per seed and the speed-up.

Usage: python benchmarks/bench_seed_batch.py [--seeds 4] [--steps 100] [--arch mlp|transformer] [--device auto]
"""

from __future__ import annotations

import argparse

import torch
from bench_composer import timed  # the same warm-up and timing as the single-model benchmark

from groupcc.training.composer_training import ComposerData, _optimizer, _seed_losses, default_config, float64_cross_entropy
from groupcc.training.composers import SeedBatch, build_composer
from groupcc.training.devices import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--arch", choices=["mlp", "transformer"], default="mlp")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    config = default_config("S5", args.arch)
    seeds = list(range(1, args.seeds + 1))
    data = [ComposerData.build(default_config("S5", args.arch, seed=s), device) for s in seeds]
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(build_composer(config.architecture).to(device))

    # One after another: each seed its own model, optimiser and step.
    optimizers = [_optimizer(model, config) for model in models]
    subsets = [d.subset(d.train) for d in data]

    def sequential_step():
        for model, optimizer, (a, b, y) in zip(models, optimizers, subsets):
            loss = float64_cross_entropy(model(a, b), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    batch = SeedBatch(models).to(device)
    batch_optimizer = _optimizer(batch, config)
    a, b, y = (torch.stack(parts) for parts in zip(*subsets))

    def batched_step():
        losses = _seed_losses(batch(a, b), y)
        batch_optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        batch_optimizer.step()

    print(f"S5 {args.arch} composer, {len(seeds)} seeds x {y.shape[1]} training pairs, full batch, {device}, "
          f"torch threads {torch.get_num_threads()}")
    rounds = {"sequential": [], "batched": []}
    for _ in range(3):  # interleaved, so load changes hit both alike
        rounds["sequential"].append(timed(sequential_step, args.steps, device))
        rounds["batched"].append(timed(batched_step, args.steps, device))
    sequential, batched = min(rounds["sequential"]), min(rounds["batched"])
    print(f"{len(seeds)} sequential runs : {args.steps / sequential:8.1f} epochs/s of all seeds ({args.steps * len(seeds) / sequential:8.1f} seed-epochs/s)")
    print(f"one batched model: {args.steps / batched:8.1f} epochs/s of all seeds ({args.steps * len(seeds) / batched:8.1f} seed-epochs/s)"
          f"   speed-up {sequential / batched:.2f}x")


if __name__ == "__main__":
    main()
