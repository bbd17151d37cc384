"""Saving and loading dictionaries: exact round trips, atomic writes, clear errors."""

import json

import pytest
import torch

import groupcc.training.runs
from groupcc.errors import GroupccError
from groupcc.crosscoders import Dictionary, DictionaryConfig, DictionaryError, dictionary_loss
from groupcc.training.dictionary_files import load_dictionary, read_dictionary_record, save_dictionary


def trained(sparsity: str, steps: int = 5) -> tuple[Dictionary, torch.Tensor]:
    """A small crosscoder after a few Adam steps, so that every weight and buffer is non-trivial."""
    config = DictionaryConfig(kind="crosscoder", d=5, n_features=16, n_blocks=3, sparsity=sparsity, k=2, dead_after_steps=2)
    model = Dictionary(config, seed=1)
    acts = torch.randn(64, 3, 5, generator=torch.Generator().manual_seed(0)) * 4
    model.initialise_from_data(acts)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        output = model(acts)
        loss = dictionary_loss(model, acts, output, 0.1).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.record_batch(output.codes)
    return model.eval(), acts


@pytest.mark.parametrize("sparsity", ["l1", "topk", "batchtopk"])
def test_save_load_round_trip_is_bit_exact(tmp_path, sparsity):
    model, acts = trained(sparsity)
    save_dictionary(model, tmp_path / "dict", record={"note": "test"})
    loaded = load_dictionary(tmp_path / "dict")
    assert loaded.config == model.config and not loaded.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    before, after = model.encode(acts), loaded.encode(acts)
    assert torch.equal(before.values, after.values)
    assert torch.equal(before.to_dense(), after.to_dense())
    assert torch.equal(model.decode(before), loaded.decode(after))
    assert read_dictionary_record(tmp_path / "dict")["note"] == "test"


def test_saved_directory_holds_a_readable_config_and_safetensors(tmp_path):
    model, _ = trained("topk")
    save_dictionary(model, tmp_path / "dict")
    assert sorted(p.name for p in (tmp_path / "dict").iterdir()) == ["config.json", "dictionary.safetensors"]
    config = json.loads((tmp_path / "dict" / "config.json").read_text())
    assert config["format"] == "groupcc-dictionary" and config["dictionary"]["sparsity"] == "topk"


def test_saving_over_an_existing_directory_needs_overwrite(tmp_path):
    model, _ = trained("l1")
    save_dictionary(model, tmp_path / "dict")
    with pytest.raises(DictionaryError, match="already exists"):
        save_dictionary(model, tmp_path / "dict")
    other, _ = trained("l1", steps=1)
    save_dictionary(other, tmp_path / "dict", overwrite=True)
    assert torch.equal(load_dictionary(tmp_path / "dict").W_dec, other.W_dec)
    assert [p.name for p in tmp_path.iterdir()] == ["dict"]


def test_a_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    model, _ = trained("l1")

    def broken_save_file(tensors, path, metadata=None):
        open(path, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(groupcc.training.runs, "save_file", broken_save_file)
    with pytest.raises(GroupccError, match="cannot write .*disk full"):
        save_dictionary(model, tmp_path / "dict")
    assert list(tmp_path.iterdir()) == []


def corrupt_config(path):
    (path / "config.json").write_text("{not json")


def corrupt_weights(path):
    (path / "dictionary.safetensors").write_bytes(b"\x00\x01garbage")


def remove_weights(path):
    (path / "dictionary.safetensors").unlink()


def other_width_config(path):
    config = json.loads((path / "config.json").read_text())
    config["dictionary"]["n_features"] = 17
    (path / "config.json").write_text(json.dumps(config))


def not_a_dictionary_config(path):
    (path / "config.json").write_text(json.dumps({"lr": 0.1}))


@pytest.mark.parametrize("damage, match", [
    (corrupt_config, r"config.json' is corrupt: Expecting property name"),
    (corrupt_weights, r"dictionary.safetensors' is missing or corrupt"),
    (remove_weights, r"has no dictionary.safetensors: expected the dictionary weights there"),
    (other_width_config, r"W_dec is torch.float32 \[16, 3, 5\], expected torch.float32 \[17, 3, 5\] from config.json"),
    (not_a_dictionary_config, r"is not a groupcc dictionary config"),
])
def test_loading_a_damaged_directory_is_a_one_line_error(tmp_path, damage, match):
    model, _ = trained("topk")
    save_dictionary(model, tmp_path / "dict")
    damage(tmp_path / "dict")
    with pytest.raises(DictionaryError, match=match) as err:
        load_dictionary(tmp_path / "dict")
    assert "\n" not in str(err.value)


def test_loading_a_missing_directory_names_it(tmp_path):
    with pytest.raises(DictionaryError, match=r"'.*nowhere' is not a dictionary directory: expected config.json"):
        load_dictionary(tmp_path / "nowhere")


def test_a_loaded_dictionary_rejects_activations_of_another_width(tmp_path):
    model, acts = trained("topk")
    save_dictionary(model, tmp_path / "dict")
    with pytest.raises(DictionaryError, match=r"activations of shape \[64, 3, 4\] do not fit this crosscoder: expected \[N, 3, 5\]"):
        load_dictionary(tmp_path / "dict").encode(acts[..., :4])
