#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (as root) and runs every check and test tidelet has:
# formatting, clippy, unit tests, and the privileged end-to-end tests (which must run, never
# skip: TIDELET_REQUIRE_PRIVILEGED=1). This is exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: run as root (the end-to-end tests create namespaces, cgroups and mounts)" >&2
  exit 1
fi
. scripts/lib.sh

# busybox-static builds the test images; skopeo writes real OCI and docker archives for the
# image-import tests; the VM tests (tests/vm, tests/vm_systemd) boot Debian's kernels under
# QEMU (TCG, x86_64 and aarch64), with initramfs trees packed by cpio, kernel modules indexed
# by depmod (kmod), an arm64 Debian root made by mmdebstrap into an ext4 image (e2fsprogs),
# and nc for the guest's forward to the host's loopback. (scripts/cross-build.sh and
# scripts/lint-yocto.sh install their own tools.) protoc checks that the checked-in gRPC code of
# device-plugins/api is what its .proto generates; pgrep (procps) ends the background jobs of a
# failed run; ss (iproute2) counts the MQTT bench's bytes on the wire in its smoke run, and tc
# shows the bandwidth plugin's qdiscs. Debian's CNI plugins (containernetworking-plugins) and
# iptables give the e2e tests' pods their networks. Debian's
# Go and grpc-go 1.33 (golang-*, protoc-gen-go-1-3) build the grpc-go device plugin of
# tests/e2e/devices_go.rs offline, and sigs.k8s.io/yaml with go-yaml v2 the yaml2json that
# tests/e2e/kubelet_yaml.rs holds tidelet's YAML reading against (kubelet's own).
# The machine image may carry qemu-utils from bookworm-backports (10.x) with that archive not
# in its sources; bookworm's qemu-system-* (7.2) will not install beside it, so bookworm's
# qemu-utils comes first (seen on a fresh machine of this kind in issue 14's session).
if dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q '~bpo' &&
  ! dpkg-query -W -f='${Status}' qemu-system-x86 2>/dev/null | grep -q "install ok installed"; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --allow-downgrades qemu-utils/bookworm >/dev/null
fi
apt_need busybox-static python3 skopeo qemu-system-x86 qemu-system-arm cpio kmod \
  netcat-openbsd e2fsprogs mmdebstrap mosquitto mosquitto-clients openssl \
  protobuf-compiler procps iproute2 containernetworking-plugins iptables \
  golang-go golang-google-grpc-dev golang-github-golang-protobuf-1-3-dev protoc-gen-go-1-3 \
  golang-k8s-sigs-yaml-dev golang-gopkg-yaml.v2-dev
ensure_toolchain
modprobe overlay 2>/dev/null || true

export TIDELET_REQUIRE_PRIVILEGED=1
export TIDELET_REQUIRE_SKOPEO=1
export CARGO_TERM_COLOR=never
# The host's debug builds keep line tables only (file:line in backtraces; panics name their
# location anyway): full debug info costs tens of seconds of CI in compiling and linking.
export CARGO_PROFILE_DEV_DEBUG=line-tables-only

# The ARM binaries (aarch64, armv7) with Debian's toolchain, checked with file/readelf, and
# the unit tests of the cross-built crates under qemu-user; the aarch64 binary then runs in
# the QEMU guests of tests/vm and tests/vm_systemd.
echo "== cross builds, in the background (at ${SECONDS} s)"
scripts/cross-build.sh --setup-only
# Three jobs, at lower priorities than the tests, which run meanwhile (the host's tests mostly
# wait on pods, agents and brokers; the VM suites' systemd guests keep one core busy):
# - aarch64's release binaries, held to the size budget: the VM suites wait for them. Its
#   plugins are linked dynamically, in the agent's invocation (their static link, what boards
#   get from scripts/cross-build.sh, would compile their dependencies a second time).
# - aarch64's unit tests under qemu-user (their own target dir and profile).
# - armv7 built quick (CROSS_QUICK: no optimisation or LTO), checked with file/readelf and
#   started under qemu-user; its unit tests are not run.
# All that keeps CI within 30 minutes: armv7's release build and separate test build cost
# many minutes of both cores. `scripts/cross-build.sh armv7` does both (they passed through
# issue 5). They start before the lints: aarch64's release build (fat LTO, its last minutes
# on one core) is CI's long pole, and at its low priority it takes only what the lints and
# the host's builds leave idle (their single-crate stretches leave one core idle for minutes).
logs=$(mktemp -d)
# A failing step ends the run: the background jobs (and all they started) end with it.
kill_tree() {
  local p
  for p in $(pgrep -P "$1"); do kill_tree "$p"; done
  kill "$1" 2>/dev/null || true
}
trap 'for j in $(jobs -p); do kill_tree "$j"; done' EXIT
CROSS_STATIC_PLUGINS=0 nice -n 10 scripts/cross-build.sh --no-tests aarch64 >"$logs/aarch64" 2>&1 &
cross_aarch64=$!
nice -n 15 scripts/cross-build.sh --tests-only aarch64 >"$logs/aarch64-tests" 2>&1 &
cross_tests=$!
CROSS_QUICK=armv7 nice -n 15 scripts/cross-build.sh --no-tests armv7 >"$logs/armv7" 2>&1 &
cross_armv7=$!
# Waits for one of them and prints its log; a failure ends the run.
cross_wait() {
  local rc=0
  wait "$1" || rc=$?
  echo "======== cross: $2 (its log)"
  cat "$logs/$2"
  [ "$rc" = 0 ] || { echo "scripts/test.sh: cross job $2 failed (above)" >&2; exit 1; }
}
# Meanwhile too, the systemd VM tests' Debian parts (kernel, busybox, the two mmdebstrap
# bases: about 40 s each, mostly downloads) are fetched into their caches. One after the
# other, and after the toolchain set-up, so no two apt runs meet.
prefetch_log=target/vm/prefetch.log
mkdir -p target/vm
(
  tests/vm_systemd/build-rootfs.sh --prefetch target/vm/aarch64-systemd-stable &&
    TIDELET_VMSD_SYSTEMD=backports tests/vm_systemd/build-rootfs.sh --prefetch \
      target/vm/aarch64-systemd-backports
) >"$prefetch_log" 2>&1 &
prefetch=$!

# cargo-deny (licenses, bans and sources of the dependency graph, deny.toml) and
# cargo-machete (dependencies no source uses) come from crates.io, built in the background at
# the lowest priority and checked at the end; kept in target/ci-tools for the next run on the
# same checkout. Unoptimised (`--debug`): optimising them cost minutes of a core that the
# tests and the cross builds need, to speed up checks that take a second either way.
DENY_VERSION=0.20.2
MACHETE_VERSION=0.9.2
tools_root=$PWD/target/ci-tools/bin-debug-deny-$DENY_VERSION-machete-$MACHETE_VERSION
tools_log=$(mktemp)
if [ -x "$tools_root/bin/cargo-deny" ] && [ -x "$tools_root/bin/cargo-machete" ]; then
  tools=
else
  (
    for t in "cargo-deny@$DENY_VERSION" "cargo-machete@$MACHETE_VERSION"; do
      nice -n 19 cargo install --quiet --locked --debug "${t%@*}" --version "${t#*@}" \
        --root "$tools_root" --target-dir target/ci-tools/build || exit 1
    done
  ) >"$tools_log" 2>&1 &
  tools=$!
fi

# The lints need rustfmt and clippy (rustup components). Debian's cargo-web has neither:
# there they are skipped with a note, except in CI, which must run them.
# The Yocto layer's lint (mostly a pip install and systemd-analyze) runs beside the lints.
yocto_log=$(mktemp)
scripts/lint-yocto.sh >"$yocto_log" 2>&1 &
yocto=$!
if cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1; then
  echo "== cargo fmt --check"
  cargo fmt --all -- --check
  echo "== cargo clippy"
  cargo clippy --workspace --all-targets --locked -- -D warnings
elif [ "${CI:-}" = true ]; then
  echo "scripts/test.sh: CI needs rustfmt and clippy" >&2
  exit 1
else
  echo "== lints skipped: this toolchain has no rustfmt/clippy (rustup component add rustfmt clippy)"
fi
echo "== layering: no new upward import of crate::agent, no cycle between modules (scripts/check-layers.sh)"
scripts/check-layers.sh
echo "== code layout: unit tests of scripts/layout/linker"
layout_out=$(python3 scripts/layout/test_linker.py 2>&1) || { echo "$layout_out"; exit 1; }
tail -1 <<<"$layout_out"
# rust-toolchain.toml pins what CI builds with; the workspace's rust-version must be that
# version, so that the oldest Rust the crates claim is the one this run builds them with.
pin=$(sed -n 's/^channel *= *"\(.*\)"$/\1/p' rust-toolchain.toml)
msrv=$(sed -n 's/^rust-version *= *"\(.*\)"$/\1/p' Cargo.toml)
built=$(rustc --version | cut -d' ' -f2)
echo "== toolchain: rustc $built, pinned $pin, rust-version $msrv"
[ "${pin%.*}" = "$msrv" ] || { echo "scripts/test.sh: rust-version $msrv is not the pinned toolchain $pin (rust-toolchain.toml)" >&2; exit 1; }
if command -v rustup >/dev/null 2>&1; then
  [ "$built" = "$pin" ] || { echo "scripts/test.sh: built with rustc $built, rust-toolchain.toml pins $pin" >&2; exit 1; }
fi
echo "== Yocto layer: oelint-adv, crate list, recipe sources (at ${SECONDS} s)"
yocto_rc=0
wait "$yocto" || yocto_rc=$?
cat "$yocto_log"
rm -f "$yocto_log"
[ "$yocto_rc" = 0 ] || { echo "scripts/lint-yocto.sh failed" >&2; exit 1; }
echo "== cargo build, and every host test built (at ${SECONDS} s)"
cargo build --workspace --locked
cargo test --workspace --locked --no-run
# Which test targets run before and which after the cross builds: the VM suites need the
# aarch64 binaries. A test target added to tests/Cargo.toml must be placed here too.
E2E_TARGETS=(e2e mqtt_session)
VM_TARGETS=(vm vm_systemd)
have=$(cargo metadata --locked --no-deps --format-version 1 | python3 -c '
import json, sys
m = json.load(sys.stdin)
p = next(p for p in m["packages"] if p["name"] == "tidelet-e2e")
print(" ".join(sorted(t["name"] for t in p["targets"] if "test" in t["kind"])))')
want=$(printf '%s\n' "${E2E_TARGETS[@]}" "${VM_TARGETS[@]}" | sort | tr '\n' ' ' | sed 's/ $//')
[ "$have" = "$want" ] || {
  echo "scripts/test.sh: tests/Cargo.toml's test targets are '$have', this script runs '$want'" >&2
  exit 1
}

# The Python venv (grpcio, grpcio-tools: pinned, from PyPI, cached under target/) of the grpcio
# device-plugin interop test (tests/e2e/devices_python.rs), made here so that a failed install
# shows as such; the test makes it itself when run alone.
echo "== Python venv of the grpcio interop test (at ${SECONDS} s)"
tests/plugins/python/venv.sh >/dev/null
# The Go device plugin of the grpc-go interop test (tests/e2e/devices_go.rs): Debian's grpc-go,
# built offline, cached under target/; the test builds it itself when run alone.
echo "== Go plugin of the grpc-go interop test (at ${SECONDS} s)"
tests/plugins/go/build.sh >/dev/null
echo "== Go yaml2json, kubelet's YAML reading (at ${SECONDS} s)"
tests/yaml/go/build.sh >/dev/null
echo "== Python venv of the MQTT interop tests, paho-mqtt and amqtt (at ${SECONDS} s)"
tests/mqtt/python/venv.sh >/dev/null
echo "== Python venv of the status-schema test, kubernetes-validate (at ${SECONDS} s)"
tests/status/python/venv.sh >/dev/null
echo "== cargo test: all but the VM suites (at ${SECONDS} s)"
cargo test --workspace --locked --exclude tidelet-e2e -- --test-threads 4
cargo test -p tidelet-e2e --locked --lib "${E2E_TARGETS[@]/#/--test=}" -- --test-threads 4
cargo test -p tidelet-e2e --locked --doc
# Every benchmark once, in its smoke mode (no `--bench`: each part once, small counts, against
# the debug build), so that none stops working unseen; the figures are scripts/bench*.sh's.
echo "== benchmarks, smoke mode (at ${SECONDS} s)"
cargo test -p tidelet-e2e --locked --benches

echo "== waiting for aarch64's release binaries (at ${SECONDS} s)"
cross_wait "$cross_aarch64" aarch64
# A failed prefetch is only reported: the VM tests build what is missing themselves (and fail
# there, with the cause, if they cannot).
wait "$prefetch" || { echo "== prefetch of the VM guests' Debian parts failed:"; cat "$prefetch_log"; }
echo "== cargo test: the VM suites (at ${SECONDS} s)"
cargo test -p tidelet-e2e --locked "${VM_TARGETS[@]/#/--test=}" -- --test-threads 4
echo "== waiting for aarch64's unit tests and armv7 (at ${SECONDS} s)"
cross_wait "$cross_tests" aarch64-tests
cross_wait "$cross_armv7" armv7
echo "== cargo deny check licenses bans sources; cargo machete (at ${SECONDS} s)"
if [ -n "$tools" ] && ! wait "$tools"; then
  cat "$tools_log" >&2
  echo "scripts/test.sh: cargo install of cargo-deny or cargo-machete failed" >&2
  exit 1
fi
rm -f "$tools_log"
"$tools_root/bin/cargo-deny" --log-level error check licenses bans sources
"$tools_root/bin/cargo-machete"
rm -rf "$logs"
echo "== all checks passed in ${SECONDS} s"
