"""The building blocks of config.json's model: a section (unknown keys refused), ports, browser origins,
paths."""

from __future__ import annotations

import os
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A config section: an unknown key is an error naming it (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid")


Port = Annotated[int, Field(ge=1, le=65535)]

ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://(\[[0-9a-f:.]+\]|[a-z0-9_-]+(\.[a-z0-9_-]+)*)(:[0-9]{1,5})?")


def normalize_origin(value: str) -> str:
    """`"*"` or a browser origin `scheme://host[:port]` (no path, no trailing slash), lower-cased."""
    origin = value.strip().lower()
    if origin != "*" and not ORIGIN.fullmatch(origin):
        raise ValueError(f"not an origin (scheme://host[:port] or \"*\"): {value!r}")
    return origin


def absolute_or_empty(value: str) -> str:
    if value and not (os.path.isabs(value) and "\x00" not in value):
        raise ValueError(f"must be an absolute path (or empty): {value!r}")
    return value


CorsOrigins = Annotated[list[Annotated[str, AfterValidator(normalize_origin)]], Field(max_length=100)]
"""Origins browsers may call an API from (lightd.cors): `scheme://host[:port]` entries and/or `"*"`."""
