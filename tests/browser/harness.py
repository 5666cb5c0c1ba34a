"""A real JupyterLab and a real Chromium for tests: the server process and page helpers.

Facts this relies on are in the shared notes on testing widgets: Debian's ``/usr/bin/chromium``
driven by Playwright's Python package (never ``playwright install``), JupyterLab on loopback with
no token, a settings override that silences news and update checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psutil

from tests.conftest import MS

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

T = TypeVar("T")

#: Bound on every wait for the page or the kernel (seconds).
TIMEOUT = 30_000 * MS
#: Bound on JupyterLab's start and stop (seconds).
SERVER_TIMEOUT = 60_000 * MS
#: Pause between two looks at something that is expected to change (seconds).
POLL = 50 * MS

CHROMIUM = Path(os.environ.get("TDEVLAB_CHROMIUM", "/usr/bin/chromium"))
#: Without the networking flags Chromium keeps trying to reach outside hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOW_TO_ENABLE = (
    "install Debian's chromium (apt-get install chromium)"
    " and the dev extra (pip install -e '.[dev]')"
)

#: JupyterLab settings for tests: no news, no update check, no toasts, no kernel dialog, every
#: cell rendered (no windowing), no autosave into the copied notebooks.
LAB_OVERRIDES: dict[str, dict[str, Any]] = {
    "@jupyterlab/apputils-extension:notification": {
        "checkForUpdates": False,
        "fetchNews": "false",
        "doNotDisturbMode": True,
    },
    "@jupyterlab/notebook-extension:tracker": {
        "autoStartDefaultKernel": True,
        "windowingMode": "none",
    },
    "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
}


def browser_tools_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found: {HOW_TO_ENABLE}"
    for module in ("playwright.sync_api", "jupyterlab", "ipywidgets"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not importable: {HOW_TO_ENABLE}"
    return None


def wait_until(
    read: Callable[[], T],
    predicate: Callable[[T], bool],
    timeout: float = TIMEOUT,
    what: str = "a condition",
) -> T:
    """Call ``read`` until ``predicate`` holds for its result; return that result.

    Args:
        read: Looks at the current state (may raise; the error counts as "not yet").
        predicate: The state wanted.
        timeout: Bound on the whole wait, in seconds.
        what: Names the wait in the failure message.

    Returns:
        The first value of ``read()`` for which ``predicate`` is true.

    Raises:
        AssertionError: ``timeout`` passed; the message shows the last value read.
    """
    deadline = time.monotonic() + timeout
    last: object = "<nothing read>"
    while True:
        try:
            value = read()
        except Exception as exc:  # a failed look (no such element yet) means "not yet"
            last = exc
        else:
            if predicate(value):
                return value
            last = value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout:.1f} s; last seen {last!r}")
        time.sleep(POLL)  # a poll: the page changes on its own


def wait_for_text(
    locator: Locator, predicate: Callable[[str], bool], timeout: float = TIMEOUT
) -> str:
    """Poll the text of one element until ``predicate`` holds for it; return that text.

    Raises:
        AssertionError: ``timeout`` (seconds) passed; the message shows the last text.
    """
    return wait_until(
        lambda: locator.inner_text(timeout=POLL * 1000 * 10),
        predicate,
        timeout,
        what=f"text of {locator}",
    )


# --------------------------------------------------------------------------------------- server


class LabServer:
    """A JupyterLab process on 127.0.0.1 serving ``root_dir``, with its own settings and kernel.

    Everything JupyterLab reads or writes lives under ``state_dir``: config, data (a ``python3``
    kernelspec that runs this interpreter, ``sys.executable``), runtime files, user settings,
    workspaces and the settings override, so the user's own Jupyter setup plays no part.
    """

    def __init__(self, root_dir: Path, state_dir: Path) -> None:
        self.root_dir = root_dir
        self.state_dir = state_dir
        self.port = 0
        self.base_url = ""
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = state_dir / "jupyterlab.log"

    def add(self, source: Path, name: str | None = None) -> str:
        """Copy a notebook (or a directory) into the served root; return its name there."""
        target = self.root_dir / (name or source.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
        return target.relative_to(self.root_dir).as_posix()

    def start(self) -> None:
        """Start JupyterLab on a free port and wait until ``/api/status`` answers.

        Call ``stop()`` afterwards even when this raises: the process may be running.

        Raises:
            RuntimeError: The server exited or did not answer in time (with its log's tail).
        """
        env = self._prepare()
        # The free port is found before JupyterLab binds it: another process may take it first.
        for _ in range(3):
            if self._launch(env):
                return
        raise RuntimeError(f"JupyterLab found no free port:\n{self.log()}")

    def _launch(self, env: dict[str, str]) -> bool:
        """Run the server on a free port; False when that port was taken meanwhile."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.allow_root=True",
            "--ServerApp.disable_check_xsrf=True",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            f"--LabApp.app_settings_dir={self.state_dir / 'app-settings'}",
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.root_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + SERVER_TIMEOUT
        while True:
            if self.process.poll() is not None:
                if f"port {self.port} is not available" in self.log():
                    return False
                raise RuntimeError(
                    f"JupyterLab exited with {self.process.returncode}:\n{self.log()}"
                )
            try:
                self.api("GET", "/api/status")
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not answer:\n{self.log()}") from None
                time.sleep(POLL * 2)  # a poll: JupyterLab is still starting
            else:
                return True

    def _prepare(self) -> dict[str, str]:
        """Write the state directories; return the environment for the server."""
        config, data = self.state_dir / "config", self.state_dir / "data"
        kernel_dir = data / "kernels" / "python3"
        app_settings = self.state_dir / "app-settings"
        for directory in (self.root_dir, config, kernel_dir, app_settings):
            directory.mkdir(parents=True, exist_ok=True)
        kernelspec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
        }
        (kernel_dir / "kernel.json").write_text(json.dumps(kernelspec, indent=1))
        (app_settings / "overrides.json").write_text(json.dumps(LAB_OVERRIDES, indent=1))
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=str(config),
            JUPYTER_DATA_DIR=str(data),
            # First on the search path: this python3 kernelspec wins over the environment's.
            JUPYTER_PATH=str(data),
            JUPYTER_RUNTIME_DIR=str(self.state_dir / "runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(self.state_dir / "user-settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(self.state_dir / "workspaces"),
            PYTHONUNBUFFERED="1",
        )
        env.pop("JUPYTER_CONFIG_PATH", None)
        return env

    def api(self, method: str, path: str) -> Any:
        """One REST call to the server; the decoded JSON reply (None when empty)."""
        request = urllib.request.Request(self.base_url + path, method=method)
        with urllib.request.urlopen(request, timeout=POLL * 100) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Delete every session and kernel, so no kernel outlives the test that started it."""
        for session in self.api("GET", "/api/sessions"):
            try:
                self.api("DELETE", f"/api/sessions/{session['id']}")
            except urllib.error.HTTPError as exc:  # already gone
                if exc.code != 404:
                    raise
        for kernel in self.api("GET", "/api/kernels"):
            try:
                self.api("DELETE", f"/api/kernels/{kernel['id']}")
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise

    def stop(self) -> None:
        """Stop the server: kernels first, then SIGTERM, then SIGKILL; no process outlives it."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(OSError):  # not answering: the signals below still stop it
            self.shutdown_kernels()
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=SERVER_TIMEOUT / 4)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=SERVER_TIMEOUT / 4)
        _, alive = psutil.wait_procs(children, timeout=SERVER_TIMEOUT / 4)
        for child in alive:
            child.kill()
        psutil.wait_procs(alive, timeout=SERVER_TIMEOUT / 4)

    def log(self) -> str:
        """The tail of the server's output, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "<no log>"


# ----------------------------------------------------------------------------------------- page

#: The notebook in the main area (JupyterLab hides, not removes, the other tabs).
NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"

#: Execution state of the current notebook, read in the page: the toolbar indicator's status,
#: how many cells show "[*]", how many non-empty code cells have no execution count yet, and
#: the text of stderr outputs (tracebacks and warnings) to explain a failure.
_EXECUTION_STATE = """(panel) => {
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  let running = 0, pending = 0;
  for (const cell of panel.querySelectorAll('.jp-CodeCell')) {
    const prompt = cell.querySelector('.jp-InputPrompt')?.textContent ?? '';
    const lines = [...cell.querySelectorAll('.cm-line')]
      .filter((line) => !line.querySelector('.cm-placeholder'))
      .map((line) => line.textContent).join('').trim();
    if (prompt.includes('*')) running += 1;
    else if (lines && !/\\[\\d+\\]/.test(prompt)) pending += 1;
  }
  const errors = [...panel.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
  )].map((output) => output.textContent);
  return {status: indicator?.dataset.status ?? null, running, pending, errors};
}"""


#: The notebook's kernel status from its toolbar. The execution indicator says "idle" while
#: there is no kernel yet ("No Kernel"), so a kernel name must be shown too.
_KERNEL_STATUS = """(panel) => {
  const name = panel.querySelector('.jp-KernelName')?.textContent.trim();
  const status = panel.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status;
  return name && name !== 'No Kernel' ? status : 'no kernel';
}"""


def open_notebook(page: Page, base_url: str, name: str, timeout: float = TIMEOUT) -> None:
    """Open ``name`` (relative to the served root) in JupyterLab and wait for an idle kernel.

    Opens ``/lab/tree/NAME?reset`` (a fresh layout), accepts a "Select Kernel" dialog if one
    appears, and returns once the notebook's kernel indicator says idle.

    Raises:
        AssertionError: No idle kernel within ``timeout`` seconds.
    """
    page.goto(f"{base_url}/lab/tree/{name}?reset", timeout=timeout * 1000)
    panel = page.locator(NOTEBOOK)
    # Keep the kernel that the "Select Kernel" dialog proposes: the notebook's, or the default.
    select_kernel = page.locator(".jp-Dialog", has_text="Select Kernel").locator(".jp-mod-accept")

    def status() -> str | None:
        if select_kernel.count():
            select_kernel.first.click(timeout=POLL * 1000 * 20)
        if panel.count() != 1:
            return None
        value: str | None = panel.evaluate(_KERNEL_STATUS)
        return value

    wait_until(status, lambda value: value == "idle", timeout, what=f"idle kernel for {name}")


def run_all_cells(page: Page, timeout: float = TIMEOUT) -> None:
    """Clear all outputs, then Run > Run All Cells from the menu bar; wait until all have run.

    Done means: the kernel indicator is idle, no cell shows ``[*]`` and every non-empty code
    cell has an execution count. Clearing first makes counts saved in the file meaningless.

    Raises:
        AssertionError: A cell failed (the message has the stderr outputs), or ``timeout``
            seconds passed.
    """
    _menu_command(page, "Edit", "editmenu:clear-all")
    _menu_command(page, "Run", "runmenu:run-all")
    panel = page.locator(NOTEBOOK)
    started = False
    settled_since: float | None = None

    def state() -> dict[str, Any]:
        value: dict[str, Any] = panel.evaluate(_EXECUTION_STATE)
        return value

    def finished(value: dict[str, Any]) -> bool:
        nonlocal started, settled_since
        busy = value["status"] != "idle" or value["running"]
        started = started or bool(busy)
        if busy or not value["pending"]:
            settled_since = None
            return not busy
        # Idle with cells left unrun: a cell failed (Run All stops there) once execution began;
        # give the kernel a moment in case the idle status came before the first "[*]".
        settled_since = settled_since or time.monotonic()
        return started or time.monotonic() - settled_since > POLL * 40

    value = wait_until(state, finished, timeout, what="Run All Cells to finish")
    if value["pending"]:
        errors = "\n".join(value["errors"]) or "<no stderr output>"
        raise AssertionError(f"{value['pending']} cell(s) did not run; stderr:\n{errors}")


def _menu_command(page: Page, menu: str, command: str) -> None:
    """Click a menu of the menu bar, then its item bound to ``command``."""
    page.locator("#jp-menu-panel .lm-MenuBar-item", has_text=re.compile(rf"^{menu}$")).click()
    page.locator(f".lm-Menu-item[data-command='{command}']").click()


def click_button(page: Page, text: str, timeout: float = TIMEOUT) -> None:
    """Click the one widget button (``button.jupyter-button``) whose whole text is ``text``.

    Waits up to ``timeout`` seconds for such a button to exist and be enabled.
    """
    pattern = re.compile(rf"^\s*{re.escape(text)}\s*$")
    page.locator("button.jupyter-button").filter(has_text=pattern).click(timeout=timeout * 1000)
