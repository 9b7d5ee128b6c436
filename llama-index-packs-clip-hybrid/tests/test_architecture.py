"""The pack's layout: layers that only import downwards, no import circle, small modules that
each say their one job, and the CLI and preview on public names only.

Reads the source with ``ast`` (nothing is imported): an import inside a function counts
as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "llama_index" / "packs" / "clip_hybrid"
ROOT = "llama_index.packs.clip_hybrid"

#: The layers, bottom first. A module imports only from its own part (sub-package or
#: top-level module) and from parts in lower layers.
LAYERS: list[set[str]] = [
    {"_util", "events", "memory", "options", "redaction", "words"},
    {"_compat"},
    {"images", "milvus"},
    {"clip"},
    {"ingest", "captions", "hybrid"},
    {"results"},
    {"routing", "answering"},
    {"pack"},
    {"evaluation", "download"},
    {"preview"},
    {"cli"},
    {"testing", "__init__"},
]
#: Parts that use only public names of the parts below them.
PUBLIC_ONLY = {"cli", "preview"}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([ROOT, *parts])] = path
    return out


def _part(module: str) -> str:
    rest = module[len(ROOT) + 1 :] if module != ROOT else "__init__"
    return rest.split(".", 1)[0]


def _layer(part: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if part in layer)


def _imports(module: str, path: Path, known: set[str]) -> list[tuple[str, list[str], int]]:
    """(imported module, names, line) for every import of the package from ``module``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                target = node.module or ""
            if not target.startswith(ROOT):
                continue
            names = [alias.name for alias in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            if submodules:  # `from . import module`
                found += [(sub, [], node.lineno) for sub in submodules]
            else:
                found.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith(ROOT)]
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (not imported at run time)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def test_every_part_is_in_a_layer() -> None:
    parts = {_part(m) for m in _modules()}
    assert parts <= set().union(*LAYERS), parts - set().union(*LAYERS)


def test_imports_go_down_the_layers_and_cli_and_preview_use_public_names() -> None:
    modules = _modules()
    known = set(modules)
    problems = []
    for module, path in modules.items():
        mine = _part(module)
        for target, names, line in _imports(module, path, known):
            theirs = _part(target)
            where = f"{path.relative_to(PACKAGE)}:{line} imports {target}"
            if theirs == mine or (theirs == "__init__" and mine == "testing"):
                continue
            if _layer(theirs) > _layer(mine) or (
                _layer(theirs) == _layer(mine) and mine != "__init__"
            ):
                problems.append(
                    f"{where}: {mine} (layer {_layer(mine)}) may not import "
                    f"{theirs} (layer {_layer(theirs)})"
                )
            if mine in PUBLIC_ONLY and any(n.startswith("_") for n in names):
                problems.append(f"{where}: private names {[n for n in names if n[0] == '_']}")
    assert problems == []


def test_no_import_circle() -> None:
    modules = _modules()
    known = set(modules)
    graph = {m: {t for t, _, _ in _imports(m, p, known) if t in known} for m, p in modules.items()}
    for module in list(graph):  # importing a module imports its packages first
        parent = module.rsplit(".", 1)[0]
        if parent in graph and parent != module and module != ROOT:
            graph[module].add(parent)
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1 and nxt != node:
                if not (node.startswith(nxt + ".") or node == nxt):  # a package and its child
                    circles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert circles == []


@pytest.mark.parametrize("module", sorted(_modules()))
def test_each_module_is_small_and_says_its_job(module: str) -> None:
    path = _modules()[module]
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_LINES, f"{path.relative_to(PACKAGE)}: {len(lines)} lines"
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and doc.splitlines()[0].strip(), f"{path.relative_to(PACKAGE)}: no one-line job"


def _distribution_of(module: str) -> str | None:
    """The distribution that provides an imported module; None for the standard library
    and this package."""
    import importlib.metadata
    import sys

    top = module.split(".")[0]
    if top in sys.stdlib_module_names or module.startswith(ROOT):
        return None
    if top == "llama_index":  # a namespace: llama_index.<kind>.<name> is its own package
        parts = module.split(".")
        return "llama-index-core" if parts[1] == "core" else "-".join(["llama-index", *parts[1:3]])
    names = importlib.metadata.packages_distributions().get(top)
    assert names, f"no installed distribution provides {module}"
    return names[0]


def _canonical(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_declared_dependencies_are_the_imported_ones() -> None:
    """Every third-party module the package imports comes from a declared dependency (or an
    extra's), and every declared dependency is imported: none rides in on another's
    requirements, none is declared for nothing."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    from packaging.requirements import Requirement

    project = tomllib.loads((PACKAGE.parents[2] / "pyproject.toml").read_text())["project"]
    required = {_canonical(Requirement(r).name) for r in project["dependencies"]}
    extras = {
        _canonical(Requirement(r).name)
        for reqs in project["optional-dependencies"].values()
        for r in reqs
    }
    imported: dict[str, str] = {}
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            for target in targets:
                dist = _distribution_of(target)
                if dist is not None:
                    imported.setdefault(_canonical(dist), name)
    undeclared = {d: m for d, m in imported.items() if d not in required | extras}
    assert not undeclared, f"imported but not declared (distribution: a module): {undeclared}"
    # Extras may hold what only their own imports need (an extra's model wheel, say).
    unused = sorted(required - set(imported))
    assert not unused, f"declared but never imported: {unused}"
