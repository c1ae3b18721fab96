"""Server lifecycle against the real Docker engine: install, start detection, stop, kill, crash."""

from __future__ import annotations

import subprocess

from lightd import keys
from lightd.servers.events import StateChanged
from tests.conftest import wait_for
from tests.servers.helpers import EventLog, create_server, get, make_volume, wait_install, wait_state


def docker_inspect(name: str, fmt: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", fmt, name], capture_output=True, text=True).stdout.strip()


async def test_install_script_writes_into_volume_then_ready(dapi, dclient, docker_config):
    events = EventLog(dclient.app, "srv1")
    volume = await make_volume(dapi)
    await create_server(
        dapi, "srv1", volume_id=volume,
        install_script="#!/bin/bash\necho installing from $BASH_VERSION\necho hello > /home/container/installed.txt\n",
    )
    await events.wait_type("ready")  # the API shows the state as soon as it is set; the event follows
    steps = [e["step"] for e in events.of("event") if e["type"] == "install_step"]
    assert steps == ["Started", "CreatingContainer", "ContainerCreated", "RunningInstallScript",
                     "InstallScriptComplete", "SettingUpEntrypoint", "Ready"]
    assert events.types()[0] == "installing" and events.types()[-1] == "ready"
    assert any(line.startswith("installing from 5.") for line in events.of("install_log"))
    volume_path = dclient.app[keys.VOLUMES].path_of(volume)
    assert (volume_path / "installed.txt").read_text() == "hello\n"
    # the one-shot install container is gone, the server container exists and is not privileged
    name = f"{docker_config.docker.container_prefix}srv1"
    assert docker_inspect(name + "-installer", "{{.Id}}") == ""
    assert docker_inspect(name, "{{.HostConfig.Privileged}}") == "false"
    assert "no-new-privileges" in docker_inspect(name, "{{.HostConfig.SecurityOpt}}")
    body = await get(dapi, "srv1")
    assert body["install_state"] == "ready" and body["state"] == "offline"


async def test_failed_install_reports_reason_and_log_tail(dapi, dclient):
    events = EventLog(dclient.app, "bad")
    await create_server(dapi, "bad", ready=False, install_script="echo about to fail\nexit 7\n")
    body = await wait_install(dapi, "bad", "failed")
    assert "exited with code 7" in body["install_error"]
    assert "about to fail" in body["install_error"]
    await events.wait_type("failed")
    assert events.types()[-1] == "failed"
    status, answer = await dapi.post("/containers/bad/start")
    assert status == 409, answer


async def test_start_pattern_starting_then_running(dapi, dclient):
    await create_server(
        dapi, "pat", startup_command="echo booting; sleep 1.5; echo 'Server Done (1.2s)!'; sleep 1000",
        start_pattern=r"Done \(\d+\.\d+s\)",
    )
    events = EventLog(dclient.app, "pat")
    status, body = await dapi.post("/containers/pat/start")
    assert status == 202, body
    await events.wait_type("starting")
    assert (await get(dapi, "pat"))["state"] == "starting"
    await events.wait_type("running", timeout=20)
    assert events.types().index("starting") < events.types().index("running")
    status, body = await dapi.get("/containers/pat/logs", params={"lines": "10"})
    assert body["lines"] == ["booting", "Server Done (1.2s)!"]
    # a second start is refused, not dropped
    status, body = await dapi.post("/containers/pat/start")
    assert status == 409


async def test_pattern_that_never_appears_stays_starting(dapi, dclient):
    await create_server(dapi, "never", startup_command="echo nope; sleep 1000", start_pattern="^READY$",
                        start_timeout_seconds=1)
    events = EventLog(dclient.app, "never")
    await dapi.post("/containers/never/start")
    await events.wait("console", lambda line: line == "nope")
    await events.wait_type("start_timeout", timeout=10)
    assert (await get(dapi, "never"))["state"] == "starting"  # reported, not killed


async def test_no_pattern_is_running_once_started(dapi):
    await create_server(dapi, "plain")
    await dapi.post("/containers/plain/start")
    await wait_state(dapi, "plain", "running")


async def test_graceful_stop_by_command(dapi, dclient):
    script = "while read line; do echo got $line; if [ \"$line\" = stop ]; then echo bye; exit 0; fi; done"
    await create_server(dapi, "cmdstop", startup_command=script, stop={"type": "command", "value": "stop"})
    events = EventLog(dclient.app, "cmdstop")
    await dapi.post("/containers/cmdstop/start")
    await wait_state(dapi, "cmdstop", "running")
    status, body = await dapi.post("/containers/cmdstop/commands", json={"command": "hello"})
    assert status == 202, body
    await events.wait("console", lambda line: line == "got hello")
    status, body = await dapi.post("/containers/cmdstop/stop")
    assert status == 202
    await wait_state(dapi, "cmdstop", "offline")
    assert "bye" in events.of("console")
    exit_event = await events.wait("event", lambda d: d["type"] == "exit")
    assert exit_event["exit_code"] == 0
    await events.wait_type("offline")  # the API shows the state as soon as it is set; the event follows
    assert "crashed" not in events.types()
    assert events.types()[-3:] == ["stopping", "exit", "offline"]


async def test_graceful_stop_by_signal(dapi, dclient):
    script = "trap 'echo caught TERM; exit 0' TERM; echo up; while true; do sleep 0.2; done"
    await create_server(dapi, "sigstop", startup_command=f"bash -c \"{script}\"")
    events = EventLog(dclient.app, "sigstop")
    await dapi.post("/containers/sigstop/start")
    await events.wait("console", lambda line: line == "up")
    await dapi.post("/containers/sigstop/stop")
    await wait_state(dapi, "sigstop", "offline")
    assert "caught TERM" in events.of("console")
    assert (await events.wait("event", lambda d: d["type"] == "exit"))["exit_code"] == 0
    assert "crashed" not in events.types()


async def test_stop_timeout_falls_back_to_kill(dapi, dclient):
    await create_server(dapi, "stubborn", startup_command="bash -c \"trap '' TERM; echo up; while true; do sleep 0.2; done\"")
    events = EventLog(dclient.app, "stubborn")
    await dapi.post("/containers/stubborn/start")
    await events.wait("console", lambda line: line == "up")
    status, _ = await dapi.post("/containers/stubborn/stop", params={"timeout": "1"})
    assert status == 202
    # concurrent power actions are refused while the stop holds the lock
    assert (await dapi.post("/containers/stubborn/start"))[0] == 409
    await wait_state(dapi, "stubborn", "offline", timeout=15)
    assert any("killing" in m for m in events.of("daemon_message"))
    exit_event = await events.wait("event", lambda d: d["type"] == "exit")
    assert exit_event["exit_code"] == 137
    assert "crashed" not in events.types()


async def test_kill_during_starting(dapi, dclient):
    await create_server(dapi, "killme", startup_command="echo hi; sleep 1000", start_pattern="never-printed")
    events = EventLog(dclient.app, "killme")
    await dapi.post("/containers/killme/start")
    await wait_state(dapi, "killme", "starting")
    status, body = await dapi.post("/containers/killme/kill")
    assert status == 202, body
    await wait_state(dapi, "killme", "offline")
    assert "crashed" not in events.types()
    assert (await dapi.post("/containers/killme/kill"))[0] == 409  # nothing left to kill


async def test_crash_reports_exit_code(dapi, dclient):
    await create_server(dapi, "crashy", startup_command="echo going down; sleep 0.5; exit 3")
    events = EventLog(dclient.app, "crashy")
    await dapi.post("/containers/crashy/start")
    crash = await events.wait("event", lambda d: d["type"] == "crashed")
    assert crash == {"type": "crashed", "exit_code": 3, "oom_killed": False}
    body = await wait_state(dapi, "crashy", "offline")
    assert body["exit_code"] == 3 and body["oom_killed"] is False


async def test_restart_on_crash_with_guard(dapi, dclient):
    await create_server(dapi, "loop", startup_command="echo once; exit 5", restart_on_crash=True)
    events = EventLog(dclient.app, "loop")
    await dapi.post("/containers/loop/start")
    # first crash restarts; the second, within 60 s of the first, does not
    await wait_for(lambda: events.types().count("crashed") >= 2, timeout=30)
    await wait_state(dapi, "loop", "offline")
    assert events.types().count("starting") == 2
    assert any("Not restarting" in m for m in events.of("daemon_message"))


async def test_memory_limit_visible_inside(dapi, dclient):
    await create_server(
        dapi, "mem", limits={"memory": 64 * 1024 * 1024, "cpu": 0.5},
        startup_command="cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; sleep 1000",
    )
    events = EventLog(dclient.app, "mem")
    await dapi.post("/containers/mem/start")
    line = await events.wait("console", lambda l: l.strip().isdigit())
    assert int(line) == 64 * 1024 * 1024
    name = f"{dclient.app[keys.CONFIG].docker.container_prefix}mem"
    assert docker_inspect(name, "{{.HostConfig.NanoCpus}}") == "500000000"
    assert docker_inspect(name, "{{.HostConfig.PidsLimit}}") == "512"


async def test_running_is_announced_between_the_lines_around_the_match(dapi, dclient):
    """Lines read in one chunk: those before the start pattern's line go out first, then `running`,
    then the matching line and the rest (as when each line was handled on its own)."""
    await create_server(dapi, "order", startup_command="printf 'one\\ntwo\\nREADY now\\nthree\\n'; sleep 1000",
                        start_pattern="^READY")
    events = EventLog(dclient.app, "order")
    await dapi.post("/containers/order/start")
    await events.wait("console", lambda line: line == "three", timeout=20)
    sequence = []
    for event in events.drain():
        if event.kind == "console":
            sequence.extend(event.data)
        elif isinstance(event.data, StateChanged) and event.data.state in ("starting", "running"):
            sequence.append(f"<{event.data.state}>")
    assert sequence == ["<starting>", "one", "two", "<running>", "READY now", "three"]
