"""Contender (c): one process, one asyncio loop, one aiohttp session.

Creates every generation (at most ``--connections`` requests at once), then polls each
one every ``--interval`` seconds until it ends. No broker, no job records, no retries
but one: a call answered 429 is made again after its ``Retry-After`` (or one interval).
``--rate R`` spaces all calls at least 1/R s apart (0: no spacing). The practical upper
bound for what one core can poll. Writes its results as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from typing import Any

import aiohttp
import psutil

MODEL = "kling-video/v2.1/pro/image-to-video"
WAITING = ("waiting", "active", "queued", "generating")


class Spacer:
    """Calls at most ``rate`` a second: each waits for its slot, 1/rate after the last."""

    def __init__(self, rate: float) -> None:
        self.gap = 1.0 / rate if rate > 0 else 0.0
        self.next = 0.0

    async def wait(self) -> None:
        if not self.gap:
            return
        now = time.monotonic()
        slot = max(now, self.next)
        self.next = slot + self.gap
        if slot > now:
            await asyncio.sleep(slot - now)


async def _call(
    session: aiohttp.ClientSession,
    spacer: Spacer,
    interval: float,
    method: str,
    path: str,
    **kwargs: Any,
) -> dict[str, Any]:
    """One API call's JSON answer; a 429 is made again after its Retry-After."""
    while True:
        await spacer.wait()
        async with session.request(method, path, **kwargs) as answer:
            if answer.status != 429:
                return dict(await answer.json())
            wait = float(answer.headers.get("Retry-After") or interval)
        await asyncio.sleep(wait)


async def _one(
    session: aiohttp.ClientSession,
    spacer: Spacer,
    base: str,
    job_id: str,
    interval: float,
    results: dict[str, Any],
) -> None:
    path = f"{base}/generate/video/kling/generation"
    body = {"model": MODEL, "image_url": "https://example.com/cat.png", "prompt": job_id}
    gen_id = (await _call(session, spacer, interval, "POST", path, json=body))["id"]
    while True:
        await asyncio.sleep(interval)
        answer = await _call(
            session, spacer, interval, "GET", path, params={"generation_id": gen_id}
        )
        status = answer.get("status")
        if status not in WAITING:
            results[job_id] = [time.time(), status, gen_id]
            return


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    connector = aiohttp.TCPConnector(limit=args.connections)
    headers = {"Authorization": f"Bearer {args.key}"}
    spacer = Spacer(args.rate)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        pss_before = psutil.Process().memory_full_info().pss
        t0 = time.time()
        jobs = [
            asyncio.create_task(
                _one(session, spacer, args.base_url, f"aio-{i}", args.interval, results)
            )
            for i in range(args.n)
        ]
        submitted = time.time()
        await asyncio.wait(jobs, timeout=args.cap)
    return {"t0": t0, "submitted": submitted, "pss_before": pss_before, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--interval", type=float, required=True)
    parser.add_argument("--cap", type=float, default=600.0)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.0, help="most calls a second (0: any)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    report = asyncio.run(_run(args))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report["cpu"] = usage.ru_utime + usage.ru_stime
    with open(args.out, "w") as out:
        json.dump(report, out)


if __name__ == "__main__":
    main()
