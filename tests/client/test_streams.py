"""The client's sans-I/O core: stream positions, backoff, errors, binary frames."""

from __future__ import annotations

import random

import pytest

from tdevlab.client.streams import (
    AgentCode,
    Backoff,
    RunView,
    StreamTracker,
    auth_refused,
    error_from_message,
    parse_agent_code,
    resolve_event_name,
)
from tdevlab.exceptions import (
    AgentNotFound,
    AuthFailed,
    ConstraintViolation,
    EvolutionFailed,
    InvalidCommand,
    InvalidParameters,
    RateLimited,
    TdevlabError,
    Unauthorized,
)
from tdevlab.protocol.channels import CHANNELS, EVENT_OF_CHANNEL


def _event(channel: str, seq: int) -> dict[str, object]:
    return {"type": "log", "channel": channel, "seq": seq, "data": {}}


def _ack(
    channels: list[str], epochs: dict[str, str], seq: dict[str, int], **extra: object
) -> dict[str, object]:
    return {"request": "subscribe", "channels": channels, "epochs": epochs, "seq": seq, **extra}


def test_fresh_subscribe_starts_after_the_server_position() -> None:
    """Without ``since``, the ack's seq is where the stream starts; a resume asks from there."""
    tracker = StreamTracker()
    assert tracker.acknowledged(_ack(["logs"], {"logs": "e1"}, {"logs": 40}), {}) == []
    assert tracker.since(["logs"]) == {"logs": 40}
    assert tracker.epochs(["logs"]) == {"logs": "e1"}
    assert tracker.accept(_event("logs", 41))
    assert tracker.since(["logs"]) == {"logs": 41}


def test_replayed_events_already_seen_are_dropped_once() -> None:
    """A replay overlapping what arrived live is deduplicated by sequence number."""
    tracker = StreamTracker()
    tracker.acknowledged(_ack(["logs"], {"logs": "e1"}, {"logs": 0}), {"logs": 0})
    accepted = [s for s in (1, 2, 3, 2, 3, 4, 1, 5) if tracker.accept(_event("logs", s))]
    assert accepted == [1, 2, 3, 4, 5]
    assert tracker.duplicates == 3


def test_events_without_seq_always_pass() -> None:
    """Errors published on a channel carry no seq and are never dropped."""
    tracker = StreamTracker()
    assert tracker.accept({"type": "error", "channel": "evolution"})
    assert tracker.accept({"type": "error", "channel": "evolution"})


def test_new_epoch_resyncs_from_zero_and_holds_live_events() -> None:
    """A restarted stream (new epoch) is replayed from 0; live events wait for that replay."""
    tracker = StreamTracker()
    tracker.acknowledged(_ack(["logs"], {"logs": "old"}, {"logs": 7}), {"logs": 0})
    for seq in range(1, 8):
        assert tracker.accept(_event("logs", seq))
    resync = tracker.acknowledged(
        _ack(["logs"], {"logs": "new"}, {"logs": 3}, recovered={"logs": False}), {"logs": 7}
    )
    assert resync == ["logs"]
    assert tracker.epoch_changes == 1
    assert not tracker.accept(_event("logs", 4))  # live, before the replay: carried by it
    assert tracker.acknowledged(_ack(["logs"], {"logs": "new"}, {"logs": 4}), {"logs": 0}) == []
    assert [s for s in (1, 2, 3, 4, 5) if tracker.accept(_event("logs", s))] == [1, 2, 3, 4, 5]
    assert tracker.epochs(["logs"]) == {"logs": "new"}


def test_lost_history_is_counted() -> None:
    """``recovered: false`` in the same epoch is recorded per channel."""
    tracker = StreamTracker()
    tracker.acknowledged(_ack(["metrics"], {"metrics": "e"}, {"metrics": 0}), {"metrics": 0})
    tracker.acknowledged(
        _ack(["metrics"], {"metrics": "e"}, {"metrics": 5000}, recovered={"metrics": False}),
        {"metrics": 0},
    )
    assert tracker.unrecovered == {"metrics": 1}


def test_backoff_doubles_to_the_cap_with_bounded_jitter() -> None:
    """Delays follow 1, 2, 4, 8, 16, 16 (within the jitter) and stop after max_attempts."""
    backoff = Backoff(max_attempts=6)
    rng = random.Random(1)
    delays = [backoff.delay(i, rng) for i in range(7)]
    for delay, base in zip(delays, [1, 2, 4, 8, 16, 16], strict=False):
        assert delay is not None
        assert base * 0.75 <= delay <= base * 1.25
    assert delays[6] is None
    assert Backoff(jitter=0).delay(3, rng) == 8
    assert Backoff(max_attempts=None).delay(10_000, rng) is not None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": -1},
        {"factor": 0.5},
        {"jitter": 1.0},
        {"max_attempts": 0},
        {"max_attempts": True},
    ],
)
def test_backoff_refuses_bad_settings(kwargs: dict[str, object]) -> None:
    """Impossible backoff settings are refused, naming the setting."""
    with pytest.raises(InvalidParameters, match=next(iter(kwargs))):
        Backoff(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("AUTH_FAILED", AuthFailed),
        ("UNAUTHORIZED", Unauthorized),
        ("RATE_LIMITED", RateLimited),
        ("INVALID_COMMAND", InvalidCommand),
        ("AGENT_NOT_FOUND", AgentNotFound),
        ("CONSTRAINT_VIOLATION", ConstraintViolation),
        ("EVOLUTION_FAILED", EvolutionFailed),
    ],
)
def test_every_error_code_maps_to_its_exception(code: str, cls: type[TdevlabError]) -> None:
    """An error message becomes the exception of its code, with message and details."""
    exc = error_from_message(
        {"type": "error", "error": {"code": code, "message": "why", "details": {"k": 1}}}
    )
    assert type(exc) is cls
    assert (str(exc), exc.details, exc.code) == ("why", {"k": 1}, code)


def test_unknown_and_malformed_errors_stay_readable() -> None:
    """An unknown code keeps its name; a malformed error message says so."""
    exc = error_from_message({"type": "error", "error": {"code": "NEW_CODE", "message": "m"}})
    assert type(exc) is TdevlabError
    assert exc.code == "NEW_CODE"
    assert "malformed" in str(error_from_message({"type": "error", "error": "oops"}))


def test_agent_code_frame_parses_metadata_and_text() -> None:
    """A binary frame's JSON line is the metadata; the rest is the decoded code."""
    frame = b'{"type":"agent_code","agent_id":"agent-3","name":"A_v3","generation":2}\nx = 1\n'
    code = parse_agent_code(frame)
    assert code == AgentCode("agent-3", "A_v3", 2, "x = 1\n", code.metadata)
    assert str(code) == "x = 1\n"
    with pytest.raises(TdevlabError, match="metadata"):
        parse_agent_code(b"no json here")
    with pytest.raises(TdevlabError, match="utf-8"):
        parse_agent_code(b'{"encoding":"utf-8"}\n\xff\xfe')


def test_event_names_accept_channels_and_types() -> None:
    """``alerts`` and ``alert`` name the same events; unknown names are refused."""
    assert resolve_event_name("alerts") == resolve_event_name("alert") == "alert"
    assert resolve_event_name("state") == "state"
    with pytest.raises(InvalidParameters, match="unknown event 'alrets'"):
        resolve_event_name("alrets")


def test_every_channel_names_the_events_it_carries() -> None:
    """Each channel of the protocol's table resolves to its event type, and the type to itself."""
    for channel in CHANNELS:
        kind = EVENT_OF_CHANNEL[channel]
        assert resolve_event_name(channel) == resolve_event_name(kind) == kind


@pytest.mark.parametrize(
    ("close_code", "error_code", "refused"),
    [
        (1008, "AUTH_FAILED", True),  # a refused auth message: error, then close 1008
        (1008, None, False),  # an expired token: the reconnect's handshake decides
        (1008, "RATE_LIMITED", False),  # flooding: reconnect
        (1001, "AUTH_FAILED", False),  # the server went away after some refusal
        (None, "AUTH_FAILED", False),  # dropped without a close frame
        (1000, None, False),
    ],
)
def test_auth_is_given_up_on_codes_not_on_close_reasons(
    close_code: int | None, error_code: str | None, refused: bool
) -> None:
    """Only close 1008 after an AUTH_FAILED error means the token will not do."""
    assert auth_refused(close_code, error_code) is refused


def test_an_ack_snapshot_yields_to_a_newer_control_event() -> None:
    """A run snapshot from an ack is kept only if no control_update came after the request."""
    run = RunView()
    seen = run.control_events
    run.event("control_update", {"state": "failed", "generation": 3, "parameters": {}})
    run.acknowledged({"state": "running", "generation": 2}, seen)
    assert (run.state, run.generation, run.control_events) == ("failed", 3, 1)
    run.acknowledged({"state": "paused", "generation": 4}, run.control_events)
    assert (run.state, run.generation) == ("paused", 4)


def test_the_run_view_follows_generations_and_ignores_malformed_fields() -> None:
    """evolution_update moves the generation; fields of the wrong type change nothing."""
    run = RunView()
    run.event("evolution_update", {"generation": 5})
    run.event("evolution_update", "not an object")
    run.note({"state": 3, "generation": -1, "parameters": ["x"]})
    assert (run.state, run.generation, run.parameters) == (None, 5, {})
    run.note({"parameters": {"mutation_rate": 0.1}})
    assert run.parameters == {"mutation_rate": 0.1}
