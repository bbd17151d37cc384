"""The paper's metrics on constructed cases where the answer is known."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groupcc.eval.composer_metrics import (activation_fve, composer_metrics, fraction_explained, held_out_margins,
                                          logit_similarities)
from groupcc.eval.irrep_matching import match_irreps
from groupcc.eval.pair_terms import term_bases, term_elements
from groupcc.groups import entry_basis, get_group, parse_word
from groupcc.training.composer_training import default_config, load_composer, fit_composer


@pytest.mark.parametrize("name", ["S4", "D5", "C7"])
def test_character_logits_have_similarity_one_with_their_irrep_only(name):
    group = get_group(name)
    answers = group.mult_table.reshape(-1)
    index = group.mult_table[answers[:, None], group.inverse[None, :]]
    for irrep in group.irreps()[1:]:
        sims = logit_similarities(group, irrep.character[index] + 3.0, answers)  # a constant shift is centred away
        assert sims[irrep.name] == pytest.approx(1.0)
        assert all(abs(v) < 1e-9 for k, v in sims.items() if k != irrep.name)


@pytest.mark.parametrize("name", ["S4", "A4", "D6"])
def test_matrix_of_irrep_entries_has_fve_one_for_it_and_zero_for_others(name):
    group = get_group(name)
    rng = np.random.default_rng(0)
    for irrep in group.irreps():
        basis = entry_basis(irrep)
        assert basis.shape[1] == irrep.dim**2 // irrep.norm
        matrix = basis @ rng.standard_normal((basis.shape[1], 11))
        for other in group.irreps():
            expected = 1.0 if other is irrep else 0.0
            assert fraction_explained(matrix, [entry_basis(other)]) == pytest.approx(expected, abs=1e-9)


def test_activation_fve_recovers_planted_terms():
    group = get_group("S4")
    n = group.order
    standard = next(i for i in group.irreps() if i.name == "[3,1]")
    basis = entry_basis(standard)
    pairs = np.arange(n * n)
    a, ab = pairs // n, group.mult_table.reshape(-1)
    rng = np.random.default_rng(1)
    # Activations = 1·(ρ(a) part) + 2·(ρ(ab) part), with orthonormal mixing so the energies are 1 : 4.
    mix = np.linalg.qr(rng.standard_normal((9, 9)))[0]
    acts = basis[a] @ mix + 2 * basis[ab] @ mix + 5.0
    terms = activation_fve(group, acts, ab, ["[3,1]"])
    assert terms["rho_a"] == pytest.approx(0.2) and terms["rho_ab"] == pytest.approx(0.8) and terms["rho_b"] == pytest.approx(0.0, abs=1e-12)
    assert activation_fve(group, acts, ab, ["[2,1,1]"]) == pytest.approx({"rho_a": 0.0, "rho_b": 0.0, "rho_ab": 0.0}, abs=1e-12)


def test_metrics_of_a_trained_tiny_composer(tmp_path):
    config = default_config("D5", "mlp", epochs=2000, train_frac=0.9, lr=1e-2, seed=1, d_embed=64, d_hidden=64)
    fit_composer(config, tmp_path / "run", progress=False)
    metrics = composer_metrics(load_composer(tmp_path / "run"))
    assert metrics["test_accuracy"] == 1.0
    assert set(metrics["key_irreps"]) >= {"rot1", "rot2"}
    assert metrics["fve"]["W_a"] > 0.98 and metrics["fve"]["W_b"] > 0.98
    assert 0 < metrics["fve_rho_ab"] < metrics["fve_mlp"] <= 1
    assert metrics["restricted_loss"] < 1e-3 < metrics["excluded_loss"]


def _random_word(draw_letters, exponents) -> str:
    return "*".join(f"{letter}^{power}" if power != 1 else letter for letter, power in zip(draw_letters, exponents))


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(["S3", "D4", "C6", "A4", "Q8", "S3xC2"]),
       letters=st.lists(st.sampled_from("ab"), min_size=1, max_size=4),
       powers=st.lists(st.sampled_from([-2, -1, 1, 2, 3]), min_size=4, max_size=4),
       planted=st.sampled_from(["random", "rho_a", "rho_b", "rho_ab"]), seed=st.integers(0, 2**16))
def test_term_fractions_are_exact_for_any_word(name, letters, powers, planted, seed):
    """For any word, the ρ(a), ρ(b), ρ(w) fractions are in [0, 1] and sum to the fraction of the union of the
    three spans, even when those spans overlap (words not bijective in a letter) -- also for activations planted
    in exactly one span, which separate projections counted up to twice."""
    group = get_group(name)
    answers = parse_word(_random_word(letters, powers)).evaluate(group).reshape(-1)
    irreps = group.irreps()[1:]
    rng = np.random.default_rng(seed)
    elements = term_elements(group, answers)
    if planted == "random":
        acts = rng.standard_normal((group.order**2, 7))
    else:
        acts = np.concatenate([entry_basis(irrep)[elements[planted]] for irrep in irreps], axis=1) @ rng.standard_normal((sum(entry_basis(i).shape[1] for i in irreps), 7))
    names = [irrep.name for irrep in irreps]
    terms = activation_fve(group, acts, answers, names)
    assert all(-1e-12 <= value <= 1 + 1e-9 for value in terms.values())
    union = np.concatenate(list(term_bases(group, irreps, answers).values()), axis=1)
    assert np.allclose(union.T @ union, np.eye(union.shape[1]), atol=1e-8)  # one orthonormal basis: nothing counted twice
    centred = acts - acts.mean(axis=0)
    assert sum(terms.values()) == pytest.approx(float(((union.T @ centred) ** 2).sum() / (centred**2).sum()), abs=1e-9)
    if planted != "random":  # activations inside the union are fully explained, once
        assert sum(terms.values()) == pytest.approx(1.0, abs=1e-8)
    match = match_irreps(group, acts, answers, min_explained=0.5)
    assert np.all(match.explained <= 1 + 1e-9) and np.all(match.term_fve >= -1e-12)


def test_conjugation_word_credits_the_shared_part_to_b():
    """w = a b a⁻¹: E_a ρ(a b a⁻¹) = (χ(b)/d)·I overlaps ρ(b). Activations = the trace of ρ(b) are ρ(b) and
    (in part) ρ(w): separate projections gave more than 1; here ρ(b) takes them whole."""
    group = get_group("S4")
    answers = parse_word("a*b*a^-1").evaluate(group).reshape(-1)
    standard = next(i for i in group.irreps() if i.name == "[3,1]")
    b = np.arange(group.order**2) % group.order
    acts = standard.character[b][:, None].astype(float)
    terms = activation_fve(group, acts, answers, ["[3,1]"])
    assert terms["rho_b"] == pytest.approx(1.0) and terms["rho_ab"] == pytest.approx(0.0, abs=1e-9)
    basis = entry_basis(standard) / np.sqrt(group.order)
    centred = acts - acts.mean(axis=0)
    separate = sum(float(((basis[e].T @ centred) ** 2).sum() / (centred**2).sum()) for e in term_elements(group, answers).values())
    assert separate > 1.2  # what the old per-term sum reported


@pytest.mark.parametrize("name", ["C5", "S3", "Q8"])
def test_held_out_margins_of_the_product_table_are_all_interaction(name):
    # L = k·1[ab = c]: in a Latin square every class appears once per row and column, so the row and column
    # means are k/n everywhere, the row-column part is constant (margin 0) and the interaction carries the margin k.
    group = get_group(name)
    n, k = group.order, 7.0
    answers = group.mult_table.reshape(-1)
    logits = k * np.eye(n)[answers]
    margins = held_out_margins(logits, answers, np.arange(0, n * n, 3), n)
    assert margins["logits"] == pytest.approx(k)
    assert margins["interaction"] == pytest.approx(k)
    assert margins["row_column"] == pytest.approx(0.0, abs=1e-12)
    assert margins["answer_first"] == margins["interaction_answer_first"] == 1.0


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["C5", "D4", "A4"]), st.integers(0, 2**31 - 1))
def test_held_out_margins_split_is_exact_and_separable_logits_have_no_interaction(name, seed):
    group = get_group(name)
    n = group.order
    rng = np.random.default_rng(seed)
    answers = group.mult_table.reshape(-1)
    test = rng.choice(n * n, size=max(1, n * n // 10), replace=False)
    # Logits of a and b separately (plus a per-class constant): the interaction is 0, so its margin is 0, and the
    # row-column part is the whole logit.
    row, column = rng.standard_normal((n, 1, n)), rng.standard_normal((1, n, n))
    separable = (row + column + rng.standard_normal(n)).reshape(n * n, n)
    margins = held_out_margins(separable, answers, test, n)
    assert margins["interaction"] == pytest.approx(0.0, abs=1e-9)
    assert margins["row_column"] == pytest.approx(margins["logits"])
    # Adding any separable function leaves the interaction's margin unchanged.
    logits = rng.standard_normal((n * n, n))
    assert held_out_margins(logits + separable, answers, test, n)["interaction"] == pytest.approx(
        held_out_margins(logits, answers, test, n)["interaction"])
    assert np.isnan(held_out_margins(logits, answers, np.array([], dtype=int), n)["logits"])


def test_held_out_margins_match_a_direct_computation_across_chunks_and_leave_the_logits_alone():
    n = 70  # 4900 test pairs: more than one chunk
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((n * n, n))
    answers = rng.integers(0, n, n * n)
    test = np.arange(n * n)
    original = logits.copy()
    got = held_out_margins(logits, answers, test, n)
    assert np.array_equal(logits, original)
    cube = logits.reshape(n, n, n)
    separable = cube.mean(1, keepdims=True) + cube.mean(0, keepdims=True) - cube.mean((0, 1), keepdims=True)

    def mean_margin(part):
        flat = part.reshape(n * n, n)
        others = np.where(np.eye(n, dtype=bool)[answers], -np.inf, flat)
        return (flat[np.arange(n * n), answers] - others.max(1)).mean()

    assert got["logits"] == pytest.approx(mean_margin(cube))
    assert got["row_column"] == pytest.approx(mean_margin(separable))
    assert got["interaction"] == pytest.approx(mean_margin(cube - separable))
    assert got["answer_first"] == pytest.approx((cube.reshape(n * n, n).argmax(1) == answers).mean())
    assert got["interaction_answer_first"] == pytest.approx(((cube - separable).reshape(n * n, n).argmax(1) == answers).mean())
