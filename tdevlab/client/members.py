"""The strategy's member set as the client knows it: the NSGA-II front, the MAP-Elites archive.

The server sends the whole set in reply to ``get_front`` / ``get_archive`` (a ``front`` /
``archive`` message whose data is ``Engine.member_set``), and announces each change as an
``agent_update`` with reason ``front`` / ``left_front`` or ``archive`` / ``left_archive``.
:class:`MemberSet` keeps the set from both: a reply replaces it, an update adds or removes
one agent, so a subscribed client follows the set without asking again.

A reply comes straight back while updates come on the ``agents`` channel, so either may
overtake the other. Every update is applied when it arrives and logged with its (branch,
generation); a reply replaces the set with its snapshot, then applies again the logged
updates newer than it. An update older than the reply that arrives after it does no lasting
harm: the channel keeps its order, so an agent's leave follows its entry.

Only a reply names the set's columns (objectives and reference point; descriptors, bins and
ranges). Once known, a live row's values are read from the update: outputs by name, genes by
value (a categorical gene's stored index is not on the wire: missing until the next reply),
and its cell computed as the engine does.

:meth:`MemberSet.take_wanted` tells the client when to ask for the whole set: the run
showed it keeps one (a measure in ``evolution_update`` or a member update) and no reply came
yet, a rollback moved the run to another branch (a rollback changes the set without
announcing it), or the connection was re-established.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from tdevlab.engine.objectives import OUTPUTS

__all__ = ["KINDS", "MEASURES", "REASONS", "MemberSet", "MemberSets", "set_columns"]

#: The member sets a strategy may keep (``get_<kind>`` asks for one).
KINDS: tuple[str, ...] = ("front", "archive")
#: ``agent_update`` reason -> (the set it concerns, True if the agent entered it).
REASONS: dict[str, tuple[str, bool]] = {
    "front": ("front", True),
    "left_front": ("front", False),
    "archive": ("archive", True),
    "left_archive": ("archive", False),
}
#: The ``evolution_update`` field whose presence says the run keeps each set.
MEASURES: dict[str, str] = {"front": "front_size", "archive": "archive_coverage"}
_AGENT_FIELDS = ("agent_id", "name", "fitness", "memory_kb", "speed_us", "birth_generation")
_Key = tuple[int, int]  # (branch, generation)


def set_columns(names: Sequence[Any]) -> list[str]:
    """The frame columns of a set's objectives or descriptors, in order.

    ``"max:fitness"`` / ``["fitness", "max"]`` / ``"fitness"`` -> ``fitness``: an output is
    its own column; a gene is ``gene_<name>``, as in ``frames.agents``.
    """
    out = []
    for item in names:
        name = item.rpartition(":")[2] if isinstance(item, str) else str(item[0])
        out.append(name if name in OUTPUTS else f"gene_{name}")
    return out


class MemberSet:
    """One member set (``kind`` ``"front"`` or ``"archive"``), kept current.

    Args:
        kind: ``"front"`` or ``"archive"``.
        log_size: Most updates kept to apply again after a reply.

    Attributes:
        info: What the last reply said of the set besides its agents: ``kind``, ``strategy``,
            ``generation``, ``branch``, and ``objectives`` + ``reference`` or ``descriptors``
            + ``bins`` + ``ranges`` (empty until a reply came).
        version: Grows whenever the set changes (and on :meth:`clear`).
    """

    def __init__(self, kind: str, log_size: int = 10_000) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r} must be one of {KINDS}")
        self.kind = kind
        self.version = 0
        self._log_size = log_size
        self._reset()

    def _reset(self) -> None:
        self.info: dict[str, Any] = {}
        self._names: list[str] = []  # the set's objective / descriptor names, bare
        self._base: dict[str, dict[str, Any]] = {}
        self._base_key: _Key | None = None
        self._members: dict[str, dict[str, Any]] = {}  # agent_id -> row
        self._log: deque[tuple[_Key, dict[str, Any], bool]] = deque(maxlen=self._log_size)
        self._frame: pd.DataFrame | None = None
        self._frame_version = -1
        self._seen = False  # the run keeps this set
        self._asked = False  # a reply was asked for and none came since
        self._wanted = False

    @property
    def known(self) -> bool:
        """True once the run showed that it keeps this set (a measure, an update, a reply)."""
        return self._seen

    def __len__(self) -> int:
        return len(self._members)

    # -- what changes it ---------------------------------------------------------------------

    def replace(self, data: Mapping[str, Any]) -> None:
        """Take a ``front`` / ``archive`` reply's data: the whole set at its generation.

        Raises:
            TypeError, ValueError: for malformed data (the set is left as it was).
        """
        if not isinstance(data, Mapping) or data.get("kind") != self.kind:
            raise ValueError(f"not a {self.kind} reply")
        key = (_int(data["branch"], "branch"), _int(data["generation"], "generation"))
        info = {k: v for k, v in data.items() if k != "agents"}
        names = info.get("objectives" if self.kind == "front" else "descriptors") or []
        if not isinstance(names, list) or not all(isinstance(n, str | list) for n in names):
            raise TypeError("objectives and descriptors must be lists of names")
        bare = [c.removeprefix("gene_") for c in set_columns(names)]
        if self.kind == "archive" and names:
            _check_grid(info.get("bins"), info.get("ranges"), len(names))
        agents = data["agents"]
        if not isinstance(agents, list):
            raise TypeError("agents must be a list")
        base = {}
        for entry in agents:
            row = _agent_row(entry)
            values = entry["objectives" if self.kind == "front" else "descriptors"]
            row["values"] = _floats(values, len(names), "objectives or descriptors")
            if self.kind == "archive":
                row["cell"] = [_int(c, "cell") for c in entry["cell"]]
            base[row["agent_id"]] = row
        self.info, self._names = info, bare
        self._base, self._base_key = base, key
        self._members = {agent_id: dict(row) for agent_id, row in base.items()}
        newer = [entry for entry in self._log if entry[0] > key]
        self._log = deque(newer, maxlen=self._log_size)
        for _key, update, entered in newer:
            self._apply(update, entered)
        self._seen = True
        self._asked = False
        self.version += 1

    def update(self, data: Mapping[str, Any], entered: bool, branch: int) -> None:
        """Take an ``agent_update``'s data announcing an agent entering or leaving the set.

        Raises:
            TypeError, ValueError, KeyError: for malformed data (nothing changes).
        """
        key = (branch, _int(data["generation"], "generation"))
        if entered:
            self._row(data)  # checks it
        elif not isinstance(data["agent_id"], str):
            raise TypeError("agent_id must be a string")
        self._apply(data, entered)
        self._log.append((key, dict(data), entered))
        self.note_seen()
        self.version += 1

    def note_seen(self) -> None:
        """The run keeps this set (a measure arrived): want a reply if none came yet."""
        self._seen = True
        if self._base_key is None and not self._asked:
            self._wanted = True

    def refresh(self) -> None:
        """Want a fresh reply (after a rollback or a reconnect), if the run keeps this set."""
        if self._seen:
            self._wanted = True

    def take_wanted(self) -> bool:
        """True once per time a reply is wanted (the caller then asks for one)."""
        wanted, self._wanted = self._wanted, False
        if wanted:
            self._asked = True
        return wanted

    def clear(self) -> None:
        """Forget the set (the version keeps growing)."""
        self._reset()
        self.version += 1

    def _apply(self, data: Mapping[str, Any], entered: bool) -> None:
        if entered:
            self._members[data["agent_id"]] = self._row(data)
        else:
            self._members.pop(data["agent_id"], None)

    def _row(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """A live member's row: the agent's fields, and its values and cell once known."""
        row = _agent_row(data)
        genes = data.get("genes")
        genes = genes if isinstance(genes, Mapping) else {}
        row["values"] = [_value(data, genes, name) for name in self._names]
        if self.kind == "archive":
            row["cell"] = self._cell(row["values"])
        return row

    def _cell(self, values: list[float]) -> list[int | None]:
        bins, ranges = self.info.get("bins") or [], self.info.get("ranges") or []
        cell: list[int | None] = []
        for value, count, (low, high) in zip(values, bins, ranges, strict=False):
            if not math.isfinite(value):
                cell.append(None)
                continue
            # As the engine bins (MapElites.cell_of): floor of the scaled value, clipped.
            index = math.floor((value - low) / (high - low) * count)
            cell.append(min(max(index, 0), count - 1))
        return cell

    # -- the DataFrame -----------------------------------------------------------------------

    @property
    def frame(self) -> pd.DataFrame:
        """One row per member, indexed by ``agent_id`` (cached until the set changes).

        Columns: ``name``, ``fitness``, ``memory_kb``, ``speed_us``, ``birth_generation``,
        then the set's objectives or descriptors that are genes (``gene_<name>``; outputs
        are the columns above) and, for an archive, the cell index along each descriptor
        (``cell_<column>``, nullable ``Int64``). ``frame.attrs`` holds :attr:`info`.
        """
        if self._frame is None or self._frame_version != self.version:
            self._frame = self._build()
            self._frame_version = self.version
        return self._frame

    def _build(self) -> pd.DataFrame:
        rows = list(self._members.values())
        columns: dict[str, Any] = {
            "name": _strings([r["name"] for r in rows]),
            "fitness": np.array([r["fitness"] for r in rows], dtype=np.float64),
            "memory_kb": np.array([r["memory_kb"] for r in rows], dtype=np.float64),
            "speed_us": np.array([r["speed_us"] for r in rows], dtype=np.float64),
            "birth_generation": np.array([r["birth_generation"] for r in rows], dtype=np.int64),
        }
        names = set_columns(self._names)
        for i, column in enumerate(names):
            if column not in columns:
                columns[column] = np.array([r["values"][i] for r in rows], dtype=np.float64)
        if self.kind == "archive":
            for i, column in enumerate(names):
                cells = [r["cell"][i] if i < len(r["cell"]) else None for r in rows]
                columns[f"cell_{column}"] = pd.array(cells, dtype="Int64")
        index = pd.Index(_strings([r["agent_id"] for r in rows]), name="agent_id")
        frame = pd.DataFrame(columns, index=index, copy=False)
        frame.attrs.update(self.info)
        return frame


class MemberSets:
    """The frames' member sets by kind: ``sets["front"]``, ``sets["archive"]``."""

    def __init__(self) -> None:
        self._sets = {kind: MemberSet(kind) for kind in KINDS}

    def __getitem__(self, kind: str) -> MemberSet:
        return self._sets[kind]

    def versions(self) -> dict[str, int]:
        """Each set's version."""
        return {kind: members.version for kind, members in self._sets.items()}

    def refresh(self) -> None:
        """Want a fresh reply for every set the run keeps (after a rollback, a reconnect)."""
        for members in self._sets.values():
            members.refresh()

    def wanted(self) -> list[str]:
        """The kinds to ask the server for now (``get_<kind>``), each once per need."""
        if not any(members._wanted for members in self._sets.values()):
            return []  # the usual case, checked for every message the client receives
        return [kind for kind, members in self._sets.items() if members.take_wanted()]

    def clear(self) -> None:
        """Forget every set."""
        for members in self._sets.values():
            members.clear()


def _agent_row(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        raise TypeError("a member must be an object")
    agent_id, name = entry["agent_id"], entry["name"]
    if type(agent_id) is not str or type(name) is not str:
        raise TypeError("agent_id and name must be strings")
    row: dict[str, Any] = {"agent_id": agent_id, "name": name}
    for field in _AGENT_FIELDS[2:5]:
        row[field] = _float(entry[field], field)
    row["birth_generation"] = _int(entry["birth_generation"], "birth_generation")
    return row


def _check_grid(bins: Any, ranges: Any, count: int) -> None:
    """Raise unless ``bins`` are ``count`` positive ints and ``ranges`` ``count`` (low, high)."""
    if (
        not isinstance(bins, list)
        or len(bins) != count
        or not all(_int(b, "bins") > 0 for b in bins)
    ):
        raise ValueError(f"bins must be {count} positive integers")
    if not isinstance(ranges, list) or len(ranges) != count:
        raise ValueError(f"ranges must be {count} (low, high) pairs")
    for pair in ranges:
        low, high = _floats(pair, 2, "a range")
        if not low < high:
            raise ValueError("a range must have low < high")


def _value(data: Mapping[str, Any], genes: Mapping[str, Any], name: str) -> float:
    """An objective's or descriptor's value from an agent update (NaN when not on the wire)."""
    value = data.get(name) if name in OUTPUTS else genes.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.nan  # absent, text or bool: a categorical gene's index is not sent


def _float(value: Any, what: str) -> float:
    if type(value) not in (int, float):
        raise TypeError(f"{what} must be a number")
    return float(value)


def _floats(values: Any, count: int, what: str) -> list[float]:
    if not isinstance(values, list) or len(values) != count:
        raise ValueError(f"{what} must be a list of {count} numbers")
    return [math.nan if v is None else _float(v, what) for v in values]


def _int(value: Any, what: str) -> int:
    """``value`` if it is an integer a frame's int64 column holds, else an error naming it."""
    if type(value) is not int:
        raise TypeError(f"{what} must be an integer")
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{what} must be within the int64 range")
    return value


def _strings(values: list[str]) -> Any:
    return pd.arrays.ArrowStringArray(pa.array(values, type=pa.large_string()))
