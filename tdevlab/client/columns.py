"""Columnar row buffers behind :class:`~tdevlab.client.frames.Frames`.

A :class:`_Table` keeps a table's numbers packed row by row in one ``bytearray`` (one
``struct`` record per row, in the order of the table's spec) and its strings and objects in
one list per column, so ingesting a message appends bytes instead of building objects.
Typed pandas columns (:func:`_columns`) are made from the buffers only when a DataFrame is
built. The table trims its oldest rows in blocks once it holds a quarter more than its cap.
"""

from __future__ import annotations

import struct
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from tdevlab.engine.events import STATUS_NAMES, EvolutionUpdate

_NA = -(2**63)  # a missing integer (``null`` run_id, no seq) in the packed buffers
_LEVELS = ("info", "warning", "error")
_SEVERITIES = ("info", "warning", "error", "critical")
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
    "crossover_rate:f evaluation_ms:f front_size:f hypervolume:f archive_coverage:f qd_score:f "
    "seq:n timestamp:t best_agent_id:k best_agent_name:k"
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


def _latest_agents(latest: list[tuple[int, bytes, tuple[Any, ...]]]) -> pd.DataFrame:
    """The agents table from each agent's latest (branch, packed numbers, objects) entry."""
    dtype = np.dtype([(n, "<f8" if k in "ft" else "<i8") for n, k in _AGENT_NUMBERS])
    records = np.frombuffer(b"".join(entry[1] for entry in latest), dtype=dtype)
    objects = [list(values) for values in zip(*(entry[2] for entry in latest), strict=True)]
    if not objects:
        objects = [[] for _ in _AGENT_OBJECTS]
    columns = _columns(_AGENT_NUMBERS, _AGENT_OBJECTS, records, objects)
    frame = _ordered(columns, _AGENT_ORDER[1:], pd.Index(columns["agent_id"]))
    frame.index.name = "agent_id"
    return _with_genes(frame, columns["genes"])


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
