"""Log lines: logfmt by default, JSON on request; the key is masked in both."""

from __future__ import annotations

import json
import logging

import pytest

from worker import logs

SECRET = "sk-secret-0123456789"


def test_events_are_logfmt_with_job_id_state_and_attempt(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="videoq"):
        logs.event(
            "job.finished", job_id="j1", state="completed", attempt=3, error=None, note="two words"
        )
    assert caplog.records[-1].getMessage() == (
        'event=job.finished job_id=j1 state=completed attempt=3 note="two words"'
    )


def test_json_format_has_the_fields_and_masks_the_key() -> None:
    formatter = logs.JsonFormatter([SECRET])
    record = logging.LogRecord("videoq", logging.WARNING, __file__, 1, "ignored", None, None)
    record.videoq_event = "poll.transient_error"
    record.videoq_fields = {
        "job_id": "j1",
        "state": "generating",
        "attempt": 2,
        "error": f"HTTP 401: bad key {SECRET}",
        "late": 1.5,
    }
    line = formatter.format(record)
    data = json.loads(line)
    assert data["event"] == "poll.transient_error"
    assert (data["job_id"], data["state"], data["attempt"], data["late"]) == (
        "j1",
        "generating",
        2,
        1.5,
    )
    assert data["level"] == "WARNING" and data["ts"].endswith("+00:00")
    assert SECRET not in line and "***" in data["error"]
    plain = logging.LogRecord("celery", logging.INFO, __file__, 1, "key %s", (SECRET,), None)
    assert json.loads(formatter.format(plain))["message"] == "key ***"


# --- clean: untrusted text made safe to store and log ------------------------------------------


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("a\rb", "a\\x0db"),
        ("a\nb", "a\\x0ab"),
        ("nul\x00 tab\t esc\x1b[31m", "nul\\x00 tab\\x09 esc\\x1b[31m"),
        ("del\x7f c1\x85\x9b", "del\\x7f c1\\x85\\x9b"),
        ("line\u2028para\u2029end", "line\\u2028para\\u2029end"),
        ("plain text, é ✓ 日本", "plain text, é ✓ 日本"),
        ("", ""),
    ],
)
def test_clean_escapes_control_characters(raw: str, escaped: str) -> None:
    assert logs.clean(raw) == escaped


def test_clean_caps_the_length_and_says_how_much_was_cut() -> None:
    assert logs.clean("x" * 10, 10) == "x" * 10
    assert logs.clean("x" * 25, 10) == "x" * 10 + "... (15 more characters)"
    # the cap applies to the escaped text: an escape never lets the result grow past it
    capped = logs.clean("\n" * 1000, 100)
    assert capped.startswith("\\x0a" * 25) and capped.endswith("(3900 more characters)")
    assert len(logs.clean("m" * 900_000, 500)) < 530


# --- mask: the key, in any case, and partial copies of it -------------------------------------


def test_mask_hides_the_secret_in_any_letter_case() -> None:
    assert logs.mask(f"key={SECRET}.", [SECRET]) == "key=***."
    assert logs.mask(f"key={SECRET.upper()} and {SECRET.swapcase()}", [SECRET]) == (
        "key=*** and ***"
    )


@pytest.mark.parametrize("part", [SECRET[:8], SECRET[:12], SECRET[-8:], SECRET[3:15].upper()])
def test_mask_hides_a_partial_copy_of_eight_characters_or_more(part: str) -> None:
    masked = logs.mask(f"got [{part}] back", [SECRET])
    assert masked == "got [***] back"


def test_mask_leaves_short_runs_and_short_secrets_alone() -> None:
    assert logs.mask(f"prefix {SECRET[:7]} only", [SECRET]) == f"prefix {SECRET[:7]} only"
    assert logs.mask("abc abc", ["abc"]) == "abc abc"  # under 4 characters: not a secret
    assert logs.mask("nothing here", [SECRET, ""]) == "nothing here"
    assert logs.mask(f"{SECRET} and sk-other", [SECRET, "sk-other"]) == "*** and ***"


def test_redaction_filter_masks_a_case_variant_in_any_record() -> None:
    record = logging.LogRecord(
        "urllib3", logging.DEBUG, __file__, 1, "auth %s", (SECRET.upper()[:12],), None
    )
    logs.RedactSecrets([SECRET]).filter(record)
    assert record.getMessage() == "auth ***"


# --- logfmt: one event, one line ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "a\rb",
        "a\nevent=forged level=ERROR",
        "a\u2028b",
        "a\r\n\u2029\x85b",
        'quote " and \\ backslash\n',
    ],
)
def test_a_logfmt_value_with_line_breaks_stays_on_one_line(
    caplog: pytest.LogCaptureFixture,
    value: str,
) -> None:
    with caplog.at_level(logging.INFO, logger="videoq"):
        logs.event("upstream.error", job_id="j1", error=value)
    line = caplog.records[-1].getMessage()
    assert line.startswith("event=upstream.error job_id=j1 error=")
    assert len(line.splitlines()) == 1
    assert not any(c in line for c in "\r\n\u2028\u2029\x85")


def test_a_logfmt_value_with_a_forged_field_is_quoted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="videoq"):
        logs.event("x", error="ok\nevent=job.finished state=completed")
    # the escape's backslash is itself escaped inside the quotes: a logfmt reader
    # gets back the text "ok\x0aevent=...", as one value
    assert caplog.records[-1].getMessage() == (
        'event=x error="ok\\\\x0aevent=job.finished state=completed"'
    )
