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
  only once the new run is complete. :func:`lock` is re-entrant within a thread (a writer that holds its
  output's lock from the start may open it again), removes the parent directories it created when nothing
  was written into them, and each writer checks its output with :func:`check_output` before any work.
- A writer's temporary files and directories carry its process id; those of a process that no longer runs are
  removed by the next writer of that output (beside it when it takes the lock, inside it when it resumes).
- Runs record what they were made from; :func:`group_fingerprint` identifies a group by its multiplication table,
  so a group renamed in a record (another group of the same order) is noticed.
- One checkpoint format: :func:`save_state` / :func:`load_state` keep a model, its optimiser and a JSON record
  (step, history) in one safetensors file, so an interrupted run resumes bit-exactly.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import secrets
import signal
import shutil
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from groupcc.errors import GroupccError
from groupcc.groups.validation import MAX_INT, check_number  # noqa: F401 - re-exported: config dataclasses import them from here

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


# ---------------------------------------------------------------------- what a run is made from
def group_fingerprint(mult_table) -> str:
    """A short hash of a group's multiplication table (``int64``, little-endian): two groups of the same order
    but different tables (C6 and S3) differ, so a record that names the wrong group is noticed."""
    table = np.ascontiguousarray(np.asarray(mult_table), dtype="<i8")
    return hashlib.sha256(table.tobytes()).hexdigest()[:16]


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
    except (OverflowError, ValueError):  # not a pid this system can have
        return False
    return True


#: ``.<name>.<pid>.<8 hex digits>.tmp`` (or ``.old``: an old run moved aside during a swap).
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d{1,12})\.[0-9a-f]{8}\.(?:tmp|old)")


def _stale(candidate: Path, name: str | None = None) -> bool:
    """Whether ``candidate`` is a temporary (of ``name``, or of anything) whose writer no longer runs."""
    match = _TEMPORARY.fullmatch(candidate.name)
    return bool(match) and name in (None, match["name"]) and not _owner_alive(int(match["pid"]))


def remove_stale_temporaries(path: str | Path) -> None:
    """Remove the temporary files and directories beside ``path`` left by writers that no longer run (a
    SIGKILLed harvest's staging directory, a half-written ``config.json``)."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.*"):
        if _stale(candidate, path.name):
            _remove(candidate)


def remove_stale_temporaries_inside(directory: str | Path) -> None:
    """Remove every temporary under ``directory`` whose writer no longer runs (a run resumed in place)."""
    for root, dirs, files in os.walk(directory):
        for name in [*dirs, *files]:
            if _stale(Path(root) / name):
                _remove(Path(root) / name)
        dirs[:] = [name for name in dirs if (Path(root) / name).exists()]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------- atomic files
def make_directory(path: str | Path) -> Path:
    """Create ``path`` and its parents (mode ``0777 & ~umask``); a file in the way is a one-line error."""
    _make_directories(Path(path))
    return Path(path)


def _make_directories(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; return those created, deepest first."""
    missing = []
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            break
        missing.append(candidate)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RunError(f"cannot create the directory {str(path)!r}: a file is in the way") from None
    except OSError as err:
        raise RunError(f"cannot create the directory {str(path)!r}: {err.strerror or err}") from None
    return missing


def _remove_if_empty(directories: list[Path]) -> None:
    """Remove the directories (deepest first) that are still empty."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


def check_output(target: str | Path, what: str = "output") -> Path:
    """Refuse, before any work, an output path that cannot be written: an empty one, ``.`` or ``..`` (a run is
    staged and locked beside its directory), one under a regular file, or one whose nearest existing parent is not
    a writable directory (a read-only file system, no permission)."""
    target = _named(target, what)
    if os.path.lexists(target) and not target.is_dir():
        raise RunError(f"{what} {str(target)!r} is a file: expected a directory path")
    parent = next(p for p in (target.parent.absolute(), *target.parent.absolute().parents) if os.path.lexists(p))
    if not parent.is_dir():
        raise RunError(f"cannot create {what} {str(target)!r}: {str(parent)!r} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        reason = "a read-only file system" if _read_only(parent) else "no permission to write there"
        raise RunError(f"cannot create {what} {str(target)!r}: {str(parent)!r} is not writable ({reason})")
    return target


def _named(target: str | Path, what: str) -> Path:
    """``target`` as a path that names its own directory: not empty, ``.`` or ``..`` (a run is locked and staged
    beside its directory, under its name)."""
    if isinstance(target, str) and not target.strip():
        raise RunError(f"{what} {target!r}: expected a directory path")
    if Path(target).name in ("", ".", ".."):
        raise RunError(f"{what} {str(target)!r}: expected a path that names its own directory (not . or ..)")
    return Path(target)


def check_replaceable(target: str | Path, overwrite: bool, marker: str, what: str = "output", kind: str | None = None) -> None:
    """Before any work: an existing non-empty ``target`` needs ``overwrite``, and may only be replaced by a run of
    its own kind, one holding ``marker`` (``manifest.json`` for an activation store) and, with ``kind``, whose
    ``config.json`` records that kind (:func:`recorded_kind`: composer runs, testbeds and dictionaries all hold a
    ``config.json``), never another run or folder that replacing would delete."""
    target = Path(target)
    if not target.is_dir() or not any(target.iterdir()):
        return
    found = recorded_kind(target) if kind is not None else None
    if not (target / marker).is_file() or found != kind:
        article = "an" if what[:1] in "aeiou" else "a"
        why = f"it has no {marker}" if not (target / marker).is_file() else f"its {CONFIG} records {found!r}, not {kind!r}"
        raise RunError(f"{str(target)!r} exists and is not {article} {what} ({why}): expected a new path, "
                       f"or an earlier {what} to replace")
    if not overwrite:
        raise RunError(f"{what} {str(target)!r} already exists: overwrite it, or choose another path")


def recorded_kind(directory: str | Path) -> str | None:
    """What a run directory's ``config.json`` says it is: its ``kind`` (``composer``, ``testbed``) or its ``format``
    (``groupcc-dictionary``); ``None`` when it has no readable JSON object there."""
    try:
        config = read_json(Path(directory) / CONFIG, expect=dict)
    except RunError:
        return None
    found = config.get("kind", config.get("format"))
    return found if isinstance(found, str) else None


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


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
        if isinstance(err, SafetensorError):  # safetensors reports a full disk as its own error
            raise RunError(f"cannot write {str(path)!r}: {_first_line(err)}") from None
        raise
    return path


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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


#: JSON's names for the Python types ``json.loads`` gives.
JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def read_json(path: str | Path, what: str = "run", expect: type | None = None):
    """Parse a JSON file; a missing or corrupt one, or (``expect``: ``dict`` or ``list``) one that holds another
    type, raises a one-line :class:`RunError` naming the file."""
    file = Path(path)
    if not file.is_file():
        raise RunError(f"{str(file.parent)!r} is not a {what} directory: it has no {file.name}")
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{str(file)!r} is corrupt: {err}") from None
    if expect is not None and not isinstance(value, expect):
        raise RunError(f"{str(file)!r} is corrupt: expected a JSON {JSON_TYPES[expect]}, found {JSON_TYPES[type(value)]}")
    return value


def read_safetensors(path: str | Path, what: str = "weights") -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise RunError(f"{what} file {str(path)!r} is missing or corrupt: {_first_line(err)}") from None


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
#: Locks held in this process, by lock file and thread, with how many times each was taken (re-entrant).
_HELD: dict[tuple[str, int], int] = {}


@contextmanager
def lock(target: str | Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``target`` (created exclusively, holding the writer's pid and host). A lock held
    by another running process (or thread) is a one-line :class:`RunError`; the lock of a process that died is
    taken over. Taking it also removes the stale temporaries beside ``target``.

    The thread that holds it may take it again (a harvest holds its store's lock from the start, and the store's
    writer takes it too); it is released with the outermost hold, which also removes the parent directories that
    taking it created when nothing was written into them."""
    target = Path(target)
    file = target.parent / f".{target.name}.lock"
    key = (os.path.abspath(file), threading.get_ident())
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    created = _make_directories(target.parent)
    try:
        _acquire(file, target)
    except BaseException:
        _remove_if_empty(created)
        raise
    _HELD[key] = 1
    try:
        remove_stale_temporaries(target)
        yield
    finally:
        del _HELD[key]
        file.unlink(missing_ok=True)
        _remove_if_empty(created)


def _acquire(file: Path, target: Path) -> None:
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
            raise RunError(f"cannot write beside {str(target)!r}: {err.strerror or err}") from None
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{os.getpid()} {host}\n")
        except OSError as err:  # a full disk
            file.unlink(missing_ok=True)
            raise RunError(f"cannot write beside {str(target)!r}: {err.strerror or err}") from None
        return
    raise RunError(f"{str(target)!r} is being written by another process: wait for it to finish")  # pragma: no cover


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
        self.target = _named(target, what)
        if self.target.exists() and not overwrite:
            raise RunError(f"{what} {str(self.target)!r} already exists: overwrite it, or choose another path")
        if self.target.exists() and not self.target.is_dir():
            raise RunError(f"{what} {str(self.target)!r} is a file: expected a directory path")
        self.what = what
        self._lock = lock(self.target)
        self._lock.__enter__()
        try:
            self.path = _temporary(self.target, ".tmp")
            self.path.mkdir()
        except OSError as err:
            self._lock.__exit__(None, None, None)
            raise RunError(f"cannot create {what} {str(self.target)!r}: {err.strerror or err}") from None
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise

    def commit(self) -> Path:
        """Move the staged directory into place (an old ``target`` is moved aside first and removed after); on any
        error the old ``target`` is put back and the staged directory removed."""
        try:
            if self.target.exists():
                old = _temporary(self.target, ".old")
                os.replace(self.target, old)
                try:
                    os.replace(self.path, self.target)
                except BaseException:
                    os.replace(old, self.target)
                    raise
                _remove(old)
            else:
                os.replace(self.path, self.target)
        except BaseException as err:
            _remove(self.path)
            if isinstance(err, OSError):
                raise RunError(f"cannot move {self.what} {str(self.target)!r} into place: {err.strerror or err}") from None
            raise
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
    - ``target`` holds a run and ``resume``: written in place; an error keeps the run as it was left (a refused
      or failed resume must not delete the run it was to continue).
    - ``target`` holds a run and ``overwrite``: the new run is built in a staging directory beside it and replaces
      the old one only when complete; on any error or interrupt the old run stays as it was.
    - otherwise a one-line :class:`RunError`.
    """
    target = _named(target, f"{what} directory")
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
        created = not target.exists()
        make_directory(target)
        remove_stale_temporaries_inside(target)
        try:
            yield target
        except KeyboardInterrupt:
            raise
        except BaseException:
            if created:
                _remove(target)
            elif not existing:  # it was empty: empty it again
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
