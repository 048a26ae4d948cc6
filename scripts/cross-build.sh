#!/usr/bin/env bash
# Cross-builds tidelet for ARM boards on a Debian 12 machine without a container engine (as
# root), with Debian's own current Rust toolchain instead of `cross`:
#   rustc-web/cargo-web 1.96 and the multiarch standard library libstd-rust-web-dev:arm64,
#   linked as the rustup toolchain `debian-web`, linking with gcc-aarch64-linux-gnu.
# Output: target/cross/aarch64-unknown-linux-gnu/release/tidelet.
# (With Docker or Podman, `cross build --release --target aarch64-unknown-linux-gnu` does the
# same; see README.)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "scripts/cross-build.sh: run as root (it installs packages)" >&2; exit 1; fi
. scripts/lib.sh

DEBIAN_RUST=1.96.0+dfsg1-1~deb12u2
# Never armhf here: its index on the mirror is broken and spoils `apt-get update`.
dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  "rustc-web=$DEBIAN_RUST" "cargo-web=$DEBIAN_RUST" "libstd-rust-web-dev=$DEBIAN_RUST" \
  "libstd-rust-web-dev:arm64=$DEBIAN_RUST" gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
  qemu-user-static file >/dev/null

# Use Debian's toolchain through rustup without touching rustup's own toolchains.
if command -v rustup >/dev/null 2>&1; then
  rustup toolchain list | grep -q '^debian-web' || rustup toolchain link debian-web /usr
  CARGO=(cargo +debian-web)
else
  CARGO=(/usr/bin/cargo)
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
"${CARGO[@]}" build --locked --release --target aarch64-unknown-linux-gnu \
  --target-dir target/cross -p tidelet
bin=target/cross/aarch64-unknown-linux-gnu/release/tidelet
file "$bin"
echo "stripped size: $(stat -c %s "$bin") bytes"
if [ "${CROSS_TESTS:-0}" = 1 ]; then
  # The pure unit tests of the agent, run under qemu-user (the privileged ones need a VM).
  "${CARGO[@]}" test --locked --target aarch64-unknown-linux-gnu --target-dir target/cross \
    -p tidelet --lib -- --skip cgroups::privileged
fi
