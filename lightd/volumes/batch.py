"""Several entries of one folder at once, as a file manager selects them: delete, and chmod.

Every entry is named relative to `root` and resolved through the sandbox (no `..`, no link followed). All
names are checked before anything changes; a name that would be the root itself is refused, so a batch can
never delete or re-mode the folder it works in. Synchronous: run with `VolumeService.in_sandbox`.
"""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING, Any

from lightd.errors import NotFound, PathNotAllowed, ValidationFailed
from lightd.volumes import files
from lightd.volumes.files import SAFE_MODE_BITS
from lightd.volumes.quota import WriteBudget
from lightd.volumes.sandbox import Sandbox, display, split_path

if TYPE_CHECKING:
    from lightd.volumes.service import VolumeService

MAX_BATCH = 10_000
"""Entries one request may name (the request models hold it too)."""


def entry_paths(root: str, names: list[str], field: str = "files") -> list[str]:
    """`root`/`name` for each name, each a path strictly inside `root`; 400 naming the first bad one."""
    base = split_path(root)
    paths = []
    for index, name in enumerate(names):
        try:
            parts = split_path(name)
        except PathNotAllowed as exc:
            raise PathNotAllowed(f"{field}[{index}]: {exc.message}", details={"field": f"{field}.{index}"}) from None
        if not parts:
            # SECURITY: "", "." or "/" would name the root itself: a batch never deletes or chmods its root
            raise PathNotAllowed(f"{field}[{index}]: names the root folder itself", details={"field": f"{field}.{index}"})
        paths.append(display(base + parts))
    return paths


def _delete(box: Sandbox, paths: list[str], budget: WriteBudget | None = None) -> dict[str, Any]:
    deleted, missing = [], []
    for path in paths:
        try:
            kind = files.remove(box, path, budget)  # unlinkat: a link goes, its target stays
        except NotFound:
            missing.append(path)
            continue
        deleted.append({"path": path, "deleted": kind})
    return {"deleted": deleted, "not_found": missing}


async def delete_files(volumes: VolumeService, volume_id: str, root: str, names: list[str]) -> dict[str, Any]:
    """Delete `names` (files, links themselves, folder trees) in `root`; missing ones are listed, not fatal."""
    paths = entry_paths(root, names)
    result = await volumes.in_sandbox(volume_id, _delete, paths, budget=await volumes.write_budget(volume_id))
    return {"root": "/".join(split_path(root)), **result}


def parse_mode(text: str, field: str = "mode") -> int:
    """An octal permission string ("644", "0755", "0o600") as bits; setuid, setgid and sticky are refused."""
    digits = text.strip().lower().removeprefix("0o")
    if not (3 <= len(digits) <= 4 and all(c in "01234567" for c in digits)):
        raise ValidationFailed(f"{field}: not an octal mode such as \"0644\": {text[:16]!r}", details={"field": field})
    mode = int(digits, 8)
    if mode & ~SAFE_MODE_BITS:
        # SECURITY: a setuid-root file in a volume is a root shell for any local account
        raise ValidationFailed(f"{field}: setuid, setgid and sticky bits are not allowed ({text!r})",
                               details={"field": field})
    return mode


def _chmod(box: Sandbox, changes: list[tuple[str, int]]) -> list[dict[str, Any]]:
    for path, _ in changes:
        if stat.S_ISLNK(box.lstat(path).st_mode):  # 404 before anything changes
            # SECURITY: chmod followed links — a link's mode means nothing and its target may be outside
            raise PathNotAllowed(f"{path}: is a symbolic link; links are not followed")
    for path, mode in changes:
        files.chmod(box, path, mode)  # O_NOFOLLOW again: a link swapped in since the check is refused
    return [{"path": path, "mode": f"{mode:04o}"} for path, mode in changes]


async def chmod_files(volumes: VolumeService, volume_id: str, root: str, changes: list[tuple[str, str]]) -> dict[str, Any]:
    """Set the mode of each (name, octal mode) in `root`, never through a link; 400 for setuid/setgid/sticky."""
    modes = [parse_mode(mode, f"files.{i}.mode") for i, (_, mode) in enumerate(changes)]
    paths = entry_paths(root, [name for name, _ in changes])
    done = await volumes.in_sandbox(volume_id, _chmod, list(zip(paths, modes)))
    return {"root": "/".join(split_path(root)), "files": done}
