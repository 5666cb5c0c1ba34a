"""Tables for the benchmarks' reports: aligned plain text and GitHub Markdown."""

from __future__ import annotations

from typing import Any

__all__ = ["check_lines", "check_markdown", "format_markdown", "format_plain"]


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


def check_lines(results: list[dict[str, Any]]) -> str:
    """One plain line per target check: status, name, value and target."""
    return "\n".join(
        f"{c['status']:4}  {c['name']} = {c['value']:.2f} ({c['target']})" for c in results
    )


def check_markdown(results: list[dict[str, Any]]) -> str:
    """The target checks as a Markdown list."""
    return "\n".join(
        f"- {c['name']} = {c['value']:.2f} (target {c['target']}): **{c['status']}**"
        for c in results
    )
