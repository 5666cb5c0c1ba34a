"""The channels a client subscribes to and the event type each one carries.

spec: "Available Channels". This is the one table of that fact: the parser checks channel
names against it, the server's hub keeps one stream per channel, and the client resolves
``client.on("alerts", ...)`` to the ``alert`` events with it.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

__all__ = ["CHANNELS", "CHANNEL_OF_EVENT", "EVENT_OF_CHANNEL"]

#: Channel -> the ``type`` of the events published on it (README, "Protocol choices").
EVENT_OF_CHANNEL: Final = MappingProxyType(
    {
        "evolution": "evolution_update",
        "agents": "agent_update",
        "metrics": "metrics",
        "alerts": "alert",
        "logs": "log",
        "control": "control_update",
    }
)
#: Event type -> the channel it is published on.
CHANNEL_OF_EVENT: Final = MappingProxyType({kind: name for name, kind in EVENT_OF_CHANNEL.items()})
#: The channel names, in the spec's order.
CHANNELS: Final[tuple[str, ...]] = tuple(EVENT_OF_CHANNEL)
