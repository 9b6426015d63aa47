"""Dependencies between the subpackages of ``perception`` run one way (DESIGN.md section 4).

Layers, top to bottom::

    cli -> adapt -> {eval, compress, deploy} -> {pipeline, train} -> nn -> {data, geometry} -> utils

A subpackage may import any subpackage on a lower layer, never one on its own layer (peers) or
above, with one exception: ``data`` may import ``geometry`` (samples carry cameras), never the
reverse. ``utils`` sits below everything and imports no other subpackage.

Every import counts, including deferred ones inside functions and those under
``if TYPE_CHECKING:``: a lazy import hides a cycle from Python's import machinery, not from a reader. The scan is static (AST), so it sees imports on
code paths the tests never run.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "perception"

# Higher number = higher layer. An edge a -> b is allowed when LAYER[a] > LAYER[b].
LAYER = {
    "cli": 5,
    "adapt": 4,
    "eval": 3, "compress": 3, "deploy": 3,
    "pipeline": 2, "train": 2,
    "nn": 1,
    "data": 0, "geometry": 0,
    "utils": -1,
}
ALLOWED_PEER_EDGES = {("data", "geometry")}
EXCLUDED = {PACKAGE / "__init__.py", PACKAGE / "__main__.py"}
IMPORT_FUNCTIONS = {"import_module", "__import__"}


@dataclass(frozen=True)
class Edge:
    source: str      # subpackage that imports
    target: str      # subpackage imported
    path: Path       # module that holds the import
    line: int
    imported: str    # the dotted name as resolved

    def __str__(self) -> str:
        return f"{self.path.relative_to(PACKAGE.parent)}:{self.line}: {self.source} -> {self.target} ({self.imported})"


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([name] if name else []))


def imported_names(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, dotted module name) of every import in the file: top level and inside functions,
    ``import a.b``, ``from a.b import c`` (as ``a.b``; ``from perception import deploy`` as
    ``perception.deploy``), relative imports, and ``importlib.import_module("...")`` / ``__import__("...")``
    with a string literal."""
    module = _module_name(path, package)
    is_package = path.name == "__init__.py"
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = _resolve_relative(module, is_package, node.level, node.module)
            if base == "perception":  # ``from perception import deploy``: the names are the subpackages
                found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, base))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            arg = node.args[0]
            if fname in IMPORT_FUNCTIONS and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((node.lineno, arg.value))
    return sorted(set(found))


def _subpackage(dotted: str) -> str | None:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "perception" else None


def scan() -> list[Edge]:
    """Every import from one subpackage of ``perception`` into another."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in EXCLUDED:
            continue
        source = _subpackage(_module_name(path))
        for line, name in imported_names(path):
            target = _subpackage(name)
            if source and target and target != source and (PACKAGE / target).exists():
                edges.append(Edge(source, target, path, line, name))
    return edges


def _cycles(edges: list[Edge]) -> list[set[str]]:
    """Strongly connected components with more than one subpackage (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_scanner_sees_every_import_form(tmp_path):
    """The scan itself: deferred, relative, ``import a.b`` and import_module forms are found."""
    pkg = tmp_path / "perception" / "eval"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    src = pkg / "runner.py"
    src.write_text(
        "import importlib\n"
        "from perception.nn import create_model\n"
        "def f():\n"
        "    import perception.deploy.backends\n"
        "    from ..compress import distill\n"
        "    from . import bev\n"
        "    return importlib.import_module('perception.train.trainer')\n")
    names = imported_names(src, package=tmp_path / "perception")
    assert names == [(1, "importlib"), (2, "perception.nn"), (4, "perception.deploy.backends"),
                     (5, "perception.compress"), (6, "perception.eval"), (7, "perception.train.trainer")]


def test_every_subpackage_has_a_layer():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages <= set(LAYER), f"place {sorted(subpackages - set(LAYER))} in LAYER (tests/test_layers.py)"


def _against_layers(e: Edge) -> bool:
    return not (LAYER[e.source] > LAYER[e.target] or (e.source, e.target) in ALLOWED_PEER_EDGES)


def test_no_cycle_between_subpackages():
    edges = scan()
    problems = []
    for component in _cycles(edges):
        inside = [e for e in edges if e.source in component and e.target in component]
        upward = [str(e) for e in inside if _against_layers(e)]
        problems.append(f"cycle between {sorted(component)}; {len(inside)} imports inside it, of which against "
                        "the layers:\n    " + "\n    ".join(upward))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_imports_follow_the_layers():
    bad = [str(e) for e in scan() if _against_layers(e)]
    if bad:
        pytest.fail("imports against the layering cli -> {eval, compress, deploy} -> {pipeline, train} -> nn -> "
                    "{data, geometry} -> utils (data -> geometry allowed):\n    " + "\n    ".join(bad), pytrace=False)
