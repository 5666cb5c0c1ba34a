"""The benchmarks' reports: tables (aligned plain text, GitHub Markdown), target checks,
the versions measured with, and the raw numbers as JSON."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "check_lines",
    "check_markdown",
    "format_markdown",
    "format_plain",
    "load_average",
    "report_checks",
    "versions",
    "write_json",
]


def format_plain(rows: list[list[str]]) -> str:
    """Align a table in columns (first column left, the others right)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(rows: list[list[str]]) -> str:
    """Render a table as GitHub Markdown."""
    header, *body = rows
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---", *["---:"] * (len(header) - 1)]) + "|",
    ]
    lines.extend("| " + " | ".join(row) + " |" for row in body)
    return "\n".join(lines)


def _spread(check: dict[str, Any]) -> str:
    """ ", min-max a-b of the runs" when the check has a spread, and whether it crosses."""
    if "spread" not in check:
        return ""
    low, high = check["spread"]
    crosses = "; the spread crosses the target" if check.get("crosses") else ""
    return f", min-max {low:.2f}-{high:.2f}{crosses}"


def check_lines(results: list[dict[str, Any]]) -> str:
    """One plain line per target check: status, name, value (and spread) and target."""
    return "\n".join(
        f"{c['status']:4}  {c['name']} = {c['value']:.2f} ({c['target']}{_spread(c)})"
        for c in results
    )


def check_markdown(results: list[dict[str, Any]]) -> str:
    """The target checks as a Markdown list."""
    return "\n".join(
        f"- {c['name']} = {c['value']:.2f} (target {c['target']}{_spread(c)}): **{c['status']}**"
        for c in results
    )


def versions(*packages: str, implementation: bool = False) -> dict[str, Any]:
    """The interpreter, the platform, each package's installed version, the CPUs available.

    A package that is not installed is reported as such; ``nproc`` counts the CPUs this
    process may run on (all of them off Linux).
    """
    out: dict[str, Any] = {"python": platform.python_version()}
    if implementation:
        out["implementation"] = platform.python_implementation()
    out["platform"] = platform.platform()
    for package in packages:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    try:
        out["nproc"] = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        out["nproc"] = os.cpu_count()
    return out


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write the raw numbers to ``path`` (values JSON cannot hold as text) and say where."""
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nraw numbers written to {path}")


def report_checks(
    rows: list[list[str]], results: list[dict[str, Any]], elapsed: float, markdown: bool
) -> None:
    """Print the target checks and the run's time and load, then with ``markdown`` the table
    and the checks as Markdown.

    A missed target is a result, not an error: the benchmarks exit 0 once they ran.
    """
    print(check_lines(results))
    print(f"\n{elapsed:.0f} s; load average at the end {load_average()}")
    if markdown:
        print()
        print(format_markdown(rows))
        print()
        print(check_markdown(results))


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())
