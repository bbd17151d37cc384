"""Fourier transform (inversion, Plancherel, spectra) and group actions (action laws)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from groupcc.groups import (
    GroupError,
    conjugation,
    fourier_transform,
    get_group,
    inverse_fourier_transform,
    irrep_energies,
    irrep_spectrum,
    left_multiplication,
    regular_representation,
    right_multiplication,
)

NAMES = ["C7", "D5", "S4", "A4", "Q8", "C3xC3"]


@st.composite
def group_and_function(draw):
    group = get_group(draw(st.sampled_from(NAMES)))
    values = draw(arrays(np.float64, (2, group.order), elements=st.floats(-10, 10)))
    return group, values


@given(group_and_function())
def test_inverse_transform_recovers_function(case):
    group, f = case
    np.testing.assert_allclose(inverse_fourier_transform(group, fourier_transform(group, f)), f, atol=1e-9)


@given(group_and_function())
def test_plancherel(case):
    group, f = case
    np.testing.assert_allclose(irrep_energies(group, f).sum(-1), (f**2).sum(-1), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_matrix_entries_live_on_their_irrep(name):
    group = get_group(name)
    for k, irrep in enumerate(group.irreps()):
        entry = irrep.matrices[:, 0, irrep.dim - 1]
        spectrum = irrep_spectrum(group, entry)
        assert spectrum[k] == pytest.approx(1.0)
        assert spectrum.sum() == pytest.approx(1.0)


def test_spectrum_edge_cases_and_errors():
    group = get_group("D4")
    np.testing.assert_allclose(irrep_spectrum(group, np.ones(8)), np.eye(len(group.irreps()))[0], atol=1e-12)
    np.testing.assert_array_equal(irrep_spectrum(group, np.zeros(8)), 0)
    with pytest.raises(GroupError, match="last axis of length 8"):
        fourier_transform(group, np.ones(7))
    with pytest.raises(GroupError, match="Fourier coefficients"):
        inverse_fourier_transform(group, [np.ones((1, 1))])


@pytest.mark.parametrize("name", ["D4", "S3xC2", "A4"])
def test_action_laws(name):
    group = get_group(name)
    g, h = np.meshgrid(np.arange(group.order), np.arange(group.order), indexing="ij")
    gh = group.mult_table[g, h]
    left, right, conj = left_multiplication(group), right_multiplication(group), conjugation(group)
    np.testing.assert_array_equal(left[gh], np.take_along_axis(left[g], left[h], axis=-1))  # (gh)·x = g·(h·x)
    np.testing.assert_array_equal(conj[gh], np.take_along_axis(conj[g], conj[h], axis=-1))
    np.testing.assert_array_equal(right[gh], np.take_along_axis(right[h], right[g], axis=-1))  # x·(gh) = (x·g)·h
    assert (conj[:, 0] == 0).all()
    regular = regular_representation(group)
    np.testing.assert_array_equal(np.einsum("gij,gjk->gik", regular[g.ravel()], regular[h.ravel()]), regular[gh.ravel()])
