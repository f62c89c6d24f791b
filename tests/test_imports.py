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


def package_of(module: str) -> str:
    """The package a module belongs to in the layering: bench's subpackages one by one, model and kernels whole."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "bench" and len(parts) > 1 else parts[0]


def package_graph(modules_graph: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    """Which package imports which: an edge wherever one of its modules imports a module of the other."""
    edges: dict[str, set[str]] = {}
    for module, deps in (graph() if modules_graph is None else modules_graph).items():
        edges.setdefault(package_of(module), set()).update(package_of(d) for d in deps)
    return {package: deps - {package} for package, deps in edges.items()}


def importers_of(package: str) -> set[str]:
    return {m for m, deps in graph().items() for d in deps if package_of(d) == package != package_of(m)}


def test_packages_form_a_dag():
    """Modules may avoid a cycle while their packages close one (a module of A imports B, one of B imports A)."""
    cycle = find_cycle(package_graph())
    assert cycle is None, "package import cycle: " + " -> ".join(cycle)


def test_package_graph_sees_a_cycle_that_modules_do_not_close():
    modules_graph = {"bench.a.x": {"bench.b.y"}, "bench.b.y": set(), "bench.b.z": {"bench.a.w"}, "bench.a.w": set()}
    assert find_cycle(modules_graph) is None
    assert find_cycle(package_graph(modules_graph)) == ["bench.a", "bench.b", "bench.a"]


def test_only_main_imports_the_cli():
    """The launcher reads a ``run`` command line through the parser the CLI hands it (bench.launch.local)."""
    assert importers_of("bench.cli") <= {"bench.__main__"}


def test_measurement_imports_no_launcher():
    """A measuring process (bench.measure, its jax.distributed session included) is launched; it never launches."""
    assert not {m for m in importers_of("bench.launch") if package_of(m) == "bench.measure"}


def test_records_import_nothing_else_of_bench():
    """The record contract sits below everything that writes or reads records; it may name the model's variants."""
    assert package_graph()["bench.records"] <= {"model", "kernels"}


def test_the_shared_compile_step_imports_no_producer_or_reader():
    """bench.compile is what measure, tpu_aot and gpu share: it never reaches into any of them, nor the report."""
    callers = ("bench.measure", "bench.tpu_aot", "bench.gpu", "bench.launch", "bench.cli", "bench.report")
    assert not {d for d in package_graph()["bench.compile"] if d.startswith(callers)}


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
