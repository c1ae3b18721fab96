"""VolumeService (placeholder interface; the full file API lands with the volumes work)."""

from __future__ import annotations

from pathlib import Path

from lightd.config import VolumeLimits
from lightd.store import Store


class VolumeService:
    def __init__(self, root: Path, store: Store, limits: VolumeLimits) -> None:
        self.root = root
        self.store = store
        self.limits = limits

    async def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
