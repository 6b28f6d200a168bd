"""Redis breaks: killed and restarted on its AOF files; briefly unreachable mid-chain;
refusing writes (``maxmemory`` reached) with jobs in flight."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.reliability.conftest import (
    IMG,
    check_invariants,
    held_by_workers,
    report,
    verdict,
)
from worker.errors import Unavailable

GEN = 6.0


def _cli(rig: Any, *args: str) -> tuple[int, str, float]:
    script = Path(sys.executable).with_name("videoq")
    started = time.monotonic()
    done = subprocess.run(
        [str(script), *args],
        env={**os.environ, **rig.cluster.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stderr, time.monotonic() - started


@pytest.mark.parametrize("mode", ["chain", "batch"])
def test_redis_sigkilled_and_restarted_on_its_aof_files(rig: Any, mode: str) -> None:
    r = rig(workers=2, concurrency=2, generation_time=GEN, poll_mode=mode)
    ids = r.submit(100)
    r.wait_generating(ids)
    time.sleep(1.5)  # appendfsync everysec: what is a second old is on disk
    r.redis_server.stop(kill=True)

    # Producers get a clear error, not a hang.
    started = time.monotonic()
    with pytest.raises(Unavailable, match="unreachable"):
        r.cluster.client.submit(IMG, prompt="while Redis is down")
    submit_error_s = time.monotonic() - started
    assert submit_error_s < 15
    code, err, status_error_s = _cli(r, "status", ids[0])
    assert code == 3 and "unreachable" in err, err
    assert status_error_s < 20

    time.sleep(2.0)
    r.redis_server.start()  # same port, same directory: it replays the AOF
    restarted_at = time.time()

    figures = check_invariants(r, ids, generation_time=GEN)
    assert figures.states == {"completed": 100}
    # The workers reconnected by themselves: new work flows through them.
    after = r.submit(10, tag="after the restart")
    assert check_invariants(r, after, generation_time=GEN).states == {"completed": 10}
    assert held_by_workers(r, set(ids + after)) == 0
    done_s = max(r.cluster.client.get(i).finished_at or 0 for i in ids) - restarted_at
    report(
        f"redis_restart ({mode})",
        figures=figures,
        submit_error_s=round(submit_error_s, 2),
        status_cli_error_s=round(status_error_s, 2),
        all_done_after_restart_s=round(done_s, 2),
    )


def test_redis_briefly_unreachable_while_chains_run(rig: Any) -> None:
    r = rig(workers=2, concurrency=2, generation_time=GEN, redis_proxy=True)
    proxy = r.proxies[0]
    ids = r.submit(60)
    r.wait_generating(ids)
    proxy.cut()  # every connection reset, new ones refused
    time.sleep(3.0)
    proxy.restore()

    figures = check_invariants(r, ids, generation_time=GEN)
    assert figures.states == {"completed": 60}
    log = r.cluster.log_text()
    assert "Connection" in log or "connection" in log  # the cut did reach the workers
    report("redis_unreachable_3s", figures=figures)


def _fill_until_oom(r: redis.Redis, value_bytes: int = 64 * 1024, most: int = 5000) -> int:
    """Write filler keys until Redis refuses a write for lack of memory, then pin
    ``maxmemory`` 1 MB under what is used, so that the memory freed when a connection's
    buffers shrink never lets a write through. Returns the number of filler keys."""
    blob = b"f" * value_bytes
    for n in range(most):
        try:
            r.set(f"filler:{n}", blob)
        except redis.exceptions.OutOfMemoryError:
            used = int(r.info("memory")["used_memory"])
            r.config_set("maxmemory", str(used - (1 << 20)))
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                r.set("filler:probe", "1")
            return n
    raise AssertionError(f"Redis still took writes after {most} filler keys")


def test_redis_refusing_writes_kills_no_worker_and_loses_no_job(rig: Any) -> None:
    """Redis at ``maxmemory`` (noeviction) for ~5 s with jobs in flight: workers stay
    up, producers get ``Unavailable``, and once memory is freed every accepted job
    completes with one create."""
    r = rig(workers=2, concurrency=2, generation_time=4.0)
    raw = r.raw
    raw.config_set("maxmemory-policy", "noeviction")
    raw.config_set("maxmemory", "20mb")
    ids = r.submit(20)
    r.wait_generating(ids)
    problems: list[str] = []
    filled = _fill_until_oom(raw)
    full_at = time.monotonic()
    submit_error: BaseException | None = None
    try:
        ids.append(r.cluster.client.submit(IMG, prompt="submitted while redis is full"))
        problems.append("Client.submit succeeded while Redis refused writes")
    except Unavailable as exc:
        submit_error = exc
    except Exception as exc:  # the wrong exception is the finding
        submit_error = exc
        problems.append(f"Client.submit raised {type(exc).__name__}, not Unavailable: {exc}")
    died_during: list[int] = []
    while time.monotonic() - full_at < 5.0:
        died_during = [i for i, w in enumerate(r.cluster.workers) if w.poll() is not None]
        time.sleep(0.2)
    held_s = round(time.monotonic() - full_at, 1)
    if died_during:
        exits = [r.cluster.workers[i].returncode for i in died_during]
        problems.append(f"workers {died_during} exited while Redis was full (codes {exits})")
    for key in raw.scan_iter("filler:*"):
        raw.delete(key)
    log = r.cluster.log_text()
    unrecoverable = log.count("Unrecoverable error")
    figures = None
    if all(w.poll() is not None for w in r.cluster.workers):
        problems.append("no worker left to finish the jobs")
    else:
        try:
            figures = check_invariants(r, ids, generation_time=4.0, timeout=60)
            if figures.states != {"completed": len(ids)}:
                problems.append(f"accepted jobs ended {figures.states}")
        except AssertionError as exc:
            problems.append(f"after memory was freed: {exc}")
    report(
        "redis_refuses_writes",
        filler_keys=filled,
        held_full_s=held_s,
        submit_raised=type(submit_error).__name__ if submit_error else None,
        workers_alive=sum(w.poll() is None for w in r.cluster.workers),
        unrecoverable_errors_logged=unrecoverable,
        figures=figures,
    )
    verdict(problems)
