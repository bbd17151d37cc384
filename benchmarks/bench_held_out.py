"""Held-out FVU of groupcc's TopK SAE against a SAELens-style TopK SAE, on the same activations and the same split.

The data: a store's identity block (``[N, d]``: an SAE on one activation per input), split into training and
held-out inputs by groupcc's own split (``val_fraction``, seed 0), which both trainers then use.

groupcc: ``fit_dictionary`` with its defaults (input scale to mean norm ``sqrt(d)``, ``b_dec`` at the training
mean, decoder rows at norm 0.1, gradient clipping at 1, AuxK, linear lr decay), ``sparsity="topk"``.

The reference, written here in the style of SAELens 6's ``TopKTrainingSAE`` with its defaults: decoder rows at
norm 0.1 with ``W_enc = W_decᵀ``, ``b_dec`` set to the training mean, ``pre = (x − b_dec) W_enc + b_enc``, the
``k`` largest with a ReLU, loss ``Σ‖x − x̂‖²`` per input (mean over the batch) plus the AuxK loss of Gao et al.
(the ``d/2`` largest dead latents, a latent dead after 1000 steps without firing, reconstructing the residual,
normalised by the residual's variance, scaled by ``min(1, n_dead/(d/2))``, coefficient 1), Adam at a constant
learning rate, no input scaling and no clipping.

Both: ``steps`` steps of ``batch`` training inputs (groupcc reads shuffled epochs, the reference draws with
replacement; both seeded), Adam ``lr``, betas (0.9, 0.999).
FVU on held-out inputs ``Σ‖x − x̂‖² / Σ‖x − x̄‖²`` (``x̄``: the held-out mean), L0 per input; ``--seeds`` seeds,
mean [min, max].

Usage: python benchmarks/bench_held_out.py STORE [--features 256] [--k 8 ...] [--steps 3000] [--batch 128]
       [--lr 3e-4] [--val-fraction 0.2] [--seeds 3] [--threads 1]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from groupcc.crosscoders import DictionaryConfig
from groupcc.training.activation_store import RowSubset, open_store
from groupcc.training.dictionary_trainer import TrainerConfig, fit_dictionary, held_out_split

DEAD_AFTER = 1000


class SAELensStyleTopK(nn.Module):
    def __init__(self, train_Nd: torch.Tensor, n_features: int, k: int, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        decoder = torch.randn(n_features, train_Nd.shape[1], generator=generator)
        decoder *= 0.1 / decoder.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(decoder)
        self.W_enc = nn.Parameter(decoder.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(n_features))
        self.b_dec = nn.Parameter(train_Nd.mean(0).clone())
        self.k = k
        self.register_buffer("since_fired", torch.zeros(n_features, dtype=torch.long))

    def pre(self, x_Nd: torch.Tensor) -> torch.Tensor:
        return (x_Nd - self.b_dec) @ self.W_enc + self.b_enc

    def codes(self, pre_NF: torch.Tensor) -> torch.Tensor:
        values, ids = pre_NF.topk(self.k, dim=1)
        return torch.zeros_like(pre_NF).scatter(1, ids, values.relu())

    def forward(self, x_Nd: torch.Tensor) -> torch.Tensor:
        return self.codes(self.pre(x_Nd)) @ self.W_dec + self.b_dec

    def loss(self, x_Nd: torch.Tensor) -> torch.Tensor:
        pre = self.pre(x_Nd)
        codes = self.codes(pre)
        recon = codes @ self.W_dec + self.b_dec
        mse = (recon - x_Nd).pow(2).sum(1).mean()
        with torch.no_grad():
            self.since_fired.add_(1).masked_fill_((codes > 0).any(0), 0)
        dead = self.since_fired >= DEAD_AFTER
        n_dead = int(dead.sum())
        if n_dead == 0:
            return mse
        k_aux = x_Nd.shape[1] // 2
        residual = (x_Nd - recon).detach()
        aux_values, aux_ids = pre.masked_fill(~dead, float("-inf")).topk(min(k_aux, n_dead), dim=1)
        aux_recon = torch.zeros_like(pre).scatter(1, aux_ids, aux_values.relu()) @ self.W_dec
        aux = (aux_recon - residual).pow(2).sum(1).mean() / (residual - residual.mean(0)).pow(2).sum(1).mean()
        return mse + min(1.0, n_dead / k_aux) * aux


def held_out_fvu(model, x_Nd: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        if isinstance(model, SAELensStyleTopK):
            codes = model.codes(model.pre(x_Nd))
            recon = codes @ model.W_dec + model.b_dec
            l0 = (codes > 0).sum(1).float().mean().item()
        else:
            output = model.eval()(x_Nd[:, None, :])
            recon, l0 = output.recon_NBD[:, 0], output.codes.l0().float().mean().item()
    return ((recon - x_Nd).pow(2).sum() / (x_Nd - x_Nd.mean(0)).pow(2).sum()).item(), l0


def train_reference(train_Nd: torch.Tensor, n_features: int, k: int, steps: int, batch: int, lr: float, seed: int):
    model = SAELensStyleTopK(train_Nd, n_features, k, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = train_Nd[torch.randint(len(train_Nd), (batch,), generator=generator)]
        optimizer.zero_grad(set_to_none=True)
        model.loss(x).backward()
        optimizer.step()
    return model


def summary(values: list[float]) -> str:
    return f"{np.mean(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store")
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--k", type=int, nargs="+", default=[8])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    source = open_store(args.store)
    trainer = TrainerConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, val_fraction=args.val_fraction, seed=0)
    config = DictionaryConfig(kind="sae", d=source.d, n_features=args.features, sparsity="topk", k=args.k[0])
    split = held_out_split(source, config, trainer)
    train_Nd = torch.from_numpy(np.ascontiguousarray(RowSubset(source, split.train_rows).read_rows(np.arange(len(split.train_rows)))[:, 0]))
    held_Nd = torch.from_numpy(np.ascontiguousarray(RowSubset(source, split.held_out_rows).read_rows(np.arange(len(split.held_out_rows)))[:, 0]))
    print(f"{args.store}: {len(train_Nd)} training / {len(held_Nd)} held-out inputs, d = {source.d}, F = {args.features}, "
          f"{args.steps} steps of {args.batch}, lr {args.lr}, {args.seeds} seeds")
    print("| k | groupcc TopK held-out FVU (L0) | SAELens-style TopK held-out FVU (L0) |")
    print("|---|---|---|")
    for k in args.k:
        ours, theirs, our_l0, their_l0 = [], [], [], []
        for seed in range(args.seeds):
            config = DictionaryConfig(kind="sae", d=source.d, n_features=args.features, sparsity="topk", k=k)
            seeded = TrainerConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, seed=seed)
            result = fit_dictionary(RowSubset(source, split.train_rows), config, seeded, progress=False)
            fvu, l0 = held_out_fvu(result.dictionary, held_Nd)
            ours.append(fvu), our_l0.append(l0)
            fvu, l0 = held_out_fvu(train_reference(train_Nd, args.features, k, args.steps, args.batch, args.lr, seed), held_Nd)
            theirs.append(fvu), their_l0.append(l0)
        print(f"| {k} | {summary(ours)} ({np.mean(our_l0):.1f}) | {summary(theirs)} ({np.mean(their_l0):.1f}) |", flush=True)


if __name__ == "__main__":
    main()
