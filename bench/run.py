"""``python -m bench``: run the contenders on each scenario, write the report and plot.

Each scenario gets a fresh private Redis and a fresh asyncio simulator; contenders run
one after another on it (Redis flushed, simulator reset in between), so they share the
machine, the simulator and the settings, but never run at the same time.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

from bench.contenders import Run, blocking_concurrency, run_asyncio, run_blocking, run_videoq
from bench.harness import Scenario, Stage
from bench.report import figures
from producers.local import RedisServer

CONTENDERS = ("videoq", "videoq-batch", "videoq-chain", "blocking", "asyncio")
DEFAULT_CONTENDERS = ("videoq", "videoq-chain", "blocking", "asyncio")
DEFAULT_SCENARIOS = ("100:5:1", "1000:5:1", "10000:120:10")
# the poll mode each videoq contender sets; None: the worker's default, not set by the bench
VIDEOQ_MODES: dict[str, str | None] = {
    "videoq": None,
    "videoq-batch": "batch",
    "videoq-chain": "chain",
}


def parse_scenario(text: str, cap: float, sim_rate: float = 0.0) -> Scenario:
    """``N:GEN:POLL`` (seconds), e.g. ``1000:5:1``."""
    n, gen, poll = text.split(":")
    return Scenario(int(n), float(gen), float(poll), cap, sim_rate)


def run_scenario(
    args: argparse.Namespace, scenario: Scenario, workdir: Path, redis_server: RedisServer
) -> list[dict[str, Any]]:
    stage = Stage(scenario, workdir, redis_server).start()
    rows: list[dict[str, Any]] = []
    budget = 0
    try:
        for name in args.contenders:
            started = time.time()
            run: Run
            if name in VIDEOQ_MODES:
                run = run_videoq(
                    stage,
                    scenario,
                    workdir,
                    mode=VIDEOQ_MODES[name],
                    workers=args.workers,
                    pool=args.pool,
                    concurrency=args.concurrency,
                    upstream_rate=args.upstream_rate,
                    name=name,
                )
                if name == "videoq" or not budget:  # the blocking one's memory budget
                    budget = max(s.memory for s in run.samples)
            elif name == "blocking":
                concurrency = args.blocking_concurrency or blocking_concurrency(
                    stage, scenario, workdir, budget or 200 * 2**20
                )
                # long enough for two rounds of generations, so its rate shows
                rounds = 2.2 * scenario.generation_time + 2 * scenario.poll_interval
                capped = replace(scenario, cap=max(args.blocking_cap, rounds))
                run = run_blocking(stage, capped, workdir, concurrency=concurrency)
                run.config["memory_budget_mb"] = round(budget / 2**20, 1) if budget else None
            else:
                run = run_asyncio(
                    stage,
                    scenario,
                    workdir,
                    connections=args.connections,
                    upstream_rate=args.upstream_rate,
                )
            row = figures(
                run, scenario, stage.sim_get("/_sim/generations"), stage.sim_get("/_sim/requests")
            )
            row["scenario"] = {
                "n": scenario.n,
                "generation_time_s": scenario.generation_time,
                "poll_interval_s": scenario.poll_interval,
                "cap_s": scenario.cap,
                "sim_rate_limit": scenario.sim_rate,
                "upstream_rate": args.upstream_rate,
            }
            rows.append(row)
            print(f"  {scenario.label} {name}: {time.time() - started:.0f}s", flush=True)
            stage.client().flushall()
            stage.sim_reset()
    finally:
        stage.stop()
    return rows


def _trio(d: dict[str, Any], keys: tuple[str, ...] = ("p50", "p99", "max")) -> str:
    return "/".join("-" if d.get(k) is None else f"{d[k]:g}" for k in keys)


def _sum(d: dict[str, Any], keys: tuple[str, ...] = ("worker", "redis", "simulator")) -> str:
    return "+".join("-" if d.get(k) is None else f"{d[k]:g}" for k in keys)


TABLE_HEAD = (
    "scenario",
    "contender",
    "done/N",
    "lost",
    "makespan",
    "peak fly",
    "intake s/rate",
    "lag p50/p99/max",
    "detect p50/p99/max",
    "late p99",
    "gap p50/p99/max",
    "429 (share)",
    "req/s all/ok",
    "req/job",
    "ms/poll w+r+s after creates",
    "ms/poll w+r+s run",
    "cores w+r+s",
    "PSS MB",
    "B/job w/r",
)


def table(rows: list[dict[str, Any]]) -> str:
    """The report's rows as a Markdown table. ``peak fly`` is the true peak in flight
    (from the simulator), with ``*`` if a generation finished before the last create;
    ``intake`` is seconds from the end of submission to the last create, and creates/s."""
    lines = [" | ".join(TABLE_HEAD), " | ".join("---" for _ in TABLE_HEAD)]
    for r in rows:
        s, mem = r["scenario"], r["memory_at_peak"]
        rate = f" rl{s['sim_rate_limit']:g}" if s.get("sim_rate_limit") else ""
        share = r["upstream_429_share"]
        cells = (
            f"{s['n']} @ {s['poll_interval_s']:g}s{rate}",
            r["contender"],
            f"{r['completed']}/{r['jobs']}",
            "capped" if r["capped"] else r["jobs_lost"],
            r["makespan_s"],
            f"{r['peak_in_flight']}{'' if r['all_created_before_first_done'] else '*'}",
            f"{r['creates_after_last_submit_s']}/{r['create_rate_per_s']}",
            _trio(r["completion_lag_s"]),
            _trio(r["detection_delay_s"]),
            r["poll_lateness_s"]["p99"],
            _trio(r["poll_gap_s"]),
            f"{r['upstream_429']} ({share:.1%})" if share is not None else "-",
            f"{r['request_rate_per_s']}/{r['answered_rate_per_s']}",
            r["upstream_requests_per_job"],
            _sum(r["cpu_ms_per_poll_after_creates"]),
            _sum(r["cpu_ms_per_poll"]),
            _sum(r["cores_used_avg"]),
            mem["worker_pss_mb"],
            "/".join(
                "-" if b is None else f"{b:.0f}"
                for b in (
                    mem["worker_bytes_per_in_flight_job"],
                    mem["redis_bytes_per_in_flight_job"],
                )
            ),
        )
        lines.append(" | ".join("-" if x is None else str(x) for x in cells))
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = sorted({r["scenario"]["n"] for r in rows})
    fig, axes = plt.subplots(2, len(scenarios), figsize=(5 * len(scenarios), 7), squeeze=False)
    for col, n in enumerate(scenarios):
        for r in (r for r in rows if r["scenario"]["n"] == n):
            flight = r["series"]["in_flight"]
            axes[0][col].plot([t for t, _ in flight], [k for _, k in flight], label=r["contender"])
            lag = r["series"]["lag"]
            axes[1][col].scatter(
                [t for t, _ in lag], [v for _, v in lag], s=2, label=r["contender"]
            )
        s = next(r["scenario"] for r in rows if r["scenario"]["n"] == n)
        axes[0][col].set_title(
            f"N={n}, generation {s['generation_time_s']:g}s, poll {s['poll_interval_s']:g}s"
        )
        axes[0][col].set_ylabel("generations in flight upstream")
        axes[1][col].set_ylabel("completion lag (s)")
        axes[1][col].set_xlabel("seconds since submit")
        axes[0][col].legend(fontsize=8)
        axes[1][col].legend(fontsize=8, markerscale=4)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenario",
        action="append",
        metavar="N:GEN:POLL",
        help=f"jobs, generation seconds, poll seconds (default: {' '.join(DEFAULT_SCENARIOS)})",
    )
    parser.add_argument(
        "--contenders",
        default=",".join(DEFAULT_CONTENDERS),
        help=f"comma-separated subset of {','.join(CONTENDERS)} (default: %(default)s); "
        "videoq runs the worker's default poll mode, the others set it",
    )
    parser.add_argument(
        "--sim-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="the simulator answers 429 over R API requests in any 1 s window (0: no limit)",
    )
    parser.add_argument(
        "--upstream-rate",
        type=float,
        default=None,
        metavar="R",
        help="videoq contenders get VIDEOQ_UPSTREAM_RATE=R, the asyncio one spaces its "
        "calls 1/R s apart (default: neither is set)",
    )
    parser.add_argument(
        "--cap",
        type=float,
        default=300.0,
        help="seconds a contender may take after submitting before it is cut off",
    )
    parser.add_argument(
        "--blocking-cap",
        type=float,
        default=60.0,
        help="seconds the blocking contender runs at least (it cannot finish big runs; "
        "its rate is what counts; it runs for two generations' time if that is longer)",
    )
    parser.add_argument("--workers", type=int, default=2, help="videoq worker processes")
    # The plain ``videoq worker`` on this 2-core machine: prefork, one process per core.
    parser.add_argument("--pool", default="prefork", help="videoq worker pool (default prefork)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=2,
        help="videoq pool size (default 2, Celery's default here)",
    )
    parser.add_argument(
        "--blocking-concurrency",
        type=int,
        default=0,
        help="blocking worker's pool size (default: fits videoq's memory)",
    )
    parser.add_argument("--connections", type=int, default=100, help="asyncio poller's limit")
    parser.add_argument(
        "--out", default="bench/results", help="directory for report.json, plot.png"
    )
    args = parser.parse_args(argv)
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = set(args.contenders) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    scenarios = [
        parse_scenario(s, args.cap, args.sim_rate) for s in (args.scenario or DEFAULT_SCENARIOS)
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    redis_server = RedisServer().start()
    try:
        for scenario in scenarios:
            print(f"scenario {scenario.label}", flush=True)
            rows.extend(run_scenario(args, scenario, logs, redis_server))
    finally:
        redis_server.cleanup()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    report = {
        "command": " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)]),
        "commit": commit,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": psutil.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30),
            "python": platform.python_version(),
        },
        "rows": rows,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    plot(rows, out / "plot.png")
    print(table(rows))
    print(f"report: {out / 'report.json'}  plot: {out / 'plot.png'}")
    lost = [r for r in rows if r["jobs_lost"]]
    return 1 if lost else 0
