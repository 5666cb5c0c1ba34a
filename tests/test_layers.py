"""The packages depend on each other in one direction: protocol and engine stand alone.

Each check imports a package and all its modules in a fresh interpreter whose ``tdevlab``
package is a bare namespace (so ``tdevlab/__init__.py``, which wires the layers together,
does not pull the others in), then lists what got imported. A static scan also catches
imports inside functions, which an import alone would not run.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import timeout

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tdevlab"

PROBE = """
import importlib, json, pkgutil, sys, types
root = sys.argv[1]
bare = types.ModuleType("tdevlab")
bare.__path__ = [root + "/tdevlab"]
sys.modules["tdevlab"] = bare
package = importlib.import_module(sys.argv[2])
for info in pkgutil.walk_packages(package.__path__, sys.argv[2] + "."):
    importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""

FORBIDDEN = {
    "tdevlab.protocol": ("tdevlab.engine", "tdevlab.store", "tdevlab.server", "tdevlab.client",
                         "numpy", "websockets"),
    "tdevlab.engine": ("tdevlab.store", "tdevlab.server", "tdevlab.client", "tdevlab.notebook",
                       "websockets", "pandas"),
}  # fmt: skip


def _imported(package: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT), package],
        capture_output=True,
        text=True,
        timeout=timeout(120),
        check=True,
    )
    modules: list[str] = json.loads(out.stdout)
    return modules


def _names_imported_anywhere(package: str) -> set[str]:
    """Every module an import statement of the package names, at any depth of the code."""
    names: set[str] = set()
    for path in (PACKAGE / package.split(".")[1]).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_none_of_the_layers_above_it(package: str) -> None:
    """Importing every module of the package loads none of the forbidden modules."""
    modules = _imported(package)
    assert any(m.startswith(package + ".") for m in modules)  # the probe did import it
    loaded = [m for m in modules if m.startswith(FORBIDDEN[package])]
    assert loaded == [], f"{package} imports {loaded}"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_statement_reaches_a_layer_above(package: str) -> None:
    """No import statement in the package, not even inside a function, names them."""
    names = _names_imported_anywhere(package)
    bad = sorted(n for n in names if n.startswith(FORBIDDEN[package]))
    assert bad == [], f"{package} has import statements of {bad}"


def test_no_module_is_over_600_lines() -> None:
    """Small modules: none of the package's modules is over 600 lines."""
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert {p: n for p, n in sizes.items() if n > 600} == {}
