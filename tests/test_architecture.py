"""The layout's rules, read off the source: no import cycle, no private name across modules, and each
package imports only the packages below it (docs/architecture.md draws the same table)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "seeder"

# unit -> the units it may import. A module's unit is the longest entry that is a prefix of its name.
BASE = {"seeder.errors", "seeder.log", "seeder.fmt", "seeder.failpoints"}
ALLOWED = {
    "seeder.errors": set(),
    "seeder.log": set(),
    "seeder.fmt": set(),
    "seeder.failpoints": set(),
    "seeder.settings": {"seeder.errors", "seeder.log"},
    "seeder.aws": {"seeder.errors"},
    "seeder.spec": {"seeder.errors"},
    "seeder.integrity": {"seeder.spec"},
    "seeder.fetch": BASE | {"seeder.settings", "seeder.spec", "seeder.integrity"},
    # Unpacking a tar layer is needed to lock one (sources) and to install from one (install): its files land
    # through store.fs's durable writes.
    "seeder.untar": BASE | {"seeder.spec", "seeder.integrity", "seeder.store"},
    "seeder.registry": BASE | {"seeder.settings", "seeder.spec", "seeder.fetch"},
    "seeder.sources": BASE | {"seeder.settings", "seeder.spec", "seeder.fetch", "seeder.aws", "seeder.registry",
                              "seeder.untar"},
    "seeder.store": BASE | {"seeder.spec", "seeder.integrity", "seeder.aws"},
    "seeder.install": BASE | {"seeder.settings", "seeder.spec", "seeder.integrity", "seeder.fetch",
                              "seeder.sources", "seeder.store", "seeder.untar"},
    "seeder.resolve": BASE | {"seeder.settings", "seeder.spec", "seeder.fetch", "seeder.sources", "seeder.store"},
    "seeder.commands": BASE | {"seeder.settings", "seeder.spec", "seeder.integrity", "seeder.fetch",
                               "seeder.sources", "seeder.store", "seeder.install", "seeder.resolve",
                               "seeder.registry"},
    "seeder.cli": BASE | {"seeder", "seeder.settings", "seeder.commands"},
    "seeder.__main__": {"seeder.cli"},
    "seeder": {"seeder.store"},  # the public API: check() and installed() read a target, nothing more
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported seeder module, names taken from it, line) for every import, lazy ones included."""
    base = name if _is_package(name) else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "seeder"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                module = ".".join(anchor + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "seeder":
                continue
            names = [a.name for a in node.names]
            # `from . import log` imports the module seeder.log; `from .x import y` takes y from seeder.x.
            submodules = [n for n in names if f"{module}.{n}" in MODULES]
            found += [(f"{module}.{n}", [], node.lineno) for n in submodules]
            if len(submodules) < len(names):
                found.append((module, [n for n in names if n not in submodules], node.lineno))
    return found


def _unit(name: str) -> str:
    return max((u for u in ALLOWED if name == u or name.startswith(u + ".")), key=len)


def test_every_module_belongs_to_a_unit_of_the_table():
    assert {name: _unit(name) for name in MODULES}


def test_no_import_cycle_inside_seeder():
    graph = {name: {m for m, _, _ in _imports(name, path) if m in MODULES and m != name}
             for name, path in MODULES.items()}
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(node):] + [node]))
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, stack + [node])
        done.add(node)

    for name in sorted(graph):
        visit(name, [])


def test_no_private_name_crosses_a_module_boundary():
    offenders = []
    for name, path in MODULES.items():
        aliases = set()
        for module, names, line in _imports(name, path):
            offenders += [f"{name}:{line} imports {module}.{n}" for n in names
                          if n.startswith("_") and not n.startswith("__")]
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                aliases |= {a.asname or a.name for a in node.names}
            elif isinstance(node, ast.Import):
                aliases |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("seeder")}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                offenders.append(f"{name}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not offenders, offenders


def test_each_package_imports_only_what_the_layers_allow():
    broken = []
    for name, path in MODULES.items():
        unit = _unit(name)
        for module, _, line in _imports(name, path):
            other = _unit(module)
            if other == unit:
                if unit == "seeder.commands" and module != "seeder.commands" and name != "seeder.commands":
                    broken.append(f"{name}:{line} imports another command, {module}")
                continue
            if other not in ALLOWED[unit]:
                broken.append(f"{name}:{line} ({unit}) imports {module} ({other})")
    assert not broken, broken


def test_no_module_is_too_long():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 350}
    assert not long, long


def test_no_function_is_too_long():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 62:
                long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, long
