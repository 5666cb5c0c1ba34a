"""websockets' connections as the server drives them: the parser's frame limit, the peer's
address, and a connection that stops reading from a peer it gives up on.
"""

from __future__ import annotations

import contextlib
import socket
import struct

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

__all__ = ["DROP_GRACE", "DroppableConnection", "peer_address", "set_frame_limit"]

#: Seconds a dropped connection keeps its socket for the close frame to reach the peer
#: (nothing more is read from it), unless the peer closes first; then it is reset.
DROP_GRACE = 1.0


class DroppableConnection(ServerConnection):
    """websockets' server connection, which stops reading from a peer it gives up on.

    When websockets fails a connection (a frame over the size limit: 1009, a protocol
    error) it sends the close frame, half-closes, and then reads and discards what the
    peer still sends until the peer closes: a client that floods without reading kept the
    server reading at the speed of loopback. A dropped connection ignores what arrives
    (its end of stream still ends it), and is reset after :data:`DROP_GRACE`.
    """

    dropping = False

    def data_received(self, data: bytes) -> None:
        if self.dropping:
            return
        super().data_received(data)
        if self.protocol.parser_exc is not None:  # websockets failed the connection
            self.drop()

    def reject(self, code: int, reason: str) -> None:
        """Close at once (after what is already written) and drop: for a client turned away."""
        if self.protocol.state is State.OPEN:
            self.protocol.fail(code, reason)  # the close frame, then end of stream
            self.send_data()
        self.drop()

    def drop(self) -> None:
        """Ignore what the peer sends from now on; reset the connection after the grace."""
        if self.dropping:
            return
        self.dropping = True
        self.loop.call_later(DROP_GRACE, self._reset)

    def _reset(self) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:  # linger 0: reset, freeing the kernel's buffers at once
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


def peer_address(ws: ServerConnection) -> str:
    """The client's source address (its host, without the port)."""
    peer = ws.remote_address
    if isinstance(peer, tuple | list) and peer:
        return str(peer[0])
    return str(peer) if peer else "unknown"


def set_frame_limit(ws: ServerConnection, size: int) -> None:
    """Set the largest message websockets' parser accepts on ``ws`` from its next frame on.

    websockets reads the limit from its sans-I/O protocol before each frame
    (``max_message_size`` in recent releases, ``max_size`` in older ones).
    """
    protocol = ws.protocol
    if hasattr(protocol, "max_message_size"):
        protocol.max_message_size = size
    else:  # pragma: no cover - websockets 14
        setattr(protocol, "max_size", size)  # noqa: B010
