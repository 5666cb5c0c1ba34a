"""The public API: every exported name imports, and `import tdevlab` stays cheap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tdevlab


def test_every_name_in_all_imports() -> None:
    """Each name listed in tdevlab.__all__ is importable from the package."""
    for name in tdevlab.__all__:
        assert getattr(tdevlab, name) is not None, name


def test_import_does_not_load_pandas() -> None:
    """`import tdevlab` (engine, stores) loads neither pandas nor pyarrow nor matplotlib."""
    code = (
        "import sys, tdevlab; "
        "print(','.join(m for m in ('pandas', 'pyarrow', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_engine_and_store_know_nothing_of_websockets(tmp_path: Path) -> None:
    """Importing and running the engine with a SQLite store loads no server or notebook stack."""
    code = (
        "import sys\n"
        "import tdevlab.engine, tdevlab.store\n"
        "engine = tdevlab.engine.Engine(seed=1, population_size=10, store=sys.argv[1])\n"
        "for _ in engine.run(generations=3):\n"
        "    pass\n"
        "engine.rollback(1)\n"
        "engine.close()\n"
        "print(','.join(m for m in ('websockets', 'jwt', 'ipywidgets', 'dask')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "runs.db")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == ""
