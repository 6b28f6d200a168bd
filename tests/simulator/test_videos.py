"""The simulator serves a real, playable MP4 at the ``video.url`` it reports, on both
front ends (the threaded server and the asyncio one)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from simulator import Simulator
from simulator.aio import AioSimulator
from simulator.model import SimConfig
from simulator.videos import VIDEO
from worker.settings import MODEL_ID

KEY = "sim-key"
PATH = "/video/generations"


def boxes(data: bytes) -> list[tuple[str, bytes]]:
    """The top-level ISO BMFF boxes of ``data``: (type, payload); raises on a bad size."""
    found, at = [], 0
    while at < len(data):
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        assert 8 <= size <= len(data) - at, f"bad box size {size} at {at}"
        found.append((kind.decode("latin-1"), data[at + 8 : at + size]))
        at += size
    return found


def test_the_sample_is_a_small_faststart_h264_mp4() -> None:
    top = boxes(VIDEO)
    kinds = [kind for kind, _ in top]
    assert kinds[0] == "ftyp" and "moov" in kinds and "mdat" in kinds
    assert kinds.index("moov") < kinds.index("mdat")  # playable before fully loaded
    moov = dict(top)["moov"]
    assert b"trak" in moov and b"avc1" in moov and b"avcC" in moov  # an H.264 track
    assert len(dict(top)["mdat"]) > 1000 and len(VIDEO) < 50_000


def create_and_wait(base_url: str) -> str:
    """Create a generation on a simulator and poll until it reports its video URL."""
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": MODEL_ID, "image_url": "https://x/y.png", "prompt": "[sim:time=0.1]"}
    gen_id = requests.post(base_url + PATH, json=body, headers=headers, timeout=5).json()["id"]
    for _ in range(200):
        answer = requests.get(
            base_url + PATH, params={"generation_id": gen_id}, headers=headers, timeout=5
        ).json()
        if answer["status"] == "completed":
            return str(answer["video"]["url"])
        time.sleep(0.02)
    raise AssertionError("the generation did not complete")


@pytest.fixture(scope="module")
def threaded() -> Iterator[str]:
    sim = Simulator(api_key=KEY).start()
    yield sim.base_url
    sim.stop()


@pytest.fixture(scope="module")
def aio() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    loop = asyncio.new_event_loop()
    sim = AioSimulator(SimConfig(api_key=KEY))
    server = loop.run_until_complete(asyncio.start_server(sim.handle, "127.0.0.1", port))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/v2"
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.mark.parametrize("front", ["threaded", "aio"])
def test_the_video_url_serves_the_mp4(front: str, request: pytest.FixtureRequest) -> None:
    url = create_and_wait(request.getfixturevalue(front))
    got = requests.get(url, timeout=5)
    assert got.status_code == 200 and got.content == VIDEO
    assert got.headers["Content-Type"] == "video/mp4"
    assert got.headers["Content-Length"] == str(len(VIDEO))
    head = requests.head(url, timeout=5)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(VIDEO))
    base = url.split("/_sim/")[0]
    unknown = requests.get(base + "/_sim/videos/0123abcd.mp4", timeout=5)
    assert unknown.status_code == 404
    assert requests.head(base + "/_sim/videos/0123abcd.mp4", timeout=5).status_code == 404


def test_a_video_before_completion_or_past_expiry_is_refused(threaded: str) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": MODEL_ID, "image_url": "https://x/y.png", "prompt": "[sim:never]"}
    gen_id = requests.post(threaded + PATH, json=body, headers=headers, timeout=5).json()["id"]
    base = threaded.removesuffix("/v2")
    assert requests.get(f"{base}/_sim/videos/{gen_id}.mp4", timeout=5).status_code == 404
    url = create_and_wait(threaded)
    assert "?expires=" in url  # the threaded simulator's links expire, like signed ones
    past = url.split("?")[0] + f"?expires={int(time.time()) - 10}"
    assert requests.get(past, timeout=5).status_code == 403
    for unreadable in ("nan", "soon"):
        forged = url.split("?")[0] + f"?expires={unreadable}"
        assert requests.get(forged, timeout=5).status_code == 403


def test_chromium_plays_the_video(threaded: str, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "install chromium (scripts/test.sh does)"
    url = create_and_wait(threaded)
    page = (
        f'<video id=v muted src="{url}"></video><p id=o>pending</p><script>'
        "const v=document.getElementById('v'),o=document.getElementById('o');"
        "v.onloadedmetadata=()=>{o.textContent='duration='+v.duration};"
        "v.onerror=()=>{o.textContent='error'};</script>"
    )
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    (tmp_path / "page.html").write_text(page)  # not data: (Chromium blocks loopback there)
    command += ["--virtual-time-budget=5000", "--dump-dom", (tmp_path / "page.html").as_uri()]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout
    assert 'id="o">duration=2<' in dom, dom[-300:]
