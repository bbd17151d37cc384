"""Training an SAE or a group crosscoder on a source of activations, in a run directory.

A run directory holds::

    config.json            the dictionary config, the trainer config and the data (a dictionary record, so
                           crosscoders.load_dictionary(run_dir) loads the trained dictionary)
    metrics.json           the metrics history: one dict every ``log_every`` steps
    dictionary.safetensors the trained dictionary, input scale folded into the weights (written at the end)
    checkpoints/step_N/    the latest checkpoint: dictionary, Adam state, step and history

Adam with a linear learning-rate warm-up and a linear decay to zero, a linear warm-up of the L1 coefficient,
gradient-norm clipping. Batch ``b`` of the data depends only on ``(seed, b)`` and a checkpoint holds every
other piece of state, so a resumed run ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from groupcc.crosscoders import (
    AtomicDirectory,
    Dictionary,
    DictionaryConfig,
    DictionaryOutput,
    LossTerms,
    dictionary_loss,
    load_dictionary,
    read_dictionary_record,
    write_dictionary_files,
)
from groupcc.crosscoders.io import dictionary_record
from groupcc.crosscoders.losses import residual
from groupcc.errors import GroupccError

from .activation_store import ActivationSource, source_for_dictionary
from .run_files import atomic_write_json, prepare_run_dir, read_json, resolve_device

METRICS_FILE = "metrics.json"
CHECKPOINTS = "checkpoints"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
# Trainer fields that do not change the trained weights: a run may be resumed with other values.
RESUMABLE_CHANGES = {"device", "log_every", "checkpoint_every"}


class TrainingError(GroupccError):
    """Bad trainer settings, non-finite activations, or a run directory that cannot be resumed."""


@dataclass(frozen=True)
class TrainerConfig:
    """How a dictionary is trained.

    Attributes:
        steps, batch_size: optimiser steps and inputs per step.
        lr: peak Adam learning rate; ``beta1``, ``beta2``: Adam's betas.
        lr_warmup_fraction: linear warm-up from 0 over this fraction of the steps.
        lr_decay_fraction: linear decay to 0 over this last fraction of the steps.
        l1_warmup_fraction: the L1 coefficient rises linearly from 0 over this fraction of the steps.
        grad_clip_norm: clip the gradient norm (over all parameters) to this; 0 disables clipping.
        seed: initialisation and batch order.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``...
        log_every, checkpoint_every: steps between metrics entries and between checkpoints.
        window_shards: shards shuffled together when reading batches (see ``ActivationSource.batches``).
        init_sample_rows: rows used to initialise ``b_dec``.
    """

    steps: int = 10_000
    batch_size: int = 4096
    lr: float = 3e-4
    beta1: float = 0.9
    beta2: float = 0.999
    lr_warmup_fraction: float = 0.01
    lr_decay_fraction: float = 0.2
    l1_warmup_fraction: float = 0.05
    grad_clip_norm: float = 1.0
    seed: int = 0
    device: str = "auto"
    log_every: int = 100
    checkpoint_every: int = 1000
    window_shards: int = 8
    init_sample_rows: int = 16384

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "window_shards", "init_sample_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TrainingError(f"{name} = {value!r}: expected a positive integer")
        for name in ("lr_warmup_fraction", "lr_decay_fraction", "l1_warmup_fraction", "beta1", "beta2"):
            if not 0 <= getattr(self, name) <= 1:
                raise TrainingError(f"{name} = {getattr(self, name)!r}: expected a number in [0, 1]")
        if not (self.lr > 0 and self.grad_clip_norm >= 0):
            raise TrainingError(f"lr = {self.lr!r}, grad_clip_norm = {self.grad_clip_norm!r}: expected lr > 0 and grad_clip_norm >= 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainerConfig":
        known = {field.name for field in fields(cls)}
        if set(values) - known:
            raise TrainingError(f"unknown trainer config keys {sorted(set(values) - known)}: expected some of {sorted(known)}")
        return cls(**values)


@dataclass(frozen=True)
class TrainingResult:
    """The trained dictionary (input scale folded in, eval mode), its metrics history and its run directory."""

    dictionary: Dictionary
    history: list[dict]
    run_dir: Path


def learning_rate(step: int, trainer: TrainerConfig) -> float:
    """``lr · min(1, (t+1)/T_warm) · min(1, (T − t)/T_decay)`` at step ``t`` of ``T``, ``T_warm``/``T_decay`` the
    warm-up/decay fractions of ``T`` (a factor is 1 when its fraction is 0)."""
    return trainer.lr * _ramp(step + 1, trainer.lr_warmup_fraction * trainer.steps) * _ramp(
        trainer.steps - step, trainer.lr_decay_fraction * trainer.steps
    )


def l1_coefficient(step: int, trainer: TrainerConfig, config: DictionaryConfig) -> float:
    """``λ · min(1, (t+1)/T_l1)``: the L1 coefficient warms up linearly over ``l1_warmup_fraction`` of the steps."""
    return config.l1_coefficient * _ramp(step + 1, trainer.l1_warmup_fraction * trainer.steps)


def _ramp(progress: float, length: float) -> float:
    return min(1.0, progress / length) if length > 0 else 1.0


def train_dictionary(
    source: ActivationSource,
    config: DictionaryConfig,
    trainer: TrainerConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    record: dict | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainingResult:
    """Train ``config``'s dictionary on ``source`` and save it in ``run_dir`` (see the module docstring).

    ``resume`` continues from the latest checkpoint in ``run_dir`` (the configs must match, apart from
    ``RESUMABLE_CHANGES``); without one it starts afresh. An existing non-empty ``run_dir`` is otherwise an
    error unless ``overwrite``. ``record`` (JSON-able, e.g. the command line) is added to ``config.json``.
    ``on_step(step)`` is called after every completed step. An SAE on multi-block activations treats every
    block as its own input; other shape mismatches raise :class:`groupcc.crosscoders.DictionaryError`.
    """
    device = resolve_device(trainer.device)
    data = source_for_dictionary(source, config)
    run_dir = Path(run_dir)
    checkpoint = _open_run_dir(run_dir, config, trainer, resume, overwrite)
    run_record = {"trainer": trainer.to_dict(), "data": data.describe(), **(record or {})}
    atomic_write_json(run_dir / "config.json", dictionary_record(config, run_record))

    dictionary = Dictionary(config, seed=trainer.seed)
    dictionary.initialise_from_data(data.sample(trainer.init_sample_rows, trainer.seed), data.mean_norm)
    dictionary.to(device).train()
    optimizer = torch.optim.Adam(dictionary.parameters(), lr=trainer.lr, betas=(trainer.beta1, trainer.beta2))
    step, history = load_checkpoint(checkpoint, dictionary, optimizer) if checkpoint else (0, [])

    batches = data.batches(trainer.batch_size, trainer.seed, start_batch=step, window_shards=trainer.window_shards)
    started = time.perf_counter()
    with tqdm(total=trainer.steps, initial=step, disable=not progress, desc=f"{config.kind} ({config.sparsity})") as bar:
        while step < trainer.steps:
            batch = next(batches).to(device, non_blocking=True)
            if not torch.isfinite(batch).all():
                raise TrainingError(f"the activations of the batch of step {step} contain NaN or inf: expected finite values")
            output, terms, grad_norm = _train_step(dictionary, optimizer, batch, step, trainer)
            step += 1
            bar.update()
            if step % trainer.log_every == 0 or step == trainer.steps:
                history.append(_log_entry(dictionary, batch, output, terms, grad_norm, step, trainer, time.perf_counter() - started))
                atomic_write_json(run_dir / METRICS_FILE, history)
                bar.set_postfix(fvu=f"{history[-1]['fvu']:.3f}", l0=f"{history[-1]['l0']:.1f}")
            if step % trainer.checkpoint_every == 0 or step == trainer.steps:
                save_checkpoint(run_dir, dictionary, optimizer, step, history)
            if on_step is not None:
                on_step(step)

    exported = dictionary.fold_input_scale().eval()
    write_dictionary_files(exported, run_dir, {**run_record, "folded_input_scale": dictionary.input_scale.item()})
    atomic_write_json(run_dir / METRICS_FILE, history)
    return TrainingResult(exported, history, run_dir)


def _train_step(
    dictionary: Dictionary, optimizer: torch.optim.Optimizer, batch: torch.Tensor, step: int, trainer: TrainerConfig
) -> tuple[DictionaryOutput, LossTerms, torch.Tensor | None]:
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step, trainer)
    output = dictionary(batch)
    terms = dictionary_loss(dictionary, batch, output, l1_coefficient(step, trainer, dictionary.config))
    optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(dictionary.parameters(), trainer.grad_clip_norm) if trainer.grad_clip_norm else None
    optimizer.step()
    dictionary.record_batch(output.codes)
    return output, terms, grad_norm


@torch.no_grad()
def _log_entry(
    dictionary: Dictionary, batch: torch.Tensor, output: DictionaryOutput, terms: LossTerms,
    grad_norm: torch.Tensor | None, step: int, trainer: TrainerConfig, elapsed: float,
) -> dict:
    """Metrics of the step's batch: losses, FVU ``Σ‖s(a − â)‖² / Σ‖s(a − ā)‖²``, L0, dead fraction..."""
    scaled = (batch * dictionary.input_scale).flatten(1)
    variance = (scaled - scaled.mean(0)).pow(2).sum()
    entry = {
        "step": step,
        "lr": learning_rate(step - 1, trainer),
        "l1_coefficient": l1_coefficient(step - 1, trainer, dictionary.config),
        "loss": terms.total.item(),
        **{name: value.item() for name, value in terms.parts.items()},
        "fvu": (residual(dictionary, batch, output).pow(2).sum() / variance).item(),
        "l0": output.codes.l0().float().mean().item(),
        "dead_fraction": dictionary.dead_latents().float().mean().item(),
        "elapsed_s": round(elapsed, 3),
    }
    if grad_norm is not None:
        entry["grad_norm"] = grad_norm.item()
    if dictionary.config.sparsity == "batchtopk":
        entry["threshold"] = dictionary.threshold.item()
    return entry


# ---------------------------------------------------------------------- checkpoints
def save_checkpoint(run_dir: Path, dictionary: Dictionary, optimizer: torch.optim.Optimizer, step: int, history: list[dict]) -> Path:
    """Write ``checkpoints/step_<step>/`` atomically, then remove the older checkpoints."""
    target = run_dir / CHECKPOINTS / f"step_{step:08d}"
    with AtomicDirectory(target, overwrite=True) as tmp:
        write_dictionary_files(dictionary, tmp)
        state = optimizer.state_dict()
        tensors = {f"{index}.{name}": value.detach().cpu().contiguous() for index, entries in state["state"].items() for name, value in entries.items()}
        save_file(tensors, tmp / OPTIMIZER_FILE)
        atomic_write_json(tmp / STATE_FILE, {"step": step, "param_groups": state["param_groups"], "history": history})
    for older in (run_dir / CHECKPOINTS).glob("step_*"):
        if older != target:
            shutil.rmtree(older)
    return target


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest ``checkpoints/step_*`` directory of a run, or ``None``."""
    checkpoints = sorted((Path(run_dir) / CHECKPOINTS).glob("step_*"))
    return checkpoints[-1] if checkpoints else None


def load_checkpoint(checkpoint: Path, dictionary: Dictionary, optimizer: torch.optim.Optimizer) -> tuple[int, list[dict]]:
    """Restore ``dictionary`` and ``optimizer`` in place; return the step and the metrics history."""
    dictionary.load_state_dict(load_dictionary(checkpoint).state_dict())
    state = read_json(checkpoint / STATE_FILE, what="checkpoint")
    optimizer_state: dict[int, dict] = {}
    for key, value in load_file(checkpoint / OPTIMIZER_FILE).items():
        index, name = key.split(".", 1)
        optimizer_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": optimizer_state, "param_groups": state["param_groups"]})
    return state["step"], state["history"]


def _open_run_dir(run_dir: Path, config: DictionaryConfig, trainer: TrainerConfig, resume: bool, overwrite: bool) -> Path | None:
    """The checkpoint to resume from (after checking the settings match), or ``None`` after preparing an empty run directory."""
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if checkpoint is None:
        prepare_run_dir(run_dir, overwrite=overwrite, resume=resume)
        return None
    saved = read_dictionary_record(run_dir)
    before = _settings(saved["dictionary"], saved.get("trainer", {}))
    now = _settings(config.to_dict(), trainer.to_dict())
    for key in sorted(set(before) | set(now)):
        if key.split(".", 1)[1] not in RESUMABLE_CHANGES and before.get(key) != now.get(key):
            raise TrainingError(
                f"cannot resume {str(run_dir)!r}: {key} was {before.get(key)!r}, now {now.get(key)!r}; expected the same settings"
            )
    return checkpoint


def _settings(dictionary: dict, trainer: dict) -> dict:
    return {**{f"dictionary.{key}": value for key, value in dictionary.items()}, **{f"trainer.{key}": value for key, value in trainer.items()}}
