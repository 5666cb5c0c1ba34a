"""Benchmark: the notebook client's Frames, from JSON text to pandas DataFrames.

What is measured
----------------
A stream of ``--messages`` evolution_update and as many metrics messages (alternating) is
generated first, untimed, as the server's JSON texts: the exact envelope the server sends
(``id``, ``type``, ``timestamp`` ISO 8601 with ``Z``, ``channel``, ``seq``, ``data``) with
realistic, varying numbers (full-precision floats, as the engine produces them; a
millisecond clock; the best agent changing every few dozen generations). Then, per repeat:

* ``decode only``: ``msgspec.json.decode(text)`` of every text, the floor of any client;
* ``decode + ingest``: decode each text and hand it to ``Frames.ingest`` as it arrives, into
  a ``Frames(max_rows=None)`` (every row kept); the end-to-end message rate is reported;
* ``decode + ingest, capped``: the same into ``Frames()`` (the default cap of 100,000 rows,
  so the oldest rows are trimmed in blocks);
* ``build``: the first read of ``frames.evolution`` and ``frames.metrics`` (N rows each)
  after the uncapped ingest, and a second read (the cache);
* ``naive``: the approach Frames replaces, on ``--naive-messages`` messages: decode, then
  ``pd.concat([table, pd.DataFrame([row])])`` per message; its per-message time only grows
  with the table, so the ratio to Frames at this small count is a lower bound.

Memory is measured in a separate, untimed pass with ``tracemalloc`` (which slows Python
down, so it is never on while timing): the traced bytes Frames still holds after the
uncapped ingest (its buffers: numbers packed in a ``bytearray`` per table, strings as codes
into a per-table dictionary, and anything else it keeps) and the peak while the two
DataFrames are built, compared with the DataFrames' ``memory_usage(deep=True)`` (index
included). tracemalloc sees every Python and NumPy allocation; pyarrow's string buffers are
outside it, but ``memory_usage`` counts them.

Repeats are medians of ``--repeats`` runs; ``gc.collect()`` runs before each timed phase.

Run it::

    python benchmarks/frames.py                       # 1,000,000 of each, 3 repeats
    python benchmarks/frames.py --markdown            # also a Markdown table
    python benchmarks/frames.py --messages 100000 --repeats 5 --json out.json
    python benchmarks/frames.py --quick               # a smoke run (~1 s)
"""

# ruff: noqa: E402  (the package's own imports come after the path is set)

from __future__ import annotations

import os
import sys

if not __package__:  # run by its path: import the `benchmarks` package from the repository
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [os.path.dirname(_here), *(p for p in sys.path if os.path.abspath(p) != _here)]

import argparse
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd

from benchmarks._tables import format_markdown, format_plain, versions, write_json
from tdevlab.client.frames import Frames

TARGET_RATE = 200_000  # messages/s, decode + ingest
TARGET_BUILD_S = 1.0  # per table of N rows
TARGET_MEMORY_RATIO = 2.0  # buffers / DataFrames

ROLES = ("NL_Input_Agent", "Sequence_Agent", "Planner_Agent", "Retriever_Agent")


def make_texts(n: int, seed: int) -> list[str]:
    """``n`` evolution_update and ``n`` metrics texts, alternating, as the server sends them."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2026-11-27T10:34:02.061", "ms")
    stamps = np.datetime_as_string(start + np.arange(2 * n).astype("timedelta64[ms]"), unit="ms")
    avg = rng.uniform(0.05, 0.6, n)
    best = avg + rng.uniform(0.0, 0.3, n)
    worst = rng.uniform(0.0, 1e-6, n)
    floats = rng.random((n, 8))
    counts = rng.integers(0, 30, (n, 2))
    cpu = np.round(rng.uniform(20, 180, n), 1)
    mem = np.round(rng.uniform(0.1, 2.0, n), 2)
    rps = np.round(rng.uniform(0, 50, n), 2)
    latency = np.round(rng.uniform(0.1, 3.0, n), 3)
    encode = msgspec.json.Encoder().encode
    texts: list[str] = []
    best_number = 26
    for i in range(n):
        if rng.random() < 0.04:
            best_number = int(rng.integers(1, 30 * (i + 1) + 1))
        f = floats[i]
        evolution = {
            "id": f"baa8df7b-{2 * i + 1}",
            "type": "evolution_update",
            "timestamp": stamps[2 * i] + "Z",
            "channel": "evolution",
            "seq": i + 1,
            "data": {
                "generation": i,
                "average_fitness": float(avg[i]),
                "best_fitness": float(best[i]),
                "improvement": float(f[0] - 0.5) * 0.01,
                "agents_evolved": 30,
                "mutations_applied": int(counts[i, 0]),
                "crossovers": int(counts[i, 1]),
                "run_id": None if i == 0 else 1,
                "branch": 0,
                "population_size": 30,
                "feasible_fraction": round(float(f[1]), 4),
                "diversity": float(f[2]),
                "worst_fitness": float(worst[i]),
                "best_agent_id": f"agent-{best_number}",
                "best_agent_name": f"{ROLES[best_number % len(ROLES)]}_v{best_number}",
                "best_memory_kb": 1.0 + 8.0 * float(f[3]),
                "best_speed_us": 0.5 + 2.0 * float(f[4]),
                "mutation_rate": 0.15,
                "crossover_rate": 0.7,
                "evaluation_ms": 0.1 + float(f[5]),
            },
        }
        metrics = {
            "id": f"baa8df7b-{2 * i + 2}",
            "type": "metrics",
            "timestamp": stamps[2 * i + 1] + "Z",
            "channel": "metrics",
            "seq": i + 1,
            "data": {
                "cpu_usage": float(cpu[i]),
                "memory_usage": float(mem[i]),
                "active_agents": 30,
                "requests_per_second": float(rps[i]),
                "average_latency_ms": float(latency[i]),
                "error_rate": 0.0 if f[6] < 0.9 else round(float(f[7]) * 0.01, 4),
                "connections": 1,
                "dropped_messages": 0,
            },
        }
        texts.append(encode(evolution).decode())
        texts.append(encode(metrics).decode())
    return texts


def timed(action: Callable[[], Any]) -> float:
    """Seconds one call of ``action`` takes (after a garbage collection)."""
    gc.collect()
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def decode_only(texts: Sequence[str]) -> None:
    """Decode every text, keeping nothing: the floor of any client."""
    decode = msgspec.json.decode
    for text in texts:
        decode(text)


def decode_and_ingest(texts: Sequence[str], frames: Frames) -> None:
    """Decode each text and hand it to ``frames`` as it arrives."""
    decode = msgspec.json.decode
    ingest = frames.ingest
    for text in texts:
        ingest(decode(text))


def read_both(frames: Frames) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the two tables (cached after the first build)."""
    return frames.evolution, frames.metrics


def naive(texts: Sequence[str]) -> dict[str, pd.DataFrame]:
    """The approach Frames replaces: one ``pd.concat`` of a one-row DataFrame per message."""
    tables: dict[str, pd.DataFrame] = {}
    for text in texts:
        message = msgspec.json.decode(text)
        row = {**message["data"], "seq": message["seq"]}
        row["timestamp"] = pd.Timestamp(message["timestamp"])
        kind = message["type"]
        one = pd.DataFrame([row])
        tables[kind] = one if kind not in tables else pd.concat([tables[kind], one])
    return tables


def frame_bytes(*frames: pd.DataFrame) -> int:
    """The DataFrames' ``memory_usage(deep=True)``, index included."""
    return int(sum(frame.memory_usage(deep=True, index=True).sum() for frame in frames))


def memory_pass(texts: Sequence[str]) -> dict[str, float]:
    """Traced bytes kept by Frames after ingest, peak while building, DataFrame bytes."""
    gc.collect()
    tracemalloc.start()
    frames = Frames(max_rows=None)
    decode_and_ingest(texts, frames)
    gc.collect()
    buffers, ingest_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    evolution, metrics = frames.evolution, frames.metrics
    after_build, build_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    frames_bytes = frame_bytes(evolution, metrics)
    return {
        "buffers_mb": buffers / 1e6,
        "ingest_peak_mb": ingest_peak / 1e6,
        "build_peak_mb": build_peak / 1e6,
        "after_build_mb": after_build / 1e6,
        "dataframes_mb": frames_bytes / 1e6,
        "ratio": buffers / frames_bytes,
    }


def run(n: int, repeats: int, naive_n: int, seed: int) -> dict[str, Any]:
    """Generate the stream, run every phase ``repeats`` times; return the raw numbers."""
    print(f"generating {2 * n:,} texts ...", file=sys.stderr, flush=True)
    texts = make_texts(n, seed)
    naive_texts = texts[:naive_n]
    warm = Frames()  # warm up lazy imports (pandas, pyarrow kernels) outside the clock
    decode_and_ingest(texts[:2000], warm)
    read_both(warm)
    naive(naive_texts[:20])
    raw: dict[str, list[float]] = {
        k: []
        for k in (
            "decode_s",
            "ingest_s",
            "ingest_capped_s",
            "build_evolution_s",
            "build_metrics_s",
            "cached_read_s",
            "naive_s",
        )
    }
    for repeat in range(repeats):
        raw["decode_s"].append(timed(partial(decode_only, texts)))
        frames = Frames(max_rows=None)
        raw["ingest_s"].append(timed(partial(decode_and_ingest, texts, frames)))
        raw["build_evolution_s"].append(timed(partial(getattr, frames, "evolution")))
        raw["build_metrics_s"].append(timed(partial(getattr, frames, "metrics")))
        raw["cached_read_s"].append(timed(partial(read_both, frames)))
        if len(frames.evolution) != n or len(frames.metrics) != n or frames.rejected:
            raise RuntimeError(f"unexpected tables: {frames!r} {frames.last_rejection}")
        del frames
        capped = Frames()
        raw["ingest_capped_s"].append(timed(partial(decode_and_ingest, texts, capped)))
        if len(capped.evolution) != min(n, 100_000):
            raise RuntimeError(f"unexpected capped table: {capped!r}")
        del capped
        raw["naive_s"].append(timed(partial(naive, naive_texts)))
        print(
            f"repeat {repeat + 1}/{repeats}: ingest {raw['ingest_s'][-1]:.2f} s, "
            f"build {raw['build_evolution_s'][-1]:.3f} + {raw['build_metrics_s'][-1]:.3f} s",
            file=sys.stderr,
            flush=True,
        )
    print("memory pass (tracemalloc) ...", file=sys.stderr, flush=True)
    memory = memory_pass(texts)
    return {"messages": 2 * n, "naive_messages": len(naive_texts), "raw": raw, "memory": memory}


def table_rows(result: dict[str, Any]) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """The table's cells (header first) and the target checks."""
    total, naive_n = result["messages"], result["naive_messages"]
    med = {k: statistics.median(v) for k, v in result["raw"].items()}
    lo = {k: min(v) for k, v in result["raw"].items()}
    hi = {k: max(v) for k, v in result["raw"].items()}
    mem = result["memory"]
    per_message = med["ingest_s"] / total
    naive_per_message = med["naive_s"] / naive_n
    half = total // 2

    def rate(key: str, count: int) -> list[str]:
        return [
            f"{count / med[key]:,.0f} msg/s",
            f"{1e6 * med[key] / count:.2f} µs/msg",
            f"{count / hi[key]:,.0f} .. {count / lo[key]:,.0f}",
        ]

    def seconds(key: str) -> list[str]:
        return [f"{med[key]:.3f} s", "", f"{lo[key]:.3f} .. {hi[key]:.3f}"]

    rows = [
        ["phase", "median", "per message / row", "range (min .. max)"],
        [f"decode only ({total:,} texts)", *rate("decode_s", total)],
        [f"decode + ingest ({total:,}, uncapped)", *rate("ingest_s", total)],
        [f"decode + ingest ({total:,}, max_rows=100,000)", *rate("ingest_capped_s", total)],
        [f"build evolution DataFrame ({half:,} rows)", *seconds("build_evolution_s")],
        [f"build metrics DataFrame ({half:,} rows)", *seconds("build_metrics_s")],
        ["read both again (cached)", f"{1e6 * med['cached_read_s']:.1f} µs", "", ""],
        [
            f"naive pd.concat per message ({naive_n:,})",
            f"{naive_n / med['naive_s']:,.0f} msg/s",
            f"{1e6 * naive_per_message:.1f} µs/msg",
            f"{naive_n / hi['naive_s']:,.0f} .. {naive_n / lo['naive_s']:,.0f}",
        ],
        ["naive / Frames, per message", f"{naive_per_message / per_message:,.0f}x", "", ""],
        [
            "naive extrapolated to the full stream (lower bound)",
            f"{naive_per_message * total:,.0f} s",
            "",
            "",
        ],
        [
            "buffers after ingest (tracemalloc)",
            f"{mem['buffers_mb']:.1f} MB",
            f"{1e6 * mem['buffers_mb'] / total:.0f} B/row",
            "",
        ],
        [
            "DataFrames memory_usage(deep=True)",
            f"{mem['dataframes_mb']:.1f} MB",
            f"{1e6 * mem['dataframes_mb'] / total:.0f} B/row",
            "",
        ],
        ["buffers / DataFrames", f"{mem['ratio']:.2f}x", "", ""],
        ["traced peak while building (Python + NumPy)", f"{mem['build_peak_mb']:.1f} MB", "", ""],
    ]
    checks = [
        {
            "name": "decode + ingest rate (msg/s)",
            "value": total / med["ingest_s"],
            "target": f">= {TARGET_RATE:,}",
            "ok": total / med["ingest_s"] >= TARGET_RATE,
        },
        {
            "name": "build evolution (s)",
            "value": med["build_evolution_s"],
            "target": f"< {TARGET_BUILD_S}",
            "ok": med["build_evolution_s"] < TARGET_BUILD_S,
        },
        {
            "name": "build metrics (s)",
            "value": med["build_metrics_s"],
            "target": f"< {TARGET_BUILD_S}",
            "ok": med["build_metrics_s"] < TARGET_BUILD_S,
        },
        {
            "name": "buffers / DataFrames memory",
            "value": mem["ratio"],
            "target": f"<= {TARGET_MEMORY_RATIO}",
            "ok": mem["ratio"] <= TARGET_MEMORY_RATIO,
        },
    ]
    return rows, checks


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--messages",
        type=int,
        default=1_000_000,
        help="evolution_update messages, and as many metrics messages",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each phase")
    parser.add_argument(
        "--naive-messages", type=int, default=2000, help="messages for the pd.concat baseline"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated stream")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the raw numbers here")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.repeats, args.naive_messages = 5000, 1, 200
    if args.messages < 1000 or args.repeats < 1 or args.naive_messages < 20:
        parser.error("--messages must be >= 1000, --repeats >= 1, --naive-messages >= 20")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the tables; return 0 once it ran (targets are reported)."""
    args = parse_args(argv)
    info = versions("numpy", "pandas", "msgspec", "tdevlab", "pyarrow")
    print(
        f"Frames: {args.messages:,} evolution_update + {args.messages:,} metrics messages "
        f"(JSON text -> msgspec.json.decode -> Frames.ingest), {args.repeats} repeats"
    )
    print("  ".join(f"{k}={v}" for k, v in info.items()))
    print()
    result = run(
        args.messages, args.repeats, min(args.naive_messages, 2 * args.messages), args.seed
    )
    rows, checks = table_rows(result)
    print(format_plain(rows))
    print()
    for check in checks:
        status = "PASS" if check["ok"] else "FAIL"
        print(f"{status:4}  {check['name']} = {check['value']:,.3f} (target {check['target']})")
    if args.markdown:
        print()
        print(format_markdown(rows))
        print()
        for check in checks:
            status = "PASS" if check["ok"] else "FAIL"
            value = f"{check['value']:,.3f}"
            print(f"- {check['name']} = {value} (target {check['target']}): **{status}**")
    if args.json is not None:
        payload = {"versions": info, **result, "checks": checks}
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
