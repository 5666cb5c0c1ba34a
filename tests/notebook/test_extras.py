"""A notebook names the optional extra it needs up front, and fails with the install command."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from tdevlab.notebook import require
from tdevlab.notebook.extras import EXTRA_MODULES

ROOT = Path(__file__).resolve().parents[2]
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_an_installed_extra_passes() -> None:
    """require() returns quietly when every module of the extra imports."""
    require("dev", "pytest", "hypothesis")


def test_a_missing_module_names_the_extra_and_the_command() -> None:
    """A missing module is a ModuleNotFoundError naming who needs which extra and how to get it."""
    with pytest.raises(ModuleNotFoundError) as raised:
        require("turbo", "tdevlab_no_such_module", by="notebook 09")
    assert str(raised.value) == (
        "notebook 09 needs the turbo extra (module 'tdevlab_no_such_module' is not installed): "
        "pip install 'tdevlab[turbo]'"
    )
    assert raised.value.name == "tdevlab_no_such_module"
    assert isinstance(raised.value.__cause__, ModuleNotFoundError)


def test_an_extra_without_modules_listed_is_its_own_module() -> None:
    """With no modules given or listed, the extra's name is the module checked."""
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'tdevlab\[tdevlab_nope\]'"):
        require("tdevlab_nope")


def test_the_listed_extras_are_the_projects() -> None:
    """Every extra with listed modules is an extra of pyproject.toml."""
    assert set(EXTRA_MODULES) <= set(EXTRAS)


def _code_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_each_notebook_says_what_it_needs_first(path: Path) -> None:
    """The first code cell says what the notebook needs and requires every extra it imports."""
    cells = _code_cells(path)
    assert cells[0].startswith("# Needs "), cells[0][:80]
    imported = set(re.findall(r"^\s*(?:from|import)\s+(\w+)", "\n".join(cells), re.MULTILINE))
    for extra in EXTRAS:
        modules = {module.split(".")[0] for module in EXTRA_MODULES.get(extra, (extra,))}
        if modules & imported:
            assert f'require("{extra}"' in cells[0], f"{path.name} imports {extra} modules"
