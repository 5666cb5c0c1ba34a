"""Client → server messages: typed records, and parsing that names what is wrong.

Text frames are JSON objects with a ``type`` (spec: "Client → Server Events"). Every message
may carry an ``id`` (a string or integer chosen by the client); replies and errors name it
in ``reply_to``. Fields the spec does not name are ignored, so clients may add their own.

Binary frames are agent code uploads in the spec's shape: a JSON metadata object
(``{"type": "agent_code", ...}``), then the UTF-8 code. The spec's receiving example splits
on the first ``\\n`` while its sending example concatenates without one; both are accepted.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeAlias

import msgspec

from tdevlab.exceptions import InvalidCommand
from tdevlab.protocol.channels import CHANNELS

__all__ = [
    "COMMANDS",
    "CHANNELS",
    "FILTERS",
    "AgentCodeUpload",
    "Auth",
    "ClientMessage",
    "Command",
    "Control",
    "GetAgent",
    "GetAgentCode",
    "Ping",
    "Request",
    "Rollback",
    "SetParameters",
    "Subscribe",
    "Unsubscribe",
    "parse_binary",
    "parse_text",
    "request_id",
]

#: spec: subscribe filters; they apply to evolution updates (best_fitness) and agent updates.
FILTERS: tuple[str, ...] = ("generation_min", "fitness_min")
#: Commands of ``{"type": "command", "cmd": ...}``: the document's ``rollback``, and
#: ``set_parameters`` (change parameters while running, which no control action can do).
COMMANDS: tuple[str, ...] = ("rollback", "set_parameters")

RequestId: TypeAlias = str | int | None


class _Message(msgspec.Struct, tag_field="type", kw_only=True):
    id: RequestId = None


class Auth(_Message, tag="auth"):
    """spec: "Authentication Message"."""

    token: str


class Subscribe(_Message, tag="subscribe"):
    """spec: both subscribe forms (``channel`` + ``filters``, or ``channels``).

    ``since`` maps a channel to the last sequence number the client saw, for replay;
    ``epochs`` the stream epoch those numbers belong to (from an earlier ack).
    """

    channel: str | None = None
    channels: list[str] | None = None
    filters: dict[str, Any] | None = None
    since: dict[str, int] | None = None
    epochs: dict[str, str] | None = None


class Unsubscribe(_Message, tag="unsubscribe"):
    """spec: "Channel Unsubscription" (``channels``; ``channel`` also accepted)."""

    channel: str | None = None
    channels: list[str] | None = None


class Control(_Message, tag="control"):
    """spec: "Control Evolution".

    ``action`` is not checked here: the engine owns the actions and their transitions
    (:mod:`tdevlab.engine.control`) and refuses an unknown one with ``INVALID_COMMAND``.
    """

    action: str
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)


class GetAgent(_Message, tag="get_agent"):
    """spec: "Request Agent Status"."""

    agent_id: str


class GetAgentCode(_Message, tag="get_agent_code"):
    """Ask for an agent's code; the reply is a binary ``agent_code`` frame."""

    agent_id: str


class Command(_Message, tag="command"):
    """spec: "Execute Command", as it arrives; :func:`parse_text` turns it into a typed command.

    ``rollback`` becomes :class:`Rollback`, ``set_parameters`` :class:`SetParameters`; any
    other ``cmd`` is refused.
    """

    cmd: str
    args: dict[str, Any] = msgspec.field(default_factory=dict)


class Rollback(msgspec.Struct, frozen=True, kw_only=True):
    """``{"type": "command", "cmd": "rollback", "args": {"generation": N}}``."""

    id: RequestId = None
    generation: int


class SetParameters(msgspec.Struct, frozen=True, kw_only=True):
    """``{"type": "command", "cmd": "set_parameters", "args": {...}}``.

    The names and values are validated by the engine, which owns the parameters.
    """

    id: RequestId = None
    parameters: dict[str, Any]


class Ping(_Message, tag="ping"):
    """spec: "Heartbeat": the server answers ``pong`` echoing ``timestamp``."""

    timestamp: Any = None


class AgentCodeUpload(msgspec.Struct, frozen=True, kw_only=True):
    """A binary upload: metadata and the agent's source (never executed)."""

    id: RequestId
    agent_id: str | None
    code: str


#: What a text frame decodes to, before commands are typed.
ClientMessage: TypeAlias = (
    Auth | Subscribe | Unsubscribe | Control | GetAgent | GetAgentCode | Command | Ping
)
#: What :func:`parse_text` returns.
Request: TypeAlias = (
    Auth
    | Subscribe
    | Unsubscribe
    | Control
    | GetAgent
    | GetAgentCode
    | Rollback
    | SetParameters
    | Ping
)
_DECODER = msgspec.json.Decoder(ClientMessage)
_ANY = msgspec.json.Decoder()
TYPES: tuple[str, ...] = (
    "auth", "subscribe", "unsubscribe", "control", "get_agent", "get_agent_code", "command",
    "ping",
)  # fmt: skip


def parse_text(text: str | bytes) -> Request:
    """Parse and validate one text frame.

    Raises:
        InvalidCommand: naming what is wrong (not JSON, not an object, unknown type, a
            field of the wrong type, nesting too deep, an unknown channel, filter or
            command, rollback arguments that are not one integer ``generation``), with the
            request ``id`` in ``details["id"]`` when it could be read.
    """
    try:
        message: ClientMessage = _DECODER.decode(text)
    except msgspec.ValidationError as exc:
        raise _invalid(_explain(str(exc), text), text) from exc
    except msgspec.DecodeError as exc:
        raise _invalid(f"message is not valid JSON: {exc}", text) from exc
    except RecursionError:
        raise _invalid("message nests too deeply", None) from None
    except (UnicodeDecodeError, UnicodeEncodeError) as exc:  # bad bytes, lone surrogates
        raise InvalidCommand(f"message is not valid UTF-8 text: {exc}") from exc
    _check(message)
    if isinstance(message, Command):
        return _typed_command(message)
    return message


def parse_binary(data: bytes) -> AgentCodeUpload:
    """Parse a binary frame: JSON metadata, then (after an optional newline) the code.

    Raises:
        InvalidCommand: if the frame is not UTF-8, has no JSON object first, or its
            metadata is not ``{"type": "agent_code", ...}``.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidCommand(f"binary frame is not valid UTF-8: {exc}") from exc
    try:
        meta, end = json.JSONDecoder(parse_constant=_refuse_constant).raw_decode(text)
    except (json.JSONDecodeError, ValueError) as exc:
        raise InvalidCommand(f"binary frame must start with a JSON metadata object: {exc}") from exc
    except RecursionError:
        raise InvalidCommand("binary frame metadata nests too deeply") from None
    if not isinstance(meta, dict):
        raise InvalidCommand("binary frame metadata must be a JSON object")
    try:
        # json accepts "\udc00" escapes (lone surrogates), which no reply could carry.
        json.dumps(meta, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidCommand(f"binary frame metadata is not valid Unicode: {exc}") from exc
    request = meta.get("id")
    if meta.get("type") != "agent_code":
        raise InvalidCommand(
            f"binary frames carry agent code: metadata type must be 'agent_code', "
            f"got {meta.get('type')!r}",
            details={"id": request},
        )
    agent_id = meta.get("agent_id")
    if agent_id is not None and not isinstance(agent_id, str):
        raise InvalidCommand("agent_id must be a string", details={"id": request})
    if not isinstance(request, str | int | type(None)) or isinstance(request, bool):
        request = None
    code = text[end:]
    if code.startswith("\r\n"):
        code = code[2:]
    elif code.startswith("\n"):
        code = code[1:]
    return AgentCodeUpload(id=request, agent_id=agent_id, code=code)


def request_id(text: str | bytes) -> RequestId:
    """Best effort: the ``id`` of a message that failed validation (for ``reply_to``)."""
    try:
        value = _ANY.decode(text)
    except (msgspec.DecodeError, RecursionError, UnicodeError):
        return None
    if isinstance(value, dict):
        rid = value.get("id")
        if isinstance(rid, str | int) and not isinstance(rid, bool):
            return rid
    return None


def _invalid(message: str, text: str | bytes | None) -> InvalidCommand:
    rid = None if text is None else request_id(text)
    return InvalidCommand(message, details={"id": rid} if rid is not None else {})


def _explain(error: str, text: str | bytes) -> str:
    if "at `$.type`" in error or "missing required field `type`" in error:
        return f"unknown or missing message type ({error}); known types: {list(TYPES)}"
    return f"invalid message: {error}"


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check(message: ClientMessage) -> None:
    """Checks msgspec's types cannot express: channel names, filters, actions."""
    rid = message.id
    details = {"id": rid} if rid is not None else {}
    if isinstance(message, Subscribe | Unsubscribe):
        names = list(message.channels or [])
        if message.channel is not None:
            names.append(message.channel)
        if not names:
            raise InvalidCommand(
                f"{type(message).__name__.lower()} needs 'channel' or 'channels'", details=details
            )
        unknown = [n for n in names if n not in CHANNELS]
        if unknown:
            raise InvalidCommand(
                f"unknown channel(s) {unknown}; channels are {list(CHANNELS)}",
                details={**details, "unknown_channels": unknown},
            )
    if isinstance(message, Subscribe):
        for name, value in (message.filters or {}).items():
            if name not in FILTERS:
                raise InvalidCommand(
                    f"unknown filter {name!r}; filters are {list(FILTERS)}",
                    details={**details, "filter": name},
                )
            if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
                raise InvalidCommand(
                    f"filter {name} must be a finite number, got {value!r}",
                    details={**details, "filter": name},
                )
        for name in message.since or {}:
            if name not in CHANNELS:
                raise InvalidCommand(
                    f"'since' names unknown channel {name!r}", details={**details, "channel": name}
                )


def _typed_command(message: Command) -> Rollback | SetParameters:
    rid = message.id
    details: dict[str, Any] = {"id": rid} if rid is not None else {}
    if message.cmd == "set_parameters":
        return SetParameters(id=rid, parameters=dict(message.args))
    if message.cmd == "rollback":
        args = message.args
        unknown = sorted(set(args) - {"generation"})
        if unknown:
            raise InvalidCommand(
                f"unknown rollback argument(s) {unknown}; rollback takes 'generation'",
                details={**details, "unknown_arguments": unknown},
            )
        generation = args.get("generation")
        if isinstance(generation, bool) or not isinstance(generation, int):
            raise InvalidCommand(
                f"rollback needs an integer 'generation', got {generation!r}",
                details={**details, "cmd": "rollback"},
            )
        return Rollback(id=rid, generation=generation)
    raise InvalidCommand(
        f"unknown command {message.cmd!r}; commands are {list(COMMANDS)}",
        details={**details, "cmd": message.cmd},
    )
