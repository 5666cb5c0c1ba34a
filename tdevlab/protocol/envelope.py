"""Server → client messages: the spec's envelope, encoded once.

Every server message is a JSON object with ``id`` (unique), ``type``, ``timestamp`` (ISO 8601,
UTC, ``Z``) and ``data``; an ``alert`` carries ``severity`` and a ``log`` carries ``level``
beside ``data``, as the spec shows. Published events add ``channel`` and ``seq`` (a
per-channel sequence number); replies add ``reply_to`` (the request's ``id``). Errors put
``error`` = ``{code, message, details}`` where the spec puts it.
"""

from __future__ import annotations

import itertools
import secrets
from datetime import UTC, datetime
from typing import Any

import msgspec

from tdevlab.exceptions import TdevlabError

__all__ = ["Encoder", "iso_time"]

_ENCODE = msgspec.json.Encoder().encode


def iso_time(now: float) -> str:
    """Return ``now`` (seconds since the epoch) as ISO 8601 UTC with a ``Z``."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Encoder:
    """Builds and encodes server messages; message ids are ``<prefix>-<counter>``.

    Args:
        prefix: Distinguishes this server's ids (random by default), so ids stay unique
            across restarts.
    """

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix or secrets.token_hex(4)
        self._counter = itertools.count(1)

    def next_id(self) -> str:
        return f"{self.prefix}-{next(self._counter)}"

    def message(
        self,
        type_: str,
        data: Any,
        *,
        now: float,
        reply_to: Any = None,
        **top: Any,
    ) -> dict[str, Any]:
        """Return a server message as a dict (``top`` adds fields beside ``data``)."""
        out: dict[str, Any] = {"id": self.next_id(), "type": type_, "timestamp": iso_time(now)}
        out.update(top)
        if reply_to is not None:
            out["reply_to"] = reply_to
        out["data"] = data
        return out

    def encode(self, message: dict[str, Any]) -> bytes:
        """Encode a message as UTF-8 JSON (sent as a text frame)."""
        return _ENCODE(message)

    def error(self, exc: TdevlabError, *, now: float, reply_to: Any = None) -> bytes:
        """Encode an error message for a tdevlab exception (spec: "Error Message Format")."""
        out: dict[str, Any] = {"id": self.next_id(), "type": "error", "timestamp": iso_time(now)}
        if reply_to is not None:
            out["reply_to"] = reply_to
        details = {k: v for k, v in exc.details.items() if k != "id"}
        out["error"] = {
            "code": exc.code or "EVOLUTION_FAILED",
            "message": exc.message,
            "details": details,
        }
        return _ENCODE(out)

    def binary(self, meta: dict[str, Any], body: str, *, now: float) -> bytes:
        """Encode a binary frame: the metadata line, ``\\n``, then the UTF-8 body (spec)."""
        head = {"id": self.next_id(), "timestamp": iso_time(now), **meta}
        return _ENCODE(head) + b"\n" + body.encode("utf-8")
