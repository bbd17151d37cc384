"""The paper's metrics on constructed cases where the answer is known."""

import numpy as np
import pytest

from groupcc.eval.composer_metrics import activation_fve, composer_metrics, fraction_explained, logit_similarities
from groupcc.groups import entry_basis
from groupcc.groups import get_group
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
