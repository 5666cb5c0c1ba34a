"""Large strategy-state texts written once per run in a SQLite store.

An adapter keeps its pickled optimizer as base64 text in the strategy state and replaces
it only now and then (pycma's every ``PICKLE_EVERY`` generations, the generations between
holding only their tell records): written into every snapshot row, the same ~47 KB would
be stored again each generation. So the SQLite store writes a top-level string of the
strategy state of at least :data:`SHARED_MIN` characters once per run, in the ``texts``
table under its SHA-256, and the snapshot row holds the digest in its place; the row's
``shared`` column lists those keys as JSON (``NULL``: none, as in rows of older schemas).
Reading a snapshot puts the texts back: ``load_snapshot`` gives what was recorded.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Any

__all__ = ["SHARED_MIN", "TEXTS_SCHEMA", "SharedTexts", "add_to_schema"]

#: Strategy-state strings this long or longer are stored once per run.
SHARED_MIN = 4096

TEXTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS texts (
    run_id INTEGER NOT NULL,
    digest TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (run_id, digest)
)"""

#: A text of the strategy state to write: (key, text, digest).
Text = tuple[str, str, str]


def add_to_schema(db: sqlite3.Connection) -> None:
    """Give a store of an older schema the ``texts`` table and the ``shared`` column
    (idempotent; inside the caller's transaction)."""
    db.execute(TEXTS_SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(snapshots)")}
    if "shared" not in columns:
        db.execute("ALTER TABLE snapshots ADD COLUMN shared TEXT")


class SharedTexts:
    """The texts a store has written, remembered per run and key by identity: the same
    string object, generation after generation, is hashed and written once.

    A run has one writer (its engine), so a run's entry is never changed by two threads.
    """

    def __init__(self) -> None:
        self._written: dict[int, dict[str, tuple[str, str]]] = {}

    def split(
        self, run_id: int, state: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None, list[Text]]:
        """``state`` as the snapshot row holds it.

        Returns:
            The state with each large strategy text replaced by its digest (``state``
            itself when there is none), the ``shared`` column's value, and the texts to
            write (those not known to be written already).
        """
        strategy = state.get("strategy")
        if type(strategy) is not dict:
            return state, None, []
        written = self._written.get(run_id, {})
        digests: dict[str, str] = {}
        new: list[Text] = []
        for key, value in strategy.items():
            if type(value) is not str or len(value) < SHARED_MIN:
                continue
            known = written.get(key)
            if known is not None and known[0] is value:
                digests[key] = known[1]
            else:
                digests[key] = hashlib.sha256(value.encode()).hexdigest()
                new.append((key, value, digests[key]))
        if not digests:
            return state, None, []
        return {**state, "strategy": {**strategy, **digests}}, json.dumps(sorted(digests)), new

    def written(self, run_id: int, texts: list[Text]) -> None:
        """Remember ``texts`` as written (call once their transaction has committed: a
        text remembered but rolled back would be referenced and missing)."""
        if texts:
            known = self._written.setdefault(run_id, {})
            for key, text, digest in texts:
                known[key] = (text, digest)

    @staticmethod
    def join(db: sqlite3.Connection, run_id: int, state: Any, shared: str | None) -> Any:
        """The recorded state of a snapshot row: its digests replaced by their texts.

        Raises:
            KeyError: a text the row refers to is not in the store (a damaged file).
        """
        if shared is None:
            return state
        strategy = dict(state["strategy"])
        for key in json.loads(shared):
            row = db.execute(
                "SELECT text FROM texts WHERE run_id = ? AND digest = ?",
                (run_id, strategy[key]),
            ).fetchone()
            if row is None:
                raise KeyError(f"strategy text {key!r} ({strategy[key]}) of run {run_id}")
            strategy[key] = row[0]
        return {**state, "strategy": strategy}
