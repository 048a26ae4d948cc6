# nooelint: oelint.var.bbclassextend - a node agent for the target only: no -native or nativesdk use
SUMMARY = "Kubelet-like node agent for embedded Linux"
SUMMARY:${PN}-gpu-plugin = "tidelet's Kubernetes device plugin for GPUs"
SUMMARY:${PN}-generic-plugin = "tidelet's Kubernetes device plugin for devices chosen by globs"
SUMMARY:${PN}-fleet = "tidelet's fleet CLI for operators (tidelet-fleet)"
DESCRIPTION = "tidelet watches a static-pod directory and runs Kubernetes Pods itself, \
               with Linux namespaces, cgroups (v1 and v2) and an overlayfs rootfs unpacked \
               from OCI images: no cluster and no container runtime, one binary. It runs as \
               a systemd service (Type=notify, watchdog, delegated cgroup subtree). \
               The packages tidelet-gpu-plugin and tidelet-generic-plugin hold its \
               Kubernetes device plugins (GPUs; serial, video, GPIO, I2C devices), and \
               tidelet-fleet the operator's fleet CLI, which boards do not need."
DESCRIPTION:${PN}-gpu-plugin = "Advertises NVIDIA GPUs (nvidia.com/gpu) and DRM render \
                                nodes (dri.tidelet.io/<driver>) over the device-plugin API \
                                v1beta1, to tidelet or to a kubelet."
DESCRIPTION:${PN}-fleet = "The control plane's view of a fleet of tidelet nodes over MQTT: \
                           nodes, pods, apply, delete, watch (also run as tidelet fleet)."
DESCRIPTION:${PN}-generic-plugin = "Advertises the device nodes matched by the glob groups of \
                                    /etc/tidelet/generic-devices.yaml (serial, video, GPIO, \
                                    I2C...) over the device-plugin API v1beta1, with hot-plug, \
                                    to tidelet or to a kubelet."
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

# Pod networks: tidelet runs the CNI plugins (bridge, host-local, portmap, bandwidth,
# loopback) of meta-virtualization's cni recipe, found in /opt/cni/bin, and iptables for its
# network's masquerade and forward rules; with them the kernel's netfilter, NAT and traffic
# control modules where the kernel builds those as modules. A board whose pods all use
# hostNetwork can go without: PACKAGECONFIG:remove:pn-tidelet = "cni".
PACKAGECONFIG ??= "cni"
PACKAGECONFIG[cni] = ",,,cni iptables,kernel-module-nf-nat kernel-module-nf-conntrack kernel-module-xt-masquerade kernel-module-xt-conntrack kernel-module-xt-comment kernel-module-sch-tbf kernel-module-ifb"

# Cargo.toml at the top is a workspace (CARGO_SRC_DIR keeps its default, the top). One cargo
# invocation builds the agent and the two device plugins: they share their dependencies
# (tokio, tonic, prost...), which are compiled once, and they come from the one Cargo.lock
# that tidelet-crates.inc lists. The plugins are packaged apart (PACKAGE_BEFORE_PN below), so
# an image takes only what it needs, a plugin without the agent included (for a kubelet).
CARGO_BUILD_FLAGS:append = " -p tidelet -p tidelet-gpu-plugin -p tidelet-generic-plugin"
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
        install -m 0644 ${S}/dist/systemd/tidelet-gpu-plugin.service ${D}${systemd_system_unitdir}/tidelet-gpu-plugin.service
        install -m 0644 ${S}/dist/systemd/tidelet-generic-plugin.service ${D}${systemd_system_unitdir}/tidelet-generic-plugin.service
    fi
    install -m 0644 ${S}/dist/generic-devices.yaml ${D}${sysconfdir}/tidelet/generic-devices.yaml
}

# The device plugins and the operator's fleet CLI, each in its own package (cargo_do_install
# put their binaries in ${bindir} beside tidelet's). Listed before ${PN}, so they take their
# files first: a board image gets the fleet CLI only if it asks for tidelet-fleet.
PACKAGE_BEFORE_PN = "${PN}-gpu-plugin ${PN}-generic-plugin ${PN}-fleet"
FILES:${PN}-fleet += "${bindir}/tidelet-fleet"
FILES:${PN}-gpu-plugin += "${bindir}/tidelet-gpu-plugin \
                           ${systemd_system_unitdir}/tidelet-gpu-plugin.service"
FILES:${PN}-generic-plugin += "${bindir}/tidelet-generic-plugin \
                               ${systemd_system_unitdir}/tidelet-generic-plugin.service \
                               ${sysconfdir}/tidelet/generic-devices.yaml"

SYSTEMD_PACKAGES = "${PN} ${PN}-gpu-plugin ${PN}-generic-plugin"
SYSTEMD_SERVICE:${PN} = "tidelet.service"
SYSTEMD_SERVICE:${PN}-gpu-plugin = "tidelet-gpu-plugin.service"
SYSTEMD_SERVICE:${PN}-generic-plugin = "tidelet-generic-plugin.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"
SYSTEMD_AUTO_ENABLE:${PN}-gpu-plugin = "enable"
SYSTEMD_AUTO_ENABLE:${PN}-generic-plugin = "enable"

# cargo_do_install also installs the agent's library crate (libtidelet.rlib) in ${rustlibdir};
# the cargo class packages it in tidelet-dev, which images do not install.

# Keep a board engineer's edits to the configurations across package upgrades.
CONFFILES:${PN} = "${sysconfdir}/tidelet/config.yaml"
CONFFILES:${PN}-generic-plugin = "${sysconfdir}/tidelet/generic-devices.yaml"

# The binary needs only glibc (found by the shlib scan). The kernel features it uses are
# set by recipes-kernel/linux/linux-yocto/tidelet.cfg; a kernel that builds them as modules
# packages them as kernel-module-*, recommended here so they are installed when they exist
# (RRECOMMENDS, because a kernel with them built in has no such packages).
RRECOMMENDS:${PN} += "kernel-module-bridge kernel-module-overlay kernel-module-veth"

