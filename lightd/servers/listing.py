"""The node's lists as pages: servers and volumes, filtered, in a stable order (created_at, then id) and
continued by opaque cursors. Without a limit a list is whole, as it always was."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from lightd.errors import ValidationFailed
from lightd.servers.models import container_view
from lightd.servers.volume_mounts import volumes_of
from lightd.timestamps import parse_rfc3339

if TYPE_CHECKING:
    from lightd.servers.manager import ServerManager

Key = tuple[float, str]


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which part of a list: up to `limit` items (None: all) after the one `cursor` names (None: the first)."""

    limit: int | None = None
    cursor: str | None = None


def encode_cursor(kind: str, key: Key) -> str:
    """An opaque cursor naming the position after `key` in the list `kind`."""
    return base64.urlsafe_b64encode(orjson.dumps([kind, key[0], key[1]])).rstrip(b"=").decode()


def decode_cursor(kind: str, cursor: str) -> Key:
    """The position a cursor of the list `kind` names; 400 naming `cursor` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = orjson.loads(raw)
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        value = None
    if (isinstance(value, list) and len(value) == 3 and value[0] == kind
            and isinstance(value[1], (int, float)) and not isinstance(value[1], bool) and isinstance(value[2], str)):
        return float(value[1]), value[2]
    raise ValidationFailed(f"cursor: not a cursor of the {kind} list (use next_cursor from the previous page)",
                           details=[{"field": "cursor", "message": "not a cursor of this list"}])


def paginate(kind: str, items: Iterable[tuple[Key, dict[str, Any]]], page: PageRequest) -> dict[str, Any]:
    """`{kind: [...], "count", "total", "next_cursor"}`: `count` is this page's, `total` the whole filtered
    list's; `next_cursor` is null on the last page."""
    ordered = sorted(items, key=lambda pair: pair[0])
    start = 0
    if page.cursor is not None:
        after = decode_cursor(kind, page.cursor)
        # Position by key, not by index: servers made or deleted between two pages shift nothing.
        start = next((i for i, (key, _) in enumerate(ordered) if key > after), len(ordered))
    end = len(ordered) if page.limit is None else min(start + page.limit, len(ordered))
    chosen = [item for _, item in ordered[start:end]]
    next_cursor = encode_cursor(kind, ordered[end - 1][0]) if end < len(ordered) else None
    return {kind: chosen, "count": len(chosen), "total": len(ordered), "next_cursor": next_cursor}


def _timestamp(value: Any) -> float:
    """A created_at as seconds, whether stored as a number or shown as an ISO 8601 string."""
    if isinstance(value, (int, float)):
        return float(value)
    return parse_rfc3339(str(value))


def container_page(manager: ServerManager, *, state: str | None = None, install_state: str | None = None,
                   page: PageRequest = PageRequest()) -> dict[str, Any]:
    """Servers in `state` and `install_state` (None: any), one page of them."""
    items = [
        ((_timestamp(s.record["created_at"]), s.id), container_view(s.record, s.runtime()))
        for s in manager
        if (state is None or s.state == state) and (install_state is None or s.install_state == install_state)
    ]
    return paginate("containers", items, page)


class ChangeCount:
    """Moves with every change any server's public view shows (a Server's state, stored record or missing
    flag) and with every server added or removed (ServerManager): what the cached whole list is checked
    against, one comparison per GET whatever the number of servers."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def bump(self) -> None:
        self.value += 1


def volume_users(manager: ServerManager) -> dict[str, list[str]]:
    """The servers using each volume (as their own or mounted: `volume_mounts`), by volume id."""
    users: dict[str, list[str]] = {}
    for server in sorted(manager, key=lambda s: s.id):
        for volume_id in volumes_of(server.spec):
            users.setdefault(volume_id, []).append(server.id)
    return users


async def volume_page(manager: ServerManager, *, state: str | None = None,
                      page: PageRequest = PageRequest()) -> dict[str, Any]:
    """Volumes `in_use` (a server uses them) or `unused` (None: any), each with the servers using it; one page."""
    users = volume_users(manager)
    items = []
    for volume in await manager.volumes.list():
        containers = users.get(volume["volume_id"], [])
        if state is None or (state == "in_use") == bool(containers):
            items.append(((_timestamp(volume["created_at"]), volume["volume_id"]), {**volume, "containers": containers}))
    return paginate("volumes", items, page)
