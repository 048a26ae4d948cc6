#!/usr/bin/env bash
# tidelet's device figures (issue 6), as root, with release builds of tidelet and of both
# device plugins: (1) what Allocate plus the device set-up add to a pod's start (PODS pods
# with a device of the real generic plugin and PODS without, alternating; the agent's own
# admission and set-up timings from its log), (2) the same for Podman (`podman run --device`
# against the same without), (3) each plugin's idle RSS/PSS and CPU over IDLE_SECS, with and
# without paging out its start-up code (TIDELET_PLUGIN_NO_TRIM=1), beside a Rust `sleep`.
# Results go to stdout; docs/benchmarks.md records them. The measuring is in
# tests/bench/devices.rs. About 3 minutes after the builds; run by hand, not in CI.
#
# Podman's side uses the project's baseline set-up (shared/peer: its storage, config and
# localhost/busybox:1.35 under /tmp/peer); set PEER_DIR to that folder, or SKIP_PEER=1 to
# measure tidelet alone. There is no peer for the plugins' memory: NVIDIA's and the other
# plugins cannot run here (no GPU, no cluster), so a Rust `sleep` gives the scale.
# Smoke run (each part once, debug build; CI runs it): cargo test -p tidelet-e2e --bench devices
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "scripts/bench-devices.sh: run as root" >&2; exit 1; fi
PEER_DIR=${PEER_DIR:-../shared/peer}
export PODS=${PODS:-20} IDLE_SECS=${IDLE_SECS:-60} SETTLE_SECS=${SETTLE_SECS:-10}

cargo build --release --locked -p tidelet -p tidelet-generic-plugin -p tidelet-gpu-plugin
# The plugins as scripts/cross-build.sh ships them: linked statically (only the final link
# changes). STATIC_PLUGINS=0 measures the dynamically linked build instead.
if [ "${STATIC_PLUGINS:-1}" = 1 ]; then
  for p in tidelet-generic-plugin tidelet-gpu-plugin; do
    cargo rustc --release --locked -p "$p" --bin "$p" -- -C target-feature=+crt-static
  done
fi
echo "plugins: $(file -b "${CARGO_TARGET_DIR:-target}/release/tidelet-generic-plugin" | cut -d, -f1-2)"
# The measuring program itself need not be size-optimised with fat LTO (the binaries it
# measures are): build it quicker.
export CARGO_PROFILE_BENCH_LTO=off CARGO_PROFILE_BENCH_CODEGEN_UNITS=16
cargo bench --locked --no-run -p tidelet-e2e --bench devices 2>/dev/null
TARGET=${CARGO_TARGET_DIR:-$PWD/target}

# The reference for the plugins' memory: the smallest Rust program that idles, built like the
# plugins (release, size-optimised, stripped).
REF=$(mktemp -d /tmp/tidelet-bench-ref.XXXXXX)
trap 'rm -rf "$REF"' EXIT
cat >"$REF/sleep.rs" <<'EOF'
fn main() {
    let secs = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3600);
    std::thread::sleep(std::time::Duration::from_secs(secs));
}
EOF
rustc --edition 2021 -C opt-level=s -C strip=symbols -o "$REF/rust-sleep" "$REF/sleep.rs"
export REF_SLEEP_BIN=$REF/rust-sleep

echo "machine: $(nproc) cores, $(free -m | awk '/Mem:/{print $2}') MiB, kernel $(uname -r); loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
echo "cgroups: $( [ -f /sys/fs/cgroup/cgroup.controllers ] && echo v2 || echo 'v1 (hybrid)')"
echo "binaries (stripped release): tidelet $(stat -c %s "$TARGET/release/tidelet") B, tidelet-generic-plugin $(stat -c %s "$TARGET/release/tidelet-generic-plugin") B, tidelet-gpu-plugin $(stat -c %s "$TARGET/release/tidelet-gpu-plugin") B, rust sleep $(stat -c %s "$REF_SLEEP_BIN") B"

export PODMAN_PEER=0
if [ "${SKIP_PEER:-0}" != 1 ] && [ -f "$PEER_DIR/setup.sh" ]; then
  mkdir -p /tmp/peer
  cp "$PEER_DIR"/*.sh /tmp/peer/
  [ -f /tmp/peer/env.sh ] || bash /tmp/peer/setup.sh
  # shellcheck source=/dev/null
  . /tmp/peer/env.sh
  if podman image exists localhost/busybox:1.35; then
    export PODMAN_PEER=1
  else
    echo "Podman: localhost/busybox:1.35 is missing from /tmp/peer (run $PEER_DIR/setup.sh); not measured"
  fi
fi

echo "=== tidelet (release builds; tests/bench/devices.rs)"
TIDELET_BIN=$TARGET/release/tidelet \
  GENERIC_PLUGIN_BIN=$TARGET/release/tidelet-generic-plugin \
  GPU_PLUGIN_BIN=$TARGET/release/tidelet-gpu-plugin \
  cargo bench --locked -p tidelet-e2e --bench devices
if [ "$PODMAN_PEER" = 1 ]; then bash /tmp/peer/cleanup.sh; fi
echo "loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)"
