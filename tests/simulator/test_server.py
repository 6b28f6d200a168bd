"""The simulator speaks the upstream's API: both paths, Bearer auth, statuses, faults."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from simulator import Simulator
from worker.settings import MODEL_ID

KEY = "sim-test-key"
LEGACY = "/generate/video/kling/generation"
UNIVERSAL = "/video/generations"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    server = Simulator(api_key=KEY, generation_time=0.4, queued_fraction=0.5).start()
    yield server
    server.stop()


def call(sim: Simulator, method: str, path: str, key: str = KEY, **kw: object) -> requests.Response:
    return requests.request(
        method,
        sim.base_url + path,
        headers={"Authorization": f"Bearer {key}"},
        timeout=5,
        **kw,  # type: ignore[arg-type]
    )


def create(sim: Simulator, prompt: str) -> str:
    body = {"model": MODEL_ID, "image_url": "https://x", "prompt": prompt}
    return str(call(sim, "POST", LEGACY, json=body).json()["id"])


@pytest.mark.parametrize("path", [LEGACY, UNIVERSAL])
def test_create_then_poll_until_completed(sim: Simulator, path: str) -> None:
    created = call(sim, "POST", path, json={"model": MODEL_ID, "image_url": "https://x/y.png"})
    assert created.status_code == 200
    gen_id = created.json()["id"]
    assert created.json()["status"] == "queued"
    seen = []
    for _ in range(100):
        body = call(sim, "GET", path, params={"generation_id": gen_id}).json()
        seen.append(body["status"])
        if body["status"] == "completed":
            break
        time.sleep(0.02)
    assert seen[0] == "queued" and "generating" in seen and seen[-1] == "completed"
    assert body["video"]["url"] and body["meta"]["usage"]["credits_used"] > 0
    assert [r.method for r in sim.requests()][:2] == ["POST", "GET"]
    assert len(sim.creates()) == 1 and len(sim.polls(gen_id)) == len(seen)


def test_legacy_variants_of_the_statuses(sim: Simulator) -> None:
    gen_id = create(sim, "[sim:legacy] [sim:time=0.3]")
    first = call(sim, "GET", LEGACY, params={"generation_id": gen_id}).json()["status"]
    assert first == "waiting"
    time.sleep(0.2)
    assert call(sim, "GET", LEGACY, params={"generation_id": gen_id}).json()["status"] == "active"


@pytest.mark.parametrize("key", ["", "wrong"])
def test_bearer_key_is_checked(sim: Simulator, key: str) -> None:
    answer = call(sim, "POST", LEGACY, key=key, json={"model": MODEL_ID, "image_url": "https://x"})
    assert answer.status_code == 401
    assert not sim.creates()


def test_bad_create_is_a_400(sim: Simulator) -> None:
    assert call(sim, "POST", LEGACY, json={"model": "other", "image_url": "x"}).status_code == 400
    assert call(sim, "POST", LEGACY, json={"model": MODEL_ID}).status_code == 400


def test_faults_over_http_are_one_shot(sim: Simulator) -> None:
    control = requests.post(
        sim.base_url.removesuffix("/v2") + "/_sim/faults",
        json={"status": 429, "retry_after": 7, "method": "POST"},
        timeout=5,
    )
    assert control.status_code == 200
    body = {"model": MODEL_ID, "image_url": "https://x"}
    limited = call(sim, "POST", LEGACY, json=body)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    assert call(sim, "POST", LEGACY, json=body).status_code == 200
    bad = requests.post(
        sim.base_url.removesuffix("/v2") + "/_sim/faults", json={"nonsense": 1}, timeout=5
    )
    assert bad.status_code == 400


def test_never_and_error_and_unknown_tags(sim: Simulator) -> None:
    ids = {tag: create(sim, f"[sim:{tag}]") for tag in ("never", "error", "unknown")}
    time.sleep(0.5)
    status = {
        t: call(sim, "GET", LEGACY, params={"generation_id": i}).json() for t, i in ids.items()
    }
    assert status["never"]["status"] == "generating"
    assert status["error"]["status"] == "error" and status["error"]["error"]["message"]
    assert status["unknown"]["status"] not in ("queued", "generating", "completed", "error")


def test_raw_body_fault_sends_hostile_answers(sim: Simulator) -> None:
    sim.add_fault(kind="body", status=200, body="<html>oops</html>", method="GET")
    sim.add_fault(kind="body", status=200, body="x", size=5000, content_type="text/plain")
    first = call(sim, "GET", LEGACY, params={"generation_id": "g"})
    assert (first.status_code, first.text) == (200, "<html>oops</html>")
    assert first.headers["Content-Type"] == "text/html"
    second = call(sim, "GET", LEGACY, params={"generation_id": "g"})
    assert second.text == "x" * 5000


def test_rate_limit_answers_429_over_the_window(sim: Simulator) -> None:
    root = sim.base_url.removesuffix("/v2")
    config = {"rate_limit": 5, "rate_retry_after": 2}
    assert requests.post(root + "/_sim/config", json=config, timeout=5).status_code == 200
    codes = [call(sim, "GET", LEGACY, params={"generation_id": "x"}) for _ in range(8)]
    assert [r.status_code for r in codes[:5]] == [404] * 5  # admitted (unknown id)
    assert [r.status_code for r in codes[5:]] == [429] * 3
    assert codes[5].headers["Retry-After"] == "2"
    time.sleep(1.05)  # the window slides: requests are admitted again
    assert call(sim, "GET", LEGACY, params={"generation_id": "x"}).status_code == 404
    log = requests.get(root + "/_sim/requests", timeout=5).json()
    assert [e["status_code"] for e in log].count(429) == 3


def test_aio_simulator_rate_limit() -> None:
    from simulator.aio import AioSimulator
    from simulator.model import SimConfig

    aio = AioSimulator(SimConfig(api_key=KEY, rate_limit=2, rate_retry_after=None))
    auth = {"authorization": f"Bearer {KEY}"}
    codes = [aio.route("GET", f"/v2{LEGACY}?generation_id=x", auth, b"")[0] for _ in range(3)]
    assert codes == [404, 404, 429]
    assert aio.extra_headers == {}
    assert [e.status_code for e in aio.log] == [404, 404, 429]
