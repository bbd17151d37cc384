"""Plots for composers, like the paper's: training curves, logit similarity per irrep, progress measures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .plots import new_figure, save_figure


def plot_training_curves(history: list[dict], path: str | Path, title: str = "") -> Path:
    epochs = [r["epoch"] for r in history]
    fig, (loss_ax, acc_ax) = new_figure(2)
    loss_ax.loglog(epochs, [r["train_loss"] for r in history], label="train")
    loss_ax.loglog(epochs, [r["test_loss"] for r in history], label="test")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title=f"{title} loss".strip())
    loss_ax.legend()
    acc_ax.semilogx(epochs, [r["test_accuracy"] for r in history], color="C1")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy", ylim=(-0.02, 1.02), title=f"{title} test accuracy".strip())
    return save_figure(fig, path)


def plot_logit_similarity(similarities: dict[str, float], key_irreps: list[str], threshold: float, path: str | Path) -> Path:
    names = list(similarities)
    fig, (ax,) = new_figure(1, width=max(4.0, 0.45 * len(names) + 1.5))
    colors = ["C3" if name in key_irreps else "C7" for name in names]
    ax.bar(np.arange(len(names)), [similarities[n] for n in names], color=colors)
    ax.axhline(threshold, color="k", lw=0.8, ls="--", label=f"key threshold {threshold:g}")
    ax.set_xticks(np.arange(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set(ylabel="logit similarity", title="logit similarity per irrep (red: key)")
    ax.legend()
    return save_figure(fig, path)


def plot_progress_measures(records: list[dict], path: str | Path) -> Path:
    epochs = [r["epoch"] for r in records]
    fig, (fve_ax, loss_ax) = new_figure(2)
    for name in records[0]["fve"]:
        fve_ax.semilogx(epochs, [r["fve"][name] for r in records], label=f"FVE {name}")
    fve_ax.semilogx(epochs, [r["fve_mlp"] for r in records], label="FVE MLP")
    fve_ax.semilogx(epochs, [r["fve_rho_ab"] for r in records], label="FVE ρ(ab)")
    fve_ax.set(xlabel="epoch", ylabel="fraction of variance explained", ylim=(-0.02, 1.02), title="key-irrep FVE")
    fve_ax.legend(fontsize=8)
    for key, label in [("train_loss", "train"), ("test_loss", "test"), ("restricted_loss", "restricted"), ("excluded_loss", "excluded")]:
        loss_ax.loglog(epochs, [max(r[key], 1e-12) for r in records], label=label)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="progress measures")
    loss_ax.legend(fontsize=8)
    return save_figure(fig, path)
