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
# image-import tests; the VM test (tests/vm) boots Debian's kernel under QEMU (TCG), with an
# initramfs packed by cpio and kernel modules indexed by depmod (kmod).
apt_need busybox-static python3 skopeo qemu-system-x86 cpio kmod
ensure_toolchain
modprobe overlay 2>/dev/null || true

export TIDELET_REQUIRE_PRIVILEGED=1
export TIDELET_REQUIRE_SKOPEO=1
export CARGO_TERM_COLOR=never

# The lints need rustfmt and clippy (rustup components). Debian's cargo-web has neither:
# there they are skipped with a note, except in CI, which must run them.
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
echo "== cargo build"
cargo build --workspace --locked
echo "== cargo test"
cargo test --workspace --locked -- --test-threads 4
