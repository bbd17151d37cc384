"""Composer models and their training: exactness of the fast forward passes, learning, resume, errors."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from groupcc.errors import GroupccError
from groupcc.groups import GroupError, get_group, limits, parse_word
from groupcc.training.composer_training import (
    converged,
    default_config,
    fit_composer,
    fit_composer_seeds,
    load_composer,
    split_pairs,
)
from groupcc.training.composers import ComposerArchitecture, build_composer

TINY = dict(train_frac=0.9, lr=1e-2, seed=1)
TINY_MLP = dict(d_embed=64, d_hidden=64)


def test_words_evaluate_on_every_pair():
    group = get_group("S4")
    t, inv = group.mult_table, group.inverse
    np.testing.assert_array_equal(parse_word("a*b").evaluate(group), t)
    conj = parse_word("a*b*a^-1").evaluate(group)
    a, b = np.meshgrid(np.arange(24), np.arange(24), indexing="ij")
    np.testing.assert_array_equal(conj, t[t[a, b], inv[a]])
    np.testing.assert_array_equal(parse_word("a^-1 * b").evaluate(group), t[inv[a], b])
    np.testing.assert_array_equal(parse_word("a^2*b^3").evaluate(group), t[t[a, a], t[t[b, b], b]])
    assert str(parse_word("a * b^-1")) == "a*b^-1"
    for bad in ["a*c", "", "a**b", "ab", "a^x"]:
        with pytest.raises(GroupError, match="bad word"):
            parse_word(bad)


def test_mlp_table_lookup_equals_concatenated_linear():
    torch.manual_seed(0)
    model = build_composer(ComposerArchitecture("mlp", n_elements=6, d_embed=8, d_hidden=5))
    a, b = torch.randint(0, 6, (30,)), torch.randint(0, 6, (30,))
    concatenated = torch.cat([model.embed_a[a], model.embed_b[b]], dim=1)
    expected = torch.relu(concatenated @ model.w_in) @ model.unembed
    torch.testing.assert_close(model(a, b), expected)


def full_transformer(model, a, b):
    """The plain one-layer Transformer over all three positions, with a causal mask."""
    n, cfg = model.config.n_elements, model.config
    x = model.embed[torch.stack([a, b, torch.full_like(a, n)], 1)] + model.pos
    q, k, v = (torch.einsum("npd,hde->nhpe", x, w) for w in (model.w_q, model.w_k, model.w_v))
    scores = torch.einsum("nhpe,nhqe->nhpq", q, k) / math.sqrt(cfg.d_head)
    scores = scores.masked_fill(torch.triu(torch.ones(3, 3, dtype=torch.bool), 1), float("-inf"))
    x = x + torch.einsum("nhpe,hed->npd", torch.einsum("nhpq,nhqe->nhpe", scores.softmax(-1), v), model.w_o)
    x = x + torch.relu(x @ model.w_in) @ model.w_out
    return x[:, -1] @ model.unembed


def test_transformer_fast_path_equals_full_transformer():
    torch.manual_seed(0)
    model = build_composer(ComposerArchitecture("transformer", n_elements=7, d_model=16, n_heads=2, d_head=8, d_mlp=24)).double()
    a, b = torch.randint(0, 7, (40,)), torch.randint(0, 7, (40,))
    torch.testing.assert_close(model(a, b), full_transformer(model, a, b))


def test_hooks_expose_named_layers():
    model = build_composer(ComposerArchitecture("transformer", n_elements=5, d_model=16, n_heads=2, d_head=8, d_mlp=24))
    seen = {}
    for name in ["embed_a", "resid_mid", "hidden", "resid_post"]:
        getattr(model, f"hook_{name}").register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, out.shape))
    model(torch.arange(5), torch.arange(5))
    assert seen == {"embed_a": (5, 16), "resid_mid": (5, 16), "hidden": (5, 24), "resid_post": (5, 16)}


def test_split_is_a_partition_and_reproducible():
    train, test = split_pairs(10, 0.3, seed=4)
    assert len(train) == 30 and len(test) == 70
    assert sorted(torch.cat([train, test]).tolist()) == list(range(100))
    assert torch.equal(train, split_pairs(10, 0.3, seed=4)[0])
    assert not torch.equal(train, split_pairs(10, 0.3, seed=5)[0])


@pytest.mark.parametrize("group, arch, extra", [
    ("S3", "mlp", TINY_MLP),
    ("D5", "mlp", TINY_MLP),
    ("C7", "transformer", dict(d_model=64, n_heads=2, d_head=16, d_mlp=64)),
])
def test_tiny_group_reaches_full_test_accuracy(tmp_path, group, arch, extra):
    config = default_config(group, arch, epochs=2000 if arch == "mlp" else 600, **TINY, **extra)
    metrics = fit_composer(config, tmp_path / "run", progress=False)
    assert metrics["test_accuracy"] == 1.0 and metrics["train_accuracy"] == 1.0
    for name in ["config.json", "metrics.json", "history.json", "model.safetensors", "split.safetensors"]:
        assert (tmp_path / "run" / name).exists()
    assert len(list((tmp_path / "run" / "checkpoints").glob("*.safetensors"))) >= 10


def interrupt_at(epoch: int):
    """An ``on_epoch`` callback that stops training like Ctrl-C after ``epoch`` epochs."""
    def callback(done: int) -> None:
        if done == epoch:
            raise KeyboardInterrupt
    return callback


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    config = default_config("C5", "mlp", epochs=300, d_embed=16, d_hidden=16, **TINY)
    fit_composer(config, tmp_path / "straight", progress=False)
    with pytest.raises(KeyboardInterrupt):
        fit_composer(config, tmp_path / "resumed", progress=False, on_epoch=interrupt_at(120))
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    # Pretend the first leg ran for 10 000 s (on another machine, say): the finished run's wall time counts it.
    state = tmp_path / "resumed" / "state.safetensors"
    with safe_open(str(state), framework="pt") as handle:
        metadata = handle.metadata()
    record = json.loads(metadata["record"])
    assert record["epoch"] == 120 and 0 < record["wall_time_s"] < 60
    save_file(load_file(str(state)), str(state), metadata={**metadata, "record": json.dumps({**record, "wall_time_s": 1e4})})
    fit_composer(config, tmp_path / "resumed", resume=True, progress=False)
    straight, resumed = load_composer(tmp_path / "straight"), load_composer(tmp_path / "resumed")
    for (name, p), (_, q) in zip(straight.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(p, q), name
    assert (tmp_path / "straight" / "history.json").read_text() == (tmp_path / "resumed" / "history.json").read_text()
    wall = json.loads((tmp_path / "resumed" / "metrics.json").read_text())["training"]["wall_time_s"]
    assert 1e4 < wall < 1e4 + 60


@pytest.mark.parametrize("arch, sizes", [("mlp", dict(d_embed=16, d_hidden=16)),
                                         ("transformer", dict(d_model=16, n_heads=2, d_head=8, d_mlp=16))])
def test_seeds_trained_together_follow_their_own_runs(tmp_path, arch, sizes):
    """One AdamW over stacked weights gives each seed the trajectory of a run of its own: same initial weights and
    split, per-seed gradients (the summed loss separates) and elementwise updates."""
    config = default_config("S3", arch, epochs=60, n_checkpoints=3, **sizes, **TINY)
    outs = [tmp_path / f"batch_s{seed}" for seed in (1, 2, 3)]
    fit_composer_seeds(config, [1, 2, 3], outs, progress=False)
    for seed, out in zip((1, 2, 3), outs):
        fit_composer(dataclasses.replace(config, seed=seed), tmp_path / f"alone_s{seed}", progress=False)
        together, alone = load_composer(out), load_composer(tmp_path / f"alone_s{seed}")
        assert together.config.seed == seed and torch.equal(together.data.train, alone.data.train)
        for (name, p), (_, q) in zip(together.model.named_parameters(), alone.model.named_parameters()):
            assert torch.allclose(p, q, atol=1e-5, rtol=1e-4), name
        assert len(together.checkpoints()) == len(alone.checkpoints()) == 3
    assert not torch.equal(load_composer(outs[0]).model.embed_a if arch == "mlp" else load_composer(outs[0]).model.embed,
                           load_composer(outs[1]).model.embed_a if arch == "mlp" else load_composer(outs[1]).model.embed)


def test_seed_batch_resumes_bit_exactly_and_per_seed(tmp_path):
    config = default_config("C5", "mlp", epochs=200, d_embed=16, d_hidden=16, **TINY)
    straight = [tmp_path / "straight_1", tmp_path / "straight_2"]
    fit_composer_seeds(config, [1, 2], straight, progress=False)
    resumed = [tmp_path / "resumed_1", tmp_path / "resumed_2"]
    with pytest.raises(KeyboardInterrupt):
        fit_composer_seeds(config, [1, 2], resumed, progress=False, on_epoch=interrupt_at(70))
    fit_composer_seeds(config, [1, 2], resumed, resume=True, progress=False)
    for a, b in zip(straight, resumed):
        assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    # Each seed's saved state is an ordinary run's: a single-seed resume continues it.
    single = [tmp_path / "single_1", tmp_path / "single_2"]
    with pytest.raises(KeyboardInterrupt):
        fit_composer_seeds(config, [1, 2], single, progress=False, on_epoch=interrupt_at(70))
    fit_composer(config, single[1], resume=True, progress=False)
    assert load_composer(single[1]).config.seed == 2
    with pytest.raises(GroupccError, match="own output directory"):
        fit_composer_seeds(config, [1, 2], [tmp_path / "x", tmp_path / "x"], progress=False)


def test_early_stopping_ends_a_grokked_run(tmp_path):
    config = default_config("S3", "mlp", epochs=20_000, patience=500, d_embed=16, d_hidden=32, **TINY)
    metrics = fit_composer(config, tmp_path / "run", progress=False)
    assert metrics["stopped_early"] and metrics["epochs_done"] < 20_000 and metrics["test_accuracy"] == 1.0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert converged(history, 500) and not converged(history[:-30], 500)
    assert (tmp_path / "run" / "checkpoints" / f"epoch_{metrics['epochs_done']:07d}.safetensors").exists()


def _history(test_losses, every=100, accuracy=1.0):
    return [{"epoch": every * (i + 1), "test_loss": loss, "test_accuracy": accuracy} for i, loss in enumerate(test_losses)]


def test_early_stopping_stops_a_spiky_run_between_spikes_and_waits_while_the_loss_halves():
    # A loss that more than halves every window is still falling; one that fell only by a third has stopped.
    halving = _history([2.0 ** -(i / 8) for i in range(60)])
    assert not any(converged(halving[:n], 1000) for n in range(1, 61))
    slowing = _history([1e-6 * (1 - i / 90) for i in range(60)])
    assert converged(slowing, 1000)
    # Spikes of 1e4x every 800 epochs that fall back to the same floor (a Transformer at lr 1e-2): no new best,
    # so it stops, but only where the last evaluation is back near the floor, never on a spike.
    spiky = _history([1e-4 if i % 8 == 0 else 1e-8 for i in range(1, 60)])
    stops = [n for n in range(1, 60) if converged(spiky[:n], 1000)]
    assert stops and all(spiky[n - 1]["test_loss"] == 1e-8 for n in stops)
    # One evaluation below 100 % test accuracy in the window, or too short a history, keeps it going.
    assert not converged(_history([1e-6] * 5), 1000)
    dipped = _history([1e-6] * 30)
    dipped[-3]["test_accuracy"] = 0.5
    assert not converged(dipped, 1000)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.01, 1.0), min_size=2, max_size=40), st.integers(1, 15))
def test_early_stopping_on_a_falling_loss_is_less_than_half_gone_over_the_window(factors, window_evaluations):
    # For a loss that only falls, the criterion is the plain one: the last value is above half the one a window ago.
    losses = np.cumprod(factors)
    history = _history(losses.tolist())
    patience = 100 * window_evaluations
    plain = len(history) > window_evaluations and history[-1]["test_loss"] > 0.5 * history[-1 - window_evaluations]["test_loss"]
    assert converged(history, patience) == plain


def test_paper_defaults_and_errors(tmp_path):
    s5 = default_config("S5", "mlp")
    assert (s5.train_frac, s5.epochs, s5.architecture.d_embed, s5.architecture.d_hidden) == (0.4, 250_000, 256, 128)
    t = default_config("S5", "transformer")
    assert (t.train_frac, t.epochs, t.architecture.d_model, t.architecture.d_mlp) == (0.6, 50_000, 128, 512)
    assert default_config("D59", "transformer").epochs == 100_000
    with pytest.raises(GroupError, match="unknown group name"):
        default_config("X5")
    with pytest.raises(ValueError, match=r"train_frac must be a finite number in \(0, 1\), got 1.0"):
        default_config("S3", train_frac=1.0)
    for option, value in [("lr", float("nan")), ("weight_decay", float("inf")), ("seed", 2**64), ("n_checkpoints", 0),
                          ("epochs", 0), ("betas", (0.9, 1.0)), ("d_hidden", 0), ("n_heads", -1), ("device", "gpu")]:
        with pytest.raises(ValueError, match=option if option != "device" else "unknown device"):
            default_config("S3", "transformer", **{option: value})
    with pytest.raises(ValueError, match="group 'C1' has 1 element"):
        default_config("C1")
    small = default_config("D7")  # outside the paper's table: the small-group defaults, early stopping on
    assert (small.train_frac, small.lr, small.patience) == (0.95, 1e-2, 1000) and default_config("S5").patience == 0
    assert [default_config(name).train_frac for name in ("C15", "C16", "C30", "C31", "C60")] == [0.95, 0.9, 0.9, 0.7, 0.7]
    with pytest.raises(ValueError, match="bad word"):
        default_config("S3", task="a*c")
    config = default_config("C3", "mlp", epochs=5, d_embed=4, d_hidden=4)
    fit_composer(config, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="already exists: resume it, overwrite it"):
        fit_composer(config, tmp_path / "run", progress=False)
    fit_composer(config, tmp_path / "run", progress=False, overwrite=True)


def test_loading_bad_run_directories(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_composer(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no config.json"):
        load_composer(tmp_path / "empty")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        load_composer(tmp_path / "corrupt")
    config = default_config("C3", "mlp", epochs=50, d_embed=4, d_hidden=4)
    with pytest.raises(KeyboardInterrupt):
        fit_composer(config, tmp_path / "unfinished", progress=False, on_epoch=interrupt_at(10))
    with pytest.raises(ValueError, match="did not finish"):
        load_composer(tmp_path / "unfinished")


def test_a_record_edited_to_name_another_group_of_the_same_order_is_refused(tmp_path):
    fit_composer(default_config("S3", "mlp", epochs=5, d_embed=4, d_hidden=4), tmp_path / "run", progress=False)
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert load_composer(tmp_path / "run").group.name == "S3" and record["group_fingerprint"]
    (tmp_path / "run" / "config.json").write_text(json.dumps({**record, "group": "C6"}))
    with pytest.raises(ValueError, match="names group C6, but the run was trained on another group"):
        load_composer(tmp_path / "run")
    del record["group_fingerprint"]  # a run written before fingerprints were recorded still loads
    (tmp_path / "run" / "config.json").write_text(json.dumps(record))
    assert load_composer(tmp_path / "run").group.name == "S3"


def test_training_that_would_not_fit_in_memory_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "physical_memory_bytes", lambda: 10**8)
    config = default_config("C200", "mlp", epochs=2, d_embed=4, d_hidden=4)
    assert config.training_bytes == 3 * 200**3 * 8
    with pytest.raises(GroupccError, match=r"^training a composer on C200 \(order 200: float64 logits \[\|G\|², \|G\|\] of every pair, "
                                           r"with their gradients\) would need about 192 MB of memory, .*: expected a smaller group$"):
        fit_composer(config, tmp_path / "run", progress=False)
    assert not any(tmp_path.iterdir())
