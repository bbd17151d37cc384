"""Transform-block analysis, stabilisers, families, SAE equivariant matching and irrep matching on planted cases."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from groupcc.crosscoders import Dictionary, DictionaryConfig, plant_group_features
from groupcc.errors import GroupccError
from groupcc.eval.analysis import AnalysisSettings, analysis_bytes, analysis_summary
from groupcc.eval.pipeline import analyze_dictionary
from groupcc.groups import limits
from groupcc.eval.comparisons import compare_labels, confusion, purity
from groupcc.eval.families import cluster, signatures
from groupcc.eval.irrep_matching import match_irreps
from groupcc.eval.equivariant_matching import equivariant_match, virtual_blocks
from groupcc.eval.transform_blocks import autocorrelation, block_similarity, spectra, subgroup_within, stabilisers, transformed_copy, translation_deviation
from groupcc.groups import GroupError, dihedral, get_group, symmetric


def irrep_named(group, name):
    return next(irrep for irrep in group.irreps() if irrep.name == name)


def fixing_subgroup(group, matrices, v, tol=1e-9):
    """``{h : ρ(h)v = v}`` computed directly."""
    return np.flatnonzero(np.linalg.norm(matrices @ v - v, axis=1) <= tol * max(1.0, np.linalg.norm(v)))


def planted_feature(group, irrep, subgroup, d, rng):
    """Blocks ``B[g] = Q ρ(g) v`` with ``v`` the average over ``subgroup`` of ``ρ(h)u`` (so ``v`` is fixed by it),
    drawn until every element outside the exact stabiliser moves ``v`` by at least 30 % (no near-symmetries)."""
    while True:
        v = irrep.matrices[subgroup].mean(axis=0) @ rng.normal(size=irrep.dim)
        moved = np.linalg.norm(irrep.matrices @ v - v, axis=1) / np.linalg.norm(v)
        if ((moved < 1e-9) | (moved > 0.3)).all():
            break
    q, _ = np.linalg.qr(rng.normal(size=(d, irrep.dim)))
    return np.einsum("dk,gkl,l->gd", q, irrep.matrices, v), fixing_subgroup(group, irrep.matrices, v)


# S4 as permutations of 4 points: a point stabiliser (S3), a transposition (C2), and the trivial subgroup.
S4 = symmetric(4)
POINT_STABILISER = np.flatnonzero([p[3] == 3 for p in S4.permutations])
TRANSPOSITION = S4.subgroup_generated([int(np.flatnonzero([tuple(p) == (1, 0, 2, 3) for p in S4.permutations])[0])])
#: (irrep, subgroup whose fixed vectors the feature uses, expected stabiliser order)
FAMILIES = [
    ("[3,1]", POINT_STABILISER, 6),
    ("[3,1]", np.array([0]), 1),
    ("[2,2]", np.array([0]), 4),  # the kernel V4 always fixes a [2,2] vector
    ("[2,1,1]", TRANSPOSITION, 2),
    ("[1,1,1,1]", np.array([0]), 12),  # the kernel A4
    ("[4]", np.array([0]), 24),  # invariant
]


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    blocks, labels, expected = [], [], []
    for family, (name, subgroup, order) in enumerate(FAMILIES):
        for copy in range(6):
            feature, fixed = planted_feature(S4, irrep_named(S4, name), subgroup, 16, rng)
            h = int(rng.integers(S4.order)) if copy % 2 else 0  # half of them are transformed copies
            blocks.append(feature[S4.mult_table[:, h]])
            # the copy g ↦ B[g·h] is fixed by h·H·h⁻¹
            expected.append(np.unique(S4.conjugate(h, fixed)))
            labels.append(family)
            assert len(fixed) == order
    blocks = np.array(blocks)
    blocks /= np.linalg.norm(blocks, axis=-1, keepdims=True)  # every block has norm 1
    noisy = blocks + 0.02 / np.sqrt(blocks.shape[-1]) * rng.normal(size=blocks.shape)  # about 2% per block
    return noisy, np.array(labels), expected


def test_planted_stabilisers_are_recovered_exactly(planted):
    blocks, _, expected = planted
    for found, truth in zip(stabilisers(S4, blocks, tolerance=0.1), expected):
        np.testing.assert_array_equal(found, truth)


def test_planted_families_are_recovered(planted):
    blocks, labels, _ = planted
    orders = np.array([len(s) for s in stabilisers(S4, blocks, 0.1)])
    clustering = cluster(signatures(S4, blocks, orders))
    assert clustering.chosen_automatically
    assert clustering.n_families == len(FAMILIES)
    assert compare_labels(clustering.labels, labels)["ari"] >= 0.95


def test_families_can_be_fixed_and_validated(planted):
    blocks, labels, _ = planted
    sig = signatures(S4, blocks, np.ones(len(blocks)))
    assert cluster(sig, n_families=3).n_families == 3
    with pytest.raises(GroupError, match="between 1 and"):
        cluster(sig, n_families=0)
    assert cluster(np.zeros((5, 3))).n_families == 1  # identical signatures: nothing to split


@given(seed=st.integers(0, 10_000), tolerance=st.floats(0.0, 1.9), group_name=st.sampled_from(["D4", "S3", "C6", "A4"]))
def test_stabiliser_is_always_a_subgroup(seed, tolerance, group_name):
    group = get_group(group_name)
    rng = np.random.default_rng(seed)
    blocks = rng.normal(size=(3, group.order, 5))
    # make the blocks partly periodic so that some elements nearly pass
    blocks = blocks + 3 * blocks[:, group.mult_table[:, int(rng.integers(group.order))]]
    deviation = translation_deviation(group, blocks)
    for row, found in zip(deviation, stabilisers(group, blocks, tolerance)):
        assert group.is_subgroup(found)
        assert (row[found] <= tolerance + 1e-12).all()


@given(seed=st.integers(0, 10_000), h=st.integers(0, 11))
def test_spectrum_and_signature_do_not_change_under_a_transform(seed, h):
    group = dihedral(6)
    blocks = np.random.default_rng(seed).normal(size=(4, group.order, 6))
    copy = transformed_copy(group, blocks, h)
    np.testing.assert_allclose(spectra(group, copy), spectra(group, blocks), atol=1e-10)
    orders = [len(s) for s in stabilisers(group, blocks, 0.5)]
    np.testing.assert_allclose(signatures(group, copy, orders), signatures(group, blocks, orders), atol=1e-10)
    # the stabiliser of the copy is the conjugate h·H·h⁻¹
    for original, moved in zip(stabilisers(group, blocks, 0.5), stabilisers(group, copy, 0.5)):
        np.testing.assert_array_equal(moved, np.unique(group.conjugate(h, original)))


def test_block_similarity_and_autocorrelation():
    group = dihedral(4)
    rng = np.random.default_rng(1)
    blocks, _ = planted_feature(group, irrep_named(group, group.irreps()[-1].name), np.array([0]), 8, rng)
    similarity = block_similarity(blocks[None])[0]
    np.testing.assert_allclose(np.diag(similarity), 1.0)
    phi = autocorrelation(group, similarity[None])[0]
    assert phi[0] == pytest.approx(1.0)
    # a feature living in one irrep has all its spectrum on that irrep
    spectrum = spectra(group, blocks[None])[0]
    assert spectrum[-1] == pytest.approx(1.0, abs=1e-9)


def test_stabiliser_greedy_growth_stays_inside_the_passing_set():
    group = symmetric(3)
    deviation = np.full(group.order, 1.0)
    deviation[0] = 0
    transposition = next(g for g in range(1, 6) if group.element_orders[g] == 2)
    deviation[transposition] = 0.01
    three_cycle = next(g for g in range(1, 6) if group.element_orders[g] == 3)
    deviation[three_cycle] = 0.02  # passes, but with the transposition it generates S3, where others fail
    found = subgroup_within(group, deviation, 0.05)
    np.testing.assert_array_equal(found, np.sort([0, transposition]))
    with pytest.raises(GroupError, match="tolerance"):
        stabilisers(group, np.zeros((1, 6, 2)), tolerance=-1)
    with pytest.raises(GroupError, match="shape"):
        stabilisers(group, np.zeros((1, 5, 2)))


def test_equivariant_matching_recovers_planted_partners():
    rng = np.random.default_rng(3)
    n_group, n_inputs, n_features = 4, 200, 10
    identity = np.maximum(rng.normal(size=(n_inputs, n_features)), 0)
    perms = [np.arange(n_features)] + [rng.permutation(n_features) for _ in range(n_group - 1)]
    scales = [1.0, 2.0, 0.5, 3.0]
    block_codes = np.stack([identity[:, p] * s for p, s in zip(perms, scales)])  # f_j(g·x) = s·f_{p[j]}(x)
    match = equivariant_match(identity, block_codes)
    for g, (p, s) in enumerate(zip(perms, scales)):
        np.testing.assert_array_equal(p[match.partner[g]], np.arange(n_features))
        np.testing.assert_allclose(match.cosine[g], 1.0)
        np.testing.assert_allclose(match.amplitude[g], s)
    decoder = rng.normal(size=(n_features, 7))
    blocks = virtual_blocks(match, decoder)
    np.testing.assert_allclose(blocks[3, 2], scales[2] * decoder[match.partner[2, 3]])


def test_irrep_matching_labels_exact_irrep_neurons():
    """A synthetic composer layer whose neurons are exact irrep functions of (a, b): every neuron gets its irrep."""
    group = symmetric(4)
    rng = np.random.default_rng(4)
    n = group.order
    pairs = np.arange(n * n)
    a, b = pairs // n, pairs % n
    ab = group.mult_table[a, b]
    neurons, expected = [], []
    for irrep in group.irreps()[1:]:
        for _ in range(3):
            coefficients = rng.normal(size=(3, irrep.dim, irrep.dim))
            term = lambda g, c: np.einsum("pij,ij->p", irrep.matrices[g], c)  # noqa: E731
            neurons.append(term(a, coefficients[0]) + term(b, coefficients[1]) + term(ab, coefficients[2]) + 5.0)
            expected.append(irrep.name)
    match = match_irreps(group, np.stack(neurons, axis=1), ab)
    assert match.labels == expected
    np.testing.assert_allclose(match.explained, 1.0, atol=1e-9)
    with pytest.raises(GroupError, match="all 576 pairs"):
        match_irreps(group, np.zeros((10, 2)), ab)


def test_comparisons():
    assert purity([0, 0, 1, 1], ["x", "x", "y", "x"]) == 0.75
    scores = compare_labels([1, 1, 0, 0], ["a", "a", "b", "b"])
    assert scores["ari"] == pytest.approx(1.0) and scores["nmi"] == pytest.approx(1.0) and scores["purity"] == 1.0
    table, names = confusion([0, 0, 1], ["a", "b", "b"])
    np.testing.assert_array_equal(table, [[1, 1], [0, 1]])
    assert names == ["a", "b"]
    assert compare_labels([], []) == {"ari": None, "nmi": None, "purity": None, "n_families": 0, "n_labels": 0, "n_items": 0}


def test_max_families_one_gives_one_family(planted):
    blocks, _, _ = planted
    assert cluster(signatures(S4, blocks, np.ones(len(blocks))), max_families=1).n_families == 1


@pytest.mark.parametrize("field, value, message", [
    ("matching_rows", 0, r"matching_rows = 0: expected an integer in \[1, "),
    ("matching_rows", 2**64, "matching_rows = 18446744073709551616: expected an integer"),
    ("n_families", -1, r"n_families = -1: expected an integer in \[1, "),
    ("max_families", 1.5, "max_families = 1.5: expected an integer"),
    ("min_explained", 2, r"min_explained = 2: expected a finite number in \[0, 1\]"),
    ("min_explained", float("nan"), "min_explained = nan"),
    ("stabiliser_tolerance", float("nan"), r"stabiliser_tolerance = nan: expected a finite number in \[0, 2\)"),
    ("stabiliser_tolerance", float("inf"), "stabiliser_tolerance = inf"),
    ("stabiliser_tolerance", -0.1, "stabiliser_tolerance = -0.1"),
    ("batch_rows", True, "batch_rows = True"),
    ("seed", -3, r"seed = -3: expected an integer in \[0, 9223372036854775807\]"),
    ("seed", 2**64, "seed = 18446744073709551616"),
])
def test_analysis_settings_refuse_bad_values_in_one_line(field, value, message):
    with pytest.raises(GroupccError, match=message) as err:
        AnalysisSettings(**{field: value})
    assert "\n" not in str(err.value)


def planted_crosscoder(n_features=6, dead=0):
    """A D4 crosscoder whose decoder is the planted features (``dead`` of them never fire), and activations."""
    group = get_group("D4")
    planted = plant_group_features(group, d=6, n_features=n_features, seed=0)
    acts, _ = planted.sample(200, np.random.default_rng(0), active=2.0, noise=0.0)
    dictionary = Dictionary(DictionaryConfig(kind="crosscoder", d=6, n_features=n_features, n_blocks=group.order, sparsity="l1"), seed=0)
    with torch.no_grad():
        dictionary.b_enc[:dead] = -1e6
    return dictionary, acts, group


def test_the_number_of_families_is_checked_against_the_features():
    dictionary, acts, group = planted_crosscoder(n_features=6, dead=3)
    with pytest.raises(GroupccError, match="n_families = 7: expected at most the dictionary's 6 features"):
        analyze_dictionary(dictionary, acts, group, n_families=7, progress=False)
    with pytest.raises(GroupccError, match="n_families = 4: only 3 of the 6 features fire, expected at most 3"):
        analyze_dictionary(dictionary, acts, group, n_families=4, progress=False)
    assert analyze_dictionary(dictionary, acts, group, n_families=3, progress=False).families.n_families == 3


def test_an_analysis_too_large_for_memory_is_refused_up_front(monkeypatch):
    dictionary, acts, group = planted_crosscoder()
    assert analysis_bytes(group, 10**6, 10**5, 128, "sae", AnalysisSettings()) > 10**12  # [F, F] matrices and codes
    monkeypatch.setattr(limits, "physical_memory_bytes", lambda: 10**4)
    with pytest.raises(GroupccError, match=r"analysing 6 crosscoder features of D4 on 200 inputs would need about .* of memory, more than"):
        analyze_dictionary(dictionary, acts, group, progress=False)


def test_a_summary_with_no_firing_feature_is_strict_json():
    dictionary, acts, group = planted_crosscoder(n_features=4, dead=4)
    analysis = analyze_dictionary(dictionary, acts, group, progress=False)
    text = json.dumps(analysis_summary(analysis), allow_nan=False)  # no NaN anywhere
    assert json.loads(text)["n_firing"] == 0
