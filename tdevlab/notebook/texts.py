"""The dashboard's words: status labels, the reply line, the best agent, in HTML or text."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Hashable, Mapping
from typing import Any

from tdevlab.notebook.state import Command

__all__ = [
    "MESSAGE_STYLE",
    "STATE_COLORS",
    "best_agent",
    "describe_reply",
    "html_state",
    "strip_tags",
    "table_version",
]

STATE_COLORS = {
    "open": "#16a34a",
    "connecting": "#d97706",
    "reconnecting": "#d97706",
    "closed": "#dc2626",
    "failed": "#dc2626",
    "running": "#16a34a",
    "paused": "#d97706",
    "stopped": "#6b7280",
    "idle": "#6b7280",
}
MESSAGE_STYLE = {"ok": ("#16a34a", "✓"), "error": ("#dc2626", "✗"), "pending": ("#6b7280", "…")}


def html_state(label: str, value: str, color: str | None = None) -> str:
    """``label <b>value</b>``, the value coloured."""
    style = f"color:{color};" if color else ""
    return f"{label} <b style='{style}'>{html.escape(value)}</b>"


def table_version(frames: Any, table: str) -> Hashable:
    """A table's version, or the overall version when the table has none."""
    versions = getattr(frames, "versions", None)
    if isinstance(versions, Mapping) and table in versions:
        found: Hashable = versions[table]
        return found
    overall: Hashable = frames.version
    return overall


def best_agent(update: Any) -> str:
    """'name (id) fitness F' from an evolution_update's data (a dict or a frames row)."""
    name = update.get("best_agent_name")
    agent_id = update.get("best_agent_id")
    fitness = update.get("best_fitness")
    who = str(name) if isinstance(name, str) else "?"
    if isinstance(agent_id, str):
        who += f" ({agent_id})"
    if isinstance(fitness, int | float) and math.isfinite(fitness):
        who += f" fitness {float(fitness):.4f}"
    return who


def describe_reply(command: Command, reply: Any) -> str:
    """A short success message from a command's ack data."""
    data = reply if isinstance(reply, Mapping) else {}
    if command.method == "rollback":
        branch = f" (branch {data['branch']})" if "branch" in data else ""
        return f"rolled back to generation {command.args[0]}{branch}"
    if command.method == "set_parameters":
        return f"applied {', '.join(f'{k}={v}' for k, v in command.kwargs.items())}"
    state = data.get("state")
    return f"{command.method}: run {state}" if state else f"{command.method}: done"


def strip_tags(text: str) -> str:
    """The text of an HTML fragment."""
    return html.unescape(re.sub(r"<[^>]+>", "", text))
