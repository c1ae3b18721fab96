"""The `lightd` command: parse arguments and call into the package; nothing else lives here."""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

from lightd.config import (
    ConfigError,
    generate_token,
    is_valid_token_format,
    load_config,
    load_or_create_config,
    resolve_config_path,
    write_config,
)


CONFIG_HELP = "path of config.json (default: $LIGHTD_CONFIG or ./config.json)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightd", description="lightd game-server daemon")
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument(
        "--token", nargs="+", metavar="ACTION",
        help="'what' prints the node token; 'reset' makes a new one; 'set <token>' sets it ('set' alone reads "
             "the token from one line of standard input)",
    )
    # Every subcommand takes --config too (`lightd serve --config PATH`); SUPPRESS keeps a --config given
    # before the subcommand when none follows it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", parents=[common], help="run the daemon (the default)")
    token = sub.add_parser("token", parents=[common], help="node token")
    token.add_argument("action", choices=["show", "rotate"])
    config = sub.add_parser("config", parents=[common], help="config.json")
    config.add_argument("action", choices=["check", "init"])
    return parser


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _read_token_line() -> str:
    """One line of standard input, stripped (a prompt on stderr when it is a terminal)."""
    if sys.stdin.isatty():
        _say("lightd: new node token (one line):")
    return sys.stdin.readline(4096).strip()


def _token_command(path: Path, action: list[str]) -> int:
    config, created = load_or_create_config(path)
    if created:
        _say(f"lightd: wrote a new config with a fresh token to {path.resolve()}")
    verb = action[0]
    if verb == "what" and len(action) == 1:
        print(config.token)
        return 0
    if verb in ("reset", "rotate") and len(action) == 1:
        config.token = generate_token()
    elif verb == "set" and len(action) <= 2:
        # `--token set` alone reads the token from stdin: it then stays out of the shell history and `ps`.
        value = action[1] if len(action) == 2 else _read_token_line()
        if not is_valid_token_format(value):
            _say("lightd: a token must start with 'lightd_' and be at least 20 characters")
            return 2
        config.token = value
    else:
        _say("lightd: --token takes 'what', 'reset' or 'set <token>'")
        return 2
    write_config(path, config)
    print(config.token)
    _say(f"lightd: token changed in {path.resolve()}; restart the daemon (or reload) for it to take effect")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = resolve_config_path(args.config)
    try:
        if args.token:
            return _token_command(path, args.token)
        if args.command == "token":
            return _token_command(path, ["what" if args.action == "show" else "reset"])
        if args.command == "config":
            if args.action == "init":
                _, created = load_or_create_config(path)
                _say(f"lightd: {'wrote' if created else 'kept the existing'} {path.resolve()}")
                return 0
            config = load_config(path)
            print(f"{path}: ok (api {config.api.host}:{config.api.port}, data_dir {config.data_dir})")
            return 0
        config, created = load_or_create_config(path)
    except ConfigError as exc:
        _say(f"lightd: {exc}")
        return 2
    if created:
        _say(f"lightd: no config found; wrote {path.resolve()} (mode 0600) with a fresh token")
    # The collector is off while the daemon's modules load and its app is built: they are nearly all kept for
    # good, so each collection would only scan them again (20 ms of start-up). run() turns it back on.
    gc.disable()
    from lightd.log_context import configure_logging
    from lightd.server_main import run

    configure_logging(config.log_level, config.log_format)
    return run(config, path)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
