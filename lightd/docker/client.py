"""DockerClient: the one boundary over aiodocker. It translates aiodocker's errors into lightd's error
tree and its payloads into plain values; nothing outside lightd/docker/ imports aiodocker."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError
from aiodocker.stream import Stream
from yarl import URL

from lightd.errors import Conflict, DockerUnavailable, EngineError, LightdError, NotFound, ValidationFailed

log = logging.getLogger(__name__)


def translate(exc: BaseException, what: str) -> LightdError:
    """Map an aiodocker/aiohttp failure during `what` onto lightd's error tree."""
    if isinstance(exc, DockerError):
        message = exc.message if isinstance(exc.message, str) else str(exc.message)
        if exc.status == 404:
            return NotFound(f"{what}: {message}")
        if exc.status == 409:
            return Conflict(f"{what}: {message}")
        if exc.status == 400:
            return ValidationFailed(f"{what}: {message}")
        if exc.status >= 900:  # aiodocker's own code for "could not connect"
            return DockerUnavailable(f"Docker engine unreachable ({what})")
        return EngineError(f"{what}: {message}")
    if isinstance(exc, (aiohttp.ClientConnectionError, ConnectionError, FileNotFoundError, asyncio.TimeoutError)):
        return DockerUnavailable(f"Docker engine unreachable ({what})")
    if isinstance(exc, aiohttp.ClientError):
        return DockerUnavailable(f"Docker engine error ({what}): {exc}")
    return EngineError(f"{what}: {exc}")


# A removal another call began is waited for at most this long (200 × 0.05 s = 10 s).
REMOVAL_POLLS = 200
REMOVAL_POLL_SECONDS = 0.05


class DockerClient:
    """Async access to one Docker engine."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._docker: aiodocker.Docker | None = None
        self._pool: aiohttp.BaseConnector | None = None

    @property
    def raw(self) -> aiodocker.Docker:
        if self._docker is None:
            self._pool = self._connector()
            # With a connector of our own, aiodocker takes the URL as the HTTP base: a unix socket is
            # reached through the connector, addressed as localhost.
            base = "http://localhost" if self.url.startswith("unix://") else self.url
            self._docker = aiodocker.Docker(url=base, connector=self._pool)
        return self._docker

    def _connector(self) -> aiohttp.BaseConnector:
        # Every running server holds two connections for good (console attach and stats stream): aiohttp's
        # default pool of 100 would be full at ~48 servers and every other engine call would queue.
        # No total limit; the engine's own socket backlog is the bound.
        if self.url.startswith("unix://"):
            return aiohttp.UnixConnector(path=self.url[len("unix://"):], limit=0)
        return aiohttp.TCPConnector(limit=0)

    async def close(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None
        if self._pool is not None:  # passed in, so aiodocker leaves it to us
            await self._pool.close()
            self._pool = None

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except LightdError:
            raise
        except (DockerError, aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise translate(exc, what) from exc

    async def ping(self) -> bool:
        """True when the engine answers."""
        try:
            await asyncio.wait_for(self.raw.version(), timeout=5)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            # The session is kept: closing it would cut every live console and stats stream. Broken
            # connections are dropped from the pool by aiohttp, and new ones are made per request.
            return False

    async def info(self) -> dict[str, Any]:
        return await self._call("info", self.raw.system.info())

    async def version(self) -> dict[str, Any]:
        """The engine's `GET /version` (Version, ApiVersion, Os, Arch...)."""
        return await self._call("version", self.raw.version())

    # -- images --------------------------------------------------------------------------------------
    async def image_exists(self, image: str) -> bool:
        try:
            await self._call(f"inspect image {image}", self.raw.images.inspect(image))
            return True
        except NotFound:
            return False

    async def list_images(self) -> list[dict[str, Any]]:
        return await self._call("list images", self.raw.images.list())

    async def pull(self, image: str) -> AsyncIterator[dict[str, Any]]:
        """Pull `image`, yielding Docker's progress records; raises on an error record."""
        name, tag = split_image_tag(image)
        try:
            async for record in self.raw.images.pull(name, tag=tag, stream=True):
                if "error" in record:
                    raise NotFound(f"pull {image}: {record.get('error')}")
                yield record
        except LightdError:
            raise
        except (DockerError, aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise translate(exc, f"pull {image}") from exc

    # -- containers ----------------------------------------------------------------------------------
    async def create_container(self, name: str, config: dict[str, Any]) -> str:
        container = await self._call(f"create container {name}", self.raw.containers.create(config, name=name))
        return container.id

    async def list_containers(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        """Every container (running or not) carrying all of `labels`, as Docker's list documents."""
        filters = json.dumps({"label": [f"{k}={v}" for k, v in labels.items()]})
        containers = await self._call("list containers", self.raw.containers.list(all="1", filters=filters))
        return [{key: container[key] for key in ("Id", "Names", "Labels", "State") if key in container}
                for container in containers]

    async def inspect_container(self, name: str) -> dict[str, Any] | None:
        """The container's inspect document, or None when it does not exist."""
        try:
            container = self.raw.containers.container(name)
            return await self._call(f"inspect {name}", container.show())
        except NotFound:
            return None

    async def update_container(self, name: str, resources: dict[str, Any]) -> list[str]:
        """`docker update`: change a container's resources (Memory, MemorySwap, NanoCpus, PidsLimit...) in
        place, running or not; the engine's warnings."""
        answer = await self._call(f"update {name}", self._post_json(f"containers/{name}/update", resources))
        return [str(w) for w in ((answer or {}).get("Warnings") or [])]

    async def _post_json(self, path: str, body: dict[str, Any]) -> Any:
        """POST `body` to an engine endpoint aiodocker has no method for; the decoded answer."""
        async with await self.engine_request("POST", path, json=body) as response:
            text = await response.text()
        return json.loads(text) if text.strip() else None

    async def engine_request(self, method: str, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        """A request to an engine endpoint aiodocker has no method for, on aiodocker's own session (its
        public `session` and `docker_host`, not its private query helpers), unversioned: the engine's own
        API version. An error status raises DockerError as aiodocker does. The caller closes the response."""
        docker = self.raw
        response = await docker.session.request(method, f"{docker.docker_host}/{path}", **kwargs)
        if response.status >= 400:
            async with response:
                text = await response.text()
            try:
                message = json.loads(text)["message"]
            except (ValueError, KeyError, TypeError):
                message = text
            raise DockerError(response.status, str(message))
        return response

    async def start_container(self, name: str) -> None:
        await self._call(f"start {name}", self.raw.containers.container(name).start())

    async def kill_container(self, name: str, signal: str = "SIGKILL") -> None:
        """Send `signal`; a container that is not running is not an error here."""
        try:
            await self._call(f"kill {name}", self.raw.containers.container(name).kill(signal=signal))
        except Conflict:
            pass

    async def pause_container(self, name: str) -> None:
        """`docker pause`: Conflict when the container is not running (or already paused)."""
        await self._call(f"pause {name}", self.raw.containers.container(name).pause())

    async def unpause_container(self, name: str) -> None:
        """`docker unpause`: Conflict when the container is not paused."""
        await self._call(f"unpause {name}", self.raw.containers.container(name).unpause())

    async def remove_container(self, name: str) -> None:
        """Force-remove; a container that does not exist is not an error, nor one whose removal another call
        began (a delete racing an install's own clean-up): that one is waited for until it is gone."""
        try:
            await self._call(f"remove {name}", self.raw.containers.container(name).delete(force=True, v=False))
        except NotFound:
            pass
        except Conflict as exc:
            if "already in progress" not in str(exc):
                raise
            await self._wait_removed(name, exc)

    async def _wait_removed(self, name: str, refusal: Conflict) -> None:
        """Wait (bounded) for a removal under way to end; the engine's refusal if it does not."""
        for _ in range(REMOVAL_POLLS):
            if await self.inspect_container(name) is None:
                return
            await asyncio.sleep(REMOVAL_POLL_SECONDS)
        raise refusal

    async def wait_container(self, name: str) -> int:
        """Block until the container is not running; its exit code."""
        result = await self._call(
            f"wait {name}", self.raw.containers.container(name).wait(timeout=None)
        )
        return int(result.get("StatusCode", -1))

    def attach(self, name: str, *, logs: bool = False) -> Any:
        """An aiodocker attach Stream (stdin, stdout, stderr) of a container made without a TTY (lightd makes
        no other); the caller inits and closes it. Not aiodocker's `attach`: that inspects the container first
        for its TTY flag, an engine call per attach (a start, each re-attach after a restart)."""
        url = URL(f"containers/{name}/attach").with_query(
            {"detachKeys": "", "logs": int(logs), "stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})

        async def setup() -> tuple[URL, None, bool]:
            return url, None, False  # no TTY: the stream is multiplexed

        return Stream(self.raw, setup, None)

    async def tail_logs(self, name: str, lines: int) -> list[str]:
        """The last `lines` output lines Docker kept for the container (no TTY: multiplexed; not aiodocker's
        `log`, which inspects the container first for that flag)."""
        async def read() -> bytes:
            params = {"stdout": "1", "stderr": "1", "tail": str(lines)}
            async with await self.engine_request("GET", f"containers/{name}/logs", params=params) as response:
                return demultiplex(await response.read())

        return (await self._call(f"logs {name}", read())).decode("utf-8", "replace").splitlines()

    def stats_stream(self, name: str) -> AsyncIterator[dict[str, Any]]:
        return self.raw.containers.container(name).stats(stream=True)

    async def exec(self, name: str, cmd: list[str], *, stdin: bytes | None = None, user: str = "") -> tuple[int, str]:
        """Run `cmd` in the container (no shell); returns (exit code, combined output)."""
        async def run() -> tuple[int, str]:
            container = self.raw.containers.container(name)
            execution = await container.exec(cmd, stdin=stdin is not None, stdout=True, stderr=True, user=user)
            output = bytearray()
            async with execution.start(detach=False) as stream:
                if stdin is not None:
                    await stream.write_in(stdin)
                    response = stream_response(stream)  # half-close so the command sees EOF
                    transport = response.connection.transport if response and response.connection else None
                    if transport is not None and transport.can_write_eof():
                        transport.write_eof()
                while (message := await stream.read_out()) is not None:
                    output.extend(message.data)
            info = await execution.inspect()
            return int(info.get("ExitCode") or 0), output.decode("utf-8", "replace")

        return await self._call(f"exec in {name}", run())

    # -- events --------------------------------------------------------------------------------------
    async def open_events(self, filters: dict[str, list[str]]) -> EventStream:
        """Connect to the engine's `GET /events` (matching `filters`); the caller reads and closes it."""
        # No read timeout: the stream may be silent for hours. Connecting is bounded.
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=10)
        params = {"filters": json.dumps(filters)}
        response = await self._call("events", self.engine_request("GET", "events", params=params, timeout=timeout))
        return EventStream(response)

    # -- networks ------------------------------------------------------------------------------------
    async def network_exists(self, name: str) -> bool:
        try:
            await self._call(f"inspect network {name}", self.raw.networks.get(name))
            return True
        except NotFound:
            return False


class EventStream:
    """The engine's event stream, one decoded record per line. Nothing is queued here: what its one reader
    has not read yet waits in the connection, and the engine is held back by it."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while True:
            try:
                # aiohttp bounds a line by its read buffer (ValueError beyond): a record is never that long.
                line = await self._response.content.readline()
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError) as exc:
                raise translate(exc, "events") from exc
            if not line:
                raise StopAsyncIteration
            if line.strip():
                try:
                    return json.loads(line)
                except ValueError as exc:
                    raise translate(exc, "events: undecodable record") from exc

    def close(self) -> None:
        """Drop the connection (a reader waiting on it sees the end of the stream)."""
        self._response.close()


def demultiplex(data: bytes) -> bytes:
    """The payload of Docker's multiplexed stream format: frames of an 8-byte header (stream, 0, 0, 0, size)."""
    out, at = bytearray(), 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at + 4:at + 8], "big")
        out += data[at + 8:at + 8 + size]
        at += 8 + size
    return bytes(out)


def stream_response(stream: aiodocker.stream.Stream) -> aiohttp.ClientResponse | None:
    """The HTTP response under an aiodocker attach or exec stream (None before it connects). aiodocker has no
    public way to half-close a stream's connection, or to close one its own close gives up on: the one read
    of a private attribute of aiodocker, under the version range pinned in pyproject.toml;
    tests/docker/test_aiodocker_internals.py fails if a release drops it."""
    return stream._resp


def split_image_tag(image: str) -> tuple[str, str]:
    """`repo[:tag]` -> (repo, tag); a port in the registry host is not a tag."""
    if "@" in image:
        return image, ""
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = image.rsplit(":", 1)
        return repo, tag
    return image, "latest"
