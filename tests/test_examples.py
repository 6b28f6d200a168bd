"""The examples: the example web app, and every code block in README.md and docs/.

The web app renders what a job holds without trusting it. The code blocks are run, or
checked, as their marker says (see below).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from examples.flask_app import create_app
from producers.local import RedisServer, free_port, start_worker, stop_process
from simulator import Simulator
from worker.job import Job, JobError
from worker.states import JobState

ROOT = Path(__file__).resolve().parent.parent


class OneJob:
    def __init__(self, job: Job) -> None:
        self.job = job

    def get(self, job_id: str) -> Job:
        return self.job


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "JAVASCRIPT:alert(1)", "file:///etc/passwd", "data:text/html,x"]
)
def test_a_video_url_that_is_not_http_is_never_a_link(url: str) -> None:
    job = Job(id="j1", state=JobState.COMPLETED, video_url=url)
    page = create_app(OneJob(job)).test_client().get("/jobs/j1").get_data(as_text=True)  # type: ignore[arg-type]
    assert "href" not in page
    assert "alert(1)" not in page or "<a" not in page


def test_an_http_video_url_is_a_link_and_text_is_escaped() -> None:
    job = Job(id="j1", state=JobState.COMPLETED, video_url='https://cdn.example/v.mp4?a="b"')
    page = create_app(OneJob(job)).test_client().get("/jobs/j1").get_data(as_text=True)  # type: ignore[arg-type]
    assert 'href="https://cdn.example/v.mp4?a=&quot;b&quot;"' in page
    failed = Job(id="j2", state=JobState.FAILED, error=JobError("upstream_error", "<script>x"))
    page = create_app(OneJob(failed)).test_client().get("/jobs/j2").get_data(as_text=True)  # type: ignore[arg-type]
    assert "<script>" not in page and "&lt;script&gt;x" in page


# --- the examples in README.md and docs/ ---------------------------------------------------
#
# Every fenced code block in README.md and docs/*.md is either a ``text`` block (a diagram,
# no code) or is preceded by a marker that says how this file covers it:
#
#   <!-- example: run -->           run as written against a private stack: Redis, the
#                                   simulator, one worker and the HTTP gateway (Python
#                                   blocks are executed in this process; shell blocks by
#                                   bash, with the gateway's port in place of 8080);
#   <!-- example: check -->         shell commands too slow or too big to run here (the
#                                   demo, the test command, docker, kubectl, the bench):
#                                   every command, option and file they name must exist;
#   <!-- example: cli-synopsis -->  the CLI's synopsis: every command and option it shows
#                                   must be in that command's --help.

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!-- example: ([a-z-]+) -->$")
KINDS = {"run", "check", "cli-synopsis"}
SIM_KEY = "sim-key"
GATEWAY_TOKEN = "tok_live_1"


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    kind: str | None
    code: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def code_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, each with the marker before it."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        lang = lines[i][3:].strip()
        before = next((ln.strip() for ln in reversed(lines[:i]) if ln.strip()), "")
        marker = MARKER.match(before)
        end = lines.index("```", i + 1)
        code = "\n".join(lines[i + 1 : end]) + "\n"
        found.append(Block(page, i + 1, lang, marker.group(1) if marker else None, code))
        i = end + 1
    return found


BLOCKS = [b for page in PAGES for b in code_blocks(page)]


def blocks_of(kind: str, lang: str | None = None) -> list[Any]:
    return [
        pytest.param(b, id=b.name)
        for b in BLOCKS
        if b.kind == kind and (lang is None or b.lang == lang)
    ]


def test_every_code_block_is_text_or_covered_by_a_test() -> None:
    assert len(BLOCKS) >= 10
    uncovered = [
        b.name
        for b in BLOCKS
        if b.lang != "text" and (b.kind not in KINDS or b.lang not in ("python", "sh"))
    ]
    assert uncovered == [], f"blocks with no (or an unknown) example marker: {uncovered}"
    assert {b.page.name for b in BLOCKS if b.kind == "run"} >= {
        "README.md",
        "python-client.md",
        "cli.md",
        "http-api.md",
    }


# --- check: every command, option and file named exists ------------------------------------


@functools.cache
def help_text(*command: str) -> str:
    done = subprocess.run(
        [sys.executable, *command, "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"{command} --help failed: {done.stderr[-1000:]}"
    return done.stdout


def known_env_names() -> set[str]:
    from worker.settings import Settings

    return {
        str(f.validation_alias.choices[0])  # type: ignore[union-attr]
        if f.validation_alias
        else f"VIDEOQ_{n.upper()}"
        for n, f in Settings.model_fields.items()
    }


def shell_commands(code: str, synopsis: bool = False) -> list[list[str]]:
    """Each command of a shell block as words: continuations joined, comments, ``&&``
    and a trailing ``&`` split off; a synopsis's indented lines continue the last."""
    text = code.replace("\\\n", " ")
    commands: list[str] = []
    for line in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line)
        if synopsis and line.startswith(" ") and commands:
            commands[-1] += line
        elif line.strip():
            commands.extend(part.strip().rstrip("&").strip() for part in line.split("&&"))
    return [shlex.split(c) for c in commands if c]


def options(words: list[str]) -> list[str]:
    return [w.strip("[]").split("=")[0] for w in words if w.strip("[").startswith("--")]


def check_videoq(words: list[str]) -> None:
    subcommands = [words[1]]
    rest = words[2:]
    while rest[:1] == ["|"]:  # videoq flower | metrics | health
        subcommands.append(rest[1])
        rest = rest[2:]
    for sub in subcommands:
        text = help_text("-m", "producers", sub)
        for option in options(rest):
            assert option in text, f"videoq {sub} has no {option}"


def check_python_m(args: list[str]) -> None:
    assert args[:1] == ["-m"], args
    if args[1] == "venv":
        return
    text = help_text("-m", args[1])
    for option in options(args[2:]):
        assert option in text, f"python -m {args[1]} has no {option}"


def check_pip(args: list[str]) -> None:
    assert args[:2] == ["install", "-e"], args
    extras = pyproject()["project"]["optional-dependencies"]
    for target in args[2:]:
        assert target.startswith(".")
        for extra in re.findall(r"[a-z]+", target.partition("[")[2]):
            assert extra in extras, f"no extra {extra!r} in pyproject.toml"


def check_test_command(args: list[str]) -> None:
    assert (ROOT / args[0]).is_file()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert " ".join(["bash", *args]) == ci, "the documented test command is not what CI runs"


def check_docker(args: list[str]) -> None:
    assert args[:1] == ["compose"], args
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for scale in (a for a in args if "=" in a and not a.startswith("-")):
        assert scale.split("=")[0] in services, f"no service {scale}"
    if "--profile" in args:
        profile = args[args.index("--profile") + 1]
        assert any(profile in s.get("profiles", []) for s in services.values())


def check_kubectl(args: list[str]) -> None:
    assert args[:2] == ["apply", "-k"], args
    assert (ROOT / args[2] / "kustomization.yaml").is_file()


def check_activate(args: list[str]) -> None:
    assert args == [".venv/bin/activate"], args


CHECKS: dict[str, Callable[[list[str]], None]] = {
    "videoq": lambda args: check_videoq(["videoq", *args]),
    "python": check_python_m,
    "python3": check_python_m,
    "pip": check_pip,
    "bash": check_test_command,
    "docker": check_docker,
    "kubectl": check_kubectl,
    ".": check_activate,
}


def check_command(words: list[str]) -> None:
    while words and re.match(r"^[A-Z_]+=", words[0]):
        name = words.pop(0).split("=")[0]
        assert name in known_env_names(), f"{name} is not a setting"
    program, args = words[0], words[1:]
    assert program in CHECKS, f"no check for the command {program!r}: run it or add one"
    CHECKS[program](args)


def pyproject() -> dict[str, Any]:
    import tomllib

    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


@pytest.mark.parametrize("block", blocks_of("check") + blocks_of("cli-synopsis"))
def test_checked_examples_name_only_what_exists(block: Block) -> None:
    commands = shell_commands(block.code, synopsis=block.kind == "cli-synopsis")
    assert commands
    for words in commands:
        check_command(words)


def test_the_checker_refuses_what_does_not_exist() -> None:
    for bad in (
        "videoq submit --image-url U --no-such-option",
        "videoq nosuchcommand",
        "VIDEOQ_NO_SUCH_SETTING=1 videoq worker",
        "rm -rf build",
        "docker compose up --scale nosuchservice=2",
    ):
        with pytest.raises(AssertionError):
            for words in shell_commands(bad):
                check_command(words)


# --- run: against a private stack -----------------------------------------------------------


@dataclass
class Stack:
    env: dict[str, str]
    gateway_port: int
    sim: Simulator


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A Redis of its own (the examples use the default key prefix and queue), the
    simulator, one worker and the gateway."""
    server = RedisServer().start() if shutil.which("redis-server") else None
    sim = Simulator(api_key=SIM_KEY, generation_time=2.0).start()
    logs = tmp_path_factory.mktemp("examples")
    env = {
        "VIDEOQ_REDIS_URL": server.url if server else redis_url,
        "AIMLAPI_BASE_URL": sim.base_url,
        "AIMLAPI_KEY": SIM_KEY,
        "VIDEOQ_POLL_INTERVAL": "0.5",
        "VIDEOQ_DEADLINE": "60",
        "VIDEOQ_ALLOW_PRIVATE_URLS": "true",  # the simulator's video URLs are on loopback
        "VIDEOQ_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"example-secret").decode(),
        "VIDEOQ_API_TOKENS": GATEWAY_TOKEN,
    }
    procs = []
    try:
        with (logs / "worker.log").open("wb") as log:
            procs.append(start_worker(env, log, name="examples"))
        port = free_port()
        with (logs / "gateway.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "producers", "serve", "--port", str(port)],
                    env={**os.environ, **env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        wait_until(lambda: b" ready." in (logs / "worker.log").read_bytes(), logs)
        wait_until(lambda: gateway_up(port), logs)
        yield Stack(env, port, sim)
    finally:
        for proc in procs:
            stop_process(proc)
        sim.stop()
        if server:
            server.cleanup()


def gateway_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def wait_until(ready: Callable[[], bool], logs: Path, timeout: float = 30) -> None:
    give_up = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > give_up:
            text = "\n".join(p.read_text(errors="replace")[-2000:] for p in logs.iterdir())
            raise AssertionError(f"the examples' stack did not start:\n{text}")
        time.sleep(0.1)


@pytest.mark.parametrize("block", blocks_of("run", "python"))
def test_python_examples_run(block: Block, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    namespace: dict[str, Any] = {"__name__": f"example_{block.line}"}
    exec(compile(block.code, block.name, "exec"), namespace)
    from producers import Client, JobNotFound, JobState

    client = Client()
    if "job" in namespace:  # a job the example waited for
        assert namespace["job"].state == JobState.COMPLETED, namespace["job"]
    if "result" in namespace:  # a task sent by name: the worker records it as a job
        job_id = namespace["result"].id
        give_up = time.monotonic() + 30
        while True:
            try:
                job = client.wait(job_id, timeout=60)
                break
            except JobNotFound:
                assert time.monotonic() < give_up, f"no job {job_id} was recorded"
                time.sleep(0.1)
        assert job.state == JobState.COMPLETED, job
    if "app" in namespace:  # a webhook receiver: a signed delivery is taken, others refused
        from worker.signatures import headers_for

        body = json.dumps({"id": "j1", "state": "completed", "video_url": "https://v"}).encode()
        headers = headers_for(
            stack.env["VIDEOQ_WEBHOOK_SECRET"], "j1.completed", int(time.time()), body
        )
        web = namespace["app"].test_client()
        assert web.post("/hooks/videoq", data=body, headers=headers).status_code == 204
        forged = {**headers, "webhook-signature": "v1,AAAA"}
        assert web.post("/hooks/videoq", data=body, headers=forged).status_code == 400


@pytest.mark.parametrize("block", blocks_of("run", "sh"))
def test_shell_examples_run(block: Block, stack: Stack) -> None:
    code = block.code.replace("localhost:8080", f"localhost:{stack.gateway_port}")
    bindir = str(Path(sys.executable).parent)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        env={**os.environ, **stack.env, "PATH": f"{bindir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{block.name} failed:\n{done.stdout}\n{done.stderr}"
    assert done.stdout.strip(), f"{block.name} printed nothing"
