"""What the upstream client reads from an answer, against a fake BoundedHttp:
upstream text is data (the key masked, control characters escaped, lengths capped),
an unreadable answer is a classified error, and credits are kept only when they are a
finite non-negative number."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.worker.upstream_fakes import KEY, all_answers, client_with
from worker.answers import MAX_ID_LENGTH, Status, parse_retry_after
from worker.errors import ProtocolError as UpstreamProtocolError
from worker.errors import Rejected, Transient, UpstreamError


def test_parse_retry_after() -> None:
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-3") in (None, 0.0)
    http_date = "Wed, 21 Oct 2015 07:28:10 GMT"
    assert parse_retry_after(http_date, now=1445412480.0) == pytest.approx(10.0)


def test_a_key_echoed_by_the_upstream_is_masked() -> None:
    client, _ = client_with(
        (401, {"message": f"invalid key {KEY}"}, {}),
        (200, {"id": "g", "status": "error", "error": {"message": f"bad {KEY}"}}, {}),
    )
    with pytest.raises(Rejected) as info:
        client.create({})
    assert KEY not in str(info.value) and "invalid key ***" in str(info.value)
    assert client.status("g").error_message == "bad ***"


@pytest.mark.parametrize(
    "echo", [KEY.upper(), KEY.swapcase(), KEY[:12], KEY[-12:], KEY[4:16].upper()]
)
def test_a_case_variant_or_partial_copy_of_the_key_is_masked(echo: str) -> None:
    client, _ = client_with(
        (401, {"message": f"invalid key {echo} given"}, {}),
        (200, {"id": "g", "status": "error", "error": {"message": f"bad {echo}!"}}, {}),
    )
    with pytest.raises(Rejected) as info:
        client.create({})
    assert echo not in str(info.value)
    assert "invalid key *** given" in str(info.value)
    assert client.status("g").error_message == "bad ***!"


# --- upstream text is data: escaped and capped ------------------------------------------------


FORGED = "bad input\r\nevent=job.finished job_id=other state=completed\u2028x\x1b[31m"


def test_control_characters_in_an_error_message_are_escaped() -> None:
    client, _ = client_with(
        (400, {"message": FORGED}, {}),
        (503, {"message": FORGED}, {}),
        (200, {"id": "g", "status": "error", "error": {"name": "N\nX", "message": FORGED}}, {}),
    )
    with pytest.raises(Rejected) as rejected:
        client.create({})
    with pytest.raises(Transient) as transient:
        client.status("g")
    status = client.status("g")
    for text in (
        str(rejected.value),
        str(transient.value),
        status.error_message or "",
        status.error_name or "",
    ):
        assert "\r" not in text and "\n" not in text
        assert "\u2028" not in text and "\x1b" not in text
    assert "bad input\\x0d\\x0aevent=job.finished" in str(rejected.value)
    assert "\\u2028x\\x1b[31m" in (status.error_message or "")
    assert status.error_name == "N\\x0aX"


def test_control_characters_in_a_generation_id_are_escaped_and_it_is_capped() -> None:
    client, _ = client_with(
        (200, {"id": "g1\r\nevent=forged", "status": "queued"}, {}),
        (200, {"id": "g" * 5000, "status": "queued"}, {}),
        (200, {"id": 12345, "status": "queued"}, {}),
    )
    forged = client.create({}).generation_id
    assert "\r" not in forged and "\n" not in forged
    assert forged == "g1\\x0d\\x0aevent=forged"
    long = client.create({}).generation_id
    assert long.startswith("g" * MAX_ID_LENGTH) and len(long) < MAX_ID_LENGTH + 40
    assert client.create({}).generation_id == "12345"


def test_a_huge_error_message_is_capped() -> None:
    message = "m" * (900 * 1024)
    client, _ = client_with(
        (400, {"message": message}, {}),
        (400, message.encode(), {"Content-Type": "text/plain"}),
        (200, {"id": "g", "status": "error", "error": {"message": message}}, {}),
    )
    for _ in range(2):
        with pytest.raises(Rejected) as info:
            client.create({})
        assert len(str(info.value)) < 600
        assert "more characters)" in str(info.value)
    status = client.status("g")
    assert status.error_message is not None and len(status.error_message) < 600


NESTED = b"[" * 100_000 + b"]" * 100_000  # 200 KB, under the size cap


@pytest.mark.parametrize("code", [200, 400, 503])
def test_deeply_nested_json_is_a_classified_error(code: int) -> None:
    client, _ = client_with((code, NESTED, {}))
    with pytest.raises(UpstreamError):
        client.status("g")


def test_credits_too_large_for_a_float_are_ignored_with_a_note() -> None:
    body = (
        b'{"id": "g", "status": "completed", "video": {"url": "https://cdn/v.mp4"}, '
        b'"meta": {"usage": {"credits_used": 1' + b"0" * 400 + b"}}}"
    )
    client, _ = client_with((200, body, {}))
    status = client.status("g")
    assert status.credits_used is None and status.note is not None


def test_one_hostile_answer_does_not_sink_the_rest_of_the_batch() -> None:
    client, _ = client_with((200, {"id": "a", "status": "generating"}, {}), (200, NESTED, {}))
    answers = all_answers(client, [("a", 1.0), ("b", 1.0)])
    assert isinstance(answers[0], Status)
    assert isinstance(answers[1], UpstreamProtocolError)


# --- credits ---------------------------------------------------------------------------------


def completed(credits: Any) -> bytes:
    data = {
        "id": "g",
        "status": "completed",
        "video": {"url": "https://cdn/v.mp4"},
        "meta": {"usage": {"credits_used": credits}},
    }
    return json.dumps(data).encode()  # NaN and Infinity come out as JSON's extensions


@pytest.mark.parametrize(
    "credits", [float("nan"), float("inf"), float("-inf"), -5, "12", True, {"n": 1}]
)
def test_credits_that_are_not_a_finite_non_negative_number_are_ignored_with_a_note(
    credits: Any,
) -> None:
    client, _ = client_with((200, completed(credits), {}))
    status = client.status("g")
    assert status.status == "completed" and status.video_url == "https://cdn/v.mp4"
    assert status.credits_used is None
    assert status.note is not None and "credits_used" in status.note


@pytest.mark.parametrize(("credits", "kept"), [(7.5, 7.5), (0, 0.0), (210, 210.0)])
def test_finite_non_negative_credits_are_kept(credits: Any, kept: float) -> None:
    client, _ = client_with((200, completed(credits), {}))
    status = client.status("g")
    assert status.credits_used == kept and status.note is None
