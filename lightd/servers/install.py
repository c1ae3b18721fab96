"""Install: pull the image, create the server container, run the install script in a one-shot
container, write the entrypoint. Publishes each lifecycle step."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from lightd.errors import LightdError
from lightd.servers.events import InstallStep, PullProgress
from lightd.servers.install_log import InstallLog
from lightd.servers.server import Server

log = logging.getLogger(__name__)


async def install(server: Server) -> bool:
    """Run the whole install of `server`; True when it ends `ready`, False when `failed`."""
    spec = server.spec
    step = lambda name: server.publish(InstallStep(name))  # noqa: E731
    await server.set_install_state("installing")
    step("Started")
    log_ = InstallLog(server)
    try:
        await asyncio.to_thread(server.data_path.mkdir, parents=True, exist_ok=True)
        for image in dict.fromkeys(filter(None, [spec.image, spec.install_script and spec.install_image])):
            await _ensure_image(server, image)
        step("CreatingContainer")
        await server.env.create(spec, server.volume_path, server.data_path)
        server.container_missing = False
        step("ContainerCreated")
        if spec.install_script:
            step("RunningInstallScript")
            await asyncio.to_thread(_write_script, server.data_path / "install.sh", spec.install_script)
            await server.preflight.before_install(server)
            await log_.start()
            try:
                code = await server.env.run_install(spec, server.volume_path, server.data_path, log_.feed)
            except asyncio.CancelledError:
                await log_.close(save=False)  # the server may be being deleted: leave its files alone
                raise
            except Exception:
                log_.finish()
                await log_.close()
                raise
            log_.finish()
            await log_.close()
            if code != 0:
                raise InstallFailed(f"install script exited with code {code}", log_.tail())
            step("InstallScriptComplete")
        step("SettingUpEntrypoint")
        await server.preflight.after_install(server)
        await server.write_entrypoint()
    except asyncio.CancelledError:
        await _fail(server, "install was interrupted (daemon shutdown or delete)", log_.tail())
        raise
    except InstallFailed as exc:
        await _fail(server, exc.reason, exc.log_tail)
        return False
    except LightdError as exc:
        await _fail(server, str(exc), log_.tail())
        return False
    except Exception as exc:  # noqa: BLE001 - an install failure must end in `failed`, not a stuck state
        log.exception("%s: install failed", server.id)
        await _fail(server, f"internal error: {exc}", log_.tail())
        return False
    step("Ready")
    await server.set_install_state("ready")
    return True


class InstallFailed(Exception):
    def __init__(self, reason: str, log_tail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_tail = log_tail


async def _fail(server: Server, reason: str, log_tail: str) -> None:
    server.publish(InstallStep("Error", reason))
    details = reason + (f"\n--- install log (tail) ---\n{log_tail}" if log_tail else "")
    await server.set_install_state("failed", details)


async def _ensure_image(server: Server, image: str) -> None:
    last: dict[str, Any] = {}

    def progress(record: dict[str, Any]) -> None:
        status = record.get("status", "")
        server.publish(PullProgress(image, status, record.get("id"), record.get("progressDetail") or {}))
        if status and status != last.get("status"):
            server.daemon_message(f"Pulling {image}: {status}")
        last.update(record)

    if await server.env.ensure_image(image, progress):
        server.daemon_message(f"Pulled image {image}")


def _write_script(path: Path, script: str) -> None:
    path.write_text(script.replace("\r\n", "\n"))
    path.chmod(0o755)
