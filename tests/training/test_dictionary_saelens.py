"""SAELens's file layout: exact field and tensor names, export -> import gives identical codes, SAEs from SAELens
(TopK with decoder-norm rescaling, no b_dec on the input) read correctly, clear errors."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from groupcc.crosscoders import Dictionary, DictionaryConfig, DictionaryError, dictionary_loss
from groupcc.groups import GroupError
from groupcc.training.dictionary_files import load_dictionary, save_dictionary
from groupcc.training.saelens_format import export_saelens, import_saelens, import_saelens_run

#: SAELens's ``SAEConfig`` fields (6.x), as its ``to_dict`` writes them.
SAELENS_FIELDS = {"architecture", "d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input", "normalize_activations",
                  "reshape_activations", "metadata"}


def trained(sparsity: str, kind: str = "sae", n_blocks: int = 1, steps: int = 6, **options) -> tuple[Dictionary, torch.Tensor]:
    """A small dictionary after a few Adam steps (every weight non-trivial, the input scale not 1), scale folded."""
    config = DictionaryConfig(kind=kind, d=6, n_features=16, n_blocks=n_blocks, sparsity=sparsity, k=3, dead_after_steps=2, **options)
    model = Dictionary(config, seed=1)
    acts = torch.randn(64, n_blocks, 6, generator=torch.Generator().manual_seed(0)) * 4 + 1
    model.initialise_from_data(acts)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        output = model(acts)
        optimizer.zero_grad()
        dictionary_loss(model, acts, output, 0.1).total.backward()
        optimizer.step()
        model.constrain()
        model.record_batch(output.codes)
    if model.config.sparsity in ("batchtopk", "matryoshka"):
        model.eval().calibrate_threshold([acts], len(acts))
    return model.fold_input_scale().eval(), acts


@pytest.mark.parametrize("sparsity, architecture", [
    ("l1", "standard"), ("topk", "topk"), ("batchtopk", "jumprelu"), ("jumprelu", "jumprelu"), ("matryoshka", "jumprelu"),
])
def test_export_writes_saelens_layout_and_import_gives_identical_codes(tmp_path, sparsity, architecture):
    model, acts = trained(sparsity)
    export_saelens(model, tmp_path / "sae")
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert SAELENS_FIELDS <= set(cfg) and cfg["architecture"] == architecture
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"], cfg["apply_b_dec_to_input"], cfg["normalize_activations"]) == (6, 16, "float32", True, "none")
    assert cfg["metadata"]["sae_lens_version"].startswith("6.")  # SAELens reads it as its 6.x layout
    assert (cfg.get("k"), cfg.get("rescale_acts_by_decoder_norm")) == ((3, False) if architecture == "topk" else (None, None))
    weights = load_file(str(tmp_path / "sae" / "sae_weights.safetensors"))
    expected = {"W_enc": [6, 16], "W_dec": [16, 6], "b_enc": [16], "b_dec": [6], **({"threshold": [16]} if architecture == "jumprelu" else {})}
    assert {name: list(tensor.shape) for name, tensor in weights.items()} == expected
    assert all(tensor.dtype == torch.float32 for tensor in weights.values())

    imported = import_saelens(tmp_path / "sae")
    assert imported.config.sparsity == {"standard": "l1", "topk": "topk", "jumprelu": "jumprelu"}[architecture]
    x = acts * 1.3
    assert torch.equal(imported.encode(x).to_dense(), model.encode(x).to_dense())
    assert torch.equal(imported(x).recon_NBD, model(x).recon_NBD)


def test_saelens_encodes_like_the_export(tmp_path):
    """SAELens's own formulas on the exported tensors: f = σ((x − b_dec) W_enc + b_enc), x̂ = f W_dec + b_dec."""
    model, acts = trained("batchtopk")
    export_saelens(model, tmp_path / "sae")
    w = load_file(str(tmp_path / "sae" / "sae_weights.safetensors"))
    x = acts[:, 0]
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    features = pre.relu() * (pre > w["threshold"])
    assert torch.allclose(features, model.encode(acts).to_dense(), atol=1e-5)
    assert torch.allclose(features @ w["W_dec"] + w["b_dec"], model(acts).recon_NBD[:, 0], atol=1e-4)


def test_a_crosscoder_exports_its_identity_block_sae_and_itself(tmp_path):
    model, acts = trained("topk", kind="crosscoder", n_blocks=4)
    export_saelens(model, tmp_path / "cc")
    sae = import_saelens(tmp_path / "cc")
    assert torch.equal(sae.encode(acts[:, :1]).to_dense(), model.encode(acts).to_dense())  # it reads block 0 only
    # The same weights and codes; the decoder's matmul over 1 block or 4 may round differently, so not bit for bit.
    torch.testing.assert_close(sae(acts[:, :1]).recon_NBD[:, 0], model(acts).recon_NBD[:, 0], rtol=1e-6, atol=1e-6)
    full = load_dictionary(tmp_path / "cc" / "groupcc_dictionary")
    assert all(torch.equal(full.state_dict()[name], tensor) for name, tensor in model.state_dict().items())
    everything_read = trained("topk", kind="crosscoder", n_blocks=4, encoder_reads="all")[0]
    with pytest.raises(DictionaryError, match="encoder reads all 4 blocks"):
        export_saelens(everything_read, tmp_path / "all")
    assert not (tmp_path / "all").exists()


def test_a_training_run_exports_with_its_record_and_round_trips_through_import_run(tmp_path):
    model, acts = trained("topk")
    save_dictionary(model, tmp_path / "run", record={"data": {"layer": "hidden", "source": "runs/s4"}, "acts": "runs/acts"})
    export_saelens(tmp_path / "run", tmp_path / "sae")
    metadata = json.loads((tmp_path / "sae" / "cfg.json").read_text())["metadata"]
    assert (metadata["hook_name"], metadata["model_name"], metadata["dataset_path"]) == ("hidden", "runs/s4", "runs/acts")
    assert metadata["groupcc"]["dictionary"]["sparsity"] == "topk"
    import_saelens_run(tmp_path / "sae", tmp_path / "imported", group="S4")
    imported = load_dictionary(tmp_path / "imported")
    assert imported.config.group == "S4" and torch.equal(imported.encode(acts).to_dense(), model.encode(acts).to_dense())
    with pytest.raises(Exception, match="already exists"):
        export_saelens(tmp_path / "run", tmp_path / "sae")


@pytest.mark.parametrize("group", ["", "zz_0", "sae/cfg.json", "S4x"])
def test_an_import_names_a_known_group_or_none(tmp_path, group):
    export_saelens(trained("topk")[0], tmp_path / "sae")
    with pytest.raises(GroupError, match=f"^unknown group name {group!r}: expected ") as err:
        import_saelens_run(tmp_path / "sae", tmp_path / "imported", group=group)
    assert "\n" not in str(err.value) and not (tmp_path / "imported").exists()


def saelens_directory(path, cfg: dict, tensors: dict) -> None:
    path.mkdir()
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(path / "sae_weights.safetensors"))


def test_a_saelens_topk_sae_with_decoder_norm_rescaling_and_no_input_centring_is_read_exactly(tmp_path):
    """SAELens: pre = x W_enc + b_enc (apply_b_dec_to_input false), ranked as pre_i·‖W_dec[i]‖, decoded by
    f_i·W_dec[i]/‖W_dec[i]‖ (rescale_acts_by_decoder_norm); imported by folding both into the weights."""
    generator = torch.Generator().manual_seed(3)
    w = {"W_enc": torch.randn(5, 12, generator=generator), "W_dec": torch.randn(12, 5, generator=generator) * 3,
         "b_enc": torch.randn(12, generator=generator), "b_dec": torch.randn(5, generator=generator)}
    cfg = {"architecture": "topk", "d_in": 5, "d_sae": 12, "k": 4, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": False, "normalize_activations": "none", "rescale_acts_by_decoder_norm": True,
           "metadata": {"sae_lens_version": "6.54.0", "hook_name": "blocks.0.hook_resid_post"}}
    saelens_directory(tmp_path / "sae", cfg, w)
    x = torch.randn(40, 5, generator=generator)
    norms = w["W_dec"].norm(dim=1)
    ranked = (x @ w["W_enc"] + w["b_enc"]) * norms
    top = ranked.topk(4, dim=1)
    saelens_features = torch.zeros_like(ranked).scatter(1, top.indices, top.values.relu())
    saelens_recon = (saelens_features / norms) @ w["W_dec"] + w["b_dec"]
    imported = import_saelens(tmp_path / "sae")
    assert torch.allclose(imported.encode(x[:, None]).to_dense(), saelens_features, atol=1e-4)
    assert torch.allclose(imported(x[:, None]).recon_NBD[:, 0], saelens_recon, atol=1e-4)


@pytest.mark.parametrize("change, match", [
    ({"architecture": "gated"}, "architecture 'gated': expected one of standard, topk, jumprelu"),
    ({"normalize_activations": "layer_norm"}, "normalize_activations = 'layer_norm': expected 'none'"),
    ({"d_sae": 13}, r"W_enc has shape \[5, 12\], expected \[5, 13\] from d_in = 5, d_sae = 13"),
    ({"architecture": "topk", "k": 0}, "k = 0: expected a positive integer for a topk SAE"),
    ({"dtype": "int8"}, "dtype 'int8': expected one of float32"),
])
def test_a_saelens_directory_that_cannot_be_read_is_a_one_line_error(tmp_path, change, match):
    w = {"W_enc": torch.zeros(5, 12), "W_dec": torch.zeros(12, 5), "b_enc": torch.zeros(12), "b_dec": torch.zeros(5)}
    saelens_directory(tmp_path / "sae", {"architecture": "standard", "d_in": 5, "d_sae": 12, **change}, w)
    with pytest.raises(DictionaryError, match=match) as err:
        import_saelens(tmp_path / "sae")
    assert "\n" not in str(err.value)
    with pytest.raises(DictionaryError, match="is not a SAELens SAE directory: expected cfg.json and sae_weights.safetensors"):
        import_saelens(tmp_path / "nothing")
