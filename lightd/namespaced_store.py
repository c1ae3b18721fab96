"""The base of a front end's own store: its tables on the core Store's connection, versioned in its own
namespace of `schema_versions` (a core table), and made the first time the front end writes something, so
a front end that is never used leaves no tables."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import ClassVar

from lightd.store import Store

NAMESPACE = re.compile(r"[a-z][a-z0-9_]*")
"""A namespace's spelling (it is written into the migration script)."""


class NamespacedStore:
    """Subclasses name their NAMESPACE and list its MIGRATIONS (append only, `CREATE ... IF NOT EXISTS`:
    a database from before namespaces may already have the tables), and call `ensure()` before each query."""

    NAMESPACE: ClassVar[str]
    MIGRATIONS: ClassVar[tuple[str, ...]]
    LEGACY_TABLE: ClassVar[str | None] = None
    """A table the core migrations made before front ends had namespaces: where it exists, the front end
    was used, and its first read records the namespace (its rows stay) instead of finding nothing."""

    def __init__(self, core: Callable[[], Store]) -> None:
        if not NAMESPACE.fullmatch(self.NAMESPACE):
            raise ValueError(f"not a namespace: {self.NAMESPACE!r}")
        # A callable: the daemon opens its Store at start-up, after the front ends are built.
        self._core = core
        self._ready_on: Store | None = None

    @property
    def core(self) -> Store:
        return self._core()

    async def ensure(self, *, create: bool = True) -> bool:
        """Whether the tables are there, making them now unless `create` is False (a read of a front end
        never used finds nothing, and makes nothing). Cheap once they are."""
        core = self._core()
        if self._ready_on is core:
            return True
        version = await self.version()
        if version == 0 and not create and not await self._has_legacy_table(core):
            return False
        if version != len(self.MIGRATIONS):
            await self._migrate(core)
        self._ready_on = core
        return True

    async def version(self) -> int:
        """The namespace's schema version; 0 when it has no tables yet."""
        row = await self.core.fetchone("SELECT version FROM schema_versions WHERE namespace = ?", (self.NAMESPACE,))
        return int(row["version"]) if row else 0

    async def _migrate(self, core: Store) -> None:
        async with core.write_lock:
            version = await self.version()  # another coroutine may have migrated it meanwhile
            if version > len(self.MIGRATIONS):
                raise RuntimeError(f"{self.NAMESPACE} schema {version} is newer than this lightd ({len(self.MIGRATIONS)})")
            for step in range(version, len(self.MIGRATIONS)):
                record = (f"INSERT INTO schema_versions (namespace, version) VALUES ('{self.NAMESPACE}', {step + 1})"
                          " ON CONFLICT(namespace) DO UPDATE SET version = excluded.version;")
                try:
                    await core.db.executescript("BEGIN;" + self.MIGRATIONS[step] + record + "COMMIT;")
                except BaseException:
                    # executescript stops at the failing statement: the shared connection must not stay in it.
                    if core.db.in_transaction:
                        await core.db.execute("ROLLBACK")
                    raise

    async def _has_legacy_table(self, core: Store) -> bool:
        if self.LEGACY_TABLE is None:
            return False
        row = await core.fetchone("SELECT 1 AS one FROM sqlite_master WHERE type = 'table' AND name = ?", (self.LEGACY_TABLE,))
        return row is not None
