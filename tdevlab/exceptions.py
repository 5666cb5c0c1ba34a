"""The whole tdevlab error tree.

Every error tdevlab raises on purpose derives from :class:`TdevlabError`. Classes that
correspond to an error code of the WebSocket API carry it in ``code``, so a server turns
any of them into ``{"type": "error", "error": {"code": ..., "message": ..., "details": ...}}``
in one place, and a client maps a code back to the class with :func:`error_for_code`.

.. code-block:: text

    TdevlabError
    ├── AuthFailed                         AUTH_FAILED
    ├── Unauthorized                       UNAUTHORIZED
    ├── RateLimited                        RATE_LIMITED
    ├── InvalidCommand (ValueError)        INVALID_COMMAND
    │   ├── InvalidParameters              bad population_size, rate, gene, parameter name
    │   │   └── MissingExtra (ImportError) a strategy whose optional library is not installed
    │   ├── InvalidState                   pause when not running, ...
    │   ├── GenerationNotFound (KeyError)  rollback/snapshot of a generation that does not exist
    │   └── InvalidAgentCode               agent source that does not parse or validate
    ├── AgentNotFound (KeyError)           AGENT_NOT_FOUND
    ├── ConstraintViolation                CONSTRAINT_VIOLATION (agent code over the memory limit)
    ├── EvolutionFailed                    EVOLUTION_FAILED
    │   └── EvaluationError                a problem raised or returned bad values
    ├── ConnectionClosed (ConnectionError) a client lost its server and could not get it back
    ├── RequestTimeout (TimeoutError)      no reply to a client's request in time
    ├── StoreError                         the run store is missing, corrupt or of another schema
    │   └── RunNotFound (KeyError)
    └── DatasetError (ValueError)          a run dataset that cannot be read back

    TdevlabWarning (UserWarning)
"""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = [
    "ECHO_BYTES",
    "AgentNotFound",
    "AuthFailed",
    "ConnectionClosed",
    "ConstraintViolation",
    "DatasetError",
    "EvaluationError",
    "EvolutionFailed",
    "GenerationNotFound",
    "InvalidAgentCode",
    "InvalidCommand",
    "InvalidParameters",
    "InvalidState",
    "MissingExtra",
    "RateLimited",
    "RequestTimeout",
    "RunNotFound",
    "StoreError",
    "TdevlabError",
    "TdevlabWarning",
    "Unauthorized",
    "clip",
    "error_for_code",
    "shown",
    "utf8_size",
]


class TdevlabError(Exception):
    """Base class of every error tdevlab raises.

    Args:
        message: What went wrong, naming the offending value.
        details: Machine-readable context, sent as the wire error's ``details``.
    """

    #: The WebSocket API error code, or ``None`` for errors that never go on the wire.
    code: str | None = None

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        # KeyError's __str__ would repr() the message; keep it readable for every subclass.
        return self.message

    def to_wire(self) -> dict[str, Any]:
        """Return the ``error`` object of the API's error message."""
        return {
            "code": self.code or "EVOLUTION_FAILED",
            "message": self.message,
            "details": self.details,
        }


class AuthFailed(TdevlabError):
    """A token was missing, malformed, badly signed or expired."""

    code = "AUTH_FAILED"


class Unauthorized(TdevlabError):
    """The caller is authenticated but its role does not allow the action."""

    code = "UNAUTHORIZED"


class RateLimited(TdevlabError):
    """A message, connection or data-rate limit was exceeded."""

    code = "RATE_LIMITED"


class InvalidCommand(TdevlabError, ValueError):
    """A request is unknown or its arguments are invalid."""

    code = "INVALID_COMMAND"


class InvalidParameters(InvalidCommand):
    """An engine parameter or gene value is out of range or unknown."""


class MissingExtra(InvalidParameters, ImportError):
    """A strategy needs an optional library that is not installed.

    The message names the ``pip install 'tdevlab[...]'`` that brings it in.
    """


class InvalidState(InvalidCommand):
    """The action is not valid in the engine's current state (for example pause when idle)."""


class GenerationNotFound(InvalidCommand, KeyError):
    """A generation that was never produced (or is no longer kept) was asked for."""


class InvalidAgentCode(InvalidCommand):
    """Agent source code that does not parse, or does not state a valid genome."""


class AgentNotFound(TdevlabError, KeyError):
    """No agent with that id exists in the run."""

    code = "AGENT_NOT_FOUND"


class ConstraintViolation(TdevlabError):
    """An agent (or its code) exceeds the memory or speed limit."""

    code = "CONSTRAINT_VIOLATION"


class EvolutionFailed(TdevlabError):
    """The evolution could not produce a generation."""

    code = "EVOLUTION_FAILED"


class EvaluationError(EvolutionFailed):
    """A problem's evaluation raised or returned invalid values (wrong shape, NaN, ...)."""


class ConnectionClosed(TdevlabError, ConnectionError):
    """The client's connection is gone: closed, refused, or not restored after retries.

    A request that was in flight when its connection dropped fails with this error unless it
    is safe to send again (reads and pings are re-sent after reconnecting).
    """


class RequestTimeout(TdevlabError, TimeoutError):
    """No reply to a client's request within its timeout."""


class StoreError(TdevlabError):
    """The run store cannot be read or written as expected."""


class RunNotFound(StoreError, KeyError):
    """No run with that id exists in the store."""


class DatasetError(TdevlabError, ValueError):
    """A run dataset directory is missing files or does not match its schema."""


class TdevlabWarning(UserWarning):
    """Warnings tdevlab emits about questionable but accepted usage."""


_BY_CODE: dict[str, type[TdevlabError]] = {
    cls.code: cls
    for cls in (
        AuthFailed,
        Unauthorized,
        RateLimited,
        InvalidCommand,
        AgentNotFound,
        ConstraintViolation,
        EvolutionFailed,
    )
    if cls.code is not None
}


def error_for_code(code: str) -> type[TdevlabError]:
    """Return the exception class of a wire error code (``TdevlabError`` when unknown)."""
    return _BY_CODE.get(code, TdevlabError)


# -- quoting client input in messages ------------------------------------------------------

#: The most UTF-8 bytes of a client-supplied string a reply repeats: longer request ids
#: and ping timestamps are refused, longer names in error messages are cut.
ECHO_BYTES = 256


def _reprs() -> reprlib.Repr:
    # Bounded work as well as bounded output: a 1 MB nested list is never repr'd whole.
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxtuple, r.maxset = 3, 8, 8, 8, 8
    r.maxstring, r.maxlong, r.maxother = ECHO_BYTES, 64, 64
    return r


_REPR = _reprs()


def utf8_size(text: str) -> int:
    """The size of ``text`` in UTF-8 (lone surrogates count as 3 bytes)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def clip(text: str, limit: int = ECHO_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, ending in ``...`` when it was cut."""
    if len(text) * 4 <= limit or utf8_size(text) <= limit:
        return text
    head = text.encode("utf-8", "surrogatepass")[: max(limit - 3, 0)]
    return head.decode("utf-8", "ignore") + "..."


def shown(value: Any, limit: int = ECHO_BYTES) -> str:
    """A client-supplied value as an error message names it: a repr of at most ``limit``
    UTF-8 bytes (containers and long strings abbreviated with ``...``; an integer too long
    for ``repr`` described by its size)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"<an integer of {value.bit_length()} bits>"
    return clip(_REPR.repr(value), limit)
