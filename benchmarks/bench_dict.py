"""Training throughput of a group crosscoder with |G| = 16 blocks, d = 128, F = 2048, for ReLU + L1 and TopK (k = 32).

groupcc's trainer (``fit_dictionary``: input scaling, dead-feature tracking, learning-rate schedule, gradient
clipping, finiteness checks; TopK decodes only the k active features) against a plain dense reference loop
written here (``nn.Parameter``s, dense encode and decode, the same Adam), in the same process, runs interleaved,
best of ``--repeats``. Also the achieved FLOP/s of each loop as a fraction of a large ``torch.matmul``
measured in the same run. FLOPs per input (a multiply-add is 2), with ``X = |G|·d``: encoder forward and
weight gradient ``4·d·F``; dense decoder forward, code gradient and weight gradient ``6·F·X``; sparse decoder
``6·k·X``.

Usage: python benchmarks/bench_dict.py [--batch-size 1024] [--steps 10] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch import nn

from groupcc.crosscoders import DictionaryConfig
from groupcc.training.activation_store import InMemoryActivations
from groupcc.training.dictionary_trainer import TrainerConfig, fit_dictionary

N_BLOCKS, D, N_FEATURES, K, L1_COEFFICIENT, LR = 16, 128, 2048, 32, 5.0, 1e-4


class DenseReference:
    """The plainest training loop: ``f = σ(a_0 W_enc + b_enc)``, ``â = f W_dec + b_dec`` (dense), Adam."""

    def __init__(self, sparsity: str, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.sparsity = sparsity
        self.W_enc = nn.Parameter(torch.randn(D, N_FEATURES, generator=generator) * 0.01)
        self.b_enc = nn.Parameter(torch.zeros(N_FEATURES))
        self.W_dec = nn.Parameter(torch.randn(N_FEATURES, N_BLOCKS * D, generator=generator) * 0.01)
        self.b_dec = nn.Parameter(torch.zeros(N_BLOCKS * D))
        self.optimizer = torch.optim.Adam([self.W_enc, self.b_enc, self.W_dec, self.b_dec], lr=LR)

    def step(self, batch_NBD: torch.Tensor) -> None:
        pre = batch_NBD[:, 0] @ self.W_enc + self.b_enc
        if self.sparsity == "topk":
            values, ids = pre.topk(K, dim=1)
            codes = torch.zeros_like(pre).scatter(1, ids, torch.relu(values))
        else:
            codes = torch.relu(pre)
        loss = (codes @ self.W_dec + self.b_dec - batch_NBD.flatten(1)).pow(2).sum(1).mean()
        if self.sparsity == "l1":
            block_norms = self.W_dec.unflatten(1, (N_BLOCKS, D)).norm(dim=-1).sum(-1)
            loss = loss + L1_COEFFICIENT * (codes @ block_norms).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


def reference_samples_per_second(sparsity: str, data: torch.Tensor, batch_size: int, steps: int) -> float:
    """Throughput over steps 2..steps−1 (the first step warms up)."""
    model, generator = DenseReference(sparsity), torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps):
        model.step(data[torch.randint(len(data), (batch_size,), generator=generator)])
        times.append(time.perf_counter())
    return (steps - 2) * batch_size / (times[-2] - times[0])


def groupcc_samples_per_second(sparsity: str, data: torch.Tensor, batch_size: int, steps: int) -> float:
    """Throughput of ``fit_dictionary`` over steps 2..steps−1 (the last one also logs, checkpoints and exports)."""
    config = DictionaryConfig(kind="crosscoder", d=D, n_features=N_FEATURES, n_blocks=N_BLOCKS, sparsity=sparsity,
                              k=K, l1_coefficient=L1_COEFFICIENT)
    trainer = TrainerConfig(steps=steps, batch_size=batch_size, lr=LR, device="cpu", log_every=steps,
                            checkpoint_every=steps, init_sample_rows=batch_size)
    times = []
    with tempfile.TemporaryDirectory() as run_dir:
        fit_dictionary(InMemoryActivations(data), config, trainer, f"{run_dir}/run", progress=False,
                         on_step=lambda step: times.append(time.perf_counter()))
    return (steps - 2) * batch_size / (times[-2] - times[0])


def flops_per_sample(decoded_features: int) -> int:
    return 4 * D * N_FEATURES + 6 * decoded_features * N_BLOCKS * D


def matmul_flops_per_second(size: int = 4096, repeats: int = 3) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10, help="training steps per timed run (at least 3)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each loop; the best counts")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = torch.randn(args.batch_size * args.steps, N_BLOCKS, D)
    peak = matmul_flops_per_second()
    print(f"crosscoder |G| = {N_BLOCKS}, d = {D}, F = {N_FEATURES}; batch {args.batch_size}, {args.steps} steps, "
          f"best of {args.repeats}; {torch.get_num_threads()} threads; large matmul {peak / 1e9:.1f} GFLOP/s", flush=True)
    for sparsity, decoded in (("l1", N_FEATURES), ("topk", K)):
        reference, ours = 0.0, 0.0
        for _ in range(args.repeats):
            reference = max(reference, reference_samples_per_second(sparsity, data, args.batch_size, args.steps))
            ours = max(ours, groupcc_samples_per_second(sparsity, data, args.batch_size, args.steps))
        ours_flops, reference_flops = ours * flops_per_sample(decoded), reference * flops_per_sample(N_FEATURES)
        label = "ReLU + L1" if sparsity == "l1" else f"TopK k={K}"
        print(f"{label:<11} groupcc {ours:8.0f} samples/s ({ours_flops / 1e9:6.1f} GFLOP/s, {ours_flops / peak:5.1%} of matmul)   "
              f"dense reference {reference:8.0f} samples/s ({reference_flops / 1e9:6.1f} GFLOP/s, {reference_flops / peak:5.1%})   "
              f"-> {ours / reference:.2f}x", flush=True)


if __name__ == "__main__":
    main()
