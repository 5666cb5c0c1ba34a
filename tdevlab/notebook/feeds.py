"""The alert and log feeds: rows of ``frames.alerts`` / ``frames.logs`` as HTML or text lines."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

__all__ = [
    "SEVERITY_COLORS",
    "alert_lines",
    "alerts_html",
    "latest_records",
    "logs_html",
]

#: Text colour per alert severity / log level.
SEVERITY_COLORS: dict[str, str] = {
    "debug": "#6b7280",
    "info": "#2563eb",
    "warning": "#d97706",
    "error": "#dc2626",
    "critical": "#991b1b",
}

# Recommended actions in words (spec: alert.recommended_action).
_ACTIONS = {
    "rollback": "roll back",
    "increase_population_size": "increase population_size",
    "increase_mutation_rate": "increase mutation_rate",
}


def latest_records(table: Any, limit: int) -> list[dict[str, Any]]:
    """Return the last ``limit`` rows of a DataFrame as dicts, newest first.

    A ``timestamp`` index becomes a ``timestamp`` key; a missing table gives ``[]``.
    """
    if table is None or len(table) == 0 or limit <= 0:
        return []
    tail = table.tail(limit)
    if "timestamp" not in tail.columns and tail.index.name == "timestamp":
        tail = tail.reset_index()
    records: list[dict[str, Any]] = tail.to_dict("records")
    return records[::-1]


def _text(value: Any) -> str:
    """A cell as text: missing values (None, NaN, NaT) become ''."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if type(value).__name__ == "NaTType":
        return ""
    return str(value)


def _time(value: Any) -> str:
    """HH:MM:SS of a timestamp (a Timestamp, datetime or ISO string)."""
    if hasattr(value, "strftime"):
        try:
            return str(value.strftime("%H:%M:%S"))
        except ValueError:  # NaT
            return ""
    text = _text(value)
    return text[11:19] if len(text) >= 19 else text


def _generation(value: Any) -> str:
    text = _text(value)
    if not text:
        return ""
    try:
        return f"gen {int(float(text))}"
    except ValueError:
        return ""


def _recommendation(record: Mapping[str, Any]) -> str:
    action = _text(record.get("recommended_action"))
    if not action:
        return ""
    words = _ACTIONS.get(action, action.replace("_", " "))
    details = record.get("details")
    if action == "rollback" and isinstance(details, Mapping):
        target = details.get("rollback_generation")
        if target is not None:
            words = f"roll back to generation {target}"
    return words


def alerts_html(alerts: Any, *, limit: int = 8) -> str:
    """Return the latest alerts as an HTML list: severity, title, message, recommended action."""
    records = latest_records(alerts, limit)
    if not records:
        return "<div style='color:#6b7280'>No alerts.</div>"
    items = []
    for record in records:
        severity = _text(record.get("severity")) or "info"
        color = SEVERITY_COLORS.get(severity, "#374151")
        action = _recommendation(record)
        action_html = (
            f"<br><span style='color:#374151'>Recommended: <b>{html.escape(action)}</b></span>"
            if action
            else ""
        )
        when = " ".join(
            p for p in (_time(record.get("timestamp")), _generation(record.get("generation"))) if p
        )
        items.append(
            "<li style='margin-bottom:4px'>"
            f"<span style='color:{color};font-weight:bold'>{html.escape(severity.upper())}</span> "
            f"<b>{html.escape(_text(record.get('title')))}</b> "
            f"<span style='color:#6b7280'>{html.escape(when)}</span><br>"
            f"{html.escape(_text(record.get('message')))}{action_html}</li>"
        )
    return "<ul style='margin:0;padding-left:18px'>" + "".join(items) + "</ul>"


def logs_html(logs: Any, *, limit: int = 8) -> str:
    """Return the latest log entries as compact HTML lines (time, level, message)."""
    records = latest_records(logs, limit)
    if not records:
        return "<div style='color:#6b7280'>No log entries.</div>"
    lines = []
    for record in records:
        level = _text(record.get("level")) or "info"
        color = SEVERITY_COLORS.get(level, "#374151")
        lines.append(
            "<div style='font-family:monospace;font-size:12px;white-space:nowrap;"
            "overflow:hidden;text-overflow:ellipsis'>"
            f"{html.escape(_time(record.get('timestamp')))} "
            f"<span style='color:{color}'>{html.escape(level.upper()):<7}</span> "
            f"{html.escape(_text(record.get('message')))}</div>"
        )
    return "".join(lines)


def alert_lines(alerts: Any, *, limit: int = 8) -> list[str]:
    """Return the latest alerts as plain text lines, newest first (for the snapshot)."""
    lines = []
    for record in latest_records(alerts, limit):
        severity = (_text(record.get("severity")) or "info").upper()
        line = f"[{severity}] {_text(record.get('title'))}: {_text(record.get('message'))}"
        action = _recommendation(record)
        if action:
            line += f" -> {action}"
        lines.append(line)
    return lines
