"""The browser harness end to end: JupyterLab, Chromium and live widgets in widget_probe.ipynb."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tests.browser.harness import (
    NOTEBOOK,
    LabServer,
    click_button,
    open_notebook,
    run_all_cells,
    wait_for_text,
    wait_until,
)
from tests.conftest import MS

if TYPE_CHECKING:
    from playwright.sync_api import Page

PROBE = Path(__file__).with_name("widget_probe.ipynb")


def _count(text: str) -> int:
    """The number in the probe's label, "count N"."""
    match = re.fullmatch(r"count (\d+)", text.strip())
    assert match is not None, text
    return int(match[1])


def test_lab_server_answers_and_runs_kernels_from_this_python(lab_server: LabServer) -> None:
    """The server answers on 127.0.0.1 and its python3 kernelspec runs sys.executable."""
    assert lab_server.base_url.startswith("http://127.0.0.1:")
    assert "started" in lab_server.api("GET", "/api/status")
    spec = lab_server.api("GET", "/api/kernelspecs")["kernelspecs"]["python3"]["spec"]
    assert spec["argv"][0] == sys.executable


def test_probe_counts_while_running_and_holds_when_paused(
    lab_page: Page, lab_server: LabServer, tmp_path: Path
) -> None:
    """Start advances the label and the image, Pause holds them; the page screenshots."""
    name = lab_server.add(PROBE)
    open_notebook(lab_page, lab_server.base_url, name)
    run_all_cells(lab_page)
    panel = lab_page.locator(NOTEBOOK)
    # The first code cell prints the kernel's sys.prefix: the test run's environment.
    stdout = panel.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stdout']")
    assert stdout.first.inner_text().strip() == sys.prefix

    label = panel.locator(".widget-label")
    image = panel.locator("img.widget-image")
    assert _count(wait_for_text(label, lambda text: text.startswith("count"))) == 0
    first_src = image.get_attribute("src")

    click_button(lab_page, "Start")
    wait_for_text(label, lambda text: _count(text) >= 3)
    wait_until(lambda: image.get_attribute("src"), lambda src: src != first_src, what="new image")

    click_button(lab_page, "Pause")
    # The task renames the button when it takes the command: from then on it does not count.
    wait_for_text(panel.locator("button.jupyter-button"), lambda text: text.strip() == "Start")
    held = _count(label.inner_text())
    time.sleep(1000 * MS)  # five ticks of the probe's task
    assert _count(label.inner_text()) == held

    screenshot = tmp_path / "probe.png"
    lab_page.screenshot(path=screenshot)
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_run_all_cells_reports_the_cell_that_failed(
    lab_page: Page, lab_server: LabServer, tmp_path: Path
) -> None:
    """When a cell raises, run_all_cells fails with its traceback instead of waiting on."""
    notebook = new_notebook(
        cells=[new_code_cell('print("before")'), new_code_cell("1 / 0"), new_code_cell("2")],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    )
    nbformat.write(notebook, tmp_path / "failing.ipynb")
    name = lab_server.add(tmp_path / "failing.ipynb")
    open_notebook(lab_page, lab_server.base_url, name)
    with pytest.raises(AssertionError, match=r"(?s)^1 cell\(s\) did not run.*ZeroDivisionError"):
        run_all_cells(lab_page)
