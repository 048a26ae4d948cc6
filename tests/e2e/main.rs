//! End-to-end tests: each starts the real tidelet binary as root on its own temp directories
//! and cgroup root, and checks from outside (`/proc`, cgroup files, the CLI).

// Test code: an unwrap that fails is a failed test, named with its location.
#![allow(clippy::unwrap_used)]

mod allocator;
mod bad_input;
mod cpuset;
mod devices;
mod devices_go;
mod devices_python;
mod devices_real;
mod eviction;
mod fleet;
mod gc;
mod isolation;
mod kubelet_yaml;
mod lifecycle;
mod mqtt;
mod mqtt_broker;
mod mqtt_interop;
mod network;
mod security;
mod status_schema;
mod supervision;
mod survival;

/// A pod manifest with busybox containers running `cmds` (name, shell command).
pub fn pod_yaml(name: &str, extra_spec: &str, containers: &[(&str, &str, &str)]) -> String {
    let mut s = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n{extra_spec}  terminationGracePeriodSeconds: 2\n  containers:\n");
    for (c, cmd, resources) in containers {
        s.push_str(&format!(
            "  - name: {c}\n    image: localhost/busybox:1.35\n    imagePullPolicy: Never\n    command: [\"sh\", \"-c\", {cmd:?}]\n{resources}"
        ));
    }
    s
}
