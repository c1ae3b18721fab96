"""One volume entry as the file API describes it (listings and search results), from its lstat alone."""

from __future__ import annotations

import mimetypes
import os
import stat
from typing import Any

from lightd.timestamps import rfc3339

# Python's built-in table only (not /etc/mime.types): the same answer on every host, and no file read.
_MIME = mimetypes.MimeTypes(filenames=())
DIRECTORY_MIME = "inode/directory"
SYMLINK_MIME = "inode/symlink"
DEFAULT_MIME = "application/octet-stream"


def kind_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def printable(name: str) -> str:
    """A file name as JSON can carry it (undecodable bytes become U+FFFD)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def mime_of(name: str, mode: int) -> str:
    """A media type guessed from the name's extension (never from the contents: nothing is opened)."""
    if stat.S_ISDIR(mode):
        return DIRECTORY_MIME
    if stat.S_ISLNK(mode):
        return SYMLINK_MIME
    if not stat.S_ISREG(mode):
        return DEFAULT_MIME
    return _MIME.guess_type(name, strict=False)[0] or DEFAULT_MIME


def entry_view(name: str, st: os.stat_result) -> dict[str, Any]:
    """name, type, size, mode ("0644"), mode_bits (420), is_dir, is_file, is_symlink, mime, modified."""
    shown = printable(name)
    bits = stat.S_IMODE(st.st_mode)
    return {
        "name": shown,
        "type": kind_of(st.st_mode),
        "size": st.st_size,
        "mode": f"{bits:04o}",
        "mode_bits": bits,
        "is_dir": stat.S_ISDIR(st.st_mode),
        "is_file": stat.S_ISREG(st.st_mode),
        "is_symlink": stat.S_ISLNK(st.st_mode),
        "mime": mime_of(shown, st.st_mode),
        "modified": rfc3339(st.st_mtime),
    }
