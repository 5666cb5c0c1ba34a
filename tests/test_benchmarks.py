"""Every benchmark's quick mode runs to the end on a fresh interpreter (no timing asserted)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import timeout

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem[0] != "_")
CASES = [
    *((name, "path") for name in BENCHMARKS),
    # Run as a module too: the file is named like Dask's package, which its workers import.
    ("distributed", "module"),
]


def _tables(lines: list[str]) -> list[int]:
    """Where the plain-text tables start: a header, a rule of dashes, at least one row."""
    return [
        i
        for i in range(1, len(lines) - 1)
        if set(lines[i]) == {"-", " "} and lines[i - 1].strip() and lines[i + 1].strip()
    ]


def test_every_benchmark_is_covered() -> None:
    """The quick-mode test finds the benchmarks (scripts in benchmarks/, helpers start with _)."""
    assert {"distributed", "engine_vs_peers", "fanout"} <= set(BENCHMARKS)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "how"), CASES, ids=[f"{n}-{h}" for n, h in CASES])
def test_quick_mode_runs_and_prints_its_table(name: str, how: str, tmp_path: Path) -> None:
    """`--quick` exits 0 and prints the benchmark's table, run by path or as a module."""
    if name == "distributed" and importlib.util.find_spec("distributed") is None:
        pytest.skip("Dask is in the `dask` extra: pip install -e .[dask]")
    if how == "path":  # as the docs show it, from anywhere
        command, cwd = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py")], tmp_path
    else:  # python -m benchmarks.<name>, from the repository's root
        command, cwd = [sys.executable, "-m", f"benchmarks.{name}"], ROOT
    out = subprocess.run(
        [*command, "--quick"], capture_output=True, text=True, timeout=timeout(180), cwd=cwd
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    starts = _tables(lines)
    assert starts, out.stdout
    if name == "distributed":  # every contestant made its generations, Dask's included
        rows = lines[starts[0] + 1 :]
        for contestant in ("serial", "process pool", "dask LocalCluster, tuned"):
            assert any(row.startswith(contestant) for row in rows), out.stdout
