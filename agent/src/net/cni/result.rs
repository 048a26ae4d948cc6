//! Plugin results and errors, as the CNI spec shapes them (0.3.0 to 1.1.0).

use serde_json::Value;

/// A CNI error a plugin printed: `{"code": 7, "msg": "...", "details": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    pub code: u64,
    pub msg: String,
    pub details: String,
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        write!(f, " (CNI error {})", self.code)
    }
}

/// A plugin's stdout on failure, read as a CNI error when it is one.
pub fn parse_error(stdout: &[u8]) -> Option<PluginError> {
    let v: Value = serde_json::from_slice(stdout).ok()?;
    let code = v.get("code")?.as_u64()?;
    Some(PluginError {
        code,
        msg: v
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        details: v
            .get("details")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    })
}

/// The largest result kept: results go into the attachment's record and are handed to the
/// next plugin as `prevResult`.
pub const MAX_RESULT_BYTES: usize = 64 << 10;

/// Check an ADD result: a JSON object whose `ips`, if any, are addresses with a prefix.
pub fn parse_result(stdout: &[u8]) -> Result<Value, String> {
    if stdout.len() > MAX_RESULT_BYTES {
        return Err(format!(
            "result is {} bytes, more than the {MAX_RESULT_BYTES} a result may be",
            stdout.len()
        ));
    }
    let v: Value = serde_json::from_slice(stdout).map_err(|e| {
        let shown = String::from_utf8_lossy(&stdout[..stdout.len().min(200)]).into_owned();
        format!("result is not JSON ({e}): {shown:?}")
    })?;
    if !v.is_object() {
        return Err("result is not a JSON object".into());
    }
    if let Some(ips) = v.get("ips") {
        let Value::Array(ips) = ips else {
            return Err("result: ips: not a list".into());
        };
        for (i, ip) in ips.iter().enumerate() {
            let a = ip.get("address").and_then(Value::as_str).unwrap_or("");
            if address_of(a).is_none() {
                return Err(format!(
                    "result: ips[{i}].address: {a:?} is not an address/prefix"
                ));
            }
        }
    }
    Ok(v)
}

/// `10.1.2.3/24` → `10.1.2.3`.
fn address_of(cidr: &str) -> Option<std::net::IpAddr> {
    let (ip, prefix) = cidr.split_once('/')?;
    let ip: std::net::IpAddr = ip.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some(ip)
}

/// The pod's addresses in a result: those on the interface named `ifname` inside the sandbox
/// (portmap's rule), or every address when the result names no interfaces (an IPAM-style
/// result). IPv4 first, as kubelet orders `podIPs` by the node's family, then in order.
pub fn pod_ips(result: &Value, ifname: &str) -> Vec<String> {
    let empty = Vec::new();
    let ifaces = result
        .get("interfaces")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let ips = result
        .get("ips")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let ours = |ip: &Value| -> bool {
        if ifaces.is_empty() {
            return true;
        }
        let Some(i) = ip.get("interface").and_then(Value::as_u64) else {
            return false;
        };
        ifaces.get(i as usize).is_some_and(|f| {
            f.get("name").and_then(Value::as_str) == Some(ifname)
                && f.get("sandbox")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
        })
    };
    let mut out: Vec<std::net::IpAddr> = ips
        .iter()
        .filter(|ip| ours(ip))
        .filter_map(|ip| {
            ip.get("address")
                .and_then(Value::as_str)
                .and_then(address_of)
        })
        .collect();
    out.sort_by_key(|ip| ip.is_ipv6());
    out.dedup();
    out.into_iter().map(|ip| ip.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_ips_are_the_sandbox_interfaces_addresses() {
        let v1 = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "tidelet0", "mac": "aa"},
                {"name": "veth1", "mac": "bb"},
                {"name": "eth0", "mac": "cc", "sandbox": "/run/netns/x"}
            ],
            "ips": [
                {"address": "fd00::5/64", "interface": 2},
                {"address": "10.87.0.1/16", "interface": 0},
                {"address": "10.87.0.5/16", "gateway": "10.87.0.1", "interface": 2}
            ]
        });
        let v040 = json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0", "sandbox": "/proc/1/ns/net"}],
            "ips": [{"version": "4", "address": "10.22.0.9/24", "interface": 0}]
        });
        let ipam_only = json!({"ips": [{"address": "192.168.1.7/24"}]});
        let other_if = json!({
            "interfaces": [{"name": "net1", "sandbox": "/x"}],
            "ips": [{"address": "10.0.0.2/24", "interface": 0}]
        });
        let cases = [
            (v1, vec!["10.87.0.5", "fd00::5"]),
            (v040, vec!["10.22.0.9"]),
            (ipam_only, vec!["192.168.1.7"]),
            (other_if, vec![]),
            (json!({}), vec![]),
        ];
        for (r, want) in cases {
            assert_eq!(pod_ips(&r, "eth0"), want, "{r}");
        }
    }

    #[test]
    fn results_are_checked_and_errors_read() {
        assert!(parse_result(br#"{"ips":[{"address":"10.0.0.2/24"}]}"#).is_ok());
        for (bad, why) in [
            (&b"garbage"[..], "not JSON"),
            (b"[1]", "not a JSON object"),
            (br#"{"ips":{}}"#, "ips: not a list"),
            (br#"{"ips":[{"address":"10.0.0.2"}]}"#, "ips[0].address"),
            (br#"{"ips":[{"address":"10.0.0.2/40"}]}"#, "ips[0].address"),
        ] {
            let e = parse_result(bad).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let big = vec![b' '; MAX_RESULT_BYTES + 1];
        assert!(parse_result(&big).unwrap_err().contains("more than"));
        let e = parse_error(br#"{"code":11,"msg":"try again","details":"busy"}"#).unwrap();
        assert_eq!(e.to_string(), "try again: busy (CNI error 11)");
        assert_eq!(parse_error(b"oops"), None);
    }
}
