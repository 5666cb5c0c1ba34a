"""Carries out authorized requests on the engine: control, rollback, agents, agent code.

Engine calls that can wait for a generation in progress (they take the engine's lock) run
in a worker thread, so the event loop keeps serving everyone else meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from tdevlab.engine.engine import EngineState
from tdevlab.exceptions import (
    EvolutionFailed,
    InvalidCommand,
    InvalidParameters,
    InvalidState,
    TdevlabError,
)
from tdevlab.protocol.messages import AgentCodeUpload, Command, Control, GetAgent, GetAgentCode
from tdevlab.protocol.session import Dispatch

if TYPE_CHECKING:
    from tdevlab.server.app import EvolutionServer
    from tdevlab.server.hub import Connection

__all__ = ["Service"]

log = logging.getLogger("tdevlab.server")

_STARTABLE = (EngineState.IDLE, EngineState.STOPPED, EngineState.FAILED)


class Service:
    """The server's request handlers and the engine's run task."""

    def __init__(self, server: EvolutionServer) -> None:
        self.server = server
        self.run_task: asyncio.Task[Any] | None = None

    @property
    def engine(self) -> Any:
        return self.server.engine

    async def dispatch(self, connection: Connection, dispatch: Dispatch) -> bool:
        """Carry out one request and queue its reply; return False if it was refused."""
        request = dispatch.request
        encoder = self.server.encoder
        try:
            if isinstance(request, Control):
                data = await self.control(request.action, request.parameters)
                self._ack(connection, "control", request.id, data)
            elif isinstance(request, GetAgent):
                update = await asyncio.to_thread(self.engine.agent, request.agent_id)
                message = encoder.message(
                    "agent_update", update.to_dict(), now=time.time(), reply_to=request.id
                )
                connection.enqueue(encoder.encode(message))
            elif isinstance(request, GetAgentCode):
                code = await asyncio.to_thread(self.engine.agent_code, request.agent_id)
                update = await asyncio.to_thread(self.engine.agent, request.agent_id)
                meta = {
                    "type": "agent_code",
                    "agent_id": update.agent_id,
                    "name": update.name,
                    "generation": update.birth_generation,
                    "encoding": "utf-8",
                }
                if request.id is not None:
                    meta["reply_to"] = request.id
                connection.enqueue(encoder.binary(meta, code, now=time.time()), binary=True)
            elif isinstance(request, Command) and request.cmd == "set_parameters":
                params = await asyncio.to_thread(self.engine.set_parameters, **request.args)
                data = {"cmd": "set_parameters", "parameters": params.to_dict()}
                self._ack(connection, "command", request.id, data)
            elif isinstance(request, Command):
                data = await self.rollback(request.args)
                self._ack(connection, "command", request.id, {"cmd": "rollback", **data})
            elif isinstance(request, AgentCodeUpload):
                update = await asyncio.to_thread(self.engine.add_agent_code, request.code)
                self._ack(connection, "agent_code", request.id, {"agent": update.to_dict()})
        except TdevlabError as exc:
            reply_to = getattr(request, "id", None)
            connection.enqueue(encoder.error(exc, now=time.time(), reply_to=reply_to))
            return False
        return True

    def _ack(
        self, connection: Connection, request: str, reply_to: Any, data: dict[str, Any]
    ) -> None:
        encoder = self.server.encoder
        message = encoder.message(
            "ack", {"request": request, **data}, now=time.time(), reply_to=reply_to
        )
        connection.enqueue(encoder.encode(message))

    # -- control ---------------------------------------------------------------------------

    async def control(self, action: str, parameters: dict[str, Any]) -> dict[str, Any]:
        """Apply a control action with optional parameters, all validated before any change.

        Raises:
            InvalidParameters: a bad parameter (nothing changes).
            InvalidState: the action is impossible in the current state, with the state in
                ``details`` (nothing changes).
        """
        engine = self.engine
        engine.params.replace(parameters)  # validate only: raises before anything changes
        state = engine.state
        if action == "start":
            if state not in _STARTABLE:
                raise InvalidState(
                    f"cannot start: the engine is {state.value}",
                    details={"state": state.value, "action": action},
                )
            await self.start_run(parameters)
        else:
            valid = {
                "pause": (EngineState.RUNNING,),
                "resume": (EngineState.PAUSED,),
                "stop": (EngineState.RUNNING, EngineState.PAUSED),
            }[action]
            if state not in valid:
                raise InvalidState(
                    f"cannot {action}: the engine is {state.value}",
                    details={"state": state.value, "action": action},
                )
            if parameters:
                await asyncio.to_thread(engine.set_parameters, **parameters)
            {"pause": engine.pause, "resume": engine.resume, "stop": engine.stop}[action]()
            if action == "stop" and self.run_task is not None:
                await asyncio.wait({self.run_task}, timeout=60)
        return {
            "action": action,
            "state": engine.state.value,
            "generation": engine.generation,
            "parameters": engine.params.to_dict(),
        }

    async def start_run(self, parameters: dict[str, Any]) -> None:
        """Start the engine's loop as a task of this server."""
        if parameters:
            await asyncio.to_thread(self.engine.set_parameters, **parameters)
        self.run_task = asyncio.ensure_future(self._run())
        # Let the task start so the engine is RUNNING before the reply goes out.
        await asyncio.sleep(0)

    async def _run(self) -> None:
        try:
            await self.engine.run_async(None, interval=self.server.generation_interval)
        except EvolutionFailed as exc:
            log.error("evolution failed: %s", exc)
            self.server.hub.publish_error("evolution", exc.to_wire())
        except Exception as exc:  # a bug, or a store failure: report, keep serving
            log.exception("evolution loop crashed")
            failed = EvolutionFailed(f"evolution failed: {type(exc).__name__}: {exc}")
            self.server.hub.publish_error("evolution", failed.to_wire())

    async def rollback(self, args: dict[str, Any]) -> dict[str, Any]:
        """Roll the run back between generations.

        Raises:
            InvalidCommand: for a missing or non-integer generation, or one not in the run.
        """
        generation = args.get("generation")
        if isinstance(generation, bool) or not isinstance(generation, int):
            raise InvalidCommand(
                f"rollback needs an integer 'generation', got {generation!r}",
                details={"args": args},
            )
        unknown = sorted(set(args) - {"generation"})
        if unknown:
            raise InvalidParameters(f"unknown rollback argument(s) {unknown}")
        await asyncio.to_thread(self.engine.rollback, generation)
        return {"generation": self.engine.generation, "branch": self.engine.branch}

    async def shutdown(self) -> None:
        """Stop the engine's loop (graceful shutdown)."""
        engine = self.engine
        if engine.state in (EngineState.RUNNING, EngineState.PAUSED):
            engine.stop()
        if self.run_task is not None:
            await asyncio.wait({self.run_task}, timeout=60)
