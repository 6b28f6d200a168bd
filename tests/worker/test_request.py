"""Request validation: every bad field is refused with an error naming that field."""

from __future__ import annotations

import base64
import socket
from typing import Any

import pytest

from worker.errors import RequestError
from worker.request import build_request, parse_request
from worker.settings import MODEL_ID

IMG = "https://example.com/cat.png"
PNG_DATA = "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()


def refused(payload: Any) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse_request(payload)
    return info.value


def test_minimal_request_adds_the_model_for_the_upstream() -> None:
    req = parse_request({"image_url": IMG})
    assert req.duration == 5
    assert req.to_upstream() == {"model": MODEL_ID, "image_url": IMG, "duration": 5}
    assert "model" not in req.stored()


def test_full_request_round_trips() -> None:
    payload = {
        "image_url": PNG_DATA,
        "prompt": "a cat",
        "duration": "10",  # the upstream's own example sends a string
        "negative_prompt": "blur",
        "cfg_scale": 1,
        "static_mask": IMG,
        "dynamic_masks": [{"mask": IMG, "trajectories": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]}],
        "camera_control": {"type": "simple", "config": {"zoom": -10, "pan": 2.5}},
        "model": MODEL_ID,
    }
    req = parse_request(payload)
    assert req.duration == 10
    assert req.cfg_scale == 1.0
    body = req.to_upstream()
    assert body["camera_control"] == {"type": "simple", "config": {"zoom": -10.0, "pan": 2.5}}
    assert parse_request(req.stored()) == req


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "image_url"),
        ({"image_url": ""}, "image_url"),
        ({"image_url": "ftp://example.com/a.png"}, "image_url"),
        ({"image_url": "example.com/a.png"}, "image_url"),
        ({"image_url": "https://"}, "image_url"),
        ({"image_url": "https://exa mple.com/a.png"}, "image_url"),
        ({"image_url": "data:image/png;base64,@@@"}, "image_url"),
        ({"image_url": 42}, "image_url"),
        ({"image_url": "http://127.0.0.1:8080/cat.png"}, "image_url"),
        ({"image_url": "http://169.254.169.254/latest/meta-data/"}, "image_url"),
        ({"image_url": "https://localhost/cat.png"}, "image_url"),
        ({"image_url": "https://db.internal/cat.png"}, "image_url"),
        ({"image_url": "http://[::1]/cat.png"}, "image_url"),
        ({"image_url": "http://10.0.0.7/cat.png"}, "image_url"),
        ({"image_url": "file:///etc/passwd"}, "image_url"),
        ({"image_url": IMG, "duration": 7}, "duration"),
        ({"image_url": IMG, "duration": "7"}, "duration"),
        ({"image_url": IMG, "duration": True}, "duration"),
        ({"image_url": IMG, "cfg_scale": 1.5}, "cfg_scale"),
        ({"image_url": IMG, "cfg_scale": -0.1}, "cfg_scale"),
        ({"image_url": IMG, "cfg_scale": float("nan")}, "cfg_scale"),
        ({"image_url": IMG, "cfg_scale": "0.5"}, "cfg_scale"),
        ({"image_url": IMG, "prompt": "x" * 2501}, "prompt"),
        ({"image_url": IMG, "static_mask": "nope"}, "static_mask"),
        (
            {
                "image_url": IMG,
                "dynamic_masks": [{"mask": IMG, "trajectories": [{"x": 1, "y": 1}]}],
            },
            "dynamic_masks.0.trajectories",
        ),
        (
            {
                "image_url": IMG,
                "dynamic_masks": [{"mask": IMG, "trajectories": [{"x": 1, "y": 1}] * 78}],
            },
            "dynamic_masks.0.trajectories",
        ),
        (
            {
                "image_url": IMG,
                "dynamic_masks": [{"mask": IMG, "trajectories": [{"x": 1.5, "y": 1}] * 2}],
            },
            "dynamic_masks.0.trajectories.0.x",
        ),
        (
            {
                "image_url": IMG,
                "dynamic_masks": [{"mask": "bad", "trajectories": [{"x": 1, "y": 1}] * 2}],
            },
            "dynamic_masks.0.mask",
        ),
        (
            {
                "image_url": IMG,
                "dynamic_masks": [{"mask": IMG, "trajectories": [{"x": 1, "y": 1}] * 2}] * 7,
            },
            "dynamic_masks",
        ),
        ({"image_url": IMG, "camera_control": {"type": "spin"}}, "camera_control.type"),
        (
            {"image_url": IMG, "camera_control": {"type": "simple", "config": {"zoom": 11}}},
            "camera_control.config.zoom",
        ),
        (
            {"image_url": IMG, "camera_control": {"type": "simple", "config": {"warp": 1}}},
            "camera_control.config.warp",
        ),
        ({"image_url": IMG, "colour": "red"}, "colour"),
        ({"image_url": IMG, "model": "other/model"}, "model"),
    ],
)
def test_bad_field_is_named(payload: dict[str, Any], field: str) -> None:
    error = refused(payload)
    assert error.field == field
    assert str(error).startswith(f"{field}: ")


def test_unknown_field_says_so() -> None:
    assert refused({"image_url": IMG, "colour": "red"}).message == "unknown field"


def test_not_an_object() -> None:
    assert refused(["image_url"]).field == "request"


def test_build_request_drops_unset_options() -> None:
    req = build_request(IMG, None, 5, negative_prompt=None, cfg_scale=0.5)
    assert req.stored() == {"image_url": IMG, "duration": 5, "cfg_scale": 0.5}


# Internal hosts in spellings that a plain ip_address() check misses.
HIDDEN_INTERNAL_URLS = [
    "http://2130706433/cat.png",
    "http://0x7f000001/cat.png",
    "http://0177.0.0.1/cat.png",
    "http://127.1/cat.png",
    "http://10.1.1/cat.png",
    "http://0x7f.1/cat.png",
    "http://0/cat.png",
    "http://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/cat.png",
    "http://127\u30020\u30020\u30021/cat.png",
    "http://[::127.0.0.1]/cat.png",
    "http://[64:ff9b::7f00:1]/cat.png",
    "http://[64:ff9b::a00:1]/cat.png",
    "http://[2002:7f00:1::]/cat.png",
    "http://nas.home.arpa/cat.png",
    "http://%6c%6fcalhost/cat.png",
]


def _with_image(field: str, url: str) -> dict[str, Any]:
    points = [{"x": 1, "y": 1}] * 2
    if field == "image_url":
        return {"image_url": url}
    if field == "static_mask":
        return {"image_url": IMG, "static_mask": url}
    return {"image_url": IMG, "dynamic_masks": [{"mask": url, "trajectories": points}]}


@pytest.mark.parametrize("url", HIDDEN_INTERNAL_URLS)
@pytest.mark.parametrize("field", ["image_url", "static_mask", "dynamic_masks.0.mask"])
def test_images_at_internal_hosts_are_refused_in_every_spelling(field: str, url: str) -> None:
    error = refused(_with_image(field, url))
    assert error.field == field
    assert "not a public host" in error.message


@pytest.mark.parametrize("field", ["image_url", "static_mask", "dynamic_masks.0.mask"])
def test_images_at_names_that_resolve_to_internal_addresses_are_refused(
    field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == f"{field.replace('.', '-')}.rebind.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]
        return real(name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    url = f"https://{field.replace('.', '-')}.rebind.example/cat.png"
    error = refused(_with_image(field, url))
    assert error.field == field
    assert "resolves to a loopback address" in error.message
