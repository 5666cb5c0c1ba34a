"""The client's sans-I/O core: stream positions, reconnect delays, replies to exceptions.

Nothing here touches a socket, a clock or an event loop; the asyncio driver in
:mod:`tdevlab.client.connection` feeds it decoded messages and asks it what to do.

Recovery (README, "Protocol choices"): every published event carries ``channel`` and ``seq``
(numbers count up by one within an epoch). The client remembers, per channel, the epoch and
the last number it accepted; on reconnecting it subscribes with ``since`` and ``epochs`` so
the server replays what was missed. Replayed events that the client already holds are
dropped here, so each event reaches the frames and callbacks exactly once.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from tdevlab.exceptions import (
    AuthFailed,
    InvalidParameters,
    TdevlabError,
    error_for_code,
)
from tdevlab.protocol.channels import CHANNEL_OF_EVENT, EVENT_OF_CHANNEL
from tdevlab.protocol.session import POLICY_VIOLATION

log = logging.getLogger("tdevlab.client")

__all__ = [
    "AgentCode",
    "Backoff",
    "RunView",
    "StreamTracker",
    "auth_refused",
    "error_from_message",
    "parse_agent_code",
    "resolve_event_name",
]

#: Names ``Client.on`` accepts besides message types: connection state changes, every message.
_EXTRA_EVENTS = ("state", "message", "error", "agent_code", "front", "archive")


def resolve_event_name(name: str) -> str:
    """Return the message type for a channel name or message type (``"alerts"`` -> ``"alert"``).

    Raises:
        InvalidParameters: for a name that is neither.
    """
    if name in EVENT_OF_CHANNEL:
        return EVENT_OF_CHANNEL[name]
    if name in CHANNEL_OF_EVENT or name in _EXTRA_EVENTS:
        return name
    known = sorted({*EVENT_OF_CHANNEL, *CHANNEL_OF_EVENT, *_EXTRA_EVENTS})
    raise InvalidParameters(f"unknown event {name!r}; use one of {known}")


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: exponential with jitter, capped, for a bounded number of attempts.

    With the defaults the delays are about 1, 2, 4, 8, 16, 16, ... seconds (the API
    document's example), each moved by up to ``jitter`` (a fraction) either way so that
    many clients do not reconnect in lockstep.

    Args:
        initial: The first delay, in seconds.
        factor: Growth per attempt.
        cap: The longest delay.
        max_attempts: Attempts before giving up (``None``: never give up).
        jitter: Relative spread of each delay, in ``[0, 1)``.

    Raises:
        InvalidParameters: for a negative delay, a factor below 1, a jitter outside
            ``[0, 1)`` or a non-positive number of attempts.
    """

    initial: float = 1.0
    factor: float = 2.0
    cap: float = 16.0
    max_attempts: int | None = 10
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if not (self.initial >= 0 and self.cap >= 0):
            raise InvalidParameters(
                f"backoff delays must be >= 0, got initial={self.initial}, cap={self.cap}"
            )
        if not self.factor >= 1:
            raise InvalidParameters(f"backoff factor must be >= 1, got {self.factor}")
        if not 0 <= self.jitter < 1:
            raise InvalidParameters(f"backoff jitter must be in [0, 1), got {self.jitter}")
        if self.max_attempts is not None and (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise InvalidParameters(
                f"max_attempts must be a positive integer or None, got {self.max_attempts!r}"
            )

    def delay(self, attempt: int, rng: random.Random) -> float | None:
        """Seconds to wait before reconnect ``attempt`` (0-based), or ``None`` to give up."""
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return None
        try:
            base = min(self.cap, self.initial * self.factor**attempt)
        except OverflowError:  # attempts are unbounded with max_attempts=None
            base = self.cap
        return base * (1 + self.jitter * (2 * rng.random() - 1))


def auth_refused(close_code: int | None, error_code: str | None) -> bool:
    """Whether a connection ended because the server refused its credentials for good.

    Decided on codes, never on the words of a close reason. The server closes with 1008
    (policy violation) for a refused ``auth`` and for flooding alike, so the close code
    alone cannot tell them apart: the ``AUTH_FAILED`` error it sends before closing a
    refused ``auth`` can. A connection closed with 1008 for an expired token carries no
    such error: the client reconnects, and the server's answer to that handshake (HTTP
    401, or ``AUTH_FAILED`` for an ``auth`` message) decides.

    Args:
        close_code: The code of the server's close frame (``None``: no close frame).
        error_code: The code of the last error the server sent on the connection.

    Returns:
        True when reconnecting with the same token cannot help.
    """
    return close_code == POLICY_VIOLATION and error_code == AuthFailed.code


@dataclass
class _Position:
    epoch: str | None = None
    seq: int = 0


@dataclass
class StreamTracker:
    """Per-channel stream positions: which events are new, what to ask for after a drop.

    The driver calls :meth:`accept` for every event, :meth:`acknowledged` for every
    subscribe acknowledgement, and :meth:`since` / :meth:`epochs` to build the subscribe
    that resumes the streams.
    """

    positions: dict[str, _Position] = field(default_factory=dict)
    #: Channels whose epoch changed: live events are ignored until the replay from 0 arrives.
    resyncing: set[str] = field(default_factory=set)
    duplicates: int = 0
    epoch_changes: int = 0
    #: Channels for which the server said history was lost (``recovered: false``).
    unrecovered: dict[str, int] = field(default_factory=dict)
    #: Channels subscribed with ``history=False``: a new epoch is taken up live, from the
    #: acknowledgement on, instead of replayed from its start.
    live_only: set[str] = field(default_factory=set)

    def accept(self, message: dict[str, Any]) -> bool:
        """Whether a published event is new; records its position if so.

        Events without ``seq`` (errors on a channel, replies) are always new.
        """
        channel = message.get("channel")
        seq = message.get("seq")
        if not isinstance(channel, str) or not isinstance(seq, int):
            return True
        if channel in self.resyncing:
            return False  # the replay that follows the resync acknowledgement carries it
        position = self.positions.setdefault(channel, _Position())
        if seq <= position.seq:
            self.duplicates += 1
            return False
        position.seq = seq
        return True

    def acknowledged(
        self,
        data: dict[str, Any],
        asked_since: dict[str, int],
        asked_channels: list[str] | None = None,
    ) -> list[str]:
        """Take in a subscribe acknowledgement; return channels to resync from the start.

        Args:
            data: The ``ack``'s data (``epochs``, ``seq``, maybe ``recovered``).
            asked_since: The ``since`` the subscribe carried (empty for a fresh subscribe).

        Returns:
            Channels whose stream restarted under a new epoch (a server restarted without
            its history): the driver subscribes them again with ``since: 0`` in the new
            epoch, and their live events are ignored until that replay arrives. Channels
            in :attr:`live_only` are not among them: they continue after the ack's ``seq``
            in the new epoch, as a fresh subscribe does.
        """
        epochs: dict[str, str] = data.get("epochs") or {}
        latest: dict[str, int] = data.get("seq") or {}
        recovered: dict[str, bool] = data.get("recovered") or {}
        resync = []
        for channel in data.get("channels") or []:
            position = self.positions.setdefault(channel, _Position())
            epoch = epochs.get(channel)
            if channel in self.resyncing:
                if asked_since.get(channel) == 0:
                    # The replay from 0 in the new epoch follows this acknowledgement.
                    self.resyncing.discard(channel)
                continue
            if position.epoch is not None and epoch is not None and epoch != position.epoch:
                self.epoch_changes += 1
                if channel in self.live_only:
                    # No history was asked for: what the new stream held before is skipped.
                    position.epoch, position.seq = epoch, int(latest.get(channel, 0))
                    continue
                position.epoch, position.seq = epoch, 0  # any later subscribe asks from 0
                self.resyncing.add(channel)
                resync.append(channel)
                continue
            fresh = position.epoch is None
            position.epoch = epoch if epoch is not None else position.epoch
            if channel not in asked_since and fresh:
                # A fresh subscribe: the stream starts after the server's current position.
                position.seq = max(position.seq, int(latest.get(channel, 0)))
            elif recovered.get(channel) is False:
                # The server no longer holds everything missed (its history is bounded).
                self.unrecovered[channel] = self.unrecovered.get(channel, 0) + 1
                log.warning(
                    "tdevlab client: the server could not replay every missed %r event", channel
                )
        return resync

    def since(self, channels: list[str]) -> dict[str, int]:
        """The last accepted sequence number of each channel (0 when none yet)."""
        return {c: self.positions[c].seq if c in self.positions else 0 for c in channels}

    def epochs(self, channels: list[str]) -> dict[str, str]:
        """The epoch each channel's numbers belong to, for those known."""
        return {
            c: epoch
            for c in channels
            if c in self.positions and (epoch := self.positions[c].epoch) is not None
        }


@dataclass
class RunView:
    """The run as the server last reported it: from ``control_update`` events and acks.

    An ack's run snapshot was taken when the server handled the request; a
    ``control_update`` that arrived after the request was made is newer (a run that failed
    at once is announced before the start's ack), so the snapshot is taken only if none
    did. :attr:`control_events` counts them, so a request can say how many it saw.

    Attributes:
        state: The run's state (``None`` until known).
        generation: The latest generation seen (``None`` until known).
        parameters: The engine parameters in force.
        strategy: The run's strategy, ``{"name", "config"}``, from control acks (``None``
            until one came).
        control_events: ``control_update`` events received.
    """

    state: str | None = None
    generation: int | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    strategy: dict[str, Any] | None = None
    control_events: int = 0

    def event(self, kind: object, data: object) -> None:
        """Take in a published event's ``type`` and ``data``."""
        if not isinstance(data, dict):
            return
        if kind == "evolution_update":
            generation = data.get("generation")
            if isinstance(generation, int):
                self.generation = generation
        elif kind == "control_update":
            self.control_events += 1
            self.note(data)

    def acknowledged(self, data: dict[str, Any], control_events: int) -> None:
        """Take in an ack's run snapshot, unless a control event came after ``control_events``.

        Args:
            data: The snapshot (``state``, ``generation``, ``parameters``).
            control_events: :attr:`control_events` when the request was made.
        """
        if control_events == self.control_events:
            self.note(data)
        strategy = data.get("strategy")  # fixed from generation 0: never stale
        if isinstance(strategy, dict) and isinstance(strategy.get("name"), str):
            self.strategy = strategy

    def note(self, data: dict[str, Any]) -> None:
        """Take in what ``data`` says of the run (fields of the wrong type are ignored)."""
        state = data.get("state")
        if isinstance(state, str):
            self.state = state
        generation = data.get("generation")
        if isinstance(generation, int) and generation >= 0:
            self.generation = generation
        parameters = data.get("parameters")
        if isinstance(parameters, dict):
            self.parameters = parameters


def error_from_message(message: dict[str, Any]) -> TdevlabError:
    """Turn an ``error`` message into the exception of its code, with message and details."""
    error = message.get("error")
    if not isinstance(error, dict):
        return TdevlabError(f"malformed error message from the server: {message!r}")
    code = str(error.get("code", ""))
    text = str(error.get("message") or code or "error")
    details = error.get("details") if isinstance(error.get("details"), dict) else {}
    exc = error_for_code(code)(text, details=details)
    if exc.code is None:
        exc.code = code or None  # keep an unknown code visible on the instance
    return exc


@dataclass(frozen=True)
class AgentCode:
    """An agent's source as received in a binary ``agent_code`` frame.

    Attributes:
        agent_id: The agent's id.
        name: Its readable name.
        generation: The generation it was born in.
        text: The source, decoded.
        metadata: The frame's whole JSON metadata.
    """

    agent_id: str
    name: str
    generation: int
    text: str
    metadata: dict[str, Any]

    def __str__(self) -> str:
        return self.text


def parse_agent_code(frame: bytes) -> AgentCode:
    """Parse a binary frame: JSON metadata, a newline, then the code.

    Raises:
        TdevlabError: if the frame lacks the metadata line or it is not a JSON object.
    """
    head, sep, body = frame.partition(b"\n")
    try:
        metadata = json.loads(head)
    except ValueError as exc:
        raise TdevlabError(f"binary frame without JSON metadata: {head[:80]!r}") from exc
    if not sep or not isinstance(metadata, dict):
        raise TdevlabError(f"binary frame without a metadata line: {frame[:80]!r}")
    encoding = str(metadata.get("encoding") or "utf-8")
    try:
        text = body.decode(encoding)
    except (LookupError, UnicodeDecodeError) as exc:
        raise TdevlabError(f"agent code is not valid {encoding}: {exc}") from exc
    try:
        generation = int(metadata.get("generation", -1))
    except (TypeError, ValueError) as exc:
        raise TdevlabError(f"agent code metadata has a bad generation: {exc}") from exc
    return AgentCode(
        agent_id=str(metadata.get("agent_id", "")),
        name=str(metadata.get("name", "")),
        generation=generation,
        text=text,
        metadata=metadata,
    )
