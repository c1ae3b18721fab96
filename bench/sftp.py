"""sftp: put and get of a big file through lightd's SFTP server, against OpenSSH's own sftp-server.

    python bench/sftp.py [--quick] [--size-mib N] [--rounds N]

A file of random bytes (1 GiB; --quick: 128 MiB) is moved with OpenSSH's `sftp` client in batch mode, on
127.0.0.1, `--rounds` times (3; --quick 2) each way, and the median time is kept:

- lightd: the daemon with `sftp.enabled`, a real server (container) and a temporary `sftp` token as the
  password (given by `sshpass`); `put` into the server's volume, then `get` of it.
- baseline: OpenSSH's `sshd -D -f <test-made config>` (a non-daemonising child on a free loopback port, a
  test-made host key and an authorized client key, `Subsystem sftp /usr/lib/openssh/sftp-server`); the
  same `put` and `get` to and from a temporary directory.

Both sides use the same cipher (`--cipher`, default aes128-gcm@openssh.com) and the same client. Target:
lightd >= 0.5x the baseline's MB/s, each way. Needs scripts/setup-sftp.sh (openssh-server, sshpass).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

import common  # noqa: F401 - puts the repo root on sys.path
from common import Api, Bench, free_port, median, note, parse_args, ratio, report, verdict

import aiohttp

TARGET = 0.5
MIB = 1024 * 1024
SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def make_file(path: Path, size: int) -> None:
    with path.open("wb") as out:
        for _ in range(size // (8 * MIB)):
            out.write(os.urandom(8 * MIB))
        out.write(os.urandom(size % (8 * MIB)))


def sftp_batch(commands: str, port: int, user: str, cwd: Path, cipher: str, *, password: str | None = None,
               key: Path | None = None, timeout: float = 1800) -> float:
    """Seconds OpenSSH's `sftp -b -` took to run `commands`; fails loudly."""
    options = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
               "-o", f"Ciphers={cipher}", "-P", str(port)]
    if password is not None:
        # BatchMode=no first: `sftp -b` would turn password prompts off (ssh keeps an option's first value).
        args = ["sshpass", "-e", "sftp", "-o", "BatchMode=no", "-o", "PreferredAuthentications=password",
                "-o", "PubkeyAuthentication=no", *options]
        env = {**os.environ, "SSHPASS": password}
    else:
        args = ["sftp", "-o", "IdentitiesOnly=yes", "-i", str(key), *options]
        env = dict(os.environ)
    started = time.perf_counter()
    result = subprocess.run([*args, "-b", "-", f"{user}@127.0.0.1"], input=commands, capture_output=True, text=True,
                            cwd=str(cwd), env=env, timeout=timeout)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"sftp {commands.strip()!r} to port {port}: {result.stderr.strip()[-500:]}")
    return elapsed


def start_sshd(bench: Bench, port: int) -> tuple[Path, Path]:
    """OpenSSH's sshd in a test-made config (foreground child); returns (client key, its served directory)."""
    for tool in (SSHD, SFTP_SERVER, shutil.which("sshpass") or "/nonexistent"):
        if not os.path.exists(tool):
            raise SystemExit(f"{tool} missing: run scripts/setup-sftp.sh")
    home = bench.tmp / "sshd"
    home.mkdir(mode=0o700)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / name)], check=True)
    shutil.copy(home / "client_key.pub", home / "authorized_keys")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    config = home / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {home / 'host_key'}
PidFile none
AuthorizedKeysFile {home / 'authorized_keys'}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
Subsystem sftp {SFTP_SERVER}
""")
    bench.spawn([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    served = bench.tmp / "baseline"
    served.mkdir()
    return home / "client_key", served


async def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


async def make_server(api: Api) -> str:
    """A ready server to log in to; returns its volume id."""
    status, volume = await api.call("POST", "/volumes")
    assert status == 201, volume
    status, body = await api.call("POST", "/containers", json={
        "internal_id": "bench", "image": common.TEST_IMAGE, "volume_id": volume["volume_id"], "startup_command": "sleep 1000"})
    assert status == 202, body
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, body = await api.call("GET", "/containers/bench")
        if body.get("install_state") == "ready":
            return volume["volume_id"]
        if body.get("install_state") == "failed":
            raise RuntimeError(f"install failed: {body}")
        await asyncio.sleep(0.2)
    raise RuntimeError("server not ready after 120 s")


async def main(bench: Bench) -> None:
    args = parse_args(__doc__, lambda p: (p.add_argument("--size-mib", type=int, default=None),
                                          p.add_argument("--rounds", type=int, default=None),
                                          p.add_argument("--cipher", default="aes128-gcm@openssh.com")))
    size = (args.size_mib or (128 if args.quick else 1024)) * MIB
    rounds = args.rounds or (2 if args.quick else 3)
    local = bench.tmp / "local"
    local.mkdir()
    note(f"writing a {size // MIB} MiB random file")
    await asyncio.to_thread(make_file, local / "big.bin", size)

    sftp_port, sshd_port = free_port(), free_port()
    daemon = bench.daemon({"sftp": {"enabled": True, "host": "127.0.0.1", "port": sftp_port}, "log_level": "WARNING"})
    await daemon.start()
    key, served = start_sshd(bench, sshd_port)
    await wait_port(sftp_port)
    await wait_port(sshd_port)
    async with aiohttp.ClientSession() as session:
        api = Api(session, daemon)
        await make_server(api)
        status, body = await api.call("POST", "/auth/tokens", json={"purpose": "sftp", "container": "bench",
                                                                      "ttl_seconds": 86400})
        assert status == 201, body
        token = body["token"]

    def lightd(commands: str) -> float:
        return sftp_batch(commands, sftp_port, "bench.bench", local, args.cipher, password=token)

    def baseline(commands: str) -> float:
        return sftp_batch(commands, sshd_port, "root", local, args.cipher, key=key)

    times: dict[str, list[float]] = {k: [] for k in ("lightd_put", "base_put", "lightd_get", "base_get")}
    for i in range(rounds):
        note(f"round {i + 1}/{rounds}")
        times["base_put"].append(await asyncio.to_thread(baseline, f"put big.bin {served}/big.bin\n"))
        times["lightd_put"].append(await asyncio.to_thread(lightd, "put big.bin /big.bin\n"))
        times["base_get"].append(await asyncio.to_thread(baseline, f"get {served}/big.bin base-copy.bin\n"))
        times["lightd_get"].append(await asyncio.to_thread(lightd, "get /big.bin lightd-copy.bin\n"))
        for copy in ("base-copy.bin", "lightd-copy.bin"):
            if (local / copy).stat().st_size != size:
                raise RuntimeError(f"{copy}: wrong size")
            (local / copy).unlink()

    def mbs(seconds: list[float]) -> float:
        return size / 1e6 / median(seconds)

    for way in ("put", "get"):
        ours, base = mbs(times[f"lightd_{way}"]), mbs(times[f"base_{way}"])
        r = ratio(ours, base)
        report(f"sftp {way}", f"{size // MIB} MiB, cipher {args.cipher}, median of {rounds}: lightd {ours:.0f} MB/s, "
                              f"OpenSSH sftp-server {base:.0f} MB/s, ratio {r:.2f} (target >= {TARGET}) "
                              f"{verdict(r >= TARGET)}")


if __name__ == "__main__":
    common.run("sftp", main)

