#!/usr/bin/env bash
# Cross-builds every binary of the workspace for ARM boards on a Debian 12 machine without a
# container engine (as root), with Debian's own current Rust toolchain instead of `cross`, and
# runs the unit tests of the cross-built crates under qemu-user:
#   aarch64-unknown-linux-gnu    rustc-web/cargo-web 1.96 + libstd-rust-web-dev:arm64,
#                                linked with gcc-aarch64-linux-gnu
#   armv7-unknown-linux-gnueabihf  the same toolchain building its own std from rust-web-src
#                                (-Z build-std under RUSTC_BOOTSTRAP=1: Debian ships no armhf
#                                std we may install), linked with gcc-arm-linux-gnueabihf
# Output: target/cross/<triple>/release/<bin>, checked with `file`/`readelf` and sized.
# (With Docker or Podman, `cross build --release --target <triple>` does the same; see
# Cross.toml and the README.)
#
# Usage: scripts/cross-build.sh [--no-tests] [--target-dir DIR] [TARGET...]
#   TARGET: aarch64 | armv7 (default: both). Environment: CROSS_TEST_TIMEOUT (seconds per
#   test binary under qemu, default 600).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "scripts/cross-build.sh: run as root (it installs packages)" >&2; exit 1; fi
. scripts/cross/lib.sh

tests=1
target_dir=target/cross
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-tests) tests=0 ;;
    --target-dir) target_dir=$2; shift ;;
    aarch64 | armv7) targets+=("$1") ;;
    *) echo "scripts/cross-build.sh: unknown argument '$1' (see the usage at the top)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#targets[@]} -gt 0 ] || targets=(aarch64 armv7)

cross_setup "${targets[@]}"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

for t in "${targets[@]}"; do
  start=$SECONDS
  cross_build "$t" "$target_dir"
  cross_check_bins "$t"
  if [ "$tests" = 1 ]; then cross_unit_tests "$t" "$target_dir"; fi
  echo "== $t: done in $((SECONDS - start)) s"
done
