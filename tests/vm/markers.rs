//! What the guest reports: `TIDELET-VM key=value` lines on the console (see `tests/vm/stage2`),
//! and the values kubelet derives that the test expects to find in cgroup v2 files.

use std::collections::BTreeMap;

pub const PREFIX: &str = "TIDELET-VM ";

/// Every marker line as key → value (the last one wins; a line without `=` is a key with an
/// empty value). The prefix may follow other console bytes on the same line (terminal escape
/// sequences, a carriage return).
pub fn parse(console: &str) -> BTreeMap<String, String> {
    parse_prefixed(PREFIX, console)
}

/// `parse` for another guest's marker prefix (tests/vm_systemd has `TIDELET-VMSD `).
pub fn parse_prefixed(prefix: &str, console: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in console.lines() {
        let Some(at) = line.find(prefix) else {
            continue;
        };
        let rest = line[at + prefix.len()..].trim_end_matches(['\r', ' ']);
        let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
        if !k.is_empty() {
            out.insert(k.to_string(), v.to_string());
        }
    }
    out
}

/// kubelet's `cpu.shares` for a CPU request in millicores (minimum 2).
pub fn shares_from_millicpu(milli: u64) -> u64 {
    (milli * 1024 / 1000).max(2)
}

/// kubelet's (and runc's) cgroup v2 `cpu.weight` for v1 `cpu.shares`:
/// `1 + ((shares - 2) * 9999) / 262142`.
pub fn weight_from_shares(shares: u64) -> u64 {
    let s = shares.clamp(2, 262144);
    1 + ((s - 2) * 9999) / 262142
}

/// The last `n` lines of `text`, for failure messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("TIDELET-VM a=1\n", &[("a", "1")]),
            (
                "\x1b[2JTIDELET-VM cpu.max=25000 100000\r\n",
                &[("cpu.max", "25000 100000")],
            ),
            ("TIDELET-VM done\n", &[("done", "")]),
            (
                "TIDELET-VM j={\"a\": \"b=c\"}\n",
                &[("j", "{\"a\": \"b=c\"}")],
            ),
            ("noise TIDELET-VMx=1\n[ 1.0] kernel line\n", &[]),
            ("TIDELET-VM a=1\nTIDELET-VM a=2\n", &[("a", "2")]),
            ("TIDELET-VM procs=151 \n", &[("procs", "151")]),
            ("TIDELET-VM \n", &[]),
        ];
        for (text, want) in cases {
            let got = parse(text);
            let want: BTreeMap<String, String> = want
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn kubelet_cpu_conversions() {
        // (millicores, shares, weight), values from kubelet's and runc's formulas.
        let cases = [
            (0, 2, 1),
            (1, 2, 1),
            (100, 102, 4),
            (250, 256, 10),
            (1000, 1024, 39),
            (262144, 268435, 10000),
        ];
        for (milli, shares, weight) in cases {
            assert_eq!(shares_from_millicpu(milli), shares, "shares of {milli}m");
            assert_eq!(
                weight_from_shares(shares),
                weight,
                "weight of {shares} shares"
            );
        }
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 3), "");
    }
}
