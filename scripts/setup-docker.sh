#!/usr/bin/env bash
# Make a Docker engine available for lightd and its tests, idempotently.
#
#  1. install docker.io (+ busybox-static, bash-static, docker-registry) from the distribution if missing;
#  2. reuse a running engine, or start dockerd in the background (with --live-restore, so that an engine
#     restart does not stop the servers: lightd re-attaches them) and wait for its socket;
#  3. build the local test image `lightd-test/busybox:latest` with `docker import` from a busybox root
#     file system (busybox-static, bash-static as /bin/bash) — nothing is pulled from the internet;
#  4. start a local registry (Debian's docker-registry) on 127.0.0.1:${LIGHTD_TEST_REGISTRY_PORT:-5055}
#     and push the test image to it, for image-pull tests.
#
# Safe to run any number of times. Needs root for steps 1 and 2 on a machine without an engine.
set -euo pipefail

IMAGE="lightd-test/busybox:latest"
REGISTRY_PORT="${LIGHTD_TEST_REGISTRY_PORT:-5055}"
REGISTRY="127.0.0.1:${REGISTRY_PORT}"
STATE_DIR="${LIGHTD_DOCKER_STATE_DIR:-/var/lib/lightd-docker-setup}"
SKIP_TEST_ASSETS="${LIGHTD_SKIP_TEST_ASSETS:-0}"

log() { printf 'setup-docker: %s\n' "$*" >&2; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v docker >/dev/null 2>&1 || need_pkgs+=(docker.io)
[ -x /bin/busybox ] || need_pkgs+=(busybox-static)
[ -x /bin/bash-static ] || [ -x /usr/bin/bash-static ] || need_pkgs+=(bash-static)
command -v docker-registry >/dev/null 2>&1 || need_pkgs+=(docker-registry)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

mkdir -p "$STATE_DIR"

if docker info >/dev/null 2>&1; then
  log "reusing the running Docker engine"
else
  # An engine that is shutting down still holds its pid file: let it finish first.
  for _ in $(seq 1 100); do pgrep -x dockerd >/dev/null 2>&1 || break; sleep 0.2; done
  log "starting dockerd (log: $STATE_DIR/dockerd.log)"
  # setsid: the engine outlives this script and the shell that ran it.
  setsid dockerd --live-restore >"$STATE_DIR/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up; see $STATE_DIR/dockerd.log"; tail -20 "$STATE_DIR/dockerd.log" >&2; exit 1; }
fi

[ "$SKIP_TEST_ASSETS" = "1" ] && exit 0

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "building $IMAGE from busybox-static and bash-static"
  rootfs="$(mktemp -d)"
  trap 'rm -rf "$rootfs"' EXIT
  mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,home/container,app/data,proc,sys,dev}
  chmod 1777 "$rootfs/tmp"
  cp /bin/busybox "$rootfs/bin/busybox"
  bash_static=/bin/bash-static; [ -x "$bash_static" ] || bash_static=/usr/bin/bash-static
  cp "$bash_static" "$rootfs/bin/bash"
  for applet in $("$rootfs/bin/busybox" --list); do
    [ "$applet" = "bash" ] && continue
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\ncontainer:x:988:988:container:/home/container:/bin/sh\n' > "$rootfs/etc/passwd"
  printf 'root:x:0:\ncontainer:x:988:\n' > "$rootfs/etc/group"
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/sh"]' \
    - "$IMAGE" >/dev/null
fi

registry_up() { wget -q -O - "http://$REGISTRY/v2/" >/dev/null 2>&1 || curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1; }
if ! registry_up; then
  log "starting docker-registry on $REGISTRY"
  mkdir -p "$STATE_DIR/registry"
  cat >"$STATE_DIR/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE_DIR/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY
EOF
  setsid docker-registry serve "$STATE_DIR/registry.yml" >"$STATE_DIR/registry.log" 2>&1 < /dev/null &
  for _ in $(seq 1 40); do registry_up && break; sleep 0.25; done
  registry_up || { log "registry did not come up; see $STATE_DIR/registry.log"; exit 1; }
fi
if ! curl -fsS "http://$REGISTRY/v2/lightd-test/busybox/manifests/latest" \
     -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' >/dev/null 2>&1; then
  log "pushing the test image to $REGISTRY"
  docker tag "$IMAGE" "$REGISTRY/lightd-test/busybox:latest"
  docker push "$REGISTRY/lightd-test/busybox:latest" >/dev/null
  docker rmi "$REGISTRY/lightd-test/busybox:latest" >/dev/null
fi
log "ready: engine up, image $IMAGE, registry $REGISTRY"
