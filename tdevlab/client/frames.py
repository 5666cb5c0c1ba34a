"""The server's event stream as pandas DataFrames, for a notebook.

The client hands every decoded server message to :meth:`Frames.ingest`. Rows go into
columnar buffers (numbers packed into one ``bytearray`` per table, strings and objects in
lists); a table's DataFrame is built only when it is read, and cached until that table gets
new rows. A dashboard compares :attr:`Frames.version` (or one of :attr:`Frames.versions`)
with the value it last drew to know whether to redraw.

Tables (every timestamp is the envelope's, ``datetime64[ns, UTC]``, microsecond resolution;
``seq`` is the channel's sequence number, ``<NA>`` for replies)::

    evolution      evolution_update rows, index ``generation`` (not unique: after a rollback
                   the new branch repeats generations; ``branch`` tells them apart)
    agents         the latest state of every agent seen, index ``agent_id``
    agent_history  every agent_update row, in arrival order (requested ones included)
    metrics        metrics rows, index ``timestamp``
    alerts         alert rows, ``details`` as a dict
    logs           log rows, ``details`` as a dict
    control        control_update rows
    front/archive  the strategy's member set, index ``agent_id`` (:mod:`tdevlab.client.members`)

Agent genes are expanded into one column per gene, named ``gene_<name>`` (bool, int64,
float64, or category for text genes; a gene an agent lacks is missing).

The frames are a window, not the record: each table except ``agents`` keeps at most
``max_rows`` rows, dropping the oldest (counted in :attr:`Frames.dropped`). The server's
run store and :func:`tdevlab.export_run` hold the full run; :meth:`Frames.to_run` writes
what the frames hold, in the same dataset layout.

Frames is not thread-safe: ingest and read from one thread (the client's loop does both).

The row buffers are :mod:`tdevlab.client.columns`, the checks a message passes before its
row is appended :mod:`tdevlab.client.checks`; :meth:`Frames.to_run` is built by
:mod:`tdevlab.client.frame_datasets`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from tdevlab.client.checks import (
    EPOCH,
    SECONDS_RANGE,
    check_genes,
    check_parents,
    check_strings,
    rollback_of,
    row_caps,
    seconds,
)
from tdevlab.client.columns import (
    _AGENT_NUMBERS,
    _AGENT_OBJECTS,
    _AGENT_ORDER,
    _ALERT_OBJECTS,
    _ALERT_ORDER,
    _CONTROL_NUMBERS,
    _CONTROL_OBJECTS,
    _CONTROL_ORDER,
    _EVENT_NUMBERS,
    _EVOLUTION_NUMBERS,
    _EVOLUTION_ORDER,
    _LOG_OBJECTS,
    _LOG_ORDER,
    _METRIC_NUMBERS,
    _NA,
    _latest_agents,
    _ordered,
    _pack_agent,
    _pack_control,
    _pack_event,
    _pack_evolution,
    _pack_metrics,
    _Table,
    _with_genes,
)
from tdevlab.client.frame_datasets import run_dataset
from tdevlab.client.members import REASONS, MemberSets
from tdevlab.store.export import RunDataset, write_dataset

__all__ = ["CAPPED_TABLES", "DEFAULT_MAX_ROWS", "TABLES", "Frames"]

#: The tables :class:`Frames` offers, by property name.
TABLES = ("evolution", "agents", "agent_history", "metrics", "alerts", "logs", "control")
#: The tables ``max_rows`` applies to (``agents`` holds one row per agent and is not capped).
CAPPED_TABLES = ("evolution", "agent_history", "metrics", "alerts", "logs", "control")
DEFAULT_MAX_ROWS = 100_000

_fromiso = datetime.fromisoformat


_NAN = float("nan")


class Frames:
    """Turns the server's messages into pandas DataFrames, built lazily and cached.

    Args:
        max_rows: Row cap of each table but ``agents``: an int for all of them, a dict
            ``{table: cap or None}`` (tables it omits get ``DEFAULT_MAX_ROWS``), or ``None``
            for no cap. The oldest rows go first.

    Raises:
        InvalidParameters: for an unknown table name or a cap that is not a non-negative int.

    Attributes:
        max_rows: The cap of each capped table (``None``: no cap).
        rejected: How many malformed messages were refused (nothing of them was kept).
        last_rejection: Why the last one was refused.
        ignored: How many messages of a type the frames do not keep (ack, pong, error...).
    """

    def __init__(self, max_rows: int | Mapping[str, int | None] | None = DEFAULT_MAX_ROWS) -> None:
        self.max_rows = row_caps(max_rows, CAPPED_TABLES, DEFAULT_MAX_ROWS)
        caps = self.max_rows
        self._evolution = _Table(_EVOLUTION_NUMBERS, (), _EVOLUTION_ORDER, caps["evolution"])
        self._agent_history = _Table(
            _AGENT_NUMBERS, _AGENT_OBJECTS, _AGENT_ORDER, caps["agent_history"]
        )
        self._metrics = _Table(_METRIC_NUMBERS, (), (), caps["metrics"])
        self._alerts = _Table(_EVENT_NUMBERS, _ALERT_OBJECTS, _ALERT_ORDER, caps["alerts"])
        self._logs = _Table(_EVENT_NUMBERS, _LOG_OBJECTS, _LOG_ORDER, caps["logs"])
        self._control = _Table(_CONTROL_NUMBERS, _CONTROL_OBJECTS, _CONTROL_ORDER, caps["control"])
        self._tables: dict[str, _Table] = {
            "evolution": self._evolution,
            "agent_history": self._agent_history,
            "metrics": self._metrics,
            "alerts": self._alerts,
            "logs": self._logs,
            "control": self._control,
        }
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "evolution_update": self._on_evolution,
            "metrics": self._on_metrics,
            "agent_update": self._on_agent,
            "log": self._on_log,
            "alert": self._on_alert,
            "control_update": self._on_control,
            "front": lambda m: self.member_sets["front"].replace(m["data"]),
            "archive": lambda m: self.member_sets["archive"].replace(m["data"]),
        }
        #: The strategy's front and archive (:class:`~tdevlab.client.members.MemberSets`).
        self.member_sets = MemberSets()
        self.rejected = 0
        self.last_rejection: str | None = None
        self.ignored = 0
        self._reset_state()

    def _reset_state(self) -> None:
        # agent_id -> (branch first seen on, packed numbers, the object column values)
        self._latest: dict[str, tuple[int, bytes, tuple[Any, ...]]] = {}
        self._agents_frame: pd.DataFrame | None = None
        self._agents_version = -1
        self._events = 0  # agent updates, logs and alerts seen: their arrival order
        # branch -> (parent branch, fork generation): learned from the evolution rows (a new
        # branch forks from the one before it, after the generation before its first row)
        # and from rollback alerts and logs, which name both.
        self._branches: dict[int, tuple[int | None, int]] = {}
        self._branch: int | None = None  # the branch of the latest evolution row
        self._last_state: str | None = None

    # -- ingest ----------------------------------------------------------------------------

    def ingest(self, message: dict[str, Any]) -> None:
        """Take one decoded server message.

        A message of a type the frames keep adds one row (an ``agent_update`` also updates
        its agent's latest state); other types are counted in :attr:`ignored`. A malformed
        message (missing field, wrong type) is counted in :attr:`rejected` and leaves every
        table as it was. Never raises.

        Args:
            message: A server message decoded from JSON (``type``, ``timestamp``, ``data``...).
        """
        try:
            handler = self._handlers.get(message["type"])
            if handler is None:
                self.ignored += 1
                return
            handler(message)
        except Exception as exc:  # a bad message must not stop the client's loop
            self.rejected += 1
            kind = message.get("type") if isinstance(message, dict) else type(message).__name__
            self.last_rejection = f"{repr(kind)[:60]}: {type(exc).__name__}: {exc}"

    def ingest_many(self, messages: Iterable[dict[str, Any]]) -> None:
        """Take decoded server messages in order (as :meth:`ingest` each).

        Args:
            messages: Decoded server messages.
        """
        ingest = self.ingest
        for message in messages:
            ingest(message)

    # Each handler reads and checks every field first (struct packing checks the numbers'
    # types and ranges), and only then appends: a refused message leaves no partial row and
    # changes no state. The two frequent ones (evolution_update, metrics) inline everything:
    # each call saved is a measurable share of the time per message.

    def _on_evolution(self, message: dict[str, Any]) -> None:
        data = message["data"]
        stamp = (_fromiso(message["timestamp"]) - EPOCH).total_seconds()  # seconds(), inlined
        if not -SECONDS_RANGE < stamp < SECONDS_RANGE:
            raise ValueError("the timestamp is out of the datetime64[ns] range")
        best_id = data["best_agent_id"]
        best_name = data["best_agent_name"]
        if type(best_id) is not str or type(best_name) is not str:
            raise TypeError("best_agent_id and best_agent_name must be strings")
        table = self._evolution
        codes = table.codes
        id_code = codes.get(best_id)
        if id_code is None:
            id_code = table.code(best_id)  # unused if the row is refused below: harmless
        name_code = codes.get(best_name)
        if name_code is None:
            name_code = table.code(best_name)
        run_id = data["run_id"]
        seq = message.get("seq")
        branch = data["branch"]
        front_size = data.get("front_size", _NAN)
        coverage = data.get("archive_coverage", _NAN)
        generation = data["generation"]
        row = _pack_evolution(
            generation,
            data["average_fitness"],
            data["best_fitness"],
            data["improvement"],
            data["agents_evolved"],
            data["mutations_applied"],
            data["crossovers"],
            _NA if run_id is None else run_id,
            branch,
            data["population_size"],
            data["feasible_fraction"],
            data["diversity"],
            data["worst_fitness"],
            data["best_memory_kb"],
            data["best_speed_us"],
            data["mutation_rate"],
            data["crossover_rate"],
            data["evaluation_ms"],
            # A strategy's measures (NSGA-II, MAP-Elites); NaN when it has none (the GA).
            front_size,
            data.get("hypervolume", _NAN),
            coverage,
            data.get("qd_score", _NAN),
            _NA if seq is None else seq,
            stamp,
            id_code,
            name_code,
        )
        table.numbers += row
        if branch != self._branch:
            self._enter_branch(int(branch), int(generation))
        if front_size is not _NAN or coverage is not _NAN:  # the run keeps a member set
            self.member_sets["front" if front_size is not _NAN else "archive"].note_seen()
        if len(table.numbers) > table.limit:
            table.trim()

    def _on_metrics(self, message: dict[str, Any]) -> None:
        data = message["data"]
        stamp = (_fromiso(message["timestamp"]) - EPOCH).total_seconds()  # seconds(), inlined
        if not -SECONDS_RANGE < stamp < SECONDS_RANGE:
            raise ValueError("the timestamp is out of the datetime64[ns] range")
        seq = message.get("seq")
        row = _pack_metrics(
            data["cpu_usage"],
            data["memory_usage"],
            data["active_agents"],
            data["requests_per_second"],
            data["average_latency_ms"],
            data["error_rate"],
            data["connections"],
            data["dropped_messages"],
            _NA if seq is None else seq,
            stamp,
        )
        table = self._metrics
        table.numbers += row
        if len(table.numbers) > table.limit:
            table.trim()

    def _on_agent(self, message: dict[str, Any]) -> None:
        data = message["data"]
        stamp = seconds(message["timestamp"])
        agent_id = data["agent_id"]
        objects = (
            agent_id,
            data["name"],
            data["status"],
            data["reason"],
            data["parents"],
            data["genes"],
        )
        check_strings(objects[:4], "agent_id, name, status and reason")
        check_parents(objects[4])
        check_genes(objects[5])
        seq = message.get("seq")
        branch = self._row_branch(None)
        order = self._events + 1
        row = _pack_agent(
            data["fitness"],
            data["memory_kb"],
            data["speed_us"],
            data["generation"],
            data["birth_generation"],
            branch,
            _NA if seq is None else seq,
            stamp,
            order,
        )
        member = REASONS.get(objects[3])
        if member is not None:  # checked and applied before the row: all or nothing
            self.member_sets[member[0]].update(data, member[1], branch)
        table = self._agent_history
        table.numbers += row
        for column, value in zip(table.columns, objects, strict=True):
            column.append(value)
        self._events = order
        first = self._latest.get(agent_id)
        self._latest[agent_id] = (branch if first is None else first[0], row, objects)
        if len(table.numbers) > table.limit:
            table.trim()

    def _on_log(self, message: dict[str, Any]) -> None:
        data = message["data"]
        stamp = seconds(message["timestamp"])
        objects = (message["level"], data["message"], data["details"])
        check_strings(objects[:2], "level and message")
        self._append_event(self._logs, message, stamp, objects, objects[2])

    def _on_alert(self, message: dict[str, Any]) -> None:
        data = message["data"]
        stamp = seconds(message["timestamp"])
        action = data["recommended_action"]
        objects = (
            message["severity"],
            data["alert_id"],
            data["kind"],
            data["title"],
            data["message"],
            action,
            data["details"],
        )
        check_strings(objects[:5], "severity, alert_id, kind, title and message")
        if action is not None and type(action) is not str:
            raise TypeError("recommended_action must be a string or null")
        self._append_event(self._alerts, message, stamp, objects, objects[6])

    def _append_event(
        self,
        table: _Table,
        message: dict[str, Any],
        stamp: float,
        objects: tuple[Any, ...],
        details: Any,
    ) -> None:
        """Append a checked log or alert row (numbers packed, objects as columns)."""
        if type(details) is not dict:
            raise TypeError("details must be an object")
        seq = message.get("seq")
        rollback = rollback_of(details)
        branch = self._row_branch(rollback)
        order = self._events + 1
        generation = message["data"]["generation"]
        row = _pack_event(generation, branch, _NA if seq is None else seq, stamp, order)
        table.numbers += row
        for column, value in zip(table.columns, objects, strict=True):
            column.append(value)
        self._events = order
        if rollback is not None:
            self._enter_rollback(rollback)
        if len(table.numbers) > table.limit:
            table.trim()

    def _on_control(self, message: dict[str, Any]) -> None:
        data = message["data"]
        stamp = seconds(message["timestamp"])
        objects = (data["action"], data["state"], data["previous_state"], data["parameters"])
        check_strings(objects[:3], "action, state and previous_state")
        if type(objects[3]) is not dict:
            raise TypeError("parameters must be an object")
        seq = message.get("seq")
        row = _pack_control(data["generation"], _NA if seq is None else seq, stamp)
        table = self._control
        table.numbers += row
        for column, value in zip(table.columns, objects, strict=True):
            column.append(value)
        self._last_state = objects[1]
        if len(table.numbers) > table.limit:
            table.trim()

    def _enter_branch(self, branch: int, generation: int) -> None:
        if branch not in self._branches:
            self._branches[branch] = (self._branch, generation - 1)
        if self._branch is not None:
            self.member_sets.refresh()  # a rollback changed them unannounced
        self._branch = branch

    def _row_branch(self, rollback: tuple[int, int, int] | None) -> int:
        """The branch an event belongs to: a rollback's events belong to the new branch."""
        if rollback is not None:
            return rollback[0]
        return 0 if self._branch is None else self._branch

    def _enter_rollback(self, rollback: tuple[int, int, int]) -> None:
        branch, parent, fork = rollback
        self._branches[branch] = (parent, fork)
        if branch != self._branch:
            self.member_sets.refresh()
        self._branch = branch

    # -- versions and counters -------------------------------------------------------------

    @property
    def version(self) -> int:
        """Grows with every accepted message (and on :meth:`clear`)."""
        tables = sum(table.version for table in self._tables.values())
        return tables + sum(self.member_sets.versions().values())

    @property
    def versions(self) -> dict[str, int]:
        """Each table's version: grows whenever that table changes (or is cleared)."""
        out = {name: table.version for name, table in self._tables.items()}
        out["agents"] = out["agent_history"]
        out.update(self.member_sets.versions())
        return out

    @property
    def dropped(self) -> dict[str, int]:
        """Rows dropped from each capped table to keep it within ``max_rows``."""
        return {name: table.dropped for name, table in self._tables.items()}

    def clear(self) -> None:
        """Forget every row, the agents' states, the branches and the counters.

        The versions keep growing, so a dashboard redraws.
        """
        for table in self._tables.values():
            table.clear()
        self.member_sets.clear()
        self.rejected = 0
        self.last_rejection = None
        self.ignored = 0
        self._reset_state()

    def __repr__(self) -> str:
        sizes = " ".join(f"{name}={table.rows}" for name, table in self._tables.items())
        return f"<Frames {sizes} agents={len(self._latest)} rejected={self.rejected}>"

    # -- DataFrames --------------------------------------------------------------------------

    def _frame(
        self, table: _Table, build: Callable[[dict[str, Any]], pd.DataFrame]
    ) -> pd.DataFrame:
        if table.frame is None or table.frame_version != table.version:
            table.frame = build(table.typed_columns())
            table.frame_version = table.version
        return table.frame

    @property
    def evolution(self) -> pd.DataFrame:
        """evolution_update rows in arrival order, indexed by ``generation``.

        Columns: the update's fields (``run_id`` as nullable ``Int64``: it is null until the
        server's store names the run), ``seq`` and ``timestamp``. Cached until new rows
        arrive: treat it as read-only.
        """

        def build(columns: dict[str, Any]) -> pd.DataFrame:
            index = pd.Index(columns["generation"], name="generation")
            return _ordered(columns, self._evolution.order, index)

        return self._frame(self._evolution, build)

    @property
    def agent_history(self) -> pd.DataFrame:
        """Every agent_update row in arrival order, genes as ``gene_<name>`` columns."""

        def build(columns: dict[str, Any]) -> pd.DataFrame:
            frame = _ordered(columns, self._agent_history.order, None)
            return _with_genes(frame, columns["genes"])

        return self._frame(self._agent_history, build)

    @property
    def agents(self) -> pd.DataFrame:
        """The latest state of every agent seen (in first-seen order), indexed by ``agent_id``.

        Columns as :attr:`agent_history` (``generation`` is the last one the agent was
        announced in; ``branch`` the branch of that update), genes as ``gene_<name>``
        columns. Not capped by ``max_rows``.
        """
        version = self._agent_history.version
        if self._agents_frame is None or self._agents_version != version:
            self._agents_frame = _latest_agents(list(self._latest.values()))
            self._agents_version = version
        return self._agents_frame

    @property
    def front(self) -> pd.DataFrame:
        """The NSGA-II front, one row per member, indexed by ``agent_id`` (empty when the
        run keeps none); columns and ``attrs``: :attr:`MemberSet.frame`."""
        return self.member_sets["front"].frame

    @property
    def archive(self) -> pd.DataFrame:
        """The MAP-Elites archive, one row per elite (as :attr:`front`, with cells)."""
        return self.member_sets["archive"].frame

    @property
    def metrics(self) -> pd.DataFrame:
        """metrics rows, indexed by ``timestamp`` (UTC); ``seq`` is nullable ``Int64``."""

        def build(columns: dict[str, Any]) -> pd.DataFrame:
            index = pd.DatetimeIndex(columns.pop("timestamp"), name="timestamp")
            return pd.DataFrame(columns, index=index, copy=False)

        return self._frame(self._metrics, build)

    @property
    def alerts(self) -> pd.DataFrame:
        """alert rows in arrival order; ``details`` holds the alert's details dict."""
        return self._frame(self._alerts, self._plain(self._alerts))

    @property
    def logs(self) -> pd.DataFrame:
        """log rows in arrival order; ``details`` holds the entry's details dict."""
        return self._frame(self._logs, self._plain(self._logs))

    @property
    def control(self) -> pd.DataFrame:
        """control_update rows in arrival order; ``parameters`` holds the parameters dict."""
        return self._frame(self._control, self._plain(self._control))

    @staticmethod
    def _plain(table: _Table) -> Callable[[dict[str, Any]], pd.DataFrame]:
        return lambda columns: _ordered(columns, table.order, None)

    # -- datasets ----------------------------------------------------------------------------

    def to_run(self, metadata: dict[str, Any] | None = None) -> RunDataset:
        """Return what the frames hold as a run dataset (the layout of ``export_run``).

        The server announces only notable agents, so ``population`` is empty; rows dropped
        by ``max_rows`` are not in it (the server's store is the full record); what the wire
        does not carry is derived, as :func:`~tdevlab.client.frame_datasets.run_dataset` says.

        Args:
            metadata: Merged into the dataset's metadata (``"run"`` key by key), e.g.
                ``{"run": {"problem": ...}, "gene_space": engine.space.describe()}``; with a
                ``gene_space`` the agents' gene columns get its dtypes and categories.

        Returns:
            The dataset (nothing is written).

        Raises:
            InvalidParameters: if ``metadata["run"]`` is not a dict.
        """
        return run_dataset(
            evolution=self.evolution,
            agents=self.agents,
            latest=list(self._latest.values()),
            events=[
                (kind, table.typed_columns())
                for kind, table in (
                    ("agent_update", self._agent_history),
                    ("log", self._logs),
                    ("alert", self._alerts),
                )
            ],
            branch=self._branch,
            branches=self._branches,
            state=self._last_state,
            max_rows=self.max_rows,
            dropped=self.dropped,
            metadata=metadata,
        )

    def to_parquet(self, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """Write :meth:`to_run` as a Parquet dataset that ``tdevlab.load_run`` reads back.

        Args:
            path: The dataset directory (created; existing table files are replaced).
            metadata: As for :meth:`to_run`.

        Returns:
            The dataset directory.

        Raises:
            OSError: if the directory or its files cannot be written.
        """
        return write_dataset(self.to_run(metadata), path, format="parquet")
