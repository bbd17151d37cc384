"""Dictionary metrics: FVU per block and pooled, L0, dead and dense features, the density plot, streaming."""

import numpy as np
import pytest
import torch

from groupcc.crosscoders import Dictionary, DictionaryConfig, DictionaryError
from groupcc.eval.dictionary_metrics import evaluate_dictionary, plot_feature_density
from groupcc.training.activation_store import InMemoryActivations, write_store


def activations(n=500, n_blocks=3, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, n_blocks, d)) * rng.uniform(0.5, 3, (n_blocks, d)) + 4).astype(np.float32)


def dictionary(sparsity="topk", n_blocks=3, d=5, n_features=12, seed=0, acts=None, **options):
    config = DictionaryConfig(kind="crosscoder" if n_blocks > 1 else "sae", d=d, n_features=n_features,
                              n_blocks=n_blocks, sparsity=sparsity, k=2, **options)
    model = Dictionary(config, seed=seed)
    if acts is not None:
        model.initialise_from_data(torch.from_numpy(acts))
    return model.eval()


def test_streamed_metrics_equal_a_direct_float64_computation(tmp_path):
    acts = activations()
    model = dictionary(acts=acts)
    with torch.no_grad():
        model.W_dec.normal_()
    store = write_store(tmp_path / "store", acts, shard_rows=64)
    metrics = evaluate_dictionary(model, store, batch_size=70, progress=False)  # 70 does not divide 500

    with torch.no_grad():
        output = model(torch.from_numpy(acts))
    a, recon = acts.astype(np.float64), output.recon_NBD.double().numpy()
    error = ((a - recon) ** 2).sum((0, 2))
    variance = ((a - a.mean(0)) ** 2).sum((0, 2))
    assert metrics.fvu_per_block == pytest.approx((error / variance).tolist(), rel=1e-9)
    assert metrics.fvu == pytest.approx(error.sum() / variance.sum(), rel=1e-9)
    dense_codes = output.codes.to_dense().numpy()
    assert metrics.l0 == pytest.approx((dense_codes > 0).sum(1).mean())
    assert np.allclose(metrics.feature_density, (dense_codes > 0).mean(0))
    assert metrics.n_inputs == 500


def test_perfect_reconstruction_has_fvu_zero_and_the_mean_has_fvu_one():
    acts = activations()
    model = dictionary("l1", acts=acts)
    with torch.no_grad():
        model.W_dec.zero_()  # reconstruction = b_dec / s = the data mean
    metrics = evaluate_dictionary(model, InMemoryActivations(acts), progress=False)
    assert metrics.fvu == pytest.approx(1.0, abs=1e-5)
    assert metrics.fvu_per_block == pytest.approx([1.0] * 3, abs=1e-5)

    identity = dictionary("l1", n_blocks=1, d=5, n_features=10)
    with torch.no_grad():  # features ±x_j: ReLU(x) − ReLU(−x) = x
        eye = torch.eye(5)
        identity.W_enc.copy_(torch.cat([eye, -eye], 1)[None])
        identity.W_dec.copy_(torch.cat([eye, -eye])[:, None])
        identity.b_enc.zero_()
    single = activations(n_blocks=1)
    assert evaluate_dictionary(identity, InMemoryActivations(single), progress=False).fvu == pytest.approx(0.0, abs=1e-10)


def test_dead_and_dense_features_are_counted():
    acts = activations()
    model = dictionary("l1", n_features=10, acts=acts)
    with torch.no_grad():
        model.W_enc.zero_()
        model.b_enc.copy_(torch.tensor([1.0] * 3 + [-1.0] * 7))  # 3 always on, 7 never
    metrics = evaluate_dictionary(model, InMemoryActivations(acts), progress=False)
    assert metrics.dead_fraction == pytest.approx(0.7)
    assert metrics.dense_fraction == pytest.approx(0.3)
    assert metrics.l0 == pytest.approx(3.0)
    assert metrics.summary()["dense_threshold"] == 0.1


def test_topk_l0_is_k_and_max_rows_limits_the_data():
    acts = activations()
    metrics = evaluate_dictionary(dictionary("topk", acts=acts), InMemoryActivations(acts), max_rows=123, progress=False)
    assert metrics.n_inputs == 123 and metrics.l0 == pytest.approx(2.0)


@pytest.mark.parametrize("max_rows", [0, -3, 2**63, 1.5, True])
def test_max_rows_is_a_positive_64_bit_integer(max_rows):
    acts = activations(n=10)
    with pytest.raises(DictionaryError, match=rf"^max_rows = {max_rows!r}: expected an integer in \[1, 9223372036854775807\]$"):
        evaluate_dictionary(dictionary("topk", acts=acts), InMemoryActivations(acts), max_rows=max_rows, progress=False)


def test_an_sae_is_evaluated_on_the_blocks_its_config_names():
    acts = activations(n=40)
    identity = dictionary("topk", n_blocks=1, acts=acts[:, :1])
    on_identity = evaluate_dictionary(identity, InMemoryActivations(acts), progress=False)
    assert on_identity.n_inputs == 40 and len(on_identity.fvu_per_block) == 1
    assert on_identity.fvu == evaluate_dictionary(identity, InMemoryActivations(acts[:, :1]), progress=False).fvu
    every = evaluate_dictionary(dictionary("topk", n_blocks=1, acts=acts[:, :1], sae_input="all"), InMemoryActivations(acts), progress=False)
    assert every.n_inputs == 120


def test_density_histogram_is_written_as_png(tmp_path):
    acts = activations()
    metrics = evaluate_dictionary(dictionary("topk", acts=acts), InMemoryActivations(acts), progress=False)
    path = plot_feature_density(metrics, tmp_path / "plots" / "density.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["density.png"]
