"""The package's import graph: layers import only downward, and no module imports itself
back through others. Read from the source with ``ast``; no module is imported.

Layers, lowest first (see each folder's ``__init__`` docstring)::

    errors, _version, _validate, cluster    the base every layer may use
    core                                    models, problem, search, subspace, grids
    engine | store                          peers: neither imports the other
    run                                     sweeps carried out (engine + store)
    analysis, then plot                     plot may draw analysis, not the reverse
    cli, testing, the package's __init__    the top
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from types import ModuleType

import genni_ext

PACKAGE = Path(genni_ext.__file__).parent
RANKS = {
    "errors": 0,
    "_version": 0,
    "_validate": 0,
    "cluster": 0,
    "_C": 0,
    "core": 1,
    "engine": 2,
    "store": 2,
    "run": 3,
    "analysis": 4,
    "plot": 5,
    "cli": 6,
    "testing": 6,
    "": 7,  # genni_ext/__init__.py
}


def _module_name(path: Path) -> str:
    parts = ["genni_ext", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(module: str) -> tuple[set[str], list[str]]:
    """The package's modules ``module`` imports at module level, and its function-local
    imports of the package (as source lines)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    targets: set[str] = set()
    local: list[str] = []
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    inside = {id(n) for f in functions for n in ast.walk(f)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            if not base.startswith("genni_ext"):
                continue
            names = [f"{base}.{alias.name}" for alias in node.names]
            found = {name for name in names if name in MODULES} or {base}
        elif isinstance(node, ast.Import):
            found = {alias.name for alias in node.names if alias.name.startswith("genni_ext")}
        else:
            continue
        if not found:
            continue
        if id(node) in inside:
            local.append(f"{module}: {ast.unparse(node)}")
            continue
        targets |= {name for name in found if name != module}
    return targets, local


GRAPH = {module: _imports(module)[0] for module in MODULES}


def test_every_module_has_a_layer() -> None:
    assert {_layer(module) for module in MODULES} <= set(RANKS)


def test_layers_import_only_downward() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if _layer(target) != _layer(module) and RANKS[_layer(target)] >= RANKS[_layer(module)] > 0
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target in GRAPH and target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert cycles == []


def test_no_function_local_imports_of_the_package() -> None:
    """Imports inside functions are for optional dependencies (gudhi, CMGDB, zarr, ...)
    and for the compiled extension, never to dodge a cycle in the package."""
    local = [line for module in MODULES for line in _imports(module)[1]]
    assert [line for line in local if not line.endswith("import _C")] == []


def test_no_exported_function_shares_a_module_name() -> None:
    clashes = []
    for module, path in MODULES.items():
        if path.name != "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        exported = {
            alias.asname or alias.name
            for node in tree.body
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        imported = importlib.import_module(module)
        clashes += [
            f"{module}.{name}"
            for name in exported
            if f"{module}.{name}" in MODULES and not isinstance(getattr(imported, name), ModuleType)
        ]
    assert clashes == []
