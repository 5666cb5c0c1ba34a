"""Carries out authorized requests on the engine: a typed dispatcher, nothing more.

Each request type maps to one engine call, and the call's result to one reply. The engine
decides everything else: control actions, their transitions and parameters are checked
atomically by ``Engine.control_async``; rollback, agents and uploads raise the errors that
become the API's error replies (in one place, :meth:`Service.dispatch`). Engine calls that
can wait for a generation in progress (they take the engine's lock, or write to the store)
run in a worker thread (``control_async`` does so itself), so the event loop keeps serving
everyone else meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from tdevlab.engine.engine import Engine
from tdevlab.engine.lineage import DEFAULT_DEPTH
from tdevlab.engine.loops import STOP_WAIT
from tdevlab.exceptions import EvolutionFailed, InvalidState, TdevlabError
from tdevlab.protocol.envelope import Encoder
from tdevlab.protocol.messages import (
    AgentCodeUpload,
    Branch,
    Control,
    GetAgent,
    GetAgentCode,
    GetArchive,
    GetFront,
    GetLineage,
    GetPopulation,
    RequestId,
    Rollback,
    SetParameters,
)
from tdevlab.protocol.session import Dispatch

__all__ = ["Replier", "Service"]

log = logging.getLogger("tdevlab.server")

#: Queues an encoded frame on the requesting connection: ``reply(data, binary)``.
Replier = Callable[[bytes, bool], object]


class Service:
    """Turns dispatched requests into engine calls and the results into replies.

    Args:
        engine: The engine whose run this server controls.
        encoder: Encodes replies (shared with the rest of the server, for unique ids).
        generation_interval: The least seconds between generation starts of a run
            started here.
    """

    def __init__(self, engine: Engine, encoder: Encoder, generation_interval: float = 0.0) -> None:
        self.engine = engine
        self.encoder = encoder
        self.generation_interval = generation_interval

    async def dispatch(self, reply: Replier, dispatch: Dispatch) -> bool:
        """Carry out one request and queue its reply; return False if it was refused."""
        request = dispatch.request
        try:
            if isinstance(request, Control):
                await self._control(reply, request)
            elif isinstance(request, SetParameters):
                await self._set_parameters(reply, request)
            elif isinstance(request, Rollback):
                await self._rollback(reply, request)
            elif isinstance(request, GetAgent):
                update = await asyncio.to_thread(self.engine.agent, request.agent_id)
                message = self.encoder.message(
                    "agent_update", update.to_dict(), now=time.time(), reply_to=request.id
                )
                reply(self.encoder.encode(message), False)
            elif isinstance(request, GetAgentCode):
                await self._agent_code(reply, request)
            elif isinstance(request, GetLineage):
                await self._lineage(reply, request)
            elif isinstance(request, Branch):
                result = await asyncio.to_thread(
                    self.engine.branch_from, request.agent_id, request.parameters
                )
                data = {"cmd": "branch", "agent_id": request.agent_id, **result.to_dict()}
                self._ack(reply, "command", request.id, data)
            elif isinstance(request, GetFront | GetArchive):
                kind = "front" if isinstance(request, GetFront) else "archive"
                data = await asyncio.to_thread(self.engine.member_set, kind)
                message = self.encoder.message(kind, data, now=time.time(), reply_to=request.id)
                reply(self.encoder.encode(message), False)
            elif isinstance(request, GetPopulation):
                data = await asyncio.to_thread(self.engine.population_set)
                message = self.encoder.message(
                    "population", data, now=time.time(), reply_to=request.id
                )
                reply(self.encoder.encode(message), False)
            else:
                assert isinstance(request, AgentCodeUpload)
                update = await asyncio.to_thread(self.engine.add_agent_code, request.code)
                self._ack(reply, "agent_code", request.id, {"agent": update.to_dict()})
        except TdevlabError as exc:
            reply(self.encoder.error(exc, now=time.time(), reply_to=request.id), False)
            return False
        except Exception as exc:  # a bug: answer it as a failure rather than drop the client
            log.exception("request %s failed", type(request).__name__)
            failed = EvolutionFailed(
                f"internal error handling {type(request).__name__}: {type(exc).__name__}"
            )
            reply(self.encoder.error(failed, now=time.time(), reply_to=request.id), False)
            return False
        return True

    async def _control(self, reply: Replier, request: Control) -> None:
        result = await self.engine.control_async(
            request.action, request.parameters, interval=self.generation_interval
        )
        self._ack(reply, "control", request.id, result.to_dict())

    async def _set_parameters(self, reply: Replier, request: SetParameters) -> None:
        result = await self.engine.control_async("set_parameters", request.parameters)
        data = {"cmd": "set_parameters", "parameters": result.parameters}
        self._ack(reply, "command", request.id, data)

    async def _rollback(self, reply: Replier, request: Rollback) -> None:
        result = await asyncio.to_thread(self.engine.rollback, request.generation)
        self._ack(reply, "command", request.id, {"cmd": "rollback", **result.to_dict()})

    async def _lineage(self, reply: Replier, request: GetLineage) -> None:
        depth = DEFAULT_DEPTH if request.depth is None else request.depth
        lineage = await asyncio.to_thread(
            self.engine.lineage, request.agent_id, depth, request.descendants
        )
        message = self.encoder.message(
            "lineage", lineage.to_dict(), now=time.time(), reply_to=request.id
        )
        reply(self.encoder.encode(message), False)

    async def _agent_code(self, reply: Replier, request: GetAgentCode) -> None:
        code = await asyncio.to_thread(self.engine.agent_code, request.agent_id)
        update = await asyncio.to_thread(self.engine.agent, request.agent_id)
        meta: dict[str, Any] = {
            "type": "agent_code",
            "agent_id": update.agent_id,
            "name": update.name,
            "generation": update.birth_generation,
            "encoding": "utf-8",
        }
        if request.id is not None:
            meta["reply_to"] = request.id
        reply(self.encoder.binary(meta, code, now=time.time()), True)

    def _ack(self, reply: Replier, request: str, reply_to: RequestId, data: dict[str, Any]) -> None:
        message = self.encoder.message(
            "ack", {"request": request, **data}, now=time.time(), reply_to=reply_to
        )
        reply(self.encoder.encode(message), False)

    async def start(self) -> None:
        """Start the run (``autostart``); a run already going is left as it is."""
        with contextlib.suppress(InvalidState):
            await self.engine.control_async("start", interval=self.generation_interval)

    async def shutdown(self) -> None:
        """Stop the run, if one is going, and wait for its generation in progress."""
        with contextlib.suppress(InvalidState):
            await self.engine.control_async("stop")
        await self.engine.wait_async(STOP_WAIT)
