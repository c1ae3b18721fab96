"""The event bus: per-subscriber queues bounded in lines (output chunks weigh one per line), drop-oldest
with partial trimming of the oldest chunk, the close marker, and waking a waiting reader."""

from __future__ import annotations

import asyncio

from lightd.events import Event, EventBus


def lines(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


def drain(sub) -> list[Event]:
    out = []
    while (event := sub.get_nowait()) is not None:
        out.append(event)
    return out


def test_chunks_weigh_one_per_line_and_the_oldest_chunk_is_cut():
    bus = EventBus()
    sub = bus.subscribe(server="s", maxsize=10)
    first = bus.publish("console", "s", lines("a", 6))
    first.encoded["ws"] = b"cached frames of six lines"
    bus.publish("console", "s", lines("b", 6))
    assert sub.dropped == 2  # 12 lines queued, 10 allowed: the two oldest lines go
    events = drain(sub)
    assert [e.data for e in events] == [["a2", "a3", "a4", "a5"], lines("b", 6)]
    assert events[0].encoded == {}  # the cut chunk is encoded anew, not from the whole chunk's frames


def test_other_events_weigh_one_and_go_whole():
    bus = EventBus()
    sub = bus.subscribe(maxsize=3)
    for n in range(5):
        bus.publish("event", "s", {"type": "n", "n": n})
    assert sub.dropped == 2
    assert [e.data["n"] for e in drain(sub)] == [2, 3, 4]


def test_the_newest_chunk_stays_whole_even_when_larger_than_the_queue():
    bus = EventBus()
    sub = bus.subscribe(maxsize=4)
    bus.publish("event", "s", {"type": "x"})
    bus.publish("console", "s", lines("c", 9))
    assert sub.dropped == 1
    assert [e.data for e in drain(sub)] == [lines("c", 9)]


def test_subscription_filters_by_server_and_kind():
    bus = EventBus()
    sub = bus.subscribe(server="s", kinds={"console"})
    bus.publish("console", "other", ["x"])
    bus.publish("event", "s", {"type": "y"})
    bus.publish("console", "s", ["z"])
    assert [e.data for e in drain(sub)] == [["z"]]


async def test_get_waits_for_an_offer_and_ends_after_close():
    bus = EventBus()
    sub = bus.subscribe(server="s")
    waiting = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    bus.publish("console", "s", ["hello"])
    assert (await asyncio.wait_for(waiting, 1)).data == ["hello"]
    bus.publish("console", "s", ["last"])
    sub.close()
    bus.publish("console", "s", ["after close"])  # not delivered: the subscription left the bus
    assert (await sub.get()).data == ["last"]
    assert await sub.get() is None
    assert await sub.get() is None
    assert sub.get_nowait() is None


async def test_close_wakes_a_waiting_reader():
    bus = EventBus()
    sub = bus.subscribe()
    waiting = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    sub.close()
    assert await asyncio.wait_for(waiting, 1) is None


async def test_deliver_now_only_when_the_consumer_waits_on_an_empty_queue():
    bus = EventBus()
    sub = bus.subscribe(server="s")
    taken: list[object] = []
    accept = True

    def deliver_now(event):
        if accept:
            taken.append(event.data)
        return accept

    sub.deliver_now = deliver_now
    bus.publish("console", "s", ["queued: nobody waits"])
    assert taken == [] and sub.get_nowait().data == ["queued: nobody waits"]
    waiting = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    bus.publish("console", "s", ["taken at once"])
    assert taken == [["taken at once"]] and not waiting.done()
    accept = False
    bus.publish("console", "s", ["refused: queued"])
    assert (await asyncio.wait_for(waiting, 1)).data == ["refused: queued"]
    sub.close()
