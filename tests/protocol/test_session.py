"""The per-connection session state machine, driven by frames and explicit times."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdevlab.protocol.auth import Claims, TokenVerifier, issue_token
from tdevlab.protocol.envelope import Encoder, iso_time
from tdevlab.protocol.messages import (
    AgentCodeUpload,
    Control,
    GetAgent,
    GetAgentCode,
    Rollback,
    SetParameters,
)
from tdevlab.protocol.session import (
    Close,
    Dispatch,
    Filters,
    Outcome,
    Replay,
    Send,
    Session,
    SessionState,
)

SECRET = "session-tests-secret-0123456789abcdef"
T0 = 1_700_000_000.0
AUTH_TIMEOUT = 10.0
LEEWAY = TokenVerifier(SECRET).leeway  # sessions close at exp + leeway, as verify() accepts
FAST = settings(max_examples=150, deadline=None, database=None)
UPLOAD = b'{"type":"agent_code","agent_id":"agent-1","id":"up1"}\ndef f():\n    return 1\n'


def token(user: str = "alice", role: str = "operator", now: float = T0, ttl: int = 3600) -> str:
    """A token of SECRET issued at `now`."""
    return issue_token(SECRET, user, role, now=now, ttl=ttl)


def new_session(header_claims: Claims | None = None, now: float = T0) -> Session:
    """A session with a real verifier and encoder."""
    return Session(
        TokenVerifier(SECRET),
        Encoder("srv"),
        now=now,
        auth_timeout=AUTH_TIMEOUT,
        header_claims=header_claims,
    )


def frame(**fields: Any) -> str:
    """A text frame with these fields."""
    return json.dumps(fields)


def auth_frame(tok: str, rid: str | int | None = "auth-1") -> str:
    """The auth message for a token."""
    return (
        frame(type="auth", token=tok, id=rid) if rid is not None else frame(type="auth", token=tok)
    )


def authed(role: str = "operator", user: str = "alice", ttl: int = 3600) -> Session:
    """A session that authenticated with an auth message at T0."""
    session = new_session()
    [reply] = session.receive_text(auth_frame(token(user, role, ttl=ttl)), T0)
    assert isinstance(reply, Send)
    assert not reply.error
    assert session.state is SessionState.OPEN
    return session


def reply_of(outcomes: list[Outcome]) -> dict[str, Any]:
    """The single text Send among outcomes, decoded (a subscribe's Replay as its ack)."""
    assert len(outcomes) == 1, outcomes
    [out] = outcomes
    if isinstance(out, Replay):  # the driver acknowledges subscribes (it holds the history)
        return {"type": "ack", "reply_to": out.reply_to, "data": out.ack}
    assert isinstance(out, Send)
    assert not out.binary
    decoded: dict[str, Any] = json.loads(out.data)
    assert out.error == (decoded["type"] == "error")
    return decoded


def error_of(outcomes: list[Outcome], code: str) -> dict[str, Any]:
    """The single error reply among outcomes, checked to carry `code`."""
    assert len(outcomes) == 1, outcomes
    assert isinstance(outcomes[0], Send)
    assert outcomes[0].error
    message = reply_of(outcomes)
    assert message["type"] == "error"
    assert message["error"]["code"] == code
    assert "id" not in message["error"]["details"]
    return message


def dispatch_of(outcomes: list[Outcome]) -> Dispatch:
    """The single Dispatch among outcomes."""
    assert len(outcomes) == 1, outcomes
    [out] = outcomes
    assert isinstance(out, Dispatch)
    return out


NON_AUTH_MESSAGES = [
    {"type": "subscribe", "channels": ["evolution"], "id": "m1"},
    {"type": "unsubscribe", "channels": ["logs"], "id": "m1"},
    {"type": "control", "action": "start", "id": "m1"},
    {"type": "get_agent", "agent_id": "agent-1", "id": "m1"},
    {"type": "get_agent_code", "agent_id": "agent-1", "id": "m1"},
    {"type": "command", "cmd": "rollback", "args": {"generation": 3}, "id": "m1"},
    {"type": "ping", "timestamp": 1, "id": "m1"},
]


# -- start -------------------------------------------------------------------------------------


def test_starts_awaiting_auth_without_header_claims() -> None:
    """Without Authorization header claims the session waits for an auth message."""
    session = new_session()
    assert session.state is SessionState.AWAITING_AUTH
    assert session.claims is None
    assert session.deadline == T0 + AUTH_TIMEOUT
    assert session.subscriptions == {}


def test_starts_open_with_header_claims() -> None:
    """Claims from a valid header open the session until they expire."""
    claims = Claims("alice", "viewer", T0 + 60)
    session = new_session(header_claims=claims)
    assert session.state is SessionState.OPEN
    assert session.claims == claims
    assert session.deadline == T0 + 60 + LEEWAY
    assert reply_of(session.receive_text(frame(type="ping"), T0 + 1))["type"] == "pong"


# -- before auth -------------------------------------------------------------------------------


@pytest.mark.parametrize("fields", NON_AUTH_MESSAGES)
def test_non_auth_message_before_auth_is_unauthorized(fields: dict[str, Any]) -> None:
    """Before auth, any other message gets one UNAUTHORIZED error and the session waits on."""
    session = new_session()
    message = error_of(session.receive_text(json.dumps(fields), T0 + 1), "UNAUTHORIZED")
    assert message["reply_to"] == "m1"
    assert "auth" in message["error"]["message"]
    assert session.state is SessionState.AWAITING_AUTH
    assert session.claims is None


def test_binary_frame_before_auth_is_unauthorized() -> None:
    """Before auth, a binary upload gets UNAUTHORIZED and the session waits on."""
    session = new_session()
    error_of(session.receive_binary(UPLOAD, T0 + 1), "UNAUTHORIZED")
    assert session.state is SessionState.AWAITING_AUTH


def test_malformed_frame_before_auth_is_an_error_and_waits_on() -> None:
    """Before auth, a malformed frame is an error reply; the session still waits for auth."""
    session = new_session()
    error_of(session.receive_text("not json", T0 + 1), "INVALID_COMMAND")
    assert session.state is SessionState.AWAITING_AUTH
    reply = reply_of(session.receive_text(auth_frame(token()), T0 + 2))
    assert reply["type"] == "ack"


# -- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_valid_auth_is_acknowledged(role: str) -> None:
    """A valid auth message gets an ack naming user and role, replying to its id."""
    session = new_session()
    reply = reply_of(session.receive_text(auth_frame(token("alice", role), "a1"), T0 + 1))
    assert reply["type"] == "ack"
    assert reply["data"] == {"request": "auth", "user": "alice", "role": role}
    assert reply["reply_to"] == "a1"
    assert reply["timestamp"] == iso_time(T0 + 1)
    assert reply["id"].startswith("srv-")
    assert session.state is SessionState.OPEN
    assert session.claims == Claims("alice", role, T0 + 3600)  # type: ignore[arg-type]
    assert session.deadline == T0 + 3600 + LEEWAY


def test_auth_ack_replies_to_integer_ids_and_omits_missing_ones() -> None:
    """reply_to is the integer id when given, and absent without an id."""
    assert reply_of(new_session().receive_text(auth_frame(token(), 7), T0))["reply_to"] == 7
    assert "reply_to" not in reply_of(new_session().receive_text(auth_frame(token(), None), T0))


@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        "",
        issue_token("another-secret-0123456789abcdefghij", "alice", "operator", now=T0),
        token(now=T0 - 7200, ttl=60),
    ],
)
def test_bad_auth_closes_with_policy_violation(bad: str) -> None:
    """A refused token gives an AUTH_FAILED error then Close(1008), and the session is closed."""
    session = new_session()
    outcomes = session.receive_text(auth_frame(bad, "a1"), T0 + 1)
    assert len(outcomes) == 2
    error, close = outcomes
    assert isinstance(error, Send)
    assert error.error
    message = reply_of([error])
    assert message["error"]["code"] == "AUTH_FAILED"
    assert message["reply_to"] == "a1"
    assert close == Close(1008, close.reason)
    assert close.reason.startswith("authentication failed")
    assert session.state is SessionState.CLOSED


def test_closed_session_ignores_everything() -> None:
    """After a failed auth, frames and ticks produce nothing."""
    session = new_session()
    session.receive_text(auth_frame("garbage"), T0)
    assert session.receive_text(auth_frame(token()), T0 + 1) == []
    assert session.receive_text(frame(type="ping"), T0 + 1) == []
    assert session.receive_binary(UPLOAD, T0 + 1) == []
    assert session.tick(T0 + 1000) == []
    assert session.state is SessionState.CLOSED


@pytest.mark.parametrize(
    "role", ["é" * 100, "x" * 300, "ロール" * 40], ids=["accented", "ascii", "katakana"]
)
def test_close_reason_fits_a_close_frame(role: str) -> None:
    """The close reason is at most 123 UTF-8 bytes (RFC 6455), whatever the token said."""
    bad = jwt.encode({"sub": "alice", "role": role, "exp": T0 + 60}, SECRET, algorithm="HS256")
    outcomes = new_session().receive_text(auth_frame(bad), T0)
    close = outcomes[-1]
    assert isinstance(close, Close)
    assert len(close.reason.encode("utf-8")) <= 123


def test_bad_reauth_closes_an_open_session() -> None:
    """A refused token on re-auth also closes the connection."""
    session = authed()
    outcomes = session.receive_text(auth_frame("garbage"), T0 + 5)
    assert isinstance(outcomes[-1], Close)
    assert outcomes[-1].code == 1008
    assert session.state is SessionState.CLOSED


def test_reauth_with_fresh_token_extends_the_deadline() -> None:
    """Re-authenticating as the same user with a new token moves the expiry."""
    session = authed(ttl=60)
    assert session.deadline == T0 + 60 + LEEWAY
    fresh = token(now=T0 + 50, ttl=3600)
    reply = reply_of(session.receive_text(auth_frame(fresh, "re"), T0 + 50))
    assert reply["data"] == {"request": "auth", "user": "alice", "role": "operator"}
    assert session.deadline == T0 + 50 + 3600 + LEEWAY
    assert session.tick(T0 + 61) == []
    assert session.tick(T0 + 3000) == []
    assert session.state is SessionState.OPEN


def test_reauth_as_another_user_is_refused() -> None:
    """Re-authenticating as a different user is refused and the old claims stay."""
    session = authed(role="viewer", ttl=60)
    before = session.claims
    message = error_of(
        session.receive_text(auth_frame(token("mallory", "operator"), "r2"), T0 + 1),
        "AUTH_FAILED",
    )
    assert message["reply_to"] == "r2"
    assert "user" in message["error"]["message"]
    assert session.claims == before
    assert session.deadline == T0 + 60 + LEEWAY
    assert session.state is SessionState.OPEN


# -- time ------------------------------------------------------------------------------------


def test_tick_before_auth_deadline_does_nothing() -> None:
    """Before the auth timeout, tick returns nothing."""
    session = new_session()
    assert session.tick(T0) == []
    assert session.tick(T0 + AUTH_TIMEOUT - 0.001) == []
    assert session.state is SessionState.AWAITING_AUTH


@pytest.mark.parametrize("late", [0.0, 0.001, 100.0])
def test_auth_timeout_closes_once(late: float) -> None:
    """At or after the auth deadline, tick closes with 1008 once."""
    session = new_session()
    [close] = session.tick(T0 + AUTH_TIMEOUT + late)
    assert isinstance(close, Close)
    assert close.code == 1008
    assert close.reason.startswith("authentication timeout")
    assert session.state is SessionState.CLOSED
    assert session.tick(T0 + AUTH_TIMEOUT + late + 1) == []


def test_auth_after_the_deadline_is_too_late() -> None:
    """An auth message that arrives after the timeout gets the timeout close, not an ack."""
    session = new_session()
    [close] = session.receive_text(auth_frame(token()), T0 + AUTH_TIMEOUT)
    assert isinstance(close, Close)
    assert close.reason.startswith("authentication timeout")
    assert session.claims is None


def test_token_expiry_closes_the_session() -> None:
    """After auth, passing the token's exp (plus the verifier's leeway) closes, once."""
    session = authed(ttl=60)
    assert session.tick(T0 + 60 + LEEWAY - 0.001) == []
    [close] = session.tick(T0 + 60 + LEEWAY)
    assert isinstance(close, Close)
    assert close.code == 1008
    assert "token expired" in close.reason
    assert session.state is SessionState.CLOSED
    assert session.tick(T0 + 61) == []


def test_frame_after_token_expiry_only_closes() -> None:
    """A frame that arrives after expiry is not handled; the session closes."""
    session = authed(ttl=60)
    [close] = session.receive_text(frame(type="ping"), T0 + 120)
    assert isinstance(close, Close)
    assert "token expired" in close.reason
    assert session.receive_binary(UPLOAD, T0 + 121) == []


def test_header_claims_expire_too() -> None:
    """A session opened by header claims closes when they expire."""
    session = new_session(header_claims=Claims("alice", "operator", T0 + 30))
    [close] = session.receive_binary(UPLOAD, T0 + 30 + LEEWAY)
    assert isinstance(close, Close)
    assert "token expired" in close.reason


def test_close_marks_the_session_closed() -> None:
    """close() ends the session; later frames produce nothing."""
    session = authed()
    session.close()
    assert session.state is SessionState.CLOSED
    assert session.receive_text(frame(type="ping"), T0 + 1) == []


# -- subscriptions ---------------------------------------------------------------------------


def test_subscribe_with_channel_and_filters() -> None:
    """The spec's channel + filters subscription is acknowledged with its filters."""
    session = authed(role="viewer")
    reply = reply_of(
        session.receive_text(
            frame(
                type="subscribe",
                channel="evolution",
                filters={"generation_min": 100, "fitness_min": 0.9},
                id="s1",
            ),
            T0 + 1,
        )
    )
    assert reply["type"] == "ack"
    assert reply["reply_to"] == "s1"
    assert reply["data"] == {
        "request": "subscribe",
        "channels": ["evolution"],
        "filters": {"evolution": {"generation_min": 100, "fitness_min": 0.9}},
    }
    assert session.subscriptions == {"evolution": Filters(generation_min=100, fitness_min=0.9)}


def test_subscribe_with_channels_list() -> None:
    """The channels-list form subscribes each channel without filters."""
    session = authed(role="viewer")
    reply = reply_of(
        session.receive_text(
            frame(type="subscribe", channels=["evolution", "metrics", "alerts"]), T0
        )
    )
    assert reply["data"] == {
        "request": "subscribe",
        "channels": ["alerts", "evolution", "metrics"],
        "filters": {"alerts": {}, "evolution": {}, "metrics": {}},
    }


def test_subscriptions_accumulate_and_resubscribe_replaces_filters() -> None:
    """Subscribing again adds channels; a channel subscribed again takes the new filters."""
    session = authed()
    session.receive_text(
        frame(type="subscribe", channel="evolution", filters={"fitness_min": 1}), T0
    )
    reply = reply_of(
        session.receive_text(
            frame(type="subscribe", channels=["logs", "evolution"], filters={"generation_min": 5}),
            T0,
        )
    )
    assert reply["data"]["channels"] == ["evolution", "logs"]
    assert reply["data"]["filters"]["evolution"] == {"generation_min": 5}
    assert session.wants("evolution", 5, 0.0)


@pytest.mark.parametrize(
    ("generation", "fitness", "wanted"),
    [
        (101, 0.95, True),
        (100, 0.9, True),
        (99, 0.95, False),
        (101, 0.5, False),
        (99, 0.5, False),
        (None, None, True),
        (None, 0.95, True),
        (None, 0.5, False),
        (101, None, True),
        (50, None, False),
    ],
)
def test_wants_honours_generation_and_fitness_filters(
    generation: int | None, fitness: float | None, wanted: bool
) -> None:
    """Events pass when they meet generation_min and fitness_min; missing fields pass."""
    session = authed(role="viewer")
    session.receive_text(
        frame(
            type="subscribe",
            channel="evolution",
            filters={"generation_min": 100, "fitness_min": 0.9},
        ),
        T0,
    )
    assert session.wants("evolution", generation, fitness) is wanted


@pytest.mark.parametrize(("generation", "fitness"), [(None, None), (0, 0.0), (10**6, 1.0)])
def test_unsubscribed_channels_are_never_wanted(
    generation: int | None, fitness: float | None
) -> None:
    """Events on a channel the session did not subscribe never go to it."""
    session = authed()
    session.receive_text(frame(type="subscribe", channel="evolution"), T0)
    assert not session.wants("metrics", generation, fitness)
    assert not session.wants("bogus", generation, fitness)
    assert session.wants("evolution", generation, fitness)


def test_single_filter_leaves_the_other_field_free() -> None:
    """With only generation_min, any fitness passes; with only fitness_min, any generation."""
    session = authed()
    session.receive_text(
        frame(type="subscribe", channel="agents", filters={"generation_min": 3}), T0
    )
    session.receive_text(
        frame(type="subscribe", channel="evolution", filters={"fitness_min": 0.5}), T0
    )
    assert session.wants("agents", 3, -1e9)
    assert not session.wants("agents", 2, 1.0)
    assert session.wants("evolution", 0, 0.5)
    assert not session.wants("evolution", 10**6, 0.4)


def test_unsubscribe_removes_channels() -> None:
    """Unsubscribing removes the channels and acks the remaining ones."""
    session = authed(role="viewer")
    session.receive_text(frame(type="subscribe", channels=["logs", "metrics", "alerts"]), T0)
    reply = reply_of(session.receive_text(frame(type="unsubscribe", channels=["logs"], id=4), T0))
    assert reply["type"] == "ack"
    assert reply["reply_to"] == 4
    assert reply["data"] == {"request": "unsubscribe", "channels": ["alerts", "metrics"]}
    assert not session.wants("logs", None, None)
    assert session.wants("metrics", None, None)
    reply = reply_of(session.receive_text(frame(type="unsubscribe", channel="metrics"), T0))
    assert reply["data"]["channels"] == ["alerts"]


def test_unsubscribe_from_an_unsubscribed_channel_is_fine() -> None:
    """Unsubscribing a channel that was never subscribed is acknowledged."""
    session = authed()
    reply = reply_of(session.receive_text(frame(type="unsubscribe", channels=["control"]), T0))
    assert reply["data"] == {"request": "unsubscribe", "channels": []}


# -- ping --------------------------------------------------------------------------------------


@pytest.mark.parametrize("timestamp", [1704067200000, 0, 1.5, "client-time"])
def test_ping_gets_a_pong_echoing_the_timestamp(timestamp: Any) -> None:
    """pong echoes the client's timestamp at top level and puts the server time in data."""
    session = authed(role="viewer")
    reply = reply_of(session.receive_text(frame(type="ping", timestamp=timestamp, id="p1"), T0 + 2))
    assert reply["type"] == "pong"
    assert reply["timestamp"] == timestamp
    assert reply["reply_to"] == "p1"
    assert reply["data"] == {"server_time": iso_time(T0 + 2)}
    assert reply["id"].startswith("srv-")


def test_spec_ping_gets_the_spec_pong() -> None:
    """The spec's ping (no id) gets {"type": "pong", "timestamp": 1704067200000, ...}."""
    session = authed()
    reply = reply_of(session.receive_text('{"type":"ping","timestamp":1704067200000}', T0))
    assert reply["type"] == "pong"
    assert reply["timestamp"] == 1704067200000
    assert "reply_to" not in reply


# -- roles -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "what"),
    [
        ({"type": "control", "action": "start", "id": "v1"}, "control"),
        ({"type": "command", "cmd": "rollback", "args": {"generation": 1}, "id": "v1"}, "rollback"),
        ({"type": "command", "cmd": "set_parameters", "args": {}, "id": "v1"}, "set_parameters"),
    ],
)
def test_viewer_may_not_control_or_command(fields: dict[str, Any], what: str) -> None:
    """A viewer's control or command is UNAUTHORIZED, naming the role and the action."""
    session = authed(role="viewer")
    message = error_of(session.receive_text(json.dumps(fields), T0), "UNAUTHORIZED")
    assert message["reply_to"] == "v1"
    assert "viewer" in message["error"]["message"]
    assert what in message["error"]["message"]
    assert message["error"]["details"] == {"role": "viewer"}
    assert session.state is SessionState.OPEN


def test_viewer_may_not_upload_agent_code() -> None:
    """A viewer's binary upload is UNAUTHORIZED, naming the role."""
    session = authed(role="viewer")
    message = error_of(session.receive_binary(UPLOAD, T0), "UNAUTHORIZED")
    assert "viewer" in message["error"]["message"]
    assert message["reply_to"] == "up1"


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "subscribe", "channel": "evolution"},
        {"type": "unsubscribe", "channel": "evolution"},
        {"type": "ping"},
    ],
)
def test_viewer_may_subscribe_unsubscribe_and_ping(fields: dict[str, Any]) -> None:
    """Viewers get plain replies to subscribe, unsubscribe and ping."""
    session = authed(role="viewer")
    [out] = session.receive_text(json.dumps(fields), T0)
    assert isinstance(out, Replay) or (isinstance(out, Send) and not out.error)


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"type": "get_agent", "agent_id": "agent-1"}, GetAgent),
        ({"type": "get_agent_code", "agent_id": "agent-1"}, GetAgentCode),
    ],
)
@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_get_agent_requests_are_dispatched_for_every_role(
    fields: dict[str, Any], kind: type, role: str
) -> None:
    """get_agent and get_agent_code go to the engine for viewers and operators."""
    session = authed(role=role)
    out = dispatch_of(session.receive_text(json.dumps(fields), T0))
    assert isinstance(out.request, kind)
    assert out.request.agent_id == "agent-1"  # type: ignore[union-attr]
    assert out.claims == session.claims


@pytest.mark.parametrize("action", ["start", "stop", "pause", "resume"])
def test_operator_control_is_dispatched(action: str) -> None:
    """An operator's control goes to the engine with its parameters and claims."""
    session = authed()
    out = dispatch_of(
        session.receive_text(
            frame(type="control", action=action, parameters={"population_size": 100}, id="c1"), T0
        )
    )
    assert out.request == Control(action=action, parameters={"population_size": 100}, id="c1")
    assert out.claims == Claims("alice", "operator", T0 + 3600)


def test_operator_rollback_is_dispatched() -> None:
    """An operator's rollback command goes to the engine."""
    session = authed()
    out = dispatch_of(
        session.receive_text(frame(type="command", cmd="rollback", args={"generation": 95}), T0)
    )
    assert out.request == Rollback(generation=95)
    assert out.claims.is_operator


def test_operator_upload_is_dispatched() -> None:
    """An operator's binary upload goes to the engine as an AgentCodeUpload."""
    session = authed()
    out = dispatch_of(session.receive_binary(UPLOAD, T0))
    assert out.request == AgentCodeUpload(
        id="up1", agent_id="agent-1", code="def f():\n    return 1\n"
    )
    assert out.claims.user == "alice"


def test_unknown_command_is_invalid() -> None:
    """An operator's unknown command is INVALID_COMMAND naming it."""
    session = authed()
    message = error_of(
        session.receive_text(frame(type="command", cmd="explode", id="x1"), T0), "INVALID_COMMAND"
    )
    assert "'explode'" in message["error"]["message"]
    assert "rollback" in message["error"]["message"]
    assert message["error"]["details"] == {"cmd": "explode"}
    assert message["reply_to"] == "x1"


def test_set_parameters_command_is_dispatched_to_operators_only() -> None:
    """``set_parameters`` goes to the driver for an operator; a viewer is UNAUTHORIZED."""
    request = frame(type="command", cmd="set_parameters", args={"mutation_rate": 0.2}, id="p1")
    out = dispatch_of(authed().receive_text(request, T0))
    assert out.request == SetParameters(id="p1", parameters={"mutation_rate": 0.2})
    viewer = authed(role="viewer")
    error_of(viewer.receive_text(request, T0), "UNAUTHORIZED")


# -- malformed input after auth ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rid"),
    [
        ("not json", None),
        ("[]", None),
        ('{"type":"nope","id":"q1"}', "q1"),
        ('{"type":"get_agent","agent_id":5,"id":"q2"}', "q2"),
        ('{"type":"subscribe","channel":"bogus","id":3}', 3),
        ('{"type":"subscribe","channel":"evolution","filters":{"fitness_min":"high"}}', None),
        ('{"type":"command","cmd":"fly","id":"q4"}', "q4"),
        ('{"type":"ping","x":' + "[" * 100_000 + "]" * 100_000 + "}", None),
    ],
)
def test_malformed_text_after_auth_is_an_error_reply(text: str, rid: str | int | None) -> None:
    """Malformed input gets an INVALID_COMMAND error replying to its id; the session stays open."""
    session = authed()
    message = error_of(session.receive_text(text, T0), "INVALID_COMMAND")
    assert message.get("reply_to") == rid
    assert session.state is SessionState.OPEN


@pytest.mark.parametrize(
    "data", [b"\xff\xfe", b"not json", b'{"type":"auth"}\nx', b'{"type":"agent_code","agent_id":5}']
)
def test_malformed_binary_after_auth_is_an_error_reply(data: bytes) -> None:
    """A malformed binary frame gets an INVALID_COMMAND error; the session stays open."""
    session = authed()
    error_of(session.receive_binary(data, T0), "INVALID_COMMAND")
    assert session.state is SessionState.OPEN


def test_huge_integer_filter_is_an_error_reply() -> None:
    """A subscribe with a 400-digit filter value is an error reply, not an exception."""
    session = authed(role="viewer")
    text = '{"type":"subscribe","channel":"evolution","filters":{"generation_min":' + "9" * 400
    error_of(session.receive_text(text + "}}", T0), "INVALID_COMMAND")
    assert session.state is SessionState.OPEN


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_upload_with_lone_surrogate_id_never_breaks_the_session(role: str) -> None:
    """An upload whose metadata id is a lone surrogate escape gives outcomes a reply can encode."""
    session = authed(role=role)
    encoder = Encoder("srv")
    for out in session.receive_binary(b'{"type":"agent_code","id":"\\udc00"}\ncode', T0):
        if isinstance(out, Dispatch):
            # The driver answers the upload with reply_to = its id; that reply must encode.
            encoder.encode(encoder.message("ack", {}, now=T0, reply_to=out.request.id))
    assert session.state is SessionState.OPEN


def test_error_flag_is_set_exactly_for_error_replies() -> None:
    """Send.error is True for error replies and False for acks and pongs."""
    session = new_session()
    frames = [
        frame(type="ping"),
        auth_frame(token(role="viewer")),
        frame(type="subscribe", channels=["evolution"]),
        frame(type="subscribe", channels=["bogus"]),
        frame(type="control", action="start"),
        frame(type="ping", timestamp=1),
        "garbage",
        frame(type="unsubscribe", channels=["evolution"]),
    ]
    kinds = []
    for text in frames:
        for out in session.receive_text(text, T0):
            if isinstance(out, Replay):  # a subscribe: the driver sends its ack
                kinds.append((False, "ack"))
                continue
            assert isinstance(out, Send)
            kinds.append((out.error, json.loads(out.data)["type"]))
    assert kinds == [
        (True, "error"),
        (False, "ack"),
        (False, "ack"),
        (True, "error"),
        (True, "error"),
        (False, "pong"),
        (True, "error"),
        (False, "ack"),
    ]


@FAST
@given(st.text())
def test_arbitrary_text_after_auth_never_raises(text: str) -> None:
    """Any text frame gives Sends or Dispatches with valid JSON, and the session stays open."""
    session = authed()
    for out in session.receive_text(text, T0):
        assert isinstance(out, Send | Dispatch)
        if isinstance(out, Send):
            assert json.loads(out.data)["type"] in ("error", "ack", "pong")
    assert session.state is SessionState.OPEN


@FAST
@given(st.binary())
def test_arbitrary_binary_after_auth_never_raises(data: bytes) -> None:
    """Any binary frame gives an error Send or a Dispatch, and the session stays open."""
    session = authed()
    [out] = session.receive_binary(data, T0)
    assert isinstance(out, Send | Dispatch)
    if isinstance(out, Send):
        assert out.error
    assert session.state is SessionState.OPEN
