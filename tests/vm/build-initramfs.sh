#!/usr/bin/env bash
# Build the kernel and initramfs of tidelet's VM test (tests/vm/main.rs) for one guest
# architecture:
#   OUTDIR/vmlinuz             Debian's kernel (linux-image-<version>-<flavour>)
#   OUTDIR/initramfs.cpio.gz   busybox-static, tidelet (stripped) and its shared libraries, the
#                              kernel modules the test needs (overlay), the busybox test image
#                              and the guest scripts (/init, /stage2, /pods/*.yaml)
# and prints those two paths. The result is cached: it is rebuilt only when an input changed
# (the scripts, the tidelet binary, the kernel version, busybox, the test image).
#
# Architecture-specific values live in one table below (ARCH: x86_64 or aarch64). For a guest
# that is not the host's architecture, TIDELET_BIN must be a cross-built binary; its shared
# libraries cannot be found with ldd, so it must be statically linked (e.g. musl), and the
# Debian packages of that architecture need `dpkg --add-architecture`.
#
# Environment: TIDELET_BIN (default: target/debug/tidelet), TEST_IMAGES_DIR (default:
# target/test-images, built by images/build-test-images.sh), STRIP (default: strip).
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 OUTDIR ARCH   (ARCH: x86_64 | aarch64)" >&2
    exit 2
fi
OUTDIR=$1
ARCH=$2
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

# ---- the architecture table: Debian architecture and kernel flavour.
case "$ARCH" in
    x86_64)  DEB_ARCH=amd64; FLAVOUR=amd64; CONSOLE_OPT=SERIAL_8250_CONSOLE ;;
    aarch64) DEB_ARCH=arm64; FLAVOUR=arm64; CONSOLE_OPT=SERIAL_AMBA_PL011_CONSOLE ;;
    *) echo "$0: unknown ARCH $ARCH (x86_64 | aarch64)" >&2; exit 2 ;;
esac
HOST_DEB_ARCH=$(dpkg --print-architecture)
PKG_SUFFIX=""
[ "$DEB_ARCH" = "$HOST_DEB_ARCH" ] || PKG_SUFFIX=":$DEB_ARCH"

TIDELET_BIN=${TIDELET_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/debug/tidelet}
TEST_IMAGES_DIR=${TEST_IMAGES_DIR:-$REPO/target/test-images}
STRIP=${STRIP:-strip}
[ -x "$TIDELET_BIN" ] || { echo "$0: $TIDELET_BIN missing: run cargo build first (or set TIDELET_BIN)" >&2; exit 1; }

apt_updated=no
apt_update() {
    if [ $apt_updated = no ]; then
        apt-get update -qq >&2
        apt_updated=yes
    fi
}
# Tools the build needs, installed like images/build-test-images.sh does.
need=()
command -v cpio >/dev/null || need+=(cpio)
command -v depmod >/dev/null || [ -x /sbin/depmod ] || need+=(kmod)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
DEPMOD=$(command -v depmod || echo /sbin/depmod)

# ---- the kernel package: the one the linux-image-<flavour> metapackage depends on.
kernel_pkg() {
    apt-cache depends "linux-image-$FLAVOUR$PKG_SUFFIX" 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[0-9][^ :]*\).*/\1/p' | head -n1
}
KPKG=$(kernel_pkg)
if [ -z "$KPKG" ]; then
    apt_update
    KPKG=$(kernel_pkg)
fi
[ -n "$KPKG" ] || { echo "$0: apt-cache depends linux-image-$FLAVOUR$PKG_SUFFIX names no kernel package" >&2; exit 1; }
KVER=${KPKG#linux-image-}

mkdir -p "$OUTDIR/cache"
OUTDIR=$(cd "$OUTDIR" && pwd)
CACHE=$OUTDIR/cache
# One build at a time per OUTDIR (two test runs may share a target dir).
exec 9>"$OUTDIR/.lock"
flock 9

# ---- download and extract only what the guest needs from the kernel package.
KDIR=$CACHE/kernel-$KVER
if [ ! -f "$KDIR/.done" ]; then
    rm -rf "$CACHE"/kernel-* "$CACHE"/*.deb   # older kernel versions too
    mkdir -p "$KDIR"
    (cd "$CACHE" && apt-get download "$KPKG$PKG_SUFFIX" >&2) || {
        apt_update
        (cd "$CACHE" && apt-get download "$KPKG$PKG_SUFFIX" >&2)
    }
    DEB=$(ls "$CACHE"/"${KPKG}"_*.deb)
    dpkg-deb --fsys-tarfile "$DEB" | tar -x -C "$KDIR" --wildcards \
        './boot/vmlinuz-*' './boot/config-*' \
        "./lib/modules/$KVER/modules.builtin*" "./lib/modules/$KVER/modules.order" \
        "./lib/modules/$KVER/kernel/fs/overlayfs/*"
    rm -f "$DEB"
    touch "$KDIR/.done"
fi
KCONFIG=$KDIR/boot/config-$KVER
# What the test needs from the kernel: built in (y) or a module we ship (m; only overlay is
# shipped, so the serial console must be built in).
grep -q "^CONFIG_$CONSOLE_OPT=y$" "$KCONFIG" \
    || { echo "$0: $KCONFIG: CONFIG_$CONSOLE_OPT is not built in; no console for the test" >&2; exit 1; }
for opt in CGROUPS MEMCG CGROUP_SCHED FAIR_GROUP_SCHED CFS_BANDWIDTH CGROUP_PIDS PID_NS NET_NS \
           IPC_NS UTS_NS DEVTMPFS TMPFS BLK_DEV_INITRD RD_GZIP OVERLAY_FS; do
    grep -Eq "^CONFIG_$opt=(y|m)$" "$KCONFIG" \
        || { echo "$0: $KCONFIG: CONFIG_$opt is not set; the VM test needs it" >&2; exit 1; }
done

# ---- busybox-static of the guest's architecture.
if [ -z "$PKG_SUFFIX" ]; then
    if ! dpkg -s busybox-static >/dev/null 2>&1; then
        apt_update
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >&2
    fi
    BUSYBOX=/bin/busybox
else
    BUSYBOX=$CACHE/busybox-$DEB_ARCH
    if [ ! -x "$BUSYBOX" ]; then
        (cd "$CACHE" && apt-get download "busybox-static$PKG_SUFFIX" >&2)
        dpkg-deb --fsys-tarfile "$CACHE"/busybox-static_*.deb | tar -xO ./bin/busybox > "$BUSYBOX.tmp"
        chmod 755 "$BUSYBOX.tmp" && mv "$BUSYBOX.tmp" "$BUSYBOX"
        rm -f "$CACHE"/busybox-static_*.deb
    fi
fi

# ---- the test image archive (the images script is itself deterministic and cheap).
bash "$REPO/images/build-test-images.sh" "$TEST_IMAGES_DIR" >/dev/null
IMAGE=$TEST_IMAGES_DIR/busybox.oci.tar

# ---- cache key over every input.
KEY=$( {
    echo "arch=$ARCH kernel=$KPKG"
    sha256sum "$HERE/build-initramfs.sh" "$HERE/init" "$HERE/stage2" "$HERE"/pods/*.yaml \
        "$TIDELET_BIN" "$BUSYBOX" "$IMAGE" "$KDIR/boot/vmlinuz-$KVER" | cut -d' ' -f1
} | sha256sum | cut -d' ' -f1)
if [ -f "$OUTDIR/initramfs.cpio.gz" ] && [ -f "$OUTDIR/vmlinuz" ] \
    && [ "$(cat "$OUTDIR/key" 2>/dev/null)" = "$KEY" ]; then
    echo "$OUTDIR/vmlinuz"
    echo "$OUTDIR/initramfs.cpio.gz"
    exit 0
fi

# ---- the staging tree.
STAGE=$OUTDIR/stage
rm -rf "$STAGE"
mkdir -p "$STAGE"/{bin,sbin,dev,etc,proc,sys,tmp,var,run,newroot,pods,images}
mkdir -p "$STAGE/usr/bin" "$STAGE/usr/sbin"
cp "$BUSYBOX" "$STAGE/bin/busybox"
# Applet links, from the host's busybox of the same version when the guest's cannot run here.
LIST_BB=$BUSYBOX
[ -z "$PKG_SUFFIX" ] || LIST_BB=/bin/busybox
for a in $("$LIST_BB" --list); do
    [ "$a" = busybox ] || ln -sf busybox "$STAGE/bin/$a"
done
# The kernel opens /dev/console for init before devtmpfs is mounted.
mknod -m 600 "$STAGE/dev/console" c 5 1
mknod -m 666 "$STAGE/dev/null" c 1 3

"$STRIP" -o "$STAGE/bin/tidelet" "$TIDELET_BIN" 2>/dev/null || cp "$TIDELET_BIN" "$STAGE/bin/tidelet"
chmod 755 "$STAGE/bin/tidelet"
if [ -z "$PKG_SUFFIX" ]; then
    # Shared libraries of tidelet, at the paths the dynamic linker looks for them.
    for lib in $(ldd "$TIDELET_BIN" | grep -o '/[^ ]*'); do
        mkdir -p "$STAGE$(dirname "$lib")"
        cp -L "$lib" "$STAGE$lib"
    done
elif file -L "$TIDELET_BIN" 2>/dev/null | grep -q 'dynamically linked'; then
    echo "$0: $TIDELET_BIN is dynamically linked; a cross-built guest binary must be static" >&2
    exit 1
fi

# Kernel modules, with modules.dep for modprobe.
MODS=$STAGE/lib/modules/$KVER
mkdir -p "$MODS"
cp -a "$KDIR/lib/modules/$KVER/." "$MODS/"
"$DEPMOD" -b "$STAGE" "$KVER"

cp "$IMAGE" "$STAGE/images/busybox.oci.tar"
cp "$HERE"/pods/*.yaml "$STAGE/pods/"
install -m 755 "$HERE/init" "$STAGE/init"
install -m 755 "$HERE/stage2" "$STAGE/stage2"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$STAGE/etc/passwd"
printf 'root:x:0:\n' > "$STAGE/etc/group"
printf '127.0.0.1\tlocalhost\n' > "$STAGE/etc/hosts"
printf 'nameserver 127.0.0.1\n' > "$STAGE/etc/resolv.conf"
echo tidelet-vm > "$STAGE/etc/hostname"

# ---- pack: newc cpio, root-owned, sorted for a stable archive; gzip -1 boots fastest.
(cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) \
    | gzip -1 > "$OUTDIR/initramfs.cpio.gz.tmp"
mv "$OUTDIR/initramfs.cpio.gz.tmp" "$OUTDIR/initramfs.cpio.gz"
cp "$KDIR/boot/vmlinuz-$KVER" "$OUTDIR/vmlinuz"
cp "$KCONFIG" "$OUTDIR/config"
rm -rf "$STAGE"
echo "$KEY" > "$OUTDIR/key"
echo "$OUTDIR/vmlinuz"
echo "$OUTDIR/initramfs.cpio.gz"
