"""Group structure: conventions, labels, classes, element orders, subgroups and cosets."""

import numpy as np
import pytest

from groupcc.groups import GroupError, alternating, cyclic, dihedral, direct_product, from_permutations, get_group, symmetric


def test_permutation_product_applies_right_factor_first():
    group = symmetric(3)
    a, b = group.index_of("(1 2)"), group.index_of("(2 3)")
    # b first: 1→1→2, 2→3→3, 3→2→1, i.e. (1 2 3)
    assert group.labels[group.mul(a, b)] == "(1 2 3)"
    np.testing.assert_array_equal(group.permutations[group.mul(a, b)], group.permutations[a][group.permutations[b]])


@pytest.mark.parametrize("name", ["C5", "D6", "S4", "A5", "Q8", "S3xC2"])
def test_table_axioms(name):
    group = get_group(name)
    n, t = group.order, group.mult_table
    idx = np.arange(n)
    np.testing.assert_array_equal(t[0], idx)
    np.testing.assert_array_equal(t[:, 0], idx)
    np.testing.assert_array_equal(t[idx, group.inverse], np.zeros(n))
    np.testing.assert_array_equal(t[t[:, :, None], idx], t[idx[:, None, None], t[None]])  # associativity


def test_orders_labels_and_classes():
    assert [get_group(n).order for n in ["C7", "D6", "S5", "A5", "S3xC2", "D59"]] == [7, 12, 120, 60, 12, 118]
    d4 = dihedral(4)
    assert d4.labels == ["e", "r", "r^2", "r^3", "s", "s r", "s r^2", "s r^3"]
    assert get_group("S3xC2").labels[1] == "((), r)"
    assert [len(c) for c in symmetric(5).conjugacy_classes()] == [1, 10, 20, 15, 30, 20, 24]
    assert sorted(len(c) for c in alternating(5).conjugacy_classes()) == [1, 12, 12, 15, 20]
    # D_n: odd n has (n+3)/2 classes, even n has n/2 + 3.
    assert len(dihedral(7).conjugacy_classes()) == 5 and len(dihedral(8).conjugacy_classes()) == 7
    assert cyclic(9).is_abelian and not symmetric(3).is_abelian
    assert sorted(np.bincount(symmetric(4).element_orders).tolist()) == sorted([0, 1, 9, 8, 6])


def test_dihedral_relations():
    group = dihedral(6)
    r, s = group.index_of("r"), group.index_of("s")
    assert group.mul(s, r) == group.mul(group.inverse[r], s)  # s r = r⁻¹ s
    assert group.element_orders[r] == 6 and group.element_orders[s] == 2
    assert group.labels[group.mul(s, group.power(r, 2))] == "s r^2"
    assert group.power(r, -1) == group.inverse[r] and group.power(r, 12) == 0
    # Same group as the symmetries of a hexagon's vertices.
    hexagon = from_permutations([[1, 2, 3, 4, 5, 0], [0, 5, 4, 3, 2, 1]])
    assert sorted(map(len, hexagon.conjugacy_classes())) == sorted(map(len, group.conjugacy_classes()))


def test_subgroups_and_cosets():
    s5 = symmetric(5)
    generated = s5.subgroup_generated([s5.index_of("(1 2)"), s5.index_of("(1 2 3 4 5)")])
    assert len(generated) == 120
    d6 = dihedral(6)
    rotations = d6.subgroup_generated([d6.index_of("r")])
    assert rotations.tolist() == list(range(6)) and d6.is_subgroup(rotations)
    assert d6.subgroup_generated([]).tolist() == [0]
    assert not d6.is_subgroup([0, 1])
    half_turn = d6.subgroup_generated([d6.index_of("r^3")])
    for cosets in (d6.left_cosets(half_turn), d6.right_cosets(half_turn)):
        assert len(cosets) == 6 and all(len(c) == 2 for c in cosets)
        np.testing.assert_array_equal(np.sort(np.concatenate(cosets)), np.arange(12))
    reflection = d6.subgroup_generated([d6.index_of("s")])
    left, right = d6.left_cosets(reflection), d6.right_cosets(reflection)
    assert {tuple(c) for c in left} != {tuple(c) for c in right}  # ⟨s⟩ is not normal
    with pytest.raises(GroupError, match="not form a subgroup"):
        d6.left_cosets([0, 1])
    with pytest.raises(GroupError, match="element 99 is not in D6"):
        d6.subgroup_generated([99])


def test_bad_names_and_sizes():
    for name, message in [("S0", "n >= 1"), ("D0", "n >= 1"), ("X5", "unknown group name 'X5'"), ("S9", "maximum"),
                          ("Q4", "Q8"), ("C3x", "unknown"), ("", "unknown")]:
        with pytest.raises(GroupError, match=message):
            get_group(name)
    with pytest.raises(GroupError, match="integer >= 1"):
        cyclic(0)
    with pytest.raises(GroupError, match="not a permutation"):
        from_permutations([[0, 0, 1]])
    with pytest.raises(GroupError, match="at least one"):
        direct_product()
    with pytest.raises(GroupError, match="no element labelled"):
        cyclic(3).index_of("s")
