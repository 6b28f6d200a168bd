"""Contender (b): the upstream page's blocking script, run as a Celery task.

The task body is the seed's ``main()``: create, then ``time.sleep(interval)`` between
status calls until the status is no longer waiting, with one ``requests`` call per
request as the seed makes them. It runs on the default prefork pool, so each pool
process holds one video at a time for its whole generation.

``celery -A bench.seed_app worker`` with ``BENCH_REDIS_URL``, ``BENCH_BASE_URL``,
``BENCH_POLL_INTERVAL`` in the environment.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
import requests
from celery import Celery

DONE_KEY = "bench:seed:done"
TASK = "bench.seed_video"
QUEUE = "bench-seed"
WAITING = ("waiting", "active", "queued", "generating")

app = Celery("bench-seed", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_default_queue=QUEUE, task_ignore_result=True, broker_connection_retry_on_startup=True
)


@app.task(name=TASK)  # type: ignore[untyped-decorator]
def seed_video(job_id: str, image_url: str, prompt: str) -> None:
    base = os.environ["BENCH_BASE_URL"]
    interval = float(os.environ.get("BENCH_POLL_INTERVAL", "10"))
    headers = {"Authorization": f"Bearer {os.environ['BENCH_KEY']}"}
    created = requests.post(
        f"{base}/generate/video/kling/generation",
        headers=headers,
        timeout=30,
        json={
            "model": "kling-video/v2.1/pro/image-to-video",
            "image_url": image_url,
            "prompt": prompt,
            "duration": "5",
        },
    ).json()
    gen_id = created.get("id")
    status: Any = None
    start = time.time()
    while gen_id and time.time() - start < 1000:
        answer = requests.get(
            f"{base}/generate/video/kling/generation",
            params={"generation_id": gen_id},
            headers=headers,
            timeout=30,
        ).json()
        status = answer.get("status")
        if status in WAITING:
            time.sleep(interval)  # the blocking wait videoq replaces
        else:
            break
    done = json.dumps([time.time(), status, gen_id])
    redis.Redis.from_url(os.environ["BENCH_REDIS_URL"]).hset(DONE_KEY, job_id, done)
