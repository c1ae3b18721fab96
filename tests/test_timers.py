"""TimerWheel: one task for every timer; one-shot and repeating timers, cancel, the bound (refused, counted),
slow async callbacks skip turns instead of piling up, and a failing callback does not stop the others."""

from __future__ import annotations

import asyncio

from lightd.tasks import TaskOwner
from lightd.timers import TimerWheel


async def test_one_task_runs_every_timer():
    tasks = TaskOwner("t")
    wheel = TimerWheel(tasks)
    fired: list[str] = []
    for i in range(500):
        wheel.call_later(0.01 * (i % 5), lambda i=i: fired.append(f"once{i}"), name=f"once{i}")
    ticks: list[int] = []
    repeat = wheel.every(0.02, lambda: ticks.append(1), name="tick", first=0)
    assert len(tasks) == 1  # 501 timers, one task
    await asyncio.sleep(0.15)
    assert len(fired) == 500 and len(wheel) == 1
    assert 4 <= len(ticks) <= 9
    repeat.cancel()
    count = len(ticks)
    await asyncio.sleep(0.06)
    assert len(ticks) == count and len(wheel) == 0
    await tasks.close()


async def test_cancelled_timer_does_not_fire_and_order_is_by_deadline():
    tasks = TaskOwner("t")
    wheel = TimerWheel(tasks)
    order: list[str] = []
    wheel.call_later(0.05, lambda: order.append("late"), name="late")
    gone = wheel.call_later(0.01, lambda: order.append("gone"), name="gone")
    wheel.call_later(0.02, lambda: order.append("early"), name="early")  # earlier than the one it sleeps for
    gone.cancel()
    await asyncio.sleep(0.1)
    assert order == ["early", "late"]
    await tasks.close()


async def test_bound_refuses_and_counts(caplog):
    tasks = TaskOwner("t")
    wheel = TimerWheel(tasks, max_timers=3)
    for i in range(3):
        wheel.call_later(10, lambda: None, name=f"t{i}")
    refused = wheel.call_later(0, lambda: None, name="over")
    assert refused.cancelled and wheel.refused == 1 and len(wheel) == 3
    assert "timer over refused" in caplog.text
    await tasks.close()


async def test_slow_async_callback_skips_turns_and_failures_are_contained():
    tasks = TaskOwner("t")
    wheel = TimerWheel(tasks)
    runs = 0

    async def slow() -> None:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.1)

    def broken() -> None:
        raise RuntimeError("boom")

    wheel.every(0.01, broken, name="broken", first=0)
    timer = wheel.every(0.01, slow, name="slow", first=0)
    await asyncio.sleep(0.25)
    assert 2 <= runs <= 3 and wheel.skipped > 10  # never two runs at once
    assert timer.running is not None
    await tasks.close()
    assert timer.running.done()
