"""The CLI without a worker: help, bad input, status of unknown jobs, exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from producers.cli import main
from worker.settings import Settings

IMG = "https://example.com/a.png"


@pytest.mark.parametrize("command", ["worker", "submit", "status", "simulator", "demo"])
def test_help_for_every_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert f"usage: videoq {command}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--image-url", "ftp://x/y.png"], "image_url"),
        (["--image-url", IMG, "--duration", "7"], "duration"),
        (["--image-url", IMG, "--cfg-scale", "1.2"], "cfg_scale"),
        (["--image-url", IMG, "--cfg-scale", "lots"], "cfg_scale"),
        (["--image-url", IMG, "--static-mask", "nope"], "static_mask"),
        (["--image-url", IMG, "--dynamic-masks", "[{]"], "dynamic_masks"),
        (
            [
                "--image-url",
                IMG,
                "--dynamic-masks",
                json.dumps([{"mask": IMG, "trajectories": [{"x": 1, "y": 2}]}]),
            ],
            "dynamic_masks.0.trajectories",
        ),
        (["--image-url", IMG, "--camera-control", '{"type": "zoom"}'], "camera_control.type"),
        (["--image-url", IMG, "--idempotency-key", ""], "idempotency_key"),
    ],
)
def test_bad_input_exits_2_naming_the_field_and_enqueues_nothing(
    env: Settings,
    args: list[str],
    field: str,
    capsys: pytest.CaptureFixture[str],
    rclient: object,
) -> None:
    try:
        code = main(["submit", *args])
    except SystemExit as exc:  # argparse's own refusals (not a number, not JSON)
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert field in err
    assert rclient.llen(env.queue) == 0  # type: ignore[attr-defined]
    assert not list(rclient.scan_iter(match=f"{env.key_prefix}:*"))  # type: ignore[attr-defined]


def test_missing_image_url_is_a_usage_error(
    env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["submit", "--prompt", "x"])
    assert info.value.code == 2
    assert "--image-url" in capsys.readouterr().err


def test_submit_prints_only_the_job_id(
    env: Settings, capsys: pytest.CaptureFixture[str], rclient: object
) -> None:
    assert main(["submit", "--image-url", IMG, "--prompt", "hello"]) == 0
    out, err = capsys.readouterr()
    job_id = out.strip()
    assert len(out.splitlines()) == 1 and len(job_id) == 32
    assert job_id in err  # the human message goes to stderr
    # its create is booked for the workers (batch mode, the default)
    assert rclient.zscore(f"{env.key_prefix}:creates", job_id)  # type: ignore[attr-defined]

    assert main(["status", job_id, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    for field in (
        "id",
        "state",
        "generation_id",
        "video_url",
        "error",
        "created_at",
        "finished_at",
        "deadline_at",
    ):
        assert field in record
    assert (record["id"], record["state"]) == (job_id, "queued")
    assert isinstance(record["created_at"], float)

    assert main(["status", job_id]) == 0
    assert "queued" in capsys.readouterr().out


def test_status_of_an_unknown_job(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "no-such-job", "--json"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "no job with id 'no-such-job'" in err


def test_redis_down_exits_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from producers.local import free_port

    monkeypatch.setenv("VIDEOQ_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("VIDEOQ_REDIS_RETRIES", "1")
    assert main(["submit", "--image-url", IMG]) == 3
    assert "unreachable" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["status", "abc"], ["submit", "--image-url", IMG]])
@pytest.mark.parametrize("url", ["localhost:6379", "redis://127.0.0.1:6379/99999"])
def test_invalid_settings_are_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    url: str,
) -> None:
    monkeypatch.setenv("VIDEOQ_REDIS_URL", url)
    assert main(command) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("videoq: invalid setting VIDEOQ_REDIS_URL: ")
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_an_aliased_setting_is_named_by_its_variable() -> None:
    from pydantic import ValidationError

    from producers.cli import settings_error

    with pytest.raises(ValidationError) as info:
        Settings(aimlapi_base_url=5)
    assert settings_error(info.value).startswith("invalid setting AIMLAPI_BASE_URL: ")
    with pytest.raises(ValidationError) as info:
        Settings(max_request_bytes=10)
    assert settings_error(info.value).startswith("invalid setting VIDEOQ_MAX_REQUEST_BYTES: ")


def test_status_during_an_outage_says_the_job_is_not_affected(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from producers.local import free_port

    monkeypatch.setenv("VIDEOQ_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("VIDEOQ_REDIS_RETRIES", "0")
    assert main(["status", "abc123"]) == 3
    err = capsys.readouterr().err
    assert "could not read job abc123" in err and "the job is not affected" in err
    assert "nothing was enqueued" not in err


def test_submit_wait_that_loses_redis_after_acceptance_says_the_job_was_accepted(
    env: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from producers.client import Client
    from worker.errors import Unavailable

    def lost(self: Client, job_id: str, *args: object, **kwargs: object) -> None:
        raise Unavailable(f"could not read job {job_id}: Redis is unreachable", job_id=job_id)

    monkeypatch.setattr(Client, "wait", lost)
    assert main(["submit", "--image-url", IMG, "--wait"]) == 3
    out, err = capsys.readouterr()
    job_id = out.strip()
    assert len(job_id) == 32
    assert f"job {job_id} was accepted; following it failed: could not read job" in err
    assert "nothing was enqueued" not in err


def test_output_json_after_acceptance_prints_the_id_when_the_record_cannot_be_read(
    env: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The job was accepted: stdout names it and the exit is 0 (a script that retried on
    an error would pay for a second job), even when reading the record back fails."""
    from producers.client import Client
    from worker.errors import Unavailable

    def lost(self: Client, job_id: str, *args: object, **kwargs: object) -> None:
        raise Unavailable(f"could not read job {job_id}: Redis is unreachable", job_id=job_id)

    monkeypatch.setattr(Client, "get", lost)
    assert main(["submit", "--image-url", IMG, "--output", "json"]) == 0
    out, err = capsys.readouterr()
    job_id = json.loads(out)["id"]
    assert Client(settings=env).store.get(job_id) is not None  # it was stored
    assert f"job {job_id} was accepted; reading its record back failed" in err
    monkeypatch.setattr(Client, "wait", lost)
    assert main(["submit", "--image-url", IMG, "--wait", "--output", "json"]) == 3
    out, err = capsys.readouterr()
    assert json.loads(out) == {"id": json.loads(out)["id"]} and "was accepted" in err


def test_a_worker_that_fails_to_start_returns_a_non_zero_exit_code(
    monkeypatch: pytest.MonkeyPatch,
    make_settings: Callable[..., Settings],
) -> None:
    """Celery logs "Unrecoverable error" and its ``worker_main`` returns normally; the
    command must still exit non-zero."""
    from celery import Celery, bootsteps

    import worker.app

    class Boom(bootsteps.StartStopStep):  # type: ignore[misc]  # celery is untyped
        def start(self, parent: object) -> None:
            raise RuntimeError("cannot start")

    app = Celery("videoq-boom", broker="memory://", set_as_current=False)
    app.conf.worker_hijack_root_logger = False
    app.steps["worker"].add(Boom)
    app.videoq_settings = make_settings()
    monkeypatch.setattr(worker.app, "app", app)
    code = main(
        [
            "worker",
            "-P",
            "solo",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            "-l",
            "critical",
        ]
    )
    assert code not in (0, None)
