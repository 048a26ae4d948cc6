//! Pod networking in the guest (the agent's built-in CNI network: Debian's bridge, host-local
//! and loopback plugins, `tidelet0` on 10.87.0.0/16, the agent's iptables-nft rules): the
//! checks of the `net.*` and `web.app.net_*` markers `stage2` prints, and of what the host's
//! echo received from a pod.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::{get, json};

/// The built-in network's subnet (the agent's default `podCIDR`).
const SUBNET: (Ipv4Addr, u32) = (Ipv4Addr::new(10, 87, 0, 0), 16);
/// The bridge's address: host-local's gateway, the first address of the subnet.
const GATEWAY: &str = "10.87.0.1";
/// The rules the agent adds at the first attach (`iptables -S`, as iptables-nft prints them).
const NAT_RULE: &str = "-A POSTROUTING -s 10.87.0.0/16 ! -d 10.87.0.0/16 -m comment --comment \"tidelet network tidelet\" -j MASQUERADE";
const FORWARD_OUT: &str =
    "-A FORWARD -s 10.87.0.0/16 -m comment --comment \"tidelet network tidelet\" -j ACCEPT";
const FORWARD_IN: &str = "-A FORWARD -d 10.87.0.0/16 -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment \"tidelet network tidelet\" -j ACCEPT";

/// True if `ip` (an address, optionally `/LEN`) is in 10.87.0.0/16.
pub fn in_pod_subnet(ip: &str) -> bool {
    let addr = ip.split('/').next().unwrap_or_default();
    let Ok(a) = addr.parse::<Ipv4Addr>() else {
        return false;
    };
    let mask = u32::MAX << (32 - SUBNET.1);
    u32::from(a) & mask == u32::from(SUBNET.0) & mask
}

/// The line the pod sends to the host's echo (`pods/net.yaml`).
pub fn pod_hello(arch: &str) -> String {
    format!("hello from a pod on {arch}")
}

/// `NAME=ADDR/LEN NAME=ADDR/LEN ...` (`web.app.net_addrs`) as pairs.
fn addrs(v: &str) -> Vec<(&str, &str)> {
    v.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect()
}

pub fn check(m: &BTreeMap<String, String>, arch: &str) {
    // The web pod: an IP of the pod network in its status, the same address on its eth0
    // (besides lo), and its default route through the bridge.
    let web = json(m, "web.json");
    let ip = web["status"]["podIP"]
        .as_str()
        .unwrap_or_else(|| panic!("web has no status.podIP: {web}"));
    assert!(in_pod_subnet(ip), "web's podIP {ip} is not in 10.87.0.0/16");
    assert_eq!(
        web["status"]["podIPs"][0]["ip"], ip,
        "status.podIPs[0] is the podIP: {web}"
    );
    let mut links: Vec<&str> = get(m, "web.app.net_links")
        .split_whitespace()
        .map(|l| l.split('@').next().unwrap_or(l))
        .collect();
    links.sort_unstable();
    assert_eq!(
        links,
        ["eth0", "lo"],
        "the pod's network namespace: lo and the CNI interface ({})",
        get(m, "web.app.net_links")
    );
    let a = addrs(get(m, "web.app.net_addrs"));
    assert!(
        a.contains(&("lo", "127.0.0.1/8")),
        "lo in the pod: {:?}",
        get(m, "web.app.net_addrs")
    );
    assert!(
        a.contains(&("eth0", &format!("{ip}/16"))),
        "eth0 in the pod has the podIP {ip}/16: {:?}",
        get(m, "web.app.net_addrs")
    );
    assert!(
        get(m, "web.app.net_route").starts_with(&format!("default via {GATEWAY} dev eth0")),
        "the pod's default route: {:?}",
        get(m, "web.app.net_route")
    );
    assert_eq!(
        get(m, "net.record"),
        "yes pin=yes",
        "the attachment's record and pinned namespace under the root"
    );

    // The guest's side: the bridge, forwarding (the bridge plugin's isGateway) and the
    // agent's three rules, through iptables-nft.
    assert_eq!(get(m, "net.bridge"), format!("{GATEWAY}/16"), "tidelet0");
    assert_eq!(get(m, "net.ip_forward"), "1", "net.ipv4.ip_forward");
    assert!(
        get(m, "net.iptables.version").contains("nf_tables"),
        "iptables is iptables-nft: {:?}",
        get(m, "net.iptables.version")
    );
    // Each rule once: the agent checks (`-C`) before it inserts (`-I`), and `-C` works here.
    assert!(
        get(m, "net.iptables.check").starts_with("0"),
        "iptables -C of the agent's nat rule: {:?}",
        get(m, "net.iptables.check")
    );
    let nat: Vec<&str> = get(m, "net.iptables.nat").split('|').collect();
    let fwd: Vec<&str> = get(m, "net.iptables.filter").split('|').collect();
    for (rules, rule) in [(&nat, NAT_RULE), (&fwd, FORWARD_OUT), (&fwd, FORWARD_IN)] {
        let n = rules.iter().filter(|r| **r == rule).count();
        assert_eq!(n, 1, "{rule} found {n} times: {rules:#?}");
    }

    // A pod reached the host's echo through the guest's network.
    assert!(
        !m.contains_key("net.pod.timeout"),
        "pod net did not report: {}",
        m.get("net.pod.json").map_or("", String::as_str)
    );
    let addr = get(m, "net.pod.addr");
    assert!(in_pod_subnet(addr), "pod net's eth0: {addr:?}");
    assert!(
        get(m, "net.pod.route").starts_with(&format!("default via {GATEWAY}")),
        "pod net's default route: {:?}",
        get(m, "net.pod.route")
    );
    assert_eq!(
        get(m, "net.pod.reply"),
        format!("ack {}", pod_hello(arch)),
        "pod net's TCP exchange with the host (tries: {:?})",
        tries(m)
    );
    // Masqueraded: conntrack's entry of that connection has the pod's address as its source
    // and the guest's 10.0.2.15 as the reply's destination.
    let ct = get(m, "net.pod.conntrack");
    let pod_ip = addr.split('/').next().unwrap_or_default();
    assert!(
        ct.split('|')
            .any(|e| e.contains(&format!("src={pod_ip} dst=10.0.2.100 "))
                && e.contains(" src=10.0.2.100 dst=10.0.2.15 ")),
        "conntrack's entry of pod net's connection, masqueraded to 10.0.2.15: {ct:?}"
    );
    let net = json(m, "net.pod.status.json");
    assert_eq!(net["status"]["phase"], "Succeeded", "{net}");
    let net_ip = net["status"]["podIP"].as_str().unwrap_or_default();
    assert!(in_pod_subnet(net_ip), "pod net's podIP {net_ip:?}: {net}");
    assert_eq!(
        Some(net_ip),
        addr.split('/').next(),
        "pod net's podIP is its eth0 address"
    );

    // Removing the pods DELeted every attachment: records, pinned namespaces, IPAM leases.
    for k in ["net.records_left", "net.pins_left", "net.leases_left"] {
        assert_eq!(get(m, k), "", "{k}");
    }
    // The MQTT stage's agent adopted pg and pb with their networks (CNI CHECK passed).
    assert_eq!(
        get(m, "mqtt.net_adopt_warnings"),
        "0",
        "warnings about adopted pods' networks"
    );
}

/// The pod's tries (`net.pod.try.N`), in order.
fn tries(m: &BTreeMap<String, String>) -> Vec<&str> {
    (1..=3)
        .map_while(|n| m.get(&format!("net.pod.try.{n}")).map(String::as_str))
        .collect()
}

/// What the host's echo received: the guest's line, then the pod's, once per try that reached
/// it (at least once; more only if a try got no answer).
pub fn check_host_lines(
    m: &BTreeMap<String, String>,
    lines: &[String],
    guest_hello: &str,
    arch: &str,
) {
    let tried = tries(m).len();
    let pod = pod_hello(arch);
    let (first, rest) = lines
        .split_first()
        .unwrap_or_else(|| panic!("the host's echo received nothing"));
    assert_eq!(
        first, guest_hello,
        "the host's echo: first the guest's line: {lines:?}"
    );
    assert!(
        (1..=tried.max(1)).contains(&rest.len()) && rest.iter().all(|l| *l == pod),
        "the host's echo: then the pod's line, once per try ({tried}): {lines:?}"
    );
}

/// The figures: what each CNI ADD of the first agent took until five pods ran (its log), and
/// the pod stage's guest time.
pub fn figures(m: &BTreeMap<String, String>) -> String {
    let g = |k: &str| m.get(k).map_or("?", String::as_str);
    let ms: Vec<u64> = g("net.attach_ms")
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let stage = match (
        g("net.pod.start_at").parse::<f64>(),
        g("net.pod.done_at").parse::<f64>(),
    ) {
        (Ok(a), Ok(b)) => format!("{:.2} s", b - a),
        _ => "?".into(),
    };
    format!(
        "pod network: the first agent's {} CNI ADDs until five pods ran took {} ms (min {} ms, \
         max {} ms); the pod's exchange with the host, stage {stage}, {} tries ({:?})",
        ms.len(),
        g("net.attach_ms").trim(),
        ms.iter().min().map_or("?".into(), u64::to_string),
        ms.iter().max().map_or("?".into(), u64::to_string),
        g("net.pod.attempts"),
        tries(m),
    )
}

#[test]
fn pod_subnet_membership() {
    let cases = [
        ("10.87.0.2", true),
        ("10.87.255.254/16", true),
        ("10.88.0.2", false),
        ("10.0.2.15", false),
        ("", false),
        ("eth0", false),
    ];
    for (ip, want) in cases {
        assert_eq!(in_pod_subnet(ip), want, "{ip:?}");
    }
}
