"""The `tdevlab` command, run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tdevlab import load_run
from tests.conftest import timeout


def tdevlab(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "tdevlab.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout(120),
    )


@pytest.mark.slow
def test_run_rollback_resume_runs_export(tmp_path: Path) -> None:
    """run -> rollback -> run --resume -> runs -> export, as the README shows."""
    db = tmp_path / "runs.db"
    out = tdevlab(
        "run",
        "--generations",
        "12",
        "--population-size",
        "30",
        "--mutation-rate",
        "0.2",
        "--seed",
        "4",
        "--db",
        db,
        "--export",
        tmp_path / "ds",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "run 1 (agent_design, seed 4, branch 0)" in out.stdout
    assert "generation 11: best" in out.stdout
    # The progress bar (tqdm, on stderr) ends full: all 12 of 12 generations.
    final_bar = out.stderr.splitlines()[-1]  # text mode turned tqdm's "\r" into newlines
    assert final_bar.startswith("100%|"), out.stderr
    assert "| 12/12 [" in final_bar
    first = load_run(tmp_path / "ds")
    assert len(first.generations) == 12

    out = tdevlab("rollback", "--db", db, "--run", "1", "--generation", "6", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "rolled back from generation 11 to 6 (now on branch 1)" in out.stdout

    out = tdevlab("run", "--db", db, "--resume", "1", "--generations", "3", "--quiet", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "generation 9: best" in out.stdout

    out = tdevlab("runs", "--db", db, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "agent_design" in out.stdout
    assert " 9 " in out.stdout

    out = tdevlab(
        "export",
        "--db",
        db,
        "--run",
        "1",
        "--out",
        tmp_path / "csv",
        "--format",
        "csv",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    ds = load_run(tmp_path / "csv")
    assert sorted(set(ds.generations["branch"])) == [0, 1]
    assert (tmp_path / "csv" / "generations.csv").is_file()


@pytest.mark.slow
def test_run_exports_csv_dataset(tmp_path: Path) -> None:
    """`run --export DIR --format csv` writes CSV tables that load_run reads back."""
    out = tdevlab(
        "run",
        "--generations",
        "7",
        "--population-size",
        "16",
        "--seed",
        "2",
        "--quiet",
        "--export",
        "ds",
        "--format",
        "csv",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "dataset: ds\n" in out.stdout
    assert out.stderr == ""  # --quiet: no progress bar
    files = {p.name for p in (tmp_path / "ds").iterdir()}
    assert {"generations.csv", "agents.csv", "events.csv", "metadata.json"} <= files
    assert not any(name.endswith(".parquet") for name in files)
    ds = load_run(tmp_path / "ds")
    assert list(ds.generations["generation"]) == list(range(7))
    assert ds.metadata["run"]["seed"] == "2"
    assert ds.metadata["config"]["parameters"]["population_size"] == 16


def test_benchmark_problem_with_dims(tmp_path: Path) -> None:
    """--problem rastrigin --dims 4 builds that problem."""
    out = tdevlab(
        "run",
        "--problem",
        "rastrigin",
        "--dims",
        "4",
        "--generations",
        "5",
        "--quiet",
        "--seed",
        "1",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "rastrigin" in out.stdout


@pytest.mark.slow
def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    """Bad input prints `tdevlab: error: ...` naming the problem, exit status 2."""
    cases = [
        (("run", "--population-size", "1", "--quiet"), "population_size=1 must be within [2, "),
        (("run", "--mutation-rate", "2", "--quiet"), "mutation_rate=2.0 must be within [0, 1]"),
        (("runs", "--db", tmp_path / "missing.db"), "no run store at"),
        (("run", "--resume", "1", "--quiet"), "--resume needs --db"),
    ]
    for args, message in cases:
        out = tdevlab(*args, cwd=tmp_path)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_default_demo_streams_progress_and_saves_dataset_and_plot(tmp_path: Path) -> None:
    """Plain `tdevlab demo`: 40 live generations, then a loadable dataset and a PNG.

    The timeout bounds the run (the README says the demo takes seconds); the test does not
    time it otherwise.
    """
    import re

    # The demo writes under data/runs relative to its working directory: tmp_path here.
    out = subprocess.run(
        [sys.executable, "-m", "tdevlab.cli", "demo"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=timeout(90),
    )
    assert out.returncode == 0, out.stderr
    assert "server at ws://127.0.0.1:" in out.stdout
    progress = re.findall(
        r"^gen +(\d+)  best (0\.\d{4})  avg (0\.\d{4})  feasible +(\d+)%  "
        r"best agent \w+_Agent_v\d+$",
        out.stdout,
        flags=re.MULTILINE,
    )
    assert [int(g) for g, *_ in progress] == list(range(40))  # the default --generations
    for _, best, average, feasible in progress:
        assert float(best) >= float(average)
        assert 0 <= int(feasible) <= 100

    [dataset_line] = [line for line in out.stdout.splitlines() if line.startswith("dataset: ")]
    [plot_line] = [line for line in out.stdout.splitlines() if line.startswith("plot: ")]
    dataset = tmp_path / dataset_line.removeprefix("dataset: ")
    png = tmp_path / plot_line.removeprefix("plot: ")
    assert dataset.parent.parent == tmp_path / "data" / "runs"
    assert dataset.is_dir()
    generations = load_run(dataset).active_generations
    assert len(generations) >= 40  # the stop may land a generation or two after the 40th
    printed = {int(g): float(b) for g, b, *_ in progress}
    for g, best in printed.items():
        assert round(float(generations.loc[g, "best_fitness"]), 4) == best
    assert png == dataset.parent / "fitness.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_token_prints_a_verifiable_jwt(tmp_path: Path) -> None:
    """`tdevlab token` prints the JWT alone; it verifies with the same secret."""
    import time

    from tdevlab.protocol.auth import TokenVerifier

    secret = "cli-secret-long-enough-for-the-hs256-check"
    out = tdevlab("token", "--secret", secret, "--user", "ada", "--role", "viewer", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert out.stdout == token + "\n"
    claims = TokenVerifier(secret).verify(token, time.time())
    assert (claims.user, claims.role) == ("ada", "viewer")
    out = tdevlab("token", "--secret", "short", "--user", "a", "--role", "viewer", cwd=tmp_path)
    assert out.returncode == 2
    assert "at least 32" in out.stderr


def test_token_ttl_sets_expiry(tmp_path: Path) -> None:
    """`tdevlab token --ttl 5` signs a token with exp - iat == 5, iat now; TDEVLAB_SECRET works."""
    import time

    import jwt

    secret = "cli-ttl-secret-long-enough-for-the-hs256-check"
    before = time.time()
    out = subprocess.run(
        [sys.executable, "-m", "tdevlab.cli", "token", "--user", "ada", "--role", "operator"]
        + ["--ttl", "5"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=timeout(60),
        env={**os.environ, "TDEVLAB_SECRET": secret},
    )
    after = time.time()
    assert out.returncode == 0, out.stderr
    claims = jwt.decode(out.stdout.strip(), secret, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 5
    assert int(before) <= claims["iat"] <= after
    assert (claims["sub"], claims["role"]) == ("ada", "operator")


def _serve(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `tdevlab serve ARGS` in a subprocess that prints to a pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "tdevlab.cli", "serve", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_serve_prints_url_and_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    """`tdevlab serve --port 0` prints the real URL and a token; SIGTERM shuts it down."""
    import asyncio
    import json
    import signal

    from websockets.asyncio.client import connect

    proc = _serve(
        tmp_path,
        "--port",
        "0",
        "--db",
        "runs.db",
        "--population-size",
        "20",
        "--autostart",
        env={k: v for k, v in os.environ.items() if k != "TDEVLAB_SECRET"},
    )
    try:
        assert proc.stdout is not None
        token = proc.stdout.readline().split("operator token: ")[1].strip()
        url = proc.stdout.readline().split("serving ")[1].strip()
        assert url.startswith("ws://127.0.0.1:")
        assert not url.startswith("ws://127.0.0.1:0/")

        async def watch() -> int:
            async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
                await ws.send(json.dumps({"type": "subscribe", "channels": ["evolution"]}))
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), timeout(10)))
                    if message["type"] == "evolution_update" and message["data"]["generation"] >= 2:
                        return int(message["data"]["generation"])

        assert asyncio.run(watch()) >= 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=timeout(30)) == 0
        assert "shutting down" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    from tdevlab import SQLiteStore

    with SQLiteStore(tmp_path / "runs.db") as store:
        assert store.run_info(1).status == "stopped"


def test_serve_uses_env_secret_and_problem_and_stops_on_sigint(tmp_path: Path) -> None:
    """With TDEVLAB_SECRET set, `serve --problem sphere` takes its tokens, serves sphere agents,
    and Ctrl-C (SIGINT) shuts it down with exit status 0."""
    import asyncio
    import json
    import signal
    import time

    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    from tdevlab import SQLiteStore
    from tdevlab.protocol.auth import issue_token

    secret = "serve-env-secret-long-enough-for-the-hs256"
    proc = _serve(
        tmp_path,
        "--port",
        "0",
        "--db",
        "runs.db",
        "--problem",
        "sphere",
        "--dims",
        "3",
        "--population-size",
        "12",
        "--autostart",
        env={**os.environ, "TDEVLAB_SECRET": secret},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "operator token" not in first  # a secret was given: none is generated
        url = first.split("serving ")[1].strip()
        token = issue_token(secret, "ada", "viewer", now=time.time())
        forged = issue_token("another-secret-long-enough-for-hs256-xx", "eve", "viewer",
                             now=time.time())  # fmt: skip

        async def watch() -> tuple[int, dict[str, object]]:
            with_forged = {"Authorization": f"Bearer {forged}"}
            try:
                async with connect(url, additional_headers=with_forged):
                    raise AssertionError("a token of another secret was accepted")
            except InvalidStatus as exc:
                status = exc.response.status_code
            headers = {"Authorization": f"Bearer {token}"}
            async with connect(url, additional_headers=headers) as ws:
                await ws.send(json.dumps({"type": "subscribe", "channels": ["agents"],
                                          "since": {"agents": 0}}))  # fmt: skip
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), timeout(10)))
                    if message["type"] == "agent_update":
                        return status, message["data"]

        status, agent = asyncio.run(watch())
        assert status == 401
        assert set(agent["genes"]) == {"x0", "x1", "x2"}  # sphere's genes, 3 dims
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=timeout(30)) == 0
        assert "shutting down" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    with SQLiteStore(tmp_path / "runs.db") as store:
        info = store.run_info(1)
    assert info.problem == "sphere"
    assert info.config["problem_config"] == {"dims": 3}
    assert info.status == "stopped"


def test_serve_evaluates_on_worker_processes(tmp_path: Path) -> None:
    """`tdevlab serve --workers 2` evaluates in a process pool and streams generations."""
    import asyncio
    import json
    import signal

    from websockets.asyncio.client import connect

    secret = "serve-workers-secret-long-enough-for-hs256"
    proc = _serve(
        tmp_path,
        "--port",
        "0",
        "--secret",
        secret,
        "--workers",
        "2",
        "--population-size",
        "20",
        "--autostart",
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split("serving ")[1].strip()
        from tdevlab.protocol.auth import issue_token

        token = issue_token(secret, "ada", "viewer", now=__import__("time").time())

        async def watch() -> int:
            async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
                await ws.send(json.dumps({"type": "subscribe", "channel": "evolution",
                                          "since": {"evolution": 0}}))  # fmt: skip
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), timeout(30)))
                    if message["type"] == "evolution_update" and message["data"]["generation"] >= 3:
                        return int(message["data"]["generation"])

        assert asyncio.run(watch()) >= 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=timeout(30)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_with_certfile_and_keyfile_speaks_wss(tmp_path: Path) -> None:
    """`tdevlab serve --certfile --keyfile` serves wss:// with the given certificate."""
    import asyncio
    import json
    import signal
    import ssl

    import trustme
    from websockets.asyncio.client import connect

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    secret = "serve-tls-secret-long-enough-for-the-hs256"
    proc = _serve(
        tmp_path,
        "--port",
        "0",
        "--secret",
        secret,
        "--certfile",
        "cert.pem",
        "--keyfile",
        "key.pem",
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split("serving ")[1].strip()
        assert url.startswith("wss://127.0.0.1:")
        from tdevlab.protocol.auth import issue_token

        token = issue_token(secret, "ada", "viewer", now=__import__("time").time())

        async def ping() -> str:
            async with connect(
                url, ssl=context, additional_headers={"Authorization": f"Bearer {token}"}
            ) as ws:
                await ws.send(json.dumps({"type": "ping", "timestamp": 5}))
                return str(json.loads(await asyncio.wait_for(ws.recv(), timeout(10)))["type"])

        assert asyncio.run(ping()) == "pong"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=timeout(30)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
