"""The gateway under test (``videoq serve`` in a subprocess) and its callers' tokens,
shared by tests/integration/test_gateway*.py (the ``web`` fixture is in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from producers.local import free_port

if TYPE_CHECKING:
    from tests.integration.conftest import Cluster

TOKEN = "gw-token-0123456789"
ALICE, BOB, ROOT = "alice-token-0123", "bob-token-4567", "root-token-89ab"
LIMIT = 256 * 1024  # VIDEOQ_MAX_REQUEST_BYTES of the gateway under test
WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Gateway:
    def __init__(self, cluster: Cluster, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        script = Path(sys.executable).with_name("videoq")
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(script), "serve", "--port", str(self.port)],
                env={**os.environ, **cluster.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        give_up = time.monotonic() + 30
        while True:
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            assert self.proc.poll() is None, log.read_text()
            assert time.monotonic() < give_up, "the gateway did not start"
            time.sleep(0.1)

    def call(self, method: str, path: str, token: str | None = TOKEN, **kw: Any) -> Any:
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.url + path, headers=headers, timeout=15, **kw)

    def wait(self, job_id: str, timeout: float = 30) -> dict[str, Any]:
        give_up = time.monotonic() + timeout
        while True:
            job: dict[str, Any] = self.call("GET", f"/v1/jobs/{job_id}").json()
            if job["state"] in ("completed", "failed", "timed_out", "cancelled"):
                return job
            assert time.monotonic() < give_up, job
            time.sleep(0.2)
