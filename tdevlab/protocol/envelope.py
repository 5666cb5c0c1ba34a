"""Server → client messages: the spec's envelope, encoded once.

Every server message is a JSON object with ``id`` (unique), ``type``, ``timestamp`` (ISO 8601,
UTC, ``Z``) and ``data``; an ``alert`` carries ``severity`` and a ``log`` carries ``level``
beside ``data``, as the spec shows. Published events add ``channel`` and ``seq`` (a
per-channel sequence number); replies add ``reply_to`` (the request's ``id``). Errors put
``error`` = ``{code, message, details}`` where the spec puts it.

Echo caps: what a client sent comes back bounded. A request ``id`` (``reply_to``) and a ping
``timestamp`` are refused by the parser when longer than :data:`ECHO_BYTES`; values that an
error message names are shown by :func:`shown` (a repr cut to :data:`ECHO_BYTES`); and
:meth:`Encoder.error` bounds every error (message, details) so that no reply exceeds
:data:`MAX_REPLY_BYTES`.
"""

from __future__ import annotations

import itertools
import secrets
from datetime import UTC, datetime
from typing import Any

import msgspec

from tdevlab.exceptions import ECHO_BYTES, TdevlabError, clip, shown, utf8_size

__all__ = ["ECHO_BYTES", "MAX_REPLY_BYTES", "Encoder", "clip", "iso_time", "shown", "utf8_size"]

_ENCODE = msgspec.json.Encoder().encode

#: No reply or error the server sends is larger (spec replies are a few hundred bytes).
MAX_REPLY_BYTES = 64 * 1024
#: An error's message is cut to this many bytes; strings in its details to ECHO_BYTES.
ERROR_MESSAGE_BYTES = 2048
_DETAIL_ITEMS = 16  # items of a list or dict kept in an error's details
_DETAIL_DEPTH = 3  # nesting kept in an error's details


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
        if _echoable(reply_to):
            out["reply_to"] = reply_to
        out["data"] = data
        return out

    def encode(self, message: dict[str, Any]) -> bytes:
        """Encode a message as UTF-8 JSON (sent as a text frame)."""
        return _ENCODE(message)

    def error(self, exc: TdevlabError, *, now: float, reply_to: Any = None) -> bytes:
        """Encode an error message for a tdevlab exception (spec: "Error Message Format").

        Bounded whatever the exception holds: the message is cut to
        :data:`ERROR_MESSAGE_BYTES`, strings in ``details`` to :data:`ECHO_BYTES`, lists and
        dicts to their first 16 items, three levels deep; a ``reply_to`` that no request
        could carry (over :data:`ECHO_BYTES`) is left out. The result is under
        :data:`MAX_REPLY_BYTES`.
        """
        out: dict[str, Any] = {"id": self.next_id(), "type": "error", "timestamp": iso_time(now)}
        if _echoable(reply_to):
            out["reply_to"] = reply_to
        details = {
            clip(str(k)): _bounded(v, _DETAIL_DEPTH)
            for k, v in itertools.islice(exc.details.items(), _DETAIL_ITEMS + 1)
            if k != "id"
        }
        out["error"] = {
            "code": exc.code or "EVOLUTION_FAILED",
            "message": clip(exc.message, ERROR_MESSAGE_BYTES),
            "details": details,
        }
        data = _ENCODE(out)
        if len(data) > MAX_REPLY_BYTES:  # deeply nested details: keep the message, drop them
            out["error"]["details"] = {"truncated": True}
            data = _ENCODE(out)
        return data

    def binary(self, meta: dict[str, Any], body: str, *, now: float) -> bytes:
        """Encode a binary frame: the metadata line, ``\\n``, then the UTF-8 body (spec)."""
        head = {"id": self.next_id(), "timestamp": iso_time(now), **meta}
        return _ENCODE(head) + b"\n" + body.encode("utf-8")


def _echoable(reply_to: Any) -> bool:
    """Whether ``reply_to`` may be repeated: a request id within the echo cap."""
    if reply_to is None:
        return False
    if isinstance(reply_to, str):
        return len(reply_to) * 4 <= ECHO_BYTES or utf8_size(reply_to) <= ECHO_BYTES
    return not isinstance(reply_to, int) or -(2**63) <= reply_to < 2**63


def _bounded(value: Any, depth: int) -> Any:
    """An error detail with its strings, lists and dicts cut to the echo caps."""
    if isinstance(value, str):
        return clip(value)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else shown(value)
    if depth <= 0:
        return shown(value)
    if isinstance(value, dict):
        items = itertools.islice(value.items(), _DETAIL_ITEMS)
        return {clip(str(k)): _bounded(v, depth - 1) for k, v in items}
    if isinstance(value, list | tuple):
        return [_bounded(v, depth - 1) for v in value[:_DETAIL_ITEMS]]
    return shown(value)
