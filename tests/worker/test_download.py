"""``Job.save`` and ``worker.download``: a video streamed to a file from a real local
HTTP server, bounded against hostile peers, never leaving a partial file."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.rawhttp import RawServer, answer, endless_chunked, silent, trickle_body
from worker.download import MAX_REDIRECTS, _umask, download_video, save_video
from worker.errors import DownloadFailed
from worker.job import Job
from worker.states import JobState

VIDEO = b"\x00\x00\x00\x20ftypisom" + bytes(range(256)) * 40


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(handler: Callable[[socket.socket, RawServer], None]) -> RawServer:
        servers.append(RawServer(handler))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def routes(table: dict[str, tuple[str, bytes, dict[str, str]]]) -> Callable[..., None]:
    """A handler answering by path: ``{path: (status, body, headers)}``, else 404."""

    def handle(conn: socket.socket, server: RawServer) -> None:
        path = server.read_request(conn).split(b" ", 2)[1].decode()
        status, body, headers = table.get(path, ("404 Not Found", b"no", {}))
        head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        server.send(conn, ("\r\n".join(head) + "\r\n\r\n").encode() + body)
        conn.close()

    return handle


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_a_video_is_saved_whole(serve: Callable[..., RawServer], tmp_path: Path) -> None:
    server = serve(answer("200 OK", VIDEO, {"Content-Type": "video/mp4"}))
    path = tmp_path / "out.mp4"
    assert save_video(server.url + "v.mp4", path, allow_private=True) == path
    assert path.read_bytes() == VIDEO
    assert leftovers(tmp_path) == ["out.mp4"]  # no temporary file left beside it
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # readable as open() makes it


def test_redirects_are_followed_a_few_times(
    serve: Callable[..., RawServer], tmp_path: Path
) -> None:
    table = {
        "/a": ("302 Found", b"", {"Location": "/b"}),
        "/b": ("307 Temporary Redirect", b"", {"Location": "c.mp4"}),  # relative
        "/c.mp4": ("200 OK", VIDEO, {}),
        "/loop": ("301 Moved Permanently", b"", {"Location": "/loop"}),
    }
    server = serve(routes(table))
    assert save_video(server.url + "a", tmp_path / "v.mp4", allow_private=True).read_bytes() == (
        VIDEO
    )
    with pytest.raises(DownloadFailed, match=f"more than {MAX_REDIRECTS} redirects"):
        save_video(server.url + "loop", tmp_path / "w.mp4", allow_private=True)
    assert leftovers(tmp_path) == ["v.mp4"]


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("http://169.254.169.254/latest/meta-data", "a redirect is refused: it points at a "),
        ("http://[::ffff:a9fe:a9fe]/", "link-local"),
        ("file:///etc/passwd", "a redirect is refused: it must be an http(s) URL, not file:"),
    ],
)
def test_a_redirect_to_a_forbidden_place_is_refused(
    serve: Callable[..., RawServer], tmp_path: Path, location: str, message: str
) -> None:
    # Loopback is allowed here (as for the simulator); link-local never is.
    server = serve(answer("302 Found", b"", {"Location": location}))
    with pytest.raises(DownloadFailed) as info:
        save_video(server.url + "v.mp4", tmp_path / "v.mp4", allow_private=True)
    assert message in str(info.value)
    assert server.connections == 1 and leftovers(tmp_path) == []


def test_private_hosts_are_refused_unless_allowed(
    serve: Callable[..., RawServer], tmp_path: Path
) -> None:
    server = serve(answer("200 OK", VIDEO))
    for url in (server.url + "v.mp4", f"http://localhost:{server.port}/v.mp4"):
        with pytest.raises(DownloadFailed, match="the video URL is refused: it points at"):
            save_video(url, tmp_path / "v.mp4", allow_private=False)
    redirect = serve(answer("302 Found", b"", {"Location": server.url + "v.mp4"}))
    with pytest.raises(DownloadFailed, match="refused"):
        save_video(redirect.url, tmp_path / "v.mp4", allow_private=False)
    assert server.connections == 0 and redirect.connections == 0
    assert leftovers(tmp_path) == []


def test_an_error_status_is_an_error_and_keeps_the_old_file(
    serve: Callable[..., RawServer], tmp_path: Path
) -> None:
    path = tmp_path / "v.mp4"
    path.write_bytes(b"the old video")
    server = serve(answer("404 Not Found", b"gone"))
    with pytest.raises(DownloadFailed, match="the video URL answered 404 Not Found, not 200"):
        save_video(server.url, path, allow_private=True)
    assert path.read_bytes() == b"the old video"
    assert leftovers(tmp_path) == ["v.mp4"]


@pytest.mark.parametrize("handler", [answer("200 OK", VIDEO), endless_chunked])
def test_a_body_over_the_cap_is_cut_off(
    serve: Callable[..., RawServer],
    tmp_path: Path,
    handler: Callable[[socket.socket, RawServer], None],
) -> None:
    server = serve(handler)
    with pytest.raises(DownloadFailed, match="the video is larger than 1000 bytes"):
        save_video(server.url, tmp_path / "v.mp4", allow_private=True, max_bytes=1000)
    assert leftovers(tmp_path) == []


def test_a_dripping_peer_is_cut_off_at_the_deadline(
    serve: Callable[..., RawServer], tmp_path: Path
) -> None:
    server = serve(trickle_body)  # a byte every 0.3 s, each well within the read timeout
    with pytest.raises(DownloadFailed, match="no complete answer within"):
        save_video(server.url, tmp_path / "v.mp4", allow_private=True, timeout=1.0)
    assert leftovers(tmp_path) == []


class _Interrupted(Exception):
    pass


def _interrupt(signum: int, frame: object) -> None:
    raise _Interrupted


def test_an_interrupted_save_stops_the_download_and_leaves_nothing(
    serve: Callable[..., RawServer], tmp_path: Path
) -> None:
    """Ctrl-C (here an alarm) while ``save_video`` waits: the download on the background
    loop is cancelled and its temporary file removed before the exception goes on."""
    server = serve(trickle_body)  # 30 s of body: the download is still running at 0.5 s
    previous = signal.signal(signal.SIGALRM, _interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(_Interrupted):
            save_video(server.url, tmp_path / "v.mp4", allow_private=True, timeout=60)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert leftovers(tmp_path) == []  # no .part file: the download did not go on


def test_a_silent_peer_hits_the_read_timeout(
    serve: Callable[..., RawServer], tmp_path: Path
) -> None:
    server = serve(silent)
    coro = download_video(
        server.url, tmp_path / "v.mp4", allow_private=True, read_timeout=0.3, timeout=20
    )
    with pytest.raises(DownloadFailed, match=r"read timeout after 0\.3s"):
        asyncio.run(coro)
    assert leftovers(tmp_path) == []


def test_an_unwritable_path_is_an_error(serve: Callable[..., RawServer], tmp_path: Path) -> None:
    server = serve(answer("200 OK", VIDEO))
    with pytest.raises(DownloadFailed, match=r"cannot write .*No such file or directory"):
        save_video(server.url, tmp_path / "missing" / "v.mp4", allow_private=True)


def job(state: JobState, video_url: str | None = None) -> Job:
    return Job(id="j1", state=state, video_url=video_url)


def test_job_save(
    serve: Callable[..., RawServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(answer("200 OK", VIDEO))
    done = job(JobState.COMPLETED, server.url + "v.mp4")
    assert done.save(tmp_path / "v.mp4", allow_private=True).read_bytes() == VIDEO
    monkeypatch.setenv("VIDEOQ_ALLOW_PRIVATE_URLS", "false")  # the default comes from here
    with pytest.raises(DownloadFailed, match="points at a loopback address"):
        done.save(tmp_path / "w.mp4")
    with pytest.raises(DownloadFailed, match=r"job j1 has no video: it is generating \(only"):
        job(JobState.GENERATING).save(tmp_path / "x.mp4")
    with pytest.raises(DownloadFailed, match=r"job j1 has no video: it is failed$"):
        job(JobState.FAILED).save(tmp_path / "x.mp4")
    with pytest.raises(DownloadFailed, match="job j1 completed without a video URL"):
        job(JobState.COMPLETED).save(tmp_path / "x.mp4")
    assert leftovers(tmp_path) == ["v.mp4"]
