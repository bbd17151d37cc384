"""Training an SAE or a group crosscoder on activations, in memory or in a run directory.

:func:`train_dictionary` is the everyday entry point (an array, a tensor or a store in, a trained dictionary
out); :func:`fit_dictionary` trains a given :class:`DictionaryConfig` with a :class:`TrainerConfig`.

A run directory (written through :mod:`groupcc.training.runs`) holds::

    config.json            the dictionary config, the trainer config, the data and the split (a dictionary
                           record, so load_dictionary(run_dir) loads the trained dictionary)
    dictionary.safetensors the trained dictionary, input scale folded into the weights (written at the end)
    history.json           the metrics of the training batches, one entry every ``log_every`` steps (with a
                           held-out split also the held-out FVU, L0 and dead fraction: ``val_*``)
    metrics.json           {"kind": "dictionary", "training": <last history entry + wall time>,
                            "held_out": <held-out metrics at the end>, with a split}
    split.safetensors      with a split: ``train_rows`` and ``held_out_rows``, row indices into the activations
    state.safetensors      the latest training state (dictionary, Adam moments, step, history), for resume

Adam with a linear learning-rate warm-up and a linear decay to zero, a linear warm-up of the sparsity
penalty's coefficient (L1, or JumpReLU's L0), gradient-norm clipping; with ``unit_norm_decoder`` the decoder
gradient's radial part is removed before each step and the rows renormalised after it. Batch ``b`` of the data
depends only on ``(seed, b)`` and the state holds every other piece of state, so a resumed run ends with the
weights of an uninterrupted one.

**Inference threshold** (``batchtopk``, ``matryoshka``): at the end ``θ`` is calibrated
(:meth:`Dictionary.calibrate_threshold`: between the ``(n·k)``-th and ``(n·k+1)``-th largest pre-activation of
``n`` inputs, so that their mean L0 is ``k``). Without a split, on training inputs. With one, on the held-out
inputs, which stand for new inputs: on small data a dictionary memorises its training inputs, and a threshold that gives L0 = ``k`` on them
lets through about 1.6·``k`` on new ones (S4 MLP, 461 training inputs, k = 8: 13). Like the temperature of a
calibrated classifier, one number is then fitted on held-out inputs, so the held-out figures are *cross-fitted*:
the held-out orbits are halved and each half is evaluated with the threshold calibrated on the other half, so no
held-out figure uses a threshold fitted on its own inputs. The saved dictionary carries the threshold calibrated
on all held-out inputs (``dict eval`` on them then shows L0 = ``k`` by construction).

**Held-out split** (``val_fraction``): the held-out inputs are chosen before anything is fitted, and nothing is
fitted on them (``b_dec``'s initialisation and the threshold calibration read training inputs only). A row of a
crosscoder's activations holds an input's transforms ``a(g·x)`` for all ``g``, and under a group action those
are other inputs' activations: under the left action on a composer's pairs, row ``(a, b)`` holds the activations
of every ``(g·a, b)``, the rows of its orbit. Splitting rows would train on a held-out input's activation as a
block of another row, so when the dictionary reads or writes transformed blocks (a crosscoder, or an SAE with
``sae_input = "all"``) whole orbits are held out (:func:`~groupcc.training.activation_store.input_orbits`: from
the store's group and action; each row its own orbit for vision stores and plain arrays; or given as
``orbits``). An SAE on the identity block reads one activation per input, so single rows are held out.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from groupcc.crosscoders import Dictionary, DictionaryConfig, DictionaryOutput, LossTerms, dictionary_loss, evaluate_batches
from groupcc.crosscoders.batch_statistics import ONE_PROCESS, AcrossRanks
from groupcc.crosscoders.config import BATCH_THRESHOLD_SPARSITIES
from groupcc.crosscoders.losses import residual
from groupcc.crosscoders.metrics import MetricsAccumulator, accumulate
from groupcc.errors import GroupccError
from groupcc.groups import Group, GroupError, get_group
from groupcc.groups.limits import memory_refusal

from .activation_store import (ActivationSource, ActivationStore, RowSubset, as_activation_source, dictionary_input,
                               input_orbits, reads_transformed_blocks, split_rows)
from .devices import flushing_subnormals, resolve_device
from .distributed import World, current_world
from .dictionary_files import FORMAT as DICTIONARY_FORMAT
from .dictionary_files import SPLIT_FILE, dictionary_record, read_dictionary_record, write_dictionary_files
from .progress import progress_bar
from .runs import (CONFIG, HISTORY, STATE, InterruptFlag, TrainingInterrupted, check_replaceable, load_state, open_run, save_state,
                   update_metrics, write_json, write_safetensors)

#: Inputs per step when none is given (fewer when the data has fewer inputs).
DEFAULT_BATCH_SIZE = 1024
# Trainer fields that do not change the trained weights: a run may be resumed with other values.
RESUMABLE_CHANGES = {"device", "log_every", "checkpoint_every", "val_log_rows"}
#: Rows per forward pass when evaluating held-out inputs and calibrating thresholds.
EVAL_CHUNK_ROWS = 1024
#: Copies of a dictionary's weights that training holds: the weights, their gradients and Adam's two moments.
TRAINING_COPIES = 4


class TrainingError(GroupccError):
    """Bad trainer settings, non-finite activations, or a run directory that cannot be resumed."""


#: Upper bound of the trainer's counts (steps, batch size, intervals): anything larger is a typo, not a plan.
MAX_COUNT = 10**9


@dataclass(frozen=True)
class TrainerConfig:
    """How a dictionary is trained.

    Attributes:
        steps, batch_size: optimiser steps and inputs per step (``None``: :data:`DEFAULT_BATCH_SIZE`, or all the
            inputs when there are fewer; see :meth:`batch_size_for`).
        lr: peak Adam learning rate; ``beta1``, ``beta2``: Adam's betas.
        lr_warmup_fraction: linear warm-up from 0 over this fraction of the steps.
        lr_decay_fraction: linear decay to 0 over this last fraction of the steps.
        l1_warmup_fraction: the sparsity penalty's coefficient (L1, or JumpReLU's L0) rises linearly from 0 over
            this fraction of the steps.
        grad_clip_norm: clip the gradient norm (over all parameters) to this; 0 disables clipping.
        seed: initialisation and batch order.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``...
        log_every, checkpoint_every: steps between metrics entries and between checkpoints.
        window_shards: shards shuffled together when reading batches (see ``ActivationSource.batches``).
        init_sample_rows: training rows used to initialise ``b_dec`` and to calibrate the inference threshold
            (``batchtopk``, ``matryoshka``).
        val_fraction: hold out this fraction of the inputs (whole orbits where rows share transformed blocks)
            and report FVU, L0 and dead fraction on them; 0: no split.
        val_log_rows: held-out rows evaluated for each history entry (the final figures read all of them).
    """

    steps: int = 5000
    batch_size: int | None = None
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
    val_fraction: float = 0.0
    val_log_rows: int = 16384

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "window_shards", "init_sample_rows", "val_log_rows"):
            value = getattr(self, name)
            if name == "batch_size" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
                raise TrainingError(f"{name} = {value!r}: expected a positive integer, at most {MAX_COUNT}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise TrainingError(f"seed = {self.seed!r}: expected an integer in [0, 2^63)")
        for name in ("lr_warmup_fraction", "lr_decay_fraction", "l1_warmup_fraction", "beta1", "beta2"):
            if not 0 <= getattr(self, name) <= 1:
                raise TrainingError(f"{name} = {getattr(self, name)!r}: expected a number in [0, 1]")
        if not (self.lr > 0 and self.grad_clip_norm >= 0):
            raise TrainingError(f"lr = {self.lr!r}, grad_clip_norm = {self.grad_clip_norm!r}: expected lr > 0 and grad_clip_norm >= 0")
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, (int, float)) or not 0 <= self.val_fraction < 1:
            raise TrainingError(f"val_fraction = {self.val_fraction!r}: expected a number in [0, 1) (0: no held-out split)")

    def batch_size_for(self, n_rows: int) -> int:
        """The batch size on ``n_rows`` inputs: the one given, else ``min(DEFAULT_BATCH_SIZE, n_rows)``. An explicit
        batch larger than the inputs is an error."""
        if self.batch_size is None:
            return min(DEFAULT_BATCH_SIZE, n_rows)
        if self.batch_size > n_rows:
            raise TrainingError(f"batch_size = {self.batch_size} exceeds the {n_rows} inputs: expected at most {n_rows}")
        return self.batch_size

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
    """The trained dictionary (input scale folded in, eval mode), its metrics history, its run directory
    (``None`` when trained in memory) and, with a held-out split, the held-out metrics at the end."""

    dictionary: Dictionary
    history: list[dict]
    run_dir: Path | None
    held_out: dict | None = None


@dataclass(frozen=True)
class Split:
    """Row indices of the training and held-out inputs, the orbit label of every row and how the rows were
    grouped (``rows``, or the orbits of a group action)."""

    train_rows: np.ndarray
    held_out_rows: np.ndarray
    labels: np.ndarray
    grouped_by: str

    def held_out_halves(self, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The held-out rows in two halves of whole orbits (for cross-fitted calibration), or ``None`` when they
        form a single orbit."""
        labels = self.labels[self.held_out_rows]
        if len(np.unique(labels)) < 2:
            return None
        first, second = split_rows(labels, 0.5, seed)
        return self.held_out_rows[first], self.held_out_rows[second]

    def describe(self, val_fraction: float) -> dict:
        return {"val_fraction": val_fraction, "grouped_by": self.grouped_by, "train_inputs": len(self.train_rows),
                "held_out_inputs": len(self.held_out_rows), "file": SPLIT_FILE}


def held_out_split(source: ActivationSource, config: DictionaryConfig, trainer: TrainerConfig, orbits=None) -> Split | None:
    """The split of ``source``'s rows for ``trainer.val_fraction`` (``None`` without one): whole orbits when the
    dictionary reads or writes transformed blocks, single rows otherwise (see the module docstring). ``orbits``:
    labels ``[N]`` or a function of ``source`` giving them, instead of those :func:`input_orbits` finds."""
    if trainer.val_fraction == 0:
        return None
    if orbits is not None:
        labels, grouped_by = np.asarray(orbits(source) if callable(orbits) else orbits), "given orbits"
        if labels.shape != (source.n_rows,):
            raise TrainingError(f"orbit labels of shape {list(labels.shape)}: expected one label per row, [{source.n_rows}]")
    elif reads_transformed_blocks(config, source):
        labels, grouped_by = input_orbits(source)
    else:
        labels, grouped_by = np.arange(source.n_rows), "rows"
    train_rows, held_out_rows = split_rows(labels, trainer.val_fraction, trainer.seed)
    return Split(train_rows, held_out_rows, labels, grouped_by)


def learning_rate(step: int, trainer: TrainerConfig) -> float:
    """``lr · min(1, (t+1)/T_warm) · min(1, (T − t)/T_decay)`` at step ``t`` of ``T``, ``T_warm``/``T_decay`` the
    warm-up/decay fractions of ``T`` (a factor is 1 when its fraction is 0)."""
    return trainer.lr * _ramp(step + 1, trainer.lr_warmup_fraction * trainer.steps) * _ramp(
        trainer.steps - step, trainer.lr_decay_fraction * trainer.steps
    )


def sparsity_coefficient(step: int, trainer: TrainerConfig, config: DictionaryConfig) -> float:
    """``λ · min(1, (t+1)/T_l1)``: the sparsity penalty's coefficient (``config.sparsity_coefficient``) warms up
    linearly over ``l1_warmup_fraction`` of the steps."""
    return config.sparsity_coefficient * _ramp(step + 1, trainer.l1_warmup_fraction * trainer.steps)


def _ramp(progress: float, length: float) -> float:
    return min(1.0, progress / length) if length > 0 else 1.0


def train_dictionary(
    acts,
    kind: str = "crosscoder",
    *,
    n_features: int,
    group: str | Group | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    orbits=None,
    **options,
) -> Dictionary:
    """Train an SAE or a group crosscoder on ``acts`` and return it (in eval mode, its metrics history in
    ``.history``, its held-out metrics in ``.held_out``: ``None`` without ``val_fraction``).

    ``acts``: an array or tensor ``[N, |G|, d]`` (an SAE also takes ``[N, d]``), an activation store or its path;
    the shapes are read from it. ``group`` (a name or a :class:`Group`; a store records its own) is checked
    against the number of blocks and recorded. ``options`` are fields of :class:`DictionaryConfig` (``sparsity``,
    ``k``, ``l1_coefficient``, ``encoder_reads``, ``sae_input``...) and of :class:`TrainerConfig` (``steps``,
    ``batch_size``, ``lr``, ``seed``, ``device``, ``val_fraction``...). ``orbits`` groups the rows for the
    held-out split (see :func:`held_out_split`). Nothing is written unless ``out`` names a run directory.
    """
    source = as_activation_source(acts)
    config, trainer = dictionary_settings(source, kind, n_features=n_features, group=group, **options)
    record = {"acts": str(source.path.resolve())} if isinstance(source, ActivationStore) else {}
    result = fit_dictionary(source, config, trainer, out, resume=resume, overwrite=overwrite, progress=progress,
                            record=record, orbits=orbits)
    result.dictionary.history = result.history
    result.dictionary.held_out = result.held_out
    return result.dictionary


def dictionary_settings(source: ActivationSource, kind: str, *, n_features: int, group: str | Group | None = None,
                        **options) -> tuple[DictionaryConfig, TrainerConfig]:
    """The dictionary and trainer configs for ``source``: its width and blocks, its group, and ``options`` (fields
    of either config; an unknown name is an error naming the known ones)."""
    dictionary_fields = {f.name for f in fields(DictionaryConfig)} - {"kind", "d", "n_blocks", "n_features", "group"}
    trainer_fields = {f.name for f in fields(TrainerConfig)}
    unknown = sorted(set(options) - dictionary_fields - trainer_fields)
    if unknown:
        raise TrainingError(f"unknown option(s) {', '.join(unknown)}: expected some of {', '.join(sorted(dictionary_fields | trainer_fields))}")
    group_name = _group_name(source, group)
    config = DictionaryConfig(
        kind=kind, d=source.d, n_features=n_features, n_blocks=source.n_blocks if kind == "crosscoder" else 1, group=group_name,
        **{name: value for name, value in options.items() if name in dictionary_fields},
    )
    trainer = TrainerConfig(**{name: value for name, value in options.items() if name in trainer_fields})
    refusal = memory_refusal(f"training {config.n_features} features x {config.n_blocks} blocks x width {config.d} (weights, "
                             "gradients and Adam's two moments)", TRAINING_COPIES * config.parameter_bytes)
    if refusal:
        raise TrainingError(f"{refusal}: expected fewer features")
    return config, trainer


def _group_name(source: ActivationSource, group: str | Group | None) -> str | None:
    recorded = source.manifest.get("group") if isinstance(source, ActivationStore) else None
    if group is None and recorded is not None:  # the analysis rebuilds the group from this name: it must be one
        try:
            group = get_group(recorded)
        except GroupError:
            raise TrainingError(f"{source.label} records group {recorded!r}, which is not a group name groupcc knows: "
                                "expected a name such as S4 or D8") from None
    if group is None:
        return None
    group = get_group(group) if isinstance(group, str) else group
    if recorded not in (None, group.name):
        raise TrainingError(f"group {group.name} given, but the activation store records {recorded}: expected the same group")
    if source.n_blocks not in (1, group.order):
        raise TrainingError(f"the activations have {source.n_blocks} blocks but {group.name} has {group.order} elements: "
                            "expected one block per group element")
    return group.name


def fit_dictionary(
    source: ActivationSource,
    config: DictionaryConfig,
    trainer: TrainerConfig,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    record: dict | None = None,
    on_step: Callable[[int], None] | None = None,
    orbits=None,
) -> TrainingResult:
    """Train ``config``'s dictionary on ``source``; with ``run_dir``, in that run directory (see the module
    docstring), else in memory.

    ``resume`` continues from the state saved in ``run_dir`` (the configs must match, apart from
    ``RESUMABLE_CHANGES``); ``overwrite`` replaces an existing run once the new one is complete. ``record``
    (JSON-able) is added to ``config.json``. ``on_step(step)`` is called after every completed step (e.g. to
    time steps or stop early). With ``trainer.val_fraction``, inputs are held out (:func:`held_out_split`;
    ``orbits`` groups the rows) and evaluated in the history and at the end.

    **Data parallelism** (under ``torchrun``, see :mod:`groupcc.training.distributed`): every rank trains on its
    share of each global batch of ``batch_size`` inputs (the one-process batch, split in row order), gradients are
    averaged by ``DistributedDataParallel``, and what spans the batch (BatchTopK's selection and moving threshold,
    dead-latent counts, hence AuxK; the logged metrics) is reduced over the ranks, so a run follows the
    one-process run with the same global batch up to rounding. Every rank starts from the same weights (same
    seed) and, resuming, from the same saved state; rank 0 alone writes the run. The world size is recorded
    (``world_size`` in ``config.json`` and the metrics); a run may be resumed with any world size that divides the
    batch size.
    """
    world = current_world()
    device = resolve_device(trainer.device)
    if run_dir is not None and overwrite and not resume:  # replace an earlier dictionary run only, never another run or folder
        check_replaceable(run_dir, True, CONFIG, "dictionary run", kind=DICTIONARY_FORMAT)
    split = held_out_split(source, config, trainer, orbits)
    data = dictionary_input(source if split is None else RowSubset(source, split.train_rows), config)
    held_out = None if split is None else HeldOut.of(source, split, config, trainer.seed)
    batch_size = trainer.batch_size_for(data.n_rows)
    if batch_size % world.size:
        raise TrainingError(f"batch size {batch_size} is not divisible by the {world.size} ranks: expected a multiple of {world.size}")
    run_record = {"trainer": trainer.to_dict(), "data": dictionary_input(source, config).describe(),
                  **({"split": split.describe(trainer.val_fraction)} if split else {}), "world_size": world.size,
                  **(record or {})}
    fit = _Fit(data, held_out, config, trainer, batch_size, device, world, run_record, progress and world.is_main, on_step)
    if run_dir is None:
        return fit.run(None, None)
    with ExitStack() as stack:
        directory = None
        try:
            if world.is_main:  # the others read a resumed state from the run and write nothing
                directory = stack.enter_context(open_run(run_dir, overwrite=overwrite, resume=resume, what="dictionary run"))
                _start_run(directory, config, trainer, split, resume)
        except (GroupccError, OSError) as err:
            world.agree(err)
        world.agree(None)
        state_file = directory / STATE if directory is not None else (Path(run_dir) / STATE if resume else None)
        result = fit.run(directory, state_file)
    return TrainingResult(result.dictionary, result.history, Path(run_dir), result.held_out)


def _start_run(directory: Path, config: DictionaryConfig, trainer: TrainerConfig, split: Split | None, resume: bool) -> None:
    if resume:
        _check_resumable(directory, config, trainer)
    if split is not None:
        write_safetensors(directory / SPLIT_FILE, {"train_rows": torch.from_numpy(split.train_rows),
                                                   "held_out_rows": torch.from_numpy(split.held_out_rows)})


def adam(dictionary: Dictionary, trainer: TrainerConfig, device: torch.device) -> torch.optim.Adam:
    """Adam with the trainer's learning rate and betas; the fused implementation on the CPU and CUDA (one kernel
    for all the updates: 6x faster than the per-tensor loop on a 4096 x 3072 crosscoder decoder on the CPU)."""
    fused = device.type in ("cpu", "cuda")
    return torch.optim.Adam(dictionary.parameters(), lr=trainer.lr, betas=(trainer.beta1, trainer.beta2), fused=fused)


@dataclass(frozen=True)
class HeldOut:
    """The held-out inputs as the dictionary reads them, and their two halves (``None``: a single orbit)."""

    inputs: ActivationSource
    halves: tuple[ActivationSource, ActivationSource] | None

    @classmethod
    def of(cls, source: ActivationSource, split: Split, config: DictionaryConfig, seed: int) -> "HeldOut":
        def view(rows: np.ndarray) -> ActivationSource:
            return dictionary_input(RowSubset(source, rows), config)

        halves = split.held_out_halves(seed)
        return cls(view(split.held_out_rows), None if halves is None else (view(halves[0]), view(halves[1])))

    def metrics(self, dictionary: Dictionary, max_rows: int | None = None):
        """Metrics of the first ``max_rows`` held-out inputs (all by default) at the dictionary's threshold."""
        return evaluate_batches(dictionary, self.inputs.chunks(EVAL_CHUNK_ROWS, max_rows))

    def cross_fitted_metrics(self, dictionary: Dictionary):
        """Metrics of all held-out inputs, each half evaluated with the threshold calibrated on the other half;
        then the threshold calibrated on all of them is set."""
        config = dictionary.config
        accumulator = MetricsAccumulator(config.n_blocks, config.d, config.n_features)
        for calibrate_on, evaluate_on in (self.halves, self.halves[::-1]):
            dictionary.calibrate_threshold(calibrate_on.chunks(EVAL_CHUNK_ROWS), calibrate_on.n_rows)
            accumulate(dictionary, evaluate_on.chunks(EVAL_CHUNK_ROWS), accumulator)
        dictionary.calibrate_threshold(self.inputs.chunks(EVAL_CHUNK_ROWS), self.inputs.n_rows)
        return accumulator.result()


@dataclass(frozen=True)
class _Fit:
    """One training run's fixed settings; :meth:`run` trains, in a run directory or in memory."""

    data: ActivationSource
    held_out: HeldOut | None
    config: DictionaryConfig
    trainer: TrainerConfig
    batch_size: int
    device: torch.device
    world: World
    run_record: dict
    progress: bool
    on_step: Callable[[int], None] | None

    def run(self, directory: Path | None, state_file: Path | None) -> TrainingResult:
        """Train from the state in ``state_file`` when there is one; write the run into ``directory`` (rank 0)."""
        config, trainer, world = self.config, self.trainer, self.world
        dictionary = Dictionary(config, seed=trainer.seed)
        dictionary.initialise_from_data(self.data.sample(trainer.init_sample_rows, trainer.seed), self.data.mean_norm)
        dictionary.to(self.device).train()
        optimizer = adam(dictionary, trainer, self.device)
        step, history = 0, []
        if state_file is not None and state_file.is_file():
            saved = load_state(state_file, dictionary, optimizer)
            step, history = saved["step"], saved["history"]
        if directory is not None:
            write_json(directory / "config.json", dictionary_record(config, self.run_record))
        model = dictionary
        if world.distributed:
            dictionary.batch_statistics = AcrossRanks()
            # buffers (dead counts, threshold) stay equal through the reductions: no need to broadcast them
            model = DistributedDataParallel(dictionary, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                            forward_sync_buffers=False)
        try:
            step, history, elapsed = self._loop(model, dictionary, optimizer, step, history, directory)
        finally:
            dictionary.batch_statistics = ONE_PROCESS
        return self._finish(dictionary, history, elapsed, directory)

    def _loop(self, model, dictionary: Dictionary, optimizer, step: int, history: list, directory: Path | None):
        trainer, world = self.trainer, self.world
        batches = self.data.batches(self.batch_size, trainer.seed, start_batch=step, window_shards=trainer.window_shards,
                                    part=(world.rank, world.size))
        started = time.perf_counter()
        with InterruptFlag() as interrupt, flushing_subnormals(), progress_bar(total=trainer.steps, initial=step, enabled=self.progress,
                                                        desc=f"{self.config.kind} ({self.config.sparsity})") as bar:
            while step < trainer.steps:
                batch = next(batches).to(self.device, non_blocking=True)
                output, terms, grad_norm = _train_step(model, dictionary, optimizer, batch, step, trainer)
                step += 1
                bar.update()
                if step % trainer.log_every == 0 or step == trainer.steps:
                    entry = _log_entry(dictionary, batch, output, terms, grad_norm, step, trainer, time.perf_counter() - started)
                    if self.held_out is not None and world.is_main:
                        metrics = self.held_out.metrics(dictionary, trainer.val_log_rows)
                        entry.update(val_fvu=metrics.fvu, val_l0=metrics.l0, val_dead_fraction=metrics.dead_fraction)
                    history.append(entry)
                    bar.set_postfix(fvu=f"{entry.get('val_fvu', entry['fvu']):.3f}", l0=f"{entry.get('val_l0', entry['l0']):.1f}", refresh=False)
                # a signal reaches the ranks at different steps: all stop at the first step any rank saw it
                stop = interrupt.raised if not world.distributed else bool(
                    dictionary.batch_statistics.any(torch.tensor([interrupt.raised], device=self.device)).item())
                if directory is not None and (stop or step % trainer.checkpoint_every == 0 or step == trainer.steps):
                    save_state(directory / STATE, dictionary, optimizer, {"step": step, "history": history})
                    write_json(directory / HISTORY, history)
                if stop:
                    raise TrainingInterrupted(step)
                if self.on_step is not None:
                    self.on_step(step)
        return step, history, time.perf_counter() - started

    def _finish(self, dictionary: Dictionary, history: list, elapsed: float, directory: Path | None) -> TrainingResult:
        """Calibrate, evaluate the held-out inputs, fold the input scale and (``directory``) write the results."""
        final = {**history[-1], "wall_time_s": round(elapsed, 3), "batch_size": self.batch_size,
                 "world_size": self.world.size} if history else {}
        held_out_metrics = _calibrate_and_evaluate(dictionary.eval(), self.data, self.held_out, self.trainer)
        if self.config.sparsity in BATCH_THRESHOLD_SPARSITIES:
            final["calibrated_threshold"] = dictionary.threshold.item()
        exported = dictionary.fold_input_scale().eval()
        held_out_summary = None if held_out_metrics is None else held_out_metrics.summary()
        if directory is not None:
            write_dictionary_files(exported, directory, {**self.run_record, "folded_input_scale": dictionary.input_scale.item()})
            update_metrics(directory, "dictionary", training=final, **({"held_out": held_out_summary} if held_out_summary else {}))
        return TrainingResult(exported, history, directory, held_out_summary)


def _calibrate_and_evaluate(dictionary: Dictionary, data: ActivationSource, held_out: HeldOut | None, trainer: TrainerConfig):
    """Calibrate the inference threshold (``batchtopk``, ``matryoshka``; see the module docstring) and return the
    held-out metrics (``None`` without a split)."""
    if dictionary.config.sparsity not in BATCH_THRESHOLD_SPARSITIES:
        return None if held_out is None else held_out.metrics(dictionary)
    if held_out is not None and held_out.halves is not None:
        return held_out.cross_fitted_metrics(dictionary)
    dictionary.calibrate_threshold(data.sample_chunks(trainer.init_sample_rows, trainer.seed, EVAL_CHUNK_ROWS), trainer.init_sample_rows)
    return None if held_out is None else held_out.metrics(dictionary)


def _train_step(
    model: torch.nn.Module, dictionary: Dictionary, optimizer: torch.optim.Optimizer, batch: torch.Tensor, step: int,
    trainer: TrainerConfig,
) -> tuple[DictionaryOutput, LossTerms, torch.Tensor | None]:
    """One step; ``model`` is ``dictionary`` or, under data parallelism, its ``DistributedDataParallel`` wrapper
    (whose backward averages the gradients over the ranks)."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step, trainer)
    output = model(batch)
    terms = dictionary_loss(dictionary, batch, output, sparsity_coefficient(step, trainer, dictionary.config))
    if not torch.isfinite(terms.total):  # one scalar, not the whole batch: NaN or inf anywhere in it reach the loss
        if not torch.isfinite(batch).all():
            raise TrainingError(f"the activations of the batch of step {step} contain NaN or inf: expected finite values")
        raise TrainingError(f"the loss of step {step} is {terms.total.item()}: expected a finite loss (training diverged; try a smaller lr)")
    optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    dictionary.remove_parallel_decoder_gradient()
    grad_norm = torch.nn.utils.clip_grad_norm_(dictionary.parameters(), trainer.grad_clip_norm) if trainer.grad_clip_norm else None
    optimizer.step()
    dictionary.constrain()
    dictionary.record_batch(output.codes)
    return output, terms, grad_norm


@torch.no_grad()
def _log_entry(
    dictionary: Dictionary, batch: torch.Tensor, output: DictionaryOutput, terms: LossTerms,
    grad_norm: torch.Tensor | None, step: int, trainer: TrainerConfig, elapsed: float,
) -> dict:
    """Metrics of the step's (global) batch: losses, FVU ``Σ‖s(a − â)‖² / Σ‖s(a − ā)‖²``, L0, dead fraction...
    Under data parallelism the sums run over every rank's share and the losses are averaged over the ranks (equal
    shares: the global batch means)."""
    batch_total = dictionary.batch_statistics.total
    ranks = dictionary.batch_statistics.size
    scaled = (batch * dictionary.input_scale).flatten(1)
    n_inputs = batch_total(scaled.new_tensor(float(len(scaled))))
    mean = batch_total(scaled.sum(0)) / n_inputs
    variance = batch_total((scaled - mean).pow(2).sum())
    entry = {
        "step": step,
        "lr": learning_rate(step - 1, trainer),
        "sparsity_coefficient": sparsity_coefficient(step - 1, trainer, dictionary.config),
        "loss": (batch_total(terms.total.detach()) / ranks).item(),
        **{name: (batch_total(value.detach()) / ranks).item() for name, value in terms.parts.items()},
        "fvu": (batch_total(residual(dictionary, batch, output).detach().pow(2).sum()) / variance).item(),
        "l0": (batch_total(output.codes.l0().float().sum()) / n_inputs).item(),
        "dead_fraction": dictionary.dead_latents().float().mean().item(),
        "elapsed_s": round(elapsed, 3),
    }
    if grad_norm is not None:
        entry["grad_norm"] = grad_norm.item()
    if dictionary.config.sparsity in BATCH_THRESHOLD_SPARSITIES:
        entry["threshold"] = dictionary.threshold.item()
    if dictionary.config.sparsity == "jumprelu":
        entry["mean_threshold"] = dictionary.threshold.mean().item()
    return entry


def _check_resumable(run_dir: Path, config: DictionaryConfig, trainer: TrainerConfig) -> None:
    """Resuming needs the settings the run was started with (apart from ``RESUMABLE_CHANGES``)."""
    if not (run_dir / "config.json").is_file():
        return  # nothing was saved yet: a fresh start
    saved = read_dictionary_record(run_dir)
    before = _settings(saved["dictionary"], saved.get("trainer", {}))
    now = _settings(config.to_dict(), trainer.to_dict())
    for key in sorted(set(before) | set(now)):
        if key.split(".", 1)[1] not in RESUMABLE_CHANGES and before.get(key) != now.get(key):
            raise TrainingError(
                f"cannot resume {str(run_dir)!r}: {key} was {before.get(key)!r}, now {now.get(key)!r}; expected the same settings"
            )


def _settings(dictionary: dict, trainer: dict) -> dict:
    return {**{f"dictionary.{key}": value for key, value in dictionary.items()}, **{f"trainer.{key}": value for key, value in trainer.items()}}
