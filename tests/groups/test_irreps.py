"""Every irrep of many groups passes the checks of DESIGN.md; closed forms agree with the generic algorithm."""

import numpy as np
import pytest

from groupcc.groups import (
    GroupError,
    Irrep,
    alternating,
    cyclic,
    dihedral,
    direct_product,
    from_cayley_table,
    from_permutations,
    generic_irreps,
    get_group,
    quaternion,
    symmetric,
)
from groupcc.groups.irreps import character_inner

SMALL_NAMED = (
    [f"C{n}" for n in range(1, 13)]
    + [f"D{n}" for n in range(1, 13)]
    + [f"S{n}" for n in range(1, 7)]
    + [f"A{n}" for n in range(3, 7)]
    + ["S3xC2", "C3xC3", "C4xC2", "D4xC3", "A4xC3", "C4xQ8", "Q8xQ8", "Q8xC3", "S3xS3", "C2xC2xC3"]
)


def assert_complete_real_irreps(group):
    irreps = group.irreps()
    for irrep in irreps:
        irrep.check()
    assert irreps[0].is_trivial
    assert len({irrep.name for irrep in irreps}) == len(irreps), "irrep names must be unique"
    assert sum(irrep.dim**2 / irrep.norm for irrep in irreps) == pytest.approx(group.order)
    assert len(irreps) == group.num_real_classes
    gram = np.array([[character_inner(a.character, b.character) for b in irreps] for a in irreps])
    np.testing.assert_allclose(gram, np.diag([irrep.norm for irrep in irreps]), atol=1e-8)
    for irrep in irreps:
        assert irrep.type in {"R", "C", "H"}
        assert irrep.frobenius_schur == {"R": 1, "C": 0, "H": -2}[irrep.type]
        assert irrep.dim % irrep.norm == 0
        assert (np.diff([i.dim for i in irreps[1:]]) >= 0).all(), "irreps are sorted by dimension"


@pytest.mark.parametrize("name", SMALL_NAMED)
def test_closed_form_irreps_pass_all_checks(name):
    assert_complete_real_irreps(get_group(name))


def _character_multiset(irreps):
    return sorted((irrep.type, tuple(np.round(irrep.character, 6) + 0.0)) for irrep in irreps)


@pytest.mark.parametrize("name", SMALL_NAMED)
def test_closed_forms_match_generic_algorithm(name):
    group = get_group(name)
    assert _character_multiset(group.irreps()) == _character_multiset(generic_irreps(group, seed=7))


CAYLEY_ONLY = {
    "Q8": lambda: quaternion(),
    "S4 table": lambda: from_cayley_table(symmetric(4).mult_table, name="S4 table"),
    "dicyclic12": lambda: from_permutations(  # Dic3 = C3 ⋊ C4 as permutations of 12 points (right regular)
        [[1, 2, 0, 4, 5, 3, 7, 8, 6, 10, 11, 9], [3, 5, 4, 6, 8, 7, 9, 11, 10, 0, 2, 1]]
    ),
    "pentagon": lambda: from_permutations([[1, 2, 3, 4, 0], [0, 4, 3, 2, 1]]),
    "C5 : C4": lambda: from_permutations([[1, 2, 3, 4, 0], [0, 2, 4, 1, 3]]),
}


@pytest.mark.parametrize("maker", CAYLEY_ONLY.values(), ids=list(CAYLEY_ONLY))
def test_generic_algorithm_on_groups_given_by_table_or_generators(maker):
    assert_complete_real_irreps(maker())


def test_known_types_and_dimensions():
    def summary(group):
        return sorted((irrep.dim, irrep.type) for irrep in group.irreps())

    assert summary(get_group("S6")) == sorted([(1, "R")] * 2 + [(5, "R")] * 4 + [(9, "R")] * 2 + [(10, "R")] * 2 + [(16, "R")])
    assert summary(get_group("Q8")) == [(1, "R")] * 4 + [(4, "H")]
    assert summary(get_group("A4")) == [(1, "R"), (2, "C"), (3, "R")]
    assert summary(get_group("C7")) == [(1, "R")] + [(2, "C")] * 3
    assert summary(get_group("D7")) == [(1, "R")] * 2 + [(2, "R")] * 3
    # H ⊗ H is 4 copies of one 4-dim type-R irrep; C ⊗ H is 2 copies of one 4-dim type-C irrep.
    assert (4, "R") in summary(get_group("Q8xQ8"))
    assert summary(get_group("Q8xQ8")).count((4, "H")) == 8
    assert summary(get_group("C3xQ8")) == sorted([(1, "R")] * 4 + [(2, "C")] * 4 + [(4, "H"), (4, "C")])


def test_symmetric_characters_are_integral_and_known():
    group = symmetric(5)
    table = group.character_table()
    np.testing.assert_allclose(table, np.round(table), atol=1e-9)
    by_name = {irrep.name: irrep for irrep in group.irreps()}
    fixed_points = (group.permutations == np.arange(5)).sum(axis=1)
    np.testing.assert_allclose(by_name["[4,1]"].character, fixed_points - 1, atol=1e-9)
    from groupcc.groups.permutations import permutation_signs

    np.testing.assert_allclose(by_name["[1,1,1,1,1]"].character, permutation_signs(group.permutations), atol=1e-9)


def test_alternating_a5_golden_ratio_characters():
    group = alternating(5)
    five_cycle = group.index_of("(1 2 3 4 5)")
    values = sorted(irrep.character[five_cycle] for irrep in group.irreps() if irrep.dim == 3)
    np.testing.assert_allclose(values, [(1 - np.sqrt(5)) / 2, (1 + np.sqrt(5)) / 2], atol=1e-9)


def test_young_form_generators_are_symmetric_involutions():
    from groupcc.groups.closed_forms import standard_tableaux, young_generators

    assert len(standard_tableaux((3, 2, 1))) == 16  # hook length formula: 6!/(5·3·1·3·1·1)
    gens = young_generators((3, 2, 1))
    for g in gens:
        np.testing.assert_allclose(g, g.T, atol=1e-12)
        np.testing.assert_allclose(g @ g, np.eye(16), atol=1e-12)
    for a, b in zip(gens, gens[1:]):  # braid relation s_k s_{k+1} s_k = s_{k+1} s_k s_{k+1}
        np.testing.assert_allclose(a @ b @ a, b @ a @ b, atol=1e-12)


def test_dihedral_closed_form_convention():
    group = dihedral(5)
    rot1 = next(irrep for irrep in group.irreps() if irrep.name == "rot1")
    r, s = group.index_of("r"), group.index_of("s")
    np.testing.assert_allclose(rot1.matrices[s], np.diag([1.0, -1.0]))
    theta = 2 * np.pi / 5
    np.testing.assert_allclose(rot1.matrices[r], [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def test_check_names_the_failure():
    group = cyclic(4)
    broken = Irrep(group, "broken", np.stack([np.eye(2)] * 3 + [2 * np.eye(2)]))
    with pytest.raises(GroupError, match="not orthogonal"):
        broken.check()
    reducible = Irrep(group, "reducible", np.stack([np.eye(2)] * 4))
    with pytest.raises(GroupError, match="not irreducible"):
        reducible.check()
    not_hom = Irrep(group, "swap", np.stack([np.eye(1), -np.eye(1), -np.eye(1), np.eye(1)]))
    with pytest.raises(GroupError, match="ρ\\(g\\)ρ\\(h\\) != ρ\\(gh\\)"):
        not_hom.check()


def test_product_of_three_factors_indexes_in_mixed_radix():
    a, b, c = cyclic(2), cyclic(3), dihedral(2)
    group = direct_product(a, b, c)
    assert group.order == 24
    assert group.labels[1 * 12 + 2 * 4 + 3] == "(r, r^2, s r)"
    assert_complete_real_irreps(group)
