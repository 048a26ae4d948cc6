#!/bin/sh
# The systemd VM test's checks, run by tidelet-vmtest.service after tidelet.service: the
# service is active (Type=notify), its pod runs in a cgroup inside the service's delegated
# subtree with limits, `systemctl restart tidelet` keeps the pod's process (same PID), the
# service is active again; the pod has an address of tidelet's built-in CNI network (bridge
# tidelet0, 10.87.0.0/16: Debian's plugins, iptables-nft) on its eth0, reachable from the host,
# the same after the restart; a unit without delegation gets the missing-controllers error;
# the root file system stayed read-only throughout. Prints `TIDELET-VMSD key=value` lines (read by
# tests/vm_systemd/main.rs); the unit's ExecStopPost powers the VM off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ROOT=/var/lib/tidelet
NODE=$(uname -n)
POD=web-$NODE
CG=/sys/fs/cgroup

say() { echo "TIDELET-VMSD $*"; }
up() { cut -d' ' -f1 /proc/uptime; }
journal() {
    echo "---- journal of tidelet.service (last 60 lines) ----"
    journalctl -u tidelet.service -u tidelet-import.service --no-pager -o short-monotonic 2>&1 \
        | tail -n 60 | sed 's/^/journal| /'
    echo "---- end of journal ----"
}
fail() {
    say "fail=$*"
    systemctl status tidelet.service --no-pager 2>&1 | sed 's/^/status| /'
    journal
    say "uptime.end=$(up)"
    exit 1
}
# wait_for SECONDS WHAT COMMAND...: poll COMMAND every 0.2 s until SECONDS have passed.
wait_for() {
    secs=$1; what=$2; shift 2
    deadline=$(( $(cut -d. -f1 /proc/uptime) + secs ))
    while ! "$@"; do
        [ "$(cut -d. -f1 /proc/uptime)" -lt $deadline ] \
            || fail "timed out after ${secs}s waiting for $what"
        sleep 0.2
    done
}
tl() { tidelet --root-dir "$ROOT" "$@"; }
prop() { systemctl show tidelet.service -p "$1" --value; }
pod_json() { tl get pod "$POD" -o json 2>/dev/null | tr -d '\n' | sed 's/  */ /g'; }
pod_running() { pod_json | grep -q '"running": *{'; }
app_pid() { tl describe pod "$POD" | mawk '/^  app:/ {c=1} c && $1 == "PID:" {print $2; exit}'; }
active() { [ "$(systemctl is-active tidelet.service)" = active ]; }

say "systemd.uptime=$(up)"
say "systemd.version=$(systemctl --version | head -n1 | tr ' ' '_')"
say "cgroup.fs=$(stat -f -c %T $CG)"
say "root.options=$(findmnt -n -o OPTIONS /)"
say "state.fstype=$(findmnt -n -o FSTYPE $ROOT)"

wait_for 60 "tidelet.service active" active
say "service.active_at=$(up)"
say "service.type=$(prop Type)"
say "service.watchdog_usec=$(prop WatchdogUSec)"
say "service.cgroup=$(prop ControlGroup)"
MAIN1=$(prop MainPID)
say "main1.pid=$MAIN1"
say "main1.cgroup=$(sed -n 's/^0:://p' /proc/$MAIN1/cgroup)"
UNIT_CG=$CG$(prop ControlGroup)
say "unit.subtree_control=$(cat "$UNIT_CG/cgroup.subtree_control")"
say "unit.procs=$(tr '\n' ' ' < "$UNIT_CG/cgroup.procs")"
say "slice.subtree_control=$(cat "${UNIT_CG%/*}/cgroup.subtree_control")"

wait_for 120 "pod $POD running" pod_running
say "pod.running_at=$(up)"
PID1=$(app_pid)
[ -n "$PID1" ] || { tl describe pod "$POD"; fail "no PID for container app"; }
say "app1.pid=$PID1"
CPATH=$(sed -n 's/^0:://p' /proc/$PID1/cgroup)
say "app1.cgroup=$CPATH"
for f in memory.max cpu.max pids.max; do
    say "app.$f=$(cat "$CG$CPATH/$f" 2>&1)"
done
say "pod.memory.max=$(cat "$CG${CPATH%/*}/memory.max" 2>&1)"
SUP1=$(ps -o ppid= -p "$PID1" | tr -d ' ')
say "app1.supervisor=$SUP1"
say "sup1.cmd=$(tr '\0' ' ' < /proc/"$SUP1"/cmdline | cut -c1-40)"
say "sup1.cgroup=$(sed -n 's/^0:://p' /proc/"$SUP1"/cgroup 2>/dev/null)"

# ---- the pod's network (tidelet's built-in CNI network), seen without iproute2: the pod's
# interfaces and local addresses from its /proc/PID/net, the agent's iptables rules, and a
# TCP connection from the host to a closed port of the pod, which its kernel refuses (RST):
# the pod is reachable through the bridge.
pod_ip() { pod_json | sed -n 's/.*"podIP": *"\([^"]*\)".*/\1/p'; }
POD_IP=$(pod_ip)
say "pod.ip=$POD_IP"
say "app1.net_links=$(mawk -F: 'NR > 2 {gsub(/ /, "", $1); printf "%s ", $1}' /proc/"$PID1"/net/dev)"
say "app1.net_addrs=$(mawk '/\|--/ {ip = $2} /\/32 host LOCAL/ {print ip}' /proc/"$PID1"/net/fib_trie | sort -u | tr '\n' ' ')"
say "net.ip_forward=$(cat /proc/sys/net/ipv4/ip_forward)"
say "net.iptables.version=$(iptables --version 2>&1)"
say "net.iptables.nat=$(iptables -w -t nat -S POSTROUTING 2>&1 | grep -e 'tidelet network' -e 'iptables' | tr '\n' '|')"
say "net.iptables.filter=$(iptables -w -t filter -S FORWARD 2>&1 | grep -e 'tidelet network' -e 'iptables' | tr '\n' '|')"
tcp_probe() {
    out=$(timeout 5 bash -c "exec 3<>/dev/tcp/$1/9" 2>&1)
    case "$?:$out" in
        124:*) echo timeout ;;
        *"Connection refused"*) echo refused ;;
        0:*) echo connected ;;
        *) echo "error: $(echo "$out" | tr '\n' ' ')" ;;
    esac
}
say "pod.tcp_probe=$(tcp_probe "$POD_IP")"

# ---- restart: the agent goes, the pod stays.
say "restart.start=$(up)"
timeout 120 systemctl restart tidelet.service || fail "systemctl restart tidelet: $?"
say "restart.done=$(up)"
wait_for 60 "tidelet.service active after the restart" active
MAIN2=$(prop MainPID)
say "main2.pid=$MAIN2"
say "main2.cgroup=$(sed -n 's/^0:://p' /proc/$MAIN2/cgroup)"
say "service.n_restarts=$(prop NRestarts)"
say "service.result=$(prop Result)"
say "unit.procs.after=$(tr '\n' ' ' < "$UNIT_CG/cgroup.procs")"
wait_for 60 "pod $POD running after the restart" pod_running
PID2=$(app_pid)
say "app2.pid=$PID2"
say "app2.alive=$([ -d /proc/"$PID1" ] && echo yes || echo no)"
say "app2.cgroup=$(sed -n 's/^0:://p' /proc/"$PID1"/cgroup 2>/dev/null)"
say "app2.supervisor_alive=$([ -d /proc/"$SUP1" ] && echo yes || echo no)"
say "pod.json=$(pod_json)"
say "pod.ip.after=$(pod_ip)"
say "app2.net_addrs=$(mawk '/\|--/ {ip = $2} /\/32 host LOCAL/ {print ip}' /proc/"$PID1"/net/fib_trie 2>/dev/null | sort -u | tr '\n' ' ')"
say "journal.cni_warnings=$(journalctl -u tidelet.service --no-pager -o cat \
    | grep -c -e 'CNI CHECK of an adopted pod failed' -e 'adopted pod has no complete network' -e 'NetworkNotReady')"

# ---- no delegation: the same agent as a unit without Delegate=, in a slice of its own where
# systemd enables only what its members' accounting needs. (A unit in /run: the root is
# read-only, and systemd-run needs a D-Bus daemon this image does not have.)
mkdir -p /run/systemd/system
cat > /run/systemd/system/tidelet-nodelegate.service <<EOF
[Service]
Type=notify
Slice=nodelegate.slice
RuntimeMaxSec=60
ExecStart=/usr/bin/tidelet run --root-dir $ROOT/nodelegate --static-pod-path $ROOT/nodelegate/manifests
EOF
systemctl daemon-reload
timeout 90 systemctl start tidelet-nodelegate.service 2>/dev/null
say "nodelegate.result=$(systemctl show tidelet-nodelegate.service -p Result --value)"
say "nodelegate.slice.subtree_control=$(cat $CG/nodelegate.slice/cgroup.subtree_control 2>&1)"
say "nodelegate.output=$(journalctl -u tidelet-nodelegate.service -o cat --no-pager | grep -v '^ *INFO\|Start\|Fail\|Main process\|Deactivated' | tr '\n' ' ' | tail -c 1500)"

# ---- the read-only root: still read-only, and nothing tidelet did needed it to be writable.
say "root.options.end=$(findmnt -n -o OPTIONS /)"
say "root.touch=$(touch /etc/tidelet/probe 2>&1 | tr '\n' ' ')"
say "journal.erofs=$(journalctl -u tidelet.service --no-pager -o cat | grep -ci 'read-only file system')"
journal
say "uptime.end=$(up)"
say done
