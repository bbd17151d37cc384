"""Harvesting a layer's activations on group-transformed inputs: ``acts[i, g] = layer(g·x_i)``, ``[N, |G|, d]``.

Works for any ``torch.nn.Module``: a forward hook on the named layer reads its output while the model runs
on a batch of inputs and all their transforms at once. A *transform* turns a batch of ``B`` inputs into the
model's arguments for all ``|G|·B`` transformed inputs, stacked element-major (all rows for ``g = 0``, then
``g = 1``, ...). For composers the transform is an index map over pairs (:func:`groupcc.groups.pair_action`).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from groupcc.errors import GroupccError

from groupcc.groups import PAIR_ACTIONS, pair_action

from .activation_store import ActivationSource, ActivationStore, ActivationStoreWriter, InMemoryActivations, StoreError
from .composer_training import ComposerRun, load_composer
from .progress import progress_bar

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
    raise GroupccError(f"layer {name!r} not found in {type(model).__name__}: expected one of {', '.join(available)}")


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
    try:
        with capture_output(module) as outputs, progress_bar(total=n_inputs, enabled=progress, desc=f"harvest {layer}", unit="input") as bar:
            for start in range(0, n_inputs, batch):
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
    store's ``group``, ``action``, ``layer``, ``source`` and ``metadata``."""
    if out is None:
        acts = [batch for batch in batches]
        if not acts:
            raise GroupccError("no inputs to harvest: expected at least one")
        return InMemoryActivations(torch.cat(acts), manifest=manifest)
    return harvest_to_store(out, batches, group_order, overwrite=overwrite, **manifest)


def check_new_output(out: str | Path | None, overwrite: bool) -> None:
    """Fail before any work when ``out`` exists and may not be replaced."""
    if out is not None and Path(out).exists() and not overwrite:
        raise StoreError(f"activation store {str(out)!r} already exists: overwrite it, or choose another path")


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
    store there is replaced only once the new one is complete), else kept in memory."""
    if action not in PAIR_ACTIONS:
        raise GroupccError(f"action {action!r}: expected one of {', '.join(PAIR_ACTIONS)}")
    if isinstance(rows_per_forward, bool) or not isinstance(rows_per_forward, int) or rows_per_forward < 1:
        raise GroupccError(f"rows_per_forward = {rows_per_forward!r}: expected a positive integer")
    check_new_output(out, overwrite)
    run = run if isinstance(run, ComposerRun) else load_composer(run, device=device)
    batches = composer_harvest_batches(run, layer, action, progress=progress, rows_per_forward=rows_per_forward)
    return collect(batches, out, run.group.order, overwrite=overwrite, group=run.config.group, action=action, layer=layer,
                   source=str(run.path.resolve()), metadata={"task": run.config.task, "arch": run.config.architecture.arch})


def composer_harvest_batches(run, layer: str, action: str, pairs: np.ndarray | None = None, progress: bool = True, rows_per_forward: int = 65_536):
    """:func:`iter_harvest` for a loaded composer run (all ``|G|²`` pairs by default)."""
    group = run.group
    device = next(run.model.parameters()).device
    chosen = torch.as_tensor(np.arange(group.order**2) if pairs is None else pairs, device=device)
    return iter_harvest(
        run.model, layer, len(chosen), lambda idx: chosen[torch.as_tensor(idx, device=device)],
        composer_transform(group, action, device), group.order, rows_per_forward=rows_per_forward, progress=progress,
    )
