# The kernel options tidelet needs (linux-yocto/tidelet.cfg), for distros that opt in with
#   DISTRO_FEATURES:append = " tidelet"
# Adding the layer alone leaves the kernel as it is: a Yocto Project compatible layer must not
# change other layers' recipes merely by being included. (The conditional require of
# meta-virtualization's linux-yocto bbappend; the "off" branch names an .inc that sets
# nothing rather than an empty string, which oelint-adv misreads as a trailing space.)
require ${@bb.utils.contains('DISTRO_FEATURES', 'tidelet', 'linux-yocto-tidelet.inc', 'linux-yocto-tidelet-off.inc', d)}
