"""The inlined event loop (simkv/engine/events.run): SimPy's order, and the GC threshold it
raises while it runs and restores after, also when an event fails."""

from __future__ import annotations

import gc

import pytest
import simpy

from simkv.engine.events import LOOP_GC_THRESHOLD, NORMAL, URGENT, Wakeup, run


def test_events_fire_in_simpy_order_under_the_raised_gc_threshold() -> None:
    env = simpy.Environment()
    seen: list[tuple[float, str, int]] = []

    def note(name: str):  # type: ignore[no-untyped-def]
        return lambda _: seen.append((env.now, name, gc.get_threshold()[0]))

    Wakeup(env, 2.0, NORMAL, note("b"))
    Wakeup(env, 1.0, NORMAL, note("a"))
    Wakeup(env, 2.0, URGENT, note("urgent at 2"))
    Wakeup(env, 2.0, NORMAL, note("c"))
    before = gc.get_threshold()
    run(env)
    assert [s[:2] for s in seen] == [(1.0, "a"), (2.0, "urgent at 2"), (2.0, "b"), (2.0, "c")]
    assert {s[2] for s in seen} == {max(before[0], LOOP_GC_THRESHOLD)}
    assert gc.get_threshold() == before


def test_gc_threshold_is_restored_when_an_event_fails() -> None:
    env = simpy.Environment()

    def boom(_: object) -> None:
        raise RuntimeError("a policy bug")

    Wakeup(env, 1.0, NORMAL, boom)
    before = gc.get_threshold()
    with pytest.raises(RuntimeError, match="a policy bug"):
        run(env)
    assert gc.get_threshold() == before


def test_a_disabled_threshold_is_left_alone() -> None:
    env = simpy.Environment()
    during: list[int] = []
    Wakeup(env, 1.0, NORMAL, lambda _: during.append(gc.get_threshold()[0]))
    before = gc.get_threshold()
    gc.set_threshold(0, *before[1:])
    try:
        run(env)
    finally:
        gc.set_threshold(*before)
    assert during == [0]
