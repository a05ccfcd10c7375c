"""No new import cycles among simkv's modules.

Why: the founders want one direction of data flow (docs/ARCHITECTURE.md); a cycle between
two modules means neither can be read, tested or moved without the other, and a
module-level cycle breaks as soon as someone imports the "wrong" side first. Only
module-level imports count: an import inside a function (the established way to defer a
heavy or upward dependency, e.g. a config check that asks the engine for a capacity) and one
under ``if TYPE_CHECKING:`` run after both modules are loaded, so they cannot fail that way.

Two small cycles are tolerated by the founders (``TOLERATED``); any other fails the test,
with the modules and the edges that close it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "simkv"

# Each tolerated cycle as the set of its modules; a cycle is allowed only if its modules are
# exactly one of these.
TOLERATED: tuple[frozenset[str], ...] = (
    frozenset({"simkv.perf.roofline", "simkv.perf.steps"}),
    frozenset({"simkv.validation.compare", "simkv.validation.holdout"}),
)


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under ``root`` (a package folder)."""
    mods: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The modules of ``mods`` that ``name`` imports when it is loaded.

    ``from pkg import sub`` where ``pkg.sub`` is a module is an edge to ``pkg.sub`` (not to
    ``pkg``, whose ``__init__`` is already loading); the implicit import of a parent package
    is not an edge, or every package's ``__init__`` would close a cycle with its children.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    found.add(sub if sub in mods else module)
            elif isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    visit(node.body)
                    visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            # NOTE: function and class bodies are not visited: imports there run later.

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return {m for m in found if m in mods and m != name}


def import_cycles(root: Path) -> list[list[str]]:
    """Every cycle of module-level imports under ``root``, one strongly connected component
    of two or more modules each (Tarjan's algorithm, iterative), sorted."""
    mods = module_files(root)
    graph = {name: sorted(module_imports(name, path, mods)) for name, path in mods.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            successors = graph[node]
            if i < len(successors):
                work.append((node, i + 1))
                nxt = successors[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return sorted(components)


def test_no_new_import_cycles() -> None:
    new = [c for c in import_cycles(ROOT) if frozenset(c) not in TOLERATED]
    assert not new, (
        "new import cycles (module-level imports; move the shared piece to the lower module, "
        f"or import inside the function that needs it): {new}"
    )


def test_checker_finds_a_cycle_and_ignores_deferred_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.a import A\n")
    (pkg / "a.py").write_text("from pkg.b import B\nA = 1\n")
    (pkg / "b.py").write_text("from pkg import c\nB = 2\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    # Deferred imports close no cycle: inside a function, under TYPE_CHECKING.
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub import e\n"
    )
    (pkg / "sub" / "e.py").write_text("def f():\n    from pkg.sub import d\n")
    assert import_cycles(pkg) == [["pkg.a", "pkg.b", "pkg.c"]]
