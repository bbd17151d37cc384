"""Repository-level promises: CI runs the README's test command; the layers import only downwards."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = ["groups", "crosscoders", "training", "eval", "groupcc"]
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


def imported_top_level(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_imports_only_go_down_the_layers():
    for rank, layer in enumerate(LAYERS):
        higher = set(LAYERS[rank + 1:])
        for path in (ROOT / layer).rglob("*.py"):
            imported = imported_top_level(path)
            assert not imported & higher, f"{path.relative_to(ROOT)} imports a higher layer: {imported & higher}"
            if layer == "groups":
                assert not imported & THIRD_PARTY_BELOW_TORCH, f"{path.relative_to(ROOT)} must use numpy/scipy only"
