"""The import graph of ``secure_fedrec``: no cycles, and every module imports on its own, first.

A cycle shows at run time only when its far end is imported first (the Flower node
once hit exactly that), so the graph is checked statically, from the source: every
``import`` and ``from ... import`` anywhere in a module — at the top or inside a
function — and every string that names a module of the package (what
``importlib.import_module`` is given, e.g. the CLI's list of command modules; a string
naming a *package* is a logger's name, not an import).
Cycles are refused between modules and between sub-packages (``secure_fedrec.X``).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "secure_fedrec"
_MODULE_NAME = re.compile(rf"^{PACKAGE}(\.\w+)+(:\w+)?$")


def _modules() -> dict[str, Path]:
    out = {}
    for path in (ROOT / PACKAGE).rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The package module ``name`` refers to (a module, or an attribute of one), if any."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (package ``__init__`` faces are not edges)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = module.split(".") if is_package else module.split(".")[:-1]
                if node.level:
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                names = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_NAME.match(node.value):
                # a module named by a string (importlib); package names in strings are logger names
                name = node.value.partition(":")[0]
                if name in modules and modules[name].name != "__init__.py":
                    names = [name]
            for name in names:
                if name.split(".")[0] == PACKAGE:
                    target = _resolve(name, modules)
                    if target is not None and target != module and target != PACKAGE:
                        targets.add(target)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def subpackage_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    def top(module: str) -> str:
        return ".".join(module.split(".")[:2])

    out: dict[str, set[str]] = {}
    for module, targets in graph.items():
        out.setdefault(top(module), set()).update(top(t) for t in targets if top(t) != top(module))
    return out


def test_no_import_cycle_between_modules() -> None:
    assert cycles(import_graph()) == []


def test_no_import_cycle_between_subpackages() -> None:
    assert cycles(subpackage_graph(import_graph())) == []


def test_the_checker_sees_function_level_and_string_imports() -> None:
    graph = import_graph()
    assert "secure_fedrec.commands.study" in graph["secure_fedrec.cli"]  # COMMAND_MODULES, by name
    assert "secure_fedrec.reports.plots" in graph["secure_fedrec.commands.study"]  # inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


SCRIPT = """
import importlib, pkgutil, sys
failures = []
names = []
# The packages whose modules import one another (a full walk costs minutes).
for package in ("secure_fedrec.privacy", "secure_fedrec.training", "secure_fedrec.aggregation",
                "secure_fedrec.plans", "secure_fedrec.rounds", "secure_fedrec.engines"):
    root = importlib.import_module(package)
    names.append(package)
    names += [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]
for name in names:
    for loaded in [m for m in sys.modules if m.split(".")[0] in ("protocols", "attacks", "secure_fedrec")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:  # report every failure, not just the first
        failures.append(f"{name}: {type(exc).__name__}: {exc}")
print(len(names))
print("\\n".join(failures))
"""


def test_every_module_imports_first() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT,
                         timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    count, *failures = out.stdout.strip().split("\n")
    assert int(count) > 40
    assert [f for f in failures if f] == []
