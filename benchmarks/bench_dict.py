"""Training throughput of groupcc's TopK SAE and group crosscoder against a minimal sparsify-style reference.

The reference, written here in the style of EleutherAI's sparsify (``SparseCoder``): ``pre = (x − b_dec) W_encᵀ +
b_enc``, the ``k`` largest with a ReLU, a sparse decode that gathers the ``k`` decoder rows each input uses
(``embedding_bag`` with the activations as per-sample weights), the FVU as loss in one expression
(``Σ(x̂ − x)² / Σ(x − x̄)²``), Adam. It does nothing else: no input scaling, dead-feature tracking, AuxK,
learning-rate schedule, gradient clipping or finiteness checks.

groupcc's step is ``fit_dictionary``'s training loop (all of the above, TopK codes decoded by ``embedding_bag``),
timed between steps through ``on_step`` (the last step also logs, checkpoints and exports, so it is left out).
Both read the same in-memory activations. Runs are interleaved and the rate is the batch over the fastest single
step of ``--repeats`` runs (the machine may be loaded by others; the fastest step is the least disturbed one),
so that the ratio, measured in one process, is what the comparison rests on.

SAE sizes: F ∈ {256, 4096, 16384}, d ∈ {128, 512}, k ∈ {8, 32}, batch 1024. The crosscoder (``|G|`` blocks, the
encoder reading the identity block, the decoder writing all of them; batch 1024 inputs) reports block vectors
per second (``batch·|G|`` per step) against the reference SAE's vectors per second at the same d, F, k.

Usage: python benchmarks/bench_dict.py [--batch-size 1024] [--steps 8] [--repeats 3] [--threads N] [--quick]
       [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from groupcc.crosscoders import DictionaryConfig
from groupcc.training.activation_store import InMemoryActivations
from groupcc.training.dictionary_trainer import TrainerConfig, fit_dictionary

LR = 3e-4
SAE_SIZES = [(n_features, d, k) for n_features in (256, 4096, 16384) for d in (128, 512) for k in (8, 32)]
CROSSCODER_SIZES = [(24, 128, 4096, 32)]  # (|G|, d, F, k): an S4 composer's hidden layer


class SparsifyReference(nn.Module):
    """The minimal TopK SAE step: encoder, top-k, sparse decode, FVU, Adam."""

    def __init__(self, d: int, n_features: int, k: int, device: torch.device, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        decoder = torch.randn(n_features, d, generator=generator)
        decoder *= 0.1 / decoder.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(decoder.to(device))
        self.W_enc = nn.Parameter(decoder.clone().to(device))  # [F, d], as nn.Linear stores it
        self.b_enc = nn.Parameter(torch.zeros(n_features, device=device))
        self.b_dec = nn.Parameter(torch.zeros(d, device=device))
        self.k = k
        self.optimizer = torch.optim.Adam(self.parameters(), lr=LR)

    def step(self, x_Nd: torch.Tensor) -> None:
        values, ids = F.linear(x_Nd - self.b_dec, self.W_enc, self.b_enc).topk(self.k, dim=1, sorted=False)
        recon = F.embedding_bag(ids, self.W_dec, per_sample_weights=values.relu(), mode="sum") + self.b_dec
        loss = (recon - x_Nd).pow(2).sum() / (x_Nd - x_Nd.mean(0)).pow(2).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reference_rate(data_NBd: torch.Tensor, n_features: int, k: int, batch_size: int, steps: int, device: torch.device) -> float:
    """Inputs per second of the fastest of steps 2..steps−1 (the first warms up), reading the identity block."""
    model = SparsifyReference(data_NBd.shape[2], n_features, k, device)
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps):
        rows = torch.randint(len(data_NBd), (batch_size,), generator=generator)
        model.step(data_NBd[rows, 0].to(device, non_blocking=True))
        synchronize(device)
        times.append(time.perf_counter())
    return batch_size / fastest_step(times)


def fastest_step(times: list[float]) -> float:
    """The shortest interval between consecutive step ends, leaving out the first step and the last."""
    return min(later - earlier for earlier, later in zip(times[:-2], times[1:-1]))


def groupcc_rate(data_NBd: torch.Tensor, kind: str, n_features: int, k: int, batch_size: int, steps: int, device: torch.device) -> float:
    """Inputs per second of ``fit_dictionary``'s fastest step among steps 2..steps−1."""
    n_blocks = data_NBd.shape[1] if kind == "crosscoder" else 1
    config = DictionaryConfig(kind=kind, d=data_NBd.shape[2], n_features=n_features, n_blocks=n_blocks, sparsity="topk", k=k)
    trainer = TrainerConfig(steps=steps, batch_size=batch_size, lr=LR, device=str(device), log_every=steps,
                            checkpoint_every=steps, init_sample_rows=batch_size)
    source = InMemoryActivations(data_NBd if kind == "crosscoder" else data_NBd[:, :1])
    times = []

    def tick(step):
        synchronize(device)
        times.append(time.perf_counter())

    fit_dictionary(source, config, trainer, progress=False, on_step=tick)
    return batch_size / fastest_step(times)


def best_of(repeats: int, *rates) -> list[float]:
    """Interleaved runs of each rate function; the best of ``repeats`` for each."""
    best = [0.0] * len(rates)
    for _ in range(repeats):
        for index, rate in enumerate(rates):
            best[index] = max(best[index], rate())
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=8, help="training steps per timed run (at least 3)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each loop; the best counts")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="the two smallest SAE sizes and no crosscoder (a smoke test)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = args.batch_size * 4
    print(f"TopK training steps, batch {args.batch_size}, {args.steps} steps, best of {args.repeats}; {device}, "
          f"{torch.get_num_threads()} threads; inputs/s (ratio > 1: groupcc faster)", flush=True)
    print(f"{'F':>6} {'d':>4} {'k':>3} {'groupcc SAE':>12} {'reference':>12} {'ratio':>6}", flush=True)
    for n_features, d, k in SAE_SIZES[:2] if args.quick else SAE_SIZES:
        data = torch.randn(rows, 1, d, generator=torch.Generator().manual_seed(0))
        ours, reference = best_of(args.repeats,
                                  lambda: groupcc_rate(data, "sae", n_features, k, args.batch_size, args.steps, device),
                                  lambda: reference_rate(data, n_features, k, args.batch_size, args.steps, device))
        print(f"{n_features:>6} {d:>4} {k:>3} {ours:>12.0f} {reference:>12.0f} {ours / reference:>6.2f}", flush=True)
    if args.quick:
        return
    print(f"\ncrosscoder: block vectors/s (batch·|G| per step) against the reference SAE's vectors/s", flush=True)
    print(f"{'|G|':>4} {'d':>4} {'F':>6} {'k':>3} {'crosscoder':>12} {'reference':>12} {'ratio':>6}", flush=True)
    for n_blocks, d, n_features, k in CROSSCODER_SIZES:
        data = torch.randn(rows, n_blocks, d, generator=torch.Generator().manual_seed(0))
        ours, reference = best_of(args.repeats,
                                  lambda: groupcc_rate(data, "crosscoder", n_features, k, args.batch_size, args.steps, device) * n_blocks,
                                  lambda: reference_rate(data, n_features, k, args.batch_size, args.steps, device))
        print(f"{n_blocks:>4} {d:>4} {n_features:>6} {k:>3} {ours:>12.0f} {reference:>12.0f} {ours / reference:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
