"""Redis breaks: killed and restarted on its AOF files; briefly unreachable mid-chain."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import IMG, check_invariants, held_by_workers, report
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
