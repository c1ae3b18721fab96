"""The script every server container runs (`/bin/sh /app/data/entrypoint.sh`, see the Docker environment's
container config): it changes to the server's volume and execs the startup command from `$STARTUP`. Written
by lightd into the server's data folder (not the volume: the tenant cannot change it)."""

from __future__ import annotations

from pathlib import Path

ENTRYPOINT = """#!/bin/sh
# Written by lightd: runs the server's startup command from its volume.
cd /home/container || exit 1
exec /bin/sh -c "$STARTUP"
"""


def write_entrypoint(data_path: Path) -> None:
    """Write the script into the server's data folder (blocking)."""
    data_path.mkdir(parents=True, exist_ok=True)
    (data_path / "entrypoint.sh").write_text(ENTRYPOINT)
