"""The API document's own client examples, run unchanged against a real server.

Only the URL/URI and the token are supplied. The JavaScript class runs in Node with the
npm package ``ws`` standing in for the browser's WebSocket; the Python example runs as a
script.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import timeout
from tests.serving import make_server

HERE = Path(__file__).resolve().parent
CLIENTS = HERE.parent / "spec_clients"
JS_DEPS = HERE.parent / "js"
SPEC_URL = "wss://ws.t-developer.com/v1/evolution"

JS_HARNESS = """
const WebSocket = require('ws');           // the browser global the class expects
global.WebSocket = WebSocket;
{client}
// Hooks the document's class calls but leaves to the application.
class TestClient extends EvolutionWebSocket {{
  flushMessageQueue() {{
    while (this.messageQueue.length) this.send(this.messageQueue.shift());
  }}
  onEvolutionUpdate(data) {{
    console.log(JSON.stringify({{generation: data.generation, best: data.best_fitness}}));
    if (data.generation >= 3) process.exit(0);
  }}
  onAlert(data) {{ console.log(JSON.stringify({{alert: data.title}})); }}
  onMetrics(data) {{ console.log(JSON.stringify({{metrics: data.cpu_usage}})); }}
}}
new TestClient(process.env.TDEVLAB_TOKEN).connect();
setTimeout(() => {{ console.error('timed out'); process.exit(2); }}, 30000);
"""


def _node_ready() -> str | None:
    if shutil.which("node") is None:
        return "Node.js is not installed (apt-get install nodejs npm; `make test` then installs ws)"
    if not (JS_DEPS / "node_modules" / "ws").is_dir():
        return "npm package ws missing: run `npm install --prefix tests/js` (make test does)"
    return None


@pytest.mark.skipif(_node_ready() is not None, reason=str(_node_ready()))
def test_spec_javascript_client_receives_evolution_updates(tmp_path: Path) -> None:
    """The document's JavaScript class authenticates, subscribes and gets evolution updates."""
    server = make_server(autostart=True)
    url = server.start()
    try:
        source = (CLIENTS / "evolution_client.js").read_text()
        assert source.count(SPEC_URL) == 1
        script = tmp_path / "client.js"
        script.write_text(JS_HARNESS.format(client=source.replace(SPEC_URL, url)), encoding="utf-8")
        out = subprocess.run(
            ["node", str(script)],
            capture_output=True,
            text=True,
            timeout=timeout(60),
            env={
                **os.environ,
                "NODE_PATH": str(JS_DEPS / "node_modules"),
                "TDEVLAB_TOKEN": server.token("js", "viewer"),
            },  # fmt: skip
        )
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    generations = [line["generation"] for line in lines if "generation" in line]
    assert generations
    assert generations[-1] >= 3
    assert generations == sorted(generations)


def test_spec_python_client_runs_as_written(tmp_path: Path) -> None:
    """The document's Python client prints "Generation N: Fitness x" lines from the server."""
    server = make_server(autostart=True)
    url = server.start()
    try:
        source = (CLIENTS / "evolution_client.py").read_text()
        assert source.count(SPEC_URL) == 1
        assert source.count("'your-jwt-token'") == 1
        source = source.replace(SPEC_URL, url).replace(
            "'your-jwt-token'", repr(server.token("py", "viewer"))
        )
        script = tmp_path / "client.py"
        script.write_text(source, encoding="utf-8")
        proc = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        lines = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # the example listens forever: stop after a few lines
                lines.append(line.strip())
                if len(lines) >= 3:
                    break
        finally:
            proc.kill()
            proc.wait(timeout=timeout(10))
    finally:
        server.stop()
    assert len(lines) == 3, lines
    for line in lines:
        assert line.startswith("Generation "), line
        assert ": Fitness " in line
