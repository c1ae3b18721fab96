#!/usr/bin/env bash
# What the SFTP tests and bench/sftp.py need beside Python: OpenSSH's client (`sftp`, `ssh-keygen`), its
# server (`sshd` and `sftp-server`, the benchmark's baseline) and `sshpass` (the client's password prompt in
# batch mode). Installed from the distribution only when missing; safe to run any number of times.
set -euo pipefail

need=()
command -v sftp >/dev/null 2>&1 || need+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
[ -x /usr/lib/openssh/sftp-server ] || need+=(openssh-sftp-server)
command -v sshpass >/dev/null 2>&1 || need+=(sshpass)
if [ "${#need[@]}" -gt 0 ]; then
  printf 'setup-sftp: installing %s\n' "${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d: the package must not start (or enable) a system sshd on port 22 — the tests run their own.
  had_policy=0
  [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  [ "$had_policy" -eq 1 ] || printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq
  # shellcheck disable=SC2046 # one word per package name
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
  [ "$had_policy" -eq 1 ] || rm -f /usr/sbin/policy-rc.d
fi
