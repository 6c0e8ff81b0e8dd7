"""DESIGN.md's arrows, read from the source with ast: nothing below the command line imports
``refnet.cli``, and refnet's modules import each other without a cycle.

The module graph covers refnet/, kernels/ (refnet.kernels) and weights_import/
(refnet.weights_import). Edges are the imports a module runs when it is imported: top-level
statements, including those under ``if``/``try`` (not ``if TYPE_CHECKING``), not the lazy
imports inside functions. ``from refnet.x import y`` is an edge to ``refnet.x.y`` when that
is a module, else to ``refnet.x``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"refnet": ROOT / "refnet", "refnet.kernels": ROOT / "kernels",
            "refnet.weights_import": ROOT / "weights_import"}


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg, folder in PACKAGES.items():
        for f in sorted(folder.rglob("*.py")):
            parts = list(f.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join([pkg, *parts])] = f
    return mods


MODULES = _modules()


def _imported_names(name: str, node: ast.AST) -> list[str]:
    """Dotted names an Import/ImportFrom statement of module ``name`` asks for (relative ones resolved)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:
        pkg = name.split(".") if MODULES[name].name == "__init__.py" else name.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([node.module] if node.module else []))
    # `from pkg import sub` of a submodule depends on that submodule (pkg is only being initialised);
    # `from mod import name` of anything else depends on mod
    subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
    return subs + ([base] if len(subs) < len(node.names) else [])


def _top_level_imports(body: list[ast.stmt]) -> list[ast.stmt]:
    out: list[ast.stmt] = []
    for n in body:
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            out.append(n)
        elif isinstance(n, ast.If) and "TYPE_CHECKING" not in ast.unparse(n.test):
            out += _top_level_imports(n.body) + _top_level_imports(n.orelse)
        elif isinstance(n, ast.Try):
            out += _top_level_imports(n.body) + _top_level_imports(n.orelse) + _top_level_imports(n.finalbody)
            for h in n.handlers:
                out += _top_level_imports(h.body)
    return out


def _module_of(dotted: str) -> str | None:
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def _tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(encoding="utf-8"), filename=str(MODULES[name]))


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name in MODULES:
        targets = {_module_of(d) for stmt in _top_level_imports(_tree(name).body) for d in _imported_names(name, stmt)}
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(sorted(graph[nxt]))))
                path.append(nxt)
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a2"}, "a2": set(), "b": {"b"}}) == ["b", "b"]


def test_the_graph_sees_the_imports():
    g = import_graph()
    assert len(g) > 50 and "refnet.cli" in g and "refnet.kernels.conv" in g and "refnet.weights_import.caffe" in g
    assert "refnet.errors" in g["refnet.graph"] or "refnet.errors" in g["refnet.net"]
    assert "refnet.cli.common" in g["refnet.cli.run"]  # `from refnet.cli.common import ...`


def test_no_import_cycle_inside_refnet():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_nothing_below_the_command_line_imports_it():
    """Every import statement, lazy ones inside functions included: refnet.cli is the top."""
    bad = []
    for name in MODULES:
        if name == "refnet.cli" or name.startswith("refnet.cli."):
            continue
        for node in ast.walk(_tree(name)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                hits = [d for d in _imported_names(name, node) if d == "refnet.cli" or d.startswith("refnet.cli.")]
                if hits:
                    bad.append(f"{MODULES[name].relative_to(ROOT)}:{node.lineno} imports {hits[0]}")
    assert not bad, "\n".join(bad)


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in ("cli", "crosscheck", "export", "runtime", "ops", "kernels",
                                                       "weights_import") else module


def test_no_import_cycle_between_packages():
    """Each of refnet's packages as one node (cli, crosscheck, export, runtime, ops, kernels,
    weights_import), the top-level modules as themselves: still no cycle, and kernels imports
    nothing of refnet but refnet.errors (DESIGN.md)."""
    graph: dict[str, set[str]] = {}
    for m, targets in import_graph().items():
        node = graph.setdefault(_package_of(m), set())
        node.update(t for t in map(_package_of, targets) if t != _package_of(m))
    for targets in list(graph.values()):
        for t in targets:
            graph.setdefault(t, set())
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle or [])
    assert graph["kernels"] <= {"refnet.errors"}, graph["kernels"]
