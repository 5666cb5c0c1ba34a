"""Client → server messages: typed records, and parsing that names what is wrong.

Text frames are JSON objects with a ``type`` (spec: "Client → Server Events"). Every message
may carry an ``id`` (a string of at most 256 UTF-8 bytes or a 64-bit integer, chosen by the
client); replies and errors name it in ``reply_to``. A longer id is refused, and the refusal
does not repeat it. Fields the spec does not name are ignored, so clients may add their own.

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
from tdevlab.protocol.envelope import ECHO_BYTES, MAX_REPLY_BYTES, clip, shown, utf8_size

__all__ = [
    "COMMANDS",
    "CHANNELS",
    "FILTERS",
    "MAX_CODE_BYTES",
    "AgentCodeUpload",
    "Auth",
    "Branch",
    "ClientMessage",
    "Command",
    "Control",
    "EngineRequest",
    "GetAgent",
    "GetAgentCode",
    "GetArchive",
    "GetFront",
    "GetLineage",
    "GetPopulation",
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
#: Commands of ``{"type": "command", "cmd": ...}``: the document's ``rollback``,
#: ``set_parameters`` (change parameters while running, which no control action can do)
#: and ``branch`` (roll back to the generation that made an agent, on its branch).
COMMANDS: tuple[str, ...] = ("rollback", "set_parameters", "branch")

RequestId: TypeAlias = str | int | None
#: The most bytes of agent code one upload may carry: its ``get_agent_code`` reply (the
#: code and a metadata line) must fit in a reply (MAX_REPLY_BYTES).
MAX_CODE_BYTES = MAX_REPLY_BYTES - 4096
_INT64 = (-(2**63), 2**63)


class _Message(msgspec.Struct, tag_field="type", kw_only=True):
    id: RequestId = None


class Auth(_Message, tag="auth"):
    """spec: "Authentication Message".

    ``token`` is not typed here: whatever it is, the verifier refuses what is not a valid
    JWT string with ``AUTH_FAILED`` (and the connection is closed, 1008).
    """

    token: Any = None


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


class GetLineage(_Message, tag="get_lineage"):
    """Ask for an agent's lineage; the reply is a ``lineage`` message.

    ``depth`` is checked by the engine, which owns its range; ``None``: the engine's default.
    """

    agent_id: str
    depth: int | None = None
    descendants: bool = False


class GetFront(_Message, tag="get_front"):
    """Ask for the current Pareto front (NSGA-II runs); the reply is a ``front`` message."""


class GetArchive(_Message, tag="get_archive"):
    """Ask for the current archive (MAP-Elites runs); the reply is an ``archive`` message."""


class GetPopulation(_Message, tag="get_population"):
    """Ask for the whole current population; the reply is a ``population`` message."""


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


class Branch(msgspec.Struct, frozen=True, kw_only=True):
    """``{"type": "command", "cmd": "branch", "args": {"agent_id": ..., "parameters": {...}}}``.

    The parameters (optional) are validated by the engine, which owns them.
    """

    id: RequestId = None
    agent_id: str
    parameters: dict[str, Any] | None = None


class Ping(_Message, tag="ping"):
    """spec: "Heartbeat": the server answers ``pong`` echoing ``timestamp``.

    The timestamp is a number or a string of at most 256 UTF-8 bytes (it is echoed).
    """

    timestamp: str | int | float | None = None


class AgentCodeUpload(msgspec.Struct, frozen=True, kw_only=True):
    """A binary upload: metadata and the agent's source (never executed)."""

    id: RequestId
    agent_id: str | None
    code: str


#: Requests the driver carries out on the engine (after the session authorized them).
EngineRequest: TypeAlias = (
    Control
    | GetAgent
    | GetAgentCode
    | GetLineage
    | GetFront
    | GetArchive
    | GetPopulation
    | Rollback
    | SetParameters
    | Branch
)
#: What a text frame decodes to, before commands are typed.
ClientMessage: TypeAlias = (
    Auth
    | Subscribe
    | Unsubscribe
    | Control
    | GetAgent
    | GetAgentCode
    | GetLineage
    | GetFront
    | GetArchive
    | GetPopulation
    | Command
    | Ping
)
#: What :func:`parse_text` returns.
Request: TypeAlias = Auth | Subscribe | Unsubscribe | Ping | EngineRequest
_DECODER = msgspec.json.Decoder(ClientMessage)
_ANY = msgspec.json.Decoder()
TYPES: tuple[str, ...] = (
    "auth", "subscribe", "unsubscribe", "control", "get_agent", "get_agent_code", "get_lineage",
    "get_front", "get_archive", "get_population", "command", "ping",
)  # fmt: skip


def parse_text(text: str | bytes) -> Request:
    """Parse and validate one text frame.

    Raises:
        InvalidCommand: naming what is wrong (not JSON, not an object, unknown type, a
            field of the wrong type, nesting too deep, an unknown channel, filter or
            command, rollback arguments that are not one integer ``generation``, an ``id``
            or ping ``timestamp`` over the echo cap), with the request ``id`` in
            ``details["id"]`` when it could be read and is within the cap.
    """
    try:
        message: ClientMessage = _DECODER.decode(text)
    except msgspec.ValidationError as exc:
        # msgspec's text can quote the offending value (an unknown type): keep it short.
        raise _invalid(_explain(clip(str(exc), 2 * ECHO_BYTES), text), text) from exc
    except msgspec.DecodeError as exc:
        raise _invalid(f"message is not valid JSON: {clip(str(exc))}", text) from exc
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
        InvalidCommand: if the frame is not UTF-8, has no JSON object first, its metadata
            is not ``{"type": "agent_code", ...}``, its ``id`` is over the echo cap, or the
            code is over :data:`MAX_CODE_BYTES`.
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
    if not isinstance(request, str | int | type(None)) or isinstance(request, bool):
        request = None
    _check_id(request)
    if meta.get("type") != "agent_code":
        raise InvalidCommand(
            f"binary frames carry agent code: metadata type must be 'agent_code', "
            f"got {shown(meta.get('type'))}",
            details={"id": request},
        )
    agent_id = meta.get("agent_id")
    if agent_id is not None and (not isinstance(agent_id, str) or not _id_fits(agent_id)):
        raise InvalidCommand(
            f"agent_id must be a string of at most {ECHO_BYTES} bytes", details={"id": request}
        )
    code = text[end:]
    if code.startswith("\r\n"):
        code = code[2:]
    elif code.startswith("\n"):
        code = code[1:]
    size = utf8_size(code)
    if size > MAX_CODE_BYTES:
        raise InvalidCommand(
            f"agent code is {size} bytes; an upload carries at most {MAX_CODE_BYTES}",
            details={"id": request, "limit_bytes": MAX_CODE_BYTES},
        )
    return AgentCodeUpload(id=request, agent_id=agent_id, code=code)


def request_id(text: str | bytes) -> RequestId:
    """Best effort: the ``id`` of a message that failed validation (for ``reply_to``)."""
    try:
        value = _ANY.decode(text)
    except (msgspec.DecodeError, RecursionError, UnicodeError):
        return None
    if isinstance(value, dict):
        rid = value.get("id")
        if isinstance(rid, str | int) and not isinstance(rid, bool) and _id_fits(rid):
            return rid
    return None


def _id_fits(rid: str | int) -> bool:
    """Whether a request id is within the echo cap (it comes back in ``reply_to``)."""
    if isinstance(rid, int):
        return _INT64[0] <= rid < _INT64[1]
    return len(rid) * 4 <= ECHO_BYTES or utf8_size(rid) <= ECHO_BYTES


def _timestamp_fits(timestamp: str | int | float | None) -> bool:
    """Whether a ping timestamp is within the echo cap (a pong repeats it)."""
    if isinstance(timestamp, str | int):
        return _id_fits(timestamp)
    return True


def _check_id(rid: RequestId) -> None:
    """Refuse an id over the echo cap, without repeating it."""
    if rid is None or _id_fits(rid):
        return
    what = f"{utf8_size(rid)} bytes" if isinstance(rid, str) else "an integer past 64 bits"
    raise InvalidCommand(
        f"request id is {what}; an id is a string of at most {ECHO_BYTES} bytes "
        "or a 64-bit integer",
        details={"limit_bytes": ECHO_BYTES},
    )


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
    """Checks msgspec's types cannot express: id and timestamp sizes, channel names, filters."""
    rid = message.id
    _check_id(rid)
    details = {"id": rid} if rid is not None else {}
    if isinstance(message, GetAgent | GetAgentCode | GetLineage) and not _id_fits(message.agent_id):
        # Agent ids are "agent-<number>": a longer one names no agent, and is not echoed.
        raise InvalidCommand(
            f"agent_id is {utf8_size(message.agent_id)} bytes; an agent id is at most {ECHO_BYTES}",
            details={**details, "limit_bytes": ECHO_BYTES},
        )
    if isinstance(message, Ping) and not _timestamp_fits(message.timestamp):
        raise InvalidCommand(
            f"ping timestamp {shown(message.timestamp, 64)} is too long to echo: a timestamp "
            f"is a number or a string of at most {ECHO_BYTES} bytes",
            details={**details, "limit_bytes": ECHO_BYTES},
        )
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
            named = [clip(n) for n in unknown[:10]]  # names come from clients: a bounded few
            raise InvalidCommand(
                f"unknown channel(s) {shown(named, 4 * ECHO_BYTES)}; channels are {list(CHANNELS)}",
                details={**details, "unknown_channels": named},
            )
    if isinstance(message, Subscribe):
        for name, value in (message.filters or {}).items():
            if name not in FILTERS:
                raise InvalidCommand(
                    f"unknown filter {shown(name)}; filters are {list(FILTERS)}",
                    details={**details, "filter": clip(name)},
                )
            if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
                raise InvalidCommand(
                    f"filter {name} must be a finite number, got {shown(value)}",
                    details={**details, "filter": name},
                )
        for name in message.since or {}:
            if name not in CHANNELS:
                raise InvalidCommand(
                    f"'since' names unknown channel {shown(name)}",
                    details={**details, "channel": clip(name)},
                )


def _typed_command(message: Command) -> Rollback | SetParameters | Branch:
    rid = message.id
    details: dict[str, Any] = {"id": rid} if rid is not None else {}
    if message.cmd == "set_parameters":
        return SetParameters(id=rid, parameters=dict(message.args))
    if message.cmd == "branch":
        return _branch(message.args, rid, details)
    if message.cmd == "rollback":
        args = message.args
        unknown = sorted(clip(str(k)) for k in set(args) - {"generation"})[:10]
        if unknown:
            raise InvalidCommand(
                f"unknown rollback argument(s) {shown(unknown, 4 * ECHO_BYTES)}; rollback "
                "takes 'generation'",
                details={**details, "unknown_arguments": unknown},
            )
        generation = args.get("generation")
        if isinstance(generation, bool) or not isinstance(generation, int):
            raise InvalidCommand(
                f"rollback needs an integer 'generation', got {shown(generation)}",
                details={**details, "cmd": "rollback"},
            )
        return Rollback(id=rid, generation=generation)
    raise InvalidCommand(
        f"unknown command {shown(message.cmd)}; commands are {list(COMMANDS)}",
        details={**details, "cmd": clip(message.cmd)},
    )


def _branch(args: dict[str, Any], rid: RequestId, details: dict[str, Any]) -> Branch:
    unknown = sorted(clip(str(k)) for k in set(args) - {"agent_id", "parameters"})[:10]
    if unknown:
        raise InvalidCommand(
            f"unknown branch argument(s) {shown(unknown, 4 * ECHO_BYTES)}; branch takes "
            "'agent_id' and optional 'parameters'",
            details={**details, "unknown_arguments": unknown},
        )
    agent = args.get("agent_id")
    if not isinstance(agent, str) or not _id_fits(agent):
        raise InvalidCommand(
            f"branch needs a string 'agent_id' of at most {ECHO_BYTES} bytes, got "
            f"{shown(agent, 64)}",
            details={**details, "cmd": "branch"},
        )
    parameters = args.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidCommand(
            f"branch 'parameters' must be an object, got {shown(parameters, 64)}",
            details={**details, "cmd": "branch"},
        )
    return Branch(id=rid, agent_id=agent, parameters=parameters)
