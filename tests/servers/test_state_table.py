"""The transition table of lightd/servers/state.py: what moves, what is refused, what a request may begin."""

from __future__ import annotations

import pytest

from lightd.errors import Conflict, LightdError, ServerInstalling
from lightd.servers.state import (
    FAILED, INSTALL_STATES, INSTALLING, OFFLINE, READY, RUN_STATES, RUNNING, STARTING, STOPPING, TRANSITIONS,
    ServerStates,
)


def test_the_table_stays_within_one_kind_of_state():
    for current, new in TRANSITIONS:
        assert {current, new} <= RUN_STATES or {current, new} <= INSTALL_STATES, (current, new)
    assert all(reason for reason in TRANSITIONS.values())


@pytest.mark.parametrize("current", sorted(RUN_STATES - {OFFLINE}))
def test_the_end_of_the_process_is_always_a_move_to_offline(current):
    states = ServerStates("s", run=current)
    assert states.move(OFFLINE) is True and states.run == OFFLINE


def test_a_start_walks_offline_starting_running_stopping_offline():
    states = ServerStates("s", run=OFFLINE, install=READY)
    for state in (STARTING, RUNNING, STOPPING, OFFLINE):
        assert states.move(state) is True
        assert states.run == state
    assert states.install == READY


@pytest.mark.parametrize("run,install,new", [
    (OFFLINE, READY, STOPPING), (RUNNING, READY, STARTING), (STOPPING, READY, STARTING),
    (OFFLINE, READY, FAILED), (OFFLINE, FAILED, READY), (OFFLINE, READY, "bogus"),
])
def test_a_move_the_table_does_not_list_is_refused_and_changes_nothing(run, install, new):
    states = ServerStates("s", run=run, install=install)
    with pytest.raises(LightdError, match="no state transition"):
        states.move(new)
    assert (states.run, states.install) == (run, install)


def test_staying_in_a_runtime_state_is_no_move():
    states = ServerStates("s", run=RUNNING)
    assert states.move(RUNNING) is False and states.run == RUNNING


def test_the_install_announces_itself_even_when_already_marked_installing():
    states = ServerStates("s", install=INSTALLING)
    assert states.move(INSTALLING) is True
    assert states.move(FAILED) is True
    assert states.move(FAILED) is False  # no move, nothing announced
    assert states.move(INSTALLING) is True and states.move(READY) is True and states.install == READY


def test_the_checks_a_request_makes_before_it_begins():
    installing = ServerStates("s", install=INSTALLING)
    with pytest.raises(ServerInstalling):
        installing.check_power("start")
    failed = ServerStates("s", install=FAILED)
    failed.check_installed()
    with pytest.raises(Conflict, match="is failed, not ready"):
        failed.check_power("restart")
    up = ServerStates("s", run=RUNNING, install=READY)
    with pytest.raises(Conflict, match="already running"):
        up.check_power("start")
    up.check_power("stop")
    up.check_power("kill")
    up.check_power("restart")
    down = ServerStates("s", run=OFFLINE, install=READY)
    down.check_power("start")
    for action in ("stop", "kill"):
        with pytest.raises(Conflict, match="not running"):
            down.check_power(action)
