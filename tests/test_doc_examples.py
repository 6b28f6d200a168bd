"""Every code block in README.md and docs/: run, or checked, as its marker says."""

from __future__ import annotations

import base64
import functools
import json
import os
import re
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

from producers.local import RedisServer, free_port, start_worker, stop_process
from simulator import Simulator
from simulator.videos import VIDEO
from tests.doc_apps import make_a_video, web_apps
from tests.doc_checks import check_command, shell_commands

ROOT = Path(__file__).resolve().parent.parent


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
#                                   must be in that command's --help;
#   <!-- example: serve -->         the line that starts the gateway (``videoq serve``): it
#                                   is started as written, with its own settings only (on
#                                   loopback and a free port), and the page's shell
#                                   examples that call localhost:8080 call it. An example
#                                   that needs a setting its page's server line lacks fails.

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!-- example: ([a-z-]+) -->$")
KINDS = {"run", "check", "cli-synopsis", "serve"}
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
@pytest.mark.parametrize(
    "block", blocks_of("check") + blocks_of("cli-synopsis") + blocks_of("serve")
)
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


# Settings the workers of the stack have but a page's gateway gets only from its server line.
GATEWAY_SETTINGS = ("VIDEOQ_API_TOKENS", "VIDEOQ_API_ADMINS", "VIDEOQ_WEBHOOK_SECRET")


@dataclass
class Stack:
    env: dict[str, str]
    sim: Simulator
    logs: Path
    gateways: dict[Path, int]  # a page's gateway, started from its serve block
    procs: list[subprocess.Popen[bytes]]


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A Redis of its own (the examples use the default key prefix and queue), the
    simulator and one worker; each page's gateway starts on first use."""
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
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with (logs / "worker.log").open("wb") as log:
            procs.append(start_worker(env, log, name="examples"))
        wait_until(lambda: b" ready." in (logs / "worker.log").read_bytes(), logs)
        yield Stack(env, sim, logs, {}, procs)
    finally:
        for proc in procs:
            stop_process(proc)
        sim.stop()
        if server:
            server.cleanup()


def serve_line(block: Block) -> tuple[dict[str, str], list[str]]:
    """A serve block's settings and its ``videoq serve`` options, as written."""
    (words,) = shell_commands(block.code)
    settings = {}
    while words and re.match(r"^[A-Z_]+=", words[0]):
        name, _, value = words.pop(0).partition("=")
        settings[name] = value
    assert words[:2] == ["videoq", "serve"], f"{block.name}: not a `videoq serve` line"
    return settings, words[2:]


def page_gateway(page: Path, stack: Stack) -> int:
    """The port of the gateway ``page``'s serve block starts, with that line's settings
    and none of the stack's gateway settings; started once per page."""
    if page in stack.gateways:
        return stack.gateways[page]
    serves = [b for b in BLOCKS if b.page == page and b.kind == "serve"]
    assert len(serves) == 1, f"{page.name} calls the gateway: it must show one line that starts it"
    settings, options = serve_line(serves[0])
    port = free_port()
    for flag, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        if flag in options:
            options[options.index(flag) + 1] = value
        else:
            options += [flag, value]
    env = {k: v for k, v in stack.env.items() if k not in GATEWAY_SETTINGS}
    log_path = stack.logs / f"gateway-{page.stem}.log"
    with log_path.open("wb") as log:
        stack.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "producers", "serve", *options],
                env={k: v for k, v in os.environ.items() if k not in GATEWAY_SETTINGS}
                | env
                | settings,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    wait_until(lambda: gateway_up(port), stack.logs)
    stack.gateways[page] = port
    return port


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
def test_python_examples_run(
    block: Block, stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # files an example writes (a saved video) land here
    namespace: dict[str, Any] = {"__name__": f"example_{block.line}"}
    exec(compile(block.code, block.name, "exec"), namespace)
    from producers import Client, JobNotFound, JobState

    client = Client()
    for name in re.findall(r'save\((?:job, )?"([\w.-]+\.mp4)"\)', block.code):
        assert (tmp_path / name).read_bytes() == VIDEO, f"{name} is not the simulator's video"
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
    for name in web_apps(namespace):  # a web app that submits jobs: it gets a video
        answer = make_a_video(namespace, name)
        assert answer["state"] == "completed" and answer["video_url"], (name, answer)
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
    code = block.code
    if "localhost:8080" in code:
        code = code.replace("localhost:8080", f"localhost:{page_gateway(block.page, stack)}")
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
