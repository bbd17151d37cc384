"""A control for "fixes" of the tiny groups: does a candidate make C5 learn, and does it do the same on a Latin
square that is not a group?

The tiny groups (C5, C7, C8, Q8) fit their training pairs but not their held-out ones, because a held-out pair's
answer is the one answer missing from its row and column of training pairs (README, "Why the tiny ones fail").
The obvious remedy is a penalty on the row and column parts of the logit table over all ``|G|²`` inputs (no
answers used): every row and column of a group's table is a permutation, so a model of the product has none,

    penalty = λ · (mean_{a,c} R(a,c)² + mean_{b,c} C(b,c)²),   R(a,c) = mean_b L(a,b,c) − mean_{a,b} L(a,b,c)

(``C`` the same over ``a``). This script trains the C5 MLP under the small-group defaults with λ = 0 and λ = 1,
seeds 1 and 2, on C5's table and on a loop of order 5 that is not a group (its element 1 has order 2), with the
same split. A penalty that also "learns" the loop completes the Latin square from its rows and columns rather than
learning the product, so it is no fix (measured: it does; the README says so).

    python benchmarks/bench_latin_penalty.py [--epochs 6000] [--penalty 1.0]
"""

from __future__ import annotations

import argparse
import time

import torch

from groupcc.training.composer_training import ComposerData, _optimizer, default_config, float64_cross_entropy
from groupcc.training.composers import build_composer

#: A Latin square of order 5 with identity row and column that is not a group: 1·1 = 0, and a group of order 5
#: has no element of order 2. A loop isotopic to a group is that group, so no relabelling of a, b or the answer
#: (which the composers cannot tell apart) turns it into C5.
LOOP5 = [[0, 1, 2, 3, 4], [1, 0, 3, 4, 2], [2, 3, 4, 0, 1], [3, 4, 1, 2, 0], [4, 2, 0, 1, 3]]


def main_effects_penalty(logits: torch.Tensor, n: int) -> torch.Tensor:
    """Mean square of the row and column parts of the logit table ``[n², n]`` (pairs ``a·n + b``)."""
    table = logits.view(n, n, n)
    table = table - table.mean(dim=(0, 1), keepdim=True)
    return table.mean(dim=1).pow(2).mean() + table.mean(dim=0).pow(2).mean()


def train(table: torch.Tensor | None, seed: int, penalty: float, epochs: int) -> float:
    """Test accuracy of the C5 MLP under the small-group defaults, on C5's table or on ``table``."""
    config = default_config("C5", "mlp", seed=seed)
    data = ComposerData.build(config, torch.device("cpu"))
    if table is not None:
        data.answer = table.reshape(-1)
    torch.manual_seed(seed)
    model = build_composer(config.architecture)
    optimizer = _optimizer(model, config)
    train_a, train_b, train_y = data.subset(data.train)
    for _ in range(epochs):
        loss = float64_cross_entropy(model(train_a, train_b), train_y)
        if penalty:
            loss = loss + penalty * main_effects_penalty(model(data.a, data.b), data.group.order)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    test_a, test_b, test_y = data.subset(data.test)
    with torch.no_grad():
        return float((model(test_a, test_b).argmax(-1) == test_y).double().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6000)
    parser.add_argument("--penalty", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| table | penalty | test accuracy, seed 1 / 2 | wall |\n|---|---|---|---|")
    for name, table in (("C5", None), ("loop of order 5 (not a group)", torch.tensor(LOOP5))):
        for penalty in (0.0, args.penalty):
            started = time.perf_counter()
            accuracies = [train(table, seed, penalty, args.epochs) for seed in (1, 2)]
            print(f"| {name} | {penalty:g} | {' / '.join(f'{a:.0%}' for a in accuracies)} | {time.perf_counter() - started:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
