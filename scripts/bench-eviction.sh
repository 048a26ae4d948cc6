#!/usr/bin/env bash
# tidelet's eviction figures (issue 4), on this host's cgroup v1, as root, with the release
# binary: latency from the pods' working set crossing the hard threshold to the victim's
# processes being gone (REPS repetitions, 20 by default), kernel OOM kills of the Guaranteed
# and Burstable pods over those repetitions, and the agent's idle CPU (IDLE_SECS, 60 by
# default). Results go to stdout; docs/benchmarks.md records them. The measuring is in
# tests/bench/eviction.rs. About 4 minutes; run by hand, not in CI.
#
# There is no peer run: the issue's peer is kubelet, which cannot run here (no cluster and no
# container runtime for it), and Podman has no eviction. kubelet's documented figure is its
# housekeeping period (10 s) between looks at memory.
# Smoke run (each part once, debug build; CI runs it): cargo test -p tidelet-e2e --bench eviction
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "scripts/bench-eviction.sh: run as root" >&2; exit 1; fi
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  echo "scripts/bench-eviction.sh: this host is on cgroup v2; the benchmark reads v1 files" >&2
  exit 1
fi
REPS=${REPS:-20}
IDLE_SECS=${IDLE_SECS:-60}

cargo build --release --locked -p tidelet
cargo bench --locked --no-run -p tidelet-e2e --bench eviction 2>/dev/null
echo "machine: $(nproc) cores, $(free -m | awk '/Mem:/{print $2}') MiB, kernel $(uname -r); loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
echo "PSI: $( [ -r /proc/pressure/memory ] && echo available || echo 'not available (kernel without PSI, or psi=0)')"
echo "peer: kubelet cannot run here (no cluster, no container runtime for it) and Podman has no eviction;"
echo "      kubelet evaluates eviction thresholds every housekeeping interval, 10 s by default"
echo "      (kernelMemcgNotification, off by default, can wake it earlier on cgroup v1)"
echo "=== tidelet (release build; tests/bench/eviction.rs)"
TIDELET_BIN=$PWD/target/release/tidelet REPS=$REPS IDLE_SECS=$IDLE_SECS \
  cargo bench --locked -p tidelet-e2e --bench eviction
echo "loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)"
