"""The lineage view in a real browser: click an agent, see its tree; branch, see the fork.

JupyterLab on 127.0.0.1 and Debian's headless Chromium (fixtures in ``conftest``) run
``lineage_view.ipynb``: a running server and ``tdevlab.LineageView`` of its client. The test
clicks the latest point of the fitness plot (that generation's best agent; plotly's points are
SVG elements and its click reaches the kernel), sees the family tree drawn with as many nodes
as the summary line counts and the agent's code diff, clicks "Branch from here" and sees the
fitness plot and the branch tree fork. With ``TDEVLAB_UPDATE_SCREENSHOT=1`` it writes the
view's picture to ``docs/lineage.png`` (the README's), so that a normal run leaves the tree
alone.
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
from tests.browser.test_dashboard_browser import _check_png, _hide_file_browser

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

REPO = Path(__file__).resolve().parents[2]
LINEAGE_VIEW = Path(__file__).with_name("lineage_view.ipynb")
README_SCREENSHOT = REPO / "docs" / "lineage.png"
UPDATE_SCREENSHOT = os.environ.get("TDEVLAB_UPDATE_SCREENSHOT") == "1"
NOTEBOOK_TIMEOUT = 5 * TIMEOUT
#: Clicks on the fitness plot at most, and the wait for the lineage after each (seconds).
CLICKS = 5
CLICK_WAIT = TIMEOUT / 4

#: The summary line: "Lineage of agent-97: 6 nodes, 1 branch (generations 0–23)".
_SUMMARY = re.compile(r"Lineage of (agent-\d+): (\d+) nodes?, (\d+) branch")
_BRANCHES = re.compile(r"(\d+) branch(?:es)?, (\d+) forks?")


def _view(page: Page) -> Locator:
    """The output that shows the lineage view: the one with its "Branch from here" button."""
    return (
        page.locator(NOTEBOOK)
        .locator(".jp-OutputArea-output")
        .filter(has=page.locator("button.jupyter-button", has_text="Branch from here"))
        .first
    )


def _plot(view: Locator, title: str) -> Locator:
    """The plotly plot whose title starts with ``title``."""
    return view.locator(".js-plotly-plot").filter(has=view.page.locator(".gtitle", has_text=title))


def test_click_an_agent_see_its_tree_branch_and_see_the_fork(
    lab_page: Page, lab_server: LabServer, tmp_path: Path
) -> None:
    """Click a generation's best in the fitness plot: its tree appears with every node of its
    lineage; "Branch from here" forks the run: the fitness plot shows two branches."""
    page = lab_page
    name = lab_server.add(LINEAGE_VIEW)
    open_notebook(page, lab_server.base_url, name)
    run_all_cells(page, timeout=NOTEBOOK_TIMEOUT)
    _hide_file_browser(page)

    view = _view(page)
    fitness = _plot(view, "Best fitness per generation")
    points = fitness.locator(".scatterlayer .trace .point")
    wait_until(points.count, lambda n: n >= 6, what="six generations in the fitness plot")
    fitness.scroll_into_view_if_needed()
    summary = view.locator(".widget-html").filter(has_text=_SUMMARY)
    # The newest generation's best: born lately, so it has ancestors to show. A redraw (two a
    # second) can replace the point between the pointer's move and its click, and plotly then
    # reports no click: click again until the lineage shows.
    for _attempt in range(CLICKS):
        points.last.click(force=True)  # force: do not wait for the element to hold still
        try:
            text = wait_for_text(summary, lambda t: _SUMMARY.search(t) is not None, CLICK_WAIT)
        except AssertionError:
            continue
        break
    else:
        raise AssertionError(f"no lineage shown after {CLICKS} clicks on the fitness plot")
    match = _SUMMARY.search(text)
    assert match is not None
    agent, nodes = match[1], int(match[2])
    tree = _plot(view, f"Family tree of {agent}")
    wait_until(
        lambda: tree.locator(".scatterlayer .point").count(),
        lambda n: n == nodes,
        what=f"the {nodes} nodes of {agent}'s tree",
    )
    assert nodes >= 2, f"{agent} has ancestors"
    details = view.locator(".widget-html").filter(has_text=f"{agent}").filter(has_text="fitness")
    wait_for_text(details.last, lambda t: "code diff against" in t)

    view.locator("button.jupyter-button", has_text="Branch from here").click()
    wait_for_text(
        view.locator(".widget-html").filter(has_text="branched from"),
        lambda t: f"branched from {agent}" in t,
    )
    forked = _plot(view, "Best fitness per generation, 2 branch")
    wait_until(
        lambda: forked.locator(".scatterlayer .trace").count(),
        lambda n: n == 2,
        what="two branches in the fitness plot",
    )
    label = view.locator(".widget-html").filter(has_text=_BRANCHES)
    wait_for_text(label, lambda t: "2 branches, 1 fork" in t)

    box = wait_until(view.bounding_box, bool, what="the view's box")
    assert box is not None
    page.set_viewport_size({"width": 1280, "height": int(box["height"]) + 300})
    view.scroll_into_view_if_needed()
    time.sleep(POLL * 4)  # the relayout after the resize
    screenshot = tmp_path / "lineage.png"
    view.screenshot(path=screenshot, animations="disabled")
    _check_png(screenshot)
    if UPDATE_SCREENSHOT:
        shutil.copyfile(screenshot, README_SCREENSHOT)
