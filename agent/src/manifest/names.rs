//! The API server's name and format checks (`k8s.io/apimachinery/pkg/util/validation`), as
//! small pure functions returning the reason a value is refused. Written by hand rather than
//! with regexes: the rules are short and the messages say what is wrong.

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    const MSG: &str = "must be a lowercase RFC 1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit";
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err(format!("{s:?}: must be no more than 63 characters"));
    }
    let b = s.as_bytes();
    let ok = b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        Err(format!("{s:?}: {MSG}"))
    }
}

/// Dot-separated DNS-1123 labels, at most 253 characters (so never `/`, `..` or a leading `.`).
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 253 {
        return Err(format!("{s:?}: must be no more than 253 characters"));
    }
    if s.split('.').all(|l| dns1123_label(l).is_ok()) {
        Ok(())
    } else {
        Err(format!(
            "{s:?}: must be a lowercase RFC 1123 subdomain: lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit"
        ))
    }
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Label and annotation keys: `[prefix/]name`, prefix a DNS subdomain, name at most 63 of
/// `[-A-Za-z0-9_.]` starting and ending alphanumeric.
pub fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if p.is_empty() || dns1123_subdomain(p).is_err() {
            return Err(format!(
                "{s:?}: the prefix before '/' must be a DNS subdomain"
            ));
        }
    }
    if name.len() > 63 || !is_qualified_part(name) {
        return Err(format!(
            "{s:?}: must be at most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit, with an optional DNS subdomain prefix and '/'"
        ));
    }
    Ok(())
}

/// Empty, or at most 63 characters like a qualified name's name part.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || (s.len() <= 63 && is_qualified_part(s)) {
        Ok(())
    } else {
        Err(format!("value {s:?}: must be empty or at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))
    }
}

/// `[-._a-zA-Z][-._a-zA-Z0-9]*` (the API server's `IsEnvVarName`).
pub fn env_var_name(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(format!("{s:?}: must consist of letters, digits, '_', '-' or '.', and must not start with a digit"))
    }
}

/// An IANA service name: at most 15 of `[a-z0-9-]`, at least one letter, no `--`, no `-` at
/// either end.
pub fn port_name(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = s.len() <= 15
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.iter().any(u8::is_ascii_lowercase)
        && !s.contains("--")
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?}: must be at most 15 lowercase letters, digits and '-', with at least one letter"
        ))
    }
}

/// A path without `..` components (and absolute, when `absolute` is asked).
pub fn clean_path(p: &str, absolute: bool) -> Result<(), String> {
    if p.is_empty() {
        return Err("required".into());
    }
    if absolute && !p.starts_with('/') {
        return Err(format!("{p:?}: must be an absolute path"));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(format!("{p:?}: must not contain '..'"));
    }
    if p.contains('\0') {
        return Err(format!("{p:?}: must not contain NUL"));
    }
    Ok(())
}

/// `fieldRef.fieldPath` values the API server accepts for env vars.
pub fn env_field_path(p: &str) -> Result<(), String> {
    const PLAIN: &[&str] = &[
        "metadata.name",
        "metadata.namespace",
        "metadata.uid",
        "spec.nodeName",
        "spec.serviceAccountName",
        "status.hostIP",
        "status.hostIPs",
        "status.podIP",
        "status.podIPs",
    ];
    if PLAIN.contains(&p) || subscript(p).is_some() {
        Ok(())
    } else {
        Err(format!("{p:?}: not a supported field path (one of {}, metadata.labels['KEY'], metadata.annotations['KEY'])", PLAIN.join(", ")))
    }
}

/// `metadata.labels['k']` -> `("labels", "k")`, likewise annotations.
pub fn subscript(p: &str) -> Option<(&str, &str)> {
    for map in ["labels", "annotations"] {
        let rest = p.strip_prefix("metadata.")?.strip_prefix(map);
        if let Some(key) = rest
            .and_then(|r| r.strip_prefix("['"))
            .and_then(|r| r.strip_suffix("']"))
        {
            if qualified_name(key).is_ok() {
                return Some((map, key));
            }
        }
    }
    None
}

/// `resourceFieldRef.resource` values the API server accepts.
pub fn env_resource(r: &str) -> Result<(), String> {
    let ok = match r.split_once('.') {
        Some(("limits" | "requests", res)) => {
            matches!(res, "cpu" | "memory" | "ephemeral-storage") || is_hugepages(res)
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{r:?}: must be one of limits.cpu, limits.memory, limits.ephemeral-storage, requests.cpu, requests.memory, requests.ephemeral-storage, limits.hugepages-<size>, requests.hugepages-<size>"))
    }
}

/// `hugepages-<size>` with a size that is a valid quantity.
pub fn is_hugepages(name: &str) -> bool {
    name.strip_prefix("hugepages-")
        .is_some_and(|size| crate::quantity::parse_units(size).is_ok_and(|v| v > 0))
}

/// A container resource name: `cpu`, `memory`, `ephemeral-storage`, `hugepages-<size>`, or an
/// extended resource `<domain>/<name>` outside the `kubernetes.io` domain.
pub fn resource_name(name: &str) -> Result<(), String> {
    if matches!(name, "cpu" | "memory" | "ephemeral-storage") || is_hugepages(name) {
        return Ok(());
    }
    match name.split_once('/') {
        Some((domain, _)) if domain == "kubernetes.io" || domain.ends_with(".kubernetes.io") => {
            Err(format!("{name:?}: unknown resource in the kubernetes.io domain"))
        }
        Some(_) if name.starts_with("requests.") => Err(format!("{name:?}: must not start with 'requests.'")),
        Some(_) => qualified_name(name),
        None => Err(format!(
            "{name:?}: unknown resource (cpu, memory, ephemeral-storage, hugepages-<size>, or an extended resource <domain>/<name>)"
        )),
    }
}

/// Whether requests may be below limits (native resources other than hugepages).
pub fn overcommit_allowed(name: &str) -> bool {
    !name.contains('/') && !is_hugepages(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_checks() {
        type Check = fn(&str) -> Result<(), String>;
        let cases: &[(Check, &str, bool)] = &[
            (dns1123_label, "web-1", true),
            (dns1123_label, "a", true),
            (dns1123_label, "Web", false),
            (dns1123_label, "-web", false),
            (dns1123_label, "web-", false),
            (dns1123_label, "a.b", false),
            (dns1123_label, "", false),
            (dns1123_label, &"a".repeat(64), false),
            (dns1123_subdomain, "a.b-c.d", true),
            (dns1123_subdomain, "..", false),
            (dns1123_subdomain, "a/b", false),
            (dns1123_subdomain, "a..b", false),
            (dns1123_subdomain, ".a", false),
            (dns1123_subdomain, &"a.".repeat(127), false),
            (qualified_name, "app.kubernetes.io/name", true),
            (qualified_name, "Name_1", true),
            (qualified_name, "/x", false),
            (qualified_name, "a/b/c", false),
            (qualified_name, "-x", false),
            (label_value, "", true),
            (label_value, "v1.2_b", true),
            (label_value, "a b", false),
            (env_var_name, "MY_VAR.x-1", true),
            (env_var_name, "_x", true),
            (env_var_name, "1X", false),
            (env_var_name, "A=B", false),
            (env_var_name, "", false),
            (port_name, "http", true),
            (port_name, "80", false),
            (port_name, "a--b", false),
            (port_name, "abcdefghijklmnop", false),
            (env_field_path, "metadata.labels['app']", true),
            (env_field_path, "status.podIPs", true),
            (env_field_path, "metadata.labels", false),
            (env_field_path, "spec.hostname", false),
            (env_resource, "limits.hugepages-2Mi", true),
            (env_resource, "requests.cpu", true),
            (env_resource, "limits.gpu", false),
            (resource_name, "hugepages-1Gi", true),
            (resource_name, "example.com/gpu", true),
            (resource_name, "gpu", false),
            (resource_name, "kubernetes.io/foo", false),
            (resource_name, "hugepages-x", false),
        ];
        for (check, s, ok) in cases {
            assert_eq!(check(s).is_ok(), *ok, "{s:?}: {:?}", check(s));
        }
        assert_eq!(clean_path("/a/b", true), Ok(()));
        assert!(clean_path("a/b", true).is_err());
        assert_eq!(clean_path("a/b", false), Ok(()));
        assert!(clean_path("/a/../b", false).is_err());
        assert_eq!(
            subscript("metadata.annotations['a/b']"),
            Some(("annotations", "a/b"))
        );
        assert_eq!(subscript("metadata.labels[app]"), None);
    }
}
