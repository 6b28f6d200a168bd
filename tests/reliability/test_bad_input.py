"""Hostile input, generated (hypothesis): refused with an error naming the field, nothing
stored or enqueued, and no other exception escapes. Over the Python API and the CLI."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producers import Client
from producers.cli import main
from producers.exits import EXIT_INPUT
from tests.conftest import settings_for
from worker.errors import RequestError
from worker.request import MAX_PROMPT_LENGTH, MAX_URL_LENGTH

IMG = "https://example.com/cat.png"
POINTS = [{"x": 1, "y": 2}, {"x": 3, "y": 4}]
KNOWN = {
    "image_url",
    "prompt",
    "duration",
    "negative_prompt",
    "cfg_scale",
    "static_mask",
    "dynamic_masks",
    "camera_control",
    "model",
}

not_a_string = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
bad_urls = st.one_of(
    st.just(""),
    st.sampled_from(
        [
            "file:///etc/passwd",
            "ftp://example.com/a.png",
            "javascript:alert(1)",
            "gopher://example.com/",
            "//example.com/a.png",
            "example.com/a.png",
            "http://127.0.0.1:6379/",
            "http://localhost/a.png",
            "http://169.254.169.254/latest",
            "http://10.0.0.1/a.png",
            "http://[::1]/a.png",
            "http://192.168.1.1/a.png",
            "https://redis.internal/a.png",
            "http://0.0.0.0/a.png",
            "https://example.com/a b.png",
        ]
    ),
    st.text(alphabet="!@#$%^&*()", min_size=1).map(lambda t: f"data:image/png;base64,{t}"),
    st.text(min_size=MAX_URL_LENGTH + 1, max_size=MAX_URL_LENGTH + 50).map(
        lambda t: "https://example.com/" + t
    ),
    st.text(max_size=40).filter(lambda t: not t.startswith(("http://", "https://", "data:"))),
)
bad_numbers_for_duration: st.SearchStrategy[object] = st.one_of(
    st.integers().filter(lambda n: n not in (5, 10)),
    st.floats().filter(lambda f: f not in (5.0, 10.0)),
    st.text(max_size=5).filter(lambda t: t.strip() not in ("5", "10")),
    st.booleans(),
    st.none().map(lambda _: []),
)
bad_cfg = st.one_of(
    st.floats().filter(lambda f: not 0 <= f <= 1),
    st.integers().filter(lambda n: n not in (0, 1)),
    st.text(max_size=5),
    st.booleans(),
)
bad_masks = st.one_of(
    st.just([{"mask": IMG, "trajectories": POINTS}] * 7),  # too many masks
    st.integers(0, 1).map(lambda n: [{"mask": IMG, "trajectories": POINTS[:n]}]),
    st.integers(78, 120).map(lambda n: [{"mask": IMG, "trajectories": [POINTS[0]] * n}]),
    st.just([{"mask": IMG, "trajectories": [{"x": 1.5, "y": 2}, {"x": 1, "y": 2}]}]),
    st.just([{"mask": "file:///x", "trajectories": POINTS}]),
    st.just([{"mask": IMG, "trajectories": POINTS, "speed": 3}]),
    not_a_string.filter(lambda v: v is not None and v != []),  # no masks at all is fine
)
bad_camera = st.one_of(
    st.text(max_size=10)
    .map(lambda t: {"type": t})
    .filter(
        lambda c: (
            c["type"]
            not in ("simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward")
        )
    ),
    st.floats(allow_nan=True)
    .filter(lambda f: not -10 <= f <= 10)
    .map(lambda f: {"type": "simple", "config": {"zoom": f}}),
    st.just({"type": "simple", "config": {"warp": 1}}),
    st.integers().map(lambda n: {"type": "simple", "config": {"pan": str(n)}}),
)
unknown_field = st.text(min_size=1, max_size=20).filter(lambda k: k not in KNOWN)

# (field that must be named, the keyword arguments of Client.submit)
hostile = st.one_of(
    st.tuples(
        st.just("image_url"), st.one_of(not_a_string, bad_urls).map(lambda v: {"image_url": v})
    ),
    st.tuples(
        st.just("duration"),
        bad_numbers_for_duration.map(lambda v: {"image_url": IMG, "duration": v}),
    ),
    st.tuples(st.just("cfg_scale"), bad_cfg.map(lambda v: {"image_url": IMG, "cfg_scale": v})),
    st.tuples(
        st.just("prompt"),
        st.one_of(
            st.text(min_size=MAX_PROMPT_LENGTH + 1, max_size=MAX_PROMPT_LENGTH + 20),
            not_a_string.filter(lambda v: v is not None),
        ).map(lambda v: {"image_url": IMG, "prompt": v}),
    ),
    st.tuples(
        st.just("static_mask"),
        st.one_of(bad_urls, not_a_string.filter(lambda v: v is not None)).map(
            lambda v: {"image_url": IMG, "static_mask": v}
        ),
    ),
    st.tuples(
        st.just("dynamic_masks"), bad_masks.map(lambda v: {"image_url": IMG, "dynamic_masks": v})
    ),
    st.tuples(
        st.just("camera_control"), bad_camera.map(lambda v: {"image_url": IMG, "camera_control": v})
    ),
    st.tuples(unknown_field, st.just(None)).map(lambda kv: (kv[0], {"image_url": IMG, kv[0]: "x"})),
)


@pytest.fixture(scope="module")
def client(redis_url: str) -> Iterator[Client]:
    """Shared by every example: each one checks that nothing at all was stored."""
    yield Client(settings=settings_for(redis_url, f"bad{uuid.uuid4().hex[:8]}"))


def nothing_stored(client: Client) -> None:
    r = client.store.redis
    assert r.llen(client.settings.queue) == 0, "a task was enqueued"
    assert not list(r.scan_iter(match=f"{client.settings.key_prefix}:*")), "something stored"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=hostile)
def test_hostile_payloads_are_refused_naming_the_field(client: Client, case: Any) -> None:
    field, kwargs = case
    image_url = kwargs.pop("image_url")
    with pytest.raises(RequestError) as refused:
        client.submit(image_url, **kwargs)
    named = refused.value.field
    assert named == field or named.split(".")[0] == field, (named, field)
    assert str(refused.value).startswith(refused.value.field)
    nothing_stored(client)


@settings(max_examples=200, deadline=None)
@given(
    payload=st.dictionaries(
        st.text(max_size=12),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=30),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=8,
        ),
        max_size=6,
    )
)
def test_random_payloads_never_escape_as_anything_but_a_request_error(
    client: Client, payload: dict[str, Any]
) -> None:
    image_url = payload.pop("image_url", None)
    try:
        client.submit(image_url, **payload)
    except RequestError as exc:
        assert exc.field and exc.message
    except TypeError as exc:  # only Python's own "got multiple values for argument"
        assert "multiple values" in str(exc) or "unexpected keyword" in str(exc), exc
    else:
        pytest.fail(f"accepted a random payload: {payload!r}")
    nothing_stored(client)


def _argv(kwargs: dict[str, Any]) -> list[str] | None:
    """``videoq submit`` arguments for a payload, or None if the CLI has no such option."""
    argv = ["submit"]
    for name, value in kwargs.items():
        option = "--" + name.replace("_", "-")
        if name not in KNOWN or name == "model":
            return None
        if isinstance(value, list | dict):
            if name not in ("dynamic_masks", "camera_control"):
                return None  # only these two options take JSON
            text = json.dumps(value)
        elif isinstance(value, str):
            text = value
        else:
            return None  # the CLI only ever receives strings
        if "\x00" in text:
            return None
        argv.append(f"{option}={text}")
    return argv


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
@given(case=hostile)
def test_hostile_cli_arguments_exit_2_naming_the_field(
    client: Client, case: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    field, kwargs = case
    argv = _argv(kwargs)
    if argv is None:
        return
    s = client.settings
    monkeypatch.setenv("VIDEOQ_REDIS_URL", s.redis_url)
    monkeypatch.setenv("VIDEOQ_QUEUE", s.queue)
    monkeypatch.setenv("VIDEOQ_KEY_PREFIX", s.key_prefix)
    capsys.readouterr()
    code: int | str | None
    try:
        code = main(argv)
    except SystemExit as exited:  # argparse's own refusals
        code = exited.code
    assert code == EXIT_INPUT
    out, err = capsys.readouterr()
    assert out == ""  # no job id: nothing was accepted
    assert field in err or field.replace("_", "-") in err, err
    nothing_stored(client)


def test_cli_without_an_image_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["submit"])
    assert exited.value.code == EXIT_INPUT
    assert "--image-url" in capsys.readouterr().err
