"""The job commands without a worker: list, cancel, ids by their start, --output json,
Ctrl-C during --wait and a closed stdout."""

from __future__ import annotations

import json
import os
import sys

import pytest

from producers.cli import main
from producers.client import Client
from worker.request import parse_request
from worker.settings import Settings
from worker.states import JobState

IMG = "https://example.com/a.png"


@pytest.fixture
def client(env: Settings) -> Client:
    """A client, and the CLI's environment pointing at the same Redis and prefix."""
    return Client(settings=env)


def stored(client: Client, job_id: str, accepted_at: float) -> str:
    client.store.create(
        job_id,
        parse_request({"image_url": IMG, "prompt": job_id}),
        accepted_at=accepted_at,
        deadline_at=accepted_at + 1e6,
        book=True,
    )
    return job_id


def ended(client: Client, job_id: str, state: JobState, **fields: object) -> None:
    client.store.transition(job_id, [JobState.QUEUED], state, fields)


def test_list_shows_the_newest_first(client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    now = 1e9 * 2
    for n, age in enumerate([300, 5, 7200, 90]):
        stored(client, f"job{n}-{'x' * 20}", now - age)
    ended(client, "job2-" + "x" * 20, JobState.COMPLETED, video_url="https://v/2.mp4")
    ended(client, "job3-" + "x" * 20, JobState.FAILED, error_kind="deadline", error_message="late")
    ids = [job.id for job in client.recent()]
    assert [i[:4] for i in ids] == ["job1", "job3", "job0", "job2"]

    assert main(["list"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["ID", "STATE", "AGE", "VIDEO", "OR", "ERROR"]
    assert [r.split()[:2] for r in rows] == [
        ["job1-xxxxxxx", "queued"],
        ["job3-xxxxxxx", "failed"],
        ["job0-xxxxxxx", "queued"],
        ["job2-xxxxxxx", "completed"],
    ]
    assert rows[1].endswith("deadline: late") and rows[3].endswith("https://v/2.mp4")

    assert main(["list", "--state", "queued", "--limit", "1", "--json"]) == 0
    (only,) = json.loads(capsys.readouterr().out)
    assert only["id"] == ids[0] and only["state"] == "queued"

    assert main(["list", "--state", "cancelled"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "no jobs cancelled" in err
    assert main(["list", "--state", "cancelled", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize("limit", ["0", "1001", "many"])
def test_list_refuses_a_bad_limit(client: Client, limit: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["list", "--limit", limit])
    assert info.value.code == 2


def test_a_job_is_found_by_the_start_of_its_id(
    client: Client, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = stored(client, "0123456789abcdef", 1e9)
    stored(client, "fedcba98-one", 1e9)
    stored(client, "fedcba98-two", 1e9)

    assert main(["status", "01234567", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == job_id
    assert main(["status", "fedcba98"]) == 2  # two jobs: which?
    err = capsys.readouterr().err
    assert "fedcba98-one" in err and "fedcba98-two" in err and "more characters" in err
    assert main(["status", "0123456"]) == 2  # too short to stand for an id
    assert "at least 8 characters" in capsys.readouterr().err
    assert main(["status", "01234567x"]) == 1  # no such job
    assert main(["status", "????????"]) == 1  # glob characters match only themselves
    assert "no job with id '????????'" in capsys.readouterr().err

    def no_scan(*args: object) -> list[str]:
        raise AssertionError("a full id needs no SCAN")

    monkeypatch.setattr(type(client.store), "ids_starting_with", no_scan)
    assert main(["status", job_id]) == 0
    assert job_id[:12] in capsys.readouterr().out


def test_cancel(client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = stored(client, "cafe0123456789ab", 1e9)
    assert main(["cancel", job_id[:8]]) == 0
    out, err = capsys.readouterr()
    assert "cancelled" in out and err == ""
    assert client.get(job_id).state is JobState.CANCELLED
    assert not client.store.redis.zscore(client.store.keys.creates(), job_id)  # never created

    assert main(["cancel", job_id, "--json"]) == 0  # again: the same answer
    out, err = capsys.readouterr()
    assert json.loads(out)["state"] == "cancelled" and "already cancelled" in err

    done = stored(client, "d0e0123456789abc", 1e9)
    ended(client, done, JobState.COMPLETED, video_url="https://v/1.mp4")
    assert main(["cancel", done]) == 1
    out, err = capsys.readouterr()
    assert "completed" in out and "had already ended (completed); nothing to cancel" in err
    assert client.get(done).state is JobState.COMPLETED

    assert main(["cancel", "no-such-job"]) == 1
    assert "no job with id 'no-such-job'" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["list"], ["cancel", "0123456789"]])
def test_list_and_cancel_without_redis_exit_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    from producers.local import free_port

    monkeypatch.setenv("VIDEOQ_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("VIDEOQ_REDIS_RETRIES", "0")
    assert main(command) == 3
    assert "unreachable" in capsys.readouterr().err


def test_submit_output_json_prints_the_record(
    client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", "--image-url", IMG, "--prompt", "as json", "--output", "json"]) == 0
    out, err = capsys.readouterr()
    record = json.loads(out)
    assert len(out.splitlines()) == 1
    assert record["state"] == "queued" and record["request"]["prompt"] == "as json"
    assert f"videoq status {record['id']}" in err


def test_ctrl_c_during_wait_says_the_job_runs_on(
    client: Client, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Client, "wait", interrupted)
    assert main(["submit", "--image-url", IMG, "--wait"]) == 130
    out, err = capsys.readouterr()
    job_id = out.strip()
    (line,) = err.splitlines()
    assert f"job {job_id} keeps running" in line and f"videoq status {job_id}" in line
    assert client.get(job_id).state is JobState.QUEUED


def test_a_closed_stdout_ends_the_command_quietly(
    client: Client, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``videoq list | head -1``: the reader is gone; no BrokenPipeError escapes, and
    what is left to write goes nowhere."""
    for n in range(3):
        stored(client, f"pipe{n}-0123456789", 1e9 + n)
    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, "w") as closed:
        monkeypatch.setattr(sys, "stdout", closed)
        assert main(["list"]) == 141
        print("more", file=closed, flush=True)  # stdout now goes to /dev/null
    assert capsys.readouterr().err == ""


def test_a_broken_pipe_that_is_not_stdout_is_not_hidden(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only our reader going away is quiet: a BrokenPipeError from anything else (a peer,
    a child process) while stdout is fine is a real error."""
    import producers.commands

    def peer_gone(args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(producers.commands, "run", peer_gone)
    read_end, write_end = os.pipe()
    try:
        with open(write_end, "w") as working:
            monkeypatch.setattr(sys, "stdout", working)
            with pytest.raises(BrokenPipeError):
                main(["list"])
    finally:
        os.close(read_end)
