"""The dashboard in a real browser: Start advances it, Pause holds it, a strategy chosen in
it before Start shows its live front.

JupyterLab on 127.0.0.1 and Debian's headless Chromium (fixtures in ``conftest``) open
``notebooks/01-quick-start.ipynb`` and run it; the notebook ends with the run stopped and
the server still running, so the dashboard's Start button continues the run. The test then
screenshots the dashboard; with ``TDEVLAB_UPDATE_SCREENSHOT=1`` it also writes the picture
to ``docs/dashboard.png`` (the README's screenshot), so that a normal run leaves the tree alone.
``strategy_dashboard.ipynb`` shows a dashboard over a server with no generation yet: the
strategy is chosen in its dropdown, Start clicked, and the front panel seen following the run.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tests.browser.harness import (
    NOTEBOOK,
    POLL,
    TIMEOUT,
    LabServer,
    open_notebook,
    run_all_cells,
    wait_for_text,
    wait_until,
)
from tests.conftest import MS

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

REPO = Path(__file__).resolve().parents[2]
QUICK_START = REPO / "notebooks" / "01-quick-start.ipynb"
STRATEGY_DASHBOARD = Path(__file__).with_name("strategy_dashboard.ipynb")
README_SCREENSHOT = REPO / "docs" / "dashboard.png"
UPDATE_SCREENSHOT = os.environ.get("TDEVLAB_UPDATE_SCREENSHOT") == "1"

#: Bound on running the whole notebook (usually 5-15 s). Longer than the notebook's own
#: 120 s bounds on its waits, so that a stuck cell fails with its own traceback.
NOTEBOOK_TIMEOUT = 5 * TIMEOUT
#: The dashboard's redraw period (``Dashboard(min_interval=0.5)``, the notebook's default).
REDRAW = 500 * MS
#: Generations the run must advance by after Start.
ADVANCE = 5

_GENERATION = re.compile(r"^\s*Generation\s+(\d+|—)\s*$")
#: The front panel's line, "Pareto front · 40 agents · generation 12 · hypervolume 1.234".
_FRONT = re.compile(r"Pareto front · (\d+) agents · generation (\d+)")
_RUN_STATE = re.compile(r"^\s*Run\s+(\S+)\s*$")


def _settled_generation(label: Locator, quiet: float) -> int:
    """The label's generation once it has stayed the same for ``quiet`` seconds.

    Raises:
        AssertionError: it kept changing for ``TIMEOUT`` seconds.
    """
    deadline = time.monotonic() + TIMEOUT
    value, since = _generation(label.inner_text()), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"the generation never settled: last {value}"
        time.sleep(POLL)
        now = _generation(label.inner_text())
        if now != value:
            value, since = now, time.monotonic()
    return value


def _generation(text: str) -> int:
    """The number in the generation label, "Generation N" (-1 while there is none: "—")."""
    match = _GENERATION.match(text)
    assert match is not None, f"not a generation label: {text!r}"
    return -1 if match[1] == "—" else int(match[1])


def _run_state(text: str) -> str:
    """The state in the run label, "Run paused" -> "paused"."""
    match = _RUN_STATE.match(text)
    assert match is not None, f"not a run-state label: {text!r}"
    return match[1]


def _button(dashboard: Locator, text: str) -> Locator:
    """The dashboard's button whose whole text is ``text``."""
    pattern = re.compile(rf"^\s*{re.escape(text)}\s*$")
    return dashboard.locator("button.jupyter-button").filter(has_text=pattern)


def _dashboard(page: Page) -> Locator:
    """The output that shows the dashboard: the one with its status line and its buttons."""
    panel = page.locator(NOTEBOOK)
    return (
        panel.locator(".jp-OutputArea-output")
        .filter(has=page.locator(".widget-html", has_text=_GENERATION))
        .filter(has=page.locator("button.jupyter-button", has_text="Rollback"))
        .first
    )


def _hide_file_browser(page: Page) -> None:
    """Close the left sidebar (Ctrl+B) so the notebook, and the dashboard, get the width."""
    left = page.locator("#jp-left-stack")
    if not left.is_visible():
        return
    page.locator(NOTEBOOK).locator(".jp-Notebook").click(position={"x": 5, "y": 5})
    page.keyboard.press("Escape")  # command mode: the shortcut is the application's
    page.keyboard.press("Control+b")
    wait_until(left.is_visible, lambda visible: not visible, what="file browser hidden")


def _check_png(path: Path) -> None:
    """A real picture: a PNG of some size, decodable, wide, and not mostly one colour."""
    import matplotlib.image
    import numpy as np

    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), path
    assert len(data) > 20_000, f"{path}: only {len(data)} bytes"
    pixels = np.asarray(matplotlib.image.imread(path))[..., :3]
    height, width = pixels.shape[:2]
    assert width >= 800, f"{path}: {width}x{height}"
    assert height >= 400, f"{path}: {width}x{height}"
    assert float(pixels.std()) > 0.05, f"{path}: nearly uniform (std {pixels.std():.3f})"
    # Plots, buttons and text: a good share of the pixels is not background white.
    not_white = float((pixels.min(axis=-1) < 0.9).mean())
    assert not_white > 0.05, f"{path}: {not_white:.1%} of the pixels are not white"


def test_quick_start_dashboard_starts_pauses_and_screenshots(
    lab_page: Page, lab_server: LabServer, tmp_path: Path
) -> None:
    """Run the quick start; Start advances generation and plot, Pause holds them; screenshot."""
    page = lab_page
    name = lab_server.add(QUICK_START)
    open_notebook(page, lab_server.base_url, name)
    run_all_cells(page, timeout=NOTEBOOK_TIMEOUT)

    dashboard = _dashboard(page)
    generation = dashboard.locator(".widget-html").filter(has_text=_GENERATION)
    run_state = dashboard.locator(".widget-html").filter(has_text=_RUN_STATE)
    # The plots are Image widgets; the notebook's closing snapshot is an <img> outside them.
    fitness = dashboard.locator("img.widget-image").first
    start, pause, resume = (_button(dashboard, text) for text in ("Start", "Pause", "Resume"))

    # The notebook ends with the run stopped: Start is the way on.
    assert _run_state(wait_for_text(run_state, lambda t: _run_state(t) == "stopped")) == "stopped"
    before = _generation(generation.inner_text())
    assert before >= 40, f"the notebook ran its generations: {before}"
    first_plot = wait_until(lambda: fitness.get_attribute("src"), bool, what="a fitness plot")

    start.click()
    wait_for_text(run_state, lambda t: _run_state(t) == "running")
    wait_for_text(generation, lambda t: _generation(t) >= before + ADVANCE)
    wait_until(
        lambda: fitness.get_attribute("src"),
        lambda src: bool(src) and src != first_plot,
        what="the fitness plot redrawn",
    )

    pause.click()
    wait_for_text(run_state, lambda t: _run_state(t) == "paused")
    assert wait_until(start.is_disabled, bool, what="Start disabled while paused")
    assert wait_until(resume.is_enabled, bool, what="Resume enabled while paused")
    assert pause.is_disabled()
    # A generation in flight when Pause arrived may still be published, and the label is
    # refreshed once per redraw period, later on a loaded machine: wait for the label to
    # settle (unchanged over four periods), then watch it hold.
    held = _settled_generation(generation, quiet=4 * REDRAW)
    assert held >= before + ADVANCE
    time.sleep(4 * REDRAW)  # four more refreshes, in which a running engine would move on
    assert _generation(generation.inner_text()) == held, "the generation moved while paused"
    assert _run_state(run_state.inner_text()) == "paused"

    # The screenshot: the dashboard's output, at the width the notebook has without sidebar.
    _hide_file_browser(page)
    box = wait_until(dashboard.bounding_box, bool, what="the dashboard's box")
    assert box is not None
    if box["height"] > 700:  # all of it in the notebook's scrolled area, not cut off
        page.set_viewport_size({"width": 1280, "height": int(box["height"]) + 300})
    dashboard.scroll_into_view_if_needed()
    time.sleep(POLL * 4)  # the relayout after the resize
    screenshot = tmp_path / "dashboard.png"
    dashboard.screenshot(path=screenshot, animations="disabled")
    _check_png(screenshot)
    if UPDATE_SCREENSHOT:
        README_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(screenshot, README_SCREENSHOT)


def _front_generation(text: str) -> int:
    """The generation in the front panel's line (-1 while it shows none)."""
    match = _FRONT.search(text)
    return -1 if match is None else int(match[2])


def test_strategy_chosen_in_the_dashboard_shows_the_live_front(
    lab_page: Page, lab_server: LabServer
) -> None:
    """Choose NSGA-II in the dropdown, click Start: the front panel appears and follows the
    run (its line and its plot change); the choice is then fixed."""
    page = lab_page
    name = lab_server.add(STRATEGY_DASHBOARD)
    open_notebook(page, lab_server.base_url, name)
    run_all_cells(page, timeout=NOTEBOOK_TIMEOUT)

    dashboard = _dashboard(page)
    run_state = dashboard.locator(".widget-html").filter(has_text=_RUN_STATE)
    wait_for_text(run_state, lambda t: _run_state(t) == "idle")
    choice = dashboard.locator(".widget-dropdown select")
    wait_until(choice.is_enabled, bool, what="the strategy choice enabled before Start")
    choice.select_option(label="NSGA-II")
    start = _button(dashboard, "Start")
    wait_until(start.is_enabled, bool, what="Start enabled")
    start.click()
    wait_for_text(run_state, lambda t: _run_state(t) == "running")

    front_line = dashboard.locator(".widget-html").filter(has_text=_FRONT)
    first = _front_generation(wait_for_text(front_line, lambda t: _front_generation(t) >= 0))
    # The innermost box with the front's line: the panel (its line, then its plot).
    line = page.locator(".widget-html", has_text=_FRONT)
    panel = dashboard.locator(".widget-vbox").filter(has=line).last
    front_plot = panel.locator("img.widget-image")
    drawn = wait_until(lambda: front_plot.get_attribute("src"), bool, what="a front plot")
    wait_for_text(front_line, lambda t: _front_generation(t) >= first + ADVANCE)
    wait_until(
        lambda: front_plot.get_attribute("src"),
        lambda src: bool(src) and src != drawn,
        what="the front plot redrawn",
    )
    assert wait_until(choice.is_disabled, bool, what="the choice fixed once the run started")
    assert choice.input_value() == "NSGA-II"  # the run's strategy
    _button(dashboard, "Stop").click()
    wait_for_text(run_state, lambda t: _run_state(t) == "stopped")
