#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install lightd into it; with the argument `test`, also its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv 2>/dev/null || {
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && "$PYTHON" -m venv .venv
  }
fi
extras=""
[ "${1:-}" = "test" ] && extras="[test]"
stamp=".venv/.lightd-installed${extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".${extras}"
  touch "$stamp"
fi
