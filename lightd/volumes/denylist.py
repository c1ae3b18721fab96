"""A volume's file denylist: the `file_denylist` of the templates (Pterodactyl eggs) of the servers using it.

A denied path cannot be reached through lightd — not read, written, created, renamed to or from, chmodded,
deleted, copied, archived or extracted — by the file API, signed URLs, pulls or SFTP; listings still show
its name (as Wings'). Patterns are gitignore-style (lightd/volumes/patterns.py), each server's list compiled
once into one RE2 set (linear time), and a path is denied when any of the lists denies it or one of its
folders: a volume shared by servers gets the union. A pattern's trailing `/` denies the name whatever it is
(a path about to be made has no type yet). Matching is case-sensitive, as the file system is.
"""

from __future__ import annotations

from collections.abc import Iterable

from lightd.errors import FileDenied, ValidationFailed
from lightd.volumes.patterns import MAX_PATTERN_CHARS, MAX_PATTERNS, IgnoreRules

DENIED = "denied by the file denylist"


def compile_denylist(patterns: list[str]) -> IgnoreRules:
    """One server's list compiled; ValueError naming what is wrong (for a template's validation)."""
    if len(patterns) > MAX_PATTERNS:
        raise ValueError(f"at most {MAX_PATTERNS} patterns")
    if any(len(p) > MAX_PATTERN_CHARS for p in patterns):
        raise ValueError(f"a pattern is longer than {MAX_PATTERN_CHARS} characters")
    try:
        return IgnoreRules(patterns)
    except ValidationFailed as exc:
        raise ValueError(exc.message.removeprefix("ignore: ")) from None


class Denylist:
    """One volume's denylist; `update` swaps it whole, so a session holding this object sees the change at
    its next call (a worker thread reads one consistent tuple)."""

    def __init__(self) -> None:
        self._rules: tuple[IgnoreRules, ...] = ()
        self.patterns: tuple[tuple[str, ...], ...] = ()

    def update(self, lists: Iterable[Iterable[str]]) -> None:
        """The union of these lists (one per server); identical lists are compiled once."""
        unique = tuple(sorted({tuple(p) for p in lists if p}))
        if unique != self.patterns:
            self._rules = tuple(rules for rules in (compile_denylist(list(p)) for p in unique) if rules)
            self.patterns = unique

    def __bool__(self) -> bool:
        return bool(self._rules)

    def denies(self, parts: tuple[str, ...]) -> bool:
        """Whether the entry at `parts` itself is denied (its folders not looked at: a walk checked them)."""
        return bool(parts) and any(rules.ignored(parts, True) for rules in self._rules)

    def denies_path(self, parts: tuple[str, ...]) -> bool:
        """Whether the entry at `parts` or any folder on the way to it is denied."""
        rules = self._rules
        return bool(rules) and any(
            any(r.ignored(parts[:depth], True) for r in rules) for depth in range(1, len(parts) + 1))

    def check(self, parts: tuple[str, ...], *, folders: bool = True) -> None:
        """FileDenied (403 `file_denied`) for a denied path (`folders=False`: the entry alone)."""
        if (self.denies_path if folders else self.denies)(parts):
            raise FileDenied(f"{'/'.join(parts)}: {DENIED}", details={"path": "/".join(parts)})
