"""Training steps per second of the paper-size S5 MLP composer (|G| = 120, embeddings 256, hidden 128,
train fraction 0.4 = 5760 pairs, full batch, AdamW, float64 loss) against a plain reference loop
(embedding, concatenation, linear, ReLU, unembedding, the same optimiser and loss) in the same process.

Usage: python benchmarks/bench_composer.py [--steps 300] [--device auto]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from groupcc.training.composer_training import ComposerData, default_config, float64_cross_entropy, _optimizer
from groupcc.training.composers import build_composer
from groupcc.training.devices import resolve_device


class PlainMLP(nn.Module):
    def __init__(self, n: int, d_embed: int, d_hidden: int):
        super().__init__()
        self.embed_a = nn.Embedding(n, d_embed)
        self.embed_b = nn.Embedding(n, d_embed)
        self.linear = nn.Linear(2 * d_embed, d_hidden, bias=False)
        self.unembed = nn.Linear(d_hidden, n, bias=False)

    def forward(self, a, b):
        x = torch.cat([self.embed_a(a), self.embed_b(b)], dim=-1)
        return self.unembed(torch.relu(self.linear(x)))


def timed(step, steps: int, device) -> float:
    """Seconds for ``steps`` calls of ``step`` after a warm-up (CUDA synchronised)."""
    for _ in range(10):  # warm-up
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def steps_per_second(model, config, a, b, y, steps: int, device) -> float:
    optimizer = _optimizer(model, config)

    def step():
        loss = float64_cross_entropy(model(a, b), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return steps / timed(step, steps, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    config = default_config("S5", "mlp")
    data = ComposerData.build(config, device)
    a, b, y = data.subset(data.train)
    torch.manual_seed(0)
    ours = build_composer(config.architecture).to(device)
    plain = PlainMLP(120, 256, 128).to(device)
    print(f"S5 MLP composer, {len(y)} training pairs, full batch, {device}, torch threads {torch.get_num_threads()}")
    rate_plain = steps_per_second(plain, config, a, b, y, args.steps, device)
    rate_ours = steps_per_second(ours, config, a, b, y, args.steps, device)
    print(f"plain reference loop: {rate_plain:8.1f} steps/s")
    print(f"groupcc MLPComposer : {rate_ours:8.1f} steps/s   ratio {rate_ours / rate_plain:.2f}x")
    print(f"paper schedule (250k epochs) would take {250_000 / rate_ours / 60:.1f} min here ({250_000 / rate_plain / 60:.1f} min with the reference)")


if __name__ == "__main__":
    main()
