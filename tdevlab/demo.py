"""``tdevlab demo``: an embedded server, an engine and a terminal client, in one process.

The client speaks the WebSocket API like any other: it authenticates with a token, subscribes
to ``evolution`` and ``alerts``, starts the run with ``control``, prints each generation,
stops the run, then the run is exported as a dataset and its fitness curves saved as a PNG.
Only loopback networking is used.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from websockets.asyncio.client import connect

from tdevlab.engine.engine import Engine
from tdevlab.server.app import EvolutionServer

__all__ = ["run_demo", "save_fitness_plot"]


def run_demo(
    out_root: Path, *, generations: int = 40, seed: int = 7, stream: TextIO = sys.stdout
) -> tuple[Path, Path]:
    """Run the demo; return the dataset directory and the PNG path."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = out_root / f"demo-{stamp}"
    engine = Engine(seed=seed, store=out / "run.db", population_size=120)
    return asyncio.run(_demo(engine, out, generations, stream))


async def _demo(engine: Engine, out: Path, generations: int, stream: TextIO) -> tuple[Path, Path]:
    started = time.perf_counter()

    def say(line: str) -> None:
        print(line, file=stream, flush=True)

    async with EvolutionServer(engine, port=0, metrics_interval=0) as server:
        say(f"tdevlab demo: server at {server.url}, store {out / 'run.db'}")
        headers = {"Authorization": f"Bearer {server.token('demo', 'operator', ttl=600)}"}
        async with connect(server.url, additional_headers=headers) as ws:
            await ws.send(json.dumps({"type": "subscribe", "channels": ["evolution", "alerts"]}))
            await ws.send(json.dumps({"type": "control", "action": "start", "id": "start"}))
            async with asyncio.timeout(120):
                async for frame in ws:
                    message: dict[str, Any] = json.loads(frame)
                    kind = message.get("type")
                    if kind == "evolution_update":
                        d = message["data"]
                        say(
                            f"gen {d['generation']:3d}  best {d['best_fitness']:.4f}  "
                            f"avg {d['average_fitness']:.4f}  "
                            f"feasible {d['feasible_fraction']:4.0%}  "
                            f"best agent {d['best_agent_name']}"
                        )
                        if d["generation"] + 1 >= generations:
                            await ws.send(json.dumps({"type": "control", "action": "stop"}))
                            break
                    elif kind == "alert":
                        d = message["data"]
                        say(f"    [{message['severity']}] {d['title']}: {d['message']}")
                    elif kind == "error":
                        say(f"    error: {message['error']['message']}")
        # Leave the server only once the run has stopped (the stop above is asynchronous).
        await engine.wait_async(60)
        dataset = await asyncio.to_thread(engine.export, out / "dataset")
    png = save_fitness_plot(dataset, out / "fitness.png")
    say(f"done in {time.perf_counter() - started:.1f}s")
    say(f"dataset: {dataset}")
    say(f"plot: {png}")
    return dataset, png


def save_fitness_plot(dataset: Path, path: Path) -> Path:
    """Save best and average fitness per generation of a dataset's active lineage as a PNG."""
    from matplotlib.figure import Figure

    from tdevlab.store.export import load_run

    run = load_run(dataset)
    g = run.active_generations
    figure = Figure(figsize=(7, 4), dpi=100)  # a Figure object: no pyplot global state
    ax = figure.add_subplot()
    ax.plot(g.index, g["best_fitness"], label="best")
    ax.plot(g.index, g["average_fitness"], label="average")
    ax.fill_between(g.index, g["worst_fitness"], g["best_fitness"], alpha=0.15, label="range")
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness")
    ax.set_title(f"{run.metadata['run']['problem']} run {run.metadata['run']['run_id']}")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    return path
