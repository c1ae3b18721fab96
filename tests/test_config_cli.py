"""config.json and the lightd command line."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lightd.cli import main
from lightd.config import ConfigError, load_config


ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "lightd", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=60)


def test_first_start_writes_config_with_fresh_token(tmp_path):
    path = tmp_path / "config.json"
    result = run_cli("--config", str(path), "--token", "what")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith("lightd_") and len(token) >= 39
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path.resolve()) in result.stderr
    assert json.loads(path.read_text())["token"] == token
    # a second read gives the same token
    assert run_cli("--config", str(path), "--token", "what").stdout.strip() == token
    # LIGHTD_CONFIG is the fallback
    assert run_cli("--token", "what", env={"LIGHTD_CONFIG": str(path)}, cwd=tmp_path).stdout.strip() == token


def test_token_rotate_reset_and_set(tmp_path):
    path = str(tmp_path / "c.json")
    first = run_cli("--config", path, "--token", "what").stdout.strip()
    rotated = run_cli("--config", path, "token", "rotate").stdout.strip()
    assert rotated != first and load_config(tmp_path / "c.json").token == rotated
    reset = run_cli("--config", path, "--token", "reset").stdout.strip()
    assert reset not in (first, rotated)
    assert run_cli("--config", path, "--token", "set", "lightd_my_own_token_value").returncode == 0
    assert load_config(tmp_path / "c.json").token == "lightd_my_own_token_value"
    bad = run_cli("--config", path, "--token", "set", "short")
    assert bad.returncode == 2 and "lightd_" in bad.stderr


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"api": {"port": 70000}}, "api.port"),
        ({"token": "nope"}, "token"),
        ({"api": {"hots": "x"}}, "api.hots"),
        ({"remote": {"enabled": "sometimes"}}, "remote.enabled"),
        ({"compat": {"lxd_panel": {"port": 0}}}, "compat.lxd_panel.port"),
    ],
)
def test_bad_config_names_the_key(tmp_path, raw, key):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"token": "lightd_" + "a" * 30, **raw}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert key in str(info.value) and "\n" not in str(info.value)
    result = run_cli("--config", str(path), "config", "check")
    assert result.returncode == 2 and key in result.stderr


def test_config_check_ok_and_malformed_json(tmp_path, capsys):
    path = tmp_path / "config.json"
    assert main(["--config", str(path), "config", "init"]) == 0
    assert main(["--config", str(path), "config", "check"]) == 0
    path.write_text("{not json")
    assert main(["--config", str(path), "config", "check"]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_config_example_is_valid():
    example = ROOT / "config.json.example"
    load_config(example)
