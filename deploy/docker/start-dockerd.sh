#!/usr/bin/env bash
# Start a Docker daemon for the container test and `make image`, if none answers; as root.
# Used by .ci/run (CI runs as root on a fresh machine) and by hand on a development machine.
#
# The daemon is configured for what this machine allows and what zeroserve needs, nothing more:
# - Debian's docker.io (dockerd 20.10): images are built with its classic builder.
# - Networking: every container and every build step uses the host's network (`--network host`:
#   zeroserve's nodes talk over 127.0.0.x, builds reach the package archives as the host does),
#   so the daemon makes no bridge and touches no iptables/NAT rules or ip_forward of the machine
#   (--bridge=none --iptables=false --ip-forward=false --ip-masq=false): nothing to fail where
#   netfilter is missing, nothing to clean up after.
# - Storage: overlay2 when the kernel can mount an overlay on the data root's filesystem (checked
#   by mounting one), else vfs (slower, bigger, works everywhere).
# - cgroups: the cgroupfs driver (no systemd as PID 1 here), on whatever hierarchy is mounted
#   (v1 controllers plus the unified v2 one on these machines).
set -euo pipefail
DATA_ROOT=${ZEROSERVE_DOCKER_ROOT:-/var/lib/docker}
LOG=${ZEROSERVE_DOCKERD_LOG:-/var/log/zeroserve-dockerd.log}

if docker info >/dev/null 2>&1; then
  echo "start-dockerd: a Docker daemon already answers"
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
if [ "$(id -u)" != 0 ]; then
  echo "start-dockerd: dockerd must be started as root" >&2
  exit 1
fi

mkdir -p "$DATA_ROOT"
driver=vfs
probe=$(mktemp -d "$DATA_ROOT/.overlay-probe.XXXXXX")
mkdir -p "$probe"/{lower,upper,work,merged}
if mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" \
     "$probe/merged" 2>/dev/null; then
  umount "$probe/merged"
  driver=overlay2
fi
rm -rf "$probe"

echo "start-dockerd: starting dockerd (storage driver $driver, host networking only; log $LOG)"
nohup dockerd --data-root "$DATA_ROOT" --storage-driver "$driver" \
  --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
  --exec-opt native.cgroupdriver=cgroupfs >"$LOG" 2>&1 &
echo $! >/run/zeroserve-dockerd.pid
for _ in $(seq 1 120); do
  if docker info >/dev/null 2>&1; then
    echo "start-dockerd: up ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
    exit 0
  fi
  sleep 0.5
done
echo "start-dockerd: dockerd did not answer within 60s; the end of its log:" >&2
tail -n 30 "$LOG" >&2
exit 1
