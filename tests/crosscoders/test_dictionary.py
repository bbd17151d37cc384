"""The dictionary model: configuration, initialisation, encoding and decoding, input scale, training statistics, losses."""

import inspect
import math
from contextlib import contextmanager

import pytest
import torch

from groupcc.crosscoders import LOSSES, Codes, Dictionary, DictionaryConfig, DictionaryError, aux_k_loss, dictionary_loss, l1_loss
from groupcc.crosscoders.losses import residual
from groupcc.groups import limits

SPARSITIES = ["l1", "topk", "batchtopk"]


def crosscoder(sparsity="topk", encoder_reads="identity", n_blocks=4, d=6, n_features=20, seed=0, **options):
    config = DictionaryConfig(kind="crosscoder", d=d, n_features=n_features, n_blocks=n_blocks, sparsity=sparsity, k=3,
                              encoder_reads=encoder_reads, **options)
    return Dictionary(config, seed=seed)


def random_acts(n=32, n_blocks=4, d=6, seed=0):
    return torch.randn(n, n_blocks, d, generator=torch.Generator().manual_seed(seed)) * 3 + 1


@contextmanager
def one_line_error(match):
    """Expect a DictionaryError whose message is one line matching ``match``."""
    with pytest.raises(DictionaryError, match=match) as err:
        yield err
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------- configuration
@pytest.mark.parametrize("bad, match", [
    ({"sparsity": "relu"}, "sparsity = 'relu': expected one of l1, topk, batchtopk"),
    ({"kind": "transcoder"}, "kind = 'transcoder'"),
    ({"encoder_reads": "some"}, "encoder_reads = 'some'"),
    ({"k": 30}, "k = 30 exceeds n_features = 20"),
    ({"d": 0}, r"d = 0: expected an integer in \[1, "),
    ({"n_features": 2**63}, r"n_features = 9223372036854775808: expected an integer in \[1, 1000000000\]"),
    ({"aux_k": 2**63}, r"aux_k = 9223372036854775808: expected an integer in \[1, 1000000000\]"),
    ({"dead_after_steps": 2**64}, r"dead_after_steps = 18446744073709551616: expected an integer in \[1, 9223372036854775807\]"),
    ({"kind": "sae", "n_blocks": 4}, "an SAE has one block, got n_blocks = 4"),
    ({"threshold_momentum": 1.0}, "threshold_momentum = 1.0"),
])
def test_bad_config_is_a_one_line_error_naming_the_value(bad, match):
    values = {"kind": "crosscoder", "d": 6, "n_features": 20, "n_blocks": 4, **bad}
    with one_line_error(match):
        DictionaryConfig(**values)


def test_a_dictionary_whose_weights_do_not_fit_in_memory_is_refused(monkeypatch):
    monkeypatch.setattr(limits, "physical_memory_bytes", lambda: 16 * 10**9)
    DictionaryConfig(kind="crosscoder", d=6, n_features=10**7, n_blocks=4)  # 1.4 GB of weights
    with one_line_error(r"^the weights of a crosscoder of 100000000 features x 4 blocks x width 6 would need about 13.6 GB "
                        r"of memory, more than the 75% of this machine's 16 GB available: expected fewer features$"):
        DictionaryConfig(kind="crosscoder", d=6, n_features=10**8, n_blocks=4)


def test_config_round_trips_through_a_dict_and_rejects_unknown_keys():
    config = DictionaryConfig(kind="crosscoder", d=6, n_features=20, n_blocks=4, sparsity="l1", group="C4")
    assert DictionaryConfig.from_dict(config.to_dict()) == config
    with one_line_error("unknown dictionary config keys \\['width'\\]"):
        DictionaryConfig.from_dict({**config.to_dict(), "width": 3})


# ---------------------------------------------------------------------- initialisation and scale
@pytest.mark.parametrize("encoder_reads", ["identity", "all"])
def test_initialisation_ties_the_encoder_to_the_small_decoder(encoder_reads):
    model = crosscoder(encoder_reads=encoder_reads, decoder_init_norm=0.1)
    assert torch.allclose(model.W_dec.flatten(1).norm(dim=1), torch.full((20,), 0.1))
    read = 4 if encoder_reads == "all" else 1
    assert model.W_enc.shape == (read, 6, 20)
    assert torch.equal(model.W_enc, model.W_dec[:, :read].permute(1, 2, 0))
    assert not model.b_enc.any()


def test_same_seed_same_initialisation():
    assert torch.equal(crosscoder(seed=3).W_dec, crosscoder(seed=3).W_dec)
    assert not torch.equal(crosscoder(seed=3).W_dec, crosscoder(seed=4).W_dec)


def test_initialise_from_data_scales_blocks_to_mean_norm_sqrt_d_and_centres_the_decoder_bias():
    model, acts = crosscoder(), random_acts(n=500)
    model.initialise_from_data(acts)
    scaled = acts * model.input_scale
    assert scaled.norm(dim=-1).mean().item() == pytest.approx(math.sqrt(6), rel=1e-5)
    assert torch.allclose(model.b_dec, scaled.mean(0), atol=1e-5)
    model.initialise_from_data(acts, mean_norm=2.0)
    assert model.input_scale.item() == pytest.approx(math.sqrt(6) / 2)


def test_initialise_from_data_rejects_non_finite_activations():
    acts = random_acts()
    acts[3, 1, 2] = float("nan")
    with one_line_error("activations contain NaN or inf: expected finite values"):
        crosscoder().initialise_from_data(acts)


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("encoder_reads", ["identity", "all"])
def test_folding_the_input_scale_keeps_codes_and_reconstructions(sparsity, encoder_reads):
    model, acts = crosscoder(sparsity, encoder_reads), random_acts()
    model.initialise_from_data(acts)
    model.threshold.fill_(0.05)
    model.eval()
    folded = model.fold_input_scale()
    assert folded.input_scale.item() == 1.0 and not folded.training
    before, after = model(acts), folded(acts)
    assert torch.allclose(before.codes.to_dense(), after.codes.to_dense(), atol=1e-5)
    assert torch.allclose(before.recon_NBD, after.recon_NBD, atol=1e-5)
    assert torch.allclose(folded.W_dec, model.W_dec / model.input_scale)


# ---------------------------------------------------------------------- encoding and decoding
@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("encoder_reads", ["identity", "all"])
def test_forward_shapes_and_sparsity(sparsity, encoder_reads):
    model, acts = crosscoder(sparsity, encoder_reads), random_acts()
    model.initialise_from_data(acts)
    output = model(acts)
    assert output.recon_NBD.shape == acts.shape and output.pre_NF.shape == (32, 20)
    assert output.codes.to_dense().shape == (32, 20) and output.codes.n_inputs == 32
    if sparsity == "topk":  # k/F = 3/20: kept dense (DENSE_TOPK_FRACTION), 3 values per input at most
        assert (output.codes.l0() <= 3).all() and not output.codes.is_sparse
    if sparsity == "batchtopk":
        assert output.codes.values.shape == (32 * 3,) and output.codes.l0().sum() <= 32 * 3


def test_identity_reading_encoder_ignores_the_other_blocks():
    model, acts = crosscoder(), random_acts()
    changed = acts.clone()
    changed[:, 1:] = torch.randn_like(changed[:, 1:])
    assert torch.equal(model.encode(acts).to_dense(), model.encode(changed).to_dense())
    reads_all = crosscoder(encoder_reads="all")
    assert not torch.equal(reads_all.encode(acts).to_dense(), reads_all.encode(changed).to_dense())


def test_encoder_and_decoder_follow_the_formulas():
    """f = σ(W_enc[0]ᵀ(s·a_0 − b_dec[0]) + b_enc), â_g = (W_dec[:, g]ᵀ f + b_dec[g]) / s."""
    model, acts = crosscoder("l1"), random_acts()
    model.initialise_from_data(acts)
    with torch.no_grad():
        model.b_enc.normal_()
    s = model.input_scale
    f = torch.relu((acts[:, 0] * s - model.b_dec[0]) @ model.W_enc[0] + model.b_enc)
    recon = (torch.einsum("nf,fbd->nbd", f, model.W_dec) + model.b_dec) / s
    output = model(acts)
    assert torch.allclose(output.codes.to_dense(), f, atol=1e-5)
    assert torch.allclose(output.recon_NBD, recon, atol=1e-5)


@pytest.mark.parametrize("sparsity, n_features, sparse", [("topk", 40, True), ("topk", 20, False), ("batchtopk", 20, True)])
def test_sparse_decoding_matches_dense_decoding_with_gradients(sparsity, n_features, sparse):
    """Decoding only the active features gives the dense product's output and gradients (TopK codes with k/F at
    least DENSE_TOPK_FRACTION are dense themselves: the same check holds)."""
    acts = random_acts()
    sparse_model, dense_model = crosscoder(sparsity, n_features=n_features), crosscoder(sparsity, n_features=n_features)
    for model in (sparse_model, dense_model):
        model.initialise_from_data(acts)
    sparse_out = sparse_model(acts)
    dense_codes = dense_model.encode(acts).to_dense()
    dense_recon = dense_model.decode(Codes(dense_codes, n_features))
    assert sparse_out.codes.is_sparse == sparse
    assert torch.allclose(sparse_out.recon_NBD, dense_recon, atol=1e-5)
    sparse_out.recon_NBD.pow(2).sum().backward()
    dense_recon.pow(2).sum().backward()
    for name in ("W_dec", "W_enc", "b_enc", "b_dec"):
        assert torch.allclose(getattr(sparse_model, name).grad, getattr(dense_model, name).grad, atol=1e-4), name


def test_batchtopk_keeps_n_times_k_over_the_batch_in_training_and_a_threshold_at_inference():
    model, acts = crosscoder("batchtopk", threshold_momentum=0.5), random_acts()
    model.initialise_from_data(acts)
    training = model(acts).codes
    pre = model.pre_activations(acts)
    kept = pre.flatten().topk(32 * 3).values
    assert torch.allclose(training.to_dense().sum(), kept.relu().sum(), atol=1e-4)
    model.record_batch(training)
    first = model.threshold.item()
    assert first == pytest.approx(kept[kept > 0].min().item())
    model.record_batch(model(acts * 2).codes)
    assert model.threshold.item() == pytest.approx(0.5 * first + 0.5 * model(acts * 2).codes.smallest_positive().item())

    model.eval()
    batch_codes = model.encode(acts).to_dense()
    assert torch.equal(batch_codes, torch.where(pre > model.threshold, pre, torch.zeros_like(pre)))
    alone = torch.cat([model.encode(acts[n:n + 1]).to_dense() for n in range(len(acts))])
    assert torch.equal(alone > 0, batch_codes > 0)  # the same features fire whatever the batch
    assert torch.allclose(alone, batch_codes, atol=1e-6)


def test_codes_count_firing_features_and_l0():
    dense = Codes(torch.tensor([[0.0, 2.0, 1.0], [0.0, 0.0, 3.0]]), 3)
    sparse = Codes(torch.tensor([2.0, 1.0, 0.0, 3.0]), 3, torch.tensor([1, 2, 0, 2]), torch.tensor([0, 2]))
    for codes in (dense, sparse):
        assert codes.firing_counts().tolist() == [0, 1, 2]
        assert codes.l0().tolist() == [2, 1]
        assert codes.weighted_sum(torch.tensor([5.0, 1.0, 2.0])).tolist() == [4.0, 6.0]
    assert torch.equal(sparse.to_dense(), dense.values)


@pytest.mark.parametrize("shape, match", [
    ((5, 4, 7), r"activations of shape \[5, 4, 7\] do not fit this crosscoder: expected \[N, 4, 6\]"),
    ((5, 3, 6), r"activations of shape \[5, 3, 6\] do not fit this crosscoder: expected \[N, 4, 6\]"),
    ((5, 24), r"activations of shape \[5, 24\]"),
])
def test_activations_of_another_width_or_number_of_blocks_are_a_one_line_error(shape, match):
    with one_line_error(match):
        crosscoder()(torch.randn(shape))


# ---------------------------------------------------------------------- training statistics
def test_steps_since_fired_counts_up_and_resets_and_marks_dead_features():
    model = crosscoder(dead_after_steps=2)
    fire_feature_3 = Codes(torch.tensor([1.5]), 20, torch.tensor([3]), torch.tensor([0]))
    for _ in range(2):
        model.record_batch(fire_feature_3)
    assert model.steps_since_fired[3] == 0 and (model.steps_since_fired[:3] == 2).all()
    assert model.dead_latents().sum() == 19 and not model.dead_latents()[3]


# ---------------------------------------------------------------------- losses
def test_every_loss_has_the_same_signature():
    signatures = {str(inspect.signature(loss)) for loss in LOSSES.values()}
    assert len(signatures) == 1


def test_l1_loss_is_squared_error_plus_decoder_norm_weighted_l1():
    """Σ_g ‖s(a_g − â_g)‖² + λ Σ_i f_i Σ_g ‖W_dec[i, g]‖, averaged over inputs."""
    model, acts = crosscoder("l1"), random_acts()
    model.initialise_from_data(acts)
    output = model(acts)
    terms = dictionary_loss(model, acts, output, sparsity_coefficient=0.7)
    s = model.input_scale
    squared_error = ((acts - output.recon_NBD) * s).pow(2).sum((1, 2)).mean()
    block_norms = model.W_dec.norm(dim=-1).sum(-1)
    penalty = (output.codes.to_dense() * block_norms).sum(1).mean()
    assert terms.total.item() == pytest.approx((squared_error + 0.7 * penalty).item(), rel=1e-5)
    assert set(terms.parts) == {"mse", "l1"}
    assert l1_loss(model, acts, output, 0.0).total.item() == pytest.approx(squared_error.item(), rel=1e-5)


def test_topk_loss_ignores_the_l1_coefficient_and_has_no_aux_term_without_dead_features():
    model, acts = crosscoder("topk"), random_acts()
    model.initialise_from_data(acts)
    output = model(acts)
    first, second = dictionary_loss(model, acts, output, 0.0), dictionary_loss(model, acts, output, 100.0)
    assert first.total.item() == second.total.item() == first.parts["mse"].item()
    assert first.parts["aux"].item() == 0.0


def test_aux_k_reconstructs_the_residual_with_the_most_active_dead_features_only():
    """AuxK = mean_n ‖e_n − Σ_{i ∈ topk_aux(dead)} f_i W_dec[i]‖², its gradient reaching dead features only."""
    model, acts = crosscoder("topk", aux_k=2, dead_after_steps=1), random_acts()
    model.initialise_from_data(acts)
    dead = torch.zeros(20, dtype=torch.bool)
    dead[[1, 4, 7, 9]] = True
    model.steps_since_fired.copy_(dead.long())
    output = model(acts)
    error = residual(model, acts, output).detach()
    aux = aux_k_loss(model, output.pre_NF, error)
    dead_pre = output.pre_NF.masked_fill(~dead, float("-inf"))
    values, ids = dead_pre.topk(2, dim=1)
    expected_recon = torch.einsum("nk,nkx->nx", values.relu(), model.W_dec.flatten(1)[ids])
    assert aux.item() == pytest.approx((error - expected_recon).pow(2).sum(1).mean().item(), rel=1e-5)
    aux.backward()
    touched = model.W_dec.grad.flatten(1).abs().sum(1) > 0
    assert touched.any() and not touched[~dead].any()
