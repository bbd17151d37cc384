"""How well a dictionary reconstructs activations and how its features fire, streamed over a source.

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
from pathlib import Path

import numpy as np
import torch

from groupcc.crosscoders import Codes, Dictionary
from groupcc.training.activation_store import ActivationSource, dictionary_input, open_store
from groupcc.training.dictionary_files import check_same_group, load_dictionary, read_dictionary_record
from groupcc.training.progress import progress_bar
from groupcc.training.runs import PLOTS, write_json

from .plots import new_figure, save_figure


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


@torch.no_grad()
def evaluate_dictionary(
    dictionary: Dictionary,
    source: ActivationSource,
    *,
    batch_size: int = 4096,
    max_rows: int | None = None,
    dense_threshold: float = 0.1,
    progress: bool = True,
) -> DictionaryMetrics:
    """Stream ``source`` (at most ``max_rows`` rows, in order) through ``dictionary`` in eval mode on its own device.
    An SAE on multi-block activations reads what its config's ``sae_input`` says (block 0, or every block)."""
    config = dictionary.config
    data = dictionary_input(source, config)
    device = dictionary.b_dec.device
    was_training = dictionary.training
    dictionary.eval()
    accumulator = MetricsAccumulator(config.n_blocks, config.d, config.n_features)
    rows = data.n_rows if max_rows is None else min(max_rows, data.n_rows)
    for chunk in progress_bar(data.chunks(batch_size, rows), total=-(-rows // batch_size), enabled=progress, desc="evaluate"):
        acts = chunk.to(device)
        output = dictionary(acts)
        accumulator.update(acts, output.recon_NBD, output.codes)
    dictionary.train(was_training)
    return accumulator.result(dense_threshold)


def plot_feature_density(metrics: DictionaryMetrics, path: str | Path, title: str = "feature density") -> Path:
    """Histogram of ``log10`` feature density (dead features counted in the legend), saved as a PNG."""
    density = metrics.feature_density
    fig, (axis,) = new_figure()
    alive = density[density > 0]
    if alive.size:
        axis.hist(np.log10(alive), bins=50, color="tab:blue", label=f"{alive.size} firing")
    axis.axvline(np.log10(metrics.dense_threshold), color="tab:red", linestyle="--", label=f"dense (> {metrics.dense_threshold:g})")
    axis.set_xlabel("log10 fraction of inputs on which the feature fires")
    axis.set_ylabel("features")
    axis.set_title(f"{title}: {int((density == 0).sum())} dead of {density.size}")
    axis.legend()
    return save_figure(fig, path)


def evaluate_dictionary_run(run_dir: str | Path, acts: str | Path, *, max_rows: int | None = None, progress: bool = True) -> dict:
    """Evaluate a dictionary run directory on an activation store (of the group it was trained under): writes
    ``evaluation.json`` and ``plots/feature_density.png`` into the run and returns the summary (with the
    dictionary's kind, sparsity and number of features)."""
    record = read_dictionary_record(run_dir)
    dictionary = load_dictionary(run_dir)
    store = open_store(acts)
    check_same_group(run_dir, record, store)
    metrics = evaluate_dictionary(dictionary, store, max_rows=max_rows, progress=progress)
    config = dictionary.config
    summary = {"acts": str(Path(acts).resolve()), "kind": config.kind, "sparsity": config.sparsity,
               "n_features": config.n_features, **metrics.summary()}
    write_json(Path(run_dir) / "evaluation.json", summary)
    plot_feature_density(metrics, Path(run_dir) / PLOTS / "feature_density.png", title=f"{config.kind} feature density")
    return summary
