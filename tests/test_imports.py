"""The import graph of bench, model and kernels: a DAG that follows the data flow (see bench/__init__.py).

Every import counts, at module level or inside a function: one inside a function delays JAX, it does not make a
dependency go away. Read from the source with ``ast``, so nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "model", "kernels")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def imported(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports; ``from a import b`` names module ``a.b`` when that is a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        found |= {n for n in names if n in known}
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    packages = {m for m, p in mods.items() if p.name == "__init__.py"}
    # a package's __init__ is imported on the way to each of its modules; it is never a real dependency here
    return {m: imported(p, set(mods)) - packages for m, p in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_sees_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_imports_form_a_dag():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_only_main_and_the_launcher_import_the_cli():
    importers = {m for m, deps in graph().items() for d in deps if d.startswith("bench.cli") and m != d}
    assert importers - {"bench.cli.main"} <= {"bench.__main__", "bench.launch.local"}


@pytest.mark.parametrize("layer", ["bench.analysis", "bench.hardware", "bench.records", "bench.report"])
def test_lower_layers_import_no_producer(layer):
    """records, analysis, hardware and report never reach into measurement, compilation or launching."""
    producers = ("bench.measure", "bench.tpu_aot", "bench.launch", "bench.cli")
    bad = {(m, d) for m, deps in graph().items() if m.startswith(layer) for d in deps if d.startswith(producers)}
    assert not bad


@pytest.mark.parametrize("layer", ["bench/analysis", "bench/hardware"])
def test_shared_pure_code_imports_no_jax(layer):
    for path in sorted((REPO / layer).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not [n for n in names if n.split(".")[0] in ("jax", "jaxlib", "haiku")], path


def test_importing_the_shared_pure_code_loads_no_jax():
    """Transitively too: analysis, hardware, records and report modules load without JAX (reports are written
    where no accelerator stack is installed)."""
    import subprocess
    import sys

    pure = [m for m in modules() if m.startswith(("bench.analysis", "bench.hardware", "bench.records", "bench.report"))]
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in pure)
    code += "print(sorted(m for m in ('jax', 'jaxlib', 'haiku') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
