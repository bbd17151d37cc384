"""Reverse-engineering metrics for composers (Chughtai, Chan & Nanda 2023), all over the ``|G|²`` pairs.

Notation: pair ``p = (a, b)`` has index ``a·|G| + b``; ``w(a, b)`` is the task's answer (``a·b`` by default).
For an irrep ``ρ`` let ``Q_ρ`` be an orthonormal basis ``[|G|, r]`` of the span of its matrix entries
``g ↦ ρ(g)_ij`` (``r = d²/⟨χ,χ⟩``). Lifted to pairs, ``Q_ρ[a]/sqrt|G|`` is an orthonormal basis of the
functions ``(a, b) ↦ ρ(a)_ij``, and likewise for ``b`` and ``w(a, b)``. For non-trivial ``ρ`` these three
spans are mutually orthogonal, and orthogonal across irreps (Schur orthogonality).

- logit similarity of ``ρ``: cosine between the logits centred over the output class ``c`` and
  ``χ_ρ(w(a, b)·c⁻¹)``; key irreps are the non-trivial ones above a threshold;
- FVE of a matrix ``M`` with rows indexed by elements: ``‖Q_ρᵀ M‖² / ‖M‖²`` summed over key irreps, for
  ``W_a = E_a W_top``, ``W_b = E_b W_bot``, ``W_Uᵀ`` (MLP) or ``W_E``, ``(W_out W_U)ᵀ`` (Transformer);
- MLP FVE: the centred hidden activations over all pairs projected on the ``ρ(a)``, ``ρ(b)``, ``ρ(w)`` spans
  of the key irreps; the ``ρ(w)`` term alone is reported as ``fve_rho_ab``;
- restricted loss: hidden activations replaced by their mean plus their key ``ρ(w)`` part, loss on all pairs;
  excluded loss: the key ``ρ(w)`` part removed, loss on the training pairs.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from groupcc.groups import Group, Irrep, entry_basis
from groupcc.training.composer_training import ComposerRun, float64_cross_entropy
from groupcc.training.progress import progress_bar

DEFAULT_KEY_THRESHOLD = 0.05


def fraction_explained(matrix: np.ndarray, bases: list[np.ndarray]) -> float:
    """``Σ_ρ ‖Q_ρᵀ M‖² / ‖M‖²`` for mutually orthogonal bases."""
    total = float((matrix**2).sum())
    if total == 0:
        return 0.0
    return float(sum(((basis.T @ matrix) ** 2).sum() for basis in bases) / total)


def logit_similarities(group: Group, logits: np.ndarray, answers: np.ndarray) -> dict[str, float]:
    """Cosine between centred logits ``[|G|², |G|]`` and ``χ_ρ(w(a,b)·c⁻¹)``, per irrep name."""
    centred = logits - logits.mean(axis=1, keepdims=True)
    index = group.mult_table[answers[:, None], group.inverse[None, :]]  # [pair, c] -> w(a,b)·c⁻¹
    out = {}
    for irrep in group.irreps():
        target = irrep.character[index]
        target = target - target.mean(axis=1, keepdims=True)
        denominator = np.linalg.norm(centred) * np.linalg.norm(target)
        out[irrep.name] = float((centred * target).sum() / denominator) if denominator > 0 else 0.0
    return out


def _pair_bases(group: Group, key_irreps: list[str], elements: np.ndarray) -> list[np.ndarray]:
    """Orthonormal bases over pairs of the functions ``p ↦ ρ(elements[p])_ij``, one per key irrep."""
    irreps = {irrep.name: irrep for irrep in group.irreps()}
    return [entry_basis(irreps[name])[elements] / np.sqrt(group.order) for name in key_irreps]


def activation_fve(group: Group, acts: np.ndarray, answers: np.ndarray, key_irreps: list[str]) -> dict[str, float]:
    """Fractions of the variance of activations over all pairs ``[|G|², H]`` (centred over pairs) explained
    by the key irreps' ``ρ(a)``, ``ρ(b)`` and ``ρ(w(a, b))`` entries."""
    n = group.order
    pairs = np.arange(n * n)
    centred = acts - acts.mean(axis=0, keepdims=True)
    return {
        term: fraction_explained(centred, _pair_bases(group, key_irreps, elements))
        for term, elements in (("rho_a", pairs // n), ("rho_b", pairs % n), ("rho_ab", answers))
    }


def key_output_part(group: Group, acts: np.ndarray, answers: np.ndarray, key_irreps: list[str]) -> np.ndarray:
    """The projection of the centred activations on the key irreps' ``ρ(w(a, b))`` spans."""
    centred = acts - acts.mean(axis=0, keepdims=True)
    part = np.zeros_like(centred)
    for basis in _pair_bases(group, key_irreps, answers):
        part += basis @ (basis.T @ centred)
    return part


@torch.no_grad()
def _model_matrices(model) -> dict[str, np.ndarray]:
    """Matrices with rows indexed by group elements, as the paper's table reports them."""
    if hasattr(model, "input_tables"):  # MLP composer
        table_a, table_b = model.input_tables()
        return {"W_a": table_a.numpy(), "W_b": table_b.numpy(), "W_U": model.unembed.T.numpy()}
    n = model.config.n_elements
    return {"W_E": model.embed[:n].numpy(), "W_L": (model.w_out @ model.unembed).T.numpy()}


def composer_metrics(run: ComposerRun, key_threshold: float = DEFAULT_KEY_THRESHOLD, key_irreps: list[str] | None = None) -> dict:
    """All the paper's metrics for the run's current weights (computed in float64 on the CPU).

    ``key_irreps`` fixes the key irreps (used for progress measures, where they come from the final model);
    otherwise they are the non-trivial irreps whose logit similarity exceeds ``key_threshold``.
    """
    group, data = run.group, run.data
    model = copy.deepcopy(run.model).double().cpu().eval()
    a, b, answers = data.a.cpu(), data.b.cpu(), data.answer.cpu()
    with torch.no_grad():
        hidden = model.hidden(a, b)
        logits = model.logits_from_hidden(hidden, a, b)
    similarities = logit_similarities(group, logits.numpy(), answers.numpy())
    irreps = {irrep.name: irrep for irrep in group.irreps()}
    if key_irreps is None:
        key_irreps = [name for name, sim in similarities.items() if sim > key_threshold and not irreps[name].is_trivial]
    hidden_np = hidden.numpy()
    terms = activation_fve(group, hidden_np, answers.numpy(), key_irreps)
    out_part = key_output_part(group, hidden_np, answers.numpy(), key_irreps)
    restricted = torch.from_numpy(hidden_np.mean(axis=0, keepdims=True) + out_part)
    excluded = torch.from_numpy(hidden_np - out_part)
    train, test = data.train.cpu(), data.test.cpu()
    with torch.no_grad():
        restricted_loss = float64_cross_entropy(model.logits_from_hidden(restricted, a, b), answers)
        excluded_logits = model.logits_from_hidden(excluded[train], a[train], b[train])
        excluded_loss = float64_cross_entropy(excluded_logits, answers[train])
    test_logits = logits[test]
    return {
        "key_irreps": key_irreps,
        "key_threshold": key_threshold,
        "logit_similarity": similarities,
        "fve": {name: fraction_explained(matrix, [entry_basis(irreps[k]) for k in key_irreps]) for name, matrix in _model_matrices(model).items()},
        "fve_mlp": terms["rho_a"] + terms["rho_b"] + terms["rho_ab"],
        "fve_rho_ab": terms["rho_ab"],
        "restricted_loss": float(restricted_loss),
        "excluded_loss": float(excluded_loss),
        "train_loss": float(float64_cross_entropy(logits[train], answers[train])),
        "test_loss": float(float64_cross_entropy(test_logits, answers[test])) if len(test) else float("nan"),
        "test_accuracy": float((test_logits.argmax(-1) == answers[test]).double().mean()) if len(test) else float("nan"),
    }


def progress_measures(run: ComposerRun, key_irreps: list[str], progress: bool = True) -> list[dict]:
    """:func:`composer_metrics` at every saved checkpoint, with the final model's key irreps fixed."""
    
    final_state = copy.deepcopy(run.model.state_dict())
    records = []
    try:
        for epoch, path in progress_bar(run.checkpoints(), enabled=progress, desc="checkpoints"):
            run.load_weights(path)
            metrics = composer_metrics(run, key_irreps=key_irreps)
            metrics.pop("logit_similarity")
            records.append({"epoch": epoch, **metrics})
    finally:
        run.model.load_state_dict(final_state)
    return records
