"""MkDocs hook: the notebooks in notebooks/ become pages under notebooks/ of the site.

They are copied to a temporary directory first, so that mkdocs-jupyter executes each one
there (a notebook's working directory is its own folder) and what they write (a SQLite
store, an exported dataset, a PNG) never lands in the repository.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
_workdirs: list[tempfile.TemporaryDirectory[str]] = []


@event_priority(100)  # before mkdocs-jupyter, which wraps every .ipynb file it is given
def on_files(files: Files, config: Any) -> Files:
    workdir = tempfile.TemporaryDirectory(prefix="tdevlab-docs-")
    _workdirs.append(workdir)
    (Path(workdir.name) / "notebooks").mkdir()
    for notebook in sorted(NOTEBOOKS.glob("*.ipynb")):
        shutil.copy2(notebook, Path(workdir.name) / "notebooks" / notebook.name)
        files.append(
            File(
                f"notebooks/{notebook.name}",
                src_dir=workdir.name,
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files


def on_post_build(config: Any) -> None:
    while _workdirs:
        _workdirs.pop().cleanup()
