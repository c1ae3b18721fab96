"""What the template tests serve and run instead of the real games: a local HTTP server (loopback) with the
artifacts an install downloads, stand-in game programs that print the real game's "done" line and stop on
the real stop command or signal, and the shims (`java`, `dotnet`) the stand-ins need in a busybox image."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.conftest import TEST_IMAGE, Api
from tests.servers.helpers import make_volume

# Runs the argument after -jar, or the first *.dll, as a shell script: the stand-in artifact is one.
RUN_ARTIFACT = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in -jar) shift; exec sh "$1" ;; *.dll) exec sh "$1" ;; esac
  shift
done
echo "stand-in shim: no artifact in the arguments"; exit 1
"""
SHIM_DIR = ".standin-bin"


def standin(done_line: str, stop_command: str | None = None) -> bytes:
    """A game stand-in: prints `done_line` (the real game's), then ends on `stop_command` or SIGINT/SIGTERM."""
    quoted = done_line.replace("'", "'\\''")
    stop = (stop_command or "").replace("'", "'\\''")
    return f"""#!/bin/sh
case " $* " in *" --create "*) echo "stand-in: created $*"; exit 0 ;; esac
trap 'echo "stand-in: signal received, saving"; exit 0' INT TERM
echo "stand-in starting in $(pwd) on ${{SERVER_IP}}:${{SERVER_PORT}} with ${{SERVER_MEMORY}} MiB"
printf '%s\\n' '{quoted}'
while :; do
  if read -t 1 line; then
    echo "stand-in got: $line"
    if [ -n '{stop}' ] && [ "$line" = '{stop}' ]; then echo "stand-in: stopping"; exit 0; fi
  else
    [ $? -gt 128 ] || sleep 1
  fi
done
""".encode()


def steamcmd_tarball(files: dict[str, bytes]) -> bytes:
    """A stand-in steamcmd: `steamcmd.sh +force_install_dir DIR … +app_update ID` copies `files` into DIR."""
    script = b"""#!/bin/sh
here=$(cd "$(dirname "$0")" && pwd)
dir=.
while [ $# -gt 0 ]; do
  case "$1" in
    +force_install_dir) dir=$2; shift ;;
    +app_update) echo "Update state (0x61) downloading, app $2"; app=$2; shift ;;
  esac
  shift
done
cp -a "$here/payload/." "$dir/"
echo "Success! App '$app' fully installed."
"""
    return tar_gz({"steamcmd.sh": script, **{f"payload/{k}": v for k, v in files.items()}})


def tar_gz(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def zip_file(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o755 << 16
            archive.writestr(info, data)
    return out.getvalue()


class ArtifactServer:
    """Serves `files` (path -> bytes) on 127.0.0.1; `requests` lists the paths asked for."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[str] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _serve(self, request: web.Request) -> web.Response:
        path = request.path.lstrip("/")
        self.requests.append(path)
        if path not in self.files:
            return web.Response(status=404, text=f"no {path}")
        return web.Response(body=self.files[path], content_type="application/octet-stream")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def template_config(make_config: Any, prefix: str, images: list[str]) -> Any:
    """A daemon config whose image map sends every image the templates name to the local busybox image, and
    whose containers share the host's network (the artifact server listens on loopback only)."""
    return make_config(docker={"container_prefix": prefix, "engine_poll_seconds": 1.0, "network": "host",
                               "image_map": {image: TEST_IMAGE for image in images}})


async def port_and_volume(api: Api, port: int) -> tuple[dict[str, Any], str]:
    status, body = await api.post("/network/ports", json={"ip": "127.0.0.1", "port": port})
    assert status in (200, 201), body
    return {"ip": "127.0.0.1", "port": port, "protocol": "tcp"}, await make_volume(api)


def install_shims(volume: Path, names: tuple[str, ...]) -> dict[str, str]:
    """Put `java`/`dotnet` stand-ins in the volume; the environment that puts them on the PATH."""
    (volume / SHIM_DIR).mkdir(exist_ok=True)
    for name in names:
        path = volume / SHIM_DIR / name
        path.write_text(RUN_ARTIFACT)
        path.chmod(0o755)
    return {"PATH": f"/home/container/{SHIM_DIR}:/usr/sbin:/usr/bin:/sbin:/bin"}
