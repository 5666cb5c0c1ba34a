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

Agent genes are expanded into one column per gene, named ``gene_<name>`` (bool, int64,
float64, or category for text genes; a gene an agent lacks is missing).

The frames are a window, not the record: each table except ``agents`` keeps at most
``max_rows`` rows, dropping the oldest (counted in :attr:`Frames.dropped`). The server's
run store and :func:`tdevlab.export_run` hold the full run; :meth:`Frames.to_run` writes
what the frames hold, in the same dataset layout.

Frames is not thread-safe: ingest and read from one thread (the client's loop does both).
"""

from __future__ import annotations

import struct
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa

from tdevlab.engine.events import STATUS_NAMES, AgentUpdate, Alert, EvolutionUpdate, LogEntry
from tdevlab.engine.genes import Categorical, GeneSpace, Integer
from tdevlab.exceptions import InvalidParameters
from tdevlab.store.export import (
    _EVENT_DTYPES,
    _GENERATION_DTYPES,
    DATASET_FORMAT,
    DATASET_VERSION,
    RunDataset,
    _apply,
    _versions,
    write_dataset,
)
from tdevlab.store.rows import EVENT_COLUMNS, GENERATION_COLUMNS

__all__ = ["CAPPED_TABLES", "DEFAULT_MAX_ROWS", "TABLES", "Frames"]

#: The tables :class:`Frames` offers, by property name.
TABLES = ("evolution", "agents", "agent_history", "metrics", "alerts", "logs", "control")
#: The tables ``max_rows`` applies to (``agents`` holds one row per agent and is not capped).
CAPPED_TABLES = ("evolution", "agent_history", "metrics", "alerts", "logs", "control")
DEFAULT_MAX_ROWS = 100_000

_NA = -(2**63)  # a missing integer (``null`` run_id, no seq) in the packed buffers
_LEVELS = ("info", "warning", "error")
_SEVERITIES = ("info", "warning", "error", "critical")
_SCALARS = (bool, int, float, str)
_ENCODE = msgspec.json.Encoder().encode
_fromiso = datetime.fromisoformat
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECONDS = 9.2e9  # timestamps within +-_SECONDS of the epoch fit datetime64[ns]

# Column specs, "name:kind" words. Packed numbers: "i" int64, "n" nullable Int64, "f" float64,
# "t" timestamp (seconds as float64 in the buffer), "k" string as the int64 code of the
# table's string dictionary (for the frequent evolution rows: no string object per row, and
# a fast build). Objects: "s" string, "c" category, "o" Python objects (lists, dicts). Names
# starting with "_" (the arrival order of events) stay out of the public frames. Each
# table's numbers are packed in the order of its spec.
_Spec = tuple[tuple[str, str], ...]


def _spec(words: str) -> _Spec:
    return tuple((name, kind) for name, _, kind in (w.partition(":") for w in words.split()))


def _names(words: str) -> tuple[str, ...]:
    return tuple(words.split())


_EVOLUTION_NUMBERS = _spec(
    "generation:i average_fitness:f best_fitness:f improvement:f agents_evolved:i "
    "mutations_applied:i crossovers:i run_id:n branch:i population_size:i feasible_fraction:f "
    "diversity:f worst_fitness:f best_memory_kb:f best_speed_us:f mutation_rate:f "
    "crossover_rate:f evaluation_ms:f seq:n timestamp:t best_agent_id:k best_agent_name:k"
)
# The evolution_update fields in the order of EvolutionUpdate, then the envelope's.
_EVOLUTION_ORDER = (
    *(f for f in EvolutionUpdate.__struct_fields__ if f not in ("generation", "timestamp")),
    "seq",
    "timestamp",
)
_AGENT_NUMBERS = _spec(
    "fitness:f memory_kb:f speed_us:f generation:i birth_generation:i branch:i seq:n "
    "timestamp:t _order:i"
)
_AGENT_OBJECTS = _spec("agent_id:s name:s status:c reason:c parents:o genes:o")
_AGENT_ORDER = _names(
    "agent_id name status fitness memory_kb speed_us generation birth_generation parents reason "
    "branch seq timestamp"
)
_METRIC_NUMBERS = _spec(
    "cpu_usage:f memory_usage:f active_agents:i requests_per_second:f average_latency_ms:f "
    "error_rate:f connections:i dropped_messages:i seq:n timestamp:t"
)
_EVENT_NUMBERS = _spec("generation:i branch:i seq:n timestamp:t _order:i")
_ALERT_OBJECTS = _spec(
    "severity:c alert_id:s kind:c title:s message:s recommended_action:s details:o"
)
_ALERT_ORDER = _names(
    "timestamp severity alert_id kind title message recommended_action generation details "
    "branch seq"
)
_LOG_OBJECTS = _spec("level:c message:s details:o")
_LOG_ORDER = _names("timestamp level message generation details branch seq")
_CONTROL_NUMBERS = _spec("generation:i seq:n timestamp:t")
_CONTROL_OBJECTS = _spec("action:c state:c previous_state:c parameters:o")
_CONTROL_ORDER = _names("timestamp action state previous_state generation parameters")

#: Categories every frame lists, in this order, before any other value seen.
_KNOWN_CATEGORIES: dict[str, tuple[Any, ...]] = {
    "status": STATUS_NAMES,
    "level": _LEVELS,
    "severity": _SEVERITIES,
}


def _packer(spec: _Spec) -> Callable[..., bytes]:
    return struct.Struct("<" + "".join("d" if kind in "ft" else "q" for _, kind in spec)).pack


_pack_evolution = _packer(_EVOLUTION_NUMBERS)
_pack_agent = _packer(_AGENT_NUMBERS)
_pack_metrics = _packer(_METRIC_NUMBERS)
_pack_event = _packer(_EVENT_NUMBERS)
_pack_control = _packer(_CONTROL_NUMBERS)


class _Table:
    """One table's row buffers: numbers packed row by row, one list per object column."""

    __slots__ = (
        "base",
        "cap",
        "codes",
        "columns",
        "dtype",
        "frame",
        "frame_version",
        "limit",
        "numbers",
        "numeric",
        "objects",
        "order",
        "row_bytes",
        "strings",
        "trimmed",
    )

    def __init__(
        self, numeric: _Spec, objects: _Spec, order: Sequence[str], cap: int | None
    ) -> None:
        self.numeric = numeric
        self.objects = objects
        self.order = tuple(order)
        self.dtype = np.dtype([(n, "<f8" if k in "ft" else "<i8") for n, k in numeric])
        self.row_bytes = self.dtype.itemsize
        self.numbers = bytearray()
        self.columns: list[list[Any]] = [[] for _ in objects]
        self.strings: list[str] = []  # the dictionary of "k" columns: code -> string
        self.codes: dict[str, int] = {}  # string -> code
        self.trimmed = 0
        self.base = 0
        self.frame: pd.DataFrame | None = None
        self.frame_version = -1
        self.cap = cap
        # Trim in blocks: the buffers hold up to a quarter more than the cap, so moving the
        # kept rows costs O(1) per message; the frames show only the newest ``cap`` rows.
        slack = 0 if cap is None else max(cap // 4, 256)
        self.limit = 2**62 if cap is None else (cap + slack) * self.row_bytes

    @property
    def rows(self) -> int:
        rows = len(self.numbers) // self.row_bytes
        for column in self.columns:
            rows = min(rows, len(column))
        return rows

    @property
    def version(self) -> int:
        return self.base + self.trimmed + len(self.numbers) // self.row_bytes

    @property
    def dropped(self) -> int:
        hidden = 0 if self.cap is None else max(self.rows - self.cap, 0)
        return self.trimmed + hidden

    def trim(self) -> None:
        assert self.cap is not None
        drop = self.rows - self.cap
        if drop > 0:
            del self.numbers[: drop * self.row_bytes]
            for column in self.columns:
                del column[:drop]
            self.trimmed += drop
            if len(self.strings) > 2 * self.cap + 1024:
                self.compact()

    def code(self, text: str) -> int:
        """Add ``text`` to the string dictionary; return its code."""
        code = self.codes[text] = len(self.strings)
        self.strings.append(text)
        return code

    def compact(self) -> None:
        """Drop the strings no kept row uses any more (after trims), recoding the rows."""
        names = [name for name, kind in self.numeric if kind == "k"]
        records = np.frombuffer(self.numbers, dtype=self.dtype)
        try:
            used = np.unique(np.concatenate([records[name] for name in names]))
            recode = np.zeros(len(self.strings), dtype=np.int64)
            recode[used] = np.arange(len(used))
            for name in names:
                records[name] = recode[records[name]]
        finally:
            del records
        self.strings[:] = [self.strings[i] for i in used.tolist()]
        self.codes.clear()
        self.codes.update((text, code) for code, text in enumerate(self.strings))

    def typed_columns(self) -> dict[str, Any]:
        """The visible rows as typed columns (copies; see :func:`_columns`)."""
        rows = self.rows
        start = 0 if self.cap is None else max(rows - self.cap, 0)
        # A view, not a copy of the packed rows: on a 1M-row table the copy would cost more
        # than the rest of the build. While the view lives, the bytearray cannot grow.
        records = np.frombuffer(
            self.numbers, dtype=self.dtype, count=rows - start, offset=start * self.row_bytes
        )
        try:
            objects = [column[start:rows] for column in self.columns]
            return _columns(self.numeric, self.objects, records, objects, self.strings)
        except BaseException as exc:
            # A traceback kept by the caller (IPython keeps the last one) must not keep the
            # view, and so the buffer locked, in the locals of a frame it holds.
            traceback.clear_frames(exc.__traceback__)
            raise
        finally:
            del records

    def clear(self) -> None:
        self.base = self.version + 1
        self.trimmed = 0
        self.numbers = bytearray()
        self.columns = [[] for _ in self.objects]
        self.strings.clear()
        self.codes.clear()
        self.frame = None
        self.frame_version = -1


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
        self.max_rows = _caps(max_rows)
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
        }
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
        stamp = (_fromiso(message["timestamp"]) - _EPOCH).total_seconds()  # _seconds, inlined
        if not -_SECONDS < stamp < _SECONDS:
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
            _NA if seq is None else seq,
            stamp,
            id_code,
            name_code,
        )
        table.numbers += row
        if branch != self._branch:
            self._enter_branch(int(branch), int(generation))
        if len(table.numbers) > table.limit:
            table.trim()

    def _on_metrics(self, message: dict[str, Any]) -> None:
        data = message["data"]
        stamp = (_fromiso(message["timestamp"]) - _EPOCH).total_seconds()  # _seconds, inlined
        if not -_SECONDS < stamp < _SECONDS:
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
        stamp = _seconds(message["timestamp"])
        agent_id = data["agent_id"]
        objects = (
            agent_id,
            data["name"],
            data["status"],
            data["reason"],
            data["parents"],
            data["genes"],
        )
        _check_strings(objects[:4], "agent_id, name, status and reason")
        _check_parents(objects[4])
        _check_genes(objects[5])
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
        stamp = _seconds(message["timestamp"])
        objects = (message["level"], data["message"], data["details"])
        _check_strings(objects[:2], "level and message")
        self._append_event(self._logs, message, stamp, objects, objects[2])

    def _on_alert(self, message: dict[str, Any]) -> None:
        data = message["data"]
        stamp = _seconds(message["timestamp"])
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
        _check_strings(objects[:5], "severity, alert_id, kind, title and message")
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
        rollback = _rollback(details)
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
        stamp = _seconds(message["timestamp"])
        objects = (data["action"], data["state"], data["previous_state"], data["parameters"])
        _check_strings(objects[:3], "action, state and previous_state")
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
        self._branch = branch

    def _row_branch(self, rollback: tuple[int, int, int] | None) -> int:
        """The branch an event belongs to: a rollback's events belong to the new branch."""
        if rollback is not None:
            return rollback[0]
        return 0 if self._branch is None else self._branch

    def _enter_rollback(self, rollback: tuple[int, int, int]) -> None:
        branch, parent, fork = rollback
        self._branches[branch] = (parent, fork)
        self._branch = branch

    # -- versions and counters -------------------------------------------------------------

    @property
    def version(self) -> int:
        """Grows with every accepted message (and on :meth:`clear`)."""
        return sum(table.version for table in self._tables.values())

    @property
    def versions(self) -> dict[str, int]:
        """Each table's version: grows whenever that table gets a row (or is cleared)."""
        out = {name: table.version for name, table in self._tables.items()}
        out["agents"] = out["agent_history"]
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
            latest = list(self._latest.values())
            records = np.frombuffer(
                b"".join(entry[1] for entry in latest), dtype=self._agent_history.dtype
            )
            objects = [list(values) for values in zip(*(entry[2] for entry in latest), strict=True)]
            if not objects:
                objects = [[] for _ in _AGENT_OBJECTS]
            columns = _columns(_AGENT_NUMBERS, _AGENT_OBJECTS, records, objects)
            frame = _ordered(columns, _AGENT_ORDER[1:], pd.Index(columns["agent_id"]))
            frame.index.name = "agent_id"
            self._agents_frame = _with_genes(frame, columns["genes"])
            self._agents_version = version
        return self._agents_frame

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

        The server announces only notable agents, so ``population`` is empty (with its
        columns) and the metadata says ``"population_complete": False`` and ``"source":
        "client frames"``. ``generations.active`` marks the lineage of the latest branch,
        as learned from the evolution rows and rollback alerts. Rows dropped by
        ``max_rows`` are not in it: the server's store is the full record.

        What the wire does not carry is derived: ``run_id`` is the metadata's, else the last
        one the evolution rows named, else -1; the events' ``seq`` numbers agent updates,
        logs and alerts in arrival order; an agent's ``status`` is the last one announced
        and ``feasible`` means it was not announced as violating.

        Args:
            metadata: Merged into the dataset's metadata (``"run"`` key by key), e.g.
                ``{"run": {"problem": ...}, "gene_space": engine.space.describe()}``; with a
                ``gene_space`` the agents' gene columns get its dtypes and categories.

        Returns:
            The dataset (nothing is written).

        Raises:
            InvalidParameters: if ``metadata["run"]`` is not a dict.
        """
        evolution = self.evolution
        seen = evolution["run_id"].dropna()
        meta: dict[str, Any] = {
            "format": DATASET_FORMAT,
            "format_version": DATASET_VERSION,
            "run": {
                "run_id": int(seen.iloc[-1]) if len(seen) else None,
                "problem": None,
                "seed": None,
                "created_at": None,
                "status": self._last_state,
                "active_branch": self._branch,
                "last_generation": _last_generation(evolution, self._branch),
            },
            "config": {},
            "gene_space": None,
            "branches": [
                {"branch": b, "parent_branch": parent, "fork_generation": fork}
                for b, (parent, fork) in sorted(self._branches.items())
            ],
            "frames": {"max_rows": self.max_rows, "dropped": self.dropped},
            "versions": _versions(),
        }
        for key, value in (metadata or {}).items():
            if key != "run":
                meta[key] = value
            elif isinstance(value, dict):
                meta["run"] = {**meta["run"], **value}
            else:
                raise InvalidParameters(f"metadata['run'] must be a dict, got {value!r}")
        meta.update(
            format=DATASET_FORMAT,
            format_version=DATASET_VERSION,
            population_complete=False,
            source="client frames",
        )
        run_id = meta["run"]["run_id"]
        run_id = run_id if isinstance(run_id, int) and not isinstance(run_id, bool) else -1
        space = meta.get("gene_space")
        return RunDataset(
            generations=self._generations_table(run_id),
            agents=self._agents_table(run_id, space),
            population=_empty_population(),
            events=self._events_table(run_id),
            metadata=meta,
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

    def _generations_table(self, run_id: int) -> pd.DataFrame:
        g = self.evolution.reset_index()
        frame = pd.DataFrame({name: g[name] for name in GENERATION_COLUMNS})
        frame.insert(0, "run_id", g["run_id"].fillna(run_id).astype("int64"))
        branch = frame["branch"].to_numpy()
        generation = frame["generation"].to_numpy()
        active = np.zeros(len(frame), dtype=bool)
        for b, low, high in self._lineage():
            in_range = (branch == b) & (generation >= low)
            if high is not None:
                in_range &= generation <= high
            active |= in_range
        frame["active"] = active
        return _apply(frame, _GENERATION_DTYPES)

    def _lineage(self) -> list[tuple[int, int, int | None]]:
        """(branch, first generation, last generation or None) back from the latest branch."""
        out: list[tuple[int, int, int | None]] = []
        upper: int | None = None
        current = self._branch
        while current is not None and current in self._branches:
            if any(b == current for b, _, _ in out):
                break  # a cycle can only come from inconsistent rollback details
            parent, fork = self._branches[current]
            out.append((current, fork + 1, upper))
            upper = fork
            current = parent
        return out

    def _agents_table(self, run_id: int, space: Any) -> pd.DataFrame:
        latest = list(self._latest.values())
        agents = self.agents
        first_branch = np.array([entry[0] for entry in latest], dtype=np.int64)
        numbers = [_agent_number(a) for a in agents.index]
        parents = agents["parents"].tolist()
        frame = pd.DataFrame(
            {
                "run_id": np.full(len(agents), run_id, dtype=np.int64),
                "agent_id": pd.array(list(agents.index), dtype="string"),
                "agent_number": np.array(numbers, dtype=np.int64),
                "branch": first_branch,
                "birth_generation": agents["birth_generation"].to_numpy(np.int64),
                "last_generation": agents["generation"].to_numpy(np.int64),
                "parent_a": pd.array([p[0] if p else None for p in parents], dtype="string"),
                "parent_b": pd.array(
                    [p[1] if len(p) > 1 else None for p in parents], dtype="string"
                ),
            }
        )
        genes = [entry[2][5] for entry in latest]
        for name, column in _dataset_genes(genes, space).items():
            frame[name] = column
        frame["fitness"] = agents["fitness"].to_numpy(np.float64)
        frame["memory_kb"] = agents["memory_kb"].to_numpy(np.float64)
        frame["speed_us"] = agents["speed_us"].to_numpy(np.float64)
        # The wire carries no constraint violation: a violating status is the only sign.
        frame["feasible"] = (agents["status"] != "violating").to_numpy(bool)
        frame["status"] = pd.Categorical(
            agents["status"].astype(object), categories=list(STATUS_NAMES)
        )
        return frame

    def _events_table(self, run_id: int) -> pd.DataFrame:
        parts = []
        for table, kind in (
            (self._agent_history, "agent_update"),
            (self._logs, "log"),
            (self._alerts, "alert"),
        ):
            parts.append(_event_rows(kind, table.typed_columns()))
        columns: dict[str, Any] = {}
        for name in EVENT_COLUMNS:
            if name in ("seq", "branch", "generation", "timestamp"):
                columns[name] = np.concatenate([part[name] for part in parts])
            else:
                columns[name] = [value for part in parts for value in part[name]]
        order = np.argsort(columns["seq"], kind="stable")
        events = pd.DataFrame(
            {
                "run_id": np.full(len(order), run_id, dtype=np.int64),
                **{
                    name: np.asarray(values, dtype=object)[order]
                    if isinstance(values, list)
                    else values[order]
                    for name, values in columns.items()
                },
            }
        )
        events["timestamp"] = pd.to_datetime(events["timestamp"], unit="ns", utc=True)
        events = _apply(events, _EVENT_DTYPES)
        events["kind"] = events["kind"].cat.set_categories(["agent_update", "log", "alert"])
        events["severity"] = events["severity"].cat.set_categories(list(_SEVERITIES))
        return events


# -- building ------------------------------------------------------------------------------


def _caps(max_rows: int | Mapping[str, int | None] | None) -> dict[str, int | None]:
    if max_rows is None or isinstance(max_rows, int):
        chosen: dict[str, int | None] = dict.fromkeys(CAPPED_TABLES, max_rows)
    elif isinstance(max_rows, Mapping):
        unknown = set(max_rows) - set(CAPPED_TABLES)
        if unknown:
            raise InvalidParameters(
                f"max_rows names unknown tables {sorted(unknown)}; "
                f"the capped tables are {list(CAPPED_TABLES)}"
            )
        chosen = {name: max_rows.get(name, DEFAULT_MAX_ROWS) for name in CAPPED_TABLES}
    else:
        raise InvalidParameters(f"max_rows={max_rows!r} must be an int, a dict or None")
    for name, cap in chosen.items():
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
            raise InvalidParameters(f"max_rows for {name!r} must be an int >= 0 or None")
    return chosen


def _columns(
    numeric: _Spec,
    objects: _Spec,
    records: np.ndarray,
    values: list[list[Any]],
    strings: list[str] | None = None,
) -> dict[str, Any]:
    """Typed columns from the packed numbers and the object lists.

    Every numeric column is a copy: none may keep ``records`` (a view of a table's buffer).
    """
    columns: dict[str, Any] = {}
    for name, kind in numeric:
        column = records[name].copy()  # contiguous
        if kind == "n":
            columns[name] = pd.arrays.IntegerArray(column, column == _NA)
        elif kind == "t":
            column *= 1e6  # microseconds: the resolution of the envelope's time, exactly
            np.rint(column, out=column)
            nanoseconds = column.astype(np.int64)
            nanoseconds *= 1000
            columns[name] = pd.DatetimeIndex(nanoseconds, tz="UTC")
        elif kind == "k":
            dictionary = pa.array(strings or [], type=pa.large_string())
            columns[name] = pd.arrays.ArrowStringArray(dictionary.take(column))
        else:
            columns[name] = column
    for (name, kind), items in zip(objects, values, strict=True):
        if kind == "s":
            # pyarrow straight from the list: three times faster than pd.array(dtype="string").
            columns[name] = pd.arrays.ArrowStringArray(pa.array(items, type=pa.large_string()))
        elif kind == "c":
            columns[name] = _categorical(items, _KNOWN_CATEGORIES.get(name, ()))
        else:
            columns[name] = np.fromiter(items, dtype=object, count=len(items))
    return columns


def _categorical(values: list[Any], known: Sequence[Any]) -> pd.Categorical:
    extra = sorted(set(values).difference(known), key=str)
    return pd.Categorical(values, categories=[*known, *extra])


def _ordered(columns: dict[str, Any], order: Sequence[str], index: pd.Index | None) -> pd.DataFrame:
    return pd.DataFrame({name: columns[name] for name in order}, index=index, copy=False)


def _with_genes(frame: pd.DataFrame, genes: np.ndarray) -> pd.DataFrame:
    """``frame`` with one ``gene_<name>`` column per gene named in ``genes`` (dicts)."""
    names = list(dict.fromkeys(name for entry in genes for name in entry))
    if not names:
        return frame
    columns = {
        f"gene_{name}": _gene_values([entry.get(name) for entry in genes], None) for name in names
    }
    return pd.concat([frame, pd.DataFrame(columns, index=frame.index)], axis=1)


def _gene_values(values: list[Any], categories: Sequence[Any] | None) -> Any:
    """One gene's values: bool, int64, float64, or category for text (object if mixed)."""
    present = [v for v in values if v is not None]
    if categories is not None:
        return pd.Categorical(values, categories=list(categories))
    kinds = {type(v) for v in present}
    complete = len(present) == len(values)
    if kinds == {bool}:
        return np.array(values, dtype=bool) if complete else pd.array(values, dtype="boolean")
    if kinds == {int}:
        return np.array(values, dtype=np.int64) if complete else pd.array(values, dtype="Int64")
    if kinds <= {int, float} and present:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if kinds == {str}:
        return pd.Categorical(values, categories=sorted(set(present)))
    return np.fromiter(values, dtype=object, count=len(values))


def _dataset_genes(genes: list[dict[str, Any]], description: Any) -> dict[str, Any]:
    """Gene columns of the dataset's agents table, typed by the gene space if known."""
    out: dict[str, Any] = {}
    space = None
    if isinstance(description, list):
        try:
            space = GeneSpace.from_description(description)
        except (InvalidParameters, KeyError, TypeError, ValueError):
            space = None
    if space is not None:
        for gene in space.genes:
            values = [entry.get(gene.name) for entry in genes]
            if isinstance(gene, Categorical):
                out[gene.name] = _gene_values(values, gene.choices)
            elif isinstance(gene, Integer) and None not in values:
                out[gene.name] = np.array(values, dtype=np.int64)
            else:
                out[gene.name] = np.array(
                    [np.nan if v is None else v for v in values], dtype=np.float64
                )
        return out
    for name in dict.fromkeys(name for entry in genes for name in entry):
        values = [entry.get(name) for entry in genes]
        kinds = {type(v) for v in values}
        if kinds == {bool}:  # as the engine's datasets store categorical genes
            out[name] = pd.Categorical(values, categories=[False, True])
        else:
            out[name] = _gene_values(values, None)
    return out


def _event_rows(kind: str, columns: dict[str, Any]) -> dict[str, Any]:
    """The events-table columns of one source table (payloads as the store writes them)."""
    values = {name: _pylist(column) for name, column in columns.items() if name != "timestamp"}
    n = len(values["_order"])
    out: dict[str, Any] = dict.fromkeys(EVENT_COLUMNS, [None] * n)
    out.update(
        seq=columns["_order"],
        branch=columns["branch"],
        generation=columns["generation"],
        kind=[kind] * n,
        timestamp=columns["timestamp"].asi8,
    )
    if kind == "agent_update":
        out["severity"] = ["info"] * n
        out["agent_id"] = values["agent_id"]
        out["message"] = [
            f"{name} is {status} ({reason})"
            for name, status, reason in zip(
                values["name"], values["status"], values["reason"], strict=True
            )
        ]
        fields: tuple[str, ...] = AgentUpdate.__struct_fields__
    elif kind == "log":
        out["severity"] = values["level"]
        out["message"] = values["message"]
        out["agent_id"] = [
            d.get("agent_id") if isinstance(d.get("agent_id"), str) else None
            for d in values["details"]
        ]
        fields = LogEntry.__struct_fields__
    else:
        for name in ("severity", "alert_id", "title", "message", "recommended_action"):
            out[name] = values[name]
        fields = Alert.__struct_fields__
    rows = zip(*(values[f] for f in fields), strict=True)
    out["payload"] = [_ENCODE(dict(zip(fields, row, strict=True))).decode() for row in rows]
    return out


def _pylist(column: Any) -> list[Any]:
    """A column's values as Python objects (``None`` for a missing string)."""
    if isinstance(column, np.ndarray | pd.Categorical):
        return list(column.tolist())
    return list(column.to_numpy(dtype=object, na_value=None).tolist())


def _empty_population() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": np.empty(0, dtype=np.int64),
            "branch": np.empty(0, dtype=np.int64),
            "generation": np.empty(0, dtype=np.int64),
            "agent_id": pd.array([], dtype="string"),
            "status": pd.Categorical([], categories=list(STATUS_NAMES)),
            "fitness": np.empty(0, dtype=np.float64),
            "memory_kb": np.empty(0, dtype=np.float64),
            "speed_us": np.empty(0, dtype=np.float64),
            "active": np.empty(0, dtype=bool),
        }
    )


def _last_generation(evolution: pd.DataFrame, branch: int | None) -> int | None:
    if branch is None:
        return None
    rows = evolution.index[evolution["branch"].to_numpy() == branch]
    return int(rows.max()) if len(rows) else None


def _agent_number(agent_id: str) -> int:
    head, _, number = agent_id.rpartition("-")
    return int(number) if head and number.isdigit() else -1


# -- checks (run before a row is appended) -------------------------------------------------


def _seconds(stamp: Any) -> float:
    """Seconds since the epoch of an ISO 8601 time with a zone.

    Raises:
        TypeError: for a naive time (it cannot be subtracted from the aware epoch).
        ValueError: for text that is no ISO 8601 time, or one beyond ``datetime64[ns]``.
    """
    seconds = (_fromiso(stamp) - _EPOCH).total_seconds()
    if not -_SECONDS < seconds < _SECONDS:
        raise ValueError("the timestamp is out of the datetime64[ns] range")
    return seconds


def _rollback(details: dict[str, Any]) -> tuple[int, int, int] | None:
    """(new branch, parent branch, fork generation) if these are a rollback's details."""
    if "abandoned_branch" not in details:
        return None
    new, parent, fork = (
        details.get("branch"),
        details.get("abandoned_branch"),
        details.get("generation"),
    )
    if type(new) is int and type(parent) is int and type(fork) is int and new != parent:
        return new, parent, fork
    return None


def _check_strings(values: Sequence[Any], names: str) -> None:
    for value in values:
        if type(value) is not str:
            raise TypeError(f"{names} must be strings")


def _check_parents(parents: Any) -> None:
    if type(parents) is not list or not all(type(p) is str for p in parents):
        raise TypeError("parents must be a list of strings")


def _check_genes(genes: Any) -> None:
    if type(genes) is not dict or not all(
        type(k) is str and type(v) in _SCALARS for k, v in genes.items()
    ):
        raise TypeError("genes must be an object of numbers, strings and booleans")
