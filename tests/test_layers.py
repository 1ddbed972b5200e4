"""The library's layers: every import points down.

    pymaster.util  <  pymaster.mail  <  pymaster.master  <  pymaster.commands, services

A layer imports only the layers below it; no module of the library imports a
command or a service; a service imports no other service. Every import
statement of the tree counts, also one inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RANK = {"pymaster.util": 0, "pymaster.mail": 1, "pymaster.master": 2, "pymaster.commands": 3}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of PATH, relative ones made absolute."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def layer_of(module: str) -> str | None:
    for layer in RANK:
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def source_files(top: str) -> list[Path]:
    return sorted(p for p in (ROOT / top).rglob("*.py") if p.parent != ROOT / top
                  or p.name != "__init__.py")


def test_the_library_is_the_four_layers_and_nothing_beside_them():
    loose = [p.name for p in (ROOT / "pymaster").iterdir()
             if p.suffix == ".py" and p.name != "__init__.py"]
    packages = sorted(p.name for p in (ROOT / "pymaster").iterdir()
                      if (p / "__init__.py").exists())
    assert loose == []
    assert packages == ["commands", "mail", "master", "util"]


@pytest.mark.parametrize("path", source_files("pymaster"), ids=lambda p: module_name(p))
def test_a_library_module_imports_only_its_own_layer_and_those_below(path):
    own = layer_of(module_name(path))
    upward = [f"line {line}: {module}" for line, module in imported_modules(path)
              if module.startswith("services")
              or (layer_of(module) is not None and RANK[layer_of(module)] > RANK[own])]
    assert upward == []


@pytest.mark.parametrize("path", source_files("services"), ids=lambda p: module_name(p))
def test_a_service_imports_no_other_service_and_no_command(path):
    program = module_name(path).split(".")[1]
    wrong = [f"line {line}: {module}" for line, module in imported_modules(path)
             if module.startswith("pymaster.commands")
             or (module.startswith("services.") and module.split(".")[1] != program)]
    assert wrong == []


@pytest.mark.parametrize("path", source_files("services"), ids=lambda p: module_name(p))
def test_no_service_touches_zeromq(path):
    """zeromq stays inside pymaster/util/ipc.py: services see requests and replies."""
    zmq = [f"line {line}: {module}" for line, module in imported_modules(path)
           if module == "zmq" or module.startswith("zmq.")]
    assert zmq == []
    assert "zmq" not in path.read_text()
