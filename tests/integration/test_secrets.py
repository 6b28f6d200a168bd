"""The API key never reaches Redis (messages, records) or the worker's logs.

Every command Redis receives while jobs run is captured with MONITOR, so this covers
task args and kwargs, Celery's message envelopes (base64 bodies decoded), job records
and Flower's source (the events come through the same Redis)."""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import TEST_KEY
from tests.integration.conftest import Cluster
from worker.states import JobState

pytestmark = pytest.mark.integration

IMG = "https://example.com/portrait.jpg"
_B64 = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")


def _forms(secret: str) -> list[str]:
    """The secret, and how it would look inside any base64 text (3 alignments)."""
    forms = [secret]
    for shift in range(3):
        encoded = base64.b64encode(b"x" * shift + secret.encode()).decode()
        forms.append(encoded[4 * ((shift + 2) // 3) + 2 : -4])
    return forms


def _decoded(text: str) -> str:
    out = [text]
    for chunk in _B64.findall(text):
        try:
            out.append(base64.b64decode(chunk + "=" * (-len(chunk) % 4)).decode("utf-8", "replace"))
        except ValueError:
            continue
    return "\n".join(out)


@pytest.fixture
def monitor(redis_url: str) -> Iterator[list[str]]:
    captured: list[str] = []
    stop = threading.Event()
    conn = redis.Redis.from_url(redis_url)

    def run() -> None:
        with conn.monitor() as mon:  # type: ignore[no-untyped-call]  # redis-py: untyped
            while not stop.is_set():
                try:
                    captured.append(str(mon.next_command()["command"]))
                except (redis.ConnectionError, ValueError):
                    break

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.2)
    yield captured
    stop.set()
    conn.ping()  # wakes the monitor loop
    thread.join(timeout=5)
    conn.close()


def test_forms_detector_finds_an_encoded_key() -> None:
    for shift in range(3):
        blob = base64.b64encode(b"y" * shift + f'{{"k": "{TEST_KEY}"}}'.encode()).decode()
        assert TEST_KEY in _decoded(blob) or any(f in blob for f in _forms(TEST_KEY))


def test_the_key_never_reaches_redis_or_the_logs(cluster: Cluster, monitor: list[str]) -> None:
    client = cluster.client
    # The upstream echoes the key back in a rejection: even that must not be stored.
    cluster.sim.add_fault(status=401, method="POST", message=f"Invalid key {TEST_KEY}")
    ids = [
        client.submit(IMG, prompt="rejected echo"),
        client.submit(IMG, prompt="ok"),
        client.submit(IMG, prompt="bad [sim:error]"),
    ]
    jobs = cluster.wait_all(ids, timeout=30)
    assert {j.state for j in jobs} == {JobState.FAILED, JobState.COMPLETED}
    assert any("***" in (j.error.message if j.error else "") for j in jobs)
    time.sleep(0.5)
    # the worker did authenticate with the key: the simulator checks the Bearer token
    assert all(r.authorized for r in cluster.sim.requests() if r.prompt == "ok")

    assert len(monitor) > 20, "MONITOR captured nothing"
    traffic = _decoded("\n".join(monitor))
    # the messages are there (batch mode, the default: ticks; they carry no job data)
    assert "create_tick" in traffic and "poll_tick" in traffic
    records = "\n".join(str(client.store.redis.hgetall(client.store.keys.job(i))) for i in ids)
    logs = cluster.log_text()
    assert "event=job.finished" in logs
    for form in _forms(TEST_KEY):
        assert form not in traffic, "the API key reached Redis"
        assert form not in records, "the API key is in a job record"
        assert form not in logs, "the API key is in the worker log"
