"""Print the import graph of onepixel: edges between subpackages and any import cycles.

Reads every module under src/onepixel with ``ast`` (nothing is imported). An edge A -> B means
some module of subpackage A imports one of B. Imports at module level are "eager"; imports
inside functions (done lazily, on first call) are listed apart with ``--lazy``. String plugins
count as lazy imports too: a string constant naming a onepixel module (``"onepixel.x.y"`` or
``"onepixel.x.y:name"``, what ``importlib.import_module`` would load) and the relative module
names of a package's ``_LAZY`` map (PEP 562 attributes, see ``onepixel._lazy``). Cycles are
searched among modules over module-level imports, among modules over every import (function
level and strings included) and among subpackages. Exit status 1 when any holds a cycle.

    python scripts/import_graph.py [--lazy]
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "onepixel"
MODULE_STRING = re.compile(r"^onepixel(?:\.[a-z_][a-z0-9_]*)+(?::[A-Za-z_]\w*)?$")


def module_name(path: Path) -> str:
    """Return the dotted module name of a source file under SRC."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """Return the absolute module an ImportFrom names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """Return ``(imported onepixel module, eager)`` for every import in the file at ``path``."""
    module = module_name(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    # Imports inside function bodies run on first call (lazy); under TYPE_CHECKING never.
    lazy_nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lazy_nodes.update(id(sub) for sub in ast.walk(node) if sub is not node)
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(sub) for stmt in node.body for sub in ast.walk(stmt))
    # A string counts only when it names a module exactly (a logger "onepixel.serve.access" does not).
    found = [(n, False) for n in string_plugins(tree, module, path.name == "__init__.py") if n in known]
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, node, path.name == "__init__.py")
            names = [target]
            names += [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in known]
        else:
            continue
        if id(node) in skipped:
            continue
        eager = id(node) not in lazy_nodes
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                found.append((name, eager))
    return found


def string_plugins(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Return the onepixel modules a file names in strings: ``"onepixel.x.y[:name]"`` constants
    and, in a package, the relative module names of its ``_LAZY`` map."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_STRING.match(node.value):
            found.append(node.value.split(":")[0])
        if (
            is_package
            and isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets)
        ):
            for value in getattr(node.value, "values", []):
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    name = value.value
                    found.append(f"{module}{name}" if name.startswith(".") else name)
    return found


def subpackage(module: str) -> str:
    """Return the subpackage (second dotted part) of an onepixel module, or the module itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components with more than one node (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def build() -> tuple[dict[str, set[str]], ...]:
    """Return the module graphs (eager, every import) and subpackage graphs (eager, every import)."""
    files = sorted((SRC / PACKAGE).rglob("*.py"))
    known = {module_name(f) for f in files}
    modules: dict[str, set[str]] = defaultdict(set)
    every: dict[str, set[str]] = defaultdict(set)
    eager_pkgs: dict[str, set[str]] = defaultdict(set)
    all_pkgs: dict[str, set[str]] = defaultdict(set)
    for f in files:
        src = module_name(f)
        for name, eager in imports(f, known):
            while name not in known and "." in name:
                name = name.rsplit(".", 1)[0]
            if name == src:
                continue
            a, b = subpackage(src), subpackage(name)
            every[src].add(name)
            if eager:
                modules[src].add(name)
            if a != b and b != PACKAGE:
                all_pkgs[a].add(b)
                if eager:
                    eager_pkgs[a].add(b)
    return modules, every, eager_pkgs, all_pkgs


def main(argv: list[str] | None = None) -> int:
    """Print the subpackage edges and the cycles; return 1 when there is a cycle."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lazy", action="store_true", help="also list edges only lazy imports make")
    args = parser.parse_args(argv)
    modules, every, eager_pkgs, all_pkgs = build()
    print("subpackage imports (eager):")
    for a in sorted(eager_pkgs):
        print(f"  {a} -> {', '.join(sorted(eager_pkgs[a]))}")
    if args.lazy:
        print("subpackage imports made only inside functions:")
        for a in sorted(all_pkgs):
            extra = all_pkgs[a] - eager_pkgs.get(a, set())
            if extra:
                print(f"  {a} -> {', '.join(sorted(extra))}")
    module_cycles = find_cycles(modules)
    lazy_cycles = [c for c in find_cycles(every) if c not in module_cycles]
    package_cycles = find_cycles(all_pkgs)
    edges = sum(len(v) for v in every.values())
    print(f"modules: {len(set(every) | {m for v in every.values() for m in v})}, import edges: {edges}")
    print(f"module import cycles (module-level imports): {len(module_cycles)}")
    for c in module_cycles:
        print("  " + " <-> ".join(c))
    print(f"module cycles through function-level imports or string plugins: {len(lazy_cycles)}")
    for c in lazy_cycles:
        print("  " + " <-> ".join(c))
    print(f"subpackage import cycles: {len(package_cycles)}")
    for c in package_cycles:
        print("  " + " <-> ".join(c))
    return 1 if module_cycles or lazy_cycles or package_cycles else 0


if __name__ == "__main__":
    sys.exit(main())
