"""gitignore-style path patterns (a backup's `ignore` list and `.lightdignore`, a volume's file denylist),
matched in linear time: every pattern becomes one RE2 expression of a single `re2.Set`, so a path costs one
pass whatever the patterns (a tenant writes `.lightdignore`: no pattern of theirs may backtrack).

Rules, as git's: blank lines and `#` comments are skipped; `!` re-includes; a trailing `/` matches only
folders; a pattern with a `/` before its end is anchored at the volume root, one without matches a name at
any depth; `*` and `?` do not cross `/`, `**` does (`**/x`, `x/**`, `a/**/b`); `[...]` classes; `\\`
escapes. The last pattern that matches wins; a folder left out is not walked, so nothing under it can be
re-included (as in git).
"""

from __future__ import annotations

import os
import string

import re2

from lightd.errors import ValidationFailed

MAX_PATTERNS = 1000
MAX_PATTERN_CHARS = 1024
RE2_MAX_MEM = 64 * 1024 * 1024
_PLAIN = frozenset((string.ascii_letters + string.digits).encode())


def _literal(text: str) -> str:
    """`text` matched byte for byte (the set runs in Latin-1 mode over file-system bytes)."""
    return "".join(chr(b) if b in _PLAIN else f"\\x{b:02x}" for b in os.fsencode(text))


def _class(glob: str, start: int) -> tuple[str, int] | None:
    """The `[...]` class at `start` as RE2 and the index after it, or None when it never closes."""
    i = start + 1
    negate = i < len(glob) and glob[i] in "!^"
    if negate:
        i += 1
    body_start = i
    if i < len(glob) and glob[i] == "]":
        i += 1  # a leading ] is literal
    while i < len(glob) and glob[i] != "]":
        i += 2 if glob[i] == "\\" else 1
    if i >= len(glob):
        return None
    items, j = [], body_start
    while j < i:
        char = glob[j]
        if char == "\\" and j + 1 < i:
            j += 1
            char = glob[j]
        if char == "-" and items and j + 1 < i:
            items.append("-")
        else:
            items.append(_literal(char))
        j += 1
    return ("[^/" if negate else "[") + "".join(items) + "]", i + 1


def _segment(glob: str) -> str:
    out, i = [], 0
    while i < len(glob):
        char = glob[i]
        if char == "*":
            out.append("[^/]*")
            while i + 1 < len(glob) and glob[i + 1] == "*":
                i += 1
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (found := _class(glob, i)) is not None:
            out.append(found[0])
            i = found[1]
            continue
        elif char == "\\" and i + 1 < len(glob):
            i += 1
            out.append(_literal(glob[i]))
        else:
            out.append(_literal(char))
        i += 1
    return "".join(out)


def translate(pattern: str) -> tuple[str, bool, bool] | None:
    """(RE2 expression over a path relative to the root, negated, folders only), or None for a blank line
    or a comment."""
    line = pattern.rstrip("\n\r")
    while line.endswith(" ") and not line.endswith("\\ "):
        line = line[:-1]
    if not line or line.startswith("#"):
        return None
    negated = line.startswith("!")
    if negated:
        line = line[1:]
    elif line.startswith(("\\!", "\\#")):
        line = line[1:]
    dir_only = line.endswith("/")
    line = line.rstrip("/")
    if not line:
        return None
    anchored = "/" in line
    segments = line.lstrip("/").split("/")
    parts = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append(".*" if last else "(?:.*/)?")
        else:
            parts.append(_segment(segment) + ("" if last else "/"))
    body = "".join(parts)
    return ("^" if anchored else "^(?:.*/)?") + body + "$", negated, dir_only


class IgnoreRules:
    """Compiled patterns; `ignored(parts, is_dir)` for a path below the root."""

    def __init__(self, patterns: list[str]) -> None:
        if len(patterns) > MAX_PATTERNS:
            raise ValidationFailed(f"ignore: more than {MAX_PATTERNS} patterns", details={"field": "ignore"})
        options = re2.Options()
        options.encoding = re2.Options.Encoding.LATIN1
        options.dot_nl = True
        options.max_mem = RE2_MAX_MEM
        self._set = re2.Set.SearchSet(options)
        self._rules: list[tuple[bool, bool]] = []
        for pattern in patterns:
            if len(pattern) > MAX_PATTERN_CHARS:
                raise ValidationFailed(f"ignore: a pattern is longer than {MAX_PATTERN_CHARS} characters",
                                       details={"field": "ignore"})
            rule = translate(pattern)
            if rule is None:
                continue
            try:
                self._set.Add(rule[0].encode("latin-1"))
            except Exception:  # noqa: BLE001 - re2 reports a bad class as a plain error
                raise ValidationFailed(f"ignore: not a valid pattern: {pattern[:100]!r}", details={"field": "ignore"}) from None
            self._rules.append(rule[1:])
        if self._rules:
            try:
                self._set.Compile()
            except Exception:  # noqa: BLE001 - over RE2_MAX_MEM
                raise ValidationFailed("ignore: the patterns are too complex", details={"field": "ignore"}) from None

    def __bool__(self) -> bool:
        return bool(self._rules)

    def ignored(self, parts: tuple[str, ...], is_dir: bool) -> bool:
        """Whether the entry at `parts` is left out (the last matching pattern decides)."""
        if not self._rules:
            return False
        found = self._set.Match(os.fsencode("/".join(parts)))
        if not found:
            return False
        for index in sorted(found, reverse=True):
            negated, dir_only = self._rules[index]
            if dir_only and not is_dir:
                continue
            return not negated
        return False
