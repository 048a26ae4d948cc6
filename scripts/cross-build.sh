#!/usr/bin/env bash
# Cross-builds the binaries tidelet ships (the agent `tidelet` and the device plugins
# `tidelet-gpu-plugin` and `tidelet-generic-plugin`, linked statically on aarch64) for ARM boards on
# a Debian 12 machine without a container engine (as root), with Debian's own current Rust
# toolchain instead of `cross`, and runs the unit tests of the workspace's crates under
# qemu-user:
#   aarch64-unknown-linux-gnu    rustc-web/cargo-web 1.96 + libstd-rust-web-dev:arm64,
#                                linked with gcc-aarch64-linux-gnu
#   armv7-unknown-linux-gnueabihf  the same toolchain building its own std from rust-web-src
#                                (-Z build-std under RUSTC_BOOTSTRAP=1: Debian ships no armhf
#                                std we may install), linked with gcc-arm-linux-gnueabihf
# Output: target/cross/aarch64-unknown-linux-gnu/release/<bin> and
# target/cross-armv7/armv7-unknown-linux-gnueabihf/release/<bin> (one target dir each, so that
# both build at once), each checked with `file`/`readelf` (machine, ABI, stripped), sized
# against the budget and started under qemu-user (`--help`).
# (With Docker or Podman, `cross build --release --target <triple>` does the same; see
# Cross.toml and the README.)
#
# Usage: scripts/cross-build.sh [--no-tests | --tests-only] [--setup-only] [--target-dir DIR] [TARGET...]
#   TARGET: aarch64 | armv7 (default: both, built at once). DIR (default target/cross) is
#   aarch64's target dir; armv7 uses DIR-armv7; the unit tests build in DIR-tests (aarch64)
#   and DIR-armv7-tests, beside the release builds. --tests-only: only those unit tests (CI
#   runs them apart from the binaries the VM tests wait for). --setup-only: install the
#   toolchain and stop. Environment: CROSS_TEST_TIMEOUT (seconds per test binary under qemu, default 600);
#   CROSS_TEST_TARGETS (which targets run the unit tests under qemu, default all built;
#   scripts/test.sh keeps CI within its time by testing aarch64 only: armv7's test build
#   costs minutes); CROSS_QUICK (targets built without optimisation and LTO, to check them
#   quickly: see cross_quick in scripts/cross/lib.sh; CI sets armv7); CROSS_STATIC_PLUGINS=0
#   (aarch64's plugins linked dynamically in the agent's invocation, as CI does: their
#   dependencies are then compiled once).
# The release build of the first target is the long pole (single-threaded minutes: the
# agent's crate, then its fat-LTO link); quick builds and the unit-test builds run at a lower
# priority beside it, on what it leaves idle.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "scripts/cross-build.sh: run as root (it installs packages)" >&2; exit 1; fi
. scripts/cross/lib.sh

# The packages whose binaries ship, and the binaries that must come out of them (a package
# that stopped producing its binary, or was renamed, fails the build here, not on a board).
CROSS_PACKAGES=(tidelet)
CROSS_EXPECTED_BINS=(tidelet tidelet-shim tidelet-fleet tidelet-gpu-plugin tidelet-generic-plugin)
# Built apart and linked statically on aarch64 (see cross_build in scripts/cross/lib.sh).
CROSS_STATIC_PACKAGES=(tidelet-gpu-plugin tidelet-generic-plugin)

tests=1
setup_only=0
target_dir=target/cross
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-tests) tests=0 ;;
    --tests-only) tests=only ;;
    --setup-only) setup_only=1 ;;
    --target-dir) target_dir=$2; shift ;;
    aarch64 | armv7) targets+=("$1") ;;
    *) echo "scripts/cross-build.sh: unknown argument '$1' (see the usage at the top)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#targets[@]} -gt 0 ] || targets=(aarch64 armv7)

cross_setup "${targets[@]}"
[ "$setup_only" = 0 ] || exit 0
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

# One target's whole job: release build, checks, unit tests under qemu-user. The tests build
# in their own target dir (another profile: nothing to share) at the same time as the
# release build, whose single-threaded stretches (the agent's crate with one codegen unit,
# then its fat-LTO link: minutes each) would otherwise leave a core idle.
# (A failed build or check ends the job at once, under set -e; the test build then goes on
# alone until it ends, and its output is lost with the failure already reported.)
one_target() {
  local t=$1 dir=$2 start=$SECONDS tests_pid='' tests_log
  if [ "$tests" = only ]; then
    cross_unit_tests "$t" "$dir-tests"
    echo "== $t: unit tests done in $((SECONDS - start)) s"
    return 0
  fi
  if [ "$tests" = 1 ] && [[ " ${CROSS_TEST_TARGETS:-aarch64 armv7} " == *" $t "* ]]; then
    tests_log=$(mktemp)
    (
      CARGO=(nice -n 5 "${CARGO[@]}")
      cross_unit_tests "$t" "$dir-tests"
    ) >"$tests_log" 2>&1 &
    tests_pid=$!
  fi
  if cross_quick "$t"; then
    CARGO=(nice -n 5 "${CARGO[@]}")
  fi
  cross_build "$t" "$dir"
  cross_check_bins "$t"
  echo "== $t: binaries done in $((SECONDS - start)) s"
  if [ -n "$tests_pid" ]; then
    echo "======== $t: unit tests under qemu-user (built in $dir-tests)"
    if ! wait "$tests_pid"; then
      cat "$tests_log"
      echo "cross: $t: unit tests under qemu-user failed" >&2
      return 1
    fi
    cat "$tests_log"
    rm -f "$tests_log"
  fi
  echo "== $t: done in $((SECONDS - start)) s"
}

# Each target has its own target dir, so that the targets build at the same time: cargo locks
# a whole target dir, and a release build spends minutes in one single-threaded fat-LTO link
# that leaves the other core idle. (The host's proc macros and build scripts are built once
# per dir; that costs far less than the idle core.)
dir_of() { if [ "$1" = aarch64 ]; then echo "$target_dir"; else echo "$target_dir-$1"; fi; }

if [ ${#targets[@]} -eq 1 ]; then
  one_target "${targets[0]}" "$(dir_of "${targets[0]}")"
  exit 0
fi
logs=$(mktemp -d)
declare -A pids
for t in "${targets[@]}"; do
  one_target "$t" "$(dir_of "$t")" >"$logs/$t.log" 2>&1 &
  pids[$t]=$!
done
failed=()
for t in "${targets[@]}"; do
  wait "${pids[$t]}" || failed+=("$t")
done
for t in "${targets[@]}"; do
  echo "======== $t (log of its build, checks and tests)"
  cat "$logs/$t.log"
done
rm -rf "$logs"
if [ ${#failed[@]} -gt 0 ]; then
  echo "scripts/cross-build.sh: failed for: ${failed[*]} (see its log above)" >&2
  exit 1
fi
echo "== cross builds done in $SECONDS s"
