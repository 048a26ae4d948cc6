#!/usr/bin/env bash
# One command, on a fresh Debian 12 machine as root: build tidelet, build and import the
# example image, and run tidelet in the foreground on the example pods (Ctrl-C stops the
# agent; the pods keep running until their manifests are removed).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "scripts/demo.sh: run as root" >&2; exit 1; fi
. scripts/lib.sh
ensure_toolchain
# containernetworking-plugins: the CNI plugins that give pods their network (tidelet's built-in
# bridge network needs bridge, host-local, portmap, bandwidth, loopback); iptables its rules.
apt_need busybox-static containernetworking-plugins iptables
ROOT=${TIDELET_ROOT_DIR:-/var/lib/tidelet}
MANIFESTS=${TIDELET_MANIFESTS:-/etc/tidelet/manifests}
cargo build --release --locked -p tidelet
install -m 0755 target/release/tidelet /usr/local/bin/tidelet
# The per-pod supervisor, beside the agent (without it the agent runs `tidelet shim`).
install -m 0755 target/release/tidelet-shim /usr/local/bin/tidelet-shim
# The operator's fleet CLI (`tidelet fleet ...` runs it), for the MQTT examples of the README.
install -m 0755 target/release/tidelet-fleet /usr/local/bin/tidelet-fleet
bash images/build-test-images.sh target/test-images
tidelet --root-dir "$ROOT" image import target/test-images/busybox.oci.tar
mkdir -p "$MANIFESTS"
cp examples/pods/*.yaml "$MANIFESTS/"
echo "tidelet: running on $MANIFESTS; try in another shell: tidelet get pods -o wide"
exec tidelet --root-dir "$ROOT" run --static-pod-path "$MANIFESTS"
