"""Saving a job's video to a file (``Job.save``), bounded like every outbound call.

The video comes from the job's ``video_url`` (the upstream's link; there is no other
copy yet). :func:`download_video` is the core, a coroutine for any event loop;
:func:`save_video` runs it for synchronous callers on a loop of its own. The rules:

- only http(s) URLs; unless private URLs are allowed (``VIDEOQ_ALLOW_PRIVATE_URLS``),
  no internal host in any spelling, nor a name that resolves to one (checked when
  connecting, by :class:`~worker.http.BoundedHttp`'s guard); link-local and the like
  never;
- at most :data:`MAX_REDIRECTS` redirects, each new URL checked by the same rules;
- a 200 answer, streamed to the disk: a connect timeout, a read timeout (a silent
  peer), a total deadline over every hop (a peer that drips), and ``max_bytes`` (a
  huge or endless body);
- the body goes to a temporary file beside ``path``, renamed over ``path`` only when
  it is whole: a failed download never leaves a partial file at ``path``.

Every failure is :class:`~worker.errors.DownloadFailed`, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urljoin

from .errors import DownloadFailed, HttpFailure, TooLarge
from .http import BoundedHttp, EventLoop
from .urls import address_guard, video_url_problem

DEFAULT_MAX_BYTES = 2 * 1024**3  # 2 GiB: far more than a 10 s video
DEFAULT_TIMEOUT = 600.0  # seconds for the whole download, every redirect included
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0  # longest silence between two reads
MAX_REDIRECTS = 3
_REDIRECTS = (301, 302, 303, 307, 308)

_loop = EventLoop()  # synchronous callers' downloads, on a loop of their own


def _umask() -> int:
    """This process's umask, read without changing it (Linux); else the usual 022."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


async def download_video(
    url: str,
    path: str | os.PathLike[str],
    *,
    allow_private: bool,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
) -> Path:
    """Stream ``url`` to ``path`` (see the module for the rules); return ``path``.
    Raises :class:`DownloadFailed`."""
    target = Path(path)
    http = BoundedHttp(
        _loop,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        total_timeout=timeout,
        max_bytes=max_bytes,
        concurrency=1,
        reuse=False,
        guard=address_guard(allow_private),
    )
    try:
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        os.fchmod(fd, 0o666 & ~_umask())  # as open() would make it, not mkstemp's 0600
    except OSError as exc:
        raise DownloadFailed(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            await _fetch(http, url, out.write, allow_private, timeout)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except OSError as exc:
        raise DownloadFailed(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        await http.aclose()
    return target


async def _fetch(
    http: BoundedHttp,
    url: str,
    write: Callable[[bytes], object],
    allow_private: bool,
    timeout: float,
) -> None:
    """GET ``url``, following up to :data:`MAX_REDIRECTS` checked redirects, with the
    body of the final 200 answer going to ``write``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for hop in range(MAX_REDIRECTS + 1):
        problem = video_url_problem(url, allow_private=allow_private)
        if problem is not None:
            where = "the video URL" if hop == 0 else "a redirect"
            raise DownloadFailed(f"{where} is refused: it {problem}")
        try:
            answer = await http.request("GET", url, timeout=deadline - loop.time(), sink=write)
        except TooLarge:
            raise DownloadFailed(f"the video is larger than {http.max_bytes} bytes") from None
        except HttpFailure as exc:
            raise DownloadFailed(f"the video could not be downloaded: {exc}") from None
        if answer.status == 200:
            return
        location = answer.headers.get("Location")
        if answer.status not in _REDIRECTS or not location:
            status = f"{answer.status} {answer.reason or ''}".strip()
            raise DownloadFailed(f"the video URL answered {status}, not 200")
        url = urljoin(url, location)
    raise DownloadFailed(f"more than {MAX_REDIRECTS} redirects")


def save_video(
    url: str,
    path: str | os.PathLike[str],
    *,
    allow_private: bool,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """:func:`download_video` for synchronous callers: waits at most ``timeout`` (and
    a second for a busy loop)."""
    coro = download_video(
        url, path, allow_private=allow_private, max_bytes=max_bytes, timeout=timeout
    )
    try:
        return _loop.run(coro, timeout + 1.0)
    except HttpFailure as exc:  # the loop itself gave no answer in time
        raise DownloadFailed(f"the video could not be downloaded: {exc}") from None
