"""The activation store: exact round trips, shuffled batches, resumable batch streams, atomic writes, clear errors."""

import json

import numpy as np
import pytest
import torch

from groupcc.crosscoders import DictionaryConfig, DictionaryError
from groupcc.training.activation_store import (
    ActivationStoreWriter,
    BlocksAsSamples,
    RowSubset,
    SelectBlocks,
    InMemoryActivations,
    StoreError,
    input_orbits,
    open_store,
    dictionary_input,
    write_store,
)


def activations(n=1000, n_blocks=4, d=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, n_blocks, d)).astype(np.float32)


def streamed_store(path, acts, shard_rows=96, **options):
    """Write ``acts`` in uneven batches of 77 rows, as a harvester would."""
    with ActivationStoreWriter(path, acts.shape[1], acts.shape[2], shard_rows=shard_rows, **options) as writer:
        for start in range(0, len(acts), 77):
            writer.append(acts[start:start + 77])
    return open_store(path)


def test_streamed_store_round_trips_exactly_and_records_its_manifest(tmp_path):
    acts = activations()
    store = streamed_store(tmp_path / "store", acts, group="D2", action="operands", layer="mlp.hidden", source="runs/x")
    assert store.shape == (1000, 4, 8)
    assert store.shard_rows == [96] * 10 + [40]
    assert all(isinstance(shard, np.memmap) for shard in store.shards)
    assert np.array_equal(torch.cat(list(store.chunks(300))).numpy(), acts)
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert (manifest["group"], manifest["action"], manifest["layer"], manifest["source"]) == ("D2", "operands", "mlp.hidden", "runs/x")
    norms = np.linalg.norm(acts.astype(np.float64), axis=-1)
    assert manifest["statistics"]["mean_norm"] == pytest.approx(norms.mean(), rel=1e-12)
    assert manifest["statistics"]["block_mean_norms"] == pytest.approx(norms.mean(0).tolist(), rel=1e-12)


def test_float16_store_and_torch_input(tmp_path):
    acts = activations(n=50)
    store = write_store(tmp_path / "store", torch.from_numpy(acts), dtype="float16")
    read = torch.cat(list(store.chunks(64)))
    assert read.dtype == torch.float32
    assert torch.equal(read, torch.from_numpy(acts.astype(np.float16).astype(np.float32)))


def epoch_of(source, batch_size, seed=0, start_batch=0, count=None):
    stream = source.batches(batch_size, seed=seed, start_batch=start_batch, window_shards=3)
    return [next(stream) for _ in range(count or source.n_rows // batch_size)]


def test_an_epoch_of_shuffled_batches_reads_every_row_once(tmp_path):
    acts = activations()
    store = streamed_store(tmp_path / "store", acts)
    batches = epoch_of(store, 100)
    rows = torch.cat(batches).reshape(1000, -1).numpy()
    assert np.array_equal(np.sort(rows, axis=0), np.sort(acts.reshape(1000, -1), axis=0))
    first_rows = [int(np.flatnonzero((acts.reshape(1000, -1) == batch[0].reshape(-1).numpy()).all(1))[0]) for batch in batches]
    assert first_rows != sorted(first_rows)  # shards come in a shuffled order
    assert not np.array_equal(rows, acts.reshape(1000, -1))


def test_batch_streams_are_reproducible_and_resume_at_any_batch(tmp_path):
    store = streamed_store(tmp_path / "store", activations())
    stream = epoch_of(store, 64, seed=5, count=35)  # crosses into a second epoch (15 batches each)
    again = epoch_of(store, 64, seed=5, count=35)
    assert all(torch.equal(a, b) for a, b in zip(stream, again))
    for start in (1, 7, 15, 22):
        resumed = epoch_of(store, 64, seed=5, start_batch=start, count=35 - start)
        assert all(torch.equal(a, b) for a, b in zip(resumed, stream[start:]))
    other_seed = epoch_of(store, 64, seed=6, count=3)
    assert not torch.equal(other_seed[0], stream[0])
    assert not torch.equal(stream[0], stream[15])  # epochs are shuffled differently


def test_in_memory_activations_read_like_a_store(tmp_path):
    acts = activations(n=300)
    memory, disk = InMemoryActivations(acts), write_store(tmp_path / "store", acts, shard_rows=300)
    assert memory.mean_norm == pytest.approx(disk.mean_norm, rel=1e-9)
    assert all(torch.equal(a, b) for a, b in zip(epoch_of(memory, 50), epoch_of(disk, 50)))


def test_blocks_as_samples_views_every_block_as_its_own_input():
    acts = activations(n=10, n_blocks=3, d=2)
    view = BlocksAsSamples(InMemoryActivations(acts))
    assert view.shape == (30, 1, 2)
    assert np.array_equal(view.read_rows(np.array([0, 4, 5, 29])), acts[[0, 1, 1, 9], [0, 1, 2, 2]][:, None])
    assert np.array_equal(torch.cat(list(view.chunks(7))).numpy(), acts.reshape(30, 1, 2))


def test_dictionary_input_reads_what_the_sae_config_says_and_rejects_other_shapes():
    source = InMemoryActivations(activations(n=10, n_blocks=3, d=2))
    identity = dictionary_input(source, DictionaryConfig(kind="sae", d=2, n_features=4, k=1))
    assert isinstance(identity, SelectBlocks) and np.array_equal(identity.read_rows(np.arange(10)), source.acts[:, :1])
    every = dictionary_input(source, DictionaryConfig(kind="sae", d=2, n_features=4, k=1, sae_input="all"))
    assert isinstance(every, BlocksAsSamples) and every.shape == (30, 1, 2)
    crosscoder = DictionaryConfig(kind="crosscoder", d=2, n_features=4, n_blocks=3, k=1)
    assert dictionary_input(source, crosscoder) is source
    with pytest.raises(DictionaryError, match=r"activations of shape \[10, 3, 2\] do not fit this crosscoder: expected \[N, 4, 2\]"):
        dictionary_input(source, DictionaryConfig(kind="crosscoder", d=2, n_features=4, n_blocks=4, k=1))


def test_batches_larger_than_the_data_are_an_error():
    with pytest.raises(StoreError, match="batch size 64 exceeds the 10 rows"):
        next(InMemoryActivations(activations(n=10)).batches(64))


# ---------------------------------------------------------------------- errors and atomicity
def assert_one_line_store_error(match, action):
    with pytest.raises(StoreError, match=match) as err:
        action()
    assert "\n" not in str(err.value)


def truncate_shard(path):
    shard = path / "shard_00002.npy"
    shard.write_bytes(shard.read_bytes()[:-100])


def remove_shard(path):
    (path / "shard_00003.npy").unlink()


def reshape_shard(path):
    np.save(path / "shard_00001.npy", np.zeros((96, 4, 7), dtype=np.float32))


def corrupt_manifest(path):
    (path / "manifest.json").write_text('{"format": "groupcc-activation-store", "shape": [1000, ')


def miscount_manifest(path):
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["shape"][0] = 2000
    (path / "manifest.json").write_text(json.dumps(manifest))


def empty_manifest(path):
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["shape"][0], manifest["shards"] = 0, []
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, match", [
    (truncate_shard, r"shard '.*shard_00002.npy' is truncated or corrupt"),
    (remove_shard, r"shard 'shard_00003.npy' of activation store '.*store' is missing"),
    (reshape_shard, r"shard '.*shard_00001.npy' holds float32 \[96, 4, 7\]: the manifest says float32 \[96, 4, 8\]"),
    (corrupt_manifest, r"manifest.json' is corrupt: Expecting value"),
    (miscount_manifest, r"manifest.json' is corrupt: its shards hold 1000 rows, its shape says 2000"),
    (empty_manifest, r"activation store '.*store' is empty: expected at least one row"),
])
def test_damaged_stores_fail_with_one_clear_line(tmp_path, damage, match):
    streamed_store(tmp_path / "store", activations())
    damage(tmp_path / "store")
    assert_one_line_store_error(match, lambda: open_store(tmp_path / "store"))


def test_a_missing_store_is_named(tmp_path):
    assert_one_line_store_error(r"'.*nowhere' is not an activation store: expected a directory with manifest.json",
                                lambda: open_store(tmp_path / "nowhere"))


def test_a_writer_without_rows_leaves_nothing(tmp_path):
    writer = ActivationStoreWriter(tmp_path / "store", 4, 8)
    assert_one_line_store_error(r"no activations were appended to '.*store'", writer.close)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad, match", [
    (np.zeros((5, 4, 9), dtype=np.float32), r"activations of shape \[5, 4, 9\]: expected \[n, 4, 8\]"),
    (np.full((5, 4, 8), np.nan, dtype=np.float32), r"contain NaN or inf: expected finite values"),
])
def test_a_bad_batch_aborts_the_write_and_leaves_nothing(tmp_path, bad, match):
    writer = ActivationStoreWriter(tmp_path / "store", 4, 8, shard_rows=10)
    writer.append(activations(n=25))
    assert_one_line_store_error(match, lambda: writer.append(bad))
    assert list(tmp_path.iterdir()) == []


def test_an_exception_while_harvesting_leaves_no_partial_store(tmp_path):
    with pytest.raises(RuntimeError):
        with ActivationStoreWriter(tmp_path / "store", 4, 8, shard_rows=10) as writer:
            writer.append(activations(n=25))
            raise RuntimeError("the model crashed")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_store_is_not_overwritten_by_default(tmp_path):
    write_store(tmp_path / "store", activations(n=20))
    assert_one_line_store_error("already exists", lambda: write_store(tmp_path / "store", activations(n=30)))
    assert write_store(tmp_path / "store", activations(n=30), overwrite=True).n_rows == 30
    assert [p.name for p in tmp_path.iterdir()] == ["store"]


# ---------------------------------------------------------------------- subsets and orbits (held-out splits)
def test_a_row_subset_reads_only_its_rows_shard_by_shard(tmp_path):
    acts = activations(n=300)
    store = write_store(tmp_path / "store", acts, shard_rows=100)
    rows = np.array([3, 50, 99, 100, 250, 299])
    subset = RowSubset(store, rows)
    assert subset.shape == (6, 4, 8) and subset.shard_rows == [3, 1, 2] and subset.mean_norm == store.mean_norm
    assert np.array_equal(torch.cat(list(subset.chunks(4))).numpy(), acts[rows])
    seen = torch.cat([batch for batch, _ in zip(subset.batches(2, seed=1), range(3))]).numpy()
    assert sorted(map(tuple, seen.reshape(6, -1))) == sorted(map(tuple, acts[rows].reshape(6, -1)))
    assert np.array_equal(dictionary_input(subset, DictionaryConfig(kind="sae", d=8, n_features=4, k=2)).read_rows(np.arange(6)), acts[rows][:, :1])
    for bad in ([], [5, 3], [0, 300]):
        with pytest.raises(StoreError, match="expected a non-empty increasing array of row indices in 0..299"):
            RowSubset(store, np.array(bad, dtype=np.int64))


def test_orbits_of_rows_come_from_the_group_and_action_a_store_records():
    """Left action on S3's 36 pairs: the orbit of (a, b) is every (g·a, b), labelled by its smallest pair (b).
    A vision store or a bare array: each row its own orbit."""
    acts = activations(n=36, n_blocks=6)
    orbits, how = input_orbits(InMemoryActivations(acts, manifest={"group": "S3", "action": "left"}))
    assert how == "orbits of the left action of S3 on pairs" and np.array_equal(orbits, np.arange(36) % 6)
    orbits, how = input_orbits(InMemoryActivations(acts, manifest={"group": "S3", "action": "conjugation"}))
    assert len(np.unique(orbits)) == 11  # Burnside: Σ_g |C(g)|² / |G| = (36 + 3·4 + 2·9) / 6
    for manifest in ({"group": "D4", "action": "dihedral-image"}, {}):
        orbits, how = input_orbits(InMemoryActivations(acts, manifest=manifest))
        assert how == "rows" and np.array_equal(orbits, np.arange(36))
    with pytest.raises(StoreError, match="has 35 rows, but the left action of S3 acts on 36 pairs"):
        input_orbits(InMemoryActivations(acts[:35], manifest={"group": "S3", "action": "left"}))
