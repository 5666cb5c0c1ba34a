"""The evolution protocol without I/O: messages, envelopes, JWT checks, per-connection sessions.

Nothing here touches a socket or reads a clock: time comes in as ``now``.
"""

from __future__ import annotations

from tdevlab.protocol.auth import Claims, TokenVerifier, issue_token
from tdevlab.protocol.channels import CHANNEL_OF_EVENT, CHANNELS, EVENT_OF_CHANNEL
from tdevlab.protocol.envelope import Encoder, iso_time
from tdevlab.protocol.messages import FILTERS, parse_binary, parse_text
from tdevlab.protocol.session import Close, Dispatch, Filters, Send, Session, SessionState

__all__ = [
    "CHANNELS",
    "CHANNEL_OF_EVENT",
    "EVENT_OF_CHANNEL",
    "FILTERS",
    "Claims",
    "Close",
    "Dispatch",
    "Encoder",
    "Filters",
    "Send",
    "Session",
    "SessionState",
    "TokenVerifier",
    "issue_token",
    "iso_time",
    "parse_binary",
    "parse_text",
]
