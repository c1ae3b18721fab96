"""Host directories bound into servers (`mount` entries), checked and pinned so Docker never resolves a
path a tenant controls.

Docker resolves a bind source path when the container *starts*, following symbolic links. A directory
under `docker.allowed_mounts` is writable by the servers that mount it, so a tenant can turn any part of
it into a link to `/` — before the create, or later, between one start and the next. Two defences:

1. Every source is opened component by component with `O_NOFOLLOW` from the shallowest allowed root
   that contains it; a source that is, or passes through, a symbolic link is refused (400 at create; a
   failed start, with an `error` event, before every start of the server or its installer).
2. The directory found that way is bind-mounted, through its open descriptor (`/proc/self/fd/N`), onto a
   pin point under `data_dir/mounts/<server>/<n>` (root-only, 0700), and Docker is given the pin point.
   A mount through a descriptor binds exactly the inode that was checked: a swap after the check
   changes nothing Docker sees, which closes the race between check and use.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import stat
from pathlib import Path, PurePosixPath

from lightd.errors import LightdError, ValidationFailed
from lightd.servers.models import Mount

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MS_BIND = 4096
MNT_DETACH = 2


def mount_allowed(source: str, allowed: list[str]) -> bool:
    """True when `source` is one of `allowed` or below one, compared by path component
    (`/srv/shared` admits `/srv/shared/x`, never `/srv/shared-secret`)."""
    return _allowed_root(source, allowed) is not None


def _allowed_root(source: str, allowed: list[str]) -> tuple[str, ...] | None:
    """The shallowest allowed root containing `source`, as components (the root `/` never counts)."""
    parts = PurePosixPath(source).parts
    best: tuple[str, ...] | None = None
    for root in allowed:
        root_parts = PurePosixPath(root).parts
        if len(root_parts) > 1 and parts[: len(root_parts)] == root_parts:
            if best is None or len(root_parts) < len(best):
                # The shallowest root: below it every component is walked without following links, so a
                # server with write access to an outer root cannot swap an inner one for a link.
                best = root_parts
    return best


def open_source(source: str, allowed: list[str]) -> int:
    """A directory descriptor of `source`, reached without following any link below its
    allowed root; ValidationFailed naming the reason otherwise."""
    root = _allowed_root(source, allowed)
    if root is None:
        raise ValidationFailed(f"mount: {source} is not under an allowed mount directory", details={"field": "mount"})
    try:
        # The allowed root itself is the admin's path (links in it are the admin's choice).
        fd = os.open(PurePosixPath(*root), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ValidationFailed(f"mount: allowed directory {PurePosixPath(*root)}: {exc.strerror}",
                               details={"field": "mount"}) from None
    parts = PurePosixPath(source).parts[len(root):]
    try:
        for index, name in enumerate(parts):
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)  # SECURITY: symlink mount escape (O_NOFOLLOW)
            except OSError as exc:
                where = PurePosixPath(*root, *parts[: index + 1])
                raise ValidationFailed(f"mount: {where}: {_reason(fd, name, exc)}", details={"field": "mount"}) from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _reason(dir_fd: int, name: str, exc: OSError) -> str:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        st = None
    if st is not None and stat.S_ISLNK(st.st_mode):
        return "is a symbolic link; mount sources must not be or pass through links"
    if exc.errno == errno.ENOTDIR:
        return "not a directory (only directories can be mounted)"
    return exc.strerror or str(exc)


class MountPins:
    """Checks mount sources and pins them under `root` (`data_dir/mounts`) for Docker to bind."""

    def __init__(self, root: Path, allowed: list[str]) -> None:
        self.root = root
        self.allowed = allowed
        self._libc: ctypes.CDLL | None = None

    def pin_path(self, internal_id: str, index: int) -> Path:
        """Where mount `index` of a server is pinned (what Docker is told to bind)."""
        return self.root / internal_id / str(index)

    def check(self, mounts: list[Mount]) -> None:
        """Refuse (400) sources outside the allowed directories or through a link. Blocking: call in a thread."""
        for mount in mounts:
            os.close(open_source(mount.source, self.allowed))

    async def check_async(self, mounts: list[Mount]) -> None:
        """`check` off the event loop."""
        if mounts:
            await asyncio.to_thread(self.check, mounts)

    async def pin(self, internal_id: str, mounts: list[Mount]) -> None:
        """Check every source again and bind each one's directory onto its pin point (before a start)."""
        await asyncio.to_thread(self._pin, internal_id, mounts)

    async def unpin(self, internal_id: str) -> None:
        """Detach and remove a server's pin points (at delete)."""
        await asyncio.to_thread(self._unpin, internal_id)

    def _pin(self, internal_id: str, mounts: list[Mount]) -> None:
        self._unpin(internal_id)
        if not mounts:
            return
        fds = []
        try:
            for mount in mounts:
                fds.append(open_source(mount.source, self.allowed))
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)
            (self.root / internal_id).mkdir(mode=0o700, exist_ok=True)
            for index, fd in enumerate(fds):
                point = self.pin_path(internal_id, index)
                point.mkdir(mode=0o700, exist_ok=True)
                # SECURITY: symlink mount escape — bind the checked inode itself, by descriptor.
                self._mount(f"/proc/self/fd/{fd}", point)
        finally:
            for fd in fds:
                os.close(fd)

    def _unpin(self, internal_id: str) -> None:
        base = self.root / internal_id
        try:
            names = os.listdir(base)
        except FileNotFoundError:
            return
        for name in names:
            point = base / name
            # Lazy detach: a running container keeps its own copy of the mount; ours only goes away.
            for _ in range(16):  # mounts stacked by earlier pins, if any survived a crash
                if self._libc_call("umount2", str(point).encode(), MNT_DETACH) != 0:
                    break
            try:
                point.rmdir()
            except OSError:
                pass
        try:
            base.rmdir()
        except OSError:
            pass

    def _mount(self, source: str, target: Path) -> None:
        if self._libc_call("mount", source.encode(), str(target).encode(), None, MS_BIND, None) != 0:
            code = ctypes.get_errno()
            raise LightdError(f"mount: binding a mount source failed: {os.strerror(code)} "
                              "(lightd needs CAP_SYS_ADMIN in the host's mount namespace to pin mounts)")

    def _libc_call(self, name: str, *args: object) -> int:
        if self._libc is None:
            self._libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return int(getattr(self._libc, name)(*args))
