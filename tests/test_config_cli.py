"""config.json and the lightd command line."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from lightd.cli import main
from lightd.config import ConfigError, load_config
from tests.conftest import VENDOR


ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd=None, env=None, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "lightd", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=60, input=stdin if stdin is not None else "")


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


def test_a_hand_written_config_without_a_token_gets_one_written_into_it(tmp_path):
    """Before: every load made a token of its own, so the daemon ran with one nobody knew and `--token what`
    printed another each time."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"data_dir": str(tmp_path / "data"), "api": {"port": 8123}}))
    path.chmod(0o644)
    result = run_cli("--config", str(path), "--token", "what")
    token = result.stdout.strip()
    assert result.returncode == 0 and token.startswith("lightd_") and "had no token" in result.stderr
    written = json.loads(path.read_text())
    assert written == {"data_dir": str(tmp_path / "data"), "api": {"port": 8123}, "token": token}  # the rest kept
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = run_cli("--config", str(path), "--token", "what")
    assert again.stdout.strip() == token and "had no token" not in again.stderr
    assert load_config(path).token == token


def test_a_config_without_a_token_that_cannot_be_written_is_refused(tmp_path, monkeypatch):
    import errno

    from lightd import config as config_module

    def read_only(path: Path, raw: dict) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"data_dir": str(tmp_path / "data")}))
    monkeypatch.setattr(config_module, "_write_raw", read_only)
    with pytest.raises(ConfigError, match="no token, and a fresh one cannot be written"):
        config_module.load_or_create_config(path)
    assert json.loads(path.read_text()) == {"data_dir": str(tmp_path / "data")}
    assert main(["--config", str(path), "--token", "what"]) == 2


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


def test_token_set_without_a_value_reads_one_line_from_stdin(tmp_path):
    path = str(tmp_path / "c.json")
    result = run_cli("--config", path, "--token", "set", stdin="lightd_from_standard_input_1\nnot this line\n")
    assert result.returncode == 0, result.stderr
    assert load_config(tmp_path / "c.json").token == "lightd_from_standard_input_1"
    assert "from_standard_input" not in result.stderr  # nothing echoed but the usual stdout line
    # a bad or missing line is refused and changes nothing
    for line in ("short\n", "", "\n"):
        bad = run_cli("--config", path, "--token", "set", stdin=line)
        assert bad.returncode == 2 and "lightd_" in bad.stderr, bad.stderr
    assert load_config(tmp_path / "c.json").token == "lightd_from_standard_input_1"
    assert run_cli("--config", path, "--token", "set", "a", "b").returncode == 2


def test_subcommands_take_config_after_them(tmp_path):
    path = tmp_path / "c.json"
    assert run_cli("config", "init", "--config", str(path), cwd=tmp_path).returncode == 0
    token = load_config(path).token
    assert run_cli("token", "show", "--config", str(path), cwd=tmp_path).stdout.strip() == token
    assert run_cli("config", "check", "--config", str(path), cwd=tmp_path).returncode == 0
    # after the subcommand wins over before it
    assert run_cli("--config", str(tmp_path / "other.json"), "token", "show", "--config", str(path),
                   cwd=tmp_path).stdout.strip() == token
    assert not (tmp_path / "config.json").exists() and not (tmp_path / "other.json").exists()


def test_serve_with_config_after_the_subcommand(tmp_path):
    """`lightd serve --config PATH` runs the daemon from PATH (not ./config.json) until SIGTERM."""
    from tests.panel import free_port

    port = free_port()
    token = "lightd_" + "s" * 30
    path = tmp_path / "elsewhere" / "lightd.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"token": token, "data_dir": str(tmp_path / "data"),
                                "api": {"host": "127.0.0.1", "port": port},
                                "docker": {"container_prefix": "lightdtest-cli-"}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "lightd", "serve", "--config", str(path)], cwd=tmp_path,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stdout.read().decode()[-3000:]
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/auth/tokens",
                                                 headers={"Authorization": f"Bearer {token}", "Accept": VENDOR})
                with urllib.request.urlopen(request, timeout=2) as resp:
                    assert resp.status == 200 and json.loads(resp.read())["count"] == 0
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "daemon did not answer"
                time.sleep(0.2)
        assert not (tmp_path / "config.json").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    assert process.returncode == 0
