"""data/sample-run regenerates identically: the commands of ``make sample-data`` rebuild it.

The shipped dataset was made before the engine was split at the Strategy seam; rebuilding it
with today's engine and comparing every table (all but wall-clock columns) shows the
default strategy makes the same runs. One column is compared to 10 significant digits, not
bit for bit: ``diversity``, a statistic of the population (``GeneSpace.diversity``) whose
one-pass formula replaced a two-pass one after the dataset was made. On a machine whose NumPy
math differs in the last bit from the one that made the shipped dataset, the comparison is
with ``tests/store/data/sample-run.<fingerprint>``, made there by the same commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tdevlab import load_run
from tdevlab.cli import main
from tdevlab.engine.events import STRATEGY_FIELDS
from tests.mathlib import pinned

#: The shipped dataset, or the one the same commands made on a machine whose math matches
#: this one's (``tests.mathlib``: made by the commit that made the shipped one).
SAMPLE = pinned(
    Path(__file__).resolve().parents[2] / "data" / "sample-run", Path(__file__).parent / "data"
)
# Wall-clock values differ from run to run by nature.
CLOCK = ["timestamp", "evaluation_ms"]
#: Statistics computed to about 10 significant digits: compared with this relative tolerance.
APPROXIMATE = {"generations": ["diversity"]}


def _timeless(payload: str) -> str:
    data = json.loads(payload)
    for key in CLOCK:
        data.pop(key, None)
    return json.dumps(data, sort_keys=True)


def test_sample_run_regenerates_identically(tmp_path: Path) -> None:
    """The Makefile's sample-data commands give the shipped tables, value for value."""
    db = str(tmp_path / "sample.db")
    out = str(tmp_path / "sample-run")
    # The Makefile's sample-data target, verbatim in its arguments.
    assert main(["run", "--problem", "agent_design", "--generations", "40",
                 "--population-size", "60", "--mutation-rate", "0.15", "--seed", "7",
                 "--db", db, "--quiet"]) == 0  # fmt: skip
    assert main(["rollback", "--db", db, "--run", "1", "--generation", "25"]) == 0
    assert main(["run", "--db", db, "--resume", "1", "--generations", "20",
                 "--mutation-rate", "0.05", "--quiet", "--export", out]) == 0  # fmt: skip
    shipped, rebuilt = load_run(SAMPLE), load_run(out)
    # Columns added since the sample was made: the GA has no strategy measures.
    added = [c for c in rebuilt.generations.columns if c not in shipped.generations.columns]
    assert added == list(STRATEGY_FIELDS)
    assert rebuilt.generations[added].isna().all().all()
    for table in ("generations", "population", "agents", "events"):
        a = getattr(shipped, table)
        b = getattr(rebuilt, table)[list(getattr(shipped, table).columns)]
        a = a.drop(columns=[c for c in CLOCK if c in a.columns])
        b = b.drop(columns=[c for c in CLOCK if c in b.columns])
        for column in APPROXIMATE.get(table, []):
            pd.testing.assert_series_equal(a.pop(column), b.pop(column), rtol=1e-10, atol=0)
        if table == "events":  # payloads compared as JSON, without wall-clock fields
            a["payload"], b["payload"] = a["payload"].map(_timeless), b["payload"].map(_timeless)
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=table)
