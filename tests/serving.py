"""`tdevlab serve` in a subprocess, for the tests that kill, restart or freeze a server."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tdevlab.protocol.auth import issue_token
from tests.server.conftest import TIMEOUT

SECRET = "serve-test-secret-long-enough-for-hs256"


@contextmanager
def serve_store(
    db: Path, *extra: str, port: int = 0
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`tdevlab serve` on 127.0.0.1:``port`` with the SQLite store ``db``.

    It runs in the store's folder with population 30, no metrics events and the secret
    ``SECRET``, plus ``extra`` options. Yields the process and the URL it printed, once it
    serves; the process is killed at the end if it is still alive.
    """
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tdevlab.cli",
            "serve",
            "--port",
            str(port),
            "--db",
            str(db),
            "--secret",
            SECRET,
            "--population-size",
            "30",
            "--metrics-interval",
            "0",
            *extra,
        ],  # fmt: skip
        cwd=db.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + TIMEOUT
        while "serving" not in (line := proc.stdout.readline()):
            assert line or proc.poll() is None, "the server exited before serving"
            assert time.monotonic() < deadline, "the server did not start"
        yield proc, line.split("serving ")[1].strip()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)


def operator_token() -> str:
    """A fresh operator token signed with ``SECRET``."""
    return issue_token(SECRET, "ada", "operator", now=time.time())
