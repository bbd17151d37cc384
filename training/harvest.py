"""Harvesting a layer's activations on group-transformed inputs: ``acts[i, g] = layer(g·x_i)``, ``[N, |G|, d]``.

Works for any ``torch.nn.Module``: a forward hook on the named layer reads its output while the model runs
on a batch of inputs and all their transforms at once. A *transform* turns a batch of ``B`` inputs into the
model's arguments for all ``|G|·B`` transformed inputs, stacked element-major (all rows for ``g = 0``, then
``g = 1``, ...). For composers the transform is an index map over pairs (:func:`groupcc.groups.pair_action`).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from groupcc.errors import GroupccError

from groupcc.groups import PAIR_ACTIONS, GroupError, get_group, pair_action

from .activation_store import (MANIFEST, ActivationSource, ActivationStore, ActivationStoreWriter, InMemoryActivations,
                               ShardWriter, StoreError, default_shard_rows, store_manifest, store_record)
from .composer_training import ComposerRun, load_composer
from .devices import resolve_device
from .distributed import World, current_world
from .progress import progress_bar
from .runs import StagedDirectory, check_number, check_output, check_replaceable, group_fingerprint, lock, write_json

#: What a store records about where its activations come from (``metadata.store_kind``): composer pairs or images.
COMPOSER_STORE, VISION_STORE = "composer", "vision"

#: Maps a batch of inputs to the model's positional arguments for every transform, element-major.
Transform = Callable[[object], Sequence[torch.Tensor]]


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (a composer's short names like ``hidden`` mean its ``hook_hidden``)."""
    modules = dict(model.named_modules())
    for candidate in (name, f"hook_{name}"):
        if candidate and candidate in modules:
            return modules[candidate]
    hooks = sorted(n[len("hook_"):] for n in modules if n.startswith("hook_"))
    available = hooks or sorted(n for n in modules if n)[:30]
    expected = f"one of {', '.join(available)}" if available else "a model with submodules to read (it has none)"
    raise GroupccError(f"layer {name!r} not found in {type(model).__name__}: expected {expected}")


@contextmanager
def capture_output(module: nn.Module):
    """Context manager yielding a list that receives ``module``'s output at each forward call."""
    outputs: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _inp, out: outputs.append(out[0] if isinstance(out, tuple) else out))
    try:
        yield outputs
    finally:
        handle.remove()


def flatten_features(output: torch.Tensor) -> torch.Tensor:
    """Default reduction of a layer output ``[rows, ...]`` to ``[rows, d]``."""
    return output.reshape(output.shape[0], -1)


@torch.no_grad()
def iter_harvest(
    model: nn.Module,
    layer: str,
    n_inputs: int,
    batch_inputs: Callable[[np.ndarray], object],
    transform: Transform,
    group_order: int,
    rows_per_forward: int = 65_536,
    reduce: Callable[[torch.Tensor], torch.Tensor] = flatten_features,
    progress: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield ``[B, |G|, d]`` activation batches, in input order.

    ``batch_inputs(indices)`` gives the inputs with those indices; ``transform`` maps them to the model's
    arguments for all transforms; ``reduce`` turns the hooked output into ``[|G|·B, d]`` (e.g. the centre
    position of a feature map).
    """
    module = resolve_layer(model, layer)
    was_training = model.training
    model.eval()
    batch = max(1, rows_per_forward // group_order)
    starts = range(0, n_inputs, batch)
    world = current_world()
    starts = starts[world.part(len(starts))]  # under torchrun: this rank's run of the one-process batches
    mine = min(n_inputs, starts[-1] + batch) - starts[0] if starts else 0
    try:
        with capture_output(module) as outputs, progress_bar(total=mine, enabled=progress and world.is_main,
                                                             desc=f"harvest {layer}", unit="input") as bar:
            for start in starts:
                indices = np.arange(start, min(start + batch, n_inputs))
                outputs.clear()
                model(*transform(batch_inputs(indices)))
                if not outputs:
                    raise GroupccError(f"layer {layer!r} did not run during the forward pass: expected a layer on the path to the output")
                acts = reduce(outputs[-1]).reshape(group_order, len(indices), -1).transpose(0, 1)
                if not torch.isfinite(acts).all():
                    raise GroupccError(f"layer {layer!r} produced NaN or infinite activations for inputs {start}..{indices[-1]}")
                bar.update(len(indices))
                yield acts.float().cpu()
    finally:
        model.train(was_training)


def collect(batches: Iterator[torch.Tensor], out: str | Path | None, group_order: int, *, overwrite: bool = False,
            **manifest) -> ActivationSource:
    """:func:`iter_harvest` batches as a new activation store at ``out`` (built beside an old one, which it replaces
    only when complete; removed again on any error), or in memory when ``out`` is ``None``. ``manifest``: the
    store's ``group``, ``action``, ``layer``, ``source`` and ``metadata``; the metadata also gets the group's
    fingerprint (:func:`groupcc.training.runs.group_fingerprint`) when it has none. ``out`` is locked from the
    first batch to the last, so a second writer is refused before it computes anything. Under ``torchrun`` each
    rank's batches become its shards of the one store (:func:`harvest_to_sharded_store`)."""
    manifest = with_group_fingerprint(manifest)
    world = current_world()
    if out is None:
        if world.distributed:
            raise GroupccError(f"a harvest on {world.size} ranks needs an output store: expected out to name one")
        acts = [batch for batch in batches]
        if not acts:
            raise GroupccError("no inputs to harvest: expected at least one")
        return InMemoryActivations(torch.cat(acts), manifest=manifest)
    if world.distributed:
        return harvest_to_sharded_store(out, batches, group_order, world, overwrite=overwrite, **manifest)
    with lock(out):
        try:
            return harvest_to_store(out, batches, group_order, overwrite=overwrite, **manifest)
        except OSError as err:  # a full disk, a file over `ulimit -f`: the half-written store is already removed
            raise _write_failure(out, err) from None


def with_group_fingerprint(manifest: dict) -> dict:
    """``manifest`` with ``metadata.group_fingerprint`` (of the named group) added when it records a group."""
    metadata = dict(manifest.get("metadata") or {})
    if manifest.get("group") and "group_fingerprint" not in metadata:
        try:
            metadata["group_fingerprint"] = group_fingerprint(get_group(manifest["group"]).mult_table)
        except GroupError:  # not a group name (a group from a table): nothing to check it against later
            pass
    return {**manifest, "metadata": metadata}


def store_kind(manifest: dict) -> str | None:
    """What a store's activations are of: ``composer`` (pairs under a pair action), ``vision`` (images under a
    dihedral group) or ``None`` (an array written as a store)."""
    recorded = (manifest.get("metadata") or {}).get("store_kind")
    if recorded:
        return recorded
    if manifest.get("action") in PAIR_ACTIONS:
        return COMPOSER_STORE
    if manifest.get("action") == "dihedral-image":
        return VISION_STORE
    return None


def check_new_output(out: str | Path | None, overwrite: bool) -> None:
    """Fail before any work when ``out`` exists and may not be replaced (without ``overwrite``, or when it is not an
    activation store), or cannot be written (under a file, in a read-only directory)."""
    if out is None:
        return
    check_output(out, "activation store")
    if Path(out).exists() and not overwrite:
        raise StoreError(f"activation store {str(out)!r} already exists: overwrite it, or choose another path")
    check_replaceable(out, overwrite, MANIFEST, "activation store")


def harvest_to_store(path, batches: Iterator[torch.Tensor], group_order: int, **manifest) -> ActivationStore:
    """Stream :func:`iter_harvest` batches into a new activation store (removed again on any error)."""
    first = next(batches, None)
    if first is None:
        raise GroupccError("no inputs to harvest: expected at least one")
    with ActivationStoreWriter(path, group_order, first.shape[-1], **manifest) as writer:
        writer.append(first)
        for acts in batches:
            writer.append(acts)
    return ActivationStore(path)


def harvest_to_sharded_store(path, batches: Iterator[torch.Tensor], group_order: int, world: World, *,
                             overwrite: bool = False, **manifest) -> ActivationStore:
    """Each rank's :func:`iter_harvest` batches (its run of the one-process batches) as shards of one new store:
    rank 0 stages the store (holding its lock) and tells the others where; every rank writes its shards there
    (``shard_r<rank>_NNNNN.npy``); once every rank has succeeded, rank 0 writes the manifest (the ranks' shards in
    rank order, hence the rows in input order; statistics summed batch by batch, as one process sums them) and
    moves the store into place. Any rank's failure removes the staging directory and is raised on every rank."""
    staging = None
    if world.is_main:
        staging = _user_error(lambda: StagedDirectory(path, overwrite=overwrite, what="activation store"), path)
    world.agree(staging if isinstance(staging, BaseException) else None)
    directory = Path(world.broadcast(str(staging.path) if world.is_main else None))
    try:
        written = _user_error(lambda: _write_shards(directory, batches, group_order, world.rank), path)
        world.agree(written if isinstance(written, BaseException) else None)
        parts = [part for part in world.gather(written) if part is not None]
        committed = None
        if world.is_main:
            committed = _user_error(lambda: _commit_sharded_store(staging, parts, group_order, manifest), path)
            staging = None
        world.agree(committed if isinstance(committed, BaseException) else None)
    finally:
        if isinstance(staging, StagedDirectory):
            staging.abort()
    return ActivationStore(path)


def _user_error(step: Callable[[], object], path):
    """``step()``, or the user error it raised (as a value, so that the ranks can agree on it); an operating-system
    error names the store."""
    try:
        return step()
    except GroupccError as err:
        return err
    except OSError as err:
        return _write_failure(path, err)


def _write_failure(path, err: OSError) -> StoreError:
    return StoreError(f"cannot write activation store {str(path)!r}: {err.strerror or err}")


def _write_shards(directory: Path, batches: Iterator[torch.Tensor], group_order: int, rank: int):
    """This rank's batches as shards in ``directory``: ``(rows written, width)``, or ``None`` without batches."""
    writer = None
    for acts in batches:
        if writer is None:
            writer = ShardWriter(directory, group_order, acts.shape[-1], np.dtype("float32"),
                                 default_shard_rows(group_order, acts.shape[-1]), prefix=f"shard_r{rank:05d}_")
        writer.append(acts)
    return None if writer is None else (writer.finish(), writer.block_shape[1])


def _commit_sharded_store(staging: StagedDirectory, parts: list, group_order: int, manifest: dict) -> Path:
    """Write the manifest of the ranks' ``parts`` and move the store into place (the staging is gone either way)."""
    try:
        if not parts:
            raise GroupccError("no inputs to harvest: expected at least one")
        write_json(staging.path / MANIFEST, store_manifest([rows for rows, _ in parts], (group_order, parts[0][1]),
                                                          np.dtype("float32"), store_record(**manifest)))
    except BaseException:
        staging.abort()
        raise
    return staging.commit()


def composer_transform(group, action: str, device: torch.device) -> Transform:
    """Transform for composers: pair indices ``[B]`` -> operands ``(a, b)`` of all ``|G|·B`` moved pairs."""
    moved_by = torch.as_tensor(pair_action(group, action), device=device)  # [|G|, |G|²]
    n = group.order

    def transform(pairs: torch.Tensor):
        moved = moved_by[:, pairs].reshape(-1)  # element-major
        return moved // n, moved % n

    return transform


def harvest(
    run: ComposerRun | str | Path,
    layer: str = "hidden",
    action: str = "left",
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    device: str = "auto",
    rows_per_forward: int = 65_536,
    progress: bool = True,
) -> ActivationSource:
    """A composer layer's activations on all ``|G|²`` pairs and their transforms, ``[|G|², |G|, d]``: row ``p`` is
    pair ``p = a·|G| + b``, block ``g`` its image under ``action`` (``left``: ``(g·a, b)``, ``right``, ``conjugation``).
    ``run``: a loaded composer run or its directory. Written as an activation store when ``out`` is given (an old
    store there is replaced only once the new one is complete), else kept in memory.

    Every argument is checked before anything is loaded or created: the action, ``rows_per_forward`` (a positive
    integer), the device (``cuda`` without a GPU is refused), ``out`` (new unless ``overwrite``, writable, locked
    against a second writer for the whole harvest), then the layer on the loaded model. The store records what it
    was made from: the group (and its fingerprint), the action, the layer, the composer run, its task and
    architecture."""
    check_harvest_options(layer, action, device, rows_per_forward)
    check_new_output(out, overwrite)
    with lock(out) if out is not None and current_world().is_main else nullcontext():
        run = run if isinstance(run, ComposerRun) else load_composer(run, device=device)
        resolve_layer(run.model, layer)
        batches = composer_harvest_batches(run, layer, action, progress=progress, rows_per_forward=rows_per_forward)
        return collect(batches, out, run.group.order, overwrite=overwrite, **composer_manifest(run, layer, action))


def check_harvest_options(layer: str, action: str, device: str, rows_per_forward: int) -> None:
    """One-line errors for bad harvest arguments, before anything is loaded."""
    if not isinstance(layer, str) or not layer.strip():
        raise GroupccError(f"layer {layer!r}: expected a layer name such as hidden")
    if action not in PAIR_ACTIONS:
        raise GroupccError(f"action {action!r}: expected one of {', '.join(PAIR_ACTIONS)}")
    check_number("rows_per_forward", rows_per_forward, 1, integer=True)
    if not isinstance(device, str):
        raise GroupccError(f"device {device!r}: expected auto, cpu, cuda or cuda:N")
    resolve_device(device)


def composer_manifest(run: ComposerRun, layer: str, action: str) -> dict:
    """What a composer store records: group, action, layer, the run it comes from, and as metadata the store kind,
    the group's order and fingerprint, the run's task and architecture."""
    return {
        "group": run.config.group, "action": action, "layer": layer, "source": str(run.path.resolve()),
        "metadata": {"store_kind": COMPOSER_STORE, "task": run.config.task, "arch": run.config.architecture.arch,
                     "group_order": run.group.order, "group_fingerprint": group_fingerprint(run.group.mult_table)},
    }


def composer_harvest_batches(run, layer: str, action: str, pairs: np.ndarray | None = None, progress: bool = True, rows_per_forward: int = 65_536):
    """:func:`iter_harvest` for a loaded composer run (all ``|G|²`` pairs by default)."""
    group = run.group
    device = next(run.model.parameters()).device
    chosen = torch.as_tensor(np.arange(group.order**2) if pairs is None else pairs, device=device)
    return iter_harvest(
        run.model, layer, len(chosen), lambda idx: chosen[torch.as_tensor(idx, device=device)],
        composer_transform(group, action, device), group.order, rows_per_forward=rows_per_forward, progress=progress,
    )
