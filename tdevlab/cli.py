"""The ``tdevlab`` command: run, resume, roll back and export evolution runs, and the demo.

::

    tdevlab run --generations 50 --population-size 100 --mutation-rate 0.15 --seed 7 \\
        --db runs.db --export data/my-run
    tdevlab run --db runs.db --resume 1 --generations 20
    tdevlab run --dask-scheduler tcp://scheduler:8786 --generations 50    # or --workers 2
    tdevlab rollback --db runs.db --run 1 --generation 30
    tdevlab runs --db runs.db
    tdevlab compare --db runs.db --runs 1,2,3 --out build/compare
    tdevlab export --db runs.db --run 1 --out data/my-run [--format csv]
    tdevlab demo

Errors from tdevlab print as one line on stderr (``tdevlab: error: ...``) with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tdevlab.engine  # noqa: F401  (registers the built-in strategies and problems)
from tdevlab.engine.distributed import executor_from_options
from tdevlab.engine.engine import Engine
from tdevlab.engine.events import GenerationResult
from tdevlab.engine.problems import make_problem, problem_names
from tdevlab.engine.strategy import Strategy, is_strategy_name, make_strategy, strategy_names
from tdevlab.exceptions import TdevlabError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tdevlab", description="Evolve agents and watch the evolution."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run (or resume) an evolution, then print a summary")
    run.add_argument("--generations", type=int, default=50, help="generations to produce (50)")
    run.add_argument("--population-size", type=int, help="agents per generation (100)")
    run.add_argument("--mutation-rate", type=float, help="per-gene mutation probability (0.15)")
    run.add_argument("--crossover-rate", type=float, help="crossover probability (0.7)")
    run.add_argument("--tournament-size", type=int, help="tournament size (3)")
    run.add_argument("--elite-count", type=int, help="elites kept per generation (2)")
    run.add_argument("--crossover", choices=["uniform", "blend"], help="crossover operator")
    run.add_argument("--memory-limit", type=float, help="memory_kb limit (6.5)")
    run.add_argument("--speed-limit", type=float, help="speed_us limit (3.0)")
    run.add_argument("--seed", type=int, help="random seed (drawn and printed when omitted)")
    run.add_argument(
        "--problem", default="agent_design", choices=problem_names(), help="problem to optimize"
    )
    run.add_argument("--dims", type=int, help="dimensions of sphere/rastrigin/ackley (10)")
    _strategy_arguments(run)
    run.add_argument("--db", type=Path, help="SQLite run store (default: keep the run in memory)")
    run.add_argument("--resume", type=int, metavar="RUN_ID", help="continue this run of --db")
    run.add_argument("--export", type=Path, metavar="DIR", help="write the run dataset here")
    run.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS",
        help="evaluate on a running Dask cluster (tcp://host:8786; needs tdevlab[dask])",
    )
    run.add_argument("--workers", type=int, metavar="N", help="evaluate in N local processes")

    runs = sub.add_parser("runs", help="list the runs of a store")
    runs.add_argument("--db", type=Path, required=True)

    compare = sub.add_parser(
        "compare", help="compare runs of a store: compare.png, compare.csv and the rank table"
    )
    compare.add_argument("--db", type=Path, required=True)
    compare.add_argument("--runs", metavar="IDS", help="comma-separated run ids (default: all)")
    compare.add_argument("--out", type=Path, required=True, metavar="DIR")

    export = sub.add_parser("export", help="write a stored run as a dataset directory")
    export.add_argument("--db", type=Path, required=True)
    export.add_argument("--run", type=int, required=True, metavar="RUN_ID")
    export.add_argument("--out", type=Path, required=True, metavar="DIR")
    export.add_argument("--format", choices=["parquet", "csv"], default="parquet")

    rollback = sub.add_parser("rollback", help="roll a stored run back to a generation")
    rollback.add_argument("--db", type=Path, required=True)
    rollback.add_argument("--run", type=int, required=True, metavar="RUN_ID")
    rollback.add_argument("--generation", type=int, required=True)

    serve = sub.add_parser("serve", help="serve the /v1/evolution WebSocket API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765, help="8765; 0 picks a free port")
    serve.add_argument("--db", type=Path, help="SQLite run store (its latest run is resumed)")
    serve.add_argument("--secret", help="HS256 secret (default $TDEVLAB_SECRET, else random)")
    serve.add_argument(
        "--problem", default="agent_design", choices=problem_names(), help="problem to optimize"
    )
    serve.add_argument("--dims", type=int, help="dimensions of sphere/rastrigin/ackley (10)")
    _strategy_arguments(serve)
    serve.add_argument("--seed", type=int, help="random seed of a new run")
    serve.add_argument("--population-size", type=int, help="agents per generation (100)")
    serve.add_argument("--mutation-rate", type=float, help="per-gene mutation probability")
    serve.add_argument("--autostart", action="store_true", help="start evolving at once")
    serve.add_argument("--certfile", type=Path, help="TLS certificate (PEM): serve wss://")
    serve.add_argument("--keyfile", type=Path, help="TLS private key (PEM)")
    serve.add_argument("--metrics-interval", type=float, default=1.0, help="seconds (1.0)")
    serve.add_argument(
        "--interval",
        type=float,
        default=0.0,
        help="least seconds between generations, to watch a fast problem live (0)",
    )
    serve.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS",
        help="evaluate on a running Dask cluster (tcp://host:8786; needs tdevlab[dask])",
    )
    serve.add_argument("--workers", type=int, metavar="N", help="evaluate in N local processes")

    token = sub.add_parser("token", help="print a JWT for the server's secret")
    token.add_argument("--secret", help="HS256 secret (default $TDEVLAB_SECRET)")
    token.add_argument("--user", required=True)
    token.add_argument("--role", required=True, choices=["viewer", "operator"])
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds (3600)")

    demo = sub.add_parser("demo", help="a short live run with progress, exported under data/")
    demo.add_argument("--generations", type=int, default=40)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument(
        "--out", type=Path, default=Path("data/runs"), help="where the demo run goes (data/runs)"
    )
    return parser


_PARAMETER_FLAGS = {
    "population_size": "population_size",
    "mutation_rate": "mutation_rate",
    "crossover_rate": "crossover_rate",
    "tournament_size": "tournament_size",
    "elite_count": "elite_count",
    "crossover": "crossover",
    "memory_limit": "memory_limit_kb",
    "speed_limit": "speed_limit_us",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        handler = {
            "run": _run,
            "runs": _runs,
            "compare": _compare,
            "export": _export,
            "rollback": _rollback,
            "demo": _demo,
            "serve": _serve,
            "token": _token,
        }[args.command]
        return handler(args)
    except TdevlabError as exc:
        print(f"tdevlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tdevlab: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    executor, close_executor = executor_from_options(args.dask_scheduler, args.workers)
    try:
        return _run_engine(args, executor)
    finally:
        close_executor()


def _run_engine(args: argparse.Namespace, executor: Any) -> int:
    parameters = {
        name: getattr(args, flag)
        for flag, name in _PARAMETER_FLAGS.items()
        if getattr(args, flag) is not None
    }
    if args.resume is not None:
        if args.db is None:
            raise _usage("--resume needs --db")
        engine = Engine.open(args.db, args.resume, executor=executor)
        if parameters:
            engine.set_parameters(**parameters)
    else:
        config: dict[str, Any] = {} if args.dims is None else {"dims": args.dims}
        engine = Engine(
            make_problem(args.problem, **config),
            strategy=_strategy(args),
            seed=args.seed,
            store=args.db,
            executor=executor,
            **parameters,
        )
    with engine:
        last = _progress(engine, args.generations, quiet=args.quiet)
        _summary(engine, last)
        if args.export is not None:
            out = engine.export(args.export, format=args.format)
            print(f"dataset: {out}")
    return 0


def _progress(engine: Engine, generations: int, *, quiet: bool) -> GenerationResult | None:
    from tqdm import tqdm

    last = None
    with tqdm(total=generations, disable=quiet, unit="gen", file=sys.stderr) as bar:
        for result in engine.run(generations=generations):
            last = result
            bar.set_postfix(best=f"{result.best_fitness:.4f}", avg=f"{result.average_fitness:.4f}")
            bar.update()
            for alert in result.alerts:
                bar.write(f"  [{alert.severity}] {alert.title}: {alert.message}", file=sys.stderr)
    return last


def _summary(engine: Engine, last: GenerationResult | None) -> None:
    print(
        f"run {engine.run_id} ({engine.problem.name}, seed {engine.seed}, branch {engine.branch})"
    )
    if last is None:
        print("no generation produced")
        return
    e = last.evolution
    print(
        f"generation {e.generation}: best {e.best_fitness:.4f} ({e.best_agent_name}, "
        f"{e.best_memory_kb:.2f} KB, {e.best_speed_us:.2f} us), average {e.average_fitness:.4f}, "
        f"feasible {e.feasible_fraction:.0%}"
    )


def _runs(args: argparse.Namespace) -> int:
    from tdevlab.comparison import describe_runs
    from tdevlab.store.sqlite import SQLiteStore

    _require_file(args.db)
    with SQLiteStore(args.db) as store:
        infos = {info.run_id: info for info in store.runs()}
        table = describe_runs(store)
    print(
        f"{'run':>4}  {'strategy':<16} {'problem':<20} {'seed':>20}  {'generations':>11}  "
        f"{'last':>5}  {'branch':>6}  {'best':>10}  status   created"
    )
    for run_id, row in table.iterrows():
        info = infos[int(run_id)]
        created = datetime.fromtimestamp(info.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        last = "-" if info.last_generation is None else str(info.last_generation)
        print(
            f"{info.run_id:>4}  {row['strategy']:<16} {row['problem']:<20} {info.seed:>20}  "
            f"{row['generations']:>11}  {last:>5}  {info.active_branch:>6}  "
            f"{row['best_fitness']:>10.4f}  {info.status:<8} {created}"
        )
    return 0


def _compare(args: argparse.Namespace) -> int:
    from tdevlab.comparison import compare

    _require_file(args.db)
    run_ids = None
    if args.runs is not None:
        try:
            run_ids = [int(part) for part in args.runs.split(",") if part.strip()]
        except ValueError as exc:
            raise _usage(f"--runs takes comma-separated run ids, got {args.runs!r}") from exc
    result = compare(args.db, run_ids=run_ids)
    png, csv = result.save(args.out)
    final = result.final[["strategy", "seed", "problem", "evaluations", "best_so_far", "rank"]]
    print(final.to_string())
    print()
    print(result.ranks.to_string(float_format=lambda v: f"{v:.2f}"))
    print(f"plot: {png}")
    print(f"table: {csv}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from tdevlab.store.export import export_run

    _require_file(args.db)
    out = export_run(args.db, args.run, args.out, format=args.format)
    print(f"dataset: {out}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    _require_file(args.db)
    with Engine.open(args.db, args.run) as engine:
        before = engine.generation
        engine.rollback(args.generation)
        print(
            f"run {args.run}: rolled back from generation {before} to {engine.generation} "
            f"(now on branch {engine.branch})"
        )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from tdevlab.demo import run_demo

    run_demo(args.out, generations=args.generations, seed=args.seed)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import os
    import secrets
    import ssl

    from tdevlab.server.app import EvolutionServer
    from tdevlab.server.run import serve_until_signalled

    secret = args.secret or os.environ.get("TDEVLAB_SECRET")
    generated = secret is None
    if secret is None:
        secret = secrets.token_urlsafe(32)
    context = None
    if args.certfile is not None or args.keyfile is not None:
        if args.certfile is None or args.keyfile is None:
            raise _usage("TLS needs both --certfile and --keyfile")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.certfile, args.keyfile)
    parameters = {
        name: value
        for name, value in (
            ("population_size", args.population_size),
            ("mutation_rate", args.mutation_rate),
        )
        if value is not None
    }
    executor, close_executor = executor_from_options(args.dask_scheduler, args.workers)
    try:
        engine = _serving_engine(args, parameters, executor)
    except BaseException:
        close_executor()
        raise
    server = EvolutionServer(
        engine,
        host=args.host,
        port=args.port,
        secret=secret,
        ssl=context,
        autostart=args.autostart,
        metrics_interval=args.metrics_interval,
        generation_interval=args.interval,
    )
    token = server.token("operator", "operator", ttl=24 * 3600) if generated else None
    try:
        asyncio.run(serve_until_signalled(server, token=token))
    finally:
        close_executor()
    return 0


def _serving_engine(
    args: argparse.Namespace, parameters: dict[str, Any], executor: Any = None
) -> Engine:
    """A new engine, or the latest run of --db (its history is served, start continues it)."""
    if args.db is not None and args.db.is_file():
        from tdevlab.store.sqlite import SQLiteStore

        with SQLiteStore(args.db) as store:
            runs = store.runs()
        if runs:
            engine = Engine.open(args.db, runs[-1].run_id, executor=executor)
            if parameters:
                engine.set_parameters(**parameters)
            print(f"tdevlab: resuming run {engine.run_id} at generation {engine.generation}")
            return engine
    config: dict[str, Any] = {} if args.dims is None else {"dims": args.dims}
    return Engine(
        make_problem(args.problem, **config),
        strategy=_strategy(args),
        seed=args.seed,
        store=args.db,
        executor=executor,
        **parameters,
    )


def _strategy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strategy",
        default="ga",
        type=_strategy_name,
        metavar="NAME",
        help=f"what makes each generation: {', '.join(strategy_names())} (default ga: the "
        "genetic algorithm; cmaes, optuna-* and nevergrad:* need their extra installed)",
    )
    parser.add_argument(
        "--strategy-config",
        metavar="JSON",
        help='the strategy\'s settings, e.g. \'{"objectives": ["max:fitness", "min:memory_kb"]}\'',
    )


def _strategy_name(text: str) -> str:
    # argparse's choices cannot hold the "nevergrad:<optimizer>" family.
    if not is_strategy_name(text):
        raise argparse.ArgumentTypeError(
            f"unknown strategy {text!r} (choose from {', '.join(strategy_names())})"
        )
    return text


def _strategy(args: argparse.Namespace) -> Strategy:
    config: Any = {}
    if args.strategy_config:
        try:
            config = json.loads(args.strategy_config)
        except json.JSONDecodeError as exc:
            raise _usage(f"--strategy-config is not JSON: {exc}") from exc
        if not isinstance(config, dict):
            raise _usage("--strategy-config must be a JSON object")
    return make_strategy(args.strategy, config)


def _token(args: argparse.Namespace) -> int:
    import os

    from tdevlab.protocol.auth import issue_token

    secret = args.secret or os.environ.get("TDEVLAB_SECRET")
    if not secret:
        raise _usage("no secret: pass --secret or set TDEVLAB_SECRET")
    print(issue_token(secret, args.user, args.role, now=time.time(), ttl=args.ttl))
    return 0


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise _usage(f"no run store at {path}")


def _usage(message: str) -> TdevlabError:
    from tdevlab.exceptions import InvalidParameters

    return InvalidParameters(message)


if __name__ == "__main__":
    raise SystemExit(main())
