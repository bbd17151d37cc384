"""Run directories: the one module that writes them.

Every run (composer, dictionary, testbed, analysis) is a directory with ``config.json`` (what was run, enough to
reload it), ``metrics.json`` (its figures, a JSON object ``{"kind": <run kind>, ...}``; see ``docs/design.md``
for each kind's sections) and safetensors files; never pickles. An activation store's ``manifest.json`` plays
both parts for the store.

- Writes are atomic: a temporary file beside the target (``.<name>.<pid>.<random>.tmp``), fsync, rename. Files
  get the permissions the umask gives (``0666 & ~umask``) and directories ``0777 & ~umask``, so colleagues on a
  shared machine can read results (``tempfile.mkstemp`` would make them ``0600``).
- JSON is strict: NaN and infinities are refused (they are not JSON).
- :func:`open_run` locks the directory against a second writer, and gives the directory to write into: a new
  one, the existing one to resume, or (``overwrite``) a staging directory beside the old run that replaces it
  only once the new run is complete. A writer's temporary files carry its process id; those of a process that
  no longer runs are removed by the next writer.
- One checkpoint format: :func:`save_state` / :func:`load_state` keep a model, its optimiser and a JSON record
  (step, history) in one safetensors file, so an interrupted run resumes bit-exactly.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from groupcc.errors import GroupccError

CONFIG = "config.json"
METRICS = "metrics.json"
HISTORY = "history.json"
STATE = "state.safetensors"
PLOTS = "plots"


class RunError(GroupccError):
    """A run directory that exists, is locked, is damaged, or cannot be written."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C or SIGTERM after saving its state at the end of step (or epoch) ``done``."""

    def __init__(self, done: int):
        super().__init__(f"interrupted after {done} steps; the state is saved")
        self.done = done


# ---------------------------------------------------------------------- temporary names
def _temporary(path: Path, suffix: str) -> Path:
    """``.<name>.<pid>.<random><suffix>`` beside ``path``: the pid tells later writers whether its owner still runs."""
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"


def _umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    current = os.umask(0o022)
    os.umask(current)
    return current


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files and directories beside ``path`` left by writers that no longer run."""
    if not path.parent.is_dir():
        return
    for candidate in path.parent.glob(f".{path.name}.*.*"):
        parts = candidate.name[len(path.name) + 2:].split(".")
        if len(parts) >= 2 and parts[0].isdigit() and candidate.suffix in (".tmp", ".old") and not _owner_alive(int(parts[0])):
            _remove(candidate)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------- atomic files
def make_directory(path: str | Path) -> Path:
    """Create ``path`` and its parents (mode ``0777 & ~umask``); a file in the way is a one-line error."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RunError(f"cannot create the directory {str(path)!r}: a file is in the way") from None
    except OSError as err:
        raise RunError(f"cannot create the directory {str(path)!r}: {err.strerror}") from None
    return path


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a new temporary file beside ``path`` (mode ``0666 & ~umask``), fsync it and rename it
    to ``path``; on any error the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    make_directory(path.parent)
    tmp = _temporary(path, ".tmp")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(str(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # writers that recreate the file (safetensors: 0600) lose the mode
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, (FileNotFoundError, FileExistsError)):
            raise RunError(f"cannot write {str(path)!r}: {err.strerror or err}") from None
        raise
    return path


def to_json(data) -> str:
    """Strict JSON text (indented): NaN or infinities raise :class:`RunError` instead of writing invalid JSON."""
    try:
        return json.dumps(data, indent=1, allow_nan=False) + "\n"
    except ValueError as err:
        raise RunError(f"refusing to write non-finite numbers as JSON ({err}): expected finite values") from None


def write_json(path: str | Path, data) -> Path:
    """Write ``data`` as strict JSON, atomically."""
    text = to_json(data)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_json(path: str | Path, what: str = "run"):
    """Parse a JSON file; a missing or corrupt one raises a one-line :class:`RunError` naming the file."""
    file = Path(path)
    if not file.is_file():
        raise RunError(f"{str(file.parent)!r} is not a {what} directory: it has no {file.name}")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{str(file)!r} is corrupt: {err}") from None


def read_safetensors(path: str | Path, what: str = "weights") -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise RunError(f"{what} file {str(path)!r} is missing or corrupt: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def update_metrics(run_dir: str | Path, kind: str, **sections) -> dict:
    """Merge ``sections`` into the run's ``metrics.json`` (``{"kind": kind, section: {...}, ...}``) and write it."""
    file = Path(run_dir) / METRICS
    metrics = read_json(file) if file.is_file() else {}
    if not isinstance(metrics, dict) or metrics.get("kind", kind) != kind:
        metrics = {}  # an older schema (or another kind's file): start afresh
    metrics.update(kind=kind, **sections)
    write_json(file, metrics)
    return metrics


# ---------------------------------------------------------------------- locks
@contextmanager
def lock(target: str | Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``target`` (created exclusively, holding the writer's pid and host). A lock held
    by a running process is a one-line :class:`RunError`; the lock of a process that died is taken over."""
    target = Path(target)
    make_directory(target.parent)
    file = target.parent / f".{target.name}.lock"
    host = socket.gethostname()
    for _ in range(2):
        try:
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            owner = _lock_owner(file)
            if owner is not None and (owner[1] != host or _owner_alive(owner[0])):
                raise RunError(f"{str(target)!r} is being written by process {owner[0]} on {owner[1]}: "
                               "wait for it to finish, or choose another output") from None
            file.unlink(missing_ok=True)  # stale: its writer is gone
            continue
        except OSError as err:
            raise RunError(f"cannot write beside {str(target)!r}: {err.strerror}") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()} {host}\n")
        break
    else:  # pragma: no cover - two processes racing for a stale lock
        raise RunError(f"{str(target)!r} is being written by another process: wait for it to finish")
    try:
        yield
    finally:
        file.unlink(missing_ok=True)


def _lock_owner(file: Path) -> tuple[int, str] | None:
    try:
        pid, host = file.read_text().split()
        return int(pid), host
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------- whole directories
class StagedDirectory:
    """A directory built under a temporary name beside ``target`` and swapped into place by :meth:`commit`
    (:meth:`abort` removes it), so ``target`` is never seen half-written and an old ``target`` survives a
    failed rewrite. It holds the target's lock from creation to commit or abort."""

    def __init__(self, target: str | Path, overwrite: bool = False, what: str = "output"):
        self.target = Path(target)
        if self.target.exists() and not overwrite:
            raise RunError(f"{what} {str(self.target)!r} already exists: overwrite it, or choose another path")
        if self.target.exists() and not self.target.is_dir():
            raise RunError(f"{what} {str(self.target)!r} is a file: expected a directory path")
        self._lock = lock(self.target)
        self._lock.__enter__()
        try:
            remove_stale_temporaries(self.target)
            self.path = _temporary(self.target, ".tmp")
            self.path.mkdir()
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise

    def commit(self) -> Path:
        try:
            if self.target.exists():
                old = _temporary(self.target, ".old")
                os.replace(self.target, old)
                os.replace(self.path, self.target)
                _remove(old)
            else:
                os.replace(self.path, self.target)
        finally:
            self._lock.__exit__(None, None, None)
        return self.target

    def abort(self) -> None:
        _remove(self.path)
        self._lock.__exit__(None, None, None)

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


@contextmanager
def open_run(target: str | Path, *, overwrite: bool = False, resume: bool = False, what: str = "run") -> Iterator[Path]:
    """The directory to write a run into, locked for the duration.

    - ``target`` missing or empty: it is created and written in place. An error removes it again; an interrupt
      (Ctrl-C) keeps it, so that ``resume`` can continue it.
    - ``target`` holds a run and ``resume``: written in place.
    - ``target`` holds a run and ``overwrite``: the new run is built in a staging directory beside it and replaces
      the old one only when complete; on any error or interrupt the old run stays as it was.
    - otherwise a one-line :class:`RunError`.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise RunError(f"{what} directory {str(target)!r} is a file: expected a directory path")
    existing = target.is_dir() and any(target.iterdir())
    if existing and not resume and not overwrite:
        raise RunError(f"{what} directory {str(target)!r} already exists: resume it, overwrite it, or choose another path")
    if existing and overwrite and not resume:
        with StagedDirectory(target, overwrite=True, what=what) as staging:
            yield staging
        return
    with lock(target):
        remove_stale_temporaries(target)
        created = not target.exists()
        make_directory(target)
        try:
            yield target
        except KeyboardInterrupt:
            raise
        except BaseException:
            if created:
                _remove(target)
            else:  # it was empty: empty it again
                for child in target.iterdir():
                    _remove(child)
            raise


# ---------------------------------------------------------------------- checkpoints
class InterruptFlag:
    """Turns SIGTERM and SIGINT (Ctrl-C) into a flag the training loop checks between epochs, so the saved state
    is never torn (a KeyboardInterrupt in the middle of ``optimizer.step()`` would leave some tensors of epoch
    ``E`` and others of ``E + 1``)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.raised = False
        self._previous: dict = {}

    def __enter__(self):
        try:
            for number in self.SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        except ValueError:  # not in the main thread: signals stay as they are
            self._previous = {}
        return self

    def _handle(self, *_):
        self.raised = True

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)


def save_state(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, record: dict) -> Path:
    """One file for a resumable training state: the model's state dict (``model.<name>``), the optimiser's
    per-parameter state (``optimizer.<index>.<key>``), and as metadata its param groups and ``record``
    (JSON: the step or epoch, the history so far...)."""
    optimizer_state = optimizer.state_dict()
    tensors = {f"model.{name}": value for name, value in model.state_dict().items()}
    for index, entries in optimizer_state["state"].items():
        for key, value in entries.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().clone()
    metadata = {"param_groups": to_json(optimizer_state["param_groups"]), "record": to_json(record)}
    return write_safetensors(path, tensors, metadata=metadata)


def load_state(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore what :func:`save_state` wrote into ``model`` and ``optimizer`` (in place); return the record."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
        param_groups, record = json.loads(metadata["param_groups"]), json.loads(metadata["record"])
        model.load_state_dict({name[len("model."):]: value for name, value in tensors.items() if name.startswith("model.")})
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as err:
        raise RunError(f"cannot resume from {str(path)!r}: the saved state is damaged or from another model "
                       f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            index, key = name[len("optimizer."):].split(".", 1)
            state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})
    return record
