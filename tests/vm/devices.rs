//! The device-plugin stage of issue 6 on cgroup v2 (`tests/vm/devices.sh`, sourced by
//! `stage2` while the first agent runs its five pods): the real `tidelet-generic-plugin`
//! registers `tidelet.io/serial` with one device, the guest's `/devtest/ttyUSB0` (char 10:200,
//! tun's numbers, outside the default container allow list), and two pods run. `dev-yes` asks
//! for the device: its container has `/dev/ttyUSB0` (10:200) and opens it read-write, while a
//! node it makes itself for a device it was not given (10:229) is denied. `dev-no` asks for
//! nothing: the node it makes with the very numbers `dev-yes` was given cannot be opened
//! (`EPERM`). cgroup v2 has no `devices.allow` file, so the eBPF device program tidelet attached
//! to each container's cgroup is what allows and denies here; the control (PID 1, in a cgroup
//! without a program, opens the node) shows the driver is there. `tidelet get node` must show
//! the resource with capacity, allocatable and allocated 1 and the device held by `dev-yes`'s
//! container, `describe pod` the pod's devices; removing the pods frees the allocation, and
//! the plugin stops with exit 0 on SIGTERM. Its idle VmRSS and the stage's guest time are
//! figures, printed, not asserted.

use std::collections::BTreeMap;

use crate::get;

/// The resource the guest's plugin config names.
const RESOURCE: &str = "tidelet.io/serial";

/// One line of `tidelet get node`'s resource table: RESOURCE PLUGIN CAPACITY ALLOCATABLE
/// ALLOCATED.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceLine {
    pub resource: String,
    pub plugin: String,
    pub capacity: u64,
    pub allocatable: u64,
    pub allocated: u64,
}

/// One line of `tidelet get node`'s device table: RESOURCE DEVICE HEALTH HELD-BY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLine {
    pub resource: String,
    pub device: String,
    pub health: String,
    pub held_by: String,
}

/// The lines of the `devices.get_node` marker (the `get node` lines starting with the
/// resource, joined with `|`), sorted into the two tables by their shape: five columns, the
/// last three numbers, is a resource line; four columns with a health word is a device line.
/// Anything else is returned as not understood.
pub fn parse_get_node(v: &str) -> (Vec<ResourceLine>, Vec<DeviceLine>, Vec<String>) {
    let (mut resources, mut devices, mut other) = (Vec::new(), Vec::new(), Vec::new());
    for line in v.split('|').map(str::trim).filter(|l| !l.is_empty()) {
        let w: Vec<&str> = line.split_whitespace().collect();
        let nums: Option<Vec<u64>> = w
            .get(2..)
            .map(|n| n.iter().map(|x| x.parse().ok()).collect())
            .unwrap_or(None);
        match (w.len(), nums) {
            (5, Some(n)) => resources.push(ResourceLine {
                resource: w[0].to_string(),
                plugin: w[1].to_string(),
                capacity: n[0],
                allocatable: n[1],
                allocated: n[2],
            }),
            (4, _) if matches!(w[2], "Healthy" | "Unhealthy") => devices.push(DeviceLine {
                resource: w[0].to_string(),
                device: w[1].to_string(),
                health: w[2].to_string(),
                held_by: w[3].to_string(),
            }),
            _ => other.push(line.to_string()),
        }
    }
    (resources, devices, other)
}

/// The `node` a container printed for a device node: `ls -ln`'s mode and `MAJOR,MINOR`
/// (`crw-rw---- 10,200`), as (is a char device, major, minor); `None` if it is not that.
pub fn parse_node(v: &str) -> Option<(bool, u32, u32)> {
    let (mode, nums) = v.split_once(' ')?;
    let (major, minor) = nums.trim().split_once(',')?;
    Some((
        mode.starts_with('c'),
        major.trim().parse().ok()?,
        minor.trim().parse().ok()?,
    ))
}

/// Everything the device-plugin stage must show.
pub fn check(m: &BTreeMap<String, String>) {
    let g = |k: &str| get(m, k);
    assert!(
        !m.contains_key("devices.timeout"),
        "devices.timeout={}: a pod of the device stage never reported (its json: \
         devices.yes.json={:?}, devices.no.json={:?})",
        g("devices.timeout"),
        m.get("devices.yes.json"),
        m.get("devices.no.json"),
    );
    assert_eq!(
        g("devices.host.open"),
        "ok",
        "devices.host.open: PID 1 opening /devtest/ttyUSB0 (10:200; the tun module loaded?)"
    );
    assert_ne!(
        g("devices.registered_seen_at"),
        "never",
        "devices.registered_seen_at: the agent never logged a device list for {RESOURCE}"
    );

    // The pod given the device: the node, with its numbers, and it opens.
    let node = g("devices.yes.node");
    assert_eq!(
        parse_node(node),
        Some((true, 10, 200)),
        "devices.yes.node: /dev/ttyUSB0 in dev-yes's container should be char 10:200: {node:?}"
    );
    assert_eq!(
        g("devices.yes.open"),
        "ok",
        "devices.yes.open: dev-yes opening the device it was given (O_RDWR)"
    );
    assert_eq!(
        g("devices.yes.other_open"),
        "EPERM",
        "devices.yes.other_open: dev-yes opening a node it made for 10:229, not given to it"
    );
    assert_eq!(
        g("devices.yes.null"),
        "ok",
        "devices.yes.null: /dev/null (the default allow list)"
    );

    // The pod that asked for nothing: no node given, and its own node for 10:200 is denied.
    assert_eq!(
        g("devices.no.given"),
        "absent",
        "devices.no.given: /dev/ttyUSB0 in dev-no's container"
    );
    assert_eq!(
        g("devices.no.mknod"),
        "ok",
        "devices.no.mknod: mknod /dev/x c 10 200 in dev-no (mknod is in the default allow list)"
    );
    assert_eq!(
        g("devices.no.open"),
        "EPERM",
        "devices.no.open: dev-no opening its own node for 10:200 must be denied by the cgroup's \
         eBPF device program"
    );
    assert_eq!(
        g("devices.no.null"),
        "ok",
        "devices.no.null: /dev/null (the default allow list)"
    );

    // Visibility: `get node` and `describe pod`.
    let uid = g("devices.yes.uid");
    assert!(!uid.is_empty(), "devices.yes.uid: dev-yes's uid not found");
    // (the API shows holders by name: namespace/pod/container)
    let holder = "default/dev-yes-vm/app".to_string();
    let table = g("devices.get_node");
    let (resources, devices, other) = parse_get_node(table);
    assert!(
        other.is_empty(),
        "devices.get_node: lines not understood: {other:?}"
    );
    assert_eq!(
        resources,
        vec![ResourceLine {
            resource: RESOURCE.into(),
            plugin: "tidelet.io-serial.sock".into(),
            capacity: 1,
            allocatable: 1,
            allocated: 1,
        }],
        "devices.get_node: the resource table ({table:?})"
    );
    assert_eq!(
        devices,
        vec![DeviceLine {
            resource: RESOURCE.into(),
            device: "ttyUSB0".into(),
            health: "Healthy".into(),
            held_by: holder.clone(),
        }],
        "devices.get_node: the device table ({table:?})"
    );
    let described = g("devices.describe_yes");
    assert!(
        described
            .split('|')
            .any(|l| l.trim() == format!("app: {RESOURCE}: ttyUSB0")),
        "devices.describe_yes: `describe pod dev-yes-vm` should list `app: {RESOURCE}: ttyUSB0` \
         under Devices: {described:?}"
    );

    // After the pods were removed: the allocation freed once; the plugin stopped cleanly.
    assert_eq!(
        g("devices.freed_lines"),
        "1",
        "devices.freed_lines: the agent's `devices freed` lines for dev-yes ({uid})"
    );
    assert_eq!(
        g("devices.plugin.comm"),
        "tidelet-generic",
        "devices.plugin.comm: the plugin ran through the stage"
    );
    assert_eq!(
        g("devices.plugin.exit"),
        "0",
        "devices.plugin.exit: the plugin's exit code on SIGTERM"
    );
    assert_eq!(
        g("devices.plugin.errors"),
        "0",
        "devices.plugin.errors: ERROR lines in the plugin's log"
    );
}

/// The stage's figures: guest seconds from its start to its reports, and the plugin's VmRSS.
pub fn figures(m: &BTreeMap<String, String>) -> String {
    let secs = |k: &str| m.get(k).and_then(|v| v.parse::<f64>().ok());
    let span = match (
        secs("devices.start_at"),
        secs("devices.reported_at"),
        secs("devices.done_at"),
    ) {
        (Some(a), Some(r), Some(d)) => format!(
            "pods reported {:.2} s after the stage began, stage {:.2} s",
            r - a,
            d - a
        ),
        _ => "stage times missing".to_string(),
    };
    format!(
        "device stage: {span}; tidelet-generic-plugin VmRSS {} KiB",
        m.get("devices.plugin.rss_kib").map_or("?", String::as_str)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str, plugin: &str, c: u64, a: u64, al: u64) -> ResourceLine {
        ResourceLine {
            resource: name.into(),
            plugin: plugin.into(),
            capacity: c,
            allocatable: a,
            allocated: al,
        }
    }

    fn dev(name: &str, id: &str, health: &str, by: &str) -> DeviceLine {
        DeviceLine {
            resource: name.into(),
            device: id.into(),
            health: health.into(),
            held_by: by.into(),
        }
    }

    #[test]
    fn get_node_lines_are_sorted_by_shape() {
        type Case = (
            &'static str,
            Vec<ResourceLine>,
            Vec<DeviceLine>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "tidelet.io/serial                tidelet.io-serial.sock       1        1           1        |\
                 tidelet.io/serial                ttyUSB0                  Healthy    default/p-vm/app|",
                vec![res("tidelet.io/serial", "tidelet.io-serial.sock", 1, 1, 1)],
                vec![dev("tidelet.io/serial", "ttyUSB0", "Healthy", "default/p-vm/app")],
                vec![],
            ),
            (
                "a.io/x (gone) 2 0 0|a.io/x d0 Unhealthy -|a.io/x d1 Unhealthy -|",
                vec![res("a.io/x", "(gone)", 2, 0, 0)],
                vec![
                    dev("a.io/x", "d0", "Unhealthy", "-"),
                    dev("a.io/x", "d1", "Unhealthy", "-"),
                ],
                vec![],
            ),
            ("", vec![], vec![], vec![]),
            (
                "a.io/x p 1 one 1|a.io/x d0 Sick -|tidelet: cannot connect",
                vec![],
                vec![],
                vec!["a.io/x p 1 one 1", "a.io/x d0 Sick -", "tidelet: cannot connect"],
            ),
        ];
        for (v, r, d, o) in cases {
            let (gr, gd, go) = parse_get_node(v);
            assert_eq!(gr, r, "{v:?}");
            assert_eq!(gd, d, "{v:?}");
            assert_eq!(go, o, "{v:?}");
        }
    }

    #[test]
    fn node_lines() {
        let cases = [
            ("crw-rw---- 10,200", Some((true, 10, 200))),
            ("brw-rw---- 7,0", Some((false, 7, 0))),
            ("crw-rw-rw- 1,3", Some((true, 1, 3))),
            ("absent", None),
            ("crw-rw---- 10,", None),
            ("crw-rw---- x,1", None),
            ("", None),
        ];
        for (v, want) in cases {
            assert_eq!(parse_node(v), want, "{v:?}");
        }
    }
}
