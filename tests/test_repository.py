"""Repository-level promises: CI runs the README's test command; the layers import only downwards."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: The layers from the bottom up, by folder, and the package name each installs as. ``groupcc.errors`` (the
#: one base error, which imports nothing) sits below them all; ``groupcc`` itself (API and CLI) is the top.
LAYERS = [("groups", "groupcc.groups"), ("crosscoders", "groupcc.crosscoders"), ("training", "groupcc.training"),
          ("eval", "groupcc.eval"), ("groupcc", "groupcc")]
BASE_MODULES = {"groupcc.errors"}
BARE_NAMES = {folder for folder, _ in LAYERS[:-1]}
THIRD_PARTY_BELOW_TORCH = {"torch", "einops", "safetensors", "sklearn", "matplotlib"}


def readme_commands() -> list[str]:
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    commands = readme_commands()
    assert len(commands) == 2
    assert "pytest" in commands[1]
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert commands[1] in ci_lines


def imported_modules(path: pathlib.Path) -> set[str]:
    """Absolute module names a file imports (relative imports stay inside their own layer)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def layer_rank(module: str) -> int | None:
    """The rank of the layer a groupcc module belongs to (-1 for the base error module), ``None`` for others."""
    if module in BASE_MODULES:
        return -1
    for rank, (_, package) in enumerate(LAYERS):  # the lower layers first: every package starts with "groupcc."
        if module == package or module.startswith(package + "."):
            return rank
    return None


def test_imports_only_go_down_the_layers():
    for rank, (folder, package) in enumerate(LAYERS):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "groupcc" / "errors.py":
                assert not imported_modules(path), "groupcc/errors.py is the base of every layer: it imports nothing"
                continue
            imported = imported_modules(path)
            higher = {name for name in imported if (layer_rank(name) or 0) > rank}
            assert not higher, f"{path.relative_to(ROOT)} imports a higher layer: {higher}"
            if folder == "groups":
                third_party = {name.split(".")[0] for name in imported} & THIRD_PARTY_BELOW_TORCH
                assert not third_party, f"{path.relative_to(ROOT)} must use numpy/scipy only"


def test_nothing_imports_the_folders_under_their_bare_names():
    """``groups``, ``eval``... are installed as ``groupcc.groups``, ``groupcc.eval``: a bare import would pick
    up whatever else of that name is on the path (PyPI has packages ``groups`` and ``eval``)."""
    for folder in ["groups", "crosscoders", "training", "eval", "groupcc", "tests", "benchmarks"]:
        for path in (ROOT / folder).rglob("*.py"):
            bare = {name for name in imported_modules(path) if name.split(".")[0] in BARE_NAMES}
            assert not bare, f"{path.relative_to(ROOT)} imports {bare}: expected groupcc.<name>"
