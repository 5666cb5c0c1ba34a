"""Smoke tests of benchmarks/engine_vs_peers.py at its smallest settings (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import timeout

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "engine_vs_peers.py"
TINY = ("--population", "20", "--generations", "2", "--repeats", "1")
LABELS = {
    "numpy": "numpy floor",
    "tdevlab": "tdevlab (events on, store off)",
    "tdevlab-sqlite": "tdevlab + SQLite store",
    "deap": "DEAP",
    "pygad": "PyGAD",
}


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the benchmark script as its users do (its own folder first on sys.path)."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, *args],
        capture_output=True,
        text=True,
        timeout=timeout(120),
    )


def _table_contestants(stdout: str) -> list[str]:
    """The first column of the plain-text table, header and rule skipped."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("contestant "))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append(line)
    return [label for row in rows for label in LABELS.values() if row.startswith(label + "  ")]


def test_engine_vs_peers_runs_tdevlab_and_the_floor() -> None:
    """The tdevlab and NumPy contestants (no optional peers needed) run and fill the table."""
    out = _bench("--only", "numpy,tdevlab,tdevlab-sqlite")
    assert out.returncode == 0, out.stderr
    assert _table_contestants(out.stdout) == [
        LABELS["numpy"],
        LABELS["tdevlab"],
        LABELS["tdevlab-sqlite"],
    ]
    assert "population 20, 2 generations (+ init), 1 repeats" in out.stdout
    assert "repeat 1/1 (seed 1)" in out.stderr
    # Targets that need DEAP are reported as skipped, not failed or left out.
    assert "SKIP  deap / tdevlab" in out.stdout


def test_engine_vs_peers_runs_every_contestant() -> None:
    """With DEAP and PyGAD installed, one tiny run names every contestant in the table."""
    pytest.importorskip("deap", reason="DEAP is in the `bench` extra: pip install -e .[bench]")
    pytest.importorskip("pygad", reason="PyGAD is in the `bench` extra: pip install -e .[bench]")
    out = _bench()
    assert out.returncode == 0, out.stderr
    assert _table_contestants(out.stdout) == list(LABELS.values())
    for check in ("tdevlab / numpy", "tdevlab-sqlite / numpy", "deap / tdevlab"):
        assert check in out.stdout
