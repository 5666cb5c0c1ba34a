"""Run stores (SQLite, memory) and run datasets (export, load).

Importing this package installs its stores as the engine's store backend
(:func:`tdevlab.engine.storage.install_backend`), so ``Engine(store="runs.db")`` opens a
SQLite store and ``Engine.export`` writes a dataset. ``export_run`` and ``load_run`` need
pandas and pyarrow; they are imported on first use so ``import tdevlab.store`` stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tdevlab.engine.storage import RunStore, install_backend
from tdevlab.store.base import BranchInfo, RunInfo
from tdevlab.store.memory import MemoryStore
from tdevlab.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from tdevlab.engine.problems import Problem

__all__ = [
    "BranchInfo",
    "MemoryStore",
    "RunDataset",
    "RunInfo",
    "RunStore",
    "SQLiteStore",
    "export_run",
    "lineage_frames",
    "load_run",
    "open_store",
]


def open_store(where: str | Path | None = None, keep_snapshots: int | None = 512) -> RunStore:
    """Open the SQLite store at ``where``, or a memory store when it is ``None``.

    Args:
        where: The SQLite file (created when missing), or ``None``.
        keep_snapshots: For a memory store: the newest generations kept for rollback
            (``None``: all).
    """
    if where is None:
        return MemoryStore(keep_snapshots=keep_snapshots)
    return SQLiteStore(where)


class _Backend:
    """The engine's store backend: this package's stores and dataset exporter."""

    def open(self, where: str | Path | None, keep_snapshots: int | None) -> RunStore:
        return open_store(where, keep_snapshots)

    def export(
        self, store: RunStore, run_id: int, path: str | Path, format: str, problem: Problem
    ) -> Path:
        from tdevlab.store.export import export_run  # pandas and pyarrow: only when used

        return export_run(store, run_id, path, format=format, problem=problem)


install_backend(_Backend())


def __getattr__(name: str) -> Any:
    if name in ("export_run", "load_run", "RunDataset"):
        from tdevlab.store import export

        return getattr(export, name)
    if name == "lineage_frames":  # pandas: only when used
        from tdevlab.store.dataset_lineage import lineage_frames

        return lineage_frames
    raise AttributeError(f"module 'tdevlab.store' has no attribute {name!r}")
