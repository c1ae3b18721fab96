"""Fixtures of the sandbox and archive tests: a volume with links planted to a directory outside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightd.volumes.sandbox import Sandbox
from tests.volumes.helpers import make_outside, plant_links, snapshot


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    return make_outside(tmp_path / "outside")


@pytest.fixture
def vol(tmp_path: Path, outside: Path) -> Path:
    root = tmp_path / "volume"
    root.mkdir()
    (root / "a.txt").write_text("hello")
    (root / "dir").mkdir()
    (root / "dir" / "inner.txt").write_text("inner")
    plant_links(root, outside)
    return root


@pytest.fixture
def box(vol: Path):
    with Sandbox(vol) as sandbox:
        yield sandbox


@pytest.fixture
def untouched(outside: Path):
    """Fails the test if anything outside the volume changed."""
    before = snapshot(outside)
    yield
    assert snapshot(outside) == before
