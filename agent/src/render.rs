//! kubectl-like text output: the `get pods` table and `describe pod`.

use std::io::{self, Write};

use k8s_openapi::api::core::v1::Pod;

use crate::pod::view::PodView;

/// The STATUS column as kubectl prints it: the first container's waiting or terminated reason,
/// else the phase (`Terminating` is not a state tidelet shows).
pub fn status_column(pod: &Pod) -> String {
    let Some(st) = &pod.status else {
        return "Unknown".into();
    };
    let mut reason = st
        .reason
        .clone()
        .filter(|r| r != "InvalidManifest")
        .unwrap_or_else(|| st.phase.clone().unwrap_or_default());
    for cs in st.container_statuses.iter().flatten() {
        if let Some(state) = &cs.state {
            if let Some(w) = state.waiting.as_ref().and_then(|w| w.reason.clone()) {
                if w != "ContainerCreating" || reason == "Pending" {
                    reason = w;
                }
            } else if let Some(t) = &state.terminated {
                reason = t
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("ExitCode:{}", t.exit_code));
            }
        }
    }
    reason
}

pub fn age(start: Option<i64>, now: i64) -> String {
    let Some(s) = start else {
        return "<unknown>".into();
    };
    let d = (now - s).max(0);
    match d {
        0..=119 => format!("{d}s"),
        120..=7199 => format!("{}m", d / 60),
        7200..=172_799 => format!("{}h", d / 3600),
        _ => format!("{}d", d / 86400),
    }
}

pub fn pod_table(out: &mut impl Write, views: &[PodView], wide: bool) -> io::Result<()> {
    let now = crate::clock::now_ns() / 1_000_000_000;
    let mut rows = vec![];
    for v in views {
        let p = &v.pod;
        let st = p.status.as_ref();
        let css = st
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        let ready = css.iter().filter(|c| c.ready).count();
        let restarts: i32 = css.iter().map(|c| c.restart_count).sum();
        let mut row = vec![
            p.metadata.name.clone().unwrap_or_default(),
            format!("{ready}/{}", css.len()),
            status_column(p),
            restarts.to_string(),
            age(
                st.and_then(|s| s.start_time.as_ref())
                    .map(|t| t.0.as_second()),
                now,
            ),
        ];
        if wide {
            row.push(
                st.and_then(|s| s.pod_ip.clone())
                    .unwrap_or_else(|| "<none>".into()),
            );
            row.push(
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default(),
            );
            row.push(st.and_then(|s| s.qos_class.clone()).unwrap_or_default());
        }
        rows.push(row);
    }
    let mut header = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
    if wide {
        header.extend(["IP", "NODE", "QOS"]);
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<w$}", c, w = widths[i]))
            .collect::<Vec<_>>()
            .join("   ")
            .trim_end()
            .to_string()
    };
    if rows.is_empty() {
        return writeln!(out, "No resources found");
    }
    writeln!(out, "{}", line(header))?;
    for r in &rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

pub fn describe(out: &mut impl Write, v: &PodView) -> io::Result<()> {
    let p = &v.pod;
    let st = p.status.clone().unwrap_or_default();
    let m = &p.metadata;
    writeln!(out, "Name:         {}", m.name.as_deref().unwrap_or(""))?;
    writeln!(
        out,
        "Namespace:    {}",
        m.namespace.as_deref().unwrap_or("default")
    )?;
    writeln!(out, "UID:          {}", m.uid.as_deref().unwrap_or(""))?;
    writeln!(
        out,
        "Node:         {}/{}",
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or(""),
        st.host_ip.as_deref().unwrap_or("")
    )?;
    writeln!(out, "Source:       {}", v.file.display())?;
    writeln!(
        out,
        "Start Time:   {}",
        st.start_time
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default()
    )?;
    let labels = m.labels.clone().unwrap_or_default();
    writeln!(
        out,
        "Labels:       {}",
        if labels.is_empty() {
            "<none>".into()
        } else {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        }
    )?;
    writeln!(out, "Status:       {}", st.phase.as_deref().unwrap_or(""))?;
    if let Some(r) = &st.reason {
        writeln!(out, "Reason:       {r}")?;
    }
    if let Some(msg) = &st.message {
        writeln!(out, "Message:      {msg}")?;
    }
    writeln!(out, "IP:           {}", st.pod_ip.as_deref().unwrap_or(""))?;
    writeln!(
        out,
        "QoS Class:    {}",
        st.qos_class.as_deref().unwrap_or("")
    )?;
    writeln!(out, "Containers:")?;
    for cs in st.container_statuses.iter().flatten() {
        writeln!(out, "  {}:", cs.name)?;
        writeln!(
            out,
            "    Container ID:  {}",
            cs.container_id.as_deref().unwrap_or("")
        )?;
        writeln!(out, "    Image:         {}", cs.image)?;
        writeln!(out, "    Image ID:      {}", cs.image_id)?;
        let info = v.containers.iter().find(|c| c.name == cs.name);
        if let Some(pid) = info.and_then(|i| i.pid) {
            writeln!(out, "    PID:           {pid}")?;
        }
        if let Some(s) = &cs.state {
            write_state(out, "State", s)?;
        }
        if let Some(s) = &cs.last_state {
            write_state(out, "Last State", s)?;
        }
        writeln!(out, "    Ready:         {}", cs.ready)?;
        writeln!(out, "    Restart Count: {}", cs.restart_count)?;
        if let Some(sec) = info.and_then(|i| i.security.as_ref()) {
            write_security(out, sec)?;
        }
    }
    if !v.devices.is_empty() {
        writeln!(out, "Devices:")?;
        for d in &v.devices {
            let sick = if d.unhealthy.is_empty() {
                String::new()
            } else {
                format!(" (unhealthy: {})", d.unhealthy.join(","))
            };
            writeln!(
                out,
                "  {}: {}: {}{sick}",
                d.container,
                d.resource,
                d.ids.join(",")
            )?;
            for (k, v) in &d.annotations {
                writeln!(out, "    {k}={v}")?;
            }
        }
    }
    writeln!(out, "Conditions:")?;
    for c in st.conditions.iter().flatten() {
        writeln!(out, "  {:<26} {}", c.type_, c.status)?;
    }
    events(out, &v.events)
}

/// A container's confinement (`describe pod`).
fn write_security(out: &mut impl Write, s: &crate::security::SecurityView) -> io::Result<()> {
    let caps = s.capabilities.names();
    writeln!(out, "    Security:")?;
    writeln!(out, "      Privileged:      {}", s.privileged)?;
    writeln!(
        out,
        "      Capabilities:    {}",
        if caps.is_empty() {
            "<none>".to_string()
        } else {
            caps.join(",")
        }
    )?;
    writeln!(out, "      Seccomp:         {}", s.seccomp)?;
    writeln!(out, "      NoNewPrivs:      {}", s.no_new_privs)?;
    writeln!(out, "      ReadOnlyRoot:    {}", s.read_only_root)?;
    writeln!(out, "      User Namespace:  {}", s.user_namespace)
}

/// Extended resources from device plugins: counts per resource, then each device with its
/// health and holder (`tidelet get node`, `describe node`).
pub fn devices_table(
    out: &mut impl Write,
    views: &[crate::devices::manager::ResourceView],
) -> io::Result<()> {
    writeln!(
        out,
        "{:<32} {:<28} {:<8} {:<11} {:<9}",
        "RESOURCE", "PLUGIN", "CAPACITY", "ALLOCATABLE", "ALLOCATED"
    )?;
    for r in views {
        let plugin = if r.live {
            r.endpoint.clone()
        } else {
            "(gone)".to_string()
        };
        writeln!(
            out,
            "{:<32} {:<28} {:<8} {:<11} {:<9}",
            r.name, plugin, r.capacity, r.allocatable, r.allocated
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<32} {:<24} {:<10} HELD BY",
        "RESOURCE", "DEVICE", "HEALTH"
    )?;
    for r in views {
        for d in &r.devices {
            writeln!(
                out,
                "{:<32} {:<24} {:<10} {}",
                r.name,
                d.id,
                if d.healthy { "Healthy" } else { "Unhealthy" },
                d.holder.as_deref().unwrap_or("-")
            )?;
        }
    }
    Ok(())
}

fn events(out: &mut impl Write, events: &crate::pod::events::Events) -> io::Result<()> {
    writeln!(out, "Events:")?;
    let now = crate::clock::now_ns();
    let mut any = false;
    for e in events.iter() {
        any = true;
        let when = age(Some(e.last_ns / 1_000_000_000), now / 1_000_000_000);
        let count = if e.count > 1 {
            format!(
                " (x{} over {})",
                e.count,
                age(Some(e.first_ns / 1_000_000_000), now / 1_000_000_000)
            )
        } else {
            String::new()
        };
        writeln!(
            out,
            "  {:<8} {:<22} {:>6}{}  {}",
            e.type_, e.reason, when, count, e.message
        )?;
    }
    if !any {
        writeln!(out, "  <none>")?;
    }
    Ok(())
}

fn write_state(
    out: &mut impl Write,
    label: &str,
    s: &k8s_openapi::api::core::v1::ContainerState,
) -> io::Result<()> {
    if let Some(r) = &s.running {
        writeln!(
            out,
            "    {label:<14} Running (started {})",
            r.started_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default()
        )?;
    } else if let Some(w) = &s.waiting {
        writeln!(
            out,
            "    {label:<14} Waiting: {} {}",
            w.reason.as_deref().unwrap_or(""),
            w.message.as_deref().unwrap_or("")
        )?;
    } else if let Some(t) = &s.terminated {
        writeln!(
            out,
            "    {label:<14} Terminated: {} (exit code {}{}) {}",
            t.reason.as_deref().unwrap_or(""),
            t.exit_code,
            t.signal
                .map(|s| format!(", signal {s}"))
                .unwrap_or_default(),
            t.message.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

/// `tidelet get node`: one line.
pub fn node_table(out: &mut impl Write, n: &k8s_openapi::api::core::v1::Node) -> io::Result<()> {
    let st = n.status.clone().unwrap_or_default();
    let pressure: Vec<String> = st
        .conditions
        .iter()
        .flatten()
        .filter(|c| c.type_ != "Ready" && c.status == "True")
        .map(|c| c.type_.clone())
        .collect();
    let status = if pressure.is_empty() {
        "Ready".to_string()
    } else {
        format!("Ready,{}", pressure.join(","))
    };
    let q = |m: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
             k: &str| {
        m.as_ref()
            .and_then(|m| m.get(k))
            .map(|q| q.0.clone())
            .unwrap_or_default()
    };
    writeln!(
        out,
        "{:<24} {:<40} {:<8} {:<14} {:<8} {:<14}",
        "NAME", "STATUS", "CPU", "MEMORY", "ALLOC-CPU", "ALLOC-MEMORY"
    )?;
    writeln!(
        out,
        "{:<24} {:<40} {:<8} {:<14} {:<8} {:<14}",
        n.metadata.name.as_deref().unwrap_or(""),
        status,
        q(&st.capacity, "cpu"),
        q(&st.capacity, "memory"),
        q(&st.allocatable, "cpu"),
        q(&st.allocatable, "memory")
    )
}

/// `tidelet describe node`: capacity, allocatable, conditions with their messages, events.
pub fn describe_node(out: &mut impl Write, v: &crate::api::NodeView) -> io::Result<()> {
    let n = &v.node;
    let st = n.status.clone().unwrap_or_default();
    writeln!(
        out,
        "Name:         {}",
        n.metadata.name.as_deref().unwrap_or("")
    )?;
    for (title, m) in [("Capacity", &st.capacity), ("Allocatable", &st.allocatable)] {
        writeln!(out, "{title}:")?;
        for (k, q) in m.iter().flatten() {
            writeln!(out, "  {k}: {}", q.0)?;
        }
    }
    if !v.devices.is_empty() {
        writeln!(out, "Devices:")?;
        devices_table(out, &v.devices)?;
    }
    writeln!(out, "Conditions:")?;
    writeln!(
        out,
        "  {:<16} {:<7} {:<22} {:<32} MESSAGE",
        "TYPE", "STATUS", "LAST TRANSITION", "REASON"
    )?;
    for c in st.conditions.iter().flatten() {
        let when = c
            .last_transition_time
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default();
        writeln!(
            out,
            "  {:<16} {:<7} {:<22} {:<32} {}",
            c.type_,
            c.status,
            when,
            c.reason.as_deref().unwrap_or(""),
            c.message.as_deref().unwrap_or("")
        )?;
    }
    events(out, &v.events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_formats_like_kubectl() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (130, "2m"),
            (7300, "2h"),
            (200_000, "2d"),
        ];
        for (d, want) in cases {
            assert_eq!(age(Some(1000), 1000 + d), want);
        }
    }
}
