"""Checks a message's fields pass before :class:`~tdevlab.client.frames.Frames` appends a row.

Each raises ``TypeError`` or ``ValueError`` naming the fields; the frames count the message
as rejected and keep no part of it. The numbers need no check here: packing them with
``struct`` checks their types and ranges. :func:`row_caps` checks the frames' ``max_rows``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tdevlab.exceptions import InvalidParameters

__all__ = [
    "EPOCH",
    "SECONDS_RANGE",
    "check_genes",
    "check_parents",
    "check_strings",
    "rollback_of",
    "row_caps",
    "seconds",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Timestamps within this many seconds either side of the epoch fit ``datetime64[ns]``.
SECONDS_RANGE = 9.2e9
_SCALARS = (bool, int, float, str)


def seconds(stamp: object) -> float:
    """Seconds since the epoch of an ISO 8601 time with a zone.

    Raises:
        TypeError: for a value that is not text, or a naive time (it cannot be subtracted
            from the aware epoch).
        ValueError: for text that is no ISO 8601 time, or one beyond ``datetime64[ns]``.
    """
    if not isinstance(stamp, str):
        raise TypeError(f"the timestamp must be a string, got {type(stamp).__name__}")
    value = (datetime.fromisoformat(stamp) - EPOCH).total_seconds()
    if not -SECONDS_RANGE < value < SECONDS_RANGE:
        raise ValueError("the timestamp is out of the datetime64[ns] range")
    return value


def rollback_of(details: dict[str, Any]) -> tuple[int, int, int] | None:
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


def check_strings(values: Sequence[object], names: str) -> None:
    """Raise ``TypeError`` unless every value is a ``str`` (``names`` says which fields)."""
    for value in values:
        if type(value) is not str:
            raise TypeError(f"{names} must be strings")


def check_parents(parents: object) -> None:
    """Raise ``TypeError`` unless ``parents`` is a list of strings."""
    if type(parents) is not list or not all(type(p) is str for p in parents):
        raise TypeError("parents must be a list of strings")


def check_genes(genes: object) -> None:
    """Raise ``TypeError`` unless ``genes`` maps names to numbers, strings or booleans."""
    if type(genes) is not dict or not all(
        type(k) is str and type(v) in _SCALARS for k, v in genes.items()
    ):
        raise TypeError("genes must be an object of numbers, strings and booleans")


def row_caps(
    max_rows: int | Mapping[str, int | None] | None, tables: Sequence[str], default: int
) -> dict[str, int | None]:
    """Each capped table's row cap, from ``Frames(max_rows=...)``.

    Args:
        max_rows: One cap for every table, ``{table: cap or None}`` (tables it omits get
            ``default``), or ``None`` for no cap.
        tables: The capped tables.
        default: The cap of a table a dict omits.

    Raises:
        InvalidParameters: for an unknown table or a cap that is not an int >= 0 or None.
    """
    if max_rows is None or isinstance(max_rows, int):
        chosen: dict[str, int | None] = dict.fromkeys(tables, max_rows)
    elif isinstance(max_rows, Mapping):
        unknown = set(max_rows) - set(tables)
        if unknown:
            raise InvalidParameters(
                f"max_rows names unknown tables {sorted(unknown)}; "
                f"the capped tables are {list(tables)}"
            )
        chosen = {name: max_rows.get(name, default) for name in tables}
    else:
        raise InvalidParameters(f"max_rows={max_rows!r} must be an int, a dict or None")
    for name, cap in chosen.items():
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
            raise InvalidParameters(f"max_rows for {name!r} must be an int >= 0 or None")
    return chosen
