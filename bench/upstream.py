"""Figures read from the simulator's own log (``/_sim/generations``, ``/_sim/requests``).

Pure functions of those two lists (and of when submission ended), so that they can be
tested on hand-made inputs:

- a generation is *truly in flight* from its ``created_at`` to ``created_at +
  generation_time`` (half-open: one that ends at t is no longer in flight at t);
- a *poll* is a status call (GET with a generation id) that was not answered 429: a
  refused call told the caller nothing, so it is not a poll;
- the *completed answer* of a generation is the first poll answered 200 at or after
  ``created_at + generation_time``, the first answer that can have said ``completed``.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from typing import Any

Record = dict[str, Any]

REFUSED = 429


def api_requests(requests: list[Record], t0: float) -> list[Record]:
    """The API calls (not the control paths) made from ``t0`` on."""
    return [r for r in requests if r["path"].startswith("/v2/") and r["t"] >= t0]


def refused(request: Record) -> bool:
    return request.get("status_code") == REFUSED


def polls_by_generation(api: list[Record]) -> dict[str, list[Record]]:
    """Each generation's polls (status calls not answered 429), in time order."""
    polls: dict[str, list[Record]] = defaultdict(list)
    for r in sorted(api, key=lambda r: float(r["t"])):
        if r["method"] == "GET" and r.get("generation_id") and not refused(r):
            polls[str(r["generation_id"])].append(r)
    return dict(polls)


def done_times(generations: list[Record]) -> dict[str, float]:
    """When each generation finished upstream."""
    return {g["id"]: g["created_at"] + g["generation_time"] for g in generations}


# --- in flight upstream ---------------------------------------------------------------------


def flight_bounds(generations: list[Record]) -> tuple[list[float], list[float]]:
    """Sorted start and end times of the generations' in-flight intervals."""
    starts = sorted(float(g["created_at"]) for g in generations)
    ends = sorted(float(g["created_at"] + g["generation_time"]) for g in generations)
    return starts, ends


def count_at(t: float, starts: list[float], ends: list[float]) -> int:
    """How many intervals [start, end) hold t."""
    return bisect.bisect_right(starts, t) - bisect.bisect_right(ends, t)


def peak_in_flight(generations: list[Record]) -> int:
    """The most generations created upstream and not yet done upstream at once."""
    starts, ends = flight_bounds(generations)
    # the count only rises at a start, so the peak is the count at some start
    return max((count_at(t, starts, ends) for t in starts), default=0)


def all_created_before_first_done(generations: list[Record]) -> bool | None:
    """Did every create land before the first generation finished? If not, the run
    never had all N truly in flight: its generations were too short for its intake."""
    if not generations:
        return None
    starts, ends = flight_bounds(generations)
    return starts[-1] < ends[0]


# --- creates --------------------------------------------------------------------------------


def intake(generations: list[Record], submitted: float) -> dict[str, float | None]:
    """How fast the creates landed upstream, against when submission ended.

    - ``creates_after_last_submit_s``: last create's time minus the end of submission
      (negative if every create landed before submission ended);
    - ``first_to_last_create_s``: the creates' span;
    - ``create_rate_per_s``: creates over that span (None for fewer than two).
    """
    if not generations:
        return {
            "creates_after_last_submit_s": None,
            "first_to_last_create_s": None,
            "create_rate_per_s": None,
        }
    starts, _ = flight_bounds(generations)
    span = starts[-1] - starts[0]
    return {
        "creates_after_last_submit_s": starts[-1] - submitted,
        "first_to_last_create_s": span,
        "create_rate_per_s": len(starts) / span if span > 0 else None,
    }


# --- polls ----------------------------------------------------------------------------------


def completed_answers(
    generations: list[Record], polls: dict[str, list[Record]]
) -> dict[str, float]:
    """When the simulator first answered ``completed``, per generation that got one.

    That is the first poll answered 200 at or after the generation's done time. If no
    poll came at or after it, the last poll answered 200 is taken: the simulator logs a
    call's time a moment before it computes the status, so a call logged just before the
    done time can still have said completed (the caller then stopped polling)."""
    done = done_times(generations)
    out: dict[str, float] = {}
    for gen_id, calls in polls.items():
        if gen_id not in done:
            continue
        answered = [float(r["t"]) for r in calls if r.get("status_code") == 200]
        after = [t for t in answered if t >= done[gen_id]]
        if after:
            out[gen_id] = after[0]
        elif answered:
            out[gen_id] = answered[-1]
    return out


def lateness(
    generations: list[Record], polls: dict[str, list[Record]], interval: float
) -> list[float]:
    """Each poll's time minus when it was due: the previous poll, or the create for the
    first, plus the interval.

    Calls answered 429 are not polls (see :func:`polls_by_generation`), so they are
    neither late themselves nor a new start for the next one: the next answered poll is
    due one interval after the previous answered poll, and the time lost to refusals
    shows as its lateness (the caller's knowledge was that stale)."""
    created = {g["id"]: float(g["created_at"]) for g in generations}
    out: list[float] = []
    for gen_id, calls in polls.items():
        due = created.get(gen_id)
        if due is None:
            continue
        for r in calls:
            out.append(float(r["t"]) - (due + interval))
            due = float(r["t"])
    return out


def poll_gaps(polls: dict[str, list[Record]]) -> list[float]:
    """Gaps between consecutive polls (429s left out) of the same generation."""
    out: list[float] = []
    for calls in polls.values():
        times = [float(r["t"]) for r in calls]
        out.extend(b - a for a, b in itertools.pairwise(times))
    return out


# --- requests -------------------------------------------------------------------------------


def request_figures(api: list[Record]) -> dict[str, Any]:
    """Counts and rates of the API calls: 429s and their share; the rate of all calls and
    of those not refused over the span from the first call to the last."""
    n = len(api)
    n429 = sum(1 for r in api if refused(r))
    times = [float(r["t"]) for r in api]
    span = max(times) - min(times) if times else 0.0
    return {
        "upstream_requests": n,
        "upstream_429": n429,
        "upstream_429_share": n429 / n if n else None,
        "request_span_s": span,
        "request_rate_per_s": n / span if span > 0 else None,
        "answered_rate_per_s": (n - n429) / span if span > 0 else None,
    }
