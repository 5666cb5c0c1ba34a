"""Every benchmark's quick mode runs to the end on a fresh interpreter (no timing asserted)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Each benchmark and the first header cell of the table it prints.
TABLES = {
    "fanout": "subscribers",
    "distributed": "contestant",
    "engine_vs_peers": "contestant",
    "frames": "phase",
    "stalled_reader": "run",
    "churn_soak": "quantity",
    "strategies_vs_peers": "case",
}
CASES = [
    *((name, "path") for name in TABLES),
    # Run as a module too: the file is named like Dask's package, which its workers import.
    ("distributed", "module"),
]


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
        [*command, "--quick"], capture_output=True, text=True, timeout=180, cwd=cwd
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith(TABLES[name] + " ")), None)
    assert header is not None, out.stdout
    rule = lines[header + 1]
    assert set(rule) == {"-", " "}, rule
    assert lines[header + 2].strip(), "the table has no rows"
    if name == "distributed":  # every contestant made its generations, Dask's included
        for contestant in ("serial", "process pool", "dask LocalCluster, tuned"):
            assert any(line.startswith(contestant) for line in lines[header + 2 :]), out.stdout
