//! The built-in network's own firewall rules, one set per network rather than per pod:
//! masquerading of what leaves the pods' subnet for elsewhere, and forwarding of the pods'
//! traffic on hosts whose FORWARD policy drops (Docker sets it so).
//!
//! Per-pod chains (the bridge plugin's `ipMasq`, the firewall plugin) cost 17 to 20 ms of
//! every ADD and 35 to 50 ms of every DEL with iptables-nft, where each delete is about 15 ms.
//! These rules are added once, when the first pod of the network is attached, and kept, as
//! the bridge device is kept: they match only the pods' subnet.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cni::exec;

/// The rules for `subnet`, as `iptables` arguments after the table: (table, chain, rule).
pub fn rules(name: &str, subnet: &str) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let comment = format!("tidelet network {name}");
    let s = |v: &[&str]| -> Vec<String> {
        v.iter()
            .map(|x| x.to_string())
            .chain(["-m", "comment", "--comment", comment.as_str()].map(String::from))
            .collect()
    };
    let mut masq = s(&["-s", subnet, "!", "-d", subnet]);
    masq.extend(["-j", "MASQUERADE"].map(String::from));
    let mut out_fwd = s(&["-s", subnet]);
    out_fwd.extend(["-j", "ACCEPT"].map(String::from));
    // Replies, and connections to a hostPort (DNAT) toward the pods; nothing else from outside.
    let mut in_fwd = s(&[
        "-d",
        subnet,
        "-m",
        "conntrack",
        "--ctstate",
        "RELATED,ESTABLISHED,DNAT",
    ]);
    in_fwd.extend(["-j", "ACCEPT"].map(String::from));
    vec![
        ("nat", "POSTROUTING", masq),
        ("filter", "FORWARD", out_fwd),
        ("filter", "FORWARD", in_fwd),
    ]
}

/// `iptables`, found in the plugins' `PATH`.
pub fn iptables() -> Option<PathBuf> {
    [
        "/usr/local/sbin",
        "/usr/sbin",
        "/sbin",
        "/usr/local/bin",
        "/usr/bin",
        "/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join("iptables"))
    .find(|p| p.exists())
}

fn run(ipt: &Path, args: Vec<String>) -> Result<(), String> {
    let shown = args.join(" ");
    exec::run(&exec::Invocation {
        plugin: ipt,
        args: &args,
        env: &[],
        stdin: b"",
        timeout: Duration::from_secs(30),
        hold: None,
    })
    .map(|_| ())
    .map_err(|e| match e {
        exec::ExecError::Failed { stderr, status, .. } => {
            format!("iptables {shown}: {status}: {stderr}")
        }
        other => other.to_string(),
    })
}

/// Add the rules that are not there yet (`-C`, then `-I`: ahead of rules that would drop).
pub fn ensure(name: &str, subnet: &str) -> Result<(), String> {
    let ipt = iptables().ok_or("iptables is not installed (Debian: apt install iptables)")?;
    for (table, chain, rule) in rules(name, subnet) {
        let with = |op: &str| -> Vec<String> {
            ["-w", "-t", table, op, chain]
                .iter()
                .map(|s| s.to_string())
                .chain(rule.iter().cloned())
                .collect()
        };
        if run(&ipt, with("-C")).is_err() {
            run(&ipt, with("-I"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_masquerade_and_two_forward_rules_match_only_the_subnet() {
        let r = rules("tidelet", "10.87.0.0/16");
        let shown: Vec<String> = r
            .iter()
            .map(|(t, c, a)| format!("{t} {c} {}", a.join(" ")))
            .collect();
        assert_eq!(
            shown,
            [
                "nat POSTROUTING -s 10.87.0.0/16 ! -d 10.87.0.0/16 -m comment --comment tidelet network tidelet -j MASQUERADE",
                "filter FORWARD -s 10.87.0.0/16 -m comment --comment tidelet network tidelet -j ACCEPT",
                "filter FORWARD -d 10.87.0.0/16 -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment tidelet network tidelet -j ACCEPT",
            ]
        );
    }
}
