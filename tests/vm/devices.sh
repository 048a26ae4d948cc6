# The device-plugin stage of the VM test (issue 6), sourced by stage2 (it uses say, tl,
# pod_json, within, uptime_s, $ROOT, $NODE, $MANIFESTS, $AGENT_LOG and $PLUGIN from there)
# while the first agent runs with its five pods, and checked by tests/vm/devices.rs.
# tidelet-generic-plugin, started with the agent, hands the guest's /devtest/ttyUSB0 (char
# 10:200) out as `tidelet.io/serial`.
# Two pods: dev-yes asks for one and opens /dev/ttyUSB0 read-write; dev-no asks for nothing,
# makes /dev/x with the same numbers and must get EPERM from the eBPF device program tidelet
# attached to its cgroup (cgroup v2 has no devices.allow files: that program is the only thing
# that can deny it). The containers print `devices.*` lines, read here from their CRI logs
# (files, not CLI calls: under TCG every tidelet call costs a few hundred ms). A stage that
# goes wrong is reported in markers, not by ending the guest: the other stages still run.
# `devices_after_removal` runs once stage2 removed every pod: the allocation freed, the plugin
# stopped (SIGTERM, exit 0).

# dev_out POD: the message parts of what the container of POD-$NODE printed (its CRI log).
dev_out() {
    cat "$ROOT"/logs/default_"$1"-"$NODE"_*/app/0.log 2>/dev/null \
        | sed -n 's/^[^ ]* std[a-z]* [FP] //p'
}
# open_rw PATH: ok, EPERM, or the shell's error (busybox: "can't open ...: <strerror>").
open_rw() {
    if err=$( (exec 3<>"$1") 2>&1 ); then
        echo ok
    else
        case "$err" in *"Operation not permitted"*) echo EPERM ;; *) echo "error: $err" ;; esac
    fi
}

say "devices.start_at=$(uptime_s)"
# The control: PID 1 (in init.scope, where no device program is attached) opens the node, so
# the driver (tun) is there and a denial in a container is the cgroup's doing.
say "devices.host.open=$(open_rw /devtest/ttyUSB0)"
serial_listed() { grep -q 'device list.*tidelet.io/serial' "$AGENT_LOG"; }
yes_done() { dev_out dev-yes | grep -qx 'devices.yes.done'; }
no_done() { dev_out dev-no | grep -qx 'devices.no.done'; }
DEV_OK=yes
if within 20 serial_listed; then
    say "devices.registered_seen_at=$(uptime_s)"
    cp /pods/dev-yes.yaml /pods/dev-no.yaml "$MANIFESTS/"
    within 60 yes_done || { say "devices.timeout=dev-yes"; DEV_OK=no; }
    within 20 no_done || { say "devices.timeout=dev-no"; DEV_OK=no; }
else
    # (no resource: dev-yes would wait for one; the check names this marker first)
    say "devices.registered_seen_at=never"
    DEV_OK=no
fi
say "devices.reported_at=$(uptime_s)"
# (the pod's uid from its log directory's name, default_NAME_UID: the allocations' key)
DEV_YES_UID=$(ls -d "$ROOT"/logs/default_dev-yes-"$NODE"_* 2>/dev/null | head -n1 | sed 's/.*_//')
say "devices.yes.uid=$DEV_YES_UID"
for p in dev-yes dev-no; do
    dev_out "$p" | while IFS= read -r line; do
        case "$line" in devices.*) say "$line" ;; esac
    done
done
# Visibility: the resource and its device with its holder (`get node`), and the pod's devices
# (`describe pod`), each table line joined with `|`.
say "devices.get_node=$(tl get node 2>&1 | grep '^tidelet\.io/serial' | tr '\n' '|')"
say "devices.describe_yes=$(tl describe pod dev-yes-$NODE 2>&1 \
    | sed -n '/^Devices:/,/^Conditions:/p' | grep -v '^Conditions:' | tr '\n' '|')"
say "devices.plugin.comm=$(cat /proc/$PLUGIN/comm 2>/dev/null || echo gone)"
say "devices.plugin.rss_kib=$(awk '/^VmRSS:/ {print $2}' /proc/$PLUGIN/status 2>/dev/null)"
if [ $DEV_OK = no ]; then
    say "devices.yes.json=$(pod_json dev-yes-$NODE)"
    say "devices.no.json=$(pod_json dev-no-$NODE)"
    grep -i 'devic' "$AGENT_LOG" | tail -n 20 | sed 's/^/agent| /'
fi
echo "---- tidelet-generic-plugin log (last 20 lines) ----"
tail -n 20 /tmp/plugin.log | sed 's/^/plugin| /'
say "devices.done_at=$(uptime_s)"

# After stage2 removed every pod: dev-yes's allocation freed, and the plugin stops cleanly.
devices_after_removal() {
    # (the worker frees a pod's devices after its removal: the log line may trail the API)
    freed() { grep 'devices freed' "$AGENT_LOG" | grep -q "${DEV_YES_UID:-none}"; }
    within 5 freed || grep -i 'devic\|dev-yes' "$AGENT_LOG" | tail -n 20 | sed 's/^/agent| /'
    say "devices.freed_lines=$(grep 'devices freed' "$AGENT_LOG" | grep -c "${DEV_YES_UID:-none}")"
    kill -TERM "$PLUGIN"
    # (a plugin that ignores SIGTERM is killed after 10 s: exit 137, which the check rejects)
    ( sleep 10; kill -KILL "$PLUGIN" 2>/dev/null ) &
    guard=$!
    wait "$PLUGIN"
    say "devices.plugin.exit=$?"
    kill "$guard" 2>/dev/null
    say "devices.plugin.errors=$(grep -c 'ERROR' /tmp/plugin.log)"
}
