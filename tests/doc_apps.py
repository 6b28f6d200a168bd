"""The web-app examples of docs/python-client.md, driven as their users would: each
defines ``POST /videos`` (``image_url``, ``prompt``) answering 202 with ``job_id``, and
``GET /videos/<job_id>`` answering ``state`` and ``video_url``. A Flask app is named
``web``, a FastAPI app ``api``, and a Django app's URLs ``urlpatterns``."""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

IMAGE = {"image_url": "https://example.com/portrait.jpg", "prompt": "She smiles"}
# Sends a request: (method, path, JSON body or None) -> (status, JSON answer).
Send = Callable[[str, str, dict[str, str] | None], tuple[int, Any]]


def web_apps(namespace: dict[str, Any]) -> list[str]:
    """The names of the example's web apps this module knows how to drive."""
    return [name for name in ("web", "api", "urlpatterns") if name in namespace]


def make_a_video(namespace: dict[str, Any], name: str, timeout: float = 60) -> dict[str, Any]:
    """Ask the app for a video, then ask about it until it has ended; its last answer."""
    with _sender(name, namespace[name]) as send:
        status, started = send("POST", "/videos", IMAGE)
        assert status == 202, (status, started)
        give_up = time.monotonic() + timeout
        while True:
            status, answer = send("GET", f"/videos/{started['job_id']}", None)
            assert status == 200, (status, answer)
            if answer["state"] in ("completed", "failed", "timed_out", "cancelled"):
                return dict(answer)
            assert time.monotonic() < give_up, f"job still {answer['state']}"
            time.sleep(0.2)


@contextmanager
def _sender(name: str, app: Any) -> Iterator[Send]:
    if name == "web":  # Flask
        client = app.test_client()
        yield lambda method, path, body: _flask(client, method, path, body)
    elif name == "api":  # FastAPI: one event loop for the whole conversation
        testclient = importlib.import_module("fastapi.testclient")
        with testclient.TestClient(app) as client:
            yield lambda method, path, body: _httpx(client, method, path, body)
    else:
        yield _django(app)


def _flask(client: Any, method: str, path: str, body: dict[str, str] | None) -> tuple[int, Any]:
    answer = client.open(path, method=method, json=body)
    return int(answer.status_code), answer.get_json()


def _httpx(client: Any, method: str, path: str, body: dict[str, str] | None) -> tuple[int, Any]:
    answer = client.request(method, path, json=body)
    return int(answer.status_code), answer.json()


def _django(urlpatterns: list[Any]) -> Send:
    """Django's views through its own request factory, routed by the example's URLs."""
    conf = importlib.import_module("django.conf")
    if not conf.settings.configured:
        conf.settings.configure(ALLOWED_HOSTS=["testserver"], DEFAULT_CHARSET="utf-8")
        importlib.import_module("django").setup()
    factory = importlib.import_module("django.test").RequestFactory()

    def send(method: str, path: str, body: dict[str, str] | None) -> tuple[int, Any]:
        route = path.lstrip("/")
        match = next(m for p in urlpatterns if (m := p.resolve(route)) is not None)
        request = factory.post(path, body) if method == "POST" else factory.get(path)
        answer = match.func(request, *match.args, **match.kwargs)
        return int(answer.status_code), json.loads(answer.content)

    return send
