"""The gateway's hardening: bodies over the size cap refused before they are read,
named callers who see only their own jobs, exact pages, an idempotency key reused with
another webhook URL, and Redis refusing writes or going away."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from producers.gateway import UPSTREAM_PATHS
from producers.local import stop_process
from tests.integration.conftest import Cluster
from tests.integration.gateway import ALICE, BOB, LIMIT, ROOT, TOKEN, Gateway

IMG = "https://example.com/cat.png"


def _raw_request(gw: Gateway, head: str, chunks: list[bytes]) -> tuple[int, dict[str, Any]]:
    """Send a request head and some body bytes on a raw socket (never the whole body),
    then read the answer: the gateway must answer without waiting for the rest."""
    import json
    import socket

    with socket.create_connection(("127.0.0.1", gw.port), timeout=15) as sock:
        sock.sendall(head.encode())
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < int(
            re.search(rb"content-length: (\d+)", answer.lower()).group(1)  # type: ignore[union-attr]
            if b"content-length" in answer.lower()
            else 1 << 30
        ):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status = int(answer.split(b" ", 2)[1])
    return status, json.loads(answer.split(b"\r\n\r\n", 1)[1])


def test_a_body_over_the_cap_is_413_before_it_is_read(web: tuple[Cluster, Gateway]) -> None:
    cluster, gw = web
    auth = f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
    # a declared length over the cap: answered at once, with only 1 KB of 79 MB sent
    head = f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {79 * 1024 * 1024}\r\n\r\n"
    status, body = _raw_request(gw, head, [b'{"image_url": "data:image/png;base64,' + b"A" * 1000])
    assert status == 413 and "VIDEOQ_MAX_REQUEST_BYTES" in body["detail"], body
    # a chunked body: answered once the bytes received pass the cap (no last chunk sent)
    head = f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n"
    piece = b"A" * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece)] * (LIMIT // len(piece) + 2)
    status, body = _raw_request(gw, head, chunks)
    assert status == 413 and "VIDEOQ_MAX_REQUEST_BYTES" in body["detail"], body
    compat = gw.call(
        "POST", "/v2/video/generations", json={"image_url": "data:image/png;base64," + "A" * LIMIT}
    )
    assert compat.status_code == 413
    # a compact body just under the cap whose stored form (with defaults) is over it
    import json

    empty = len(json.dumps({"image_url": "data:image/png;base64,"}, separators=(",", ":")))
    image = "data:image/png;base64," + "A" * ((LIMIT - empty) // 4 * 4)
    compact = json.dumps({"image_url": image}, separators=(",", ":"))
    assert len(compact) <= LIMIT
    stored = gw.call("POST", "/v1/jobs", data=compact, headers={"Content-Type": "application/json"})
    assert stored.status_code == 413 and "VIDEOQ_MAX_REQUEST_BYTES" in stored.text, stored.text
    # under the cap: accepted, and the inline image is not echoed back
    image = "data:image/png;base64," + "iVBORw0KGgoA" * 4000
    accepted = gw.call(
        "POST",
        "/v1/jobs",
        json={"image_url": image, "static_mask": image, "prompt": "inline [sim:time=1]"},
    )
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    for answer in (accepted, gw.call("GET", f"/v1/jobs/{job_id}")):
        assert len(answer.content) < 3000 and "bytes, sha256" in answer.text
    assert gw.wait(job_id)["state"] == "completed"
    # what the worker sent upstream is the image itself (tests/worker/test_store.py
    # checks the body); here: exactly one create, and the stored full request (the
    # image included) is dropped once the job is past its create
    assert len(cluster.sim.creates(prompt="inline [sim:time=1]")) == 1
    store = cluster.client.store
    assert not store.redis.exists(store.keys.payload(job_id))


def test_named_callers_see_only_their_own_jobs(web: tuple[Cluster, Gateway]) -> None:
    _, gw = web
    body = {"image_url": IMG, "prompt": "tenant [sim:time=60]"}
    mine = gw.call(
        "POST", "/v1/jobs", token=ALICE, json=body, headers={"Idempotency-Key": "tenant-1"}
    ).json()
    assert mine["owner"] == "alice"
    theirs = gw.call(
        "POST", "/v1/jobs", token=BOB, json=body, headers={"Idempotency-Key": "tenant-1"}
    ).json()
    assert theirs["id"] != mine["id"] and theirs["owner"] == "bob"  # keys are per caller
    again = gw.call(
        "POST", "/v1/jobs", token=ALICE, json=body, headers={"Idempotency-Key": "tenant-1"}
    ).json()
    assert again["id"] == mine["id"]
    job_id = mine["id"]
    # another caller: a 404 everywhere, as for a job that does not exist
    assert gw.call("GET", f"/v1/jobs/{job_id}", token=BOB).status_code == 404
    assert gw.call("DELETE", f"/v1/jobs/{job_id}", token=BOB).status_code == 404
    for path in UPSTREAM_PATHS:
        assert gw.call("GET", path, token=BOB, params={"generation_id": job_id}).status_code == 404
        assert (
            gw.call("GET", path, token=ALICE, params={"generation_id": job_id}).status_code == 200
        )
    listed = gw.call("GET", "/v1/jobs", token=BOB, params={"limit": 500}).json()
    assert {j["owner"] for j in listed["jobs"]} == {"bob"}
    assert gw.call("GET", f"/v1/jobs/{job_id}", token=ALICE).json()["state"] != "cancelled"
    # the admin and unnamed tokens see every job; the admin cancels any
    assert gw.call("GET", f"/v1/jobs/{job_id}", token=TOKEN).status_code == 200
    assert gw.call("DELETE", f"/v1/jobs/{job_id}", token=ROOT).json()["state"] == "cancelled"
    assert gw.call("DELETE", f"/v1/jobs/{theirs['id']}", token=BOB).status_code == 200
    created = gw.call(
        "POST",
        UPSTREAM_PATHS[1],
        token=BOB,
        json={"image_url": IMG, "prompt": "tenant compat [sim:time=1]"},
    ).json()
    assert gw.call("GET", f"/v1/jobs/{created['id']}", token=ALICE).status_code == 404
    assert gw.call("GET", f"/v1/jobs/{created['id']}", token=BOB).json()["owner"] == "bob"


def test_pages_hold_exactly_limit_and_resume_exactly(web: tuple[Cluster, Gateway]) -> None:
    _, gw = web
    ids = {
        gw.call(
            "POST",
            "/v1/jobs",
            token=ROOT,
            json={"image_url": IMG, "prompt": f"page {i} [sim:never]"},
        ).json()["id"]
        for i in range(7)
    }
    one = gw.call("GET", "/v1/jobs", params={"limit": 1}).json()
    assert len(one["jobs"]) == 1 and one["next_cursor"]
    seen: list[str] = []
    cursor = "0"
    while cursor:
        page = gw.call("GET", "/v1/jobs", token=ROOT, params={"cursor": cursor, "limit": 2}).json()
        assert len(page["jobs"]) <= 2
        seen += [j["id"] for j in page["jobs"] if j["owner"] == "root"]
        cursor = page["next_cursor"]
    assert sorted(seen) == sorted(ids)  # no job repeated or skipped
    for garbage in ("abc", "1", "1.2.3", "-5.0", "9" * 25 + ".0", "a.b"):
        answer = gw.call("GET", "/v1/jobs", params={"cursor": garbage})
        assert answer.status_code == 422, (garbage, answer.text)
    for job_id in ids:
        gw.call("DELETE", f"/v1/jobs/{job_id}", token=ROOT)


def test_same_key_with_another_webhook_url_is_409(web: tuple[Cluster, Gateway]) -> None:
    _, gw = web
    body = {
        "image_url": IMG,
        "prompt": "hook key [sim:time=1]",
        "webhook_url": "https://example.com/hooks/a",
    }
    key = {"Idempotency-Key": "hook-key-1"}
    assert gw.call("POST", "/v1/jobs", json=body, headers=dict(key)).status_code == 202
    assert gw.call("POST", "/v1/jobs", json=body, headers=dict(key)).status_code == 202
    other = {**body, "webhook_url": "https://example.com/hooks/b"}
    assert gw.call("POST", "/v1/jobs", json=other, headers=dict(key)).status_code == 409


def test_redis_refusing_writes_is_503_and_reads_during_an_outage_say_so(
    web: tuple[Cluster, Gateway],
    full_redis: tuple[str, Any],
    tmp_path: Path,
) -> None:
    import dataclasses

    cluster, _ = web
    url, filler = full_redis
    full = dataclasses.replace(cluster, env={**cluster.env, "VIDEOQ_REDIS_URL": url})
    gw = Gateway(full, tmp_path / "full-gateway.log")
    try:
        body = {"image_url": IMG, "prompt": "full redis"}
        refused = gw.call("POST", "/v1/jobs", json=body)
        assert refused.status_code == 503, refused.text
        assert refused.json()["detail"] == (
            "Redis refuses writes: out of memory (maxmemory reached); the job was not accepted"
        )
        compat = gw.call("POST", UPSTREAM_PATHS[0], json=body)
        assert compat.status_code == 503 and "out of memory" in compat.text
        filler.config_set("maxmemory", 0)
        accepted = gw.call("POST", "/v1/jobs", json=body)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        # Redis goes away: reads say what they know (nothing changed), never "not enqueued"
        filler.shutdown(nosave=True)
        got = gw.call("GET", f"/v1/jobs/{job_id}")
        assert got.status_code == 503
        assert got.json()["detail"].startswith(f"could not read job {job_id}: Redis at ")
        assert "not affected" in got.text and "nothing was enqueued" not in got.text
        listed = gw.call("GET", "/v1/jobs")
        assert listed.status_code == 503 and "could not list jobs" in listed.text
    finally:
        stop_process(gw.proc)
