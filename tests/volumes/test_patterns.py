"""gitignore-style path patterns (lightd/volumes/patterns.py): rules as git reads them, in linear time."""

from __future__ import annotations

import time

import pytest

from lightd.volumes.patterns import IgnoreRules


@pytest.mark.parametrize(("patterns", "path", "is_dir", "ignored"), [
    (["*.log"], ("a", "b.log"), False, True),
    (["*.log", "!keep.log"], ("keep.log",), False, False),
    (["build/"], ("build",), False, False),
    (["build/"], ("x", "build"), True, True),
    (["/top.txt"], ("sub", "top.txt"), False, False),
    (["a/**/z"], ("a", "b", "c", "z"), False, True),
    (["**/tmp"], ("tmp",), True, True),
    (["\\#hash"], ("#hash",), False, True),
    (["# comment", ""], ("# comment",), False, False),
    (["f[0-9].txt"], ("f7.txt",), False, True),
    (["f[!0-9].txt"], ("f7.txt",), False, False),
    (["(a+)+$"], ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!",), False, False),
])
def test_ignore_rules(patterns, path, is_dir, ignored):
    assert IgnoreRules(patterns).ignored(path, is_dir) is ignored


def test_ignore_rules_are_linear_time():
    rules = IgnoreRules(["*a*a*a*a*a*a*a*a*a*a*b"] * 200)
    began = time.monotonic()
    assert not rules.ignored(("a" * 4000,), False)
    assert time.monotonic() - began < 0.5
