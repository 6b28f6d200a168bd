"""``videoq simulator --state FILE`` keeps its generations across a restart."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from simulator import Simulator
from simulator.state import load_generations
from worker.settings import MODEL_ID

KEY = "sim-key"
PATH = "/v2/video/generations"
HEADERS = {"Authorization": f"Bearer {KEY}"}


class SimProcess:
    """``videoq simulator`` as a real process, with --state."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        script = Path(sys.executable).with_name("videoq")
        command = [str(script), "simulator", "--port", str(self.port), "--state", str(self.state)]
        self.proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()  # "simulator listening on 127.0.0.1:PORT: ..."
        match = re.search(r"listening on [^ ]+:(\d+)", line)
        assert match, line
        self.port = int(match.group(1))

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: nothing is saved at exit; each create already was
        self.proc.wait(10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[SimProcess]:
    process = SimProcess(tmp_path / "sim-state.json")
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.kill()


def status(url: str, gen_id: str) -> requests.Response:
    return requests.get(url + PATH, params={"generation_id": gen_id}, headers=HEADERS, timeout=5)


def test_a_generation_survives_a_killed_simulator(sim_process: SimProcess) -> None:
    sim_process.start()
    body = {"model": MODEL_ID, "image_url": "https://x/y.png", "prompt": "[sim:time=1.5]"}
    created = requests.post(sim_process.url + PATH, json=body, headers=HEADERS, timeout=5)
    gen_id = created.json()["id"]
    assert status(sim_process.url, gen_id).json()["status"] in ("queued", "generating")
    sim_process.kill()
    sim_process.start()  # the same port, as a worker's AIMLAPI_BASE_URL would expect
    for _ in range(300):
        answer = status(sim_process.url, gen_id)
        assert answer.status_code == 200, answer.text  # not 404: it was not forgotten
        if answer.json()["status"] == "completed":
            break
        time.sleep(0.02)
    assert answer.json()["status"] == "completed"
    video = requests.get(answer.json()["video"]["url"], timeout=5)
    assert video.status_code == 200 and video.headers["Content-Type"] == "video/mp4"
    assert not [p for p in sim_process.state.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_reset_is_saved_too_and_a_bad_file_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    sim = Simulator(state_file=state, api_key=KEY).start()
    try:
        body = {"model": MODEL_ID, "image_url": "https://x/y.png"}
        requests.post(sim.base_url + "/video/generations", json=body, headers=HEADERS, timeout=5)
        assert len(load_generations(state)) == 1
        requests.post(f"http://127.0.0.1:{sim.port}/_sim/reset", timeout=5)
        assert load_generations(state) == {}
    finally:
        sim.stop()
    state.write_text(json.dumps({"generations": [{"id": "x"}]}))
    with pytest.raises(ValueError, match="is not a simulator state file"):
        Simulator(state_file=state)
    state.write_text("{")
    cli = Path(sys.executable).with_name("videoq")
    refused = subprocess.run(
        [str(cli), "simulator", "--port", "0", "--state", str(state)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2 and "is not a simulator state file" in refused.stderr
