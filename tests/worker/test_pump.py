"""The pump: one tick message per slot and book for the whole fleet, when work is due."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fakes import FakeClock
from worker.keys import CREATE_TICK_TASK, TICK_TASK
from worker.pump import MIN_WAIT, Pump
from worker.settings import Settings
from worker.store import BookedPoll, JobStore, connect

TICK = 0.25

Pumps = tuple[JobStore, FakeClock, list[tuple[str, float]], Callable[[], Pump]]


@pytest.fixture
def pumps(
    make_settings: Callable[..., Settings],
) -> Pumps:
    settings = make_settings(poll_tick=TICK)
    store = JobStore(connect(settings), settings)
    clock = FakeClock(1000.1)
    sent: list[tuple[str, float]] = []

    def make() -> Pump:
        return Pump(store.redis, settings, lambda task, slot: sent.append((task, slot)), clock)

    return store, clock, sent, make


def test_nothing_due_sends_nothing_and_sleeps_until_the_first_entry(pumps: Pumps) -> None:
    store, clock, sent, make = pumps
    pump = make()
    assert pump.once() == TICK  # empty books: look again in a slot
    store.schedule_polls([BookedPoll("a", clock() + 0.1)], clock())
    assert pump.once() == pytest.approx(0.1)  # wakes when the poll is due
    assert sent == []


def test_due_work_gets_one_tick_per_slot_and_book_across_pumps(pumps: Pumps) -> None:
    store, clock, sent, make = pumps
    first, second = make(), make()  # two workers' pumps
    store.schedule_polls([BookedPoll("a", clock() - 1)], clock())
    store.book_creates({"b": clock()})
    wait = first.once()
    assert sorted(sent) == [(CREATE_TICK_TASK, 1000.25), (TICK_TASK, 1000.25)]
    assert wait == pytest.approx(1000.25 - clock())  # still due: look when the next opens
    assert second.once() >= MIN_WAIT and len(sent) == 2  # the slot's ticks are on their way
    clock.advance(TICK)  # the next slot, and the work still due: one more tick each
    second.once()
    first.once()
    assert sorted(sent[2:]) == [(CREATE_TICK_TASK, 1000.5), (TICK_TASK, 1000.5)]


def test_a_leased_poll_of_a_dead_tick_is_sent_for_when_the_lease_ends(pumps: Pumps) -> None:
    store, clock, sent, make = pumps
    pump = make()
    store.redis.hset(store.keys.job("a"), mapping={"state": "generating", "generation_id": "g"})
    store.schedule_polls([BookedPoll("a", clock())], clock())
    now = clock()
    [_claimed], _ = store.claim_due_polls(now, 10, now, now + 3.0, now + 60)  # then dies
    assert pump.once() == TICK and sent == []
    clock.advance(3.0)
    pump.once()
    assert [task for task, _ in sent] == [TICK_TASK]
