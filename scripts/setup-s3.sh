#!/usr/bin/env bash
# Make an S3-compatible server available for the backup tests, idempotently: moto's standalone server
# (`moto[server]`, installed into .venv by scripts/setup-python.sh's test extras) on
# 127.0.0.1:${LIGHTD_TEST_S3_PORT:-5056}, started in the background unless something already answers there.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${LIGHTD_TEST_S3_PORT:-5056}"
STATE_DIR="${LIGHTD_S3_STATE_DIR:-/var/lib/lightd-s3-setup}"
log() { printf 'setup-s3: %s\n' "$*" >&2; }
up() { curl -fsS -o /dev/null "http://127.0.0.1:${PORT}/moto-api/" 2>/dev/null; }

if up; then
  log "reusing the S3 server on 127.0.0.1:${PORT}"
  exit 0
fi
[ -x .venv/bin/moto_server ] || bash scripts/setup-python.sh test
mkdir -p "$STATE_DIR"
log "starting moto_server on 127.0.0.1:${PORT} (log: $STATE_DIR/moto.log)"
# setsid: the server outlives this script; 5 MiB is S3's own smallest multipart part (tests use it).
S3_UPLOAD_PART_MIN_SIZE=5242880 setsid .venv/bin/moto_server -H 127.0.0.1 -p "$PORT" \
  >"$STATE_DIR/moto.log" 2>&1 < /dev/null &
for _ in $(seq 1 100); do up && break; sleep 0.2; done
up || { log "moto_server did not come up; see $STATE_DIR/moto.log"; tail -20 "$STATE_DIR/moto.log" >&2; exit 1; }
log "ready: S3 on http://127.0.0.1:${PORT}"
