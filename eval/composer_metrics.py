"""Reverse-engineering metrics for composers (Chughtai, Chan & Nanda 2023), all over the ``|G|²`` pairs.

Notation: pair ``p = (a, b)`` has index ``a·|G| + b``; ``w(a, b)`` is the task's answer (``a·b`` by default).
For an irrep ``ρ`` let ``Q_ρ`` be an orthonormal basis ``[|G|, r]`` of the span of its matrix entries
``g ↦ ρ(g)_ij`` (``r = d²/⟨χ,χ⟩``, from an SVD: the paper's code takes a QR of the ``[|G|, d²]`` entry matrix,
whose columns are linearly dependent for complex-type irreps of ``C_n``, so its bases are not orthonormal there
and its MLP FVE for ``C_n`` can exceed 1; ours cannot). Lifted to pairs, ``Q_ρ[x(p)]/sqrt|G|`` spans the
functions ``p ↦ ρ(x(p))_ij`` for ``x = a, b, w``; see :mod:`groupcc.eval.pair_terms`.

The defaults follow the paper's evaluation code, so that Table 3 is reproduced as the paper computes it:

- logit similarity of ``ρ``: cosine between the logits centred over the output class ``c`` and
  ``χ_ρ(w(a, b)·c⁻¹)``; key irreps are the non-trivial ones above :data:`DEFAULT_KEY_THRESHOLD` (0.005, the
  paper's);
- FVE of a matrix ``M`` with rows indexed by elements: ``‖Q_ρᵀ M‖² / ‖M‖²`` summed over key irreps, for
  ``W_a = E_a W_top``, ``W_b = E_b W_bot``, ``W_Uᵀ`` (MLP) or ``W_E``, ``(W_out W_U)ᵀ`` (Transformer);
- MLP FVE: the centred hidden activations ``h`` over all pairs projected on the ``ρ(a)``, ``ρ(b)``, ``ρ(w)``
  spans of the key irreps (exact for any word: :func:`groupcc.eval.pair_terms.term_bases`); the ``ρ(w)`` term
  alone is ``fve_rho_ab``;
- ``restricted_loss`` (the paper's): cross-entropy on all pairs of the logits of ``P_key h``, the projection of
  ``h`` on the key ``ρ(w)`` spans, mapped to logits by the hidden layer's own output weights (``W_U``; for the
  Transformer ``W_out W_U``, leaving out the attention and embedding path), no mean added back;
- ``excluded_loss`` (the paper's): the same map applied to ``h − P_key h``, on the training pairs.

Our own variants are reported beside them under their own names:

- ``restricted_loss_with_mean``: ``mean(h) + P_key(h − mean h)`` through the whole model (for the Transformer
  the attention and embedding path is kept). Adding the mean back keeps the neurons' constant offset, which
  the paper's version drops; for a network that has generalised both are tiny;
- ``excluded_loss_with_residual`` (Transformer only): ``h − P_key h`` through the whole model, so the
  residual stream's direct path still contributes.

And one diagnostic of whether a run generalised, ``held_out_margins``: the logits split, for each output class,
into their row and column parts and the interaction (:func:`held_out_margins`), and the answer's margin on the
test pairs under each.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from groupcc.errors import GroupccError
from groupcc.groups import Group, entry_basis
from groupcc.training.composer_training import ComposerRun, float64_cross_entropy
from groupcc.training.progress import progress_bar

from .pair_terms import span_basis, term_bases, term_elements, term_fractions

#: The paper's evaluation calls an irrep key above this logit similarity.
DEFAULT_KEY_THRESHOLD = 0.005


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


def _key_irreps(group: Group, key_irreps: list[str]):
    irreps = {irrep.name: irrep for irrep in group.irreps()}
    return [irreps[name] for name in key_irreps]


def activation_fve(group: Group, acts: np.ndarray, answers: np.ndarray, key_irreps: list[str]) -> dict[str, float]:
    """Fractions of the variance of activations over all pairs ``[|G|², H]`` (centred over pairs) explained
    by the key irreps' ``ρ(a)``, ``ρ(b)`` and ``ρ(w(a, b))`` terms; exact for any word (each in [0, 1], summing
    to the fraction explained by their union, see :mod:`groupcc.eval.pair_terms`)."""
    centred = acts - acts.mean(axis=0, keepdims=True)
    return term_fractions(centred, term_bases(group, _key_irreps(group, key_irreps), answers))


def key_output_projection(group: Group, acts: np.ndarray, answers: np.ndarray, key_irreps: list[str]) -> np.ndarray:
    """``P_key acts``: the projection of ``acts`` ``[|G|², H]`` on the span of the key irreps' ``ρ(w(a, b))``
    entries (one orthonormal basis for all of them, so overlapping spans are not counted twice)."""
    basis = span_basis(group, _key_irreps(group, key_irreps), term_elements(group, answers)["rho_ab"])
    return basis @ (basis.T @ acts)


def held_out_margins(logits: np.ndarray, answers: np.ndarray, test: np.ndarray, n_elements: int) -> dict[str, float]:
    """How the logits rank the answer of the held-out pairs, whole and split into two parts.

    The logits ``L[a, b, c]`` over all pairs are split, for each output class ``c``, by a two-way analysis of
    variance over ``(a, b)``: ``L = S + Z`` with the row and column part ``S[a, b, c] = L[a, ·, c] + L[·, b, c] −
    L[·, ·, c]`` (``·`` a mean) and the interaction ``Z``, whose means over ``a`` and over ``b`` are 0. ``S`` is
    all a network can say from ``a`` and ``b`` separately; only ``Z`` can relate ``(a, b)`` to the other pairs with
    the same product. The margin of the answer ``c = w(a, b)`` under ``M`` is ``M[a, b, c] − max_{c' ≠ c} M[a, b, c']``;
    its mean over the test pairs is returned for ``L`` (``logits``), ``S`` (``row_column``) and ``Z``
    (``interaction``), with the fractions of test pairs whose answer ``L`` and ``Z`` rank first.

    Why it is worth looking at: in a Latin square a held-out pair's answer is the one answer that no other pair of
    its row or column has, so in a model trained to push every wrong answer down, ``S`` puts it last; a model
    generalises only when ``Z`` outweighs that. Margins do not add (each takes its own max), so the three are read
    side by side."""
    n = n_elements
    cube = np.asarray(logits, dtype=np.float64).reshape(n, n, -1)  # a view: S6's logits are 3 GB, so no full copies
    test = np.asarray(test, dtype=np.int64)
    names = ["logits", "row_column", "interaction"]
    if len(test) == 0:
        return {name: float("nan") for name in [*names, "answer_first", "interaction_answer_first"]}
    row, column, both = cube.mean(axis=1), cube.mean(axis=0), cube.mean(axis=(0, 1))  # [a, c], [b, c], [c]
    margins = {name: [] for name in names}
    for chunk in np.array_split(test, -(-len(test) // 4096)):  # S6 has 389k test pairs × 720 classes
        a, b, c = chunk // n, chunk % n, np.asarray(answers)[chunk]
        whole = cube[a, b]  # [pairs, classes]
        row_column = row[a] + column[b] - both
        for name, values in zip(names, [whole, row_column, whole - row_column]):
            answer_value = values[np.arange(len(chunk)), c].copy()
            values[np.arange(len(chunk)), c] = -np.inf  # each is a fresh array (fancy indexing or arithmetic)
            margins[name].append(answer_value - values.max(axis=1))
    margins = {name: np.concatenate(parts) for name, parts in margins.items()}
    return {**{name: float(margin.mean()) for name, margin in margins.items()},
            "answer_first": float((margins["logits"] > 0).mean()),
            "interaction_answer_first": float((margins["interaction"] > 0).mean())}


@torch.no_grad()
def run_held_out_margins(run: ComposerRun) -> dict[str, float]:
    """:func:`held_out_margins` of a run's current weights (all pairs through the model, float64 on the CPU)."""
    model = copy.deepcopy(run.model).double().cpu().eval()
    data = run.data
    logits = model(data.a.cpu(), data.b.cpu())
    return held_out_margins(logits.numpy(), data.answer.cpu().numpy(), data.test.cpu().numpy(), run.group.order)


@torch.no_grad()
def _model_matrices(model) -> dict[str, np.ndarray]:
    """Matrices with rows indexed by group elements, as the paper's table reports them."""
    if hasattr(model, "input_tables"):  # MLP composer
        table_a, table_b = model.input_tables()
        return {"W_a": table_a.numpy(), "W_b": table_b.numpy(), "W_U": model.unembed.T.numpy()}
    n = model.config.n_elements
    return {"W_E": model.embed[:n].numpy(), "W_L": (model.w_out @ model.unembed).T.numpy()}


def composer_metrics(run: ComposerRun, key_threshold: float = DEFAULT_KEY_THRESHOLD, key_irreps: list[str] | None = None) -> dict:
    """All the paper's metrics for the run's current weights (computed in float64 on the CPU), under the paper's
    conventions, and our variants of its losses (see the module docstring).

    ``key_irreps`` fixes the key irreps (used for progress measures, where they come from the final model);
    otherwise they are the non-trivial irreps whose logit similarity exceeds ``key_threshold``.
    """
    if isinstance(key_threshold, bool) or not isinstance(key_threshold, (int, float)) or not 0 <= key_threshold < 1:
        raise GroupccError(f"key threshold must be a logit similarity in [0, 1), got {key_threshold!r}")
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
    answers_np = answers.numpy()
    terms = activation_fve(group, hidden_np, answers_np, key_irreps)
    mean = hidden_np.mean(axis=0, keepdims=True)
    key_part = torch.from_numpy(key_output_projection(group, hidden_np, answers_np, key_irreps))
    key_part_centred = torch.from_numpy(key_output_projection(group, hidden_np - mean, answers_np, key_irreps))
    train, test = data.train.cpu(), data.test.cpu()
    excluded = hidden - key_part
    with torch.no_grad():
        losses = {
            "restricted_loss": float64_cross_entropy(model.output_path_logits(key_part), answers),
            "excluded_loss": float64_cross_entropy(model.output_path_logits(excluded[train]), answers[train]),
            "restricted_loss_with_mean": float64_cross_entropy(
                model.logits_from_hidden(torch.from_numpy(mean) + key_part_centred, a, b), answers),
        }
        if run.config.architecture.arch == "transformer":
            losses["excluded_loss_with_residual"] = float64_cross_entropy(
                model.logits_from_hidden(excluded[train], a[train], b[train]), answers[train])
    test_logits = logits[test]
    return {
        "key_irreps": key_irreps,
        "key_threshold": key_threshold,
        "logit_similarity": similarities,
        "fve": {name: fraction_explained(matrix, [entry_basis(irreps[k]) for k in key_irreps]) for name, matrix in _model_matrices(model).items()},
        "fve_mlp": terms["rho_a"] + terms["rho_b"] + terms["rho_ab"],
        "fve_terms": terms,
        "fve_rho_ab": terms["rho_ab"],
        **{name: float(value) for name, value in losses.items()},
        "train_loss": float(float64_cross_entropy(logits[train], answers[train])),
        "test_loss": float(float64_cross_entropy(test_logits, answers[test])) if len(test) else float("nan"),
        "test_accuracy": float((test_logits.argmax(-1) == answers[test]).double().mean()) if len(test) else float("nan"),
        "held_out_margins": held_out_margins(logits.numpy(), answers_np, test.numpy(), group.order),
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
