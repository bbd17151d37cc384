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

import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm.auto import tqdm

from groupcc.errors import GroupccError

from groupcc.groups import Group, get_group, parse_word

from .composers import ComposerArchitecture, build_composer
from .run_files import atomic_save_safetensors, atomic_write_json, prepare_run_dir, read_json, resolve_device

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


def _optimizer_tensors(model, optimizer) -> dict[str, torch.Tensor]:
    names = {id(p): name for name, p in model.named_parameters()}
    out = {}
    for param, state in optimizer.state.items():
        for key, value in state.items():
            out[f"optim.{names[id(param)]}.{key}"] = torch.as_tensor(value).detach().clone()
    return out


def _load_optimizer_tensors(model, optimizer, tensors: dict[str, torch.Tensor]) -> None:
    for name, param in model.named_parameters():
        state = {key.rsplit(".", 1)[1]: value for key, value in tensors.items() if key.startswith(f"optim.{name}.")}
        if state:
            optimizer.state[param] = {k: v.to(param.device) if k != "step" else v for k, v in state.items()}


def checkpoint_epochs(epochs: int, count: int) -> list[int]:
    """``count`` roughly log-spaced epochs in ``[1, epochs]``, always including the last."""
    spaced = np.unique(np.geomspace(1, epochs, num=max(count, 1)).round().astype(int))
    return sorted(set(spaced.tolist()) | {epochs})


class _InterruptFlag:
    """Turns SIGTERM into a flag the training loop checks, so the state is saved before exiting."""

    def __init__(self):
        self.raised = False

    def __enter__(self):
        self._previous = signal.getsignal(signal.SIGTERM)
        try:
            signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not in the main thread
            self._previous = None
        return self

    def _handle(self, *_):
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def train_composer(
    config: ComposerTrainingConfig,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    save_every_seconds: float = 60.0,
    stop_after_epochs: int | None = None,
) -> dict:
    """Train a composer into ``out_dir`` and return its final metrics.

    ``resume`` continues an interrupted run from ``state.safetensors`` (the config on disk is used);
    ``overwrite`` replaces an existing run. ``stop_after_epochs`` stops early (as if interrupted) after that
    many epochs in total; it exists to test resuming.
    """
    out = Path(out_dir)
    if resume and (out / "config.json").exists():
        config = load_training_config(out)
    else:
        prepare_run_dir(out, overwrite=overwrite, resume=resume)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = build_composer(config.architecture).to(device)
    optimizer = _optimizer(model, config)
    start_epoch, history = 0, []
    split = None
    if (out / "state.safetensors").exists():
        start_epoch, history, split = _restore(out, model, optimizer)
    data = ComposerData.build(config, device, split)
    if start_epoch == 0:
        (out / "checkpoints").mkdir(exist_ok=True)
        atomic_write_json(out / "config.json", config.to_dict())
        atomic_save_safetensors(out / "split.safetensors", {"train": data.train.cpu(), "test": data.test.cpu()})
    train_a, train_b, train_y = data.subset(data.train)
    test_a, test_b, test_y = data.subset(data.test)
    checkpoints = set(checkpoint_epochs(config.epochs, config.n_checkpoints))
    interval = config.evaluation_interval
    last_save = time.monotonic()
    started = time.monotonic()
    bar = tqdm(total=config.epochs, initial=start_epoch, disable=not progress, desc=f"{config.group} {config.architecture.arch}", unit="ep")
    epoch = start_epoch
    with _InterruptFlag() as interrupt:
        try:
            while epoch < config.epochs:
                loss = float64_cross_entropy(model(train_a, train_b), train_y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                epoch += 1
                bar.update(1)
                if epoch % interval == 0 or epoch == config.epochs:
                    record = _evaluate(model, loss, test_a, test_b, test_y, epoch)
                    history.append(record)
                    bar.set_postfix(train=f"{record['train_loss']:.2e}", test=f"{record['test_loss']:.2e}", acc=f"{record['test_accuracy']:.3f}")
                if epoch in checkpoints:
                    atomic_save_safetensors(out / "checkpoints" / f"epoch_{epoch:07d}.safetensors", _weights(model))
                stopping = interrupt.raised or (stop_after_epochs is not None and epoch >= stop_after_epochs)
                if stopping or time.monotonic() - last_save > save_every_seconds:
                    _save_state(out, model, optimizer, epoch, history)
                    last_save = time.monotonic()
                if stopping:
                    break
        except KeyboardInterrupt:
            _save_state(out, model, optimizer, epoch, history)
            bar.close()
            raise
    bar.close()
    if epoch < config.epochs:
        return {"epochs_done": epoch, "interrupted": True}
    _save_state(out, model, optimizer, epoch, history)
    atomic_save_safetensors(out / "model.safetensors", _weights(model))
    metrics = dict(history[-1])
    metrics.update(
        epochs_done=epoch,
        wall_time_s=round(time.monotonic() - started, 2),
        device=str(device),
        train_accuracy=_accuracy(model, train_a, train_b, train_y),
    )
    atomic_write_json(out / "history.json", history)
    atomic_write_json(out / "metrics.json", {"training": metrics})
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
    tensors = _weights(model) | {k: v.cpu().contiguous() for k, v in _optimizer_tensors(model, optimizer).items()}
    atomic_save_safetensors(out / "state.safetensors", tensors, metadata={"epoch": str(epoch)})
    atomic_write_json(out / "history.json", history)


def _restore(out: Path, model, optimizer):
    from safetensors import safe_open

    path = out / "state.safetensors"
    try:
        with safe_open(str(path), framework="pt") as handle:
            epoch = int(handle.metadata()["epoch"])
        tensors = load_file(str(path))
        split = load_file(str(out / "split.safetensors"))
    except Exception as err:  # noqa: BLE001 - any failure here means a damaged run directory
        raise GroupccError(f"cannot resume from {str(out)!r}: damaged state ({type(err).__name__}: {err})") from None
    model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("optim.")})
    _load_optimizer_tensors(model, optimizer, tensors)
    history = read_json(out / "history.json") if (out / "history.json").exists() else []
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
        self.model.load_state_dict(load_file(str(path)))


def load_composer_run(run_dir: str | Path, device: str = "cpu", weights: str = "model.safetensors") -> ComposerRun:
    """Reload a run (final weights by default) without retraining; errors name what is missing."""
    path = Path(run_dir)
    if not path.is_dir():
        raise GroupccError(f"composer run directory {str(path)!r} does not exist")
    config = load_training_config(path)
    for needed in (weights, "split.safetensors"):
        if not (path / needed).exists():
            raise GroupccError(f"{str(path)!r} has no {needed}: the run did not finish (resume it with --resume)")
    model = build_composer(config.architecture)
    try:
        model.load_state_dict(load_file(str(path / weights)))
        split = load_file(str(path / "split.safetensors"))
    except Exception as err:  # noqa: BLE001
        raise GroupccError(f"{str(path)!r}: cannot load {weights} ({type(err).__name__}: {err})") from None
    model.eval()
    torch_device = resolve_device(device)
    model.to(torch_device)
    data = ComposerData.build(config, torch_device, (split["train"], split["test"]))
    return ComposerRun(path, config, model, data)

