"""No import cycles between the project's modules, lazy (function-level) imports included.

Every module of the packages ``spikereg_neuro``, ``calibration``, ``sim`` and ``loihi`` is parsed
with :mod:`ast` (nothing is imported). Each ``import``/``from ... import`` statement anywhere in
a file -- module level, inside functions and methods, under ``try`` -- is an edge from that
module to the project module it names (relative imports resolved; ``from P import m`` where
``P.m`` is a module points at ``P.m``), as is ``importlib.import_module("literal")``. Imports
under ``if TYPE_CHECKING:`` never run and are left out. Run this file as a script to print the
cycles.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spikereg_neuro", "calibration", "sim", "loihi")


def module_files(root: Path = ROOT) -> Dict[str, Path]:
    """``{dotted module name: file}`` of every module of :data:`PACKAGES`."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Import statements and ``importlib.import_module`` calls below ``node``, skipping the
    bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for sub in child.orelse:
                yield from _import_nodes(sub)
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute)
              and child.func.attr == "import_module" and child.args
              and isinstance(child.args[0], ast.Constant) and isinstance(child.args[0].value, str)):
            yield child
        yield from _import_nodes(child)


def _project_module(name: str, modules: Dict[str, Path]) -> Optional[str]:
    """The longest prefix of ``name`` that is a project module (None: not ours)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        cand = ".".join(parts[:n])
        if cand in modules:
            return cand
    return None


def imports_of(module: str, path: Path, modules: Dict[str, Path]) -> Set[str]:
    """The project modules that ``module`` (file ``path``) imports anywhere in its code."""
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    out: Set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: List[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for a in node.names:
                sub = f"{base}.{a.name}"
                names.append(sub if a.name != "*" and sub in modules else base)
        else:  # importlib.import_module("...")
            names = [node.args[0].value]
        for n in names:
            target = _project_module(n, modules)
            if target is not None and target != module:
                out.add(target)
    return out


def import_graph(root: Path = ROOT) -> Dict[str, Set[str]]:
    """``{module: modules it imports}`` over the project's packages."""
    modules = module_files(root)
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def describe(comp: List[str], graph: Dict[str, Set[str]]) -> str:
    """One cycle's modules and the edges among them."""
    members = set(comp)
    edges = [f"{a} -> {b}" for a in comp for b in sorted(graph[a] & members)]
    return f"{' <-> '.join(comp)} ({'; '.join(edges)})"


def test_the_graph_sees_module_level_function_level_and_relative_imports():
    g = import_graph()
    assert "spikereg_neuro.model.neuron" in g["spikereg_neuro.model.config"]        # relative
    assert "spikereg_neuro.registration.transform" in g["spikereg_neuro.registration"]
    assert "spikereg_neuro.data.synth" in g["spikereg_neuro.data.augment"]
    assert g["spikereg_neuro.dataclass_io"] == set()                                   # a leaf
    assert "spikereg_neuro.config" in g["spikereg_neuro.registration.world"]         # in a function
    assert "spikereg_neuro.train.run" in g["spikereg_neuro.commands.train"]          # in a function
    assert "calibration.cli" not in g["spikereg_neuro.cli"]   # importlib with a non-literal name: not seen


def test_no_import_cycles():
    g = import_graph()
    found = cycles(g)
    assert not found, "import cycles:\n" + "\n".join(describe(c, g) for c in found)


if __name__ == "__main__":
    graph = import_graph()
    found = cycles(graph)
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} import edges, {len(found)} cycle(s)")
    for c in found:
        print(describe(c, graph))
