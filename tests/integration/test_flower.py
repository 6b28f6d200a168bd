"""Flower on videoq (``videoq flower``): auth, the tasks page in a real browser (and its
Failed filter, in both modes), metrics, state kept across a restart."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from producers.local import free_port, stop_process
from producers.ops import FLOWER_COLUMNS
from tests.integration.conftest import Cluster, make_cluster
from worker.keys import CREATE_TICK_TASK, JOB_ROW, POLL_TASK, TICK_TASK
from worker.states import JobState

USER, PASSWORD = "ops", "flower-test-password"
AUTH = (USER, PASSWORD)
IMG = "https://example.com/cat.png"


class Flower:
    def __init__(self, cluster: Cluster, db: Path, log: Path) -> None:
        self.cluster, self.db, self.log = cluster, db, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Flower:
        env = {
            **os.environ,
            **self.cluster.env,
            "VIDEOQ_FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}",
            "VIDEOQ_FLOWER_DB": str(self.db),
        }
        script = Path(sys.executable).with_name("videoq")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(script), "flower", "--port", str(self.port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        give_up = time.monotonic() + 30
        while True:
            try:
                if requests.get(self.url + "/healthcheck", timeout=1).ok:
                    return self
            except requests.ConnectionError:
                pass
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            assert time.monotonic() < give_up, "Flower did not start"
            time.sleep(0.2)

    def wait_subscribed(self) -> None:
        """Flower's web server answers before its event receiver has subscribed; events
        sent before that are lost to it. Send warm-up jobs until one shows up."""
        for attempt in range(15):
            job_id = self.cluster.client.submit(IMG, prompt=f"warm-up {attempt} [sim:time=0.5]")
            give_up = time.monotonic() + 2
            while time.monotonic() < give_up:
                if any(
                    job_id in (t.get("kwargs") or "") and t["name"] == "videoq.generate_video"
                    for t in self.tasks().values()
                ):
                    return
                time.sleep(0.2)
        raise AssertionError("Flower never saw a task")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=10)
            self.proc = None

    def tasks(self, **query: str) -> dict[str, Any]:
        answer = requests.get(self.url + "/api/tasks", params=query, auth=AUTH, timeout=10)
        answer.raise_for_status()
        tasks: dict[str, Any] = answer.json()
        return tasks

    def failed_filter(self) -> list[dict[str, Any]]:
        """The rows the tasks page shows with its Failed filter on (its table's query)."""
        query = {
            "draw": "1",
            "start": "0",
            "length": "100",
            "search[value]": "state:FAILURE",
            "order[0][column]": "0",
            "order[0][dir]": "desc",
            "columns[0][data]": "received",
        }
        answer = requests.post(self.url + "/tasks/datatable", data=query, auth=AUTH, timeout=10)
        answer.raise_for_status()
        rows: list[dict[str, Any]] = answer.json()["data"]
        return rows

    def failed_row(self, job_id: str) -> dict[str, Any]:
        """The row the Failed filter's query (``state=FAILURE``) lists for a job."""
        give_up = time.monotonic() + 20
        while True:
            rows = [
                t for t in self.tasks(state="FAILURE").values() if job_id in (t.get("kwargs") or "")
            ]
            if rows:
                [row] = rows
                found: dict[str, Any] = row
                return found
            assert time.monotonic() < give_up, f"Flower lists no failed task for {job_id}"
            time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster(
    redis_url: str, sim: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Chain mode: a Flower row per create and per poll (batch mode's test is below)."""
    c = make_cluster(redis_url, tmp_path_factory.mktemp("flower"), "flower", sim, poll_mode="chain")
    c.start_worker(concurrency=1)
    yield c
    c.stop()


@pytest.fixture
def flower(cluster: Cluster, tmp_path: Path) -> Iterator[Flower]:
    f = Flower(cluster, tmp_path / "flower.db", tmp_path / "flower.log").start()
    f.wait_subscribed()
    yield f
    f.stop()


def _run_jobs(cluster: Cluster, n: int) -> list[str]:
    ids = [cluster.client.submit(IMG, prompt=f"flower {i} [sim:time=1.5]") for i in range(n)]
    cluster.wait_all(ids, 60)
    return ids


def _wait_for_tasks(flower: Flower, ids: list[str]) -> dict[str, Any]:
    """The tasks Flower shows for these (finished) jobs, once it shows a generate and a
    poll for each and the last task events have arrived."""
    give_up = time.monotonic() + 20
    while True:
        tasks = {
            uuid: t
            for uuid, t in flower.tasks().items()
            if any(job_id in (t.get("kwargs") or "") for job_id in ids)
        }
        names = {
            (t["name"], job_id) for t in tasks.values() for job_id in ids if job_id in t["kwargs"]
        }
        settled = all(t["state"] in ("SUCCESS", "FAILURE") for t in tasks.values())
        if settled and all(
            ("videoq.generate_video", j) in names and ("videoq.poll_video", j) in names for j in ids
        ):
            return tasks
        assert time.monotonic() < give_up, "Flower did not show every job's tasks"
        time.sleep(0.5)


def test_flower_needs_auth_and_shows_the_jobs_tasks(flower: Flower, cluster: Cluster) -> None:
    assert requests.get(flower.url + "/tasks", timeout=5).status_code == 401
    assert requests.get(flower.url + "/tasks", auth=(USER, "wrong"), timeout=5).status_code == 401
    ids = _run_jobs(cluster, 3)
    tasks = _wait_for_tasks(flower, ids)
    names = {t["name"] for t in tasks.values()}
    assert {"videoq.generate_video", "videoq.poll_video"} <= names
    assert {t["state"] for t in tasks.values()} == {"SUCCESS"}
    for task in tasks.values():  # small, secret-free arguments: ids, a deadline, a counter
        assert len(task["kwargs"]) < 200 and "TOPSECRET" not in task["kwargs"]
        # what an operator reads: the job first, then the step with its number
        step = "poll" if task["name"] == "videoq.poll_video" else "create"
        assert re.fullmatch(rf"job [0-9a-f]{{32}}, {step} [0-9]+", task["kwargs"])
    # Prometheus: Flower's /metrics answers with auth on (Flower serves it without auth).
    metrics = requests.get(flower.url + "/metrics", timeout=5)
    assert metrics.status_code == 200 and "flower_events_total" in metrics.text
    assert 'task="videoq.poll_video"' in metrics.text


def test_in_batch_mode_flower_shows_what_each_tick_did(clusters: Any, tmp_path: Path) -> None:
    """The default mode has no task per job: each tick's row says how many polls (or
    creates) it ran and how many jobs ended, in its arguments column."""
    batch = clusters("flower-batch", poll_interval=0.5)
    assert batch.settings.poll_mode == "batch"
    batch.start_worker(concurrency=1)
    f = Flower(batch, tmp_path / "flower.db", tmp_path / "flower.log").start()
    try:
        give_up = time.monotonic() + 30
        ids: list[str] = []
        while not any(t["name"] == CREATE_TICK_TASK for t in f.tasks().values()):
            assert time.monotonic() < give_up, "Flower never saw a tick"
            ids.append(batch.client.submit(IMG, prompt="warm-up [sim:time=0.5]"))
            time.sleep(1.0)
        ids += [batch.client.submit(IMG, prompt=f"tick {i} [sim:time=1.5]") for i in range(4)]
        failing = f"tick fails {uuid.uuid4().hex[:8]} [sim:error]"
        ids.append(failed_id := batch.client.submit(IMG, prompt=failing))
        ended = {job.id: job for job in batch.wait_all(ids, 60)}
        assert ended[failed_id].state is JobState.FAILED
        # The tick that ended the job sent a failed row for it, under the job's id.
        row = f.failed_row(failed_id)
        assert (row["name"], row["uuid"]) == (JOB_ROW, failed_id)
        assert row["kwargs"].startswith(f"job {failed_id}, poll ")
        assert "upstream_error: GenerationError: simulated failure" in row["exception"]
        assert [r["uuid"] for r in f.failed_filter()] == [failed_id]  # as the page lists it
        assert batch.client.get(failed_id) == ended[failed_id]  # the record as it ended
        assert len(batch.sim.creates(failing)) == 1
        time.sleep(1.0)  # the last task events
        ticks = [t for t in f.tasks().values() if t["name"] == TICK_TASK]
        creates = [t for t in f.tasks().values() if t["name"] == CREATE_TICK_TASK]
        assert ticks and creates
        assert all(t["state"] == "SUCCESS" for t in ticks + creates)  # no tick failed
        assert all("'polls': " in t["kwargs"] and "'ended': " in t["kwargs"] for t in ticks)
        assert sum(_shown(t["kwargs"], "ended") for t in ticks) == len(ids)
        assert sum(_shown(t["kwargs"], "creates") for t in creates) == len(ids)
    finally:
        f.stop()


def _shown(label: str, name: str) -> int:
    value = eval(label, {})  # Flower shows the repr of a dict of ints
    return int(value.get(name, 0))


def test_flower_keeps_its_history_across_a_restart(flower: Flower, cluster: Cluster) -> None:
    ids = _run_jobs(cluster, 2)
    before = _wait_for_tasks(flower, ids)
    flower.stop()  # SIGTERM: Flower saves its state to VIDEOQ_FLOWER_DB
    flower.start()  # (no new events needed: the history comes from the file)
    after = flower.tasks()
    assert set(before) <= set(after)


def _show_all_rows(driver: Any) -> None:
    """Pick the longest page in the table's page-length menu (the default shows 15)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    give_up = time.monotonic() + 20
    while not (menus := driver.find_elements(By.CSS_SELECTOR, "select[name$='_length']")):
        assert time.monotonic() < give_up, "no page-length menu on the tasks page"
        time.sleep(0.2)
    menu = Select(menus[0])
    longest = max(menu.options, key=lambda o: int(o.get_attribute("value") or 0))
    value = longest.get_attribute("value")
    assert value is not None, "a page-length option without a value"
    menu.select_by_value(value)


@contextmanager
def _browser(flower: Flower) -> Iterator[Any]:
    """Headless Chromium, 1400 px wide, logged in to Flower."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and chromedriver, "install chromium and chromium-driver (see .ci/run)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,900",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
        )
        yield driver
    finally:
        driver.quit()


def _wait_for_text(driver: Any, *texts: str) -> None:
    give_up = time.monotonic() + 20
    while not all(text in driver.page_source for text in texts):
        assert time.monotonic() < give_up, f"the tasks page never showed {texts}"
        time.sleep(0.5)


# Where the job id ends in a row's kwargs cell, where the cell's text is cut (its right
# edge inside the padding, less room for the ellipsis) and the window's width: the id
# shows if it ends before both.
_JOB_ID_EDGE = """
const [jobId, column] = arguments;
const row = document.querySelector('#tasks-table tbody tr');
const cell = row.children[column];
const text = cell.firstChild;
const range = document.createRange();
range.setStart(text, 0);
range.setEnd(text, text.textContent.indexOf(jobId) + jobId.length);
const box = cell.getBoundingClientRect();
const pad = parseFloat(getComputedStyle(cell).paddingRight);
const ellipsis = cell.scrollWidth > cell.clientWidth ? 16 : 0;
return [range.getBoundingClientRect().right, box.right - pad - ellipsis, window.innerWidth];
"""


def test_flower_tasks_page_and_its_failed_filter_in_a_browser(
    flower: Flower, cluster: Cluster, tmp_path: Path
) -> None:
    """All tasks, then the Failed filter: a job that failed upstream is listed there,
    with its id (readable at 1400 px) and why; its record is as the job ended, and its
    task ran once."""
    from selenium.webdriver.common.by import By

    failing = f"flower fails {uuid.uuid4().hex[:8]} [sim:error]"
    failed_id = cluster.client.submit(IMG, prompt=failing)
    ids = _run_jobs(cluster, 3)
    [failed] = cluster.wait_all([failed_id], 60)
    assert (
        failed.state is JobState.FAILED and failed.error and failed.error.kind == "upstream_error"
    )
    _wait_for_tasks(flower, ids)
    row = flower.failed_row(failed_id)  # the Failed filter's query, through the API
    assert row["name"] == POLL_TASK
    assert "upstream_error: GenerationError: simulated failure" in row["exception"]

    with _browser(flower) as driver:
        driver.get(flower.url + "/tasks")
        _show_all_rows(driver)
        _wait_for_text(driver, *ids, failed_id)
        page = driver.page_source
        assert "videoq.generate_video" in page and "videoq.poll_video" in page
        assert "SUCCESS" in page and "FAILURE" in page
        failed_filter = driver.find_element(By.CSS_SELECTOR, "button[data-task-state='FAILURE']")
        # (clicked by script: the page scrolls smoothly, so a pointer click may miss it)
        driver.execute_script("arguments[0].click()", failed_filter)
        _wait_for_text(driver, failed_id, "upstream_error: GenerationError")
        assert failed_filter.get_attribute("aria-pressed") == "true"
        time.sleep(1.0)  # the table redrawn: only the failed rows
        rows = driver.find_elements(By.CSS_SELECTOR, "#tasks-table tbody tr")
        assert [r.get_attribute("id") for r in rows] == [row["uuid"]]
        assert not any(job_id in driver.page_source for job_id in ids)
        kwargs = FLOWER_COLUMNS.split(",").index("kwargs")
        end, cut, window = driver.execute_script(_JOB_ID_EDGE, failed_id, kwargs)
        assert end <= cut and end <= window, "the job id is cut off at 1400 px"
        driver.execute_script("window.scrollTo(0, 0)")
        shot = Path(os.environ.get("VIDEOQ_FLOWER_SCREENSHOT") or tmp_path / "flower-tasks.png")
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000

    assert cluster.client.get(failed_id) == failed  # failing the task wrote nothing
    assert len(cluster.sim.creates(failing)) == 1
    # One delivery of the failed task (acknowledged, never retried), no traceback.
    log = cluster.log_text()
    assert log.count(f"{row['uuid']}] received") == 1
    assert (
        f"raised expected: upstream_error: GenerationError: simulated failure (job {failed_id}"
        in log
    )
    assert "Traceback" not in log and "raised unexpected" not in log
