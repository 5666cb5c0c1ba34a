"""The client in a real Jupyter kernel (nbclient): on the kernel's loop, nothing patched."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from tests.kernel import execute as execute_notebook

pytestmark = pytest.mark.notebook

CELLS = [
    """\
import asyncio, sys
import tdevlab
from tdevlab.server import EvolutionServer

asyncio_run = asyncio.run
server = EvolutionServer(tdevlab.Engine(seed=5, population_size=30), port=0, secret="s" * 40)
url = server.start()
client = await tdevlab.connect(url, token=server.token("ada", "operator"))
client.subscribe("evolution", "metrics", "alerts", "control", fitness_min=0.0)
await client.start(population_size=40, mutation_rate=0.1)
update = await client.wait_for("evolution", lambda m: m["data"]["generation"] >= 10)
print("generation", update["data"]["generation"], "state", client.run_state)
""",
    """\
frame = client.frames.evolution
print("rows", len(frame), "first", frame.index[0], "ordered", frame.index.is_monotonic_increasing)
print("timestamp dtype", frame["timestamp"].dtype)
frame.tail()
""",
    """\
sync = tdevlab.connect_sync(url, token=server.token("bo", "viewer"))
print("sync ping", sync.ping() > 0, "sync state", sync.connection_state)
sync.close()
""",
    """\
await client.stop()
await client.close()
server.stop()
print("patched", asyncio.run is not asyncio_run, "nest_asyncio", "nest_asyncio" in sys.modules)
""",
]


def test_client_runs_on_the_kernel_loop_without_patching(tmp_path: Path) -> None:
    """connect, subscribe, await updates and read frames in a kernel; nothing is patched."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    execute_notebook(notebook, tmp_path, cell_timeout=120)
    text = [
        "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        for cell in notebook.cells
    ]
    everything = "\n".join(text)
    assert "already running" not in everything
    first = re.search(r"generation (\d+) state running", text[0])
    assert first is not None
    assert int(first.group(1)) >= 10
    rows = re.search(r"rows (\d+) first 0 ordered True", text[1])
    assert rows is not None
    assert int(rows.group(1)) >= 11
    assert "timestamp dtype datetime64[ns, UTC]" in text[1]
    html = notebook.cells[1].outputs[-1]["data"]["text/html"]
    assert "best_fitness" in html
    assert "sync ping True sync state open" in text[2]
    assert "patched False nest_asyncio False" in text[3]
