"""Job-level metrics in Prometheus's text format, and a tiny exporter (``videoq metrics``).

The counters live in one Redis hash (``<prefix>:stats``) that the store's scripts keep
up to date in the same atomic step as each state change, so every worker and host
contributes and one exporter anywhere can serve them. Flower's own ``/metrics`` covers
tasks; these cover jobs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .keys import LATENCY_BUCKETS
from .states import ACTIVE_STATES, JobState
from .store import JobStore

# worker.states.ACTIVE_STATES in the states' own order (queued, submitting, generating):
# a set has none, and the page lists them the same way every time.
ACTIVE = tuple(s for s in JobState if s in ACTIVE_STATES)
TERMINAL = tuple(s for s in JobState if s.is_terminal)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


CALL_KINDS = ("create", "poll")


def render(store: JobStore, upstream_rate: float = 0.0, now: float | None = None) -> str:
    """The metrics page for one deployment (one key prefix). ``upstream_rate``: the
    configured ``VIDEOQ_UPSTREAM_RATE``; ``now``: the clock for the poll lag."""
    stats = store.stats()
    in_flight = store.active_count()
    # Batch mode's most overdue poll (leased polls are scored by their lease's end).
    oldest = store.redis.zrange(store.keys.polls(), 0, 0, withscores=True)
    now = time.time() if now is None else now
    poll_lag = max(0.0, now - float(oldest[0][1])) if oldest else 0.0
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{labels} {_num(value)}")

    metric(
        "videoq_jobs",
        "gauge",
        "Unfinished jobs by state.",
        [(f'{{state="{s.value}"}}', max(0.0, stats.get(f"state:{s.value}", 0.0))) for s in ACTIVE],
    )
    metric(
        "videoq_jobs_in_flight",
        "gauge",
        "Jobs accepted and not finished (the sweeper's active set).",
        [("", in_flight)],
    )
    metric(
        "videoq_jobs_finished_total",
        "counter",
        "Jobs that reached a terminal state.",
        [(f'{{state="{s.value}"}}', stats.get(f"state:{s.value}", 0.0)) for s in TERMINAL],
    )
    kinds = sorted(k.split(":", 1)[1] for k in stats if k.startswith("error_kind:"))
    metric(
        "videoq_jobs_failed_total",
        "counter",
        "Jobs that did not complete, by error kind.",
        [(f'{{kind="{k}"}}', stats[f"error_kind:{k}"]) for k in kinds],
    )
    upstream = sorted(k.split(":", 1)[1] for k in stats if k.startswith("upstream_error:"))
    metric(
        "videoq_upstream_errors_total",
        "counter",
        "Failed upstream calls, by kind (rate_limited, server_error, timeout, connection, "
        "rejected, protocol).",
        [(f'{{kind="{k}"}}', stats[f"upstream_error:{k}"]) for k in upstream],
    )
    metric(
        "videoq_upstream_rate_limit",
        "gauge",
        "Upstream calls per second allowed across the fleet (VIDEOQ_UPSTREAM_RATE; 0: unlimited).",
        [("", upstream_rate)],
    )
    metric(
        "videoq_upstream_calls_total",
        "counter",
        "Upstream calls granted a slot by the rate limit, by kind (counted while "
        "VIDEOQ_UPSTREAM_RATE is on); rate() of it is the achieved call rate.",
        [(f'{{kind="{k}"}}', stats.get(f"upstream_calls:{k}", 0.0)) for k in CALL_KINDS],
    )
    metric(
        "videoq_upstream_throttled_total",
        "counter",
        "Upstream calls not sent for want of a rate-limit slot or during a fleet pause "
        "(a 429's Retry-After), by kind; each is rescheduled.",
        [(f'{{kind="{k}"}}', stats.get(f"upstream_throttled:{k}", 0.0)) for k in CALL_KINDS],
    )
    metric(
        "videoq_poll_lag_seconds",
        "gauge",
        "Batch mode: how far polls run behind their schedule (now minus the most overdue "
        "poll's due time; 0 when none is overdue).",
        [("", poll_lag)],
    )
    metric(
        "videoq_credits_used_total",
        "counter",
        "Upstream credits reported for finished jobs.",
        [("", stats.get("credits_used", 0.0))],
    )
    name = "videoq_completion_seconds"
    lines.append(f"# HELP {name} Seconds from acceptance to completed.")
    lines.append(f"# TYPE {name} histogram")
    for bound in LATENCY_BUCKETS:
        lines.append(f'{name}_bucket{{le="{bound}"}} {_num(stats.get(f"latency_le:{bound}", 0))}')
    count = stats.get("latency_count", 0.0)
    lines.append(f'{name}_bucket{{le="+Inf"}} {_num(count)}')
    lines.append(f"{name}_sum {_num(stats.get('latency_sum', 0.0))}")
    lines.append(f"{name}_count {_num(count)}")
    return "\n".join(lines) + "\n"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.split("?")[0] not in ("/metrics", "/"):
            self.send_error(404)
            return
        try:
            body = self.server.source().encode()
            code = 200
        except Exception as exc:  # Redis down: say so, do not crash the exporter
            body = f"# videoq: cannot read the stats: {type(exc).__name__}\n".encode()
            code = 503
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], source: Callable[[], str]) -> None:
        self.source = source
        super().__init__(address, _Handler)


class MetricsExporter:
    """Serves :func:`render` on ``/metrics``; ``start()`` runs it in a thread."""

    def __init__(
        self,
        store: JobStore,
        host: str = "127.0.0.1",
        port: int = 9808,
        upstream_rate: float = 0.0,
    ) -> None:
        self._server = _Server((host, port), lambda: render(store, upstream_rate))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsExporter:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
