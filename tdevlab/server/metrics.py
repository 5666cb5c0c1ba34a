"""System metrics for the ``metrics`` channel, measured (spec: "System Metrics").

``cpu_usage`` and ``memory_usage`` are this server process's CPU percent (of one core, as
``top`` shows it) and share of the machine's memory, from psutil. ``requests_per_second``,
``average_latency_ms`` (from a frame's arrival to its reply being queued) and
``error_rate`` (error replies per request) cover the last interval. ``active_agents`` is
the population size. Extras: ``connections`` (open now); ``dropped_messages`` (frames not
delivered to clients that were cut off for not reading) and ``rejected_connections``
(connections turned away at the handshake — a bad ``Authorization`` header, too many
connections — or closed before authenticating: a pre-auth limit, a failed ``auth``, the
auth timeout), both counted since the server started.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psutil

__all__ = ["RequestStats"]


@dataclass
class RequestStats:
    """Counts requests and their latency between two samples."""

    requests: int = 0
    errors: int = 0
    latency_total: float = 0.0
    dropped: int = 0
    rejected: int = 0
    _process: psutil.Process = field(default_factory=psutil.Process)
    _last: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._process.cpu_percent(None)  # the first call only starts the measurement

    def record(self, latency_s: float, error: bool) -> None:
        """Count one handled request."""
        self.requests += 1
        self.latency_total += latency_s
        if error:
            self.errors += 1

    def sample(self, *, active_agents: int, connections: int) -> dict[str, Any]:
        """Return the metrics since the last sample, and start a new interval."""
        now = time.monotonic()
        elapsed = max(now - self._last, 1e-9)
        data = {
            "cpu_usage": round(self._process.cpu_percent(None), 1),
            "memory_usage": round(self._process.memory_percent(), 2),
            "active_agents": active_agents,
            "requests_per_second": round(self.requests / elapsed, 2),
            "average_latency_ms": round(1000.0 * self.latency_total / self.requests, 3)
            if self.requests
            else 0.0,
            "error_rate": round(self.errors / self.requests, 4) if self.requests else 0.0,
            "connections": connections,
            "dropped_messages": self.dropped,
            "rejected_connections": self.rejected,
        }
        self.requests = self.errors = 0
        self.latency_total = 0.0
        self._last = now
        return data
