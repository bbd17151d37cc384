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

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from groupcc.errors import GroupccError

from groupcc.groups import Group, get_group, parse_word

from .composers import ComposerArchitecture, build_composer
from .devices import resolve_device
from .progress import progress_bar
from .runs import (
    CONFIG,
    HISTORY,
    STATE,
    InterruptFlag,
    TrainingInterrupted,
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
#: Defaults for groups not in the paper's table.
DEFAULT_SETTINGS = {"mlp": (0.4, 50_000), "transformer": (0.5, 20_000)}


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
    eval_every: int = 0  # 0: about 500 evaluations over the run
    device: str = "auto"
    kind: str = field(default="composer", init=False)

    def __post_init__(self):
        if not 0.0 < self.train_frac < 1.0:
            raise GroupccError(f"train fraction must be strictly between 0 and 1, got {self.train_frac}")
        if self.epochs < 1:
            raise GroupccError(f"epochs must be >= 1, got {self.epochs}")
        parse_word(self.task)

    @property
    def evaluation_interval(self) -> int:
        return self.eval_every or max(1, self.epochs // 500)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["architecture"] = self.architecture.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "ComposerTrainingConfig":
        data = dict(data)
        data.pop("kind", None)
        data["architecture"] = ComposerArchitecture(**data["architecture"])
        data["betas"] = tuple(data["betas"])
        return cls(**data)


def default_config(group: str, arch: str = "mlp", **overrides) -> ComposerTrainingConfig:
    """The paper's settings when the group is in its table (see :data:`PAPER_SETTINGS`), else
    :data:`DEFAULT_SETTINGS`; keyword arguments override them (``None`` values are ignored)."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    group_obj = get_group(group)
    architecture_keys = set(ComposerArchitecture.__dataclass_fields__) - {"arch", "n_elements"}
    known = architecture_keys | {f.name for f in fields(ComposerTrainingConfig) if f.init} - {"group", "architecture"}
    if set(overrides) - known:
        raise GroupccError(f"unknown composer option(s) {', '.join(sorted(set(overrides) - known))}: expected some of {', '.join(sorted(known))}")
    arch_kwargs = {k: overrides.pop(k) for k in list(overrides) if k in architecture_keys}
    architecture = ComposerArchitecture(arch=arch, n_elements=group_obj.order, **arch_kwargs)
    train_frac, epochs = PAPER_SETTINGS.get(group, DEFAULT_SETTINGS).get(arch, DEFAULT_SETTINGS[arch])
    settings = {"train_frac": train_frac, "epochs": epochs, **overrides}
    return ComposerTrainingConfig(group=group, architecture=architecture, **settings)


def split_pairs(n_elements: int, train_frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random train/test split of the pair indices ``a·|G| + b`` (sorted within each part)."""
    order = torch.randperm(n_elements**2, generator=torch.Generator().manual_seed(seed))
    n_train = max(1, min(n_elements**2 - 1, int(round(train_frac * n_elements**2))))
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


def checkpoint_epochs(epochs: int, count: int) -> list[int]:
    """``count`` roughly log-spaced epochs in ``[1, epochs]``, always including the last."""
    spaced = np.unique(np.geomspace(1, epochs, num=max(count, 1)).round().astype(int))
    return sorted(set(spaced.tolist()) | {epochs})


def train_composer(
    group: str,
    arch: str = "mlp",
    *,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    **options,
) -> ComposerRun:
    """Train a composer on ``group`` (``"S4"``, ``"D59"``...) into the run directory ``out`` and return the trained
    run. ``options``: fields of :class:`ComposerTrainingConfig` (``epochs``, ``train_frac``, ``task``, ``seed``...)
    and sizes of :class:`ComposerArchitecture` (``d_embed``...); the rest are the paper's settings for its groups
    (see :func:`default_config`). Ctrl-C saves the state; ``resume=True`` continues it."""
    fit_composer(default_config(group, arch, **options), out, resume=resume, overwrite=overwrite, progress=progress)
    return load_composer(out)


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
    with open_run(out_dir, overwrite=overwrite, resume=resume, what="composer run") as out:
        if resume and (out / CONFIG).exists():
            config = load_training_config(out)
        return _fit(config, out, progress, save_every_seconds, on_epoch)


def _fit(config: ComposerTrainingConfig, out: Path, progress: bool, save_every_seconds: float, on_epoch) -> dict:
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = build_composer(config.architecture).to(device)
    optimizer = _optimizer(model, config)
    start_epoch, history, split = 0, [], None
    if (out / STATE).exists():
        start_epoch, history, split = _restore(out, model, optimizer)
    data = ComposerData.build(config, device, split)
    if start_epoch == 0:
        make_directory(out / "checkpoints")
        write_json(out / CONFIG, config.to_dict())
        write_safetensors(out / "split.safetensors", {"train": data.train, "test": data.test})
    train_a, train_b, train_y = data.subset(data.train)
    test_a, test_b, test_y = data.subset(data.test)
    checkpoints = set(checkpoint_epochs(config.epochs, config.n_checkpoints))
    interval = config.evaluation_interval
    last_save = started = time.monotonic()
    epoch = start_epoch
    with InterruptFlag() as interrupt, progress_bar(total=config.epochs, initial=start_epoch, enabled=progress,
                                                     desc=f"{config.group} {config.architecture.arch}", unit="ep") as bar:
        try:
            while epoch < config.epochs:
                # The whole step, the state save and the checks run with SIGTERM only flagged, so that a save
                # never sees a half-updated model.
                loss = float64_cross_entropy(model(train_a, train_b), train_y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                epoch += 1
                bar.update(1)
                if epoch % interval == 0 or epoch == config.epochs:
                    record = _evaluate(model, loss, test_a, test_b, test_y, epoch)
                    history.append(record)
                    bar.set_postfix(train=f"{record['train_loss']:.2e}", test=f"{record['test_loss']:.2e}", acc=f"{record['test_accuracy']:.3f}", refresh=False)
                if epoch in checkpoints:
                    write_safetensors(out / "checkpoints" / f"epoch_{epoch:07d}.safetensors", _weights(model))
                if interrupt.raised:
                    raise TrainingInterrupted(epoch)
                if time.monotonic() - last_save > save_every_seconds:
                    _save_state(out, model, optimizer, epoch, history)
                    last_save = time.monotonic()
                if on_epoch is not None:
                    on_epoch(epoch)
        except KeyboardInterrupt:
            _save_state(out, model, optimizer, epoch, history)
            raise
    _save_state(out, model, optimizer, epoch, history)
    write_safetensors(out / "model.safetensors", _weights(model))
    metrics = dict(history[-1])
    metrics.update(
        epochs_done=epoch,
        wall_time_s=round(time.monotonic() - started, 2),
        device=str(device),
        train_accuracy=_accuracy(model, train_a, train_b, train_y),
    )
    write_json(out / HISTORY, history)
    update_metrics(out, "composer", training=metrics)
    return metrics


@torch.no_grad()
def _accuracy(model, a, b, y) -> float:
    return float((model(a, b).argmax(-1) == y).double().mean()) if len(y) else float("nan")


@torch.no_grad()
def _evaluate(model, train_loss, test_a, test_b, test_y, epoch) -> dict:
    logits = model(test_a, test_b)
    return {
        "epoch": epoch,
        "train_loss": float(train_loss),
        "test_loss": float(float64_cross_entropy(logits, test_y)),
        "test_accuracy": float((logits.argmax(-1) == test_y).double().mean()),
    }


def _weights(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters()}


def _save_state(out: Path, model, optimizer, epoch: int, history: list) -> None:
    save_state(out / STATE, model, optimizer, {"epoch": epoch})
    write_json(out / HISTORY, history)


def _restore(out: Path, model, optimizer):
    epoch = load_state(out / STATE, model, optimizer)["epoch"]
    split = read_safetensors(out / "split.safetensors", what="split")
    history = read_json(out / HISTORY) if (out / HISTORY).exists() else []
    history = [record for record in history if record["epoch"] <= epoch]
    return epoch, history, (split["train"], split["test"])


# --------------------------------------------------------------------------- loading runs
def load_training_config(run_dir: str | Path) -> ComposerTrainingConfig:
    data = read_json(Path(run_dir) / "config.json", what="composer run")
    if data.get("kind") != "composer":
        raise GroupccError(f"{str(run_dir)!r} is not a composer run (config.json has kind {data.get('kind')!r})")
    try:
        return ComposerTrainingConfig.from_dict(data)
    except (TypeError, KeyError) as err:
        raise GroupccError(f"{str(run_dir)!r}: config.json is not a valid composer config ({err})") from None


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

