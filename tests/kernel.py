"""Run notebooks in a real Jupyter kernel (nbclient), as the notebook tests do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

from tests.conftest import timeout


def execute(notebook: Any, workdir: Path, *, cell_timeout: float = 300, **options: Any) -> Any:
    """Execute ``notebook`` (a path or an nbformat notebook) in a fresh python3 kernel
    whose working directory is ``workdir``; return the notebook with its outputs. Each cell
    may take ``timeout(cell_timeout)`` seconds.

    ``options`` go to :class:`nbclient.NotebookClient` (``store_widget_state=True``, ...).
    Raises nbclient's ``CellExecutionError`` when a cell fails.
    """
    if isinstance(notebook, str | Path):
        notebook = nbformat.read(notebook, as_version=4)
    NotebookClient(
        notebook,
        timeout=timeout(cell_timeout),
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
        **options,
    ).execute()
    return notebook
