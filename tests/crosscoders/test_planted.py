"""The planted-feature generator used as ground truth for dictionary training."""

import numpy as np
import pytest

from groupcc.crosscoders import best_cosines, orthogonal_representation, plant_group_features, recovered_fraction
from groupcc.groups import get_group


@pytest.mark.parametrize("name, d", [("C8", 16), ("D4", 13), ("S3", 7), ("C1", 4)])
def test_orthogonal_representation_is_a_homomorphism_into_orthogonal_matrices(name, d):
    group = get_group(name)
    mats = orthogonal_representation(group, d, np.random.default_rng(0))
    assert mats.shape == (group.order, d, d)
    assert np.allclose(mats[0], np.eye(d))
    assert np.allclose(np.einsum("gij,gkj->gik", mats, mats), np.eye(d))
    products = np.einsum("gij,hjk->ghik", mats, mats)
    assert np.allclose(products, mats[group.mult_table])


def test_planted_activations_transform_with_the_representation():
    """a(g·x) = M_g a(x) (without noise), and every block of a planted feature is a unit vector."""
    planted = plant_group_features(get_group("D4"), d=12, n_features=10, seed=0)
    assert np.allclose(np.linalg.norm(planted.features_KBD, axis=-1), 1.0)
    acts, codes = planted.sample(200, np.random.default_rng(1), active=3.0, noise=0.0)
    assert acts.shape == (200, 8, 12) and acts.dtype == np.float32
    assert np.allclose(acts, np.einsum("gij,nj->ngi", planted.representation_GDD, acts[:, 0]), atol=1e-5)
    assert 2.0 < (codes > 0).sum(1).mean() < 4.0 and codes.min() >= 0


def test_recovery_score_matches_permuted_scaled_copies_and_not_random_rows():
    planted = plant_group_features(get_group("C4"), d=8, n_features=6, seed=0)
    rng = np.random.default_rng(0)
    decoder = np.concatenate([planted.features_KBD[::-1] * 3.0, rng.standard_normal((4, 4, 8))])
    assert np.allclose(best_cosines(decoder, planted.features_KBD), 1.0)
    assert recovered_fraction(decoder, planted.features_KBD) == 1.0
    assert recovered_fraction(rng.standard_normal((50, 4, 8)), planted.features_KBD) == 0.0
