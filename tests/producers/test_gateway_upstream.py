"""The gateway's upstream-compatible create, in process: the request is validated once
(``parse_request``) and submitted as it was validated, so each image URL is checked
(and its host looked up in DNS) once per request, not once per layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

import worker.request
import worker.urls
from producers.client import Client
from producers.gateway import create_gateway
from worker.settings import MODEL_ID, Settings

TOKEN = "gw-token-0123456789"


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every image URL the request's validation checks (hosts resolve to a public
    address, without DNS)."""
    seen: list[str] = []
    check = worker.urls.check_url

    def counted(url: object, **kwargs: Any) -> str:
        seen.append(str(url))
        return check(url, **kwargs)

    monkeypatch.setattr(worker.urls, "_getaddrinfo", lambda _: ["93.184.215.14"])
    monkeypatch.setattr(worker.urls, "_cache", {})
    monkeypatch.setattr(worker.request, "check_url", counted)
    return seen


@pytest.fixture
def gateway(make_settings: Callable[..., Settings]) -> TestClient:
    settings = make_settings(api_tokens=TOKEN)
    return TestClient(create_gateway(settings, Client(settings=settings)))


def test_an_upstream_shaped_create_looks_each_image_host_up_once(
    gateway: TestClient, lookups: list[str]
) -> None:
    body = {
        "model": MODEL_ID,
        "image_url": "https://images.example.org/cat.png",
        "prompt": "a cat",
        "static_mask": "https://masks.example.net/m.png",
    }
    answer = gateway.post(
        "/v2/video/generations", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "queued"
    assert sorted(lookups) == [
        "https://images.example.org/cat.png",
        "https://masks.example.net/m.png",
    ]


def test_an_upstream_shaped_create_names_the_bad_field(
    gateway: TestClient, lookups: list[str]
) -> None:
    answer = gateway.post(
        "/v2/video/generations",
        json={"image_url": "https://images.example.org/cat.png", "duration": 7},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status_code == 422
    assert "duration" in answer.text
