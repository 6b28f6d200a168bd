"""``python -m bench.profile``: where a poll's CPU goes, by py-spy, in either poll mode.

Runs one videoq worker on the asyncio simulator with long generations, waits until
every create is done (so only polls run), then samples the worker with
``py-spy record --gil`` (only the thread holding the GIL: CPU, not waiting) and sorts
each sample into one bucket by its stack. Prints the buckets as shares of the samples
and as milliseconds per poll (share x worker CPU in the window / polls in the window).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from bench.contenders import run_videoq
from bench.harness import Scenario, Stage
from producers.local import RedisServer

BUCKETS = (
    "status calls (aiohttp loop, or requests)",
    "job store (redis-py, Lua scripts)",
    "publishing a message (kombu)",
    "Celery and kombu (receive, events, ack, timers)",
    "videoq's own code",
    "other (threads, interpreter)",
)


def bucket(frames: list[str]) -> str:
    """One bucket per stack (root first), by the frames it passes through."""
    ours = [i for i, f in enumerate(frames) if "(worker/" in f]
    upstream = (
        "(aiohttp/",
        "(asyncio/",
        "worker/http.py",
        "worker/upstream.py",
        "worker/answers.py",
    )
    if any(mark in f for f in frames for mark in upstream):
        return BUCKETS[0]
    if ours and any("(redis/" in f for f in frames[ours[-1] :]):
        return BUCKETS[1]
    if ours and any("(kombu/" in f or "(celery/" in f for f in frames[ours[-1] :]):
        return BUCKETS[2]
    if any("(kombu/" in f or "(celery/" in f for f in frames) and not ours:
        return BUCKETS[3]
    if ours:
        return BUCKETS[4]
    return BUCKETS[5]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--mode", choices=("batch", "chain"), default="batch")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--generation-time", type=float, default=40.0)
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=15.0, help="how long to sample")
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    raw = out / f"profile-{args.mode}.txt"
    scenario = Scenario(args.n, args.generation_time, args.poll_interval, cap=600)
    window: dict[str, Any] = {}
    redis_server = RedisServer().start()
    stage = Stage(scenario, out / "logs", redis_server).start()

    def watch(pids: list[int]) -> None:
        while len(stage.sim_get("/_sim/generations")) < args.n:
            time.sleep(0.5)
        time.sleep(args.poll_interval)  # the last creates' first polls
        worker = psutil.Process(pids[0])
        members = [worker, *worker.children(recursive=True)]
        cpu0 = sum(p.cpu_times().user + p.cpu_times().system for p in members)
        window["t0"] = time.time()
        subprocess.run(
            [
                "py-spy",
                "record",
                "--gil",
                "--subprocesses",
                "-r",
                "200",
                "-d",
                str(int(args.seconds)),
                "-f",
                "raw",
                "-o",
                str(raw),
                "-p",
                str(pids[0]),
            ],
            capture_output=True,
            check=False,
        )
        window["t1"] = time.time()
        window["cpu"] = sum(p.cpu_times().user + p.cpu_times().system for p in members) - cpu0

    try:
        run_videoq(
            stage,
            scenario,
            out / "logs",
            mode=args.mode,
            workers=1,
            pool=args.pool,
            concurrency=args.concurrency,
            watch=watch,
        )
        requests = stage.sim_get("/_sim/requests")
    finally:
        stage.stop()
        redis_server.cleanup()
    polls = sum(
        1 for r in requests if r["method"] == "GET" and window["t0"] <= r["t"] <= window["t1"]
    )
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        counts[bucket(stack.split(";"))] += int(n)
    total = sum(counts.values())
    per_poll_ms = 1000 * window["cpu"] / polls
    result = {
        "mode": args.mode,
        "polls": polls,
        "window_s": round(window["t1"] - window["t0"], 1),
        "worker_cpu_s": round(window["cpu"], 2),
        "cpu_ms_per_poll": round(per_poll_ms, 3),
        "buckets": {
            name: {
                "share": round(counts[name] / total, 3),
                "ms_per_poll": round(per_poll_ms * counts[name] / total, 3),
            }
            for name in BUCKETS
        },
    }
    (out / f"profile-{args.mode}.json").write_text(json.dumps(result, indent=1))
    print(
        f"{args.mode}: {polls} polls in {result['window_s']}s, worker CPU "
        f"{result['worker_cpu_s']}s = {result['cpu_ms_per_poll']} ms per poll"
    )
    for name in BUCKETS:
        b = result["buckets"][name]
        print(f"  {b['share']:6.1%}  {b['ms_per_poll']:6.3f} ms  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
