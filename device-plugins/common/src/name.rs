//! Names: which extended-resource names a plugin may register (`vendor-domain/name`, as the
//! API server validates them) and the socket file name a resource's server listens on.
//! Pure functions, so the rules are tested by tables.

/// Longest DNS subdomain (the vendor domain).
const MAX_DOMAIN: usize = 253;
/// Longest name part, and longest device ID the API allows.
const MAX_NAME: usize = 63;

/// Why a resource name is not a valid extended-resource name; `Display` is the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must be `vendor-domain/name` with exactly one `/`")]
    Shape,
    #[error("the domain `{0}` is not a DNS subdomain (lowercase letters, digits, `-`, `.`, at most 253 characters, with a dot)")]
    Domain(String),
    #[error("the domain `{0}` is reserved for Kubernetes")]
    Reserved(String),
    #[error("the name `{0}` must be 1 to 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit")]
    Name(String),
}

/// Checks `resource` the way the API server checks an extended resource name: a fully
/// qualified `vendor-domain/name`, not in the `kubernetes.io` domains.
pub fn validate_resource_name(resource: &str) -> Result<(), NameError> {
    let (domain, name) = resource.split_once('/').ok_or(NameError::Shape)?;
    if name.contains('/') {
        return Err(NameError::Shape);
    }
    if !is_dns_subdomain(domain) || !domain.contains('.') {
        return Err(NameError::Domain(domain.to_string()));
    }
    if domain == "kubernetes.io" || domain.ends_with(".kubernetes.io") {
        return Err(NameError::Reserved(domain.to_string()));
    }
    if !is_qualified_name(name) {
        return Err(NameError::Name(name.to_string()));
    }
    Ok(())
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_DOMAIN
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn is_qualified_name(s: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| alnum(b) || b == b'-' || b == b'_' || b == b'.')
        && s.bytes().next().is_some_and(alnum)
        && s.bytes().last().is_some_and(alnum)
}

/// Whether `id` can be a device ID: 1 to 63 printable ASCII characters without spaces or `/`
/// (kubelet keeps IDs in checkpoints and paths; the API caps them at 63).
pub fn is_valid_device_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_NAME && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// The socket file name the server for `resource` listens on, inside the device-plugin
/// directory: `nvidia.com/gpu` -> `nvidia.com-gpu.sock`. Always a plain file name (no `/`,
/// never `.`/`..`, never `kubelet.sock`): `/` becomes `-` and anything outside
/// `[A-Za-z0-9._-]` becomes `_`.
pub fn endpoint_file_name(resource: &str) -> String {
    let mut s: String = resource
        .chars()
        .map(|c| match c {
            '/' => '-',
            c if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' => c,
            _ => '_',
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        s.insert(0, '_');
    }
    s.push_str(".sock");
    if s == tidelet_deviceplugin_api::KUBELET_SOCKET {
        s.insert(0, '_');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_follow_the_extended_resource_rules() {
        let cases: &[(&str, bool)] = &[
            ("nvidia.com/gpu", true),
            ("dri.tidelet.io/panfrost", true),
            ("tidelet.io/serial", true),
            ("example.com/a_b.c-d", true),
            ("gpu", false),                    // no domain
            ("nvidia/gpu", false),             // domain without a dot
            ("nvidia.com/", false),            // empty name
            ("/gpu", false),                   // empty domain
            ("nvidia.com/gpu/x", false),       // two slashes
            ("NVIDIA.com/gpu", false),         // upper-case domain
            ("nvidia..com/gpu", false),        // empty label
            ("-nvidia.com/gpu", false),        // label starts with -
            ("nvidia.com/-gpu", false),        // name starts with -
            ("nvidia.com/gpu-", false),        // name ends with -
            ("nvidia.com/g pu", false),        // space
            ("kubernetes.io/gpu", false),      // reserved
            ("node.kubernetes.io/gpu", false), // reserved
            ("example.com/", false),
        ];
        for (name, ok) in cases {
            assert_eq!(validate_resource_name(name).is_ok(), *ok, "{name}");
        }
        let long = format!("example.com/{}", "a".repeat(64));
        assert_eq!(
            validate_resource_name(&long),
            Err(NameError::Name("a".repeat(64)))
        );
    }

    #[test]
    fn endpoint_file_names_are_plain_file_names() {
        let cases: &[(&str, &str)] = &[
            ("nvidia.com/gpu", "nvidia.com-gpu.sock"),
            ("dri.tidelet.io/panfrost", "dri.tidelet.io-panfrost.sock"),
            ("a/../b", "a-..-b.sock"),
            ("../x", "_..-x.sock"),
            ("", "_.sock"),
            ("we ird/na:me", "we_ird-na_me.sock"),
            ("kubelet", "_kubelet.sock"),
        ];
        for (resource, want) in cases {
            let got = endpoint_file_name(resource);
            assert_eq!(&got, want, "{resource}");
            assert!(!got.contains('/'));
            assert_ne!(got, "kubelet.sock");
        }
    }

    #[test]
    fn device_ids_are_bounded_and_plain() {
        let cases: &[(&str, bool)] = &[
            ("renderD128", true),
            ("GPU-8f6c1e2a-1111-2222-3333-444455556666", true),
            ("ttyUSB0-3", true),
            ("", false),
            ("a b", false),
            ("a/b", false),
        ];
        for (id, ok) in cases {
            assert_eq!(is_valid_device_id(id), *ok, "{id}");
        }
        assert!(is_valid_device_id(&"x".repeat(63)));
        assert!(!is_valid_device_id(&"x".repeat(64)));
    }
}
