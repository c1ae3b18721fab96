"""Finding files by name below a folder of a volume: a glob (`*.yml`, `level?.dat`, `[ab]*`) or, without
glob characters, a substring, both case-insensitive.

The pattern and the names are a tenant's: matching is a two-pointer wildcard match, at most
len(pattern) x len(name) steps (names are at most 255 bytes, patterns MAX_PATTERN characters), never a
regex that can backtrack. The walk goes at most MAX_DEPTH folders down, never into dependency and VCS
folders (`SKIPPED_DIRS`, as Pelican's search does), never through a link, and stops after
`volumes.search_max_entries` entries or `volumes.search_max_results` matches (then `truncated`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightd.errors import Conflict, ValidationFailed
from lightd.volumes.entries import entry_view
from lightd.volumes.sandbox import Sandbox, display, split_path
from lightd.volumes.walk import ENTER, LEAF, TreeWalk

if TYPE_CHECKING:
    from lightd.volumes.service import VolumeService

MAX_DEPTH = 8
"""Folder levels a search descends below its directory."""
MAX_PATTERN = 128
SKIPPED_DIRS = frozenset({".git", ".svn", ".hg", "node_modules", "bower_components", "vendor", "__pycache__",
                          ".cache", ".npm", ".wine", "appcache", "depotcache"})
"""Folders a search never enters: dependency trees and version-control stores, huge and never what a
server owner is looking for."""
GLOB_CHARS = frozenset("*?[")

Token = tuple[str, ...]  # ("*",), ("?",), ("=", char), ("[", negate, ranges as "a-z" pairs: "aazz09")


def compile_glob(pattern: str) -> list[Token]:
    """A glob as tokens: `*`, `?`, a literal, or a `[...]` class (`!` or `^` negates; `a-z` ranges)."""
    tokens: list[Token] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            if not tokens or tokens[-1] != ("*",):  # "**" is "*": fewer steps, same answer
                tokens.append(("*",))
        elif char == "?":
            tokens.append(("?",))
        elif char == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1:end]
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            ranges, j = [], 0
            while j < len(body):
                if j + 2 < len(body) and body[j + 1] == "-":
                    ranges.append(body[j] + body[j + 2])
                    j += 3
                else:
                    ranges.append(body[j] * 2)
                    j += 1
            tokens.append(("[", "!" if negate else "", "".join(ranges)))
            i = end
        else:
            tokens.append(("=", char))
        i += 1
    return tokens


def _one(token: Token, char: str) -> bool:
    kind = token[0]
    if kind == "?":
        return True
    if kind == "=":
        return token[1] == char
    ranges = token[2]
    inside = any(ranges[k] <= char <= ranges[k + 1] for k in range(0, len(ranges), 2))
    return inside != bool(token[1])


def glob_matches(tokens: list[Token], name: str) -> bool:
    """Whether `name` matches the whole glob: greedy two-pointer matching with one backtrack point (the last
    `*`), so O(len(tokens) x len(name)) at worst, with no recursion."""
    t = n = 0
    star_t, star_n = -1, 0
    while n < len(name):
        if t < len(tokens) and tokens[t] != ("*",) and _one(tokens[t], name[n]):
            t += 1
            n += 1
        elif t < len(tokens) and tokens[t] == ("*",):
            star_t, star_n = t, n
            t += 1
        elif star_t >= 0:
            star_n += 1  # let the last "*" take one more character, and retry after it
            t, n = star_t + 1, star_n
        else:
            return False
    return all(token == ("*",) for token in tokens[t:])


class NameMatcher:
    """A case-insensitive name test: the whole name against a glob, or a substring of it."""

    def __init__(self, pattern: str) -> None:
        if not pattern or len(pattern) > MAX_PATTERN or "/" in pattern or "\x00" in pattern:
            raise ValidationFailed(f"pattern: 1 to {MAX_PATTERN} characters, without '/' or NUL",
                                   details={"field": "pattern"})
        self.pattern = pattern
        self.folded = pattern.casefold()
        self.glob = compile_glob(self.folded) if GLOB_CHARS & set(pattern) else None

    def __call__(self, name: str) -> bool:
        folded = name.casefold()
        return glob_matches(self.glob, folded) if self.glob is not None else self.folded in folded


def _search(box: Sandbox, directory: str, matcher: NameMatcher, max_results: int,
            max_entries: int) -> dict[str, Any]:
    base = split_path(directory)
    results: list[dict[str, Any]] = []
    seen = 0
    truncated = False
    with box.directory(base) as top:
        walk = TreeWalk(top, max_depth=MAX_DEPTH, too_deep="skip", where=display(base))
        # never into (or listing) a denied folder: what is below it is denied
        walk.prune = box.prune_denied(walk, base, also=lambda name: name in SKIPPED_DIRS)
        try:
            for event, node in walk:
                if event not in (ENTER, LEAF):
                    continue
                seen += 1
                if seen > max_entries or len(results) >= max_results:
                    truncated = True
                    break
                if matcher(node.name):
                    results.append({**entry_view(node.name, node.st), "path": display(base + node.parts)})
        except Conflict:
            truncated = True  # the tree moved under the walk: what was found so far
    return {"directory": "/".join(base), "pattern": matcher.pattern, "results": results, "truncated": truncated}


async def search(volumes: VolumeService, volume_id: str, directory: str, pattern: str) -> dict[str, Any]:
    """Entries below `directory` whose name matches `pattern` (glob or substring), at most MAX_DEPTH folders
    down, skipping SKIPPED_DIRS; each a listing entry with its `path`, and `truncated` past the caps."""
    matcher = NameMatcher(pattern)
    limits = volumes.limits
    return await volumes.in_sandbox(volume_id, _search, directory, matcher, limits.search_max_results,
                                    limits.search_max_entries)
