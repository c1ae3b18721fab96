"""Recovery after a daemon restart on the in-memory environment, through the real app: the API serves before
any server is compared with the engine; the comparison runs `docker.recovery_concurrency` at a time; a read
or an action on a server not yet compared compares it first; an exit that happened while the daemon was away
is one crash, however many paths look at it. The real-engine test (kill -9) is
tests/reliability/test_recovery.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from lightd import keys
from lightd.app import create_app
from lightd.config import Config
from lightd.servers.environment import ContainerStatus, EngineEvent, EventStreamUp
from tests.conftest import Api
from tests.servers.fake_environment import FakeConsole, FakeEnvironment
from tests.servers.unit_rig import Recorder, until

START_PATTERN = "^ready$"


class SlowEngine(FakeEnvironment):
    """The fake environment with an event stream the test opens, and inspects and attaches that take a while
    (counted: how many are under way at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.stream: asyncio.Queue[EngineEvent] = asyncio.Queue()
        self.delay = 0.0
        self.in_flight = 0
        self.most_in_flight = 0

    async def events(self) -> AsyncIterator[EngineEvent]:
        while True:
            yield await self.stream.get()

    async def _slowly(self) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1

    async def status(self, internal_id: str) -> ContainerStatus:
        await self._slowly()
        return await super().status(internal_id)

    async def attach(self, internal_id: str) -> FakeConsole:
        await self._slowly()
        return await super().attach(internal_id)


@pytest.fixture(name="engine")
def engine_fixture() -> SlowEngine:
    return SlowEngine()


@pytest.fixture(name="daemon")
async def daemon_fixture(aiohttp_client: Callable[..., Any], make_config: Callable[..., Config], engine: SlowEngine,
                         auth_headers: dict[str, str], no_blocking_calls: None) -> Any:
    """`start()` runs the daemon (the app on the one SlowEngine and data_dir) and returns its Api; a second
    start is a restart after the first one's death (its containers run on)."""
    clients: list[TestClient] = []

    async def start(**docker: Any) -> Api:
        if clients:
            await clients[-1].close()
        clients.append(await aiohttp_client(create_app(make_config(docker={"recovery_concurrency": 3, **docker}),
                                                       environment=engine)))
        return Api(clients[-1], auth_headers)

    yield start
    if clients:
        await clients[-1].close()


async def make_running(api: Api, engine: SlowEngine, ids: list[str]) -> None:
    engine.stream.put_nowait(EventStreamUp())
    for internal_id in ids:
        status, volume = await api.post("/volumes")
        assert status == 201, volume
        status, body = await api.post("/containers", json={
            "internal_id": internal_id, "image": "busybox:latest", "volume_id": volume["volume_id"],
            "startup_command": "run", "start_pattern": START_PATTERN})
        assert status == 202, body
    await until(lambda: all(engine.containers.get(i) for i in ids))
    for internal_id in ids:
        await until_state(api, internal_id, "offline")
        status, body = await api.post(f"/containers/{internal_id}/start")
        assert status == 202, body
        await until(lambda: engine.containers[internal_id].consoles)  # noqa: B023 - awaited here
        engine.print(internal_id, "ready")
        await until_state(api, internal_id, "running")


async def until_state(api: Api, internal_id: str, state: str) -> None:
    async def reached() -> bool:
        _, body = await api.get(f"/containers/{internal_id}")
        return body["state"] == state and body["install_state"] == "ready"

    for _ in range(500):
        if await reached():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{internal_id} not {state}")


async def servers_report(api: Api) -> dict[str, Any]:
    status, body = await api.get("/system")
    assert status == 200, body
    return body["servers"]


async def test_the_api_serves_before_any_server_is_compared(daemon: Callable[..., Any], engine: SlowEngine):
    ids = [f"s{i}" for i in range(6)]
    api = await daemon()
    await make_running(api, engine, ids)
    engine.calls.clear()
    api = await daemon()  # the event stream has not connected: the boot round has not begun
    status, listing = await api.get("/containers")
    assert status == 200
    assert {c["internal_id"]: c["state"] for c in listing["containers"]} == dict.fromkeys(ids, "running")
    report = await servers_report(api)
    assert report["recovery"]["pending"] == 6 and report["attached"] == 0 and report["recovery"]["rounds"] == 0
    assert not {"status", "statuses", "attach"} & set(engine.calls)
    engine.stream.put_nowait(EventStreamUp())
    await until(lambda: engine.calls.count("attach") == 6)
    report = await servers_report(api)
    assert report["recovery"]["pending"] == 0 and report["attached"] == 6 and report["recovery"]["rounds"] == 1
    # One list, and no inspect: every listed container was running, and an attach checks for itself.
    assert engine.calls.count("statuses") == 1 and "status" not in engine.calls
    engine.print("s3", "after the restart")
    _, logs = await api.get("/containers/s3/logs", params={"lines": "5"})
    assert logs["lines"][-1] == "after the restart"


async def test_the_boot_round_compares_at_most_recovery_concurrency_at_once(daemon: Callable[..., Any],
                                                                            engine: SlowEngine):
    ids = [f"s{i:02d}" for i in range(12)]
    api = await daemon()
    await make_running(api, engine, ids)
    for internal_id in ids[::2]:  # half of them ended while the daemon was away: each needs an inspect
        engine.containers[internal_id].consoles.clear()
        engine.exit(internal_id, 1)
    engine.delay = 0.02
    engine.most_in_flight = 0
    api = await daemon()
    engine.stream.put_nowait(EventStreamUp())
    for _ in range(500):
        report = await servers_report(api)
        if report["recovery"]["rounds"]:
            break
        await asyncio.sleep(0.01)
    assert report["recovery"]["pending"] == 0 and report["attached"] == 6
    assert engine.most_in_flight == 3
    _, listing = await api.get("/containers")
    states = {c["internal_id"]: (c["state"], c["exit_code"]) for c in listing["containers"]}
    assert states == {i: ("offline", 1) if n % 2 == 0 else ("running", None) for n, i in enumerate(ids)}


async def test_a_read_or_an_action_compares_its_server_before_its_turn(daemon: Callable[..., Any],
                                                                       engine: SlowEngine):
    api = await daemon()
    await make_running(api, engine, ["gone", "alive"])
    engine.containers["gone"].consoles.clear()
    engine.exit("gone", 137)
    api = await daemon()  # no event stream yet: nothing is compared but what a request needs
    status, body = await api.get("/containers/gone")
    assert status == 200 and (body["state"], body["exit_code"]) == ("offline", 137)
    # Listed as last announced until compared: the list itself never waits for the engine.
    _, listing = await api.get("/containers")
    assert {c["internal_id"]: c["state"] for c in listing["containers"]} == {"gone": "offline", "alive": "running"}
    assert (await servers_report(api))["recovery"]["pending"] == 1
    # A stop of a server not yet re-attached: compared (re-attached) first, then stopped as usual.
    status, body = await api.post("/containers/alive/stop", params={"timeout": "1"})
    assert status == 202, body
    await until_state(api, "alive", "offline")
    assert engine.signals[-1][0] == "alive"
    assert (await servers_report(api))["recovery"]["pending"] == 0


async def test_an_exit_while_away_is_one_crash_when_a_request_and_the_round_meet(daemon: Callable[..., Any],
                                                                                 engine: SlowEngine):
    api = await daemon()
    await make_running(api, engine, ["srv"])
    engine.containers["srv"].consoles.clear()
    engine.exit("srv", 3)
    engine.delay = 0.05
    engine.calls.clear()
    api = await daemon()
    log = Recorder(api.client.app[keys.EVENTS], "srv")
    engine.stream.put_nowait(EventStreamUp())
    # A read, a start and the boot round all want the server at once.
    answers = await asyncio.gather(api.get("/containers/srv"), api.post("/containers/srv/start"),
                                   api.get("/containers/srv"))
    assert [status for status, _ in answers] == [200, 202, 200], answers
    assert (await servers_report(api))["recovery"]["pending"] == 0
    await until(lambda: engine.containers["srv"].consoles)
    engine.print("srv", "ready")
    await until_state(api, "srv", "running")
    await until(lambda: (engine.calls.count("statuses"), engine.in_flight) == (1, 0))
    # One exit, one crash: however many callers wanted the server compared, one of them handled it.
    assert log.typed("crashed") == [{"type": "crashed", "exit_code": 3, "oom_killed": False}]
    assert log.types().count("exit") == 1
