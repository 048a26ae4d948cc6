//! The topic tree (docs/mqtt.md). Under a node's prefix `P` (default `tidelet/<node>/`):
//! `P online`, `P node`, `P lease`, `P pods/<ns>/<name>`, `P events` go up;
//! `P desired/pods/<ns>/<name>` comes down and `P desired/results/<ns>/<name>` answers it;
//! `P sync` is the agent's own marker. Pure functions: building and parsing topics.

/// The default root of the fleet: nodes are `tidelet/<node>/`.
pub const DEFAULT_ROOT: &str = "tidelet/";

pub const ONLINE: &str = "online";
pub const NODE: &str = "node";
pub const LEASE: &str = "lease";
pub const EVENTS: &str = "events";
pub const SYNC: &str = "sync";
pub const PODS: &str = "pods/";
pub const DESIRED_PODS: &str = "desired/pods/";
pub const DESIRED_RESULTS: &str = "desired/results/";

/// The default prefix of a node: `tidelet/<node>/`.
pub fn default_prefix(node_name: &str) -> String {
    format!("{DEFAULT_ROOT}{node_name}/")
}

/// `P pods/<namespace>/<name>` for the key `namespace/name`.
pub fn pod(prefix: &str, key: &str) -> String {
    format!("{prefix}{PODS}{key}")
}

/// `P desired/pods/<namespace>/<name>`.
pub fn desired_pod(prefix: &str, key: &str) -> String {
    format!("{prefix}{DESIRED_PODS}{key}")
}

/// `P desired/results/<namespace>/<name>`.
pub fn desired_result(prefix: &str, key: &str) -> String {
    format!("{prefix}{DESIRED_RESULTS}{key}")
}

/// The `namespace/name` key of a topic `<prefix><kind><namespace>/<name>` (`kind` is `PODS`,
/// `DESIRED_PODS` or `DESIRED_RESULTS`), if the topic is exactly that shape: two non-empty
/// segments, no wildcard characters.
pub fn key_of<'a>(prefix: &str, kind: &str, topic: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix(kind)?;
    let (ns, name) = rest.split_once('/')?;
    let ok = |s: &str| !s.is_empty() && !s.contains(['/', '+', '#']);
    (ok(ns) && ok(name)).then_some((ns, name))
}

/// A node's name from a topic `<root><node>/<rest>`, with the rest.
pub fn node_of<'a>(root: &str, topic: &'a str) -> Option<(&'a str, &'a str)> {
    let (node, rest) = topic.strip_prefix(root)?.split_once('/')?;
    (!node.is_empty()).then_some((node, rest))
}

/// Whether `prefix` is usable as a topic prefix: non-empty, ends in `/`, no wildcards, no
/// leading `/` or `$` (broker-internal topics), no empty level.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.ends_with('/') {
        return Err(format!("{prefix:?} must end in '/'"));
    }
    if prefix.starts_with('/') || prefix.starts_with('$') {
        return Err(format!("{prefix:?} must not start with '/' or '$'"));
    }
    if prefix.contains(['+', '#', '\0']) {
        return Err(format!("{prefix:?} must not contain '+', '#' or NUL"));
    }
    if prefix[..prefix.len() - 1].split('/').any(str::is_empty) {
        return Err(format!("{prefix:?} has an empty topic level"));
    }
    if prefix.len() > 1024 {
        return Err(format!("{} bytes is too long for a prefix", prefix.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_built_and_parsed_back() {
        let p = default_prefix("board-1");
        assert_eq!(p, "tidelet/board-1/");
        assert_eq!(pod(&p, "default/web"), "tidelet/board-1/pods/default/web");
        assert_eq!(
            desired_pod(&p, "kube-system/x"),
            "tidelet/board-1/desired/pods/kube-system/x"
        );
        assert_eq!(
            desired_result(&p, "a/b"),
            "tidelet/board-1/desired/results/a/b"
        );
        type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>);
        let cases: &[Case] = &[
            (
                "tidelet/board-1/pods/default/web",
                PODS,
                Some(("default", "web")),
            ),
            (
                "tidelet/board-1/desired/pods/ns/n",
                DESIRED_PODS,
                Some(("ns", "n")),
            ),
            ("tidelet/board-1/desired/pods/ns", DESIRED_PODS, None),
            ("tidelet/board-1/desired/pods/ns/", DESIRED_PODS, None),
            ("tidelet/board-1/desired/pods//n", DESIRED_PODS, None),
            (
                "tidelet/board-1/desired/pods/ns/n/extra",
                DESIRED_PODS,
                None,
            ),
            ("tidelet/board-2/desired/pods/ns/n", DESIRED_PODS, None),
            ("tidelet/board-1/pods/default/web", DESIRED_PODS, None),
            ("tidelet/board-1/desired/pods/ns/+", DESIRED_PODS, None),
        ];
        for (topic, kind, want) in cases {
            assert_eq!(key_of(&p, kind, topic), *want, "{topic}");
        }
        assert_eq!(
            node_of(DEFAULT_ROOT, "tidelet/b1/pods/default/web"),
            Some(("b1", "pods/default/web"))
        );
        assert_eq!(node_of(DEFAULT_ROOT, "tidelet//online"), None);
        assert_eq!(node_of(DEFAULT_ROOT, "other/b1/online"), None);
    }

    #[test]
    fn prefixes_are_checked() {
        for ok in ["tidelet/n1/", "a/", "site/3/tidelet/n1/"] {
            assert_eq!(check_prefix(ok), Ok(()), "{ok}");
        }
        for bad in [
            "tidelet/n1",
            "/tidelet/",
            "$SYS/",
            "a/+/",
            "a/#/",
            "a//b/",
            "",
        ] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }
}
