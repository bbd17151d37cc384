"""Activations ``[N, B, d]`` on disk: shards of ``.npy`` (memory-mapped on read) plus ``manifest.json``.

``manifest.json``::

    {"format": "groupcc-activation-store", "version": 1, "shape": [N, B, d], "dtype": "float32",
     "shards": [{"file": "shard_00000.npy", "rows": 8192}, ...],
     "group": "D4", "action": "...", "layer": "...", "source": "<run directory>", "metadata": {...},
     "statistics": {"mean_norm": ..., "block_mean_norms": [...]}}

``mean_norm`` is the mean norm of a block over every row and block (``block_mean_norms``: per block); a
dictionary scales its inputs with it. A store is written by :class:`ActivationStoreWriter` under a temporary
name and renamed into place when complete, so a failed write leaves nothing behind.

Every source of activations (:class:`ActivationStore`, :class:`InMemoryActivations`, :class:`BlocksAsSamples`)
reads shuffled mini-batches the same way: the shards in a random order, grouped into windows of a few shards,
rows shuffled within a window. Only one batch is in memory at a time, so stores larger than memory work, and
batch ``b`` of the stream depends only on ``(seed, b)``, so a resumed training run reads the same batches.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from groupcc.crosscoders import DictionaryConfig, DictionaryError
from groupcc.errors import GroupccError
from groupcc.groups import PAIR_ACTIONS, GroupError, get_group, pair_action

from .runs import RunError, StagedDirectory, read_json, write_json

MANIFEST = "manifest.json"
FORMAT = "groupcc-activation-store"
VERSION = 1
DTYPES = ("float32", "float16")
SHARD_BYTES = 64 << 20


class StoreError(GroupccError):
    """A missing, empty, truncated or corrupt activation store, or activations that do not fit it; the message
    is one line naming the bad value and what was expected."""


class ActivationSource(ABC):
    """Rows ``[N, B, d]`` split into shards; subclasses give ``shape``, ``shard_rows``, ``mean_norm`` and
    :meth:`read_rows`."""

    shape: tuple[int, int, int]
    shard_rows: list[int]
    mean_norm: float
    #: What the activations are (group, action, layer, source run, metadata), as a store's manifest records it.
    manifest: dict = {}

    @property
    def n_rows(self) -> int:
        return self.shape[0]

    @property
    def n_blocks(self) -> int:
        return self.shape[1]

    @property
    def d(self) -> int:
        return self.shape[2]

    @property
    def label(self) -> str:
        """How messages name these activations."""
        return "the activations"

    @abstractmethod
    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """``[len(rows), B, d]`` for increasing global row indices."""

    def describe(self) -> dict:
        """A JSON-able description for run records."""
        return {"shape": list(self.shape), "mean_norm": self.mean_norm}

    def batches(self, batch_size: int, seed: int = 0, start_batch: int = 0, window_shards: int = 8,
                part: tuple[int, int] = (0, 1)) -> Iterator[torch.Tensor]:
        """Endless float32 batches ``[batch_size, B, d]``, from batch ``start_batch`` of the stream on.

        Epoch ``e`` puts the shards in a random order (seed ``(seed, e)``), groups them into windows of
        ``window_shards`` shards, shuffles the rows of window ``w`` (seed ``(seed, e, w)``) and cuts the
        concatenation into batches; the last incomplete batch of an epoch is dropped.

        ``part = (rank, size)``: only that rank's share of every batch, ``batch_size / size`` of its rows (in row
        order, so each rank reads one stretch of the batch's sorted rows); the ranks' shares together are the
        one-process batch.
        """
        rank, size = part
        if batch_size % size:
            raise StoreError(f"batch size {batch_size} is not divisible by the {size} ranks: expected a multiple of {size}")
        per_epoch = self.n_rows // batch_size
        if per_epoch == 0:
            raise StoreError(f"batch size {batch_size} exceeds the {self.n_rows} rows of the activations: expected at most {self.n_rows}")
        share = batch_size // size
        epoch, skip = divmod(start_batch, per_epoch)
        while True:
            for batch in _cut(self._epoch_rows(seed, epoch, window_shards, skip * batch_size), batch_size):
                yield self._tensor(np.sort(batch)[rank * share:(rank + 1) * share])
            epoch, skip = epoch + 1, 0

    def chunks(self, chunk_rows: int, max_rows: int | None = None) -> Iterator[torch.Tensor]:
        """Float32 chunks of consecutive rows, in order (for evaluation), up to ``max_rows`` rows."""
        stop = self.n_rows if max_rows is None else min(max_rows, self.n_rows)
        for start in range(0, stop, chunk_rows):
            yield self._tensor(np.arange(start, min(start + chunk_rows, stop)))

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``min(n, N)`` rows drawn without replacement (e.g. to initialise a dictionary)."""
        return self._tensor(self._sample_rows(n, seed))

    def sample_chunks(self, n: int, seed: int = 0, chunk_rows: int = 1024) -> Iterator[torch.Tensor]:
        """The rows of :meth:`sample`, read ``chunk_rows`` at a time (so that a large sample is never in memory)."""
        rows = self._sample_rows(n, seed)
        for start in range(0, len(rows), chunk_rows):
            yield self._tensor(rows[start:start + chunk_rows])

    def _sample_rows(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng([seed, 1 << 30])
        return np.sort(rng.choice(self.n_rows, size=min(n, self.n_rows), replace=False))

    def _tensor(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.read_rows(rows), dtype=np.float32))

    def _epoch_rows(self, seed: int, epoch: int, window_shards: int, skip_rows: int) -> Iterator[np.ndarray]:
        """The shuffled global row indices of one epoch, window by window, without the first ``skip_rows``."""
        starts = np.concatenate([[0], np.cumsum(self.shard_rows)])
        order = np.random.default_rng([seed, epoch]).permutation(len(self.shard_rows))
        for window, first in enumerate(range(0, len(order), window_shards)):
            shards = order[first:first + window_shards]
            size = sum(self.shard_rows[s] for s in shards)
            if skip_rows >= size:
                skip_rows -= size
                continue
            rows = np.concatenate([np.arange(starts[s], starts[s + 1]) for s in shards])
            yield rows[np.random.default_rng([seed, epoch, window]).permutation(size)][skip_rows:]
            skip_rows = 0


def _cut(pieces: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """The concatenation of ``pieces`` cut into arrays of ``size`` (an incomplete last one is dropped)."""
    pending = np.empty(0, dtype=np.int64)
    for piece in pieces:
        pending = np.concatenate([pending, piece])
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]


class InMemoryActivations(ActivationSource):
    """An array or tensor ``[N, B, d]`` held in memory, read like a one-shard store; ``manifest`` says what they
    are, with the keys of a store's manifest (``group``, ``action``, ``layer``, ``source``, ``metadata``)."""

    def __init__(self, acts_NBD: np.ndarray | torch.Tensor, manifest: dict | None = None):
        acts = acts_NBD.detach().cpu().numpy() if isinstance(acts_NBD, torch.Tensor) else np.asarray(acts_NBD)
        if acts.ndim != 3 or acts.shape[0] == 0:
            raise StoreError(f"activations of shape {list(acts.shape)}: expected a non-empty [N, B, d] array")
        self.acts = acts
        self.shape = tuple(acts.shape)
        self.shard_rows = [acts.shape[0]]
        self.mean_norm = float(np.linalg.norm(acts.astype(np.float64), axis=-1).mean())
        self.manifest = dict(manifest or {})

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.acts[rows]


class BlocksAsSamples(ActivationSource):
    """A view ``[N·B, 1, d]`` of a source: every block of every row is its own sample (an SAE trained on all
    group-transformed inputs). Sample ``i`` is block ``i mod B`` of row ``i div B``."""

    def __init__(self, base: ActivationSource):
        self.base = base
        self.shape = (base.n_rows * base.n_blocks, 1, base.d)
        self.shard_rows = [rows * base.n_blocks for rows in base.shard_rows]
        self.mean_norm = base.mean_norm
        self.manifest = base.manifest

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        base_rows, blocks = np.divmod(rows, self.base.n_blocks)
        unique_rows, position = np.unique(base_rows, return_inverse=True)
        return self.base.read_rows(unique_rows)[position, blocks][:, None, :]

    def describe(self) -> dict:
        return {**self.base.describe(), "blocks_as_samples": True}


class SelectBlocks(ActivationSource):
    """A view ``[N, len(blocks), d]`` of some blocks of a source (e.g. ``[0]``: the identity block alone)."""

    def __init__(self, base: ActivationSource, blocks: list[int]):
        bad = [b for b in blocks if not 0 <= b < base.n_blocks]
        if bad or not blocks:
            raise StoreError(f"blocks {blocks}: expected a non-empty list of block indices in 0..{base.n_blocks - 1}")
        self.base, self.blocks = base, list(blocks)
        self.shape = (base.n_rows, len(blocks), base.d)
        self.shard_rows = base.shard_rows
        self.mean_norm = base.mean_norm
        self.manifest = base.manifest

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.base.read_rows(rows)[:, self.blocks]

    def describe(self) -> dict:
        return {**self.base.describe(), "blocks": self.blocks}


class RowSubset(ActivationSource):
    """A view ``[len(rows), B, d]`` of some rows of a source (a train or held-out split), in increasing order.
    Its shards are the source's, each holding the chosen rows that fall in it, so batches still read a few
    shards at a time. ``mean_norm`` is the source's (the input scale is a fixed normalisation of the store, one
    number that carries nothing about individual inputs)."""

    def __init__(self, base: ActivationSource, rows: np.ndarray):
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or len(rows) == 0 or np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= base.n_rows:
            raise StoreError(f"rows of a subset: expected a non-empty increasing array of row indices in 0..{base.n_rows - 1}")
        self.base, self.rows = base, rows
        self.shape = (len(rows), base.n_blocks, base.d)
        bounds = np.searchsorted(rows, np.cumsum(base.shard_rows))
        self.shard_rows = [int(n) for n in np.diff(np.concatenate([[0], bounds])) if n > 0]
        self.mean_norm = base.mean_norm
        self.manifest = base.manifest

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.base.read_rows(self.rows[rows])

    @property
    def label(self) -> str:
        return f"{len(self.rows)} rows of {self.base.label}"

    def describe(self) -> dict:
        return {**self.base.describe(), "rows": len(self.rows)}


#: Stream of the random generator that draws the held-out orbits (independent of the batch order's).
SPLIT_STREAM = 3 << 30


def input_orbits(source: ActivationSource) -> tuple[np.ndarray, str]:
    """``([N] orbit label of each row, how they were found)``: rows with the same label are transforms of each
    other, so that a held-out split must keep them together.

    A composer store records its group and its ``action`` on pairs and has one row per pair ``p = a·|G| + b``;
    row ``p``'s blocks are the activations of the pairs ``g·p``, so it shares every block with the rows of its
    orbit ``{g·p}`` (under the left action: all pairs with the same ``b``). The orbit of ``p`` is the column
    ``pair_action[:, p]`` (a group action's orbit is the image of the whole group), labelled by its smallest
    pair. Any other source (a vision store, where each image's row is its own orbit, or an array without a
    manifest) has one orbit per row."""
    group_name, action = source.manifest.get("group"), source.manifest.get("action")
    if action not in PAIR_ACTIONS or group_name is None:
        return np.arange(source.n_rows), "rows"
    try:
        group = get_group(group_name)
    except GroupError:
        raise StoreError(f"{source.label} records group {group_name!r}, which cannot be rebuilt from its name to find "
                         "the orbits of its rows: expected orbit labels to be given") from None
    if source.n_rows != group.order**2:
        raise StoreError(f"{source.label} has {source.n_rows} rows, but the {action} action of {group_name} acts on "
                         f"{group.order**2} pairs: expected one row per pair, or orbit labels to be given")
    return pair_action(group, action).min(axis=0), f"orbits of the {action} action of {group_name} on pairs"


def split_rows(orbits_N: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train_rows, held_out_rows)``, increasing: whole orbits, drawn in a random order (seed ``(seed,
    SPLIT_STREAM)``) into the held-out part until it holds at least ``round(val_fraction·N)`` rows. With one
    row per orbit that is exactly ``round(val_fraction·N)`` rows (576 inputs, 0.2: 115 held out)."""
    labels = np.asarray(orbits_N)
    if labels.ndim != 1:
        raise StoreError(f"orbit labels of shape {list(labels.shape)}: expected one label per row")
    orbits, orbit_of_row = np.unique(labels, return_inverse=True)
    order = np.random.default_rng([seed, SPLIT_STREAM]).permutation(len(orbits))
    sizes = np.bincount(orbit_of_row, minlength=len(orbits))[order]
    wanted = round(val_fraction * len(labels))
    n_held_out = int(np.searchsorted(np.cumsum(sizes), wanted)) + 1 if wanted > 0 else 0
    if not 0 < n_held_out < len(orbits):
        raise StoreError(f"val_fraction = {val_fraction} of {len(labels)} inputs in {len(orbits)} orbits leaves "
                         f"{'no held-out' if n_held_out == 0 else 'no training'} inputs: expected a fraction that holds out "
                         "at least one orbit and keeps at least one")
    held_out = np.isin(orbit_of_row, order[:n_held_out])
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


def reads_transformed_blocks(config: DictionaryConfig, source: ActivationSource) -> bool:
    """Whether the dictionary trains on blocks other than the identity (a crosscoder's decoder writes them all; an
    SAE with ``sae_input = "all"`` reads them), so that rows of one orbit share training data."""
    return source.n_blocks > 1 and (config.kind == "crosscoder" or config.sae_input == "all")


def dictionary_input(source: ActivationSource, config: DictionaryConfig) -> ActivationSource:
    """``source`` as the dictionary reads it. An SAE on multi-block activations reads block 0 (``sae_input =
    "identity"``: :class:`SelectBlocks`) or every block as its own input (``"all"``: :class:`BlocksAsSamples`);
    otherwise the blocks and width must match the config. Training, evaluation and analysis all go through here."""
    if config.kind == "sae" and source.n_blocks > 1 and source.d == config.d:
        source = SelectBlocks(source, [0]) if config.sae_input == "identity" else BlocksAsSamples(source)
    if (source.n_blocks, source.d) != (config.n_blocks, config.d):
        raise DictionaryError(
            f"activations of shape {list(source.shape)} do not fit this {config.kind}: expected "
            f"[N, {config.n_blocks}, {config.d}] (n_blocks = {config.n_blocks}, d = {config.d})"
        )
    return source


def as_activation_source(acts) -> ActivationSource:
    """Activations as a source: an :class:`ActivationSource` as it is, the path of a store (opened), or an array or
    tensor ``[N, B, d]`` (``[N, d]`` is read as one block, ``[N, 1, d]``)."""
    if isinstance(acts, ActivationSource):
        return acts
    if isinstance(acts, (str, Path)):
        return open_store(acts)
    if isinstance(acts, (np.ndarray, torch.Tensor)):
        return InMemoryActivations(acts[:, None, :] if acts.ndim == 2 else acts)
    raise StoreError(f"activations of type {type(acts).__name__}: expected an array or tensor [N, |G|, d] or [N, d], "
                     "an activation store or its path")


class ActivationStore(ActivationSource):
    """A store opened from its directory: the manifest is read and every shard checked (header only) and
    memory-mapped; rows are read on demand. A missing, empty, truncated or corrupt store raises :class:`StoreError`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest = _read_manifest(self.path)
        self.shape = tuple(self.manifest["shape"])
        self.shard_rows = [shard["rows"] for shard in self.manifest["shards"]]
        self.mean_norm = float(self.manifest["statistics"]["mean_norm"])
        self.shards = [self._open_shard(shard["file"], rows) for shard, rows in zip(self.manifest["shards"], self.shard_rows)]
        self.starts = np.concatenate([[0], np.cumsum(self.shard_rows)])

    def _open_shard(self, name: str, rows: int) -> np.ndarray:
        file = self.path / name
        if not file.is_file():
            raise StoreError(f"shard {name!r} of activation store {str(self.path)!r} is missing: the manifest lists it")
        try:
            shard = np.load(file, mmap_mode="r")
        except (ValueError, OSError, EOFError) as err:
            raise StoreError(f"shard {str(file)!r} is truncated or corrupt: {err}") from None
        expected = (rows, *self.shape[1:])
        if shard.shape != expected or shard.dtype != np.dtype(self.manifest["dtype"]):
            raise StoreError(
                f"shard {str(file)!r} holds {shard.dtype} {list(shard.shape)}: the manifest says "
                f"{self.manifest['dtype']} {list(expected)}"
            )
        return shard

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        shard_ids = np.searchsorted(self.starts, rows, side="right") - 1
        bounds = np.searchsorted(shard_ids, np.arange(len(self.shards) + 1))
        parts = [
            self.shards[s][rows[bounds[s]:bounds[s + 1]] - self.starts[s]]
            for s in range(len(self.shards)) if bounds[s] < bounds[s + 1]
        ]
        return np.concatenate(parts)

    @property
    def label(self) -> str:
        return f"activation store {str(self.path)!r}"

    def describe(self) -> dict:
        keys = ("shape", "dtype", "group", "action", "layer", "source", "statistics")
        return {"store": str(self.path.resolve()), **{key: self.manifest.get(key) for key in keys}}


@dataclass(frozen=True)
class ShardedRows:
    """What a :class:`ShardWriter` wrote: its shards (``{"file", "rows"}``, in row order), the row count and, per
    appended batch, the sum over its rows of each block's norm (the store's statistics are summed from these in
    batch order, so a store written in parts by several processes has the statistics of one written at once)."""

    shards: list[dict]
    rows: int
    block_norm_sums: list[np.ndarray]


class ShardWriter:
    """Appends batches ``[n, B, d]`` (finite values) to ``.npy`` shards of ``shard_rows`` rows in ``directory``,
    named ``<prefix>NNNNN.npy``."""

    def __init__(self, directory: Path, n_blocks: int, d: int, dtype: np.dtype, shard_rows: int, prefix: str = "shard_"):
        self.directory, self.block_shape, self.dtype = directory, (n_blocks, d), dtype
        self.shard_rows, self.prefix = shard_rows, prefix
        self._pending: list[np.ndarray] = []
        self._shards: list[dict] = []
        self._norm_sums: list[np.ndarray] = []
        self._rows = 0

    def append(self, acts_NBD: np.ndarray | torch.Tensor) -> None:
        acts = acts_NBD.detach().cpu().numpy() if isinstance(acts_NBD, torch.Tensor) else np.asarray(acts_NBD)
        if acts.ndim != 3 or acts.shape[1:] != self.block_shape:
            raise StoreError(f"activations of shape {list(acts.shape)}: expected [n, {self.block_shape[0]}, {self.block_shape[1]}] for store {str(self.directory)!r}")
        if not np.isfinite(acts).all():
            raise StoreError(f"activations appended to {str(self.directory)!r} contain NaN or inf: expected finite values")
        acts = acts.astype(self.dtype)
        self._norm_sums.append(np.linalg.norm(acts.astype(np.float64), axis=-1).sum(0))
        self._rows += len(acts)
        self._pending.append(acts)
        while sum(map(len, self._pending)) >= self.shard_rows:
            self._write_shard(self.shard_rows)

    def finish(self) -> ShardedRows:
        """Write the last, partial shard."""
        remaining = sum(map(len, self._pending))
        if remaining:
            self._write_shard(remaining)
        return ShardedRows(list(self._shards), self._rows, list(self._norm_sums))

    def _write_shard(self, rows: int) -> None:
        pending = np.concatenate(self._pending)
        name = f"{self.prefix}{len(self._shards):05d}.npy"
        np.save(self.directory / name, pending[:rows])
        self._shards.append({"file": name, "rows": rows})
        self._pending = [pending[rows:]]


def default_shard_rows(n_blocks: int, d: int, dtype: str | np.dtype = "float32") -> int:
    """Rows per shard for about :data:`SHARD_BYTES` per shard."""
    return max(1, SHARD_BYTES // (n_blocks * d * np.dtype(dtype).itemsize))


def store_manifest(parts: list[ShardedRows], block_shape: tuple[int, int], dtype: np.dtype, record: dict) -> dict:
    """The manifest of a store made of ``parts`` (in row order): their shards, the shape, and the statistics, whose
    per-batch norm sums are added one after another in batch order (the same additions however the rows were
    split into parts)."""
    rows = sum(part.rows for part in parts)
    norm_sums = np.zeros(block_shape[0])
    for part in parts:
        for batch_sums in part.block_norm_sums:
            norm_sums += batch_sums
    block_mean_norms = norm_sums / rows
    return {
        "format": FORMAT, "version": VERSION, "shape": [rows, *block_shape], "dtype": np.dtype(dtype).name,
        "shards": [shard for part in parts for shard in part.shards], **record,
        "statistics": {"mean_norm": float(block_mean_norms.mean()), "block_mean_norms": block_mean_norms.tolist()},
    }


class ActivationStoreWriter:
    """Streams batches ``[n, B, d]`` into a new store at ``path``, a shard of ``shard_rows`` rows at a time.

    The store is built under a temporary name and appears at ``path`` only when :meth:`close` succeeds; an error
    in :meth:`append` or :meth:`close`, or :meth:`abort`, removes it. As a context manager it closes on success
    and aborts on an exception::

        with ActivationStoreWriter(path, n_blocks=8, d=128, group="D4", layer="mlp") as writer:
            for acts_NBD in harvest():
                writer.append(acts_NBD)

    ``group``, ``action``, ``layer`` and ``source`` (the run the activations come from) and ``metadata``
    (JSON-able) are recorded in the manifest. ``shard_rows`` defaults to about 64 MiB per shard.
    """

    def __init__(
        self, path: str | Path, n_blocks: int, d: int, *, dtype: str = "float32", shard_rows: int | None = None,
        group: str | None = None, action: str | None = None, layer: str | None = None, source: str | None = None,
        metadata: dict | None = None, overwrite: bool = False,
    ):
        if dtype not in DTYPES:
            raise StoreError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
        self.path = Path(path)
        self.block_shape = (n_blocks, d)
        self.dtype = np.dtype(dtype)
        self.record = store_record(group, action, layer, source, metadata)
        try:
            self._directory = StagedDirectory(self.path, overwrite=overwrite, what="activation store")
        except RunError as err:
            raise StoreError(str(err)) from None
        self._shards = ShardWriter(self._directory.path, n_blocks, d, self.dtype,
                                   shard_rows or default_shard_rows(n_blocks, d, self.dtype))

    def append(self, acts_NBD: np.ndarray | torch.Tensor) -> None:
        """Add rows ``[n, B, d]`` (finite values)."""
        self._abort_on_error(self._shards.append, acts_NBD)

    def close(self) -> ActivationStore:
        """Write the last shard and the manifest, move the store into place and open it."""
        return self._abort_on_error(self._close)

    def abort(self) -> None:
        """Remove everything written so far."""
        self._directory.abort()

    def __enter__(self) -> "ActivationStoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _abort_on_error(self, step, *args):
        try:
            return step(*args)
        except BaseException:
            self.abort()
            raise

    def _close(self) -> ActivationStore:
        part = self._shards.finish()
        if part.rows == 0:
            raise StoreError(f"no activations were appended to {str(self.path)!r}: expected at least one row")
        write_json(self._directory.path / MANIFEST, store_manifest([part], self.block_shape, self.dtype, self.record))
        self._directory.commit()
        return ActivationStore(self.path)


def store_record(group: str | None = None, action: str | None = None, layer: str | None = None,
                 source: str | None = None, metadata: dict | None = None) -> dict:
    """What a manifest records about where the activations come from."""
    return {"group": group, "action": action, "layer": layer, "source": source, "metadata": metadata or {}}


def write_store(path: str | Path, acts_NBD: np.ndarray | torch.Tensor, **options) -> ActivationStore:
    """Write ``acts_NBD`` as a new store (``options``: those of :class:`ActivationStoreWriter`) and open it."""
    if acts_NBD.ndim != 3:
        raise StoreError(f"activations of shape {list(acts_NBD.shape)}: expected [N, B, d]")
    writer = ActivationStoreWriter(path, acts_NBD.shape[1], acts_NBD.shape[2], **options)
    writer.append(acts_NBD)
    return writer.close()


def open_store(path: str | Path) -> ActivationStore:
    """Open the store at ``path`` (see :class:`ActivationStore`)."""
    return ActivationStore(path)


def _read_manifest(path: Path) -> dict:
    file = path / MANIFEST
    if not file.is_file():
        raise StoreError(f"{str(path)!r} is not an activation store: expected a directory with {MANIFEST}")
    try:
        manifest = read_json(file)
    except RunError as err:
        raise StoreError(str(err)) from None
    problem = _manifest_problem(manifest)
    if problem:
        raise StoreError(f"{str(file)!r} is corrupt: {problem}")
    if manifest["shape"][0] == 0:
        raise StoreError(f"activation store {str(path)!r} is empty: expected at least one row")
    return manifest


def _manifest_problem(manifest) -> str | None:
    """What is wrong with a parsed manifest, or ``None``."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return f"expected a JSON object with format {FORMAT!r}"
    shape, dtype, shards = manifest.get("shape"), manifest.get("dtype"), manifest.get("shards")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(n, int) and n >= 0 for n in shape) and min(shape[1:]) > 0):
        return f"shape {shape!r}: expected [N, B, d] with B, d > 0"
    if dtype not in DTYPES:
        return f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}"
    if not isinstance(shards, list) or not all(_is_shard_entry(shard) for shard in shards):
        return "expected 'shards' to list {\"file\": <name in the store>, \"rows\": <count>} entries"
    if sum(shard["rows"] for shard in shards) != shape[0]:
        return f"its shards hold {sum(shard['rows'] for shard in shards)} rows, its shape says {shape[0]}"
    statistics = manifest.get("statistics")
    if not isinstance(statistics, dict) or not isinstance(statistics.get("mean_norm"), (int, float)):
        return "expected statistics.mean_norm, a number"
    return None


def _is_shard_entry(shard) -> bool:
    return (
        isinstance(shard, dict) and isinstance(shard.get("file"), str) and Path(shard["file"]).name == shard["file"]
        and isinstance(shard.get("rows"), int) and shard["rows"] >= 0
    )
