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

need=()
command -v busybox >/dev/null || [ -x /bin/busybox ] || need+=(busybox-static)
command -v python3 >/dev/null || need+=(python3)
# skopeo writes real OCI and docker archives for the image-import tests.
command -v skopeo >/dev/null || need+=(skopeo)
# The VM test (tests/vm) boots Debian's kernel under QEMU (TCG); its initramfs is packed with
# cpio, and depmod (kmod) indexes the kernel modules it ships.
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v cpio >/dev/null || need+=(cpio)
command -v depmod >/dev/null || [ -x /sbin/depmod ] || need+=(kmod)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
modprobe overlay 2>/dev/null || true

export TIDELET_REQUIRE_PRIVILEGED=1
export TIDELET_REQUIRE_SKOPEO=1
export CARGO_TERM_COLOR=never

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build"
cargo build --workspace --locked
echo "== cargo test"
cargo test --workspace --locked -- --test-threads 4
