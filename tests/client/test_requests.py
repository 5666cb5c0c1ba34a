"""The client's request table, outbox, resend policy and pacing: no event loop, no sockets."""

from __future__ import annotations

import json

import pytest

from tdevlab.client.requests import (
    RESENT,
    Pacer,
    Request,
    RequestTable,
    resubscribe_messages,
    subscribe_message,
)
from tdevlab.exceptions import ConnectionClosed

PING = {"type": "ping", "timestamp": "2024-01-01T00:00:00Z"}
START = {"type": "control", "action": "start"}
ROLLBACK = {"type": "command", "cmd": "rollback", "args": {"generation": 3}}
SET_PARAMETERS = {"type": "command", "cmd": "set_parameters", "args": {"mutation_rate": 0.2}}
GET_AGENT = {"type": "get_agent", "agent_id": "a1"}
SUBSCRIBE = {"type": "subscribe", "channels": ["logs"]}


def _table(queue_size: int = 10) -> RequestTable[str]:
    """A table with one connection open (the waiters are plain strings)."""
    table: RequestTable[str] = RequestTable(queue_size)
    table.opened()
    return table


def _drain(table: RequestTable[str]) -> list[Request[str]]:
    """Everything the outbox hands out, in order."""
    out = []
    while (request := table.next_queued()) is not None:
        out.append(request)
    return out


# -- submitting --------------------------------------------------------------------------------


def test_a_written_request_gets_an_id_and_its_frame_on_the_current_connection() -> None:
    """submit(write=True) numbers the request, encodes it with its id, and queues nothing."""
    table = _table()
    request = table.submit(PING, "w", write=True)
    assert request.id == "c1"
    assert json.loads(request.data) == {**PING, "id": "c1"}
    assert request.message == {**PING, "id": "c1"}
    assert request.kind == "ping"
    assert request.waiter == "w"
    assert request.connection == 1
    assert not request.binary
    assert table.queued == 0
    assert request in table
    assert len(table) == 1


def test_submit_leaves_the_caller_s_message_as_it_was() -> None:
    """The id goes into a copy: a message kept for a retry has no stale id."""
    message = dict(SUBSCRIBE)
    table = _table()
    table.submit(message, "w", write=True)
    assert message == SUBSCRIBE


def test_ids_count_up_across_written_and_queued_requests() -> None:
    """Each request gets the next id, whether written or queued."""
    table = _table()
    ids = [table.submit(PING, "w", write=bool(i % 2)).id for i in range(4)]
    assert ids == ["c1", "c2", "c3", "c4"]


def test_an_upload_is_a_binary_frame_of_metadata_newline_code() -> None:
    """code= makes an agent_code upload: JSON metadata, a newline, the UTF-8 code."""
    table = _table()
    request = table.submit({"type": "agent_code"}, "w", write=True, code="def f():\n    é\n")
    assert request.kind == "agent_code"
    assert request.binary
    assert isinstance(request.data, bytes)
    head, _, body = request.data.partition(b"\n")
    assert json.loads(head) == {"type": "agent_code", "id": "c1"}
    assert body.decode() == "def f():\n    é\n"


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (ROLLBACK, "rollback"),
        (SET_PARAMETERS, "set_parameters"),
        (START, "control"),
        (GET_AGENT, "get_agent"),
    ],
)
def test_a_request_s_kind_is_its_command_or_its_type(message: dict[str, object], kind: str) -> None:
    """Commands are known by their cmd, everything else by its type."""
    assert _table().submit(message, "w", write=True).kind == kind


def test_requests_that_cannot_be_written_queue_in_call_order() -> None:
    """The outbox hands requests out oldest first, each marked with the current connection."""
    table = _table()
    first = table.submit(START, "a", write=False)
    second = table.submit(PING, "b", write=False)
    assert (first.connection, second.connection) == (0, 0)
    assert table.queued == 2
    assert _drain(table) == [first, second]
    assert (first.connection, second.connection) == (1, 1)
    assert table.queued == 0


def test_a_full_outbox_refuses_more_with_connection_closed() -> None:
    """Past queue_size queued requests submit raises; nothing is registered for it."""
    table = _table(queue_size=2)
    table.submit(PING, "a", write=False)
    table.submit(PING, "b", write=False)
    with pytest.raises(ConnectionClosed, match="2 messages are already waiting"):
        table.submit(PING, "c", write=False)
    assert len(table) == 2
    assert table.submit(PING, "d", write=True).connection == 1  # written: no queue needed


# -- replies, timeouts -------------------------------------------------------------------------


def test_a_reply_takes_its_request_out_once() -> None:
    """resolve returns the named request and forgets it; a second reply finds nothing."""
    table = _table()
    request = table.submit(GET_AGENT, "w", write=True)
    assert table.resolve("c1") is request
    assert table.resolve("c1") is None
    assert request not in table


def test_a_reply_naming_an_unknown_id_is_ignored() -> None:
    """An id the client never used (or an int the server echoes) resolves to nothing."""
    table = _table()
    table.submit(PING, "w", write=True)
    assert table.resolve("c9") is None
    assert table.resolve(1) is None
    assert len(table) == 1


def test_a_queued_request_that_timed_out_is_never_sent() -> None:
    """abandon takes a queued request out of the outbox as well as the table."""
    table = _table()
    late = table.submit(START, "a", write=False)
    kept = table.submit(PING, "b", write=False)
    table.abandon(late)
    assert late not in table
    assert _drain(table) == [kept]


def test_abandoning_a_request_already_answered_changes_nothing() -> None:
    """abandon after resolve (the waiter's cleanup) is harmless."""
    table = _table()
    request = table.submit(PING, "w", write=True)
    other = table.submit(PING, "w", write=True)
    table.resolve(request.id)
    table.abandon(request)
    assert len(table) == 1
    assert other in table


# -- the resend policy -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "resent"),
    [
        (SUBSCRIBE, True),
        ({"type": "unsubscribe", "channels": ["logs"]}, True),
        (GET_AGENT, True),
        ({"type": "get_agent_code", "agent_id": "a1"}, True),
        (PING, True),
        (START, False),
        (ROLLBACK, False),
        (SET_PARAMETERS, False),
        ({"type": "agent_code"}, False),
    ],
)
def test_reads_and_pings_are_resent_and_the_rest_fail_after_a_drop(
    message: dict[str, object], resent: bool
) -> None:
    """A request written on a dropped connection is resent if safe to repeat, else failed."""
    table = _table()
    code = "x = 1" if message["type"] == "agent_code" else None
    request = table.submit(message, "w", write=True, code=code)
    assert (request.kind in RESENT) is resent
    failed = table.dropped()
    assert failed == ([] if resent else [request])
    table.opened()
    assert table.requeue_lost() == ([request] if resent else [])
    assert (request in table) is resent


def test_a_queued_request_of_any_kind_survives_a_drop() -> None:
    """Never written, a control action is neither failed nor sent twice: it goes out once."""
    table = _table()
    queued = table.submit(START, "w", write=False)
    assert table.dropped() == []
    table.opened()
    assert table.requeue_lost() == []
    assert _drain(table) == [queued]


def test_lost_replies_are_requeued_ahead_of_the_outbox_in_call_order() -> None:
    """Resent requests were made before those queued while down: they go out first."""
    table = _table()
    ping = table.submit(PING, "a", write=True)
    start = table.submit(START, "b", write=True)
    agent = table.submit(GET_AGENT, "c", write=True)
    queued = table.submit(SUBSCRIBE, "d", write=False)  # made while down
    assert table.dropped() == [start]
    table.opened()
    assert table.requeue_lost() == [ping, agent]
    assert _drain(table) == [ping, agent, queued]
    assert [r.connection for r in (ping, agent, queued)] == [2, 2, 2]


def test_requests_written_on_the_new_connection_are_not_requeued() -> None:
    """Only replies lost with an earlier connection are asked for again, and only once."""
    table = _table()
    old = table.submit(PING, "a", write=True)
    table.dropped()
    table.opened()
    new = table.submit(PING, "b", write=True)
    assert table.requeue_lost() == [old]
    assert table.requeue_lost() == []  # already queued: not twice
    assert _drain(table) == [old]
    assert new.connection == 2


def test_a_request_whose_write_failed_is_not_put_back() -> None:
    """Taken from the outbox, a request belongs to that connection even if the write failed."""
    table = _table()
    start = table.submit(START, "a", write=False)
    assert table.next_queued() is start
    assert table.queued == 0
    assert table.dropped() == [start]  # it may have gone out: never sent twice


def test_clear_takes_out_everything_and_empties_the_outbox() -> None:
    """On close or give-up every request is returned (to fail) and nothing stays queued."""
    table = _table()
    written = table.submit(PING, "a", write=True)
    queued = table.submit(START, "b", write=False)
    assert table.clear() == [written, queued]
    assert len(table) == 0
    assert table.queued == 0
    assert table.next_queued() is None


def test_a_request_carries_the_control_events_seen_when_it_was_made() -> None:
    """control_events is stored as given, to order the ack's snapshot against events."""
    request = _table().submit(START, "w", write=True, control_events=7)
    assert request.control_events == 7


# -- pacing ------------------------------------------------------------------------------------


def test_the_pacer_lets_a_burst_through_then_spaces_messages_at_its_rate() -> None:
    """50 messages go at once; the 51st waits 1/50 s."""
    pacer = Pacer(burst=50, rate=50.0)
    for _ in range(50):
        assert pacer.delay(10.0) == 0.0
        pacer.sent(10.0)
    assert pacer.delay(10.0) == pytest.approx(0.02)
    assert pacer.delay(10.01) == pytest.approx(0.01)
    assert pacer.delay(10.021) == 0.0


def test_the_pacer_refills_to_one_burst_and_no_more() -> None:
    """After a long pause the next burst is again at most ``burst`` messages."""
    pacer = Pacer(burst=3, rate=10.0)
    for _ in range(3):
        pacer.sent(0.0)
    sent = 0
    while pacer.delay(100.0) == 0.0:
        pacer.sent(100.0)
        sent += 1
    assert sent == 3


def test_the_pacer_ignores_time_running_backwards() -> None:
    """An earlier ``now`` adds no tokens (and removes none)."""
    pacer = Pacer(burst=1, rate=1.0)
    pacer.sent(5.0)
    assert pacer.delay(4.0) == pytest.approx(1.0)
    assert pacer.delay(5.5) == pytest.approx(0.5)


# -- subscribe messages ------------------------------------------------------------------------


def test_a_subscribe_without_history_asks_for_no_replay() -> None:
    """No since and no epochs; filters only when there are some."""
    assert subscribe_message(["logs", "alerts"], {}) == {
        "type": "subscribe",
        "channels": ["logs", "alerts"],
    }
    assert subscribe_message(["evolution"], {"fitness_min": 0.5})["filters"] == {"fitness_min": 0.5}


def test_a_subscribe_with_history_names_a_position_for_every_channel() -> None:
    """since covers every channel (0 when unknown); epochs only those known."""
    message = subscribe_message(
        ["logs", "alerts"], {}, since={"logs": 7}, epochs={"logs": "e1", "metrics": "e2"}
    )
    assert message["since"] == {"logs": 7, "alerts": 0}
    assert message["epochs"] == {"logs": "e1"}


def test_resubscribes_are_one_per_filter_set_in_channel_order() -> None:
    """Channels sharing filters resume in one subscribe, each from its own position."""
    filters = {
        "evolution": {"generation_min": 5.0},
        "logs": {},
        "agents": {"generation_min": 5.0},
        "alerts": {},
    }
    since = {"evolution": 4, "logs": 9, "agents": 2, "alerts": 0}
    epochs = {"evolution": "e", "logs": "e"}
    messages = resubscribe_messages(filters, filters, since, epochs)
    assert messages == [
        {
            "type": "subscribe",
            "channels": ["evolution", "agents"],
            "filters": {"generation_min": 5.0},
            "since": {"evolution": 4, "agents": 2},
            "epochs": {"evolution": "e"},
        },
        {
            "type": "subscribe",
            "channels": ["logs", "alerts"],
            "since": {"logs": 9, "alerts": 0},
            "epochs": {"logs": "e"},
        },
    ]


def test_a_resync_resubscribes_from_the_start_of_the_new_epoch() -> None:
    """With no positions given every channel asks from 0, in the epochs the ack named."""
    messages = resubscribe_messages(["metrics"], {}, {}, {"metrics": "new"})
    assert messages == [
        {
            "type": "subscribe",
            "channels": ["metrics"],
            "since": {"metrics": 0},
            "epochs": {"metrics": "new"},
        }
    ]


def test_filters_group_the_same_whatever_their_key_order() -> None:
    """Equal filter sets written in a different order still share one subscribe."""
    filters = {
        "evolution": {"generation_min": 1.0, "fitness_min": 2.0},
        "agents": {"fitness_min": 2.0, "generation_min": 1.0},
    }
    assert len(resubscribe_messages(filters, filters, {}, {})) == 1
