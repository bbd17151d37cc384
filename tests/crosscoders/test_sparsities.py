"""JumpReLU, Matryoshka, the unit-norm decoder and the calibrated inference threshold, checked on their formulas."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from groupcc.crosscoders import (Codes, Dictionary, DictionaryConfig, DictionaryError, dictionary_loss, jumprelu_codes,
                                 jumprelu_l0, prefix_reconstructions, topk_codes)


def config(sparsity="topk", **options) -> DictionaryConfig:
    values = {"kind": "crosscoder", "d": 6, "n_features": 20, "n_blocks": 4, "sparsity": sparsity, "k": 3, **options}
    return DictionaryConfig(**values)


def random_acts(n=32, n_blocks=4, d=6, seed=0):
    return torch.randn(n, n_blocks, d, generator=torch.Generator().manual_seed(seed)) * 3 + 1


# ---------------------------------------------------------------------- JumpReLU
def test_jumprelu_codes_and_their_straight_through_gradients():
    """f = pre·1[pre > θ]; ∂f/∂pre = 1[pre > θ]; ∂f/∂θ := −(θ/ε)·1[|pre − θ| < ε/2]; ∂L0/∂θ := −(1/ε)·1[...]."""
    pre = torch.tensor([[0.5, 1.02, 0.99, 2.0], [1.04, 0.97, -0.3, 1.0]], requires_grad=True)
    threshold = torch.tensor([1.0, 1.0, 1.0, 0.5], requires_grad=True)
    bandwidth = 0.1  # the window is |pre − θ| < 0.05
    codes = jumprelu_codes(pre, threshold, bandwidth)
    expected = torch.tensor([[0.0, 1.02, 0.0, 2.0], [1.04, 0.0, 0.0, 1.0]])
    assert torch.equal(codes.values, expected)
    codes.values.sum().backward()
    assert torch.equal(pre.grad, (expected > 0).float())
    in_window = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float32)
    assert torch.allclose(threshold.grad, -(threshold.detach() / bandwidth) * in_window.sum(0))

    threshold.grad = None
    l0 = jumprelu_l0(pre, threshold, bandwidth)
    assert l0.tolist() == [2.0, 2.0]
    l0.sum().backward()
    assert torch.allclose(threshold.grad, -(1 / bandwidth) * in_window.sum(0))


def test_jumprelu_inference_codes_equal_the_training_codes_and_thresholds_stay_non_negative():
    model, acts = Dictionary(config("jumprelu")), random_acts()
    model.initialise_from_data(acts)
    with torch.no_grad():
        model.threshold.copy_(torch.linspace(-0.5, 1.0, 20))
    training = model.train()(acts).codes.values.detach()
    inference = model.eval()(acts).codes
    assert inference.is_sparse and torch.allclose(inference.to_dense(), training.relu())
    model.constrain()
    assert model.threshold.min() == 0.0


def test_the_jumprelu_loss_is_squared_error_plus_lambda_l0():
    model, acts = Dictionary(config("jumprelu")), random_acts()
    model.initialise_from_data(acts)
    output = model.train()(acts)
    terms = dictionary_loss(model, acts, output, sparsity_coefficient=0.3)
    squared_error = (output.scaled_input_NBD - output.scaled_recon_NBD).pow(2).sum((1, 2)).mean()
    l0 = (output.pre_NF > model.threshold).sum(1).float().mean()
    assert terms.total.item() == pytest.approx((squared_error + 0.3 * l0).item(), rel=1e-5)


# ---------------------------------------------------------------------- Matryoshka
@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 19), min_size=0, max_size=4, unique=True), st.integers(0, 10**6))
def test_prefix_reconstructions_decode_only_the_first_m_features(cuts, seed):
    """â^(m) = b + Σ_{i<m} f_i W_dec[i], the same from sparse and dense codes; the last prefix is the full decode."""
    prefixes = tuple(sorted(cuts)) + (20,)
    generator = torch.Generator().manual_seed(seed)
    decoder, bias = torch.randn(20, 12, generator=generator), torch.randn(12, generator=generator)
    sparse = topk_codes(torch.randn(7, 20, generator=generator), 5)
    dense = Codes(sparse.to_dense(), 20)
    for codes in (sparse, dense):
        recons = prefix_reconstructions(codes, decoder, bias, prefixes)
        for m, recon in zip(prefixes, recons):
            assert torch.allclose(recon, bias + dense.values[:, :m] @ decoder[:m], atol=1e-5)
        assert torch.allclose(recons[-1], codes.decode(decoder, bias), atol=1e-5)


def test_the_matryoshka_loss_averages_the_prefix_errors_and_keeps_batchtopk_codes():
    model, acts = Dictionary(config("matryoshka", matryoshka_sizes=(5, 12, 20))), random_acts()
    model.initialise_from_data(acts)
    output = model.train()(acts)
    assert output.codes.l0().sum() == 32 * 3  # BatchTopK: N·k over the batch
    terms = dictionary_loss(model, acts, output, 0.0)
    target = output.scaled_input_NBD.flatten(1)
    dense = output.codes.to_dense()
    errors = [(target - model.b_dec.flatten() - dense[:, :m] @ model.W_dec.flatten(1)[:m]).pow(2).sum(1).mean() for m in (5, 12, 20)]
    assert terms.total.item() == pytest.approx(torch.stack(errors).mean().item(), rel=1e-5)
    assert terms.parts["mse"].item() == pytest.approx(errors[-1].item(), rel=1e-5)


# ---------------------------------------------------------------------- unit-norm decoder
@settings(max_examples=15, deadline=None)
@given(st.integers(1, 5), st.integers(2, 8), st.integers(0, 10**6))
def test_a_unit_norm_decoder_moves_along_the_sphere_and_stays_on_it(n_blocks, d, seed):
    """The gradient loses its radial part (∇_i·ŵ_i = 0) and rows have norm 1 after every step."""
    kind = "sae" if n_blocks == 1 else "crosscoder"
    model = Dictionary(DictionaryConfig(kind=kind, d=d, n_features=12, n_blocks=n_blocks, k=2, unit_norm_decoder=True), seed=seed % 100)
    acts = random_acts(16, n_blocks, d, seed)
    model.initialise_from_data(acts)
    assert torch.allclose(model.W_dec.flatten(1).norm(dim=1), torch.ones(12))
    if n_blocks == 1:  # the encoder keeps the initial decoder's norm (a crosscoder's reads block 0 of it)
        assert torch.allclose(model.W_enc.norm(dim=(0, 1)), torch.full((12,), 0.1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(3):
        output = model(acts)
        optimizer.zero_grad()
        dictionary_loss(model, acts, output, 0.0).total.backward()
        model.remove_parallel_decoder_gradient()
        radial = (model.W_dec.grad.flatten(1) * model.W_dec.flatten(1)).sum(1)
        assert radial.abs().max() < 1e-5
        optimizer.step()
        model.constrain()
        assert torch.allclose(model.W_dec.flatten(1).norm(dim=1), torch.ones(12), atol=1e-6)


def test_jumprelu_always_keeps_a_unit_norm_decoder():
    assert config("jumprelu").unit_decoder and not config("topk").unit_decoder and config("topk", unit_norm_decoder=True).unit_decoder


# ---------------------------------------------------------------------- calibrated threshold
@settings(max_examples=20, deadline=None)
@given(st.integers(2, 60), st.integers(1, 25), st.integers(1, 6), st.integers(0, 10**6))
def test_a_calibrated_threshold_gives_mean_l0_k_on_the_calibration_inputs(n, chunk_rows, k, seed):
    """θ midway between the (n·k)-th and (n·k+1)-th largest pre-activation, found chunk by chunk: exactly n·k of
    them exceed it (n ≥ 2: a single input is its own b_dec, so that all its pre-activations tie)."""
    model = Dictionary(config("batchtopk", k=k), seed=seed % 100)
    acts = random_acts(n, seed=seed)
    model.initialise_from_data(acts)
    with torch.no_grad():
        model.b_enc.add_(1.0)  # most pre-activations positive, so that θ > 0 is the quantile itself
    chunks = acts.split(chunk_rows)
    threshold = model.eval().calibrate_threshold(chunks, max_inputs=n + 5)
    pre = torch.cat([model.pre_activations(chunk) for chunk in chunks])  # as calibration saw them (chunked)
    assert threshold == model.threshold.item() == pytest.approx(max(pre.flatten().topk(n * k + 1).values[-2:].mean().item(), 0.0))
    if threshold > 0:
        assert sum(model(chunk).codes.l0().sum().item() for chunk in chunks) == n * k


# ---------------------------------------------------------------------- configuration
@pytest.mark.parametrize("bad, match", [
    ({"sparsity": "gated"}, "sparsity = 'gated': expected one of l1, topk, batchtopk, jumprelu, matryoshka"),
    ({"l0_coefficient": -1.0}, r"l0_coefficient = -1.0: expected a finite number in \[0, inf\)"),
    ({"jumprelu_bandwidth": 0.0}, r"jumprelu_bandwidth = 0.0: expected a finite number in \(0, inf\)"),
    ({"jumprelu_init_threshold": float("inf")}, r"jumprelu_init_threshold = inf: expected a finite number in \(0, inf\)"),
    ({"matryoshka_sizes": (5, 4, 20)}, r"matryoshka_sizes = \(5, 4, 20\): expected increasing positive integers ending at n_features = 20"),
    ({"matryoshka_sizes": (5, 12)}, "ending at n_features = 20, e.g. \\[2, 5, 20\\]"),
    ({"matryoshka_sizes": (0, 20)}, "matryoshka_sizes = \\(0, 20\\)"),
    ({"unit_norm_decoder": "yes"}, "unit_norm_decoder = 'yes': expected true or false"),
    ({"sparsity": "matryoshka", "k": 21}, "k = 21 exceeds n_features = 20"),
])
def test_bad_new_options_are_one_line_errors_naming_the_value(bad, match):
    with pytest.raises(DictionaryError, match=match) as err:
        config(**bad)
    assert "\n" not in str(err.value)


def test_matryoshka_sizes_default_to_coarse_levels_and_round_trip_through_json():
    assert config("matryoshka").matryoshka_prefixes == (2, 5, 20)
    given = config("matryoshka", matryoshka_sizes=[5, 20])
    assert given.matryoshka_sizes == (5, 20) and given.to_dict()["matryoshka_sizes"] == [5, 20]
    assert DictionaryConfig.from_dict(given.to_dict()) == given
    assert DictionaryConfig.from_dict(config("jumprelu", k=99).to_dict()).k == 99  # k is unused by jumprelu: any value
