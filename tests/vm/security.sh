# The security stage of the VM test, sourced by stage2 (it uses say, pod_json, within,
# uptime_s, $ROOT, $NODE, $MANIFESTS, $CG and $AGENT_LOG from there) while the first agent runs,
# after the device stage; checked by tests/vm/security.rs. Pod `sec` (pods/security.yaml) has
# three containers that check themselves and print `key=value` lines, read here from their
# CRI logs and said as `security.CONTAINER.KEY=VALUE` markers: `plain` (a default container:
# containerd's capabilities, RuntimeDefault seccomp, runc's masked and read-only paths),
# `sysadmin` (CAP_SYS_ADMIN added: RuntimeDefault's capability rules let it unshare and
# mount) and `nomkdir` (a Localhost profile denying mkdir and mkdirat: only a filter with this
# architecture's syscall numbers refuses it). Before the pod, PID 1 says what this kernel has
# (the masked and read-only paths that exist) and tries the container's mounts and unshares
# itself (the control: a refusal inside is the confinement's, not the kernel's). A stage that
# goes wrong is reported in markers (`security.timeout=CONTAINER`, the pod's JSON), not by
# ending the guest; stage2 removes the pod with the others.

# sec_out CONTAINER: the message parts of what CONTAINER of pod sec-$NODE printed.
sec_out() {
    cat "$ROOT"/logs/default_sec-"$NODE"_*/"$1"/0.log 2>/dev/null \
        | sed -n 's/^[^ ]* std[a-z]* [FP] //p'
}
# present PATH...: those that exist here, space-separated.
present() { for p in "$@"; do [ -e "$p" ] && printf '%s ' "$p"; done; }
# host_mount NAME MOUNT-ARGS...: mounted or refused, for PID 1 (unmounted again at once).
host_mount() {
    name=$1; shift
    if mount "$@" /tmp/sec-mnt 2>/dev/null; then
        umount /tmp/sec-mnt
        say "security.host.$name=mounted"
    else
        say "security.host.$name=refused"
    fi
}

say "security.start_at=$(uptime_s)"
say "security.host.masked=$(present /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug \
    /proc/latency_stats /proc/timer_stats /proc/acpi /proc/asound /proc/scsi /sys/firmware \
    /sys/devices/virtual/powercap)"
say "security.host.ro=$(present /proc/sys /proc/bus /proc/fs /proc/irq /proc/sysrq-trigger)"
mkdir -p /tmp/sec-mnt
host_mount cgroupfs -t cgroup -o none,name=tidelet cgroup
host_mount cgroup2 -t cgroup2 none
host_mount procfs -t proc proc
unshare -U true 2>/dev/null && say security.host.userns=made || say security.host.userns=refused
unshare -m true 2>/dev/null && say security.host.mountns=made || say security.host.mountns=refused

# The Localhost profile, in kubelet's seccomp root (<rootDir>/seccomp). errnoRet 1 is EPERM.
mkdir -p "$ROOT/seccomp"
cat > "$ROOT/seccomp/deny-mkdir.json" <<'EOF'
{"defaultAction": "SCMP_ACT_ALLOW",
 "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
 "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
EOF
cp /pods/security.yaml "$MANIFESTS/"
SEC_OK=yes
for SEC_C in plain sysadmin nomkdir; do
    sec_done() { sec_out "$SEC_C" | grep -qx done; }
    within 30 sec_done || { say "security.timeout=$SEC_C"; SEC_OK=no; }
done
say "security.reported_at=$(uptime_s)"
for SEC_C in plain sysadmin nomkdir; do
    sec_out "$SEC_C" | while IFS= read -r line; do
        case "$line" in *=*) say "security.$SEC_C.$line" ;; esac
    done
done
# From outside: the plain container's processes (its cgroup's), as PID 1 sees them.
SEC_UID=$(ls -d "$ROOT"/logs/default_sec-"$NODE"_* 2>/dev/null | head -n1 | sed 's/.*_//')
SEC_PID=$(cat "$CG"/kubepods/*/pod"$SEC_UID"/plain/cgroup.procs 2>/dev/null | head -n1)
say "security.plain.host_view=$(grep -E '^(CapEff|Seccomp):' "/proc/${SEC_PID:-none}/status" 2>&1 \
    | tr -s '\t' ' ' | tr '\n' ' ')"
if [ $SEC_OK = no ]; then
    say "security.json=$(pod_json sec-$NODE)"
    grep "sec-$NODE" "$AGENT_LOG" | tail -n 20 | sed 's/^/agent| /'
fi
say "security.done_at=$(uptime_s)"
