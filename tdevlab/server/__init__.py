"""The asyncio + websockets driver: the embeddable ``/v1/evolution`` server."""

from tdevlab.server.app import PATH, EvolutionServer

__all__ = ["PATH", "EvolutionServer"]
