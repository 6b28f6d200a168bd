"""Log lines: logfmt by default, JSON on request; the key is masked in both."""

from __future__ import annotations

import json
import logging

import pytest

from worker import logs

SECRET = "sk-secret-0123456789"


def test_events_are_logfmt_with_job_id_state_and_attempt(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="videoq"):
        logs.event("job.finished", job_id="j1", state="completed", attempt=3, error=None,
                   note="two words")
    assert caplog.records[-1].getMessage() == (
        'event=job.finished job_id=j1 state=completed attempt=3 note="two words"'
    )


def test_json_format_has_the_fields_and_masks_the_key() -> None:
    formatter = logs.JsonFormatter([SECRET])
    record = logging.LogRecord("videoq", logging.WARNING, __file__, 1, "ignored", None, None)
    record.videoq_event = "poll.transient_error"
    record.videoq_fields = {"job_id": "j1", "state": "generating", "attempt": 2,
                            "error": f"HTTP 401: bad key {SECRET}", "late": 1.5}
    line = formatter.format(record)
    data = json.loads(line)
    assert data["event"] == "poll.transient_error"
    assert (data["job_id"], data["state"], data["attempt"], data["late"]) == (
        "j1", "generating", 2, 1.5)
    assert data["level"] == "WARNING" and data["ts"].endswith("+00:00")
    assert SECRET not in line and "***" in data["error"]
    plain = logging.LogRecord("celery", logging.INFO, __file__, 1, "key %s", (SECRET,), None)
    assert json.loads(formatter.format(plain))["message"] == "key ***"
