//! A pod's `/etc/hosts` and hostname, as kubelet makes them (`pkg/kubelet/kubelet_pods.go`:
//! `managedHostsFileContent`, `nodeHostsFileContent`, `hostsEntriesFromHostAliases`,
//! `GeneratePodHostNameAndDomain`, `truncatePodHostnameIfNeeded`; `pkg/kubelet/util`
//! `GetNodenameForKernel`). Pure: the caller reads the node's `/etc/hosts` and writes the file.
//!
//! kubelet re-validates `spec.hostname` and `spec.subdomain` as DNS labels here and fails the
//! container on a bad one; tidelet's manifest validation rejects such pods before they get this
//! far, so these functions take them as valid. For the same reason the truncated hostname is
//! never empty (kubelet's "hostname for pod ... was invalid"): only the pod name, a DNS
//! subdomain starting with a letter or digit, can be long enough to be truncated.

use k8s_openapi::api::core::v1::HostAlias;

/// The first line of a pod-network pod's hosts file (`managedHostsHeader`).
pub const MANAGED_HOSTS_HEADER: &str = "# Kubernetes-managed hosts file.\n";
/// The first line of a host-network pod's hosts file (`managedHostsHeaderWithHostNetwork`).
pub const MANAGED_HOSTS_HEADER_HOST_NETWORK: &str =
    "# Kubernetes-managed hosts file (host network).\n";

/// The fixed entries after the header, kubelet's (and Docker's) loopback and IPv6 names.
const LOCAL_ENTRIES: &str = "127.0.0.1\tlocalhost\n\
                             ::1\tlocalhost ip6-localhost ip6-loopback\n\
                             fe00::0\tip6-localnet\n\
                             fe00::0\tip6-mcastprefix\n\
                             fe00::1\tip6-allnodes\n\
                             fe00::2\tip6-allrouters\n";

/// The Linux `utsname.nodename` field holds 64 bytes with the NUL, so 63 for a hostname.
const HOSTNAME_MAX_LEN: usize = 63;
/// kubelet's `fqdnMaxLen` for `setHostnameAsFQDN`. kubelet allows 64 here (one more than a plain
/// hostname gets); the runtime's `sethostname` is what finally enforces the kernel's limit.
const FQDN_MAX_LEN: usize = 64;

/// Pod network: header "# Kubernetes-managed hosts file.", the fixed localhost/ip6 lines
/// (tab-separated), then one line per pod IP: "IP\t<hostname>.<domain>\t<hostname>" or
/// "IP\t<hostname>"; then, only when aliases exist, a blank line, "# Entries added by
/// HostAliases." and one line per alias entry: "IP\tname1\tname2".
/// hostNetwork (node_hosts = Some(text of the node's /etc/hosts)): header "# Kubernetes-managed
/// hosts file (host network).\n" + the node file verbatim + the HostAliases section.
///
/// As in kubelet, the HostAliases section is appended to the node file as it is: if that file
/// lacks a final newline, the section's blank line ends its last line instead.
pub fn hosts_file(
    pod_ips: &[String],
    hostname: &str,
    domain: Option<&str>,
    aliases: &[HostAlias],
    node_hosts: Option<&str>,
) -> String {
    let mut out = String::new();
    match node_hosts {
        Some(node) => {
            out.push_str(MANAGED_HOSTS_HEADER_HOST_NETWORK);
            out.push_str(node);
        }
        None => {
            out.push_str(MANAGED_HOSTS_HEADER);
            out.push_str(LOCAL_ENTRIES);
            // Every pod IP (both families on a dual-stack pod) names the pod.
            for ip in pod_ips {
                out.push_str(ip);
                out.push('\t');
                if let Some(domain) = domain.filter(|d| !d.is_empty()) {
                    out.push_str(hostname);
                    out.push('.');
                    out.push_str(domain);
                    out.push('\t');
                }
                out.push_str(hostname);
                out.push('\n');
            }
        }
    }
    out.push_str(&alias_entries(aliases));
    out
}

/// `hostsEntriesFromHostAliases`: current kubelets write one line per alias entry, its hostnames
/// tab-separated on it (older ones wrote one line per hostname). An entry without hostnames
/// still gets its line, `IP` and a tab, as `strings.Join` of nothing gives.
fn alias_entries(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for alias in aliases {
        out.push_str(&alias.ip);
        out.push('\t');
        out.push_str(&alias.hostnames.as_deref().unwrap_or_default().join("\t"));
        out.push('\n');
    }
    out
}

/// (hostname, domain) as kubelet's GeneratePodHostNameAndDomain: hostname = spec.hostname or pod
/// name, truncated to 63 with trailing '-' and '.' trimmed; domain =
/// "<subdomain>.<namespace>.svc.<clusterDomain>" when subdomain is set. With setHostnameAsFQDN
/// the UTS hostname is hostname.domain and must be ≤ 64 chars else Err with kubelet's message
/// (see [`uts_hostname`]).
///
/// An empty `spec.hostname` or `spec.subdomain` counts as unset, as in kubelet.
pub fn hostname_and_domain(
    pod_name: &str,
    spec_hostname: Option<&str>,
    subdomain: Option<&str>,
    namespace: &str,
    cluster_domain: &str,
) -> (String, Option<String>) {
    let hostname = spec_hostname.filter(|h| !h.is_empty()).unwrap_or(pod_name);
    let domain = subdomain
        .filter(|s| !s.is_empty())
        .map(|s| format!("{s}.{namespace}.svc.{cluster_domain}"));
    (truncate_hostname(hostname), domain)
}

/// `truncatePodHostnameIfNeeded`: cut to 63 bytes, then trim trailing `-` and `.` so the result
/// is still a valid name.
fn truncate_hostname(hostname: &str) -> String {
    if hostname.len() <= HOSTNAME_MAX_LEN {
        return hostname.to_string();
    }
    // Names are ASCII once validated; stepping back to a char boundary only keeps a stray
    // multi-byte name from panicking.
    let mut end = HOSTNAME_MAX_LEN;
    while !hostname.is_char_boundary(end) {
        end -= 1;
    }
    hostname[..end].trim_end_matches(['-', '.']).to_string()
}

/// The hostname set in the pod's UTS namespace (kubelet's `GetNodenameForKernel`): the short
/// hostname, or `hostname.domain` when `setHostnameAsFQDN` is true and the pod has a domain. An
/// FQDN longer than 64 characters fails the pod with kubelet's message.
pub fn uts_hostname(
    hostname: &str,
    domain: Option<&str>,
    set_hostname_as_fqdn: bool,
) -> Result<String, String> {
    match domain.filter(|d| !d.is_empty()) {
        Some(domain) if set_hostname_as_fqdn => {
            let fqdn = format!("{hostname}.{domain}");
            if fqdn.len() > FQDN_MAX_LEN {
                return Err(format!(
                    "failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too long ({FQDN_MAX_LEN} characters is the max, {} characters requested)",
                    fqdn.len()
                ));
            }
            Ok(fqdn)
        }
        _ => Ok(hostname.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(ip: &str, names: &[&str]) -> HostAlias {
        HostAlias {
            ip: ip.to_string(),
            hostnames: Some(names.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn ips(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// (pod IPs, domain, aliases) -> the file.
    type ManagedCase<'a> = (Vec<String>, Option<&'a str>, &'a [HostAlias], String);
    /// (pod name, spec.hostname, spec.subdomain) -> (hostname, domain).
    type NameCase<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        (String, Option<String>),
    );

    const LOCAL: &str = "127.0.0.1\tlocalhost\n\
                         ::1\tlocalhost ip6-localhost ip6-loopback\n\
                         fe00::0\tip6-localnet\n\
                         fe00::0\tip6-mcastprefix\n\
                         fe00::1\tip6-allnodes\n\
                         fe00::2\tip6-allrouters\n";

    #[test]
    fn managed_hosts_file_table() {
        let head = format!("# Kubernetes-managed hosts file.\n{LOCAL}");
        let two = [
            alias("123.45.67.89", &["foo", "bar", "baz"]),
            alias("456.78.90.123", &["park", "doo", "boo"]),
        ];
        let bare = [HostAlias {
            ip: "10.9.9.9".to_string(),
            hostnames: None,
        }];
        // kubelet's TestManagedHostsFileContent, then tidelet's: no pod IP yet, an empty
        // domain, an alias without hostnames.
        let cases: Vec<ManagedCase> = vec![
            (
                ips(&["123.45.67.89"]),
                None,
                &[],
                format!("{head}123.45.67.89\tpodFoo\n"),
            ),
            (
                ips(&["203.0.113.1"]),
                Some("domainFoo"),
                &[],
                format!("{head}203.0.113.1\tpodFoo.domainFoo\tpodFoo\n"),
            ),
            (
                ips(&["203.0.113.1"]),
                Some("domainFoo"),
                &two[..1],
                format!(
                    "{head}203.0.113.1\tpodFoo.domainFoo\tpodFoo\n\n\
                     # Entries added by HostAliases.\n123.45.67.89\tfoo\tbar\tbaz\n"
                ),
            ),
            (
                ips(&["203.0.113.1"]),
                Some("domainFoo"),
                &two,
                format!(
                    "{head}203.0.113.1\tpodFoo.domainFoo\tpodFoo\n\n\
                     # Entries added by HostAliases.\n123.45.67.89\tfoo\tbar\tbaz\n\
                     456.78.90.123\tpark\tdoo\tboo\n"
                ),
            ),
            (
                ips(&["203.0.113.1", "fd00::6"]),
                Some("domainFoo"),
                &[],
                format!(
                    "{head}203.0.113.1\tpodFoo.domainFoo\tpodFoo\nfd00::6\tpodFoo.domainFoo\tpodFoo\n"
                ),
            ),
            (vec![], None, &[], head.clone()),
            (
                ips(&["10.1.0.5"]),
                Some(""),
                &[],
                format!("{head}10.1.0.5\tpodFoo\n"),
            ),
            (
                ips(&["10.1.0.5"]),
                None,
                &bare,
                format!("{head}10.1.0.5\tpodFoo\n\n# Entries added by HostAliases.\n10.9.9.9\t\n"),
            ),
        ];
        for (pod_ips, domain, aliases, want) in cases {
            assert_eq!(
                hosts_file(&pod_ips, "podFoo", domain, aliases, None),
                want,
                "{pod_ips:?} {domain:?} {aliases:?}"
            );
        }
    }

    #[test]
    fn node_hosts_file_table() {
        let file1 = format!("# hosts file for testing.\n{LOCAL}123.45.67.89\tsome.domain\n");
        let file2 =
            format!("# another hosts file for testing.\n{LOCAL}12.34.56.78\tanother.domain\n");
        let header = "# Kubernetes-managed hosts file (host network).\n";
        let aliases = "\n# Entries added by HostAliases.\n";
        let two = [
            alias("123.45.67.89", &["foo", "bar", "baz"]),
            alias("456.78.90.123", &["park", "doo", "boo"]),
        ];
        // kubelet's TestNodeHostsFileContent, then a node file without a final newline. The pod
        // IPs and names play no part on the host network.
        let cases: Vec<(&str, &[HostAlias], String)> = vec![
            (&file1, &[], format!("{header}{file1}")),
            (&file2, &[], format!("{header}{file2}")),
            (
                &file1,
                &two[..1],
                format!("{header}{file1}{aliases}123.45.67.89\tfoo\tbar\tbaz\n"),
            ),
            (
                &file2,
                &two,
                format!(
                    "{header}{file2}{aliases}123.45.67.89\tfoo\tbar\tbaz\n456.78.90.123\tpark\tdoo\tboo\n"
                ),
            ),
            (
                "127.0.0.1 localhost",
                &two[..1],
                format!("{header}127.0.0.1 localhost{aliases}123.45.67.89\tfoo\tbar\tbaz\n"),
            ),
            ("", &[], header.to_string()),
        ];
        for (node, aliases, want) in cases {
            assert_eq!(
                hosts_file(&ips(&["10.0.0.1"]), "node", Some("d"), aliases, Some(node)),
                want,
                "{node:?} {aliases:?}"
            );
        }
    }

    #[test]
    fn truncate_hostname_table() {
        // kubelet's TestTruncatePodHostname, run through the pod name as kubelet does.
        let cases = [
            ("test.pod.hostname", "test.pod.hostname"),
            (
                "1234567.1234567.1234567.1234567.1234567.1234567.1234567.1234567.1234567.",
                "1234567.1234567.1234567.1234567.1234567.1234567.1234567.1234567",
            ),
            (
                "1234567.1234567.1234567.1234567.1234567.1234567.1234567.123456.1234567.",
                "1234567.1234567.1234567.1234567.1234567.1234567.1234567.123456",
            ),
            (
                "1234567.1234567.1234567.1234567.1234567.1234567.1234567.123456-1234567.",
                "1234567.1234567.1234567.1234567.1234567.1234567.1234567.123456",
            ),
        ];
        for (input, want) in cases {
            let (hostname, domain) = hostname_and_domain(input, None, None, "ns", "cluster.local");
            assert_eq!(hostname, want, "{input:?}");
            assert!(hostname.len() <= HOSTNAME_MAX_LEN);
            assert_eq!(domain, None);
        }
        // Several trailing '-' and '.' go at once (strings.TrimRight); a multi-byte name is
        // cut on a char boundary instead of panicking.
        let dashes = format!("{}-.-.-xyz", "a".repeat(58));
        assert_eq!(truncate_hostname(&dashes), "a".repeat(58));
        let multi = format!("{}é", "a".repeat(62));
        assert_eq!(truncate_hostname(&multi), "a".repeat(62));
    }

    #[test]
    fn hostname_and_domain_table() {
        let long_name = format!("web-{}", "x".repeat(70));
        let cases: Vec<NameCase> = vec![
            ("web-0", None, None, ("web-0".to_string(), None)),
            ("web-0", Some(""), Some(""), ("web-0".to_string(), None)),
            ("web-0", Some("db"), None, ("db".to_string(), None)),
            (
                "web-0",
                None,
                Some("web"),
                (
                    "web-0".to_string(),
                    Some("web.prod.svc.cluster.local".to_string()),
                ),
            ),
            (
                "web-0",
                Some("primary"),
                Some("web"),
                (
                    "primary".to_string(),
                    Some("web.prod.svc.cluster.local".to_string()),
                ),
            ),
            (
                &long_name,
                None,
                None,
                (long_name[..HOSTNAME_MAX_LEN].to_string(), None),
            ),
        ];
        for (name, spec_hostname, subdomain, want) in cases {
            assert_eq!(
                hostname_and_domain(name, spec_hostname, subdomain, "prod", "cluster.local"),
                want,
                "{name:?} {spec_hostname:?} {subdomain:?}"
            );
        }
    }

    #[test]
    fn uts_hostname_table() {
        // "h.d" padded to exactly 64, then 65, characters.
        let domain_64 = "d".repeat(FQDN_MAX_LEN - 2);
        let domain_65 = "d".repeat(FQDN_MAX_LEN - 1);
        let fqdn_65 = format!("h.{domain_65}");
        let cases: Vec<(Option<&str>, bool, Result<String, String>)> = vec![
            (None, false, Ok("h".to_string())),
            (None, true, Ok("h".to_string())),
            (Some(""), true, Ok("h".to_string())),
            (Some("web.prod.svc.cluster.local"), false, Ok("h".to_string())),
            (
                Some("web.prod.svc.cluster.local"),
                true,
                Ok("h.web.prod.svc.cluster.local".to_string()),
            ),
            (Some(&domain_64), true, Ok(format!("h.{domain_64}"))),
            (Some(&domain_65), false, Ok("h".to_string())),
            (
                Some(&domain_65),
                true,
                Err(format!(
                    "failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn_65} is too long (64 characters is the max, 65 characters requested)"
                )),
            ),
        ];
        for (domain, fqdn, want) in cases {
            assert_eq!(uts_hostname("h", domain, fqdn), want, "{domain:?} {fqdn}");
        }
    }
}
