"""The layering rules of DESIGN.md §2, checked on the source (no imports run).

- Packages import down only: `cluster -> actors`, `serve -> proxy, actors`; `proxy` and
  `actors` import no other package of the project.
- A package never imports another package's `_` modules.
- No import cycle between any two modules of the project (imports inside functions count).
- No module imports another module's `_private` names, nor reaches them through an attribute:
  `module._name` on an imported project module, or `obj._name` where `_name` is defined
  (a function, class, variable or attribute) only in other modules of the project.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("actors", "cluster", "proxy", "serve")
ALLOWED = {"actors": set(), "proxy": set(), "cluster": {"actors"}, "serve": {"actors", "proxy"}}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


# `obj._name` uses that are not the project's: a third-party object's private field.
FOREIGN_PRIVATE = {
    ("serve._data.ingress", "_state"),  # Starlette's State keeps its items in `_state` (no public view)
}


def _from_module(node: ast.ImportFrom, name: str, path: Path) -> str:
    """The absolute module a `from ... import` in module `name` (at `path`) reads from."""
    if not node.level:
        return node.module or ""
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    anchor = base[: len(base) - (node.level - 1)]
    return ".".join(anchor + ([node.module] if node.module else []))


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import in the file."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _from_module(node, name, path)
            names = [alias.name for alias in node.names]
            submodules = [n for n in names if f"{module}.{n}" in modules]
            found += [(f"{module}.{n}", []) for n in submodules]
            rest = [n for n in names if n not in submodules]
            if rest:
                found.append((module, rest))
    return [(m, n) for m, n in found if m.split(".")[0] in PACKAGES]


def _graph() -> dict[str, list[tuple[str, list[str]]]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_packages_import_down_the_layers_only() -> None:
    wrong = []
    for module, imports in _graph().items():
        package = module.split(".")[0]
        for target, _ in imports:
            other = target.split(".")[0]
            if other != package and other not in ALLOWED[package]:
                wrong.append(f"{module} imports {target}")
            if other != package and any(part.startswith("_") for part in target.split(".")[1:]):
                wrong.append(f"{module} imports the private module {target}")
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_another_modules_private_names() -> None:
    wrong = [f"{module} imports {n} from {target}" for module, imports in _graph().items()
             for target, names in imports for n in names if n.startswith("_") and not n.startswith("__")]
    assert not wrong, "\n".join(wrong)


def _module_names(name: str, path: Path, tree: ast.AST, modules: dict[str, Path]) -> dict[str, str]:
    """The local names this file binds to project modules (`from . import x`, `import a.b as c`)."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in modules:
                    bound[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            module = _from_module(node, name, path)
            for alias in node.names:
                if f"{module}.{alias.name}" in modules:
                    bound[alias.asname or alias.name] = f"{module}.{alias.name}"
    return bound


def _defined(tree: ast.AST) -> set[str]:
    """Every name a file defines: functions, classes, variables, attributes it assigns."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
    return out


def _private(attr: str) -> bool:
    return attr.startswith("_") and not attr.startswith("__")


def test_no_module_reaches_another_modules_private_names_through_attributes() -> None:
    modules = _modules()
    trees = {name: ast.parse(path.read_text(), str(path)) for name, path in modules.items()}
    defined = {name: _defined(tree) for name, tree in trees.items()}
    wrong = []
    for name, tree in trees.items():
        bound = _module_names(name, modules[name], tree, modules)
        elsewhere = set().union(*(d for other, d in defined.items() if other != name)) - defined[name]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not _private(node.attr):
                continue
            value = node.value
            where = f"{name}:{node.lineno}: {ast.unparse(node)}"
            if isinstance(value, ast.Name) and value.id in bound:
                wrong.append(f"{where} (a private name of {bound[value.id]})")
            elif isinstance(value, ast.Name) and value.id in ("self", "cls"):
                continue
            elif node.attr in elsewhere and (name, node.attr) not in FOREIGN_PRIVATE:
                wrong.append(f"{where} (defined only in other modules)")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {m: sorted({t for t, _ in imports if t in modules and t != m}) for m, imports in _graph().items()}
    # A package's __init__ re-exports its modules: edges into a package mean its __init__.
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in graph.get(m, ()):
            if state.get(n) == 1:
                cycles.append([*stack[stack.index(n):], n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
