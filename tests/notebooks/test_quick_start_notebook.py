"""Notebook 01 (quick start) executed by a real kernel, its outputs checked."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.kernel import execute as execute_notebook

# The module executes its notebook once (a module fixture): its tests stay on one xdist worker.
pytestmark = [pytest.mark.notebook, pytest.mark.xdist_group(__name__)]

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "01-quick-start.ipynb"


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The quick-start notebook, executed once in a fresh kernel in a temp dir."""
    workdir = tmp_path_factory.mktemp("quick-start")
    nb = execute_notebook(NOTEBOOK, workdir, store_widget_state=True)
    nb.metadata["workdir"] = str(workdir)
    return nb


def _cell(nb: Any, fragment: str) -> Any:
    cells = [c for c in nb.cells if c.cell_type == "code" and fragment in c.source]
    assert len(cells) == 1, fragment
    return cells[0]


def _stdout(cell: Any) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream")


def _number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not in {text!r}"
    return int(match.group(1))


def test_server_client_and_dashboard_come_up(notebook: Any) -> None:
    """The server prints its URL, the client connects, the dashboard is a displayed widget."""
    assert re.search(
        r"serving ws://127\.0\.0\.1:\d+/v1/evolution", _stdout(_cell(notebook, "server.start()"))
    )
    assert "connection open | run idle" in _stdout(_cell(notebook, "tdevlab.connect("))
    shown = _cell(notebook, "tdevlab.Dashboard(client)").outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in shown)


def test_run_steered_from_code_regresses_and_rolls_back(notebook: Any) -> None:
    """The run pauses past 40, a forced regression alert names a generation, the rollback
    goes there on a new branch, and the frame shows both branches."""
    paused = _number(r"paused at generation (\d+)", _stdout(_cell(notebook, "client.start(")))
    assert paused >= 40
    alert = _stdout(_cell(notebook, "mutation_rate=0.9"))
    assert "Fitness Regression Detected" in alert
    target = _number(r"recommended: rollback to generation (\d+)", alert)
    assert target <= paused + 10
    rolled = _cell(notebook, "client.rollback(")
    assert f"rolled back to generation {target}, now on branch 1" in _stdout(rolled)
    table = rolled.outputs[-1]["data"]["text/plain"]
    rows = [line.split() for line in table.splitlines()[2:]]
    assert [row[0] for row in rows] == ["0", "1"]
    assert int(rows[1][1]) == target + 1  # branch 1 starts right after the rollback
    assert float(rows[1][-1]) == 0.1
    assert float(rows[0][-1]) == 0.9


def test_buttons_steer_the_run(notebook: Any) -> None:
    """Clicking Resume then Pause sends those commands and leaves the run paused."""
    text = _stdout(_cell(notebook, "dashboard.resume_button"))
    assert "buttons sent: ['resume', 'pause'] | run paused" in text


def test_snapshot_and_dataset(notebook: Any) -> None:
    """The dashboard snapshot is a PNG shown in the notebook; the exported run loads back."""
    cell = _cell(notebook, "dashboard.snapshot(")
    assert re.search(r"<RunDataset run=1 problem=agent_design generations=\d+", _stdout(cell))
    assert any("image/png" in o.get("data", {}) for o in cell.outputs)
    png = Path(notebook.metadata["workdir"]) / "quickstart-dashboard.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
