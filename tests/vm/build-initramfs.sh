#!/usr/bin/env bash
# Build the kernel and initramfs of tidelet's VM test (tests/vm/main.rs) for one guest
# architecture:
#   OUTDIR/vmlinuz             Debian's kernel (linux-image-<version>-<flavour>); on x86_64
#                              its uncompressed ELF vmlinux instead, which QEMU boots through
#                              the PVH entry: that skips ~8 s of xz decompression under TCG
#   OUTDIR/initramfs.cpio.gz   busybox-static, tidelet and tidelet-generic-plugin (stripped)
#                              and their shared libraries and loader, Debian's CNI plugins
#                              (bridge host-local portmap bandwidth loopback, in /usr/lib/cni)
#                              and iptables-nft of the guest's architecture with theirs, the
#                              kernel modules the test needs ($MODULES below and
#                              their dependencies, with modules.dep from `depmod -b`), the
#                              busybox test image of the guest's architecture and the guest
#                              scripts (/init, /stage2, /devices.sh, /security.sh,
#                              /pods/*.yaml)
# and prints those two paths. The result is cached: it is rebuilt only when an input changed
# (the scripts, the tidelet and plugin binaries, the kernel version, busybox, the test image,
# the CNI plugins and iptables).
#
# Architecture-specific values live in one table below (ARCH: x86_64 or aarch64). For a guest
# that is not the host's architecture, TIDELET_BIN and TIDELET_PLUGIN_BIN are cross-built
# binaries (for aarch64: scripts/cross-build.sh); their shared libraries are found from their
# NEEDED entries (readelf,
# recursively) in the cross libraries of Debian (libc6-arm64-cross, or the :arm64 multiarch
# packages), and the Debian packages of that architecture need `dpkg --add-architecture`,
# which this script does if missing.
#
# Environment: TIDELET_BIN (default: target/debug/tidelet), TIDELET_PLUGIN_BIN (the generic
# device plugin; default: target/debug/tidelet-generic-plugin), TEST_IMAGES_DIR (default:
# target/test-images, or OUTDIR/cache/test-images for a foreign guest; built by
# images/build-test-images.sh), STRIP (default: strip, or TRIPLE-strip for a foreign guest;
# a binary it cannot strip is shipped as it is).
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 OUTDIR ARCH   (ARCH: x86_64 | aarch64)" >&2
    exit 2
fi
OUTDIR=$1
ARCH=$2
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

# ---- the architecture table: Debian architecture, kernel flavour, console driver, GNU triple
# (where Debian puts that architecture's libraries).
case "$ARCH" in
    # KERNEL: how QEMU gets the kernel: as packaged (arm64's is an uncompressed Image already)
    # or as the ELF vmlinux inside the bzImage, booted via PVH (needs CONFIG_PVH).
    x86_64)  DEB_ARCH=amd64; FLAVOUR=amd64; CONSOLE_OPT=SERIAL_8250_CONSOLE; TRIPLE=x86_64-linux-gnu
             ELF_MACHINE=X86-64; KERNEL=pvh-vmlinux ;;
    aarch64) DEB_ARCH=arm64; FLAVOUR=arm64; CONSOLE_OPT=SERIAL_AMBA_PL011_CONSOLE; TRIPLE=aarch64-linux-gnu
             ELF_MACHINE=AArch64; KERNEL=as-packaged ;;
    *) echo "$0: unknown ARCH $ARCH (x86_64 | aarch64)" >&2; exit 2 ;;
esac
# The kernel modules the guest loads (stage2 modprobes each): overlay for the rootfs, and for
# networking virtio_pci + virtio_net (the NIC), veth and bridge (pod networks), tun (the
# driver of char 10:200, the device the device-plugin stage hands to a pod); then $NF_MODULES,
# what iptables-nft needs for the agent's masquerade and forward rules and for portmap's
# (nf_tables with nft_compat for the xt matches and targets, the nat chain type, conntrack,
# comment, MASQUERADE and DNAT (xt_nat), addrtype, mark/MARK, multiport, tcp/udp), with
# crc32c_generic first: libcrc32c (nf_tables, nf_conntrack and nf_nat need it) only names it as
# a `softdep`, which busybox's modprobe does not follow, and fails to load without it. Their
# dependencies are added from the modules' own `depends`.
NF_MODULES="crc32c_generic nf_tables nft_compat nft_chain_nat nf_nat nf_conntrack xt_conntrack xt_comment xt_MASQUERADE xt_nat xt_addrtype xt_mark xt_multiport xt_tcpudp"
MODULES="overlay virtio_pci virtio_net veth bridge tun $NF_MODULES"
HOST_DEB_ARCH=$(dpkg --print-architecture)
PKG_SUFFIX=""
[ "$DEB_ARCH" = "$HOST_DEB_ARCH" ] || PKG_SUFFIX=":$DEB_ARCH"

TIDELET_BIN=${TIDELET_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/debug/tidelet}
PLUGIN_BIN=${TIDELET_PLUGIN_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/debug/tidelet-generic-plugin}
if [ -z "$PKG_SUFFIX" ]; then STRIP=${STRIP:-strip}; else STRIP=${STRIP:-$TRIPLE-strip}; fi
[ -x "$TIDELET_BIN" ] || { echo "$0: $TIDELET_BIN missing: run cargo build first (or set TIDELET_BIN)" >&2; exit 1; }
[ -x "$PLUGIN_BIN" ] || { echo "$0: $PLUGIN_BIN missing: run cargo build first (or set TIDELET_PLUGIN_BIN)" >&2; exit 1; }
BINS=("$TIDELET_BIN" "$PLUGIN_BIN")

# apt, serialised: the x86_64 and aarch64 tests build their guests at the same time, and two
# `apt-get update`s at once fail on apt's lock.
APT_LOCK=${TMPDIR:-/tmp}/tidelet-vm-apt.lock
apt_locked() { flock -w 300 "$APT_LOCK" "$@" -o DPkg::Lock::Timeout=120; }
apt_updated=no
apt_update() {
    if [ $apt_updated = no ]; then
        apt_locked apt-get update -qq >&2
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
    DEBIAN_FRONTEND=noninteractive apt_locked apt-get install -y -qq "${need[@]}" >&2
fi
DEPMOD=$(command -v depmod || echo /sbin/depmod)
MODINFO=$(command -v modinfo || echo /sbin/modinfo)
# A foreign guest's packages (kernel, busybox) need its dpkg architecture (never armhf here:
# its index on the mirror is broken).
if [ -n "$PKG_SUFFIX" ] && ! dpkg --print-foreign-architectures | grep -qx "$DEB_ARCH"; then
    echo "adding the dpkg architecture $DEB_ARCH" >&2
    dpkg --add-architecture "$DEB_ARCH"
    apt_updated=no
    apt_update
fi

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
# The host's test images are the e2e tests' too; a foreign guest's are cached with its kernel.
if [ -z "$PKG_SUFFIX" ]; then
    TEST_IMAGES_DIR=${TEST_IMAGES_DIR:-$REPO/target/test-images}
else
    TEST_IMAGES_DIR=${TEST_IMAGES_DIR:-$CACHE/test-images}
fi
# One build at a time per OUTDIR (two test runs may share a target dir).
exec 9>"$OUTDIR/.lock"
flock 9

# ---- download the kernel package once, keep the kernel, its config and the modules the guest
# needs (the closure of $MODULES over their `depends`), drop the rest.
KDIR=$CACHE/kernel-$KVER
if [ "$(cat "$KDIR/.done" 2>/dev/null)" != "$MODULES" ]; then
    rm -rf "$CACHE"/kernel-* "$CACHE"/linux-image-*.deb   # older kernel versions too
    mkdir -p "$KDIR"
    (cd "$CACHE" && apt-get download "$KPKG$PKG_SUFFIX" >&2) || {
        apt_update
        (cd "$CACHE" && apt-get download "$KPKG$PKG_SUFFIX" >&2)
    }
    DEB=$(ls "$CACHE"/"${KPKG}"_*.deb)
    ALL=$CACHE/all-modules
    rm -rf "$ALL" && mkdir -p "$ALL"
    # One pass (xz is the slow part) for the kernel, its config and the module directories
    # where $MODULES and their dependencies live (files, not subdirectories: drivers/net/*
    # without wireless/); the whole module tree only if the closure needs more.
    K=./lib/modules/$KVER
    dpkg-deb --fsys-tarfile "$DEB" | tar -x -C "$ALL" --wildcards --no-wildcards-match-slash \
        './boot/vmlinuz-*' './boot/config-*' "$K/modules.builtin*" "$K/modules.order" \
        "$K/kernel/fs/overlayfs/*" "$K/kernel/drivers/net/*" "$K/kernel/drivers/virtio/*" \
        "$K/kernel/net/*/*" "$K/kernel/net/*/netfilter/*" "$K/kernel/crypto/crc32c*" \
        2>/dev/null || true   # a pattern may match nothing: checked below
    ls "$ALL"/boot/vmlinuz-* "$ALL/$K/modules.builtin" >/dev/null \
        || { echo "$0: $DEB: no kernel or modules.builtin" >&2; exit 1; }
    mkdir -p "$KDIR/boot" "$KDIR/$K"
    mv "$ALL"/boot/* "$KDIR/boot/"
    mv "$ALL/$K"/modules.builtin* "$ALL/$K/modules.order" "$KDIR/$K/"
    # closure: copy $MODULES and their `depends` from $ALL to $KDIR; prints the names it found
    # neither there nor built in.
    closure() {
        # name -> path of every module extracted (module names use _ where files may use -).
        declare -A KO=()
        while IFS= read -r f; do
            n=${f##*/}; n=${n%%.ko*}; KO[${n//-/_}]=$f
        done < <(cd "$ALL" && find . -name '*.ko*')
        local todo=($MODULES) m f deps
        declare -A seen=()
        while [ ${#todo[@]} -gt 0 ]; do
            m=${todo[0]//-/_}; todo=("${todo[@]:1}")
            [ -z "${seen[$m]:-}" ] || continue
            seen[$m]=1
            f=${KO[$m]:-}
            if [ -z "$f" ]; then
                # Built in: nothing to ship, modprobe finds it in modules.builtin.
                grep -q "/$m.ko" "$KDIR/$K/modules.builtin" || echo "$m"
                continue
            fi
            mkdir -p "$KDIR/$(dirname "$f")"
            cp "$ALL/$f" "$KDIR/$f"
            deps=$("$MODINFO" -F depends "$ALL/$f")
            [ -z "$deps" ] || todo+=(${deps//,/ })
        done
    }
    missing=$(closure)
    if [ -n "$missing" ]; then
        echo "kernel $KVER: $(echo $missing) outside the usual directories; extracting every module" >&2
        dpkg-deb --fsys-tarfile "$DEB" | tar -x -C "$ALL" "$K/kernel"
        missing=$(closure)
        [ -z "$missing" ] || { echo "$0: $KPKG has no module $(echo $missing), neither built in nor loadable" >&2; exit 1; }
    fi
    rm -f "$DEB"
    rm -rf "$ALL"
    echo "kernel $KVER: modules $(cd "$KDIR" && find . -name '*.ko*' -printf '%f ')" >&2
    echo "$MODULES" > "$KDIR/.done"
fi
KCONFIG=$KDIR/boot/config-$KVER
# What the test needs from the kernel: built in (y) or a module we ship (m; the serial console
# must be built in: it is needed before any module loads).
grep -q "^CONFIG_$CONSOLE_OPT=y$" "$KCONFIG" \
    || { echo "$0: $KCONFIG: CONFIG_$CONSOLE_OPT is not built in; no console for the test" >&2; exit 1; }
for opt in CGROUPS MEMCG CGROUP_SCHED FAIR_GROUP_SCHED CFS_BANDWIDTH CGROUP_PIDS PID_NS NET_NS \
           IPC_NS UTS_NS DEVTMPFS TMPFS BLK_DEV_INITRD RD_GZIP OVERLAY_FS \
           $([ "$KERNEL" = pvh-vmlinux ] && echo PVH); do
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
        (cd "$CACHE" && apt-get download "busybox-static$PKG_SUFFIX" >&2) || {
            apt_update
            (cd "$CACHE" && apt-get download "busybox-static$PKG_SUFFIX" >&2)
        }
        dpkg-deb --fsys-tarfile "$CACHE"/busybox-static_*.deb | tar -xO ./bin/busybox > "$BUSYBOX.tmp"
        chmod 755 "$BUSYBOX.tmp" && mv "$BUSYBOX.tmp" "$BUSYBOX"
        rm -f "$CACHE"/busybox-static_*.deb
    fi
fi

# ---- the test image archive (the images script is itself deterministic and cheap).
BUSYBOX=$BUSYBOX bash "$REPO/images/build-test-images.sh" "$TEST_IMAGES_DIR" "$ARCH" >/dev/null
IMAGE=$TEST_IMAGES_DIR/busybox.oci.tar

# ---- the binaries' shared libraries and loader (both link the same libc; each library once):
# LIB_SRC[i] on this host goes to LIB_DST[i] in the guest, at the paths the dynamic linker
# looks for them.
LIB_SRC=(); LIB_DST=()
declare -A shipped=()
if [ -z "$PKG_SUFFIX" ]; then
    for bin in "${BINS[@]}"; do
        for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
            [ -z "${shipped[$lib]:-}" ] || continue
            shipped[$lib]=1
            LIB_SRC+=("$lib"); LIB_DST+=("$lib")
        done
    done
else
    # Cross-built binaries: their program interpreter and, recursively, their NEEDED
    # libraries, from the guest architecture's library directories; in the guest they go to
    # /lib/TRIPLE, where the loader looks first.
    for bin in "${BINS[@]}"; do
        machine=$(readelf -h "$bin" | sed -n 's/^ *Machine: *//p')
        case "$machine" in
            *"$ELF_MACHINE"*) ;;
            *) echo "$0: $bin is not an $ARCH binary (ELF machine: $machine)" >&2; exit 1 ;;
        esac
    done
    LIBDIRS="/usr/$TRIPLE/lib /usr/lib/$TRIPLE /lib/$TRIPLE"
    find_lib() {
        for d in $LIBDIRS; do
            [ -e "$d/$1" ] && { echo "$d/$1"; return 0; }
        done
        echo "$0: $1 (needed by $2) not found in $LIBDIRS: install libc6-$DEB_ARCH-cross (scripts/cross-build.sh does)" >&2
        return 1
    }
    for bin in "${BINS[@]}"; do
        INTERP=$(readelf -l "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
        if [ -n "$INTERP" ] && [ -z "${shipped[$INTERP]:-}" ]; then
            shipped[$INTERP]=1
            src=$(find_lib "$(basename "$INTERP")" "$bin")
            LIB_SRC+=("$src"); LIB_DST+=("$INTERP")
        fi
    done
    queue=("${BINS[@]}")
    while [ ${#queue[@]} -gt 0 ]; do
        obj=${queue[0]}; queue=("${queue[@]:1}")
        for lib in $(readelf -d "$obj" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
            [ -z "${shipped[$lib]:-}" ] || continue
            shipped[$lib]=1
            src=$(find_lib "$lib" "$obj")
            LIB_SRC+=("$src"); LIB_DST+=("/lib/$TRIPLE/$lib")
            queue+=("$src")
        done
    done
fi
echo "$ARCH: the libraries of tidelet and tidelet-generic-plugin: ${LIB_DST[*]}" >&2

# ---- pod networking (the agent's built-in CNI network): Debian's containernetworking-plugins
# of the guest's architecture, only the plugins that network runs (installed in /usr/lib/cni,
# one of the agent's default cniBinDirs), and iptables-nft (xtables-nft-multi, with
# /usr/sbin/iptables pointing at it as the alternatives would) with the xtables extensions it
# dlopens for the agent's rules (standard, comment, conntrack, MASQUERADE) and portmap's
# (addrtype, multiport, mark, MARK, DNAT, tcp, udp). Both are dynamically linked: their
# libraries (libxtables, libnftnl, libmnl from the same packages; libc and the loader as for
# tidelet) are resolved from NEEDED, recursively, and go to /lib/TRIPLE. The packages are
# downloaded once (`apt-get download`, whatever the host has installed) and cached, pruned to
# those files, in cache/net.
CNI_PLUGINS="bridge host-local portmap bandwidth loopback"
XT_EXTENSIONS="standard comment conntrack MASQUERADE NAT DNAT SNAT addrtype multiport mark MARK tcp udp"
NET_PKGS="containernetworking-plugins iptables libxtables12 libnftnl11 libmnl0"
NETDIR=$CACHE/net
NETROOT=$NETDIR/root
XTDIR=usr/lib/$TRIPLE/xtables
if [ "$(cat "$NETDIR/.done" 2>/dev/null)" != "$NET_PKGS" ]; then
    rm -rf "$NETDIR"
    mkdir -p "$NETDIR/debs" "$NETROOT"
    pkgs=()
    for p in $NET_PKGS; do pkgs+=("$p$PKG_SUFFIX"); done
    (cd "$NETDIR/debs" && apt-get download "${pkgs[@]}" >&2) || {
        apt_update
        (cd "$NETDIR/debs" && apt-get download "${pkgs[@]}" >&2)
    }
    for d in "$NETDIR"/debs/*.deb; do dpkg-deb -x "$d" "$NETDIR/all"; done
    mkdir -p "$NETROOT/usr/lib/cni" "$NETROOT/usr/sbin" "$NETROOT/$XTDIR" "$NETROOT/lib/$TRIPLE"
    for p in $CNI_PLUGINS; do cp -a "$NETDIR/all/usr/lib/cni/$p" "$NETROOT/usr/lib/cni/"; done
    cp -a "$NETDIR/all/usr/sbin/xtables-nft-multi" "$NETROOT/usr/sbin/"
    for x in $XT_EXTENSIONS; do cp -a "$NETDIR/all/$XTDIR/libxt_$x.so" "$NETROOT/$XTDIR/"; done
    # (the libraries, wherever the package put them: /usr/lib/TRIPLE or /lib/TRIPLE)
    find "$NETDIR/all" -path "*/lib/$TRIPLE/lib*.so*" ! -type d -exec cp -a {} "$NETROOT/lib/$TRIPLE/" \;
    rm -rf "$NETDIR/debs" "$NETDIR/all"
    echo "$NET_PKGS" > "$NETDIR/.done"
fi
NET_BINS=()
for p in $CNI_PLUGINS; do NET_BINS+=("$NETROOT/usr/lib/cni/$p"); done
NET_BINS+=("$NETROOT/usr/sbin/xtables-nft-multi")
for x in $XT_EXTENSIONS; do
    [ -L "$NETROOT/$XTDIR/libxt_$x.so" ] || NET_BINS+=("$NETROOT/$XTDIR/libxt_$x.so")
done
# Their loader and libraries, each once (what tidelet's already ship is not shipped again).
declare -A dst_shipped=()
for d in "${LIB_DST[@]}"; do dst_shipped[$d]=1; done
if [ -z "$PKG_SUFFIX" ]; then
    NET_LIBDIRS="$NETROOT/lib/$TRIPLE /lib/$TRIPLE /usr/lib/$TRIPLE"
else
    NET_LIBDIRS="$NETROOT/lib/$TRIPLE /usr/$TRIPLE/lib /usr/lib/$TRIPLE /lib/$TRIPLE"
fi
net_lib() {
    for d in $NET_LIBDIRS; do
        [ -e "$d/$1" ] && { echo "$d/$1"; return 0; }
    done
    echo "$0: $1 (needed by $2) not found in $NET_LIBDIRS" >&2
    return 1
}
queue=("${NET_BINS[@]}")
while [ ${#queue[@]} -gt 0 ]; do
    obj=${queue[0]}; queue=("${queue[@]:1}")
    INTERP=$(readelf -l "$obj" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
    if [ -n "$INTERP" ] && [ -z "${dst_shipped[$INTERP]:-}" ]; then
        dst_shipped[$INTERP]=1
        if [ -z "$PKG_SUFFIX" ]; then src=$INTERP; else src=$(net_lib "$(basename "$INTERP")" "$obj"); fi
        LIB_SRC+=("$src"); LIB_DST+=("$INTERP")
    fi
    for lib in $(readelf -d "$obj" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        dst=/lib/$TRIPLE/$lib
        [ -z "${dst_shipped[$dst]:-}" ] || continue
        dst_shipped[$dst]=1
        src=$(net_lib "$lib" "$obj")
        LIB_SRC+=("$src"); LIB_DST+=("$dst")
        queue+=("$src")
    done
done
echo "$ARCH: with the CNI plugins and iptables: ${LIB_DST[*]}" >&2

# ---- cache key over every input.
KEY=$( {
    echo "arch=$ARCH kernel=$KPKG modules=$MODULES libs=${LIB_DST[*]} net=$NET_PKGS"
    sha256sum "$HERE/build-initramfs.sh" "$HERE/init" "$HERE/stage2" "$HERE/devices.sh" \
        "$HERE/security.sh" "$HERE"/pods/*.yaml "${NET_BINS[@]}" \
        "$TIDELET_BIN" "$PLUGIN_BIN" "$BUSYBOX" "$IMAGE" "$KDIR/boot/vmlinuz-$KVER" "${LIB_SRC[@]}" \
        | cut -d' ' -f1
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
"$STRIP" -o "$STAGE/bin/tidelet-generic-plugin" "$PLUGIN_BIN" 2>/dev/null \
    || cp "$PLUGIN_BIN" "$STAGE/bin/tidelet-generic-plugin"
chmod 755 "$STAGE/bin/tidelet-generic-plugin"
for i in "${!LIB_SRC[@]}"; do
    mkdir -p "$STAGE$(dirname "${LIB_DST[$i]}")"
    cp -L "${LIB_SRC[$i]}" "$STAGE${LIB_DST[$i]}"
done

# The CNI plugins and iptables-nft (its extensions with their symlinks, e.g. libxt_MASQUERADE.so
# -> libxt_NAT.so); /usr/sbin/iptables as the alternatives system links it.
mkdir -p "$STAGE/usr/lib/cni" "$STAGE/$XTDIR"
cp -a "$NETROOT/usr/lib/cni/." "$STAGE/usr/lib/cni/"
cp -a "$NETROOT/$XTDIR/." "$STAGE/$XTDIR/"
install -m 755 "$NETROOT/usr/sbin/xtables-nft-multi" "$STAGE/usr/sbin/xtables-nft-multi"
ln -s xtables-nft-multi "$STAGE/usr/sbin/iptables"

# Kernel modules, with modules.dep for modprobe.
MODS=$STAGE/lib/modules/$KVER
mkdir -p "$MODS"
cp -a "$KDIR/lib/modules/$KVER/." "$MODS/"
"$DEPMOD" -b "$STAGE" "$KVER"

cp "$IMAGE" "$STAGE/images/busybox.oci.tar"
cp "$HERE"/pods/*.yaml "$STAGE/pods/"
install -m 755 "$HERE/init" "$STAGE/init"
install -m 755 "$HERE/stage2" "$STAGE/stage2"
install -m 644 "$HERE/devices.sh" "$STAGE/devices.sh"
install -m 644 "$HERE/security.sh" "$STAGE/security.sh"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$STAGE/etc/passwd"
printf 'root:x:0:\n' > "$STAGE/etc/group"
printf '127.0.0.1\tlocalhost\n' > "$STAGE/etc/hosts"
printf 'nameserver 127.0.0.1\n' > "$STAGE/etc/resolv.conf"
echo tidelet-vm > "$STAGE/etc/hostname"

# ---- pack: newc cpio, root-owned, sorted for a stable archive; gzip -1 boots fastest.
(cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) \
    | gzip -1 > "$OUTDIR/initramfs.cpio.gz.tmp"
mv "$OUTDIR/initramfs.cpio.gz.tmp" "$OUTDIR/initramfs.cpio.gz"
if [ "$KERNEL" = pvh-vmlinux ]; then
    # The bzImage's payload is the xz-compressed ELF vmlinux (Debian: CONFIG_KERNEL_XZ).
    python3 - "$KDIR/boot/vmlinuz-$KVER" "$OUTDIR/vmlinuz.tmp" <<'PY'
import lzma, sys
data = open(sys.argv[1], "rb").read()
at = data.find(b"\xfd7zXZ\x00")
if at < 0:
    sys.exit(f"{sys.argv[1]}: no xz payload (CONFIG_KERNEL_XZ?); cannot extract vmlinux")
elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[at:])
if elf[:4] != b"\x7fELF":
    sys.exit(f"{sys.argv[1]}: the xz payload is not an ELF vmlinux")
open(sys.argv[2], "wb").write(elf)
PY
    mv "$OUTDIR/vmlinuz.tmp" "$OUTDIR/vmlinuz"
else
    cp "$KDIR/boot/vmlinuz-$KVER" "$OUTDIR/vmlinuz"
fi
cp "$KCONFIG" "$OUTDIR/config"
rm -rf "$STAGE"
echo "$KEY" > "$OUTDIR/key"
echo "$OUTDIR/vmlinuz"
echo "$OUTDIR/initramfs.cpio.gz"
