#!/usr/bin/env bash
# Build the systemd VM test's guest (tests/vm_systemd/main.rs), aarch64 only:
#   OUTDIR/vmlinuz       Debian's arm64 kernel
#   OUTDIR/initrd.gz     busybox-static + virtio/ext4/overlay modules and the pod network's
#                        (veth, bridge, netfilter for iptables-nft); mounts /dev/vda
#                        read-only and switch_roots to systemd (tests/vm_systemd/guest/init)
#   OUTDIR/rootfs.ext4   Debian 12 arm64 with systemd 252 (mmdebstrap --variant=extract: no
#                        maintainer script runs under emulation, ~30 s cold), Debian's
#                        containernetworking-plugins and iptables (the alternatives' links
#                        made here, as iptables' postinst would), tidelet, the unit
#                        and config from dist/, a busybox OCI image, a static pod and the test
#                        units of tests/vm_systemd/guest/
# and prints those three paths. The Debian part is cached in OUTDIR/base-KEY.tar (KEY: the
# package list, mirrors and systemd source); the outputs are rebuilt only when an input's hash changes.
#
# Environment: TIDELET_VMSD_SYSTEMD (stable: Debian 12's systemd 252, the default;
# backports: bookworm-backports' 254+ with DelegateSubgroup=), TIDELET_AARCH64_BIN (default
# target/cross/aarch64-unknown-linux-gnu/release/tidelet, built by scripts/cross-build.sh;
# dynamically linked against glibc, which the rootfs has). Needs root (binfmt_misc, chroot,
# file ownership in the image).
set -euo pipefail

# --prefetch: only fetch and cache what comes from Debian (kernel, busybox, the mmdebstrap
# base; no tidelet needed), so that scripts/test.sh can do it while the cross builds run.
PREFETCH=no
if [ "${1:-}" = --prefetch ]; then
    PREFETCH=yes
    shift
fi
if [ $# -ne 1 ]; then
    echo "usage: $0 [--prefetch] OUTDIR" >&2
    exit 2
fi
OUTDIR=$1
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
TIDELET_BIN=${TIDELET_AARCH64_BIN:-$TARGET/cross/aarch64-unknown-linux-gnu/release/tidelet}
SUITE=bookworm
MIRRORS=("deb http://deb.debian.org/debian $SUITE main"
         "deb http://deb.debian.org/debian $SUITE-updates main"
         "deb http://deb.debian.org/debian-security $SUITE-security main")
# Which systemd: `stable` is Debian 12's 252 (no DelegateSubgroup=); `backports` takes
# bookworm-backports' 254+ (with it), as on Yocto scarthgap (255).
SYSTEMD_FROM=${TIDELET_VMSD_SYSTEMD:-stable}
APTOPT=()
case "$SYSTEMD_FROM" in
    stable) ;;
    backports)
        MIRRORS+=("deb http://deb.debian.org/debian $SUITE-backports main")
        APTOPT=(--aptopt="APT::Default-Release \"$SUITE-backports\"")
        ;;
    *) echo "$0: TIDELET_VMSD_SYSTEMD=$SYSTEMD_FROM: not stable or backports" >&2; exit 2 ;;
esac
# What the guest runs: systemd as PID 1, the tools the test script uses, and what tidelet's
# built-in pod network needs (Debian's CNI plugins in /usr/lib/cni, iptables-nft). Dependencies
# are resolved by apt; nothing is configured by maintainer scripts (see configure_root below).
PACKAGES=systemd,systemd-sysv,libc-bin,base-files,base-passwd,bash,coreutils,dash,grep,sed,mount,util-linux,procps,containernetworking-plugins,iptables

[ $PREFETCH = yes ] || [ -x "$TIDELET_BIN" ] || {
    echo "$0: $TIDELET_BIN missing: run scripts/cross-build.sh (or set TIDELET_AARCH64_BIN)" >&2
    exit 1
}

log() { echo "build-rootfs: $*" >&2; }
apt_updated=no
apt_update() {
    if [ $apt_updated = no ]; then
        apt-get update -qq >&2
        apt_updated=yes
    fi
}
# ---- host tools (CI machines start fresh).
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
[ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
command -v mke2fs >/dev/null || need+=(e2fsprogs)
command -v cpio >/dev/null || need+=(cpio)
command -v depmod >/dev/null || [ -x /sbin/depmod ] || need+=(kmod)
command -v python3 >/dev/null || need+=(python3)
command -v file >/dev/null || need+=(file)
command -v qemu-system-aarch64 >/dev/null || need+=(qemu-system-arm)
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    apt_updated=no
    apt_update
fi
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
[ $PREFETCH = yes ] || file -L "$TIDELET_BIN" 2>/dev/null | grep -q 'ARM aarch64' || {
    echo "$0: $TIDELET_BIN is not an aarch64 binary: $(file -L "$TIDELET_BIN")" >&2
    exit 1
}
DEPMOD=$(command -v depmod || echo /sbin/depmod)
MODPROBE=$(command -v modprobe || echo /sbin/modprobe)

# ---- binfmt_misc, so that arm64 binaries run in the chroot (ldconfig, systemd-sysusers, the
# image's busybox): F (fix binary) makes the kernel open the interpreter now, so it works
# inside any chroot without copying qemu there.
[ -e /proc/sys/fs/binfmt_misc/register ] \
    || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    log "registering qemu-aarch64-static in binfmt_misc"
    printf '%s' ':qemu-aarch64:M:0:\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:FP' \
        > /proc/sys/fs/binfmt_misc/register
fi
grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || {
    echo "$0: binfmt_misc entry qemu-aarch64 is disabled" >&2
    exit 1
}

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
CACHE=$OUTDIR/cache
mkdir -p "$CACHE"
exec 9>"$OUTDIR/.lock"
flock 9

# ---- the kernel: the package linux-image-arm64 depends on; its vmlinuz and the modules the
# guest loads (with their dependencies, found with modprobe --show-depends).
kernel_pkg() {
    apt-cache depends linux-image-arm64:arm64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[0-9][^ :]*\).*/\1/p' | head -n1
}
KPKG=$(kernel_pkg)
[ -n "$KPKG" ] || { apt_update; KPKG=$(kernel_pkg); }
[ -n "$KPKG" ] || { echo "$0: apt-cache depends linux-image-arm64:arm64 names no kernel" >&2; exit 1; }
KVER=${KPKG#linux-image-}
KDIR=$CACHE/kernel-$KVER
# (the version of what is extracted: a new one re-extracts)
KEXTRACT=with-net-v1
if [ "$(cat "$KDIR/.done" 2>/dev/null)" != "$KEXTRACT" ]; then
    log "downloading $KPKG"
    rm -rf "$CACHE"/kernel-*
    mkdir -p "$KDIR"
    (cd "$CACHE" && { apt-get download "$KPKG:arm64" >&2 2>/dev/null \
        || { apt_update; apt-get download "$KPKG:arm64" >&2; }; })
    dpkg-deb --fsys-tarfile "$CACHE/${KPKG}"_*_arm64.deb | tar -x -C "$KDIR" --wildcards \
        './boot/vmlinuz-*' './boot/config-*' "./lib/modules/$KVER/modules.*" \
        "./lib/modules/$KVER/kernel/fs/*" "./lib/modules/$KVER/kernel/drivers/block/*" \
        "./lib/modules/$KVER/kernel/drivers/virtio/*" "./lib/modules/$KVER/kernel/lib/*" \
        "./lib/modules/$KVER/kernel/crypto/*" "./lib/modules/$KVER/kernel/arch/*" \
        "./lib/modules/$KVER/kernel/net/*" "./lib/modules/$KVER/kernel/drivers/net/veth.ko"
    rm -f "$CACHE/${KPKG}"_*_arm64.deb
    "$DEPMOD" -b "$KDIR" "$KVER"
    echo "$KEXTRACT" > "$KDIR/.done"
fi
# The root file system has no kernel modules: the initrd loads what the guest needs. Besides
# the disk and overlay, the pod network's: veth and bridge (the bridge plugin), and what
# iptables-nft needs for the agent's masquerade and forward rules (crc32c_generic first:
# libcrc32c names it only as a softdep, which busybox's modprobe does not follow).
NET_MODULES="veth bridge crc32c_generic nf_tables nft_compat nft_chain_nat nf_nat nf_conntrack xt_conntrack xt_comment xt_MASQUERADE xt_nat xt_addrtype xt_mark xt_multiport xt_tcpudp"
GUEST_MODULES="virtio_mmio virtio_blk ext4 overlay $NET_MODULES"

# ---- busybox-static for the initrd and the pod's image.
BUSYBOX=$CACHE/busybox-arm64
if [ ! -x "$BUSYBOX" ]; then
    (cd "$CACHE" && { apt-get download busybox-static:arm64 >&2 2>/dev/null \
        || { apt_update; apt-get download busybox-static:arm64 >&2; }; })
    dpkg-deb --fsys-tarfile "$CACHE"/busybox-static_*_arm64.deb | tar -xO ./bin/busybox > "$BUSYBOX.tmp"
    chmod 755 "$BUSYBOX.tmp" && mv "$BUSYBOX.tmp" "$BUSYBOX"
    rm -f "$CACHE"/busybox-static_*_arm64.deb
fi
APPLETS=$("$BUSYBOX" --list)   # runs through binfmt_misc

# ---- the Debian part, cached by what defines it.
BASE_KEY=$(printf '%s\n' "$SUITE" "$PACKAGES" "${MIRRORS[@]}" "$SYSTEMD_FROM" extract-v1 | sha256sum | cut -c1-16)
BASE=$CACHE/base-$BASE_KEY.tar
if [ ! -f "$BASE" ]; then
    log "mmdebstrap $SUITE arm64, systemd from $SYSTEMD_FROM (extract: $PACKAGES)"
    start=$(date +%s)
    rm -f "$CACHE"/base-*.tar
    mmdebstrap --quiet --format=tar --arch=arm64 --variant=extract --include="$PACKAGES" "${APTOPT[@]}" \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        "$SUITE" "$BASE.tmp" "${MIRRORS[@]}" < /dev/null >&2
    mv "$BASE.tmp" "$BASE"
    log "mmdebstrap took $(( $(date +%s) - start )) s"
fi
if [ $PREFETCH = yes ]; then
    log "prefetched $KPKG, busybox and the $SYSTEMD_FROM base into $CACHE"
    exit 0
fi

# ---- the pod's image.
IMAGE=$CACHE/busybox-arm64.oci.tar
python3 "$HERE/make-image.py" "$IMAGE" "$BUSYBOX" arm64 $APPLETS

# ---- cache key over every input of the outputs.
KEY=$( {
    echo "kernel=$KPKG base=$BASE_KEY modules=$GUEST_MODULES"
    sha256sum "$0" "$HERE/make-image.py" "$HERE"/guest/* "$REPO/dist/systemd/tidelet.service" \
        "$REPO/dist/tidelet.yaml" "$TIDELET_BIN" "$BUSYBOX" "$IMAGE" | cut -d' ' -f1
} | sha256sum | cut -d' ' -f1)
if [ "$(cat "$OUTDIR/key" 2>/dev/null)" = "$KEY" ] && [ -f "$OUTDIR/rootfs.ext4" ] \
    && [ -f "$OUTDIR/initrd.gz" ] && [ -f "$OUTDIR/vmlinuz" ]; then
    printf '%s\n' "$OUTDIR/vmlinuz" "$OUTDIR/initrd.gz" "$OUTDIR/rootfs.ext4"
    exit 0
fi
rm -f "$OUTDIR/key"

# ---- the initrd: busybox, the modules, guest/init.
STAGE=$OUTDIR/initrd-stage
rm -rf "$STAGE"
mkdir -p "$STAGE"/{bin,dev,proc,sys,newroot,lib/modules/"$KVER"}
cp "$BUSYBOX" "$STAGE/bin/busybox"
for a in $APPLETS; do [ "$a" = busybox ] || ln -sf busybox "$STAGE/bin/$a"; done
ln -s bin "$STAGE/sbin"
mknod -m 600 "$STAGE/dev/console" c 5 1
for ko in $("$MODPROBE" -d "$KDIR" -S "$KVER" --show-depends -a $GUEST_MODULES \
        | sed -n 's/^insmod \([^ ]*\).*/\1/p' | sort -u); do
    rel=${ko#"$KDIR"/}
    mkdir -p "$STAGE/$(dirname "$rel")"
    cp "$ko" "$STAGE/$rel"
done
cp "$KDIR/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$STAGE/lib/modules/$KVER/"
"$DEPMOD" -b "$STAGE" "$KVER"
sed "s/@NET_MODULES@/$NET_MODULES/" "$HERE/guest/init" > "$STAGE/init"
chmod 755 "$STAGE/init"
(cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) \
    | gzip -1 > "$OUTDIR/initrd.gz.tmp"
mv "$OUTDIR/initrd.gz.tmp" "$OUTDIR/initrd.gz"
rm -rf "$STAGE"

# ---- the root file system.
ROOT=$OUTDIR/root
rm -rf "$ROOT"
mkdir -p "$ROOT"
tar -x -C "$ROOT" -f "$BASE"

# What the maintainer scripts would have done, as far as booting systemd needs it.
configure_root() {
    cp "$ROOT/usr/share/base-passwd/passwd.master" "$ROOT/etc/passwd"
    cp "$ROOT/usr/share/base-passwd/group.master" "$ROOT/etc/group"
    sed 's/:.*//; s/$/:*:19000:0:99999:7:::/' "$ROOT/etc/passwd" > "$ROOT/etc/shadow"
    chmod 640 "$ROOT/etc/shadow"
    echo tidelet-systemd > "$ROOT/etc/hostname"
    printf '127.0.0.1\tlocalhost tidelet-systemd\n' > "$ROOT/etc/hosts"
    # Read-only root: a fixed machine id (systemd would otherwise want to write one).
    echo 7e1de1e7000000000000000000000001 > "$ROOT/etc/machine-id"
    : > "$ROOT/etc/resolv.conf"
    chroot "$ROOT" /sbin/ldconfig
    chroot "$ROOT" /bin/systemd-sysusers >/dev/null 2>&1
    chroot "$ROOT" /bin/systemd-tmpfiles --create --prefix=/var --prefix=/etc 2>/dev/null || true
    # Only what the test needs: no gettys on the console, nothing that writes to /var.
    for u in getty.target serial-getty@.service getty@.service systemd-random-seed.service \
             systemd-update-utmp.service systemd-update-utmp-runlevel.service \
             systemd-journal-flush.service systemd-pstore.service apt-daily.timer \
             apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
             fstrim.timer systemd-firstboot.service systemd-machine-id-commit.service; do
        ln -sf /dev/null "$ROOT/etc/systemd/system/$u"
    done
    ln -sf /lib/systemd/system/multi-user.target "$ROOT/etc/systemd/system/default.target"
    # iptables' postinst: the alternatives (iptables-nft, Debian 12's default).
    mkdir -p "$ROOT/etc/alternatives"
    for t in iptables iptables-restore iptables-save ip6tables ip6tables-restore ip6tables-save; do
        ln -sf "/usr/sbin/${t%%-*}-nft${t#"${t%%-*}"}" "$ROOT/etc/alternatives/$t"
        ln -sf "/etc/alternatives/$t" "$ROOT/usr/sbin/$t"
    done
}
configure_root

# tidelet, installed as the Yocto recipe installs it.
install -D -m 755 "$TIDELET_BIN" "$ROOT/usr/bin/tidelet"
install -D -m 644 "$REPO/dist/systemd/tidelet.service" "$ROOT/lib/systemd/system/tidelet.service"
install -D -m 644 "$REPO/dist/tidelet.yaml" "$ROOT/etc/tidelet/config.yaml"
mkdir -p "$ROOT/etc/systemd/system/multi-user.target.wants" "$ROOT/var/lib/tidelet"
ln -sf /lib/systemd/system/tidelet.service \
    "$ROOT/etc/systemd/system/multi-user.target.wants/tidelet.service"
# The test: a static pod baked into the read-only image, the image archive, the units.
install -D -m 644 "$HERE/guest/web.yaml" "$ROOT/etc/tidelet/manifests/web.yaml"
install -D -m 644 "$IMAGE" "$ROOT/usr/share/tidelet-test/busybox.oci.tar"
install -D -m 755 "$HERE/guest/vmtest.sh" "$ROOT/usr/local/sbin/tidelet-vmtest"
for u in tidelet-import.service tidelet-vmtest.service; do
    install -m 644 "$HERE/guest/$u" "$ROOT/etc/systemd/system/$u"
    ln -sf "/etc/systemd/system/$u" "$ROOT/etc/systemd/system/multi-user.target.wants/$u"
done
install -m 644 "$HERE/guest/fstab" "$ROOT/etc/fstab"

# ---- ext4 image from the tree (no loop mount); sparse, with room to spare.
SIZE_MB=$(( $(du -sm "$ROOT" | cut -f1) * 5 / 4 + 64 ))
rm -f "$OUTDIR/rootfs.ext4.tmp"
mke2fs -q -t ext4 -L tidelet-root -d "$ROOT" "$OUTDIR/rootfs.ext4.tmp" "${SIZE_MB}M" >&2
mv "$OUTDIR/rootfs.ext4.tmp" "$OUTDIR/rootfs.ext4"
rm -rf "$ROOT"
cp "$KDIR/boot/vmlinuz-$KVER" "$OUTDIR/vmlinuz"
echo "$KEY" > "$OUTDIR/key"
printf '%s\n' "$OUTDIR/vmlinuz" "$OUTDIR/initrd.gz" "$OUTDIR/rootfs.ext4"
