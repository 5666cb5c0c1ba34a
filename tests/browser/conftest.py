"""Fixtures for tests in a real browser: one JupyterLab and one Chromium for this package.

Every test here is marked ``browser`` (deselect with ``-m "not browser"``). They are skipped,
with a message saying how to enable them, when Debian's chromium or Playwright is missing.

The fixtures are package-scoped, not session-scoped: Playwright's sync API marks its event loop
as the running loop between calls, so while it lives ``asyncio.run()`` fails ("cannot be called
from a running event loop"). Package scope stops it before the tests of the other packages run;
for the same reason a test here cannot call ``asyncio.run()`` once it has a page.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.harness import CHROMIUM, CHROMIUM_ARGS, TIMEOUT, LabServer, browser_tools_missing

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.browser)
            # One JupyterLab and one Chromium: every browser test on the same xdist worker.
            item.add_marker(pytest.mark.xdist_group("browser"))


def _skip_without_browser_tools() -> None:
    reason = browser_tools_missing()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="package")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """A JupyterLab on 127.0.0.1 serving an empty temp dir; ``add()`` copies notebooks in."""
    _skip_without_browser_tools()
    server = LabServer(
        root_dir=tmp_path_factory.mktemp("lab-root"),
        state_dir=tmp_path_factory.mktemp("lab-state"),
    )
    try:
        server.start()
        yield server
    finally:  # also when start() failed half-way: no server process outlives the tests
        server.stop()


@pytest.fixture(scope="package")
def chromium() -> Iterator[Browser]:
    """Debian's headless Chromium, driven by Playwright."""
    _skip_without_browser_tools()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def lab_page(chromium: Browser, lab_server: LabServer) -> Iterator[Page]:
    """A fresh browser page (1280x800) for one test; its kernels are shut down afterwards."""
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT * 1000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
        lab_server.shutdown_kernels()
