//! A pod's resolver configuration, as kubelet forms it (`pkg/kubelet/network/dns/dns.go`:
//! `GetPodDNS`, `getPodDNSType`, `parseResolvConf`, `appendDNSConfig`/`mergeDNSOptions`,
//! `formDNSNameserversFitsLimits`, `formDNSSearchFitsLimits`), and the `resolv.conf` text the
//! runtime writes from it (containerd's and CRI-O's `parseDNSOptions`). Pure: the caller reads
//! the host file and writes the result.
//!
//! Where kubelet is not deterministic or needs state tidelet does not have:
//! - `mergeDNSOptions` rebuilds the option list from a Go map, so kubelet's order is random from
//!   one pod start to the next. tidelet keeps the order of first appearance (host or cluster
//!   options first, then the pod's new ones); a later entry with the same name replaces the
//!   value in place. The set of options is kubelet's.
//! - kubelet's `--resolv-conf ""` with the `Default` policy gives one `127.0.0.1` (or `::1`) per
//!   node IP; tidelet passes no node IPs, which kubelet answers with a single `127.0.0.1`.
//! - A `nameserver` line without an address makes kubelet's `parseResolvConf` fail, and with it
//!   every pod's sandbox; [`parse_resolv_conf`] skips the line instead.
//! - kubelet records `MissingClusterDNS` twice, on the node and on the pod (with the pod's name
//!   in front); [`pod_dns`] returns the node's message once and the caller attaches it.
//! - An invalid `dnsPolicy` (the API server rejects it) is logged by kubelet and treated as
//!   `ClusterFirst`, with no event; so here.
//!
//! The search-list limits are the `ExpandedDNSConfig` ones (GA since Kubernetes 1.28, the gate
//! gone since): 32 domains, 2048 characters.

use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption};

/// `validation.MaxDNSNameservers`: glibc reads at most three `nameserver` lines.
pub const MAX_DNS_NAMESERVERS: usize = 3;
/// `validation.MaxDNSSearchPaths` (the expanded limit).
pub const MAX_DNS_SEARCH_PATHS: usize = 32;
/// `validation.MaxDNSSearchListChars`: the `search` line's domains joined by single spaces.
pub const MAX_DNS_SEARCH_LIST_CHARS: usize = 2048;
/// `utilvalidation.DNS1123SubdomainMaxLength`: kubelet drops longer search domains because some
/// resolvers (glibc 2.28) abort on them.
const MAX_SEARCH_DOMAIN_LEN: usize = 253;

/// The options kubelet gives every `ClusterFirst` pod (`defaultDNSOptions`).
const CLUSTER_OPTIONS: &[&str] = &["ndots:5"];

/// Event reason when the pod asks for cluster DNS and tidelet has no cluster DNS server.
pub const REASON_MISSING_CLUSTER_DNS: &str = "MissingClusterDNS";
/// Event reason when a limit cut the nameserver or search list.
pub const REASON_DNS_CONFIG_FORMING: &str = "DNSConfigForming";

/// The host's resolver config as kubelet parses `--resolv-conf`: every `nameserver` line
/// accumulates; for `search` and `options` the last line wins; trailing dots stripped from search
/// domains; comments (# ;) ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostResolv {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// Parses resolv.conf text as kubelet's `parseResolvConf` does. Lines are split on `\n` and
/// trimmed; a line starting with `#` is a comment; the first field picks the keyword (exact,
/// case-sensitive), so a `;` comment line and unknown keywords (`domain`, `sortlist`) fall
/// through. Only the first address of a `nameserver` line counts, so a trailing `# comment`
/// there is harmless; on `search` and `options` lines kubelet keeps every field, a trailing
/// comment included, and so does this. A lone `.` in `search` (the root) is dropped, as current
/// kubelets do, and one trailing dot is stripped from each other domain so `a.` and `a` count
/// once against the limits.
pub fn parse_resolv_conf(text: &str) -> HostResolv {
    let mut out = HostResolv::default();
    for line in text.split('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('#') {
            continue;
        }
        let mut fields = trimmed.split_whitespace();
        match fields.next() {
            Some("nameserver") => {
                // kubelet fails on an empty `nameserver` line ("nameserver list is empty");
                // skipping it keeps one bad line from stopping every pod.
                if let Some(addr) = fields.next() {
                    out.nameservers.push(addr.to_string());
                }
            }
            Some("search") => {
                out.searches = fields
                    .filter(|s| *s != ".")
                    .map(|s| s.strip_suffix('.').unwrap_or(s).to_string())
                    .collect();
            }
            Some("options") => out.options = fields.map(str::to_string).collect(),
            _ => {}
        }
    }
    out
}

/// What [`pod_dns`] needs from the pod and the agent's configuration.
pub struct Inputs<'a> {
    /// `spec.dnsPolicy`; `None` = `ClusterFirst` (the API server's default).
    pub dns_policy: Option<&'a str>,
    pub host_network: bool,
    pub dns_config: Option<&'a PodDNSConfig>,
    /// kubelet's `clusterDNS` (often empty on tidelet).
    pub cluster_dns: &'a [String],
    /// kubelet's `clusterDomain`, `cluster.local` by default; empty = no cluster search domains.
    pub cluster_domain: &'a str,
    pub namespace: &'a str,
    /// The parsed `--resolv-conf`; `None` = kubelet's `resolvConf: ""`, for which the `Default`
    /// policy gives `nameserver 127.0.0.1` and `search .`.
    pub host: Option<&'a HostResolv>,
}

/// The pod's resolver configuration: CRI's `DNSConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodDns {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    /// `name:value` (`ndots:5`) or a bare name (`rotate`).
    pub options: Vec<String>,
}

/// A Warning event kubelet records while forming the config: (reason, message), e.g.
/// ("MissingClusterDNS", "kubelet does not have ClusterDNS IP configured and cannot create Pod
/// using \"ClusterFirst\" policy. Falling back to \"Default\" policy."), ("DNSConfigForming",
/// "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver
/// line is: a b c"), and the Search Line one.
pub type Warning = (&'static str, String);

/// kubelet's `podDNSType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DnsType {
    Cluster,
    Host,
    None,
}

/// `getPodDNSType`: `ClusterFirst` on the host network falls back to the host's config (the
/// cluster DNS service is usually unreachable from there); `ClusterFirstWithHostNet` is how a
/// host-network pod asks for cluster DNS anyway.
fn pod_dns_type(policy: Option<&str>, host_network: bool) -> DnsType {
    match policy.unwrap_or("ClusterFirst") {
        "None" => DnsType::None,
        "ClusterFirstWithHostNet" => DnsType::Cluster,
        "ClusterFirst" if !host_network => DnsType::Cluster,
        "ClusterFirst" | "Default" => DnsType::Host,
        // kubelet logs the invalid policy and uses ClusterFirst, even on the host network.
        _ => DnsType::Cluster,
    }
}

/// kubelet's `GetPodDNS`: the pod's nameservers, search domains and options, and the Warning
/// events kubelet would record on the way (in kubelet's order: the cluster-DNS fallback, then
/// the nameserver limit, then the search limits).
pub fn pod_dns(i: &Inputs<'_>) -> (PodDns, Vec<Warning>) {
    let mut warnings = Vec::new();
    let mut dns = match i.host {
        Some(h) => PodDns {
            nameservers: h.nameservers.clone(),
            searches: h.searches.clone(),
            options: h.options.clone(),
        },
        None => PodDns::default(),
    };

    match pod_dns_type(i.dns_policy, i.host_network) {
        // `None` starts from nothing: only the pod's dnsConfig counts.
        DnsType::None => dns = PodDns::default(),
        // The cluster server is the only nameserver: it forwards what it cannot answer, so the
        // host's servers would only bypass it. Host search domains stay, behind the cluster's.
        DnsType::Cluster if !i.cluster_dns.is_empty() => {
            dns.nameservers = i.cluster_dns.iter().map(|s| go_ip_string(s)).collect();
            dns.searches = cluster_searches(&dns.searches, i.namespace, i.cluster_domain);
            dns.options = CLUSTER_OPTIONS.iter().map(|s| s.to_string()).collect();
        }
        ty => {
            if ty == DnsType::Cluster {
                warnings.push((
                    REASON_MISSING_CLUSTER_DNS,
                    "kubelet does not have ClusterDNS IP configured and cannot create Pod using \
                     \"ClusterFirst\" policy. Falling back to \"Default\" policy."
                        .to_string(),
                ));
            }
            // Without a host file kubelet points the pod at a resolver on its own loopback and
            // a root-only search list, rather than letting the runtime copy the node's file.
            if i.host.is_none() {
                dns.nameservers = vec!["127.0.0.1".to_string()];
                dns.searches = vec![".".to_string()];
            }
        }
    }

    if let Some(cfg) = i.dns_config {
        append_dns_config(&mut dns, cfg);
    }
    dns.nameservers = fit_nameservers(dns.nameservers, &mut warnings);
    dns.searches = fit_searches(dns.searches, &mut warnings);
    (dns, warnings)
}

/// `net.IP.String()` of a `clusterDNS` entry, which kubelet parsed at start-up: lower-case,
/// zero-compressed IPv6, IPv4-mapped addresses as dotted quads. An entry that does not parse is
/// kept as written (kubelet would have refused to start; tidelet's config check owns that).
fn go_ip_string(s: &str) -> String {
    match s.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        Ok(ip) => ip.to_string(),
        Err(_) => s.to_string(),
    }
}

/// `generateSearchesForDNSClusterFirst`: `<ns>.svc.<domain> svc.<domain> <domain>`, then the
/// host's, duplicates dropped. With no cluster domain kubelet keeps the host list as it is.
fn cluster_searches(host: &[String], namespace: &str, domain: &str) -> Vec<String> {
    if domain.is_empty() {
        return host.to_vec();
    }
    let mut all = vec![
        format!("{namespace}.svc.{domain}"),
        format!("svc.{domain}"),
        domain.to_string(),
    ];
    all.extend(host.iter().cloned());
    omit_duplicates(all)
}

/// kubelet's `omitDuplicates`: first occurrence wins, order kept.
fn omit_duplicates(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for s in items {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// `appendDNSConfig`: the pod's nameservers and search domains go after the policy's, without
/// duplicates; options merge by name.
fn append_dns_config(dns: &mut PodDns, cfg: &PodDNSConfig) {
    let mut servers = std::mem::take(&mut dns.nameservers);
    servers.extend(cfg.nameservers.iter().flatten().cloned());
    dns.nameservers = omit_duplicates(servers);

    let mut searches = std::mem::take(&mut dns.searches);
    searches.extend(cfg.searches.iter().flatten().cloned());
    dns.searches = omit_duplicates(searches);

    dns.options = merge_options(&dns.options, cfg.options.as_deref().unwrap_or_default());
}

/// `mergeDNSOptions`: options keyed by name (the text before the first `:`); a later entry with
/// the same name (the pod's over the base, or a repeated base option) replaces the value. An
/// empty value is written as the bare name, as kubelet does. kubelet's order comes from a Go map
/// (random); this keeps first appearance so the file is the same at every start.
fn merge_options(existing: &[String], pod: &[PodDNSConfigOption]) -> Vec<String> {
    let mut merged: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| match merged.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = value.to_string(),
        None => merged.push((name.to_string(), value.to_string())),
    };
    for op in existing {
        match op.split_once(':') {
            Some((name, value)) => set(name, value),
            None => set(op, ""),
        }
    }
    for op in pod {
        set(
            op.name.as_deref().unwrap_or_default(),
            op.value.as_deref().unwrap_or_default(),
        );
    }
    merged
        .into_iter()
        .map(|(name, value)| {
            if value.is_empty() {
                name
            } else {
                format!("{name}:{value}")
            }
        })
        .collect()
}

/// `formDNSNameserversFitsLimits`: keep the first three.
fn fit_nameservers(mut servers: Vec<String>, warnings: &mut Vec<Warning>) -> Vec<String> {
    if servers.len() > MAX_DNS_NAMESERVERS {
        servers.truncate(MAX_DNS_NAMESERVERS);
        warnings.push((
            REASON_DNS_CONFIG_FORMING,
            format!(
                "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: {}",
                servers.join(" ")
            ),
        ));
    }
    servers
}

/// `formDNSSearchFitsLimits`, in kubelet's order: keep the first 32 domains, drop any longer
/// than 253 characters, then cut domains from the end until the line fits in 2048 characters.
/// One warning for all three.
fn fit_searches(mut searches: Vec<String>, warnings: &mut Vec<Warning>) -> Vec<String> {
    let mut exceeded = false;
    if searches.len() > MAX_DNS_SEARCH_PATHS {
        searches.truncate(MAX_DNS_SEARCH_PATHS);
        exceeded = true;
    }

    let before = searches.len();
    searches.retain(|s| s.len() <= MAX_SEARCH_DOMAIN_LEN);
    exceeded |= searches.len() != before;

    let line_len = joined_len(&searches);
    if line_len > MAX_DNS_SEARCH_LIST_CHARS {
        // Each cut domain takes its separating space with it, as kubelet counts.
        let mut cut_len = 0;
        let mut cut_num = 0;
        for s in searches.iter().rev() {
            cut_len += s.len() + 1;
            cut_num += 1;
            if line_len <= MAX_DNS_SEARCH_LIST_CHARS + cut_len {
                break;
            }
        }
        searches.truncate(searches.len() - cut_num);
        exceeded = true;
    }

    if exceeded {
        warnings.push((
            REASON_DNS_CONFIG_FORMING,
            format!(
                "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}",
                searches.join(" ")
            ),
        ));
    }
    searches
}

/// `len(strings.Join(items, " "))`.
fn joined_len(items: &[String]) -> usize {
    items.iter().map(String::len).sum::<usize>() + items.len().saturating_sub(1)
}

/// The sandbox's resolv.conf as containerd and CRI-O write it from CRI's `DNSConfig`: `search a b
/// c`, one `nameserver X` per server, `options a b`, each line only when it has entries.
///
/// `None` when all three are empty: both runtimes then write nothing of kubelet's and copy the
/// node's `/etc/resolv.conf` into the sandbox instead (their fixed path, not kubelet's
/// `--resolv-conf`); the caller does the same. kubelet gets there with the `Default` policy (or
/// the `MissingClusterDNS` fallback) over a host file with no `nameserver`, `search` or `options`
/// line and no pod dnsConfig, or with `None` and an empty dnsConfig (which the API server
/// rejects).
pub fn render(d: &PodDns) -> Option<String> {
    if d.nameservers.is_empty() && d.searches.is_empty() && d.options.is_empty() {
        return None;
    }
    let mut out = String::new();
    if !d.searches.is_empty() {
        out.push_str("search ");
        out.push_str(&d.searches.join(" "));
        out.push('\n');
    }
    for s in &d.nameservers {
        out.push_str("nameserver ");
        out.push_str(s);
        out.push('\n');
    }
    if !d.options.is_empty() {
        out.push_str("options ");
        out.push_str(&d.options.join(" "));
        out.push('\n');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn opt(name: &str, value: Option<&str>) -> PodDNSConfigOption {
        PodDNSConfigOption {
            name: Some(name.to_string()),
            value: value.map(str::to_string),
        }
    }

    fn dns_config(
        nameservers: &[&str],
        searches: &[&str],
        options: &[(&str, Option<&str>)],
    ) -> PodDNSConfig {
        PodDNSConfig {
            nameservers: Some(strings(nameservers)),
            searches: Some(strings(searches)),
            options: Some(options.iter().map(|(n, v)| opt(n, *v)).collect()),
        }
    }

    fn pod(nameservers: &[&str], searches: &[&str], options: &[&str]) -> PodDns {
        PodDns {
            nameservers: strings(nameservers),
            searches: strings(searches),
            options: strings(options),
        }
    }

    /// resolv.conf text -> (nameservers, searches, options).
    type ResolvCase<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a [&'a str]);
    /// (base options, the pod's options as (name, value)) -> merged.
    type MergeCase<'a> = (
        &'a [&'a str],
        &'a [(&'a str, Option<&'a str>)],
        &'a [&'a str],
    );

    const MISSING: &str = "kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.";
    const SEARCH_WARN: &str = "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: ";
    const NS_WARN: &str = "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: ";

    #[test]
    fn parse_resolv_conf_table() {
        // kubelet's TestParseResolvConf, then tidelet's own cases. The two cases kubelet
        // expects an error for ("nameserver" alone) are skipped lines here.
        let cases: &[ResolvCase] = &[
            ("", &[], &[], &[]),
            (" ", &[], &[], &[]),
            ("\n", &[], &[], &[]),
            ("\t\n\t", &[], &[], &[]),
            ("#comment\n", &[], &[], &[]),
            (" #comment\n", &[], &[], &[]),
            ("#comment\n#comment", &[], &[], &[]),
            ("#comment\nnameserver", &[], &[], &[]),
            ("#comment\nnameserver\nsearch", &[], &[], &[]),
            ("#comment\nnameserver 1.2.3.4\nsearch", &["1.2.3.4"], &[], &[]),
            ("nameserver 1.2.3.4", &["1.2.3.4"], &[], &[]),
            (" nameserver 1.2.3.4", &["1.2.3.4"], &[], &[]),
            ("\tnameserver 1.2.3.4", &["1.2.3.4"], &[], &[]),
            ("nameserver\t1.2.3.4", &["1.2.3.4"], &[], &[]),
            ("nameserver \t 1.2.3.4", &["1.2.3.4"], &[], &[]),
            (
                "nameserver 1.2.3.4\nnameserver 5.6.7.8",
                &["1.2.3.4", "5.6.7.8"],
                &[],
                &[],
            ),
            ("nameserver 1.2.3.4 #comment", &["1.2.3.4"], &[], &[]),
            ("search ", &[], &[], &[]),
            ("search foo", &[], &["foo"], &[]),
            ("search foo bar", &[], &["foo", "bar"], &[]),
            ("search foo. bar", &[], &["foo", "bar"], &[]),
            ("search foo bar bat\n", &[], &["foo", "bar", "bat"], &[]),
            ("search foo\nsearch bar", &[], &["bar"], &[]),
            (
                "nameserver 1.2.3.4\nsearch foo bar",
                &["1.2.3.4"],
                &["foo", "bar"],
                &[],
            ),
            (
                "nameserver 1.2.3.4\nsearch foo\nnameserver 5.6.7.8\nsearch bar",
                &["1.2.3.4", "5.6.7.8"],
                &["bar"],
                &[],
            ),
            (
                "#comment\nnameserver 1.2.3.4\n#comment\nsearch foo\ncomment",
                &["1.2.3.4"],
                &["foo"],
                &[],
            ),
            ("options ", &[], &[], &[]),
            (
                "options ndots:5 attempts:2",
                &[],
                &[],
                &["ndots:5", "attempts:2"],
            ),
            (
                "options ndots:1\noptions ndots:5 attempts:3",
                &[],
                &[],
                &["ndots:5", "attempts:3"],
            ),
            (
                "nameserver 1.2.3.4\nsearch foo\nnameserver 5.6.7.8\nsearch bar\noptions ndots:5 attempts:4",
                &["1.2.3.4", "5.6.7.8"],
                &["bar"],
                &["ndots:5", "attempts:4"],
            ),
            // The root domain is dropped; only one trailing dot is stripped.
            ("search .", &[], &[], &[]),
            ("search foo. . bar..", &[], &["foo", "bar."], &[]),
            // `;` comments and unknown keywords fall through; keywords are case-sensitive.
            (
                "; nameserver 9.9.9.9\n;nameserver 9.9.9.9\nNameserver 9.9.9.9\ndomain x\nnameserver 1.1.1.1",
                &["1.1.1.1"],
                &[],
                &[],
            ),
            // kubelet keeps a trailing comment's words on a search line.
            ("search foo #c", &[], &["foo", "#c"], &[]),
            // CRLF files: the '\r' is trimmed with the rest of the whitespace.
            (
                "nameserver 10.0.0.1\r\nsearch a.example\r\noptions rotate\r\n",
                &["10.0.0.1"],
                &["a.example"],
                &["rotate"],
            ),
        ];
        for (text, ns, search, options) in cases {
            assert_eq!(
                parse_resolv_conf(text),
                HostResolv {
                    nameservers: strings(ns),
                    searches: strings(search),
                    options: strings(options),
                },
                "{text:?}"
            );
        }
    }

    #[test]
    fn pod_dns_type_table() {
        // kubelet's TestGetPodDNSType, plus the default policy.
        let cases = [
            (Some("ClusterFirst"), false, DnsType::Cluster),
            (Some("ClusterFirstWithHostNet"), true, DnsType::Cluster),
            (Some("ClusterFirstWithHostNet"), false, DnsType::Cluster),
            (Some("Default"), false, DnsType::Host),
            (Some("Default"), true, DnsType::Host),
            (Some("ClusterFirst"), true, DnsType::Host),
            (Some("None"), false, DnsType::None),
            (Some("None"), true, DnsType::None),
            (Some("invalidPolicy"), true, DnsType::Cluster),
            (None, false, DnsType::Cluster),
            (None, true, DnsType::Host),
        ];
        for (policy, host_network, want) in cases {
            assert_eq!(
                pod_dns_type(policy, host_network),
                want,
                "{policy:?} hostNetwork={host_network}"
            );
        }
    }

    #[test]
    fn fit_nameservers_table() {
        // kubelet's TestFormDNSNameserversFitsLimits.
        let cases: &[(&[&str], &[&str], Option<&str>)] = &[
            (&["127.0.0.1"], &["127.0.0.1"], None),
            (
                &["127.0.0.1", "10.0.0.10", "8.8.8.8"],
                &["127.0.0.1", "10.0.0.10", "8.8.8.8"],
                None,
            ),
            (
                &["127.0.0.1", "10.0.0.10", "8.8.8.8", "1.2.3.4"],
                &["127.0.0.1", "10.0.0.10", "8.8.8.8"],
                Some("127.0.0.1 10.0.0.10 8.8.8.8"),
            ),
        ];
        for (input, want, warn) in cases {
            let mut warnings = Vec::new();
            assert_eq!(
                fit_nameservers(strings(input), &mut warnings),
                strings(want)
            );
            let want_warnings: Vec<Warning> = warn
                .iter()
                .map(|line| (REASON_DNS_CONFIG_FORMING, format!("{NS_WARN}{line}")))
                .collect();
            assert_eq!(warnings, want_warnings, "{input:?}");
        }
    }

    #[test]
    fn fit_searches_table() {
        // 2048 = 128 + 127 * 15 + 15 separators (kubelet's searchPathList2048Chars).
        let mut list_2048 = vec!["A".repeat(128)];
        list_2048.extend(std::iter::repeat_n("A".repeat(127), 15));
        let mut list_2050 = list_2048.clone();
        list_2050.push("B".to_string());
        let numbered = |n: usize| -> Vec<String> {
            let mut v = strings(&["testNS.svc.TEST", "svc.TEST", "TEST"]);
            v.extend((4..=n).map(|i| i.to_string()));
            v
        };
        let long = "B".repeat(256);
        let at_limit = "C".repeat(253);

        // kubelet's TestFormDNSSearchFitsLimits (the ExpandedDNSConfig and shared cases), then
        // tidelet's: a 253-character domain is kept, two domains cut to fit 2048, and the count
        // cut before the length filter (so the 33rd entry is gone even though the filter then
        // leaves room for it).
        let cases: Vec<(Vec<String>, Vec<String>, bool)> = vec![
            (
                strings(&["testNS.svc.TEST", "svc.TEST", "TEST"]),
                strings(&["testNS.svc.TEST", "svc.TEST", "TEST"]),
                false,
            ),
            (
                strings(&["testNS.svc.TEST", "svc.TEST", "TEST", "AAA", "BBB"]),
                strings(&["testNS.svc.TEST", "svc.TEST", "TEST", "AAA", "BBB"]),
                false,
            ),
            (
                strings(&["testNS.svc.TEST", "svc.TEST", "TEST", "AAA", &long, "BBB"]),
                strings(&["testNS.svc.TEST", "svc.TEST", "TEST", "AAA", "BBB"]),
                true,
            ),
            (list_2048.clone(), list_2048.clone(), false),
            (list_2050, list_2048.clone(), true),
            (
                strings(&[
                    "testNS.svc.TEST",
                    "svc.TEST",
                    "TEST",
                    "AAA",
                    "BBB",
                    "CCC",
                    "DDD",
                ]),
                strings(&[
                    "testNS.svc.TEST",
                    "svc.TEST",
                    "TEST",
                    "AAA",
                    "BBB",
                    "CCC",
                    "DDD",
                ]),
                false,
            ),
            (numbered(32), numbered(32), false),
            (numbered(33), numbered(32), true),
            (
                strings(&["a", &at_limit]),
                strings(&["a", &at_limit]),
                false,
            ),
            (
                {
                    let mut v = list_2048.clone();
                    v.truncate(15);
                    v.extend(strings(&[&at_limit, &at_limit]));
                    v
                },
                {
                    let mut v = list_2048.clone();
                    v.truncate(15);
                    v
                },
                true,
            ),
            (
                {
                    let mut v = numbered(31);
                    v.push(long.clone());
                    v.push("x".to_string());
                    v
                },
                numbered(31),
                true,
            ),
        ];
        for (input, want, warn) in cases {
            let mut warnings = Vec::new();
            let got = fit_searches(input.clone(), &mut warnings);
            assert_eq!(got, want, "{input:?}");
            let want_warnings: Vec<Warning> = if warn {
                vec![(
                    REASON_DNS_CONFIG_FORMING,
                    format!("{SEARCH_WARN}{}", want.join(" ")),
                )]
            } else {
                vec![]
            };
            assert_eq!(warnings, want_warnings, "{input:?}");
        }
    }

    #[test]
    fn merge_options_table() {
        // kubelet's TestMergeDNSOptions (which compares sets; the order here is tidelet's), then
        // repeated base options, empty values and a base option without a value.
        let cases: &[MergeCase] = &[
            (&["ndots:5", "debug"], &[], &["ndots:5", "debug"]),
            (
                &["ndots:5", "debug"],
                &[("single-request", None), ("attempts", Some("3"))],
                &["ndots:5", "debug", "single-request", "attempts:3"],
            ),
            (
                &["ndots:5", "debug"],
                &[
                    ("ndots", Some("3")),
                    ("debug", None),
                    ("single-request", None),
                    ("attempts", Some("3")),
                ],
                &["ndots:3", "debug", "single-request", "attempts:3"],
            ),
            (
                &["ndots:1", "rotate", "ndots:2"],
                &[],
                &["ndots:2", "rotate"],
            ),
            (&["ndots:5"], &[("ndots", Some(""))], &["ndots"]),
            (&["ndots:"], &[], &["ndots"]),
            (&["timeout:1:2"], &[], &["timeout:1:2"]),
            (
                &[],
                &[("b", None), ("a", Some("1")), ("b", Some("2"))],
                &["b:2", "a:1"],
            ),
        ];
        for (existing, pod_opts, want) in cases {
            let pod_opts: Vec<PodDNSConfigOption> =
                pod_opts.iter().map(|(n, v)| opt(n, *v)).collect();
            assert_eq!(
                merge_options(&strings(existing), &pod_opts),
                strings(want),
                "{existing:?} + {pod_opts:?}"
            );
        }
    }

    #[test]
    fn pod_dns_table() {
        let host = HostResolv {
            nameservers: strings(&["8.8.8.8"]),
            searches: strings(&["host.domain"]),
            options: strings(&["ndots:1", "rotate"]),
        };
        let busy_host = HostResolv {
            nameservers: strings(&["1.1.1.1", "8.8.8.8", "9.9.9.9"]),
            searches: strings(&["a.example", "kubernetes.io"]),
            options: vec![],
        };
        let empty_host = HostResolv::default();
        let cluster = strings(&["10.0.0.10"]);
        let no_cluster: Vec<String> = vec![];
        let custom = dns_config(
            &["10.0.0.11"],
            &["my.domain"],
            &[("ndots", Some("3")), ("debug", None)],
        );
        let none_cfg = dns_config(
            &["203.0.113.1"],
            &["my.domain", "second.domain"],
            &[("ndots", Some("3")), ("debug", None)],
        );
        let repeating_host = HostResolv {
            nameservers: strings(&["1.1.1.1", "1.1.1.1"]),
            searches: strings(&["a", "a"]),
            options: strings(&["ndots:1", "ndots:2"]),
        };
        let odd_cluster = strings(&["2001:DB8:0:0:0:0:0:1", "::ffff:10.0.0.10"]);
        let two_servers = dns_config(&["8.8.8.8", "10.0.0.53"], &[], &[]);
        let ns_svc = "testNS.svc.kubernetes.io";
        let svc = "svc.kubernetes.io";
        let dom = "kubernetes.io";

        struct Case<'a> {
            desc: &'a str,
            policy: Option<&'a str>,
            host_network: bool,
            cfg: Option<&'a PodDNSConfig>,
            cluster_dns: &'a [String],
            domain: &'a str,
            host: Option<&'a HostResolv>,
            want: PodDns,
            warnings: Vec<Warning>,
        }
        let case = |desc, policy, host_network, cfg, cluster_dns, host, want| Case {
            desc,
            policy,
            host_network,
            cfg,
            cluster_dns,
            domain: dom,
            host,
            want,
            warnings: vec![],
        };
        let missing = || (REASON_MISSING_CLUSTER_DNS, MISSING.to_string());

        let cases = vec![
            // kubelet's TestGetPodDNSCustom (host file "nameserver 8.8.8.8 / search
            // host.domain", cluster DNS 10.0.0.10, domain kubernetes.io).
            case(
                "None without dnsConfig: empty",
                Some("None"),
                false,
                None,
                &cluster,
                Some(&host),
                PodDns::default(),
            ),
            case(
                "None with dnsConfig: only the pod's",
                Some("None"),
                false,
                Some(&none_cfg),
                &cluster,
                Some(&host),
                pod(
                    &["203.0.113.1"],
                    &["my.domain", "second.domain"],
                    &["ndots:3", "debug"],
                ),
            ),
            case(
                "ClusterFirst with dnsConfig: merged",
                Some("ClusterFirst"),
                false,
                Some(&custom),
                &cluster,
                Some(&host),
                pod(
                    &["10.0.0.10", "10.0.0.11"],
                    &[ns_svc, svc, dom, "host.domain", "my.domain"],
                    &["ndots:3", "debug"],
                ),
            ),
            case(
                "ClusterFirstWithHostNet on the host network: merged",
                Some("ClusterFirstWithHostNet"),
                true,
                Some(&custom),
                &cluster,
                Some(&host),
                pod(
                    &["10.0.0.10", "10.0.0.11"],
                    &[ns_svc, svc, dom, "host.domain", "my.domain"],
                    &["ndots:3", "debug"],
                ),
            ),
            case(
                "Default with dnsConfig: host's then the pod's",
                Some("Default"),
                false,
                Some(&custom),
                &cluster,
                Some(&host),
                pod(
                    &["8.8.8.8", "10.0.0.11"],
                    &["host.domain", "my.domain"],
                    &["ndots:3", "rotate", "debug"],
                ),
            ),
            // kubelet's testGetPodDNS: resolvConf "" (no host file).
            case(
                "no host file, ClusterFirstWithHostNet: cluster server, cluster searches",
                Some("ClusterFirstWithHostNet"),
                true,
                None,
                &cluster,
                None,
                pod(&["10.0.0.10"], &[ns_svc, svc, dom], &["ndots:5"]),
            ),
            case(
                "no host file, ClusterFirst on the host network: loopback and root search",
                Some("ClusterFirst"),
                true,
                None,
                &cluster,
                None,
                pod(&["127.0.0.1"], &["."], &[]),
            ),
            case(
                "no host file, Default: loopback and root search",
                Some("Default"),
                false,
                None,
                &cluster,
                None,
                pod(&["127.0.0.1"], &["."], &[]),
            ),
            // tidelet's own.
            case(
                "default policy, cluster: host options dropped, only ndots:5",
                None,
                false,
                None,
                &cluster,
                Some(&host),
                pod(
                    &["10.0.0.10"],
                    &[ns_svc, svc, dom, "host.domain"],
                    &["ndots:5"],
                ),
            ),
            case(
                "cluster: a host search equal to a cluster one is dropped",
                None,
                false,
                None,
                &cluster,
                Some(&busy_host),
                pod(
                    &["10.0.0.10"],
                    &[ns_svc, svc, dom, "a.example"],
                    &["ndots:5"],
                ),
            ),
            case(
                "Default: the host file verbatim, no dedup without dnsConfig",
                Some("Default"),
                false,
                None,
                &cluster,
                Some(&repeating_host),
                pod(
                    &["1.1.1.1", "1.1.1.1"],
                    &["a", "a"],
                    &["ndots:1", "ndots:2"],
                ),
            ),
            case(
                "Default over an empty host file: empty (runtime copies the node's)",
                Some("Default"),
                false,
                None,
                &cluster,
                Some(&empty_host),
                PodDns::default(),
            ),
            case(
                "cluster servers are written as Go prints them",
                None,
                false,
                None,
                &odd_cluster,
                None,
                pod(
                    &["2001:db8::1", "10.0.0.10"],
                    &[ns_svc, svc, dom],
                    &["ndots:5"],
                ),
            ),
            Case {
                domain: "",
                ..case(
                    "no cluster domain: the host searches only",
                    None,
                    false,
                    None,
                    &cluster,
                    Some(&host),
                    pod(&["10.0.0.10"], &["host.domain"], &["ndots:5"]),
                )
            },
            Case {
                warnings: vec![missing()],
                ..case(
                    "ClusterFirst without cluster DNS: warning, host config",
                    Some("ClusterFirst"),
                    false,
                    None,
                    &no_cluster,
                    Some(&host),
                    pod(&["8.8.8.8"], &["host.domain"], &["ndots:1", "rotate"]),
                )
            },
            Case {
                warnings: vec![missing()],
                ..case(
                    "default policy without cluster DNS or host file: warning, loopback",
                    None,
                    false,
                    None,
                    &no_cluster,
                    None,
                    pod(&["127.0.0.1"], &["."], &[]),
                )
            },
            Case {
                warnings: vec![missing()],
                ..case(
                    "ClusterFirstWithHostNet without cluster DNS: same ClusterFirst warning",
                    Some("ClusterFirstWithHostNet"),
                    true,
                    Some(&custom),
                    &no_cluster,
                    None,
                    pod(
                        &["127.0.0.1", "10.0.0.11"],
                        &[".", "my.domain"],
                        &["ndots:3", "debug"],
                    ),
                )
            },
            case(
                "ClusterFirst on the host network without cluster DNS: Default, no warning",
                Some("ClusterFirst"),
                true,
                None,
                &no_cluster,
                Some(&host),
                pod(&["8.8.8.8"], &["host.domain"], &["ndots:1", "rotate"]),
            ),
            Case {
                warnings: vec![
                    missing(),
                    (
                        REASON_DNS_CONFIG_FORMING,
                        format!("{NS_WARN}1.1.1.1 8.8.8.8 9.9.9.9"),
                    ),
                ],
                ..case(
                    "limits apply after the merge, warnings in kubelet's order",
                    None,
                    false,
                    Some(&two_servers),
                    &no_cluster,
                    Some(&busy_host),
                    pod(
                        &["1.1.1.1", "8.8.8.8", "9.9.9.9"],
                        &["a.example", "kubernetes.io"],
                        &[],
                    ),
                )
            },
        ];

        for c in cases {
            let (got, warnings) = pod_dns(&Inputs {
                dns_policy: c.policy,
                host_network: c.host_network,
                dns_config: c.cfg,
                cluster_dns: c.cluster_dns,
                cluster_domain: c.domain,
                namespace: "testNS",
                host: c.host,
            });
            assert_eq!(got, c.want, "{}", c.desc);
            assert_eq!(warnings, c.warnings, "{}", c.desc);
        }
    }

    #[test]
    fn pod_dns_search_limits_after_merge() {
        // 30 host domains + 3 cluster ones + 1 from the pod: 34, cut to 32 with one warning.
        let host = HostResolv {
            nameservers: vec![],
            searches: (1..=30).map(|i| format!("d{i}.example")).collect(),
            options: vec![],
        };
        let cfg = dns_config(&[], &["pod.example"], &[]);
        let (got, warnings) = pod_dns(&Inputs {
            dns_policy: None,
            host_network: false,
            dns_config: Some(&cfg),
            cluster_dns: &strings(&["10.96.0.10"]),
            cluster_domain: "cluster.local",
            namespace: "default",
            host: Some(&host),
        });
        let mut want = strings(&[
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
        ]);
        want.extend((1..=29).map(|i| format!("d{i}.example")));
        assert_eq!(got.searches, want);
        assert_eq!(
            warnings,
            vec![(
                REASON_DNS_CONFIG_FORMING,
                format!("{SEARCH_WARN}{}", want.join(" "))
            )]
        );
    }

    #[test]
    fn render_table() {
        let cases = [
            (PodDns::default(), None),
            (
                pod(
                    &["10.96.0.10"],
                    &[
                        "default.svc.cluster.local",
                        "svc.cluster.local",
                        "cluster.local",
                    ],
                    &["ndots:5"],
                ),
                Some(
                    "search default.svc.cluster.local svc.cluster.local cluster.local\n\
                     nameserver 10.96.0.10\n\
                     options ndots:5\n",
                ),
            ),
            (
                pod(&["1.1.1.1", "8.8.8.8"], &[], &[]),
                Some("nameserver 1.1.1.1\nnameserver 8.8.8.8\n"),
            ),
            (pod(&[], &["a", "b"], &[]), Some("search a b\n")),
            (
                pod(&[], &[], &["ndots:2", "rotate"]),
                Some("options ndots:2 rotate\n"),
            ),
            (
                pod(&["127.0.0.1"], &["."], &[]),
                Some("search .\nnameserver 127.0.0.1\n"),
            ),
        ];
        for (dns, want) in cases {
            assert_eq!(render(&dns).as_deref(), want, "{dns:?}");
        }
    }
}
