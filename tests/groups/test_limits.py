"""Sizes: exact orders, refusals before anything is built, memory estimates, lazy closed forms, the generic
algorithm at scale (PSL(2,q)) and the structure helpers that C_n and D_n at the cap rely on."""

import math
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from groupcc.groups import (
    MAX_ORDER,
    GroupError,
    array_bytes,
    bytes_text,
    cyclic,
    dihedral,
    from_permutations,
    get_group,
    memory_refusal,
    symmetric,
)
from groupcc.groups.irreps import check_complete
from groupcc.groups.limits import factorial_order, order_text, table_bytes


@pytest.mark.parametrize("name, order", [("S21", math.factorial(21)), ("S22", math.factorial(22)),
                                         ("A21", math.factorial(21) // 2), ("S25", math.factorial(25)),
                                         ("A8", 20160), ("S8", 40320), ("C10001", 10001), ("D5001", 10002)])
def test_too_large_groups_are_refused_with_the_exact_order_and_the_memory(name, order):
    start = time.perf_counter()
    with pytest.raises(GroupError) as error:
        get_group(name)
    assert time.perf_counter() - start < 1  # refused before any table is built
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{name} has order {order}, ")
    assert f"maximum of {MAX_ORDER}" in message and bytes_text(8 * order**2) in message


def test_the_command_line_refuses_s21_in_one_line(capsys):
    from groupcc.cli import main

    assert main(["groups", "info", "S21"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("groupcc: error: S21 has order 51090942171709440000, above groupcc's maximum of 10000")


def test_products_and_huge_names_are_refused_before_building_a_factor():
    start = time.perf_counter()
    with pytest.raises(GroupError, match=r"^C100xC100xC100 has order 1000000, .* 8 TB"):
        get_group("C100xC100xC100")  # C100xC100 alone (order 10⁴) would build a 0.8 GB table
    with pytest.raises(GroupError, match=r"^S7xC2 has order 10080, "):
        get_group("S7xC2")
    with pytest.raises(GroupError, match="2000 digits"):
        get_group("S" + "9" * 2000)  # more digits than int() converts
    with pytest.raises(GroupError, match=r"^S100000 has order ≈ 2.82e\+456573, "):
        get_group("S100000")  # from lgamma, without computing 100000!
    with pytest.raises(GroupError, match="far above"):
        cyclic(10**5000)
    assert time.perf_counter() - start < 2


def test_group_order_cap_is_inclusive():
    assert factorial_order("S7", 7) == 5040 and factorial_order("A2", 2, divisor=2) == 1
    with pytest.raises(GroupError, match="maximum of 10000"):
        factorial_order("S8", 8)
    assert table_bytes(MAX_ORDER) == 8 * 10**8


@given(st.integers(0, 10**60))
def test_order_text_is_exact_up_to_thirty_digits(order):
    text = order_text(order)
    if order < 10**30:
        assert text == str(order)
    else:
        mantissa, exponent = text.removeprefix("≈ ").split("e+")
        assert abs(float(mantissa) * 10 ** int(exponent) / order - 1) < 5e-3


def test_byte_counts_and_memory_refusals():
    assert [bytes_text(n) for n in (512, 2_500, 8 * 10**8, 1.23e12, 10**40)] == ["512 B", "2.5 KB", "800 MB", "1.23 TB", "1e+28 TB"]
    assert array_bytes((100_000, 120, 128), 4) == 6_144_000_000  # an exact Python integer: no int64 overflow
    assert array_bytes((10**10, 10**10, 10**10), 4) == 4 * 10**30
    assert memory_refusal("the decoder", 10**9, budget=2 * 10**9) is None
    message = memory_refusal("the decoder [100000, 120, 128]", 4 * 6_144_000_000, budget=16 * 10**9)
    assert message == "the decoder [100000, 120, 128] would need about 24.6 GB of memory, more than the 16 GB available"
    assert memory_refusal("anything", 10**30) is not None  # against the physical memory by default


@pytest.mark.parametrize("maker, n", [(cyclic, 1000), (dihedral, 500), (cyclic, 7), (dihedral, 6)])
def test_cyclic_and_dihedral_matrices_are_made_only_on_use(maker, n):
    group = maker(n)
    irreps = group.irreps()
    assert all(irrep._matrices is None for irrep in irreps if irrep.dim == 2)
    check_complete(group, irreps)  # characters and types alone: Σ d²/⟨χ,χ⟩ = |G|, one irrep per real class
    assert group.character_table().shape == (len(irreps), len(group.conjugacy_classes()))
    for irrep in irreps[-3:]:
        irrep.check()  # builds the matrices; the closed-form character must be their trace
        assert irrep._matrices is not None


def test_cyclic_and_dihedral_tables_follow_the_formulas():
    n = 9
    a, b = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    np.testing.assert_array_equal(cyclic(n).mult_table, (a + b) % n)
    # (s^f r^x)(s^h r^y) = s^(f+h) r^((-1)^h x + y), element f·n + x
    table = dihedral(n).mult_table
    for f in range(2):
        for h in range(2):
            expected = ((f + h) % 2) * n + (((-1) ** h) * a + b) % n
            np.testing.assert_array_equal(table[f * n:(f + 1) * n, h * n:(h + 1) * n], expected)


@pytest.mark.parametrize("name", ["C1", "C12", "D7", "S4", "A5", "Q8", "C2xC2xC2", "S3xC4"])
def test_structure_helpers_match_brute_force(name):
    group = get_group(name)
    table = group.mult_table
    assert group.is_abelian == bool(np.array_equal(table, table.T))
    assert np.array_equal(group.subgroup_generated(group.generators), np.arange(group.order))
    np.testing.assert_array_equal(group.squares, table[np.arange(group.order), np.arange(group.order)])
    for g in range(group.order):
        power, k = g, 1
        while power != 0:
            power, k = table[power, g], k + 1
        assert group.element_orders[g] == k


def psl2(q):
    """PSL(2, q), q prime, on the projective line {0..q-1, ∞ = q}: z ↦ z + 1 and z ↦ -1/z."""
    shift = [(z + 1) % q for z in range(q)] + [q]
    invert = [q if z == 0 else (-pow(z, -1, q)) % q for z in range(q)] + [0]
    return from_permutations([shift, invert], name=f"PSL(2,{q})")


@pytest.mark.parametrize("q, real_irreps", [(7, [(1, "R"), (6, "C"), (6, "R"), (7, "R"), (8, "R")]),
                                            (11, [(1, "R"), (10, "C"), (10, "R"), (10, "R"), (11, "R"), (12, "R"), (12, "R")])])
def test_generic_irreps_of_psl2(q, real_irreps):
    """Complex irreps of PSL(2,7): 1, 3, 3̄, 6, 7, 8; of PSL(2,11): 1, 5, 5̄, 10, 10, 11, 12, 12. A conjugate pair is
    one real irrep of type C and twice the dimension."""
    group = psl2(q)
    assert group.order == q * (q * q - 1) // 2
    irreps = group.irreps()
    assert sorted((irrep.dim, irrep.type) for irrep in irreps) == sorted(real_irreps)
    for irrep in irreps:
        irrep.check()


def test_groups_info_leaves_out_a_character_table_above_its_cap(monkeypatch):
    import json

    import groupcc.group_info as info

    monkeypatch.setattr(info, "MAX_CHARACTER_TABLE_ENTRIES", 20)
    document = info.describe_group(get_group("C7"))  # 4 irreps × 7 classes = 28 entries
    assert document["character_table"] is None and len(document["irreps"]) == 4 and len(document["classes"]) == 7
    assert "character table omitted: 4 irreps × 7 classes = 28 entries, more than the 20 shown" in info.format_group(document)
    assert json.loads(info.groups_info("C7", True))["character_table"] is None
    small = info.describe_group(symmetric(3))  # 3 × 3 = 9 entries
    np.testing.assert_allclose(np.array(small["character_table"], dtype=float), symmetric(3).character_table())
    assert all(isinstance(value, int) for row in small["character_table"] for value in row)
