"""The figures read from the simulator's log, on hand-made generations and requests."""

from __future__ import annotations

from typing import Any

import pytest

from bench import upstream

API = "/v2/generate/video/kling/generation"


def gen(gen_id: str, created: float, took: float) -> dict[str, Any]:
    return {"id": gen_id, "created_at": created, "generation_time": took}


def call(t: float, method: str, gen_id: str | None, code: int = 200) -> dict[str, Any]:
    return {"t": t, "method": method, "path": API, "generation_id": gen_id, "status_code": code}


def test_true_peak_in_flight_counts_created_and_not_yet_done_upstream() -> None:
    generations = [
        gen("a", 0.0, 10.0),  # [0, 10)
        gen("b", 5.0, 10.0),  # [5, 15)
        gen("c", 10.0, 10.0),  # [10, 20): a is done as c starts, so still 2
        gen("d", 12.0, 1.0),  # [12, 13): b, c, d
        gen("e", 13.0, 1.0),  # [13, 14): d is done as e starts: b, c, e
    ]
    assert upstream.peak_in_flight(generations) == 3
    assert upstream.peak_in_flight(generations[:3]) == 2
    assert upstream.peak_in_flight([]) == 0
    starts, ends = upstream.flight_bounds(generations)
    assert [upstream.count_at(t, starts, ends) for t in (0, 9.9, 10, 12.5, 13, 14, 20)] == [
        1,
        2,
        2,
        3,
        3,
        2,
        0,
    ]


def test_all_created_before_first_done_says_whether_all_could_be_in_flight() -> None:
    assert upstream.all_created_before_first_done([gen("a", 0.0, 10.0), gen("b", 9.0, 5.0)])
    # b lands exactly when a is done: a is no longer in flight
    assert not upstream.all_created_before_first_done([gen("a", 0.0, 10.0), gen("b", 10.0, 5.0)])
    # the first to finish need not be the first created
    assert not upstream.all_created_before_first_done(
        [gen("a", 0.0, 10.0), gen("b", 1.0, 2.0), gen("c", 4.0, 10.0)]
    )
    assert upstream.all_created_before_first_done([]) is None


def test_intake_measures_creates_against_the_end_of_submission() -> None:
    generations = [gen("a", 1.0, 9.0), gen("c", 5.0, 9.0), gen("b", 2.0, 9.0)]
    figures = upstream.intake(generations, submitted=1.5)
    assert figures == {
        "creates_after_last_submit_s": 3.5,
        "first_to_last_create_s": 4.0,
        "create_rate_per_s": 0.75,
    }
    assert upstream.intake([gen("a", 1.0, 9.0)], 0.0)["create_rate_per_s"] is None
    assert upstream.intake([], 0.0)["first_to_last_create_s"] is None


def test_a_429_is_counted_and_is_not_a_poll() -> None:
    api = [
        call(10.0, "POST", "g"),
        call(10.5, "POST", None, 429),
        call(12.0, "GET", "g"),
        call(13.0, "GET", "g", 429),
        call(14.0, "GET", "g"),
        call(20.0, "GET", "g"),
    ]
    figures = upstream.request_figures(api)
    assert figures["upstream_requests"] == 6
    assert figures["upstream_429"] == 2
    assert figures["upstream_429_share"] == pytest.approx(2 / 6)
    assert figures["request_rate_per_s"] == pytest.approx(6 / 10)
    assert figures["answered_rate_per_s"] == pytest.approx(4 / 10)
    polls = upstream.polls_by_generation(api)
    assert [r["t"] for r in polls["g"]] == [12.0, 14.0, 20.0]


def test_api_requests_leave_out_control_paths_and_earlier_calls() -> None:
    requests = [
        call(1.0, "GET", "old"),
        {**call(6.0, "GET", None), "path": "/_sim/generations"},
        call(7.0, "GET", "g"),
    ]
    assert upstream.api_requests(requests, t0=5.0) == [requests[2]]


def test_poll_gaps_are_per_generation_and_skip_429s() -> None:
    api = [
        call(2.0, "GET", "a"),
        call(3.0, "GET", "b"),
        call(4.5, "GET", "a"),
        call(4.0, "GET", "b"),
        call(5.0, "GET", "a", 429),
        call(7.0, "GET", "a"),
    ]
    gaps = upstream.poll_gaps(upstream.polls_by_generation(api))
    assert sorted(gaps) == pytest.approx([1.0, 2.5, 2.5])


def test_lateness_runs_from_the_last_answered_poll() -> None:
    generations = [gen("a", 0.0, 10.0)]
    api = [call(2.1, "GET", "a"), call(4.0, "GET", "a", 429), call(6.5, "GET", "a")]
    late = upstream.lateness(generations, upstream.polls_by_generation(api), interval=2.0)
    # the first poll was due at 0 + 2; the second at 2.1 + 2, the 429 at 4.0 aside
    assert late == pytest.approx([0.1, 2.4])


def test_the_completed_answer_is_the_first_answered_poll_after_done() -> None:
    generations = [gen("a", 0.0, 5.0), gen("b", 0.0, 5.0), gen("c", 0.0, 5.0)]
    api = [
        call(2.0, "GET", "a"),
        call(4.0, "GET", "a"),
        call(5.0, "GET", "a", 429),  # refused: said nothing
        call(5.5, "GET", "a", 500),  # not answered with a status
        call(6.0, "GET", "a"),  # this one said completed
        call(8.0, "GET", "a"),
        # b: the last call was logged just before its done time, and the caller stopped:
        # it is the one that said completed
        call(3.0, "GET", "b"),
        call(4.999, "GET", "b"),
        # c: never polled after it was done
    ]
    answers = upstream.completed_answers(generations, upstream.polls_by_generation(api))
    assert answers == {"a": 6.0, "b": 4.999}
