# nooelint: oelint.var.bbclassextend - a node agent for the target only: no -native or nativesdk use
SUMMARY = "Kubelet-like node agent for embedded Linux"
DESCRIPTION = "tidelet watches a static-pod directory and runs Kubernetes Pods itself, \
               with Linux namespaces, cgroups (v1 and v2) and an overlayfs rootfs unpacked \
               from OCI images: no cluster and no container runtime, one binary. It runs as \
               a systemd service (Type=notify, watchdog, delegated cgroup subtree)."
# nooelint: oelint.vars.homepageping - placeholder until the project has a public home (and CI reaches no other hosts)
HOMEPAGE = "https://git.example.com/tidelet"
BUGTRACKER = "https://git.example.com/tidelet/issues"
SECTION = "admin"
CVE_PRODUCT = "tidelet"

# Apache-2.0, as Cargo.toml's [workspace.package] says; LICENSE holds the text.
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

# Placeholder: point TIDELET_GIT_URI at the repository you build from (a mirror, or your
# fork), and SRCREV at the commit whose Cargo.lock tidelet-crates.inc was generated from.
# To build a local checkout instead, see README.md (devtool modify, or externalsrc).
TIDELET_GIT_URI ??= "git://git.example.com/tidelet.git;protocol=https"
# destsuffix=${BP} unpacks the checkout where S points by default on every supported release
# (scarthgap: ${WORKDIR}/${BP}; whinlatter and later: ${UNPACKDIR}/${BP}), so S is not set.
SRC_URI = "${TIDELET_GIT_URI};branch=main;destsuffix=${BP}"
SRCREV = "ebdd9015dd4c7146bd3856d93cbaafdafd542e9c"

inherit cargo cargo-update-recipe-crates systemd

# Every crates.io crate in Cargo.lock with its checksum; regenerate with
# scripts/yocto-crates.py (or `bitbake -c update_crates tidelet`) after Cargo.lock changes.
require ${BPN}-crates.inc

# Cargo.toml at the top is a workspace; build only the agent's package. The lock file is the
# workspace's, not one beside agent/Cargo.toml.
CARGO_SRC_DIR = "agent"
CARGO_LOCK_PATH = "${S}/Cargo.lock"
CARGO_LOCK_SRC_DIR = "${S}"

# The release profile strips the binary (strip = true, for `cross` builds); let OE strip it
# instead, so tidelet-dbg gets the symbols and the already-stripped QA check passes.
export CARGO_PROFILE_RELEASE_STRIP = "false"

do_install:append() {
    install -d ${D}${sysconfdir}/tidelet/manifests
    # The unit's Documentation= points here (packaged in tidelet-doc).
    install -d ${D}${docdir}/${BPN}
    install -m 0644 ${S}/README.md ${D}${docdir}/${BPN}/README.md
    install -m 0644 ${S}/dist/tidelet.yaml ${D}${sysconfdir}/tidelet/config.yaml
    if ${@bb.utils.contains('DISTRO_FEATURES', 'systemd', 'true', 'false', d)}; then
        install -d ${D}${systemd_system_unitdir}
        install -m 0644 ${S}/dist/systemd/tidelet.service ${D}${systemd_system_unitdir}/tidelet.service
    fi
}

SYSTEMD_SERVICE:${PN} = "tidelet.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

# cargo_do_install also installs the agent's library crate (libtidelet.rlib) in ${rustlibdir};
# the cargo class packages it in tidelet-dev, which images do not install.

# Keep a board engineer's edits to the configuration across package upgrades.
CONFFILES:${PN} = "${sysconfdir}/tidelet/config.yaml"

# The binary needs only glibc (found by the shlib scan). The kernel features it uses are
# set by recipes-kernel/linux/linux-yocto/tidelet.cfg; a kernel that builds them as modules
# packages them as kernel-module-*, recommended here so they are installed when they exist
# (RRECOMMENDS, because a kernel with them built in has no such packages).
RRECOMMENDS:${PN} += "kernel-module-bridge kernel-module-overlay kernel-module-veth"
