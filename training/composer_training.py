"""Training composers as in the paper: AdamW (lr 1e-3, weight decay 1, betas 0.9/0.98), full batch,
cross-entropy in float64, a random train/test split of all ``|G|²`` pairs.

A run directory holds:
- ``config.json``: group, task, architecture and training settings (enough to rebuild everything);
- ``split.safetensors``: the train and test pair indices (pair ``(a, b)`` has index ``a·|G| + b``);
- ``checkpoints/epoch_<epoch, 7 digits>.safetensors``: weights at log-spaced epochs (progress measures);
- ``state.safetensors``: weights + optimiser moments + epoch, saved periodically and on interrupt, for resume;
- ``model.safetensors``: the final weights;
- ``history.json``: train/test loss and accuracy over training;
- ``metrics.json``: final training metrics (``groupcc composer eval`` adds the interpretability metrics).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from groupcc.errors import GroupccError

from groupcc.groups import Group, get_group, parse_word
from groupcc.groups.limits import array_bytes, memory_refusal

from .composers import ComposerArchitecture, SeedBatch, build_composer
from .devices import flushing_subnormals, resolve_device
from .progress import progress_bar
from .runs import (
    CONFIG,
    HISTORY,
    STATE,
    InterruptFlag,
    TrainingInterrupted,
    check_replaceable,
    group_fingerprint,
    load_state,
    make_directory,
    open_run,
    read_json,
    read_safetensors,
    save_state,
    update_metrics,
    write_json,
    write_safetensors,
)

#: The paper's train fraction and epochs per group: {group: {arch: (train_frac, epochs)}}.
PAPER_SETTINGS = {
    "C113": {"mlp": (0.3, 250_000), "transformer": (0.3, 50_000)},
    "C118": {"mlp": (0.3, 250_000), "transformer": (0.3, 50_000)},
    "D59": {"mlp": (0.3, 250_000), "transformer": (0.3, 100_000)},
    "D61": {"mlp": (0.3, 250_000), "transformer": (0.3, 100_000)},
    "S5": {"mlp": (0.4, 250_000), "transformer": (0.6, 50_000)},
    "S6": {"mlp": (0.25, 250_000), "transformer": (0.4, 20_000)},
    "A5": {"mlp": (0.5, 250_000), "transformer": (0.6, 250_000)},
}
MAX_EPOCHS = 10**9
#: Groups up to this order that are not in the paper's table get :func:`small_group_settings`.
SMALL_GROUP_ORDER = 60
#: Defaults for larger groups not in the paper's table.
DEFAULT_SETTINGS = {"mlp": (0.4, 50_000), "transformer": (0.5, 20_000)}
#: Early stopping for the groups outside the paper's table (the paper's own runs train every epoch).
DEFAULT_PATIENCE = 1000


def small_group_settings(order: int, arch: str) -> dict:
    """Training settings under which small groups (order <= :data:`SMALL_GROUP_ORDER`) learn the product, not just
    their training pairs, measured in the README's table of small groups.

    With the paper's settings they fit only their training pairs: a held-out pair ``(a, b) → c`` has the one answer
    that no other pair of row ``a`` or column ``b`` of the Latin square has, so the part of the logits that depends on
    ``a`` and ``b`` separately pushes ``c`` down, and with few pairs the interaction that carries the product does not
    outweigh it (:func:`groupcc.eval.composer_metrics.held_out_margins`); test accuracy stays near 0, not chance.
    More of the pairs for training (95 % up to order 15, 90 % up to 30, 70 % up to 60: below order 16 a test pair's
    row and column are pushed away from its answer by more of their training pairs, and at 90 % C9, C11, C13, D5
    and the D7 Transformer still memorised) and a 10x larger learning rate (weight decay acts at rate ``lr · wd``,
    so grokking comes ~10x sooner) make them generalise within a few thousand epochs, and early stopping ends the
    run once the test loss has settled."""
    train_frac = 0.95 if order <= 15 else 0.9 if order <= 30 else 0.7
    return {"train_frac": train_frac, "lr": 1e-2, "epochs": 20_000 if arch == "mlp" else 10_000, "patience": DEFAULT_PATIENCE}


@dataclass
class ComposerTrainingConfig:
    """Everything that defines a composer run (written to ``config.json``)."""

    group: str
    architecture: ComposerArchitecture
    task: str = "a*b"
    train_frac: float = 0.4
    epochs: int = 50_000
    lr: float = 1e-3
    weight_decay: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    seed: int = 1
    n_checkpoints: int = 40
    eval_every: int = 0  # 0: about 500 evaluations over the run (at least 20 per patience window)
    patience: int = 0  # early stopping, see converged(); 0 trains every epoch
    device: str = "auto"
    kind: str = field(default="composer", init=False)

    def __post_init__(self):
        def number(name, low, high, low_open=False, high_open=False, integer=False):
            value = getattr(self, name)
            kinds = (int,) if integer else (int, float)
            ok = not isinstance(value, bool) and isinstance(value, kinds) and math.isfinite(value)
            ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
            if not ok:
                bounds = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
                raise GroupccError(f"{name} must be {'an integer' if integer else 'a finite number'} in {bounds}, got {value!r}")

        number("train_frac", 0, 1, low_open=True, high_open=True)
        number("epochs", 1, MAX_EPOCHS, integer=True)
        number("lr", 0, 10, low_open=True)
        number("weight_decay", 0, 1e3)
        number("seed", 0, 2**63 - 1, integer=True)
        number("n_checkpoints", 1, 10_000, integer=True)
        number("eval_every", 0, MAX_EPOCHS, integer=True)
        number("patience", 0, MAX_EPOCHS, integer=True)
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else ()
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas):
            raise GroupccError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise GroupccError(f"unknown device {self.device!r}: expected auto, cpu, cuda or cuda:N")
        parse_word(self.task)

    @property
    def training_bytes(self) -> int:
        """Memory of full-batch training, its largest arrays: the float64 logits of all ``|G|²`` pairs ``[|G|², |G|]``,
        their gradient and the cross-entropy's softmax (three copies)."""
        order = self.architecture.n_elements
        return array_bytes((3, order**2, order), 8)

    @property
    def evaluation_interval(self) -> int:
        if self.eval_every:
            return self.eval_every
        interval = max(1, self.epochs // 500)
        return max(1, min(interval, self.patience // 20)) if self.patience else interval

    def to_dict(self) -> dict:
        """The config as ``config.json`` holds it, with the group's multiplication-table fingerprint, so that a
        record edited to name another group of the same order is noticed (:func:`load_training_config`)."""
        out = asdict(self)
        out["architecture"] = self.architecture.to_dict()
        out["group_fingerprint"] = group_fingerprint(get_group(self.group).mult_table)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "ComposerTrainingConfig":
        data = dict(data)
        data.pop("kind", None)
        data.pop("group_fingerprint", None)
        # Runs written before the init option existed were drawn with what is now the "legacy" init.
        data["architecture"] = ComposerArchitecture(**{"init": "legacy", **data["architecture"]})
        data["betas"] = tuple(data["betas"])
        return cls(**data)


def default_config(group: str, arch: str = "mlp", **overrides) -> ComposerTrainingConfig:
    """The paper's settings when the group is in its table (see :data:`PAPER_SETTINGS`; every epoch trained, as
    the paper does), :func:`small_group_settings` for other groups up to order :data:`SMALL_GROUP_ORDER`, else
    :data:`DEFAULT_SETTINGS` (both with early stopping); keyword arguments override them (``None`` values are
    ignored)."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    group_obj = get_group(group)
    if group_obj.order < 2:
        raise GroupccError(f"group {group!r} has {group_obj.order} element: a composer needs at least 2 "
                           f"(pairs to train on and pairs to test)")
    architecture_keys = set(ComposerArchitecture.__dataclass_fields__) - {"arch", "n_elements"}
    known = architecture_keys | {f.name for f in fields(ComposerTrainingConfig) if f.init} - {"group", "architecture"}
    if set(overrides) - known:
        raise GroupccError(f"unknown composer option(s) {', '.join(sorted(set(overrides) - known))}: expected some of {', '.join(sorted(known))}")
    arch_kwargs = {k: overrides.pop(k) for k in list(overrides) if k in architecture_keys}
    architecture = ComposerArchitecture(arch=arch, n_elements=group_obj.order, **arch_kwargs)
    if group in PAPER_SETTINGS:
        train_frac, epochs = PAPER_SETTINGS[group][arch]
        defaults = {"train_frac": train_frac, "epochs": epochs}
    elif group_obj.order <= SMALL_GROUP_ORDER:
        defaults = small_group_settings(group_obj.order, arch)
    else:
        train_frac, epochs = DEFAULT_SETTINGS[arch]
        defaults = {"train_frac": train_frac, "epochs": epochs, "patience": DEFAULT_PATIENCE}
    settings = {**defaults, **overrides}
    return ComposerTrainingConfig(group=group, architecture=architecture, **settings)


def split_pairs(n_elements: int, train_frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random train/test split of the pair indices ``a·|G| + b`` (sorted within each part), as the paper's code
    draws it: ``torch.manual_seed(seed); randperm(|G|²)``, the first ``floor(train_frac·|G|²)`` pairs train
    (at least one pair on each side)."""
    order = torch.randperm(n_elements**2, generator=torch.Generator().manual_seed(seed))
    n_train = max(1, min(n_elements**2 - 1, int(train_frac * n_elements**2)))
    return order[:n_train].sort().values, order[n_train:].sort().values


def float64_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy computed in float64 (as in the paper: float32 round-off stalls the loss near 1e-7)."""
    return F.cross_entropy(logits.double(), targets)


@dataclass
class ComposerData:
    """The task on one device: operands and answers for all pairs, and the split."""

    group: Group
    a: torch.Tensor  # [|G|²] first operand of pair p
    b: torch.Tensor
    answer: torch.Tensor  # [|G|²] index of w(a, b)
    train: torch.Tensor  # pair indices
    test: torch.Tensor

    @classmethod
    def build(cls, config: ComposerTrainingConfig, device: torch.device, split=None) -> "ComposerData":
        group = get_group(config.group)
        n = group.order
        answer = torch.as_tensor(parse_word(config.task).evaluate(group).reshape(-1), device=device)
        pairs = torch.arange(n * n, device=device)
        train, test = split if split is not None else split_pairs(n, config.train_frac, config.seed)
        return cls(group, pairs // n, pairs % n, answer, train.to(device), test.to(device))

    def subset(self, which: torch.Tensor):
        return self.a[which], self.b[which], self.answer[which]


def _optimizer(model: torch.nn.Module, config: ComposerTrainingConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=config.betas)


def converged(history: list[dict], patience: int) -> bool:
    """Early stopping: test accuracy has been 100 % at every evaluation of the last ``patience`` epochs, the test
    loss has stopped falling (its best in that window is more than half its best before it) and it is settled (its
    last value is within 2x of the window's best).

    Comparing bests, not the window's two ends, is what lets spiky runs stop: at lr 1e-2 a Transformer's loss jumps
    by orders of magnitude every few hundred epochs and falls back (S3xC2: 2e-8 -> 3e-4 -> 5e-8), so its last value is
    almost never within half of the one a window earlier, and such a run trained to its last epoch and could end on
    a spike. The "settled" test keeps a run from stopping on one. For a loss that only falls, the bests are the ends
    and this is "fell by less than half over the window" (after grokking it keeps falling for a long time under
    weight decay, ever more slowly; halving per window is where little is left to gain)."""
    if not patience or not history:
        return False
    start = history[-1]["epoch"] - patience
    before = [record for record in history if record["epoch"] <= start]
    if not before:
        return False
    window = [record for record in history if record["epoch"] > start]
    best_in_window = min(record["test_loss"] for record in window)
    return (all(record["test_accuracy"] == 1.0 for record in window) and before[-1]["test_accuracy"] == 1.0
            and best_in_window > 0.5 * min(record["test_loss"] for record in before)
            and window[-1]["test_loss"] <= 2 * best_in_window)


def checkpoint_epochs(epochs: int, count: int) -> list[int]:
    """``count`` roughly log-spaced epochs in ``[1, epochs]``, always including the last."""
    spaced = np.unique(np.geomspace(1, epochs, num=max(count, 1)).round().astype(int))
    return sorted(set(spaced.tolist()) | {epochs})


def train_composer(
    group: str,
    arch: str = "mlp",
    *,
    out: str | Path,
    seeds: list[int] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    **options,
):
    """Train a composer on ``group`` (``"S4"``, ``"D59"``...) into the run directory ``out`` and return the trained
    run. ``options``: fields of :class:`ComposerTrainingConfig` (``epochs``, ``train_frac``, ``task``, ``seed``...)
    and sizes of :class:`ComposerArchitecture` (``d_embed``...); the rest are the paper's settings for its groups
    and :func:`small_group_settings` for the others (see :func:`default_config`). Ctrl-C saves the state;
    ``resume=True`` continues it.

    With ``seeds`` (e.g. ``[1, 2, 3, 4]``) the seeds train together as one batched model
    (:func:`fit_composer_seeds`) into ``out/s<seed>``, and the list of runs is returned."""
    config = default_config(group, arch, **options)
    if resume:
        check_resume([out] if seeds is None else seed_directories(out, seeds), group, arch,
                     {k: v for k, v in options.items() if k != "seed" or seeds is None})
    if seeds is None:
        fit_composer(config, out, resume=resume, overwrite=overwrite, progress=progress)
        return load_composer(out)
    outs = seed_directories(out, seeds)
    fit_composer_seeds(config, list(seeds), outs, resume=resume, overwrite=overwrite, progress=progress)
    return [load_composer(path) for path in outs]


def check_resume(out_dirs: list[str | Path], group: str, arch: str, options: dict) -> None:
    """Refuse a resume whose explicitly given options contradict the run on disk (resume always continues the
    run's own config; silently ignoring ``epochs=50`` on a run of 250 000 would mislead)."""
    for out in out_dirs:
        if not (Path(out) / CONFIG).exists():
            continue
        stored = load_training_config(out)
        recorded = {**stored.to_dict(), **stored.architecture.to_dict(), "group": stored.group}
        for name, value in {"group": group, "arch": arch, **options}.items():
            if value is None or name not in recorded:
                continue
            have = recorded[name]
            if (list(value) if isinstance(value, tuple) else value) != (list(have) if isinstance(have, tuple) else have):
                raise GroupccError(f"cannot resume {str(out)!r} with {name}={value!r}: the run has {name}={have!r} "
                                   f"(resume continues the run's own settings; drop the option or start a new run)")


def seed_directories(parent: str | Path, seeds: list[int]) -> list[Path]:
    """``parent/s<seed>`` for each seed: where a batch of seeds is written."""
    return [Path(parent) / f"s{seed}" for seed in seeds]


def fit_composer(
    config: ComposerTrainingConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    save_every_seconds: float = 60.0,
    on_epoch: Callable[[int], None] | None = None,
) -> dict:
    """Train a composer into ``out_dir`` and return its final training metrics.

    ``resume`` continues an interrupted run from ``state.safetensors`` (the config on disk is used);
    ``overwrite`` replaces an existing run once the new one is complete. Ctrl-C or SIGTERM saves the state
    and raises :class:`TrainingInterrupted` (resume continues bit-exactly; an interrupted overwrite leaves the
    old run as it was). ``on_epoch(epoch)`` is called after every epoch.
    """
    return fit_composer_seeds(config, [config.seed], [out_dir], resume=resume, overwrite=overwrite, progress=progress,
                              save_every_seconds=save_every_seconds, on_epoch=on_epoch)[0]


def fit_composer_seeds(
    config: ComposerTrainingConfig,
    seeds: list[int],
    out_dirs: list[str | Path],
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    save_every_seconds: float = 60.0,
    on_epoch: Callable[[int], None] | None = None,
) -> list[dict]:
    """Train one composer per seed, all at once, into one run directory each (``out_dirs[i]`` for ``seeds[i]``);
    return their final training metrics.

    The seeds' weights are stacked into one :class:`~groupcc.training.composers.SeedBatch` and trained by one
    AdamW: its update is elementwise and each seed's loss depends only on its own slice, so seed ``s`` follows
    exactly the trajectory of a run of its own (same initial weights, split and updates, up to float round-off).
    Each directory is an ordinary run (state, checkpoints, history, metrics), which ``resume`` continues batched
    (all at the same epoch) or one by one. With early stopping the batch stops once every seed has converged.
    """
    if not seeds or len(seeds) != len(out_dirs) or len(set(seeds)) != len(seeds):
        raise GroupccError(f"need one output directory per distinct seed, got seeds {seeds} for {len(out_dirs)} directories")
    if len({str(Path(out).resolve()) for out in out_dirs}) != len(out_dirs):
        raise GroupccError("each seed needs its own output directory")
    if overwrite and not resume:  # replace earlier composer runs only, never another run or folder
        for out in out_dirs:
            check_replaceable(out, True, CONFIG, "composer run", kind="composer")
    resolve_device(config.device)  # a missing GPU is refused before any directory is made
    refusal = memory_refusal(f"training a composer on {config.group} (order {config.architecture.n_elements}: float64 logits "
                             "[|G|², |G|] of every pair, with their gradients)", config.training_bytes)
    if refusal:
        raise GroupccError(f"{refusal}: expected a smaller group")
    with contextlib.ExitStack() as stack:
        outs = [stack.enter_context(open_run(out, overwrite=overwrite, resume=resume, what="composer run")) for out in out_dirs]
        configs = []
        for seed, out in zip(seeds, outs):
            if resume and (out / CONFIG).exists():
                configs.append(load_training_config(out))
            else:
                configs.append(dataclasses.replace(config, seed=seed))
        if any(dataclasses.replace(c, seed=0) != dataclasses.replace(configs[0], seed=0) for c in configs):
            raise GroupccError("the runs to resume together differ in more than their seeds: resume them one by one")
        return _fit(configs, outs, progress, save_every_seconds, on_epoch)


def _fit(configs: list[ComposerTrainingConfig], outs: list[Path], progress: bool, save_every_seconds: float, on_epoch) -> list[dict]:
    config = configs[0]
    device = resolve_device(config.device)
    models, optimizers, starts, histories, splits, walls = [], [], [], [], [], []
    for seed_config, out in zip(configs, outs):
        torch.manual_seed(seed_config.seed)  # the seed's own initial weights, as a run of its own draws them
        model = build_composer(config.architecture)
        optimizer = _optimizer(model, config)
        start, history, split, wall = 0, [], None, 0.0
        if (out / STATE).exists():
            start, history, split, wall = _restore(out, model, optimizer)
        models.append(model)
        optimizers.append(optimizer)
        starts.append(start)
        histories.append(history)
        splits.append(split)
        walls.append(wall)
    if len(set(starts)) > 1:
        raise GroupccError(f"the runs to resume together stopped at different epochs {starts}: resume them one by one")
    data = [ComposerData.build(c, device, split) for c, split in zip(configs, splits)]
    start_epoch = starts[0]
    for seed_config, out, seed_data in zip(configs, outs, data):
        if start_epoch == 0:
            make_directory(out / "checkpoints")
            write_json(out / CONFIG, seed_config.to_dict())
            write_safetensors(out / "split.safetensors", {"train": seed_data.train, "test": seed_data.test})
    batch = SeedBatch(models).to(device)
    optimizer = _optimizer(batch, config)
    if start_epoch:
        optimizer.load_state_dict(_stacked_optimizer_state(optimizers))
    train_a, train_b, train_y = (torch.stack(parts) for parts in zip(*(d.subset(d.train) for d in data)))  # [S, N]
    test_a, test_b, test_y = (torch.stack(parts) for parts in zip(*(d.subset(d.test) for d in data)))
    checkpoints = set(checkpoint_epochs(config.epochs, config.n_checkpoints))
    interval = config.evaluation_interval
    last_save = started = time.monotonic()
    epoch = start_epoch
    stopped_early = all(converged(history, config.patience) for history in histories)
    label = f"{config.group} {config.architecture.arch}" + (f" ×{len(configs)} seeds" if len(configs) > 1 else "")

    def wall_time(index: int) -> float:
        """Seconds of training in this run so far, the earlier legs of a resumed run included."""
        return walls[index] + time.monotonic() - started

    def save_all():
        for index, out in enumerate(outs):
            model, seed_optimizer = _seed_model(batch, optimizer, index, config)
            _save_state(out, model, seed_optimizer, epoch, histories[index], wall_time(index))

    with InterruptFlag() as interrupt, flushing_subnormals(), progress_bar(total=config.epochs, initial=start_epoch, enabled=progress,
                                                     desc=label, unit="ep") as bar:
        try:
            while epoch < config.epochs and not stopped_early:
                # The whole step, the state save and the checks run with SIGTERM only flagged, so that a save
                # never sees a half-updated model.
                losses = _seed_losses(batch(train_a, train_b), train_y)
                optimizer.zero_grad(set_to_none=True)
                losses.sum().backward()  # d(Σ_s L_s)/dθ_s = dL_s/dθ_s: each seed gets its own gradient
                optimizer.step()
                epoch += 1
                bar.update(1)
                if epoch % interval == 0 or epoch == config.epochs:
                    records = _evaluate(batch, losses, test_a, test_b, test_y, epoch)
                    for history, record in zip(histories, records):
                        history.append(record)
                    worst = max(records, key=lambda r: r["test_loss"])
                    bar.set_postfix(train=f"{worst['train_loss']:.2e}", test=f"{worst['test_loss']:.2e}", acc=f"{min(r['test_accuracy'] for r in records):.3f}", refresh=False)
                    stopped_early = all(converged(history, config.patience) for history in histories)
                if epoch in checkpoints or stopped_early:
                    for index, out in enumerate(outs):
                        write_safetensors(out / "checkpoints" / f"epoch_{epoch:07d}.safetensors", batch.seed_weights(index))
                if interrupt.raised:
                    raise TrainingInterrupted(epoch)
                if time.monotonic() - last_save > save_every_seconds:
                    save_all()
                    last_save = time.monotonic()
                if on_epoch is not None:
                    on_epoch(epoch)
        except KeyboardInterrupt:
            save_all()
            raise
    save_all()
    all_metrics = []
    with torch.no_grad():
        train_accuracy = (batch(train_a, train_b).argmax(-1) == train_y).double().mean(1)
    for index, out in enumerate(outs):
        write_safetensors(out / "model.safetensors", batch.seed_weights(index))
        metrics = dict(histories[index][-1])
        metrics.update(
            epochs_done=epoch,
            stopped_early=stopped_early,
            wall_time_s=round(wall_time(index), 2),
            device=str(device),
            train_accuracy=float(train_accuracy[index]),
        )
        if len(outs) > 1:
            metrics["trained_with_seeds"] = [c.seed for c in configs]
        write_json(out / HISTORY, histories[index])
        update_metrics(out, "composer", training=metrics)
        all_metrics.append(metrics)
    return all_metrics


def _seed_losses(logits_SNC: torch.Tensor, targets_SN: torch.Tensor) -> torch.Tensor:
    """Each seed's mean cross-entropy ``[S]``, in float64."""
    seeds, n = targets_SN.shape
    per_pair = F.cross_entropy(logits_SNC.double().flatten(0, 1), targets_SN.flatten(), reduction="none")
    return per_pair.view(seeds, n).mean(dim=1)


@torch.no_grad()
def _evaluate(batch, train_losses, test_a, test_b, test_y, epoch) -> list[dict]:
    logits = batch(test_a, test_b)
    test_losses = _seed_losses(logits, test_y) if test_y.shape[1] else torch.full((len(train_losses),), float("nan"))
    accuracy = (logits.argmax(-1) == test_y).double().mean(1)
    return [{"epoch": epoch, "train_loss": float(train_losses[s]), "test_loss": float(test_losses[s]),
             "test_accuracy": float(accuracy[s])} for s in range(len(train_losses))]


def _stacked_optimizer_state(optimizers: list[torch.optim.Optimizer]) -> dict:
    """The seeds' AdamW states (same step) as the state of one AdamW over the stacked parameters."""
    states = [optimizer.state_dict() for optimizer in optimizers]
    stacked = {}
    for index, entry in states[0]["state"].items():
        stacked[index] = {key: (value.clone() if key == "step" else torch.stack([s["state"][index][key] for s in states]))
                          for key, value in entry.items()}
    return {"state": stacked, "param_groups": states[0]["param_groups"]}


def _seed_model(batch: SeedBatch, optimizer: torch.optim.Optimizer, index: int, config: ComposerTrainingConfig):
    """Seed ``index`` as a model of its own with its slice of the optimiser state (what a run of its own saves)."""
    model = build_composer(config.architecture)
    model.load_state_dict(batch.seed_weights(index))
    seed_optimizer = _optimizer(model, config)
    state = optimizer.state_dict()
    seed_optimizer.load_state_dict({
        "state": {i: {key: (value.clone() if key == "step" else value[index].detach().cpu().clone()) for key, value in entry.items()}
                  for i, entry in state["state"].items()},
        "param_groups": state["param_groups"],
    })
    return model, seed_optimizer


def _save_state(out: Path, model, optimizer, epoch: int, history: list, wall_time_s: float) -> None:
    save_state(out / STATE, model, optimizer, {"epoch": epoch, "wall_time_s": wall_time_s})
    write_json(out / HISTORY, history)


def _restore(out: Path, model, optimizer):
    record = load_state(out / STATE, model, optimizer)
    epoch = record["epoch"]
    split = read_safetensors(out / "split.safetensors", what="split")
    history = read_json(out / HISTORY, expect=list) if (out / HISTORY).exists() else []
    history = [entry for entry in history if entry["epoch"] <= epoch]
    # States saved before wall times were recorded resume with the earlier legs' time unknown (counted as 0).
    return epoch, history, (split["train"], split["test"]), float(record.get("wall_time_s", 0.0))


# --------------------------------------------------------------------------- loading runs
def load_training_config(run_dir: str | Path) -> ComposerTrainingConfig:
    data = read_json(Path(run_dir) / "config.json", what="composer run", expect=dict)
    if data.get("kind") != "composer":
        raise GroupccError(f"{str(run_dir)!r} is not a composer run (config.json has kind {data.get('kind')!r})")
    try:
        config = ComposerTrainingConfig.from_dict(data)
    except (TypeError, KeyError) as err:
        raise GroupccError(f"{str(run_dir)!r}: config.json is not a valid composer config ({err})") from None
    recorded = data.get("group_fingerprint")  # absent in runs written before it was recorded
    if recorded is not None and recorded != group_fingerprint(get_group(config.group).mult_table):
        raise GroupccError(f"{str(run_dir)!r}: config.json names group {config.group}, but the run was trained on another "
                           "group (its multiplication-table fingerprint differs): expected the group it was trained on")
    return config


@dataclass
class ComposerRun:
    """A trained composer loaded from its run directory."""

    path: Path
    config: ComposerTrainingConfig
    model: torch.nn.Module
    data: ComposerData

    @property
    def group(self) -> Group:
        return self.data.group

    def checkpoints(self) -> list[tuple[int, Path]]:
        files = sorted((self.path / "checkpoints").glob("epoch_*.safetensors"))
        return [(int(f.stem.split("_")[1]), f) for f in files]

    def load_weights(self, path: Path) -> None:
        self.model.load_state_dict(read_safetensors(path, what="checkpoint"))


def load_composer(run_dir: str | Path, device: str = "cpu", weights: str = "model.safetensors") -> ComposerRun:
    """Reload a run (final weights by default) without retraining; errors name what is missing."""
    path = Path(run_dir)
    if not path.is_dir():
        raise GroupccError(f"composer run directory {str(path)!r} does not exist")
    config = load_training_config(path)
    for needed in (weights, "split.safetensors"):
        if not (path / needed).exists():
            raise GroupccError(f"{str(path)!r} has no {needed}: the run did not finish (resume it)")
    model = build_composer(config.architecture)
    try:
        model.load_state_dict(read_safetensors(path / weights))
        split = read_safetensors(path / "split.safetensors", what="split")
    except Exception as err:  # noqa: BLE001
        raise GroupccError(f"{str(path)!r}: cannot load {weights} ({type(err).__name__}: {err})") from None
    model.eval()
    torch_device = resolve_device(device)
    model.to(torch_device)
    data = ComposerData.build(config, torch_device, (split["train"], split["test"]))
    return ComposerRun(path, config, model, data)

