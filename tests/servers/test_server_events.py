"""The server event classes keep the JSON shapes their dicts had (console frames, compat feeds, sync)."""

from __future__ import annotations

import orjson
import pytest

from lightd.servers.events import (
    ActionFailed, ConsoleDetached, InstallFailed, InstallStateChanged, InstallStep, NetworkRebound, PullProgress,
    ServerCrashed, ServerDeleted, ServerExited, StartTimedOut, StateChanged,
)

PORT = {"ip": "0.0.0.0", "port": 25565, "protocol": "tcp"}


@pytest.mark.parametrize("event,wire", [
    (StateChanged("running"), b'{"type":"running"}'),
    (InstallStateChanged("installing"), b'{"type":"installing"}'),
    (InstallFailed("exit 7"), b'{"type":"failed","error":"exit 7"}'),
    (InstallFailed(None), b'{"type":"failed","error":null}'),
    (InstallStep("Started"), b'{"type":"install_step","step":"Started"}'),
    (InstallStep("Error", "no space"), b'{"type":"install_step","step":"Error","error":"no space"}'),
    (PullProgress("alpine", "Downloading", "abc", {"current": 1}),
     b'{"type":"pull_progress","image":"alpine","status":"Downloading","id":"abc","progress":{"current":1}}'),
    (StartTimedOut(30.0), b'{"type":"start_timeout","seconds":30.0}'),
    (ServerExited(137, True), b'{"type":"exit","exit_code":137,"oom_killed":true}'),
    (ServerCrashed(1, False), b'{"type":"crashed","exit_code":1,"oom_killed":false}'),
    (ConsoleDetached(), b'{"type":"detached"}'),
    (ServerDeleted(), b'{"type":"deleted"}'),
    (ActionFailed("refused", "start"), b'{"type":"error","action":"start","message":"refused"}'),
    (ActionFailed("engine said no", "kill"), b'{"type":"error","action":"kill","message":"engine said no"}'),
    (NetworkRebound([PORT]), b'{"type":"network_rebound","ports":[{"ip":"0.0.0.0","port":25565,"protocol":"tcp"}]}'),
])
def test_each_event_keeps_its_wire_shape_byte_for_byte(event, wire):
    assert orjson.dumps(event.wire) == wire
    assert event.type == orjson.loads(wire)["type"]


def test_events_are_frozen_and_matched_by_class():
    event = ServerExited(0, False)
    with pytest.raises(AttributeError):
        event.exit_code = 1  # type: ignore[misc]
    match event:
        case ServerCrashed():
            matched = "crashed"
        case ServerExited(exit_code=0):
            matched = "clean exit"
        case _:
            matched = None
    assert matched == "clean exit"
    assert StateChanged("running") == StateChanged("running") != StateChanged("offline")
