//! Image references: normalisation as the container runtimes do it (`busybox` ->
//! `docker.io/library/busybox:latest`), and the parts (repository, tag, digest) that
//! `Store::resolve` matches on. Pure string functions, no I/O.

use crate::digest::Digest;
use crate::{Error, Result};

/// A normalised reference split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io/library/busybox`
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn bad(reference: &str, reason: impl Into<String>) -> Error {
    Error::BadReference {
        reference: reference.to_string(),
        reason: reason.into(),
    }
}

/// Parse and normalise; a tag `latest` is added when neither tag nor digest is given.
pub fn parse(reference: &str) -> Result<Reference> {
    if reference.is_empty() {
        return Err(bad(reference, "empty reference"));
    }
    if reference.len() > 4096 {
        return Err(bad(reference, "longer than 4096 bytes"));
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((name, d)) => (name, Some(Digest::parse(d).map_err(|e| bad(reference, e))?)),
        None => (reference, None),
    };
    // A tag is the part after the last ':' that follows the last '/' (a ':' before a '/'
    // is a registry port).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        if !valid_tag(t) {
            return Err(bad(
                reference,
                format!("tag {t:?} is not valid ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})"),
            ));
        }
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
        _ => ("docker.io", name),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io"
    } else {
        domain
    };
    if !valid_domain(domain) {
        return Err(bad(
            reference,
            format!("registry {domain:?} is not a valid host[:port]"),
        ));
    }
    if path.is_empty() {
        return Err(bad(reference, "empty repository name"));
    }
    for component in path.split('/') {
        if !valid_path_component(component) {
            return Err(bad(
                reference,
                format!("repository component {component:?} must be lowercase letters, digits and separators (. _ __ -)"),
            ));
        }
    }
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    let tag = match (tag, &digest) {
        (Some(t), _) => Some(t.to_string()),
        (None, Some(_)) => None,
        (None, None) => Some("latest".to_string()),
    };
    Ok(Reference {
        repository: format!("{domain}/{path}"),
        tag,
        digest,
    })
}

/// Does `reference` carry its own tag or digest (a `:` after the last `/`, or an `@`)?
pub fn has_tag_or_digest(reference: &str) -> bool {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    reference.contains('@') || last.contains(':')
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`: also what an OCI `ref.name` holding only a tag looks like.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()));
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalisation_table() {
        let cases: Vec<(String, Option<String>)> = vec![
            (
                "busybox".into(),
                Some("docker.io/library/busybox:latest".into()),
            ),
            (
                "busybox:1.35".into(),
                Some("docker.io/library/busybox:1.35".into()),
            ),
            (
                "library/busybox".into(),
                Some("docker.io/library/busybox:latest".into()),
            ),
            (
                "docker.io/busybox".into(),
                Some("docker.io/library/busybox:latest".into()),
            ),
            (
                "index.docker.io/busybox:1".into(),
                Some("docker.io/library/busybox:1".into()),
            ),
            ("user/app".into(), Some("docker.io/user/app:latest".into())),
            (
                "localhost/busybox:1.35".into(),
                Some("localhost/busybox:1.35".into()),
            ),
            (
                "localhost/busybox".into(),
                Some("localhost/busybox:latest".into()),
            ),
            (
                "localhost:5000/a/b:v2".into(),
                Some("localhost:5000/a/b:v2".into()),
            ),
            ("quay.io/x/y".into(), Some("quay.io/x/y:latest".into())),
            (
                "my-reg.local:443/team/app_x:1.0-rc".into(),
                Some("my-reg.local:443/team/app_x:1.0-rc".into()),
            ),
            (
                format!("busybox@sha256:{H}"),
                Some(format!("docker.io/library/busybox@sha256:{H}")),
            ),
            (
                format!("busybox:1@sha256:{H}"),
                Some(format!("docker.io/library/busybox:1@sha256:{H}")),
            ),
            (
                "a__b.c-d---e".into(),
                Some("docker.io/library/a__b.c-d---e:latest".into()),
            ),
            ("".into(), None),
            ("BusyBox".into(), None),
            ("busybox:".into(), None),
            ("busybox:-x".into(), None),
            ("busybox::1".into(), None),
            ("/busybox".into(), None),
            ("busybox/".into(), None),
            ("a//b".into(), None),
            ("a_.b".into(), None),
            ("-a".into(), None),
            ("a..b".into(), None),
            ("busybox@sha512:abcd".into(), None),
            ("busybox@sha256:xyz".into(), None),
            ("bad_host:99999999/x".into(), None),
            ("../etc/passwd".into(), None),
            (format!("busybox:{}", "t".repeat(129)), None),
        ];
        for (input, want) in cases {
            let got = parse(&input).map(|r| r.to_string());
            match (&got, &want) {
                (Ok(g), Some(w)) => assert_eq!(g, w, "{input:?}"),
                (Err(Error::BadReference { reference, .. }), None) => assert_eq!(reference, &input),
                _ => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn parts_are_split() {
        let r = parse("localhost:5000/a/b:v2").unwrap();
        assert_eq!(r.repository, "localhost:5000/a/b");
        assert_eq!(r.tag.as_deref(), Some("v2"));
        assert!(r.digest.is_none());
        let r = parse(&format!("busybox@sha256:{H}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.unwrap().hex(), H);
    }

    #[test]
    fn explicit_tags() {
        for (r, want) in [
            ("busybox", false),
            ("busybox:1", true),
            ("localhost:5000/x", false),
            ("localhost:5000/x:2", true),
            ("x@sha256:00", true),
        ] {
            assert_eq!(has_tag_or_digest(r), want, "{r}");
        }
    }

    #[test]
    fn tag_grammar() {
        for (t, ok) in [
            ("1.35", true),
            ("latest", true),
            ("_x", true),
            ("", false),
            (".x", false),
            ("a/b", false),
            ("a:b", false),
        ] {
            assert_eq!(valid_tag(t), ok, "{t:?}");
        }
    }
}
