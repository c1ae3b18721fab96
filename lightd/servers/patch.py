"""Editing a server in place (PATCH /containers/{id}): the changes are merged into its spec and validated as a
create is; limits reach its container at once with `docker update` where the engine allows, what lightd
itself reads (disk limit, start pattern, stop) is in force at once, and the container is recreated from the
new spec at the next start for the rest (Preflight)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from lightd.errors import DockerUnavailable, LightdError, NotFound, ServiceUnavailable, ValidationFailed
from lightd.servers.models import ContainerSpec, Limits

if TYPE_CHECKING:
    from lightd.servers.environment import Environment
    from lightd.servers.server import Server

# `template` (its variables' values) is set from a PATCH's `variables` by lightd/templates/service.py only.
EDITABLE = ("limits", "environment", "startup_command", "start_pattern", "stop", "image", "template", "volume_mounts")
# Read by lightd, not by the container: a change is in force from the next line, stop or write.
LIGHTD_SIDE = ("limits.disk", "start_pattern", "stop", "template")


@dataclass(slots=True)
class PatchOutcome:
    """Which changed fields are in force now and which wait for the next start (dotted names)."""

    applied: list[str] = field(default_factory=list)
    on_next_start: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def merged_spec(spec: ContainerSpec, changes: dict[str, Any]) -> ContainerSpec:
    """`changes` over `spec`: `limits` limit by limit (null: back to the default), every other field replaced;
    validated as a create is (400 naming the field)."""
    data = spec.model_dump(mode="json")
    for name, value in changes.items():
        if name not in EDITABLE:
            raise ValidationFailed(f"{name}: cannot be changed in place", details=[{"field": name, "message": "not editable"}])
        if name == "limits":
            data[name] = {} if value is None else {**data["limits"], **value}
        else:
            data[name] = value
    try:
        return ContainerSpec.model_validate(data)
    except ValidationError as exc:
        problems = [{"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
                    for e in exc.errors(include_url=False, include_input=False)]
        raise ValidationFailed(f"{problems[0]['field']}: {problems[0]['message']}", details=problems) from None


def changed_fields(old: ContainerSpec, new: ContainerSpec) -> list[str]:
    """The dotted names of what differs between two specs, among the editable fields."""
    names = [f"limits.{name}" for name in Limits.model_fields if getattr(old.limits, name) != getattr(new.limits, name)]
    return names + [name for name in EDITABLE if name != "limits" and getattr(old, name) != getattr(new, name)]


async def apply_to_container(server: Server, env: Environment, spec: ContainerSpec) -> PatchOutcome:
    """Make what can change live change (the caller holds the server's lock and then stores `spec`); say
    which changes are in force and which wait for the next start. Nothing is changed when this raises."""
    changed = changed_fields(server.spec, spec)
    outcome = PatchOutcome()
    if "image" in changed:
        await _ensure_image(server, env, spec.image)
    live: tuple[str, ...] = ()
    if any(name.removeprefix("limits.") in ("memory", "cpu", "pids") for name in changed):
        try:
            update = await env.update_limits(server.id, spec.limits)
            live, outcome.warnings = update.applied, list(update.warnings)
        except DockerUnavailable:
            raise
        except NotFound:
            pass  # no container yet: it is made with these limits
        except LightdError as exc:
            # The engine refused (e.g. memory below what the process uses now): the container is recreated
            # with the new limits at the next start instead.
            outcome.warnings.append(f"limits not applied live: {exc}")
    for name in changed:
        if name in LIGHTD_SIDE or name.removeprefix("limits.") in live:
            outcome.applied.append(name)
        else:
            outcome.on_next_start.append(name)
    if "limits.memory" in changed:
        # The process was started with the old figure in its environment (startup commands use it, e.g.
        # -Xmx${SERVER_MEMORY}M): the container is recreated at the next start for it.
        outcome.on_next_start.append("environment.SERVER_MEMORY")
    return outcome


async def _ensure_image(server: Server, env: Environment, image: str) -> None:
    """Pull a new image now (under the lock): a start must not find it missing."""
    last: dict[str, str] = {}

    def progress(record: dict[str, Any]) -> None:
        status = str(record.get("status") or "")
        if status and status != last.get("status"):
            server.daemon_message(f"Pulling {image}: {status}")
            last["status"] = status

    try:
        pulled = await env.ensure_image(image, progress)
    except NotFound as exc:
        raise ValidationFailed(f"image: {exc}", details=[{"field": "image", "message": str(exc)}]) from None
    except TimeoutError:
        raise ServiceUnavailable(f"image: the pull of {image} did not finish in time") from None
    if pulled:
        server.daemon_message(f"Pulled image {image}")
