"""The dictionary trainer: recovery of planted group-structured features, run directories, resume, schedules, errors."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from groupcc.crosscoders import DictionaryConfig, DictionaryError, plant_group_features, recovered_fraction
from groupcc.errors import GroupccError
from groupcc.groups import get_group, limits
from groupcc.training.activation_store import InMemoryActivations, StoreError, input_orbits, split_rows, write_store
from groupcc.training.dictionary_files import load_dictionary
from groupcc.training.runs import STATE, load_state
from groupcc.training.dictionary_trainer import (TrainerConfig, TrainingError, fit_dictionary, learning_rate, sparsity_coefficient,
                                                 train_dictionary)

D, N_PLANTED, N_FEATURES = 24, 32, 64  # 32 planted features in 24 dimensions: in superposition


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tiny models train as fast on one thread, which keeps the tests quick when the machine is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def blank_model_and_optimizer(run_dir):
    """A dictionary and an Adam of the run's config, to load a saved state into."""
    from groupcc.crosscoders import Dictionary
    from groupcc.training.dictionary_files import dictionary_values, read_dictionary_record

    model = Dictionary(DictionaryConfig.from_dict(dictionary_values(read_dictionary_record(run_dir))))
    return model, torch.optim.Adam(model.parameters())


def planted_data(group_name: str, n: int = 4096):
    planted = plant_group_features(get_group(group_name), d=D, n_features=N_PLANTED, seed=0)
    acts, _ = planted.sample(n, np.random.default_rng(1), active=3.0, noise=0.01)
    return planted, acts


def quick_trainer(**options) -> TrainerConfig:
    values = {"steps": 1200, "batch_size": 256, "lr": 3e-3, "device": "cpu", "log_every": 300, "checkpoint_every": 10**6, **options}
    return TrainerConfig(**values)


def dictionary_config(kind: str, n_blocks: int, sparsity: str, **options) -> DictionaryConfig:
    values = {"d": D, "n_features": N_FEATURES, "sparsity": sparsity, "k": 3, "l1_coefficient": 1.0,
              "dead_after_steps": 50, "aux_k": 16, **options}
    return DictionaryConfig(kind=kind, n_blocks=n_blocks, **values)


# ---------------------------------------------------------------------- recovery of planted features
@pytest.mark.parametrize("sparsity, group_name, encoder_reads", [
    ("l1", "D4", "identity"),
    ("topk", "D4", "identity"),
    ("batchtopk", "D4", "identity"),
    ("topk", "C8", "all"),
])
def test_crosscoder_recovers_planted_group_structured_features(tmp_path, sparsity, group_name, encoder_reads):
    """≥ 90 % of the planted features [M_g u_k]_g have a decoder row with cosine ≥ 0.95 over all blocks."""
    torch.manual_seed(0)
    planted, acts = planted_data(group_name)
    config = dictionary_config("crosscoder", 8, sparsity, encoder_reads=encoder_reads, group=group_name)
    result = fit_dictionary(InMemoryActivations(acts), config, quick_trainer(), tmp_path / "run", progress=False)
    assert recovered_fraction(result.dictionary.W_dec, planted.features_KBD, min_cosine=0.95) >= 0.9
    assert result.history[-1]["fvu"] < 0.3


@pytest.mark.parametrize("sparsity", ["l1", "topk", "batchtopk"])
def test_sae_recovers_planted_features_of_single_block_data(tmp_path, sparsity):
    torch.manual_seed(0)
    planted, acts = planted_data("C1")
    store = write_store(tmp_path / "store", acts, shard_rows=1000)
    result = fit_dictionary(store, dictionary_config("sae", 1, sparsity), quick_trainer(), tmp_path / "run", progress=False)
    assert recovered_fraction(result.dictionary.W_dec, planted.features_KBD, min_cosine=0.95) >= 0.9


# ---------------------------------------------------------------------- run directory
def small_run(tmp_path, name="run", steps=30, sparsity="batchtopk", **options):
    _, acts = planted_data("C4", n=600)
    config = dictionary_config("crosscoder", 4, sparsity, n_features=32, dead_after_steps=5)
    trainer = quick_trainer(steps=steps, batch_size=64, log_every=10, checkpoint_every=10, seed=3)
    return fit_dictionary(InMemoryActivations(acts), config, trainer, tmp_path / name, progress=False, **options), acts


def test_run_directory_holds_config_metrics_and_a_dictionary_that_works_on_raw_activations(tmp_path):
    result, acts = small_run(tmp_path, record={"command": "groupcc dict train"})
    run = tmp_path / "run"
    assert {"config.json", "metrics.json", "history.json", "dictionary.safetensors", STATE} <= {p.name for p in run.iterdir()}
    config = json.loads((run / "config.json").read_text())
    assert config["trainer"]["steps"] == 30 and config["dictionary"]["sparsity"] == "batchtopk"
    assert config["command"] == "groupcc dict train" and config["folded_input_scale"] > 0
    history = json.loads((run / "history.json").read_text())
    assert [entry["step"] for entry in history] == [10, 20, 30] and history == result.history
    assert {"loss", "mse", "aux", "fvu", "l0", "dead_fraction", "lr", "grad_norm", "threshold"} <= set(history[0])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["kind"] == "dictionary" and metrics["training"]["step"] == 30 and metrics["training"]["wall_time_s"] > 0
    loaded = load_dictionary(run)
    assert loaded.input_scale.item() == 1.0
    x = torch.from_numpy(acts[:100])
    assert torch.equal(loaded.encode(x).to_dense(), result.dictionary.encode(x).to_dense())
    fvu = (loaded(x).recon_NBD - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert fvu < 0.9  # the exported weights read raw (unscaled) activations (scaled ones would give FVU >> 1)


def test_same_seed_same_weights(tmp_path):
    first, _ = small_run(tmp_path, "a")
    second, _ = small_run(tmp_path, "b")
    assert torch.equal(first.dictionary.W_dec, second.dictionary.W_dec)


@pytest.mark.parametrize("sparsity", ["l1", "batchtopk"])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, sparsity):
    uninterrupted, _ = small_run(tmp_path, "whole", sparsity=sparsity)

    def crash_at_step_25(step):
        if step == 25:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        small_run(tmp_path, "resumed", sparsity=sparsity, on_step=crash_at_step_25)
    assert load_state(tmp_path / "resumed" / STATE, *blank_model_and_optimizer(tmp_path / "resumed"))["step"] == 20
    resumed, _ = small_run(tmp_path, "resumed", sparsity=sparsity, resume=True)
    for name, tensor in uninterrupted.dictionary.state_dict().items():
        assert torch.equal(resumed.dictionary.state_dict()[name], tensor), name
    assert [entry["step"] for entry in resumed.history] == [10, 20, 30]


def test_resuming_with_other_settings_is_an_error_that_keeps_the_run(tmp_path):
    small_run(tmp_path)
    files = {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir()}
    _, acts = planted_data("C4", n=600)
    config = dictionary_config("crosscoder", 4, "batchtopk", n_features=32, dead_after_steps=5)
    other = quick_trainer(steps=30, batch_size=64, log_every=10, checkpoint_every=10, seed=3, lr=1e-3)
    with pytest.raises(TrainingError, match=r"cannot resume '.*run': trainer.lr was 0.003, now 0.001"):
        fit_dictionary(InMemoryActivations(acts), config, other, tmp_path / "run", resume=True, progress=False)
    assert {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir()} == files  # it used to be deleted


def test_an_existing_run_directory_is_not_overwritten_by_default(tmp_path):
    small_run(tmp_path)
    with pytest.raises(GroupccError, match="already exists"):
        small_run(tmp_path)
    small_run(tmp_path, overwrite=True)


def test_overwrite_replaces_only_a_dictionary_run(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("keep me")
    with pytest.raises(GroupccError, match="notes"):
        small_run(tmp_path, "notes", overwrite=True)
    assert (notes / "notes.txt").read_text() == "keep me"


# ---------------------------------------------------------------------- input validation
def test_nan_activations_are_a_clear_error(tmp_path):
    _, acts = planted_data("C4", n=600)
    acts[300:, 2, 5] = np.nan
    config = dictionary_config("crosscoder", 4, "topk", n_features=32)
    trainer = quick_trainer(steps=20, batch_size=64, init_sample_rows=100)
    with pytest.raises(GroupccError, match=r"contain NaN or inf.*expected finite values") as err:
        fit_dictionary(InMemoryActivations(acts), config, trainer, tmp_path / "run", progress=False)
    assert "\n" not in str(err.value)


def test_activations_of_another_width_are_a_clear_error(tmp_path):
    _, acts = planted_data("C4", n=600)
    config = dictionary_config("crosscoder", 4, "topk", d=16)
    with pytest.raises(DictionaryError, match=r"activations of shape \[600, 4, 24\] do not fit this crosscoder: expected \[N, 4, 16\]"):
        fit_dictionary(InMemoryActivations(acts), config, quick_trainer(), tmp_path / "run", progress=False)


def test_an_sae_trains_on_every_block_of_multi_block_activations(tmp_path):
    _, acts = planted_data("C4", n=200)
    config = dictionary_config("sae", 1, "topk", n_features=16, sae_input="all")
    result = fit_dictionary(InMemoryActivations(acts), config, quick_trainer(steps=5, batch_size=64), tmp_path / "run", progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["shape"] == [200, 4, 24]
    assert result.dictionary.W_dec.shape == (16, 1, 24)


@pytest.mark.parametrize("bad, match", [
    ({"steps": 0}, "steps = 0: expected a positive integer"),
    ({"lr_decay_fraction": 1.5}, r"lr_decay_fraction = 1.5: expected a number in \[0, 1\]"),
    ({"lr": -1.0}, "lr = -1.0"),
])
def test_bad_trainer_settings_are_named(bad, match):
    with pytest.raises(TrainingError, match=match):
        TrainerConfig(**bad)


def test_training_that_would_not_fit_in_memory_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """Its weights fit (4.1 GB, under the 12 GB budget) but with gradients and Adam's moments they would not."""
    monkeypatch.setattr(limits, "physical_memory_bytes", lambda: 16 * 10**9)
    match = (r"^training 30000000 features x 4 blocks x width 6 \(weights, gradients and Adam's two moments\) would need "
             r"about 16.3 GB of memory, more than the 75% of this machine's 16 GB available: expected fewer features$")
    with pytest.raises(TrainingError, match=match):
        train_dictionary(np.ones((8, 4, 6), np.float32), "crosscoder", n_features=3 * 10**7, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------- schedules
def test_learning_rate_warms_up_then_decays_to_zero():
    trainer = TrainerConfig(steps=100, lr=1.0, lr_warmup_fraction=0.1, lr_decay_fraction=0.2)
    rates = [learning_rate(step, trainer) for step in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == 1.0 and rates[50] == 1.0
    assert rates[80] == 1.0 and rates[90] == pytest.approx(0.5) and rates[99] == pytest.approx(0.05)


def test_the_sparsity_coefficient_warms_up_linearly():
    """The L1 coefficient of an l1 dictionary, the L0 coefficient of a JumpReLU one, 0 for TopK."""
    trainer = TrainerConfig(steps=100, l1_warmup_fraction=0.05)
    config = DictionaryConfig(kind="sae", d=4, n_features=8, sparsity="l1", l1_coefficient=2.0, l0_coefficient=9.0)
    assert [sparsity_coefficient(step, trainer, config) for step in (0, 1, 4, 50)] == pytest.approx([0.4, 0.8, 2.0, 2.0])
    jumprelu = DictionaryConfig(kind="sae", d=4, n_features=8, sparsity="jumprelu", l1_coefficient=2.0, l0_coefficient=3.0)
    assert sparsity_coefficient(50, trainer, jumprelu) == 3.0
    assert sparsity_coefficient(50, trainer, DictionaryConfig(kind="sae", d=4, n_features=8, k=2)) == 0.0


# ---------------------------------------------------------------------- JumpReLU and Matryoshka
@pytest.mark.parametrize("kind, group_name, sparsity, options", [
    ("sae", "C1", "jumprelu", {"l0_coefficient": 1.0}),
    ("crosscoder", "D4", "jumprelu", {"l0_coefficient": 16.0}),  # the squared error sums over 8 blocks
    ("sae", "C1", "matryoshka", {"matryoshka_sizes": (32, 64)}),
    ("crosscoder", "D4", "matryoshka", {"matryoshka_sizes": (32, 64)}),
])
def test_jumprelu_and_matryoshka_recover_planted_features(kind, group_name, sparsity, options):
    """≥ 90 % of the planted features recovered (cosine ≥ 0.95). For Matryoshka the first prefix alone (32 features,
    as many as were planted) recovers them: it must reconstruct on its own. JumpReLU learns its sparsity."""
    torch.manual_seed(0)
    planted, acts = planted_data(group_name)
    n_blocks = 8 if kind == "crosscoder" else 1
    config = dictionary_config(kind, n_blocks, sparsity, **options)
    result = fit_dictionary(InMemoryActivations(acts[:, :n_blocks]), config, quick_trainer(steps=2000, val_fraction=0.2), progress=False)
    decoder = result.dictionary.W_dec[:32] if sparsity == "matryoshka" else result.dictionary.W_dec
    assert recovered_fraction(decoder, planted.features_KBD[:, :n_blocks], min_cosine=0.95) >= 0.9
    assert result.held_out["fvu"] < 0.1 and 2.0 < result.held_out["l0"] < 5.0  # about 3 features per input are planted


# ---------------------------------------------------------------------- held-out split
def composer_like(group_name: str, action: str = "left"):
    """Planted activations with one row per pair of ``group_name``, recorded like a composer store."""
    group = get_group(group_name)
    planted = plant_group_features(group, d=D, n_features=N_PLANTED, seed=0)
    acts, _ = planted.sample(group.order**2, np.random.default_rng(2), active=3.0, noise=0.01)
    return InMemoryActivations(acts, manifest={"group": group_name, "action": action, "layer": "hidden"})


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["S3", "D4", "C6"]), st.sampled_from(["left", "right", "conjugation"]),
       st.floats(0.05, 0.6), st.integers(0, 10**6))
def test_a_held_out_split_keeps_whole_orbits(group_name, action, val_fraction, seed):
    """No orbit of the action on pairs is on both sides; the held-out part has at least round(f·N) rows and less
    than one orbit more; together the two parts are every row once. Left action: an orbit is a fixed b."""
    source = composer_like(group_name, action)
    orbits, how = input_orbits(source)
    assert how == f"orbits of the {action} action of {group_name} on pairs"
    if action == "left":
        assert np.array_equal(orbits, np.arange(source.n_rows) % get_group(group_name).order)
    wanted = round(val_fraction * source.n_rows)
    try:
        train, held_out = split_rows(orbits, val_fraction, seed)
    except StoreError as err:
        assert "leaves no" in str(err)
        return
    assert not set(orbits[train]) & set(orbits[held_out])
    assert np.array_equal(np.sort(np.concatenate([train, held_out])), np.arange(source.n_rows))
    largest_orbit = np.bincount(np.unique(orbits, return_inverse=True)[1]).max()
    assert wanted <= len(held_out) < max(wanted, 1) + largest_orbit


def test_a_crosscoder_run_holds_out_orbits_and_records_held_out_figures(tmp_path):
    source = composer_like("D4")
    config = dictionary_config("crosscoder", 8, "batchtopk", group="D4")
    result = fit_dictionary(source, config, quick_trainer(steps=60, batch_size=32, log_every=20, val_fraction=0.25), tmp_path / "run", progress=False)
    split = load_file(str(tmp_path / "run" / "split.safetensors"))
    train, held_out = split["train_rows"].numpy(), split["held_out_rows"].numpy()
    assert len(held_out) == 16 and not set(train % 8) & set(held_out % 8)  # two b's of eight (64 pairs)
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["split"] == {"val_fraction": 0.25, "grouped_by": "orbits of the left action of D4 on pairs",
                               "train_inputs": 48, "held_out_inputs": 16, "file": "split.safetensors"}
    assert {"val_fvu", "val_l0", "val_dead_fraction"} <= set(result.history[0])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["held_out"] == result.held_out and metrics["held_out"]["n_inputs"] == 16
    assert "calibrated_threshold" in metrics["training"]


def test_an_sae_on_the_identity_block_holds_out_single_rows():
    config = dictionary_config("sae", 1, "topk")
    result = fit_dictionary(composer_like("D4"), config, quick_trainer(steps=10, batch_size=16, val_fraction=0.2), progress=False)
    assert result.held_out["n_inputs"] == round(0.2 * 64)


def test_orbits_can_be_given():
    """Rows 0..31 and 32..63 as two orbits: half of them held out, whatever the manifest says."""
    config = dictionary_config("crosscoder", 8, "topk")
    labels = np.repeat([0, 1], 32)
    trainer = quick_trainer(steps=10, batch_size=16, val_fraction=0.3)
    result = fit_dictionary(composer_like("D4"), config, trainer, progress=False, orbits=labels)
    assert result.held_out["n_inputs"] == 32
    with pytest.raises(TrainingError, match=r"orbit labels of shape \[3\]: expected one label per row, \[64\]"):
        fit_dictionary(composer_like("D4"), config, trainer, progress=False, orbits=lambda source: np.arange(3))


def test_batchtopk_held_out_l0_is_within_20_percent_of_k():
    """The threshold is calibrated (cross-fitted on halves of the held-out inputs), not the moving average."""
    _, acts = planted_data("C1", n=2000)
    config = dictionary_config("sae", 1, "batchtopk", k=4)
    result = fit_dictionary(InMemoryActivations(acts), config, quick_trainer(steps=300, val_fraction=0.2), progress=False)
    assert abs(result.held_out["l0"] - 4) <= 0.2 * 4


@pytest.mark.parametrize("bad, match", [
    ({"val_fraction": 1.0}, r"val_fraction = 1.0: expected a number in \[0, 1\)"),
    ({"val_fraction": -0.1}, r"val_fraction = -0.1"),
    ({"val_log_rows": 0}, "val_log_rows = 0: expected a positive integer"),
])
def test_bad_split_settings_are_named(bad, match):
    with pytest.raises(TrainingError, match=match):
        TrainerConfig(**bad)


def test_a_fraction_too_small_for_one_orbit_is_a_clear_error():
    config = dictionary_config("crosscoder", 8, "topk")
    with pytest.raises(GroupccError, match=r"val_fraction = 0.001 of 64 inputs in 8 orbits leaves no held-out inputs"):
        fit_dictionary(composer_like("D4"), config, quick_trainer(steps=5, batch_size=16, val_fraction=0.001), progress=False)


def test_a_store_that_records_an_unknown_group_is_refused(tmp_path):
    acts = np.random.default_rng(0).normal(size=(64, 4, 8)).astype(np.float32)
    write_store(tmp_path / "zz", acts, group="zz")
    with pytest.raises(TrainingError, match="records group 'zz', which is not a group name groupcc knows"):
        train_dictionary(tmp_path / "zz", "crosscoder", n_features=8, k=2, steps=2, progress=False)
    write_store(tmp_path / "c4", acts, group="C4")
    assert train_dictionary(tmp_path / "c4", "crosscoder", n_features=8, k=2, steps=2, progress=False).config.group == "C4"
