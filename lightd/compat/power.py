"""Every front end's power verbs in one table: the lightd power action each one means, whether its API
answers when the action is done or at once, and the states in which the foreign system treats it as a
no-op. `run_power` is the one way a front end runs one."""

from __future__ import annotations

from dataclasses import dataclass

from lightd.errors import Conflict
from lightd.servers.manager import ServerManager


@dataclass(frozen=True, slots=True)
class PowerVerb:
    action: str  # lightd's power action: start, stop, restart, kill, pause or unpause
    wait: bool  # answer when the action is done (else at once, while it runs on in an owned task)
    no_op_in: frozenset[str] = frozenset()  # server states in which the verb is done already
    needs_running: bool = False  # refused (409) while the server is offline, before anything is begun


_START, _STOP, _RESTART = PowerVerb("start", wait=True), PowerVerb("stop", wait=True), PowerVerb("restart", wait=True)

POWER_VERBS: dict[str, dict[str, PowerVerb]] = {
    # The real `redolx` deletes and re-launches the container; lightd restarts it, keeping its data.
    "lxc_tools": {"start": _START, "restart": _RESTART},
    # The panel's no-ops: start of a running instance, stop of a stopped one.
    "lxd_panel": {"start": PowerVerb("start", wait=True, no_op_in=frozenset({"starting", "running"})),
                  "stop": PowerVerb("stop", wait=True, no_op_in=frozenset({"offline"})), "restart": _RESTART},
    # Proxmox answers with a task id at once; `stop` is a hard stop, `shutdown` the graceful one.
    "proxicloud": {"start": PowerVerb("start", wait=False), "shutdown": PowerVerb("stop", wait=False),
                   "stop": PowerVerb("kill", wait=False), "reboot": PowerVerb("restart", wait=False, needs_running=True)},
    # The real web app's backend calls Proxmox's status/start|stop|reboot, which queue a task and answer at
    # once (a start of a running CT, a stop of a stopped one, fail inside the task, not in the call).
    "proxicloud_app": {"start": PowerVerb("start", wait=False, no_op_in=frozenset({"starting", "running"})),
                       "stop": PowerVerb("kill", wait=False, no_op_in=frozenset({"offline"})),
                       "reboot": PowerVerb("restart", wait=False, needs_running=True)},
    "container_codes": {"start": _START, "stop": _STOP, "restart": _RESTART,
                        "pause": PowerVerb("pause", wait=True), "unpause": PowerVerb("unpause", wait=True)},
}


async def run_power(
    servers: ServerManager, front_end: str, verb: str, server_id: str, *, timeout: float | None = None,
    label: str | None = None,
) -> bool:
    """Run `front_end`'s `verb` on the server; False when it was a no-op. `label` names the server in a
    refusal the front end words itself (e.g. "Container 109")."""
    power = POWER_VERBS[front_end][verb]
    server = servers.get(server_id)
    if server.state in power.no_op_in:
        return False
    if power.needs_running and server.state == "offline":
        raise Conflict(f"{label or server_id} is not running")
    if power.wait:
        await servers.power_and_wait(server_id, power.action, timeout)
    else:
        await servers.power(server_id, power.action, timeout)
    return True
