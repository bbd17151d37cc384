"""Plots of a dictionary analysis: block similarities of each family's representative, family sizes, spectra,
families × irreps, and a dictionary's training curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .analysis import DictionaryAnalysis
from .comparisons import confusion
from .plots import new_figure, plt, save_figure

MAX_PANELS = 8


def plot_family_blocks(analysis: DictionaryAnalysis, path: str | Path, title: str) -> Path:
    """Block-similarity matrices ``S_i[g, h]`` of each family's representative feature (first ``MAX_PANELS``)."""
    representatives = analysis.representatives()[:MAX_PANELS] or [0]
    cols = min(4, len(representatives))
    rows = -(-len(representatives) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for panel, feature in enumerate(representatives):
        axis = axes.flat[panel]
        image = axis.imshow(analysis.block_similarity(feature), vmin=-1, vmax=1, cmap="RdBu_r")
        stabiliser = len(analysis.stabilisers[feature])
        axis.set_title(f"family {analysis.family[feature]}: feature {feature}\n|stabiliser| = {stabiliser}", fontsize=9)
        axis.axis("on")
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_xlabel("h", fontsize=8)
        axis.set_ylabel("g", fontsize=8)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="cos(B[g], B[h])")
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_family_sizes(clusterings: dict[str, np.ndarray], path: str | Path) -> Path:
    """Bar chart of family sizes, one panel per clustering (``family`` label arrays, ``-1`` = dead, left out)."""
    fig, axes = new_figure(len(clusterings), width=4.0)
    for axis, (name, family) in zip(axes, clusterings.items()):
        sizes = np.bincount(family[family >= 0]) if (family >= 0).any() else np.zeros(0, dtype=int)
        axis.bar(np.arange(len(sizes)), sizes, color="tab:blue")
        axis.set(xlabel="family", ylabel="features", title=f"{name}: {len(sizes)} families")
    return save_figure(fig, path)


def plot_family_spectra(analysis: DictionaryAnalysis, path: str | Path, title: str) -> Path:
    """Mean irrep spectrum of the block autocorrelation, families × irreps."""
    names = [irrep.name for irrep in analysis.group.irreps()]
    n_families = analysis.families.n_families
    table = np.array([analysis.spectrum[analysis.family == f].mean(axis=0) for f in range(n_families)]).reshape(n_families, -1)
    fig, (axis,) = new_figure(1, width=max(4.5, 0.5 * len(names) + 2), height=max(2.5, 0.35 * n_families + 1.5))
    image = axis.imshow(table, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axis.set_xticks(np.arange(len(names)), names, rotation=60, ha="right", fontsize=8)
    axis.set_yticks(np.arange(n_families), [f"family {f}" for f in range(n_families)], fontsize=8)
    fig.colorbar(image, ax=axis, label="energy fraction")
    axis.set_title(title)
    return save_figure(fig, path)


def plot_family_labels(analysis: DictionaryAnalysis, path: str | Path, title: str) -> Path:
    """Families × reference labels (irreps, input classes): how many firing features of each family have each label."""
    alive = analysis.alive
    labels = [label for label, keep in zip(analysis.truth.labels, alive) if keep]
    table, names = confusion(analysis.family[alive], labels, [name for name in analysis.truth.order if name in set(labels)])
    fig, (axis,) = new_figure(1, width=max(4.0, 0.6 * len(names) + 2.5), height=max(2.5, 0.35 * len(table) + 1.5))
    axis.imshow(table, cmap="Blues", aspect="auto")
    for (row, col), count in np.ndenumerate(table):
        if count:
            axis.text(col, row, str(count), ha="center", va="center", fontsize=8)
    axis.set_xticks(np.arange(len(names)), names, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(np.arange(len(table)), [f"family {f}" for f in range(len(table))], fontsize=8)
    axis.set(xlabel=f"{analysis.truth.kind} of the feature", title=title)
    return save_figure(fig, path)


def plot_dictionary_history(history: list[dict], path: str | Path, title: str) -> Path:
    """FVU and L0 over training steps."""
    steps = [entry["step"] for entry in history]
    fig, (fvu_axis, l0_axis) = new_figure(2)
    fvu_axis.semilogy(steps, [max(entry["fvu"], 1e-12) for entry in history])
    fvu_axis.set(xlabel="step", ylabel="FVU (training batch)", title=f"{title}: FVU")
    l0_axis.plot(steps, [entry["l0"] for entry in history], color="C1")
    l0_axis.set(xlabel="step", ylabel="L0", title=f"{title}: L0")
    return save_figure(fig, path)


def plot_feature_images(analysis: DictionaryAnalysis, images_NCHW: np.ndarray, transform, path: str | Path, title: str,
                        top: int = 5, max_transforms: int = 8) -> Path:
    """For each family's representative (one row each): its ``top`` most activating images, then its top image
    under the first ``max_transforms`` group elements (what blocks ``g`` of the feature see). Images larger than
    64 pixels are shown as their central half (:func:`centre_crop`).
    ``transform(image_CHW, g)`` returns ``g·image``; only valid when the rows of the codes are the images."""
    representatives = analysis.representatives()[:MAX_PANELS]
    n_transforms = min(max_transforms, analysis.group.order)
    cols = top + n_transforms
    fig, axes = plt.subplots(max(1, len(representatives)), cols, figsize=(1.1 * cols, 1.25 * max(1, len(representatives))), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for row, feature in enumerate(representatives):
        order = np.argsort(-analysis.codes_NF[:, feature])[:top]
        for col, index in enumerate(order):
            _show(axes[row, col], images_NCHW[index], f"{analysis.codes_NF[index, feature]:.2g}")
        for g in range(n_transforms):
            _show(axes[row, top + g], transform(images_NCHW[order[0]], g), f"g={g}")
        axes[row, 0].set_title(f"family {analysis.family[feature]}, feature {feature}", fontsize=7, loc="left")
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def centre_crop(image_CHW: np.ndarray, largest: int = 64) -> np.ndarray:
    """The central half of an image larger than ``largest`` pixels (where a centre-position feature looks)."""
    size = image_CHW.shape[-1]
    if size <= largest:
        return image_CHW
    start = size // 4
    return image_CHW[..., start : size - start, start : size - start]


def _show(axis, image_CHW: np.ndarray, label: str) -> None:
    image = centre_crop(np.asarray(image_CHW))
    axis.imshow(image[0] if image.shape[0] == 1 else np.clip(np.moveaxis(image, 0, -1), 0, 1), cmap="gray", vmin=0, vmax=1)
    axis.set_xlabel(label, fontsize=6)
    axis.axis("on")
    axis.set_xticks([])
    axis.set_yticks([])
