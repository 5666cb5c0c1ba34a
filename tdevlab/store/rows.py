"""Flat row shapes shared by the stores and the dataset exporter."""

from __future__ import annotations

from typing import Any

import msgspec

from tdevlab.engine.events import AgentUpdate, Alert, EvolutionUpdate, LogEntry

__all__ = ["EVENT_COLUMNS", "GENERATION_COLUMNS", "event_row", "generation_row"]

#: Generation table columns, in order: the evolution update's fields with ``branch``.
GENERATION_COLUMNS: tuple[str, ...] = ("branch",) + tuple(
    f for f in EvolutionUpdate.__struct_fields__ if f not in ("run_id", "branch")
)

#: Event table columns, in order.
EVENT_COLUMNS: tuple[str, ...] = (
    "seq",
    "branch",
    "generation",
    "kind",
    "timestamp",
    "severity",
    "agent_id",
    "alert_id",
    "title",
    "message",
    "recommended_action",
    "payload",
)


def generation_row(update: EvolutionUpdate, branch: int) -> dict[str, Any]:
    """Return a generation's row (the evolution update, with its branch)."""
    row = msgspec.structs.asdict(update)
    row.pop("run_id", None)
    row["branch"] = branch
    return row


def event_row(
    seq: int, branch: int, generation: int, kind: str, event: Any, timestamp: float
) -> dict[str, Any]:
    """Return an event's row; ``payload`` is the whole event as JSON text."""
    row: dict[str, Any] = {
        "seq": seq,
        "branch": branch,
        "generation": generation,
        "kind": kind,
        "timestamp": timestamp,
        "severity": None,
        "agent_id": None,
        "alert_id": None,
        "title": None,
        "message": None,
        "recommended_action": None,
        "payload": msgspec.json.encode(event).decode(),
    }
    if isinstance(event, AgentUpdate):
        row["agent_id"] = event.agent_id
        row["message"] = f"{event.name} is {event.status} ({event.reason})"
        row["severity"] = "info"
    elif isinstance(event, LogEntry):
        row["severity"] = event.level
        row["message"] = event.message
        row["agent_id"] = event.details.get("agent_id")
    elif isinstance(event, Alert):
        row["severity"] = event.severity
        row["alert_id"] = event.alert_id
        row["title"] = event.title
        row["message"] = event.message
        row["recommended_action"] = event.recommended_action
    return row
