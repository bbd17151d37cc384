"""Groups from Cayley tables: valid tables are accepted whatever their labelling, bad ones rejected with
the failing axiom named; the associativity verdict agrees with a brute-force check."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from groupcc.groups import GroupError, from_cayley_table, get_group, read_cayley_table

GROUP_NAMES = ["C6", "D4", "S3", "Q8", "A4", "C2xC2xC2", "D5"]


def relabel(table: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """The table of the same group with element i renamed perm[i]."""
    out = np.empty_like(table)
    out[np.ix_(perm, perm)] = perm[table]
    return out


@st.composite
def group_and_relabelling(draw):
    group = get_group(draw(st.sampled_from(GROUP_NAMES)))
    rest = draw(st.permutations(list(range(1, group.order))))
    return group, np.array([0] + list(rest))


@given(group_and_relabelling())
def test_relabelled_group_table_is_accepted_and_isomorphic(case):
    group, perm = case
    relabelled = from_cayley_table(relabel(group.mult_table, perm))
    assert sorted(map(len, relabelled.conjugacy_classes())) == sorted(map(len, group.conjugacy_classes()))
    assert sorted(relabelled.element_orders) == sorted(group.element_orders)
    assert sorted(i.dim for i in relabelled.irreps()) == sorted(i.dim for i in group.irreps())


@given(group_and_relabelling(), st.data())
def test_changing_one_entry_is_rejected(case, data):
    group, perm = case
    table = relabel(group.mult_table, perm)
    a = data.draw(st.integers(0, group.order - 1))
    b = data.draw(st.integers(0, group.order - 1))
    new = data.draw(st.integers(0, group.order - 1).filter(lambda v: v != table[a, b]))
    table[a, b] = new
    with pytest.raises(GroupError, match="no identity|no inverses"):
        from_cayley_table(table)


@given(group_and_relabelling(), st.data())
def test_swapping_two_columns_breaks_the_identity(case, data):
    group, perm = case
    table = relabel(group.mult_table, perm)
    b, c = data.draw(st.lists(st.integers(1, group.order - 1), min_size=2, max_size=2, unique=True))
    table[:, [b, c]] = table[:, [c, b]]
    with pytest.raises(GroupError, match="no identity"):
        from_cayley_table(table)


def brute_force_associative(table: np.ndarray) -> bool:
    """(a·b)·c == a·(b·c) for all n³ triples."""
    idx = np.arange(len(table))
    left = table[table[:, :, None], idx[None, None, :]]  # [a, b, c] -> (a·b)·c
    right = table[idx[:, None, None], table[None, :, :]]  # [a, b, c] -> a·(b·c)
    return bool(np.array_equal(left, right))


def random_reduced_latin_square(n: int, rng) -> np.ndarray:
    """A random Latin square with row 0 and column 0 equal to 0..n-1 (a loop with identity 0), filled
    cell by cell with randomised backtracking. For n >= 5 most of these are not groups."""
    square = -np.ones((n, n), dtype=np.int64)
    square[0] = square[:, 0] = np.arange(n)
    cells = [(i, j) for i in range(1, n) for j in range(1, n)]

    def fill(k: int) -> bool:
        if k == len(cells):
            return True
        i, j = cells[k]
        for symbol in rng.sample(range(n), n):
            if symbol not in square[i] and symbol not in square[:, j]:
                square[i, j] = symbol
                if fill(k + 1):
                    return True
                square[i, j] = -1
        return False

    assert fill(0)
    return square


@st.composite
def loops(draw):
    return random_reduced_latin_square(draw(st.integers(2, 7)), draw(st.randoms(use_true_random=False)))


@given(loops())
def test_associativity_verdict_matches_brute_force(table):
    """Both outcomes occur: see test_random_loops_cover_both_verdicts."""
    associative = brute_force_associative(table)
    if associative:
        assert from_cayley_table(table).order == len(table)
    else:
        with pytest.raises(GroupError, match="not associative"):
            from_cayley_table(table)


def test_a_non_associative_loop_is_named():
    # The smallest non-associative loop has order 5.
    table = np.array([
        [0, 1, 2, 3, 4],
        [1, 0, 3, 4, 2],
        [2, 4, 0, 1, 3],
        [3, 2, 4, 0, 1],
        [4, 3, 1, 2, 0],
    ])
    assert not brute_force_associative(table)
    with pytest.raises(GroupError, match=r"not associative: \(\d·\d\)·\d = \d but \d·\(\d·\d\) = \d"):
        from_cayley_table(table)


@pytest.mark.parametrize(
    "table, message",
    [
        ([[0, 1], [1]], "square matrix|Cayley table"),
        ([[0, 1, 2]], "square"),
        ([[0.5, 1], [1, 0]], "integers"),
        ([["a", "b"], ["b", "a"]], "integers"),
        ([[0, 1], [1, 2]], "not closed: table\\[1, 1\\] = 2"),
        ([[1, 0], [0, 1]], "no identity.*element 1 is the identity"),
        ([[0, 1, 2], [1, 1, 0], [2, 0, 1]], "no inverses: row 1"),
        (np.zeros((0, 0), dtype=int), "non-empty"),
    ],
)
def test_bad_tables_name_the_problem(table, message):
    with pytest.raises(GroupError, match=message):
        from_cayley_table(table)


def test_read_cayley_table_files(tmp_path):
    table = get_group("S3").mult_table
    np.save(tmp_path / "s3.npy", table)
    (tmp_path / "s3.csv").write_text("\n".join(",".join(map(str, row)) for row in table))
    (tmp_path / "s3.json").write_text(str(table.tolist()))
    for name in ("s3.npy", "s3.csv", "s3.json"):
        group = read_cayley_table(tmp_path / name)
        assert group.order == 6 and group.name == "s3"
    (tmp_path / "bad.txt").write_text("0 1\n1 x\n")
    with pytest.raises(GroupError, match="cannot read"):
        read_cayley_table(tmp_path / "bad.txt")
    with pytest.raises(GroupError, match="does not exist"):
        read_cayley_table(tmp_path / "missing.npy")


def test_random_loops_cover_both_verdicts():
    import random

    rng = random.Random(0)
    verdicts = {brute_force_associative(random_reduced_latin_square(n, rng)) for n in (3, 4, 5, 6) for _ in range(10)}
    assert verdicts == {True, False}
