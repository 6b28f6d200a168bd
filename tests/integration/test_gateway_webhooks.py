"""The gateway's webhooks, end to end: signed, retried after 500s with one message id,
never delivered after the window."""

from __future__ import annotations

import itertools
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from producers import verify_webhook
from tests.integration.conftest import Cluster
from tests.integration.gateway import WEBHOOK_SECRET, Gateway

IMG = "https://example.com/cat.png"


class Receiver:
    """A webhook receiver: answers with scripted statuses, keeps what it got."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.got: list[tuple[float, dict[str, str], bytes, int]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                n = len(receiver.got)
                status = receiver.statuses[min(n, len(receiver.statuses) - 1)]
                receiver.got.append((time.time(), dict(self.headers), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_is_signed_and_retried_after_500s(web: tuple[Cluster, Gateway]) -> None:
    _, gw = web
    receiver = Receiver([500, 500, 200])
    try:
        job_id = gw.call(
            "POST",
            "/v1/jobs",
            json={
                "image_url": IMG,
                "prompt": "webhook [sim:time=1]",
                "webhook_url": receiver.url,
            },
        ).json()["id"]
        give_up = time.monotonic() + 30
        while not any(status == 200 for *_, status in receiver.got):
            assert time.monotonic() < give_up, receiver.got
            time.sleep(0.2)
        time.sleep(1.0)
        assert [status for *_, status in receiver.got] == [500, 500, 200]
        ids = {headers["webhook-id"] for _, headers, _, _ in receiver.got}
        assert ids == {f"{job_id}.completed"}  # one message id across its retries
        for _, headers, body, _ in receiver.got:
            record = verify_webhook(WEBHOOK_SECRET, headers, body)
            assert record["id"] == job_id and record["state"] == "completed"
        times = [t for t, *_ in receiver.got]
        assert all(b - a >= 0.9 for a, b in itertools.pairwise(times))  # rescheduled
        job = gw.call("GET", f"/v1/jobs/{job_id}").json()
        assert job["webhook_state"] == "delivered"
        assert [a["status"] for a in job["webhook_attempts"]] == [500, 500, 200]
        # a tampered body does not verify
        _, headers, body, _ = receiver.got[-1]
        with pytest.raises(ValueError, match="signature"):
            verify_webhook(WEBHOOK_SECRET, headers, body.replace(b"completed", b"failed"))
    finally:
        receiver.stop()


def test_no_webhook_delivery_after_the_window(web: tuple[Cluster, Gateway]) -> None:
    _, gw = web
    receiver = Receiver([500])
    try:
        job_id = gw.call(
            "POST",
            "/v1/jobs",
            json={
                "image_url": IMG,
                "prompt": "webhook gives up [sim:time=1]",
                "webhook_url": receiver.url,
            },
        ).json()["id"]
        give_up = time.monotonic() + 30
        while (job := gw.call("GET", f"/v1/jobs/{job_id}").json())["webhook_state"] != "failed":
            assert time.monotonic() < give_up, job
            time.sleep(0.3)
        count = len(receiver.got)
        assert count >= 2
        last = receiver.got[-1][0]
        assert last <= job["finished_at"] + 4.0 + 0.5  # VIDEOQ_WEBHOOK_WINDOW is 4 s here
        time.sleep(3.0)
        assert len(receiver.got) == count
        assert len(job["webhook_attempts"]) == count
    finally:
        receiver.stop()
