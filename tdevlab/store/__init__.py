"""Run stores (SQLite, memory) and run datasets (export, load).

``export_run`` and ``load_run`` need pandas and pyarrow; they are imported on first use so
``import tdevlab.store`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from tdevlab.store.base import BranchInfo, RunInfo
from tdevlab.store.memory import MemoryStore
from tdevlab.store.sqlite import SQLiteStore

__all__ = [
    "BranchInfo",
    "MemoryStore",
    "RunDataset",
    "RunInfo",
    "SQLiteStore",
    "export_run",
    "load_run",
]


def __getattr__(name: str) -> Any:
    if name in ("export_run", "load_run", "RunDataset"):
        from tdevlab.store import export

        return getattr(export, name)
    raise AttributeError(f"module 'tdevlab.store' has no attribute {name!r}")
