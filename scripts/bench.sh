#!/usr/bin/env bash
# tidelet's start-up and memory figures beside Podman's, in one run on one machine (as root):
# the same busybox image and the same Pod YAML. Results go to stdout; docs/benchmarks.md
# records them. Podman's side is the project's baseline scripts (shared/peer: podman kube play
# with runc and crun, runc/crun run -d, idle RSS/PSS); set PEER_DIR to their folder, or
# SKIP_PEER=1 to measure tidelet alone.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "scripts/bench.sh: run as root" >&2; exit 1; fi
PEER_DIR=${PEER_DIR:-../shared/peer}
RUNS=${RUNS:-7}

cargo build --release --locked -p tidelet
cargo bench --locked --no-run -p tidelet-e2e --bench startup 2>/dev/null
echo "machine: $(nproc) cores, $(free -m | awk '/Mem:/{print $2}') MiB, kernel $(uname -r); loadavg $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "${SKIP_PEER:-0}" != 1 ] && [ -f "$PEER_DIR/bench.sh" ]; then
  mkdir -p /tmp/peer
  cp "$PEER_DIR"/*.sh /tmp/peer/
  [ -f /tmp/peer/env.sh ] || bash /tmp/peer/setup.sh
  echo "=== Podman (podman kube play; shared/peer/bench.sh)"
  bash /tmp/peer/bench.sh
  bash /tmp/peer/cleanup.sh
fi

echo "=== tidelet (release build; tests/bench/startup.rs)"
TIDELET_BIN=$PWD/target/release/tidelet RUNS=$RUNS cargo bench --locked -p tidelet-e2e --bench startup
echo "stripped size: $(strip -o /tmp/tidelet.stripped target/release/tidelet && stat -c %s /tmp/tidelet.stripped) bytes"
