"""The public API: every exported name imports, and `import tdevlab` stays cheap."""

from __future__ import annotations

import subprocess
import sys

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
