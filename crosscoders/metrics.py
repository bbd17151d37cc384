"""Reconstruction and firing metrics of a dictionary, accumulated over batches (the trainer's held-out
figures and ``groupcc.eval.dictionary_metrics`` both use them).

- Fraction of variance unexplained, per block ``g`` and pooled over blocks, with per-dimension means::

      FVU_g = Σ_{n,j} (a_{n,g,j} − â_{n,g,j})² / Σ_{n,j} (a_{n,g,j} − μ_{g,j})²,   μ_{g,j} = mean_n a_{n,g,j}

  (pooled: both sums also run over ``g``), accumulated in float64 (Chan's pairwise update of the centred
  sums, so one pass suffices).
- L0: mean number of positive features per input.
- Feature density: the fraction of inputs on which a feature is positive; dead features never fire, dense
  ones fire on more than ``dense_threshold`` of the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from .codes import Codes
from .dictionary import Dictionary


@dataclass(frozen=True)
class DictionaryMetrics:
    """Metrics of a dictionary over ``n_inputs`` inputs; ``feature_density`` is ``[F]``."""

    fvu: float
    fvu_per_block: list[float]
    l0: float
    dead_fraction: float
    dense_fraction: float
    dense_threshold: float
    feature_density: np.ndarray
    n_inputs: int

    def summary(self) -> dict:
        """JSON-able scalars (the density histogram is a plot)."""
        return {
            "fvu": self.fvu, "fvu_per_block": self.fvu_per_block, "l0": self.l0, "dead_fraction": self.dead_fraction,
            "dense_fraction": self.dense_fraction, "dense_threshold": self.dense_threshold, "n_inputs": self.n_inputs,
        }


class MetricsAccumulator:
    """Running sums for :class:`DictionaryMetrics`: feed it batches with :meth:`update`, then :meth:`result`."""

    def __init__(self, n_blocks: int, d: int, n_features: int):
        self.count = 0
        self.mean_BD = np.zeros((n_blocks, d))
        self.centred_squares_BD = np.zeros((n_blocks, d))
        self.error_squares_BD = np.zeros((n_blocks, d))
        self.firing_counts = np.zeros(n_features, dtype=np.int64)
        self.active_total = 0

    def update(self, acts_NBD: torch.Tensor, recon_NBD: torch.Tensor, codes: Codes) -> None:
        """Add a batch. Centred sums merge as ``M = M_a + M_b + δ² n_a n_b / n`` with ``δ`` the mean difference."""
        acts, recon = acts_NBD.detach().double(), recon_NBD.detach().double()
        batch_count, batch_mean = len(acts), acts.mean(0)
        batch_centred_squares = (acts - batch_mean).pow(2).sum(0).cpu().numpy()
        self.error_squares_BD += (acts - recon).pow(2).sum(0).cpu().numpy()
        total = self.count + batch_count
        delta = batch_mean.cpu().numpy() - self.mean_BD
        self.centred_squares_BD += batch_centred_squares + delta**2 * self.count * batch_count / total
        self.mean_BD += delta * batch_count / total
        self.count = total
        self.firing_counts += codes.firing_counts().cpu().numpy()
        self.active_total += int(codes.l0().sum())

    def result(self, dense_threshold: float = 0.1) -> DictionaryMetrics:
        density = self.firing_counts / max(self.count, 1)
        return DictionaryMetrics(
            fvu=float(self.error_squares_BD.sum() / self.centred_squares_BD.sum()),
            fvu_per_block=(self.error_squares_BD.sum(1) / self.centred_squares_BD.sum(1)).tolist(),
            l0=self.active_total / max(self.count, 1),
            dead_fraction=float((density == 0).mean()),
            dense_fraction=float((density > dense_threshold).mean()),
            dense_threshold=dense_threshold,
            feature_density=density,
            n_inputs=self.count,
        )


def evaluate_batches(dictionary: Dictionary, batches: Iterable[torch.Tensor], dense_threshold: float = 0.1) -> DictionaryMetrics:
    """Metrics of ``dictionary`` (in eval mode, on its own device) over batches ``[n, B, d]`` of raw activations."""
    config = dictionary.config
    accumulator = MetricsAccumulator(config.n_blocks, config.d, config.n_features)
    accumulate(dictionary, batches, accumulator)
    return accumulator.result(dense_threshold)


@torch.no_grad()
def accumulate(dictionary: Dictionary, batches: Iterable[torch.Tensor], accumulator: MetricsAccumulator) -> None:
    """Add ``dictionary``'s reconstructions and codes of ``batches`` (in eval mode) to ``accumulator``."""
    was_training = dictionary.training
    dictionary.eval()
    try:
        for batch in batches:
            acts = batch.to(dictionary.b_dec.device)
            output = dictionary(acts)
            accumulator.update(acts, output.recon_NBD, output.codes)
    finally:
        dictionary.train(was_training)
