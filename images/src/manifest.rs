//! The JSON documents of the two archive formats, parsed into plain data: OCI image index,
//! manifest and config, and `docker save`'s `manifest.json`; plus the pure decisions made on
//! them (which platform to run, which names an image gets). No I/O here.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::reference;
use crate::{ImageConfig, Result};

pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Largest index, manifest or config document read into memory.
pub const MAX_JSON_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    pub fn is_index(&self) -> bool {
        self.media_type == MT_OCI_INDEX || self.media_type == MT_DOCKER_LIST
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// One image of `docker save`'s `manifest.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct DockerEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// What tidelet keeps of an image config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedConfig {
    pub architecture: String,
    pub os: String,
    pub config: ImageConfig,
    pub diff_ids: Vec<Digest>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<RawRunConfig>,
    rootfs: RawRootfs,
}

#[derive(Deserialize, Default)]
struct RawRunConfig {
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    working_dir: Option<String>,
    #[serde(rename = "User", default)]
    user: Option<String>,
    #[serde(rename = "StopSignal", default)]
    stop_signal: Option<String>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<String>,
}

pub fn parse_index(bytes: &[u8]) -> std::result::Result<Index, String> {
    let index: Index =
        serde_json::from_slice(bytes).map_err(|e| format!("not an OCI image index: {e}"))?;
    if index.schema_version != 2 {
        return Err(format!(
            "image index schemaVersion {} (expected 2)",
            index.schema_version
        ));
    }
    Ok(index)
}

/// A JSON document with a `manifests` array: an image index, whatever its descriptor said.
pub fn looks_like_index(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        manifests: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Probe>(bytes).is_ok_and(|p| p.manifests.is_some())
}

pub fn parse_manifest(bytes: &[u8]) -> std::result::Result<Manifest, String> {
    let m: Manifest =
        serde_json::from_slice(bytes).map_err(|e| format!("not an OCI image manifest: {e}"))?;
    if m.schema_version != 2 {
        return Err(format!(
            "manifest schemaVersion {} (expected 2)",
            m.schema_version
        ));
    }
    if !(m.media_type.is_empty()
        || m.media_type == MT_OCI_MANIFEST
        || m.media_type == MT_DOCKER_MANIFEST)
    {
        return Err(format!(
            "manifest mediaType {:?} is not an image manifest",
            m.media_type
        ));
    }
    Ok(m)
}

pub fn parse_docker_manifest(bytes: &[u8]) -> std::result::Result<Vec<DockerEntry>, String> {
    let entries: Vec<DockerEntry> = serde_json::from_slice(bytes)
        .map_err(|e| format!("manifest.json is not a docker save manifest: {e}"))?;
    if entries.is_empty() {
        return Err("manifest.json lists no image".into());
    }
    Ok(entries)
}

pub fn parse_config(bytes: &[u8]) -> std::result::Result<ParsedConfig, String> {
    let raw: RawConfig =
        serde_json::from_slice(bytes).map_err(|e| format!("not an image config: {e}"))?;
    if raw.rootfs.kind != "layers" {
        return Err(format!(
            "rootfs.type {:?} (expected \"layers\")",
            raw.rootfs.kind
        ));
    }
    let diff_ids = raw
        .rootfs
        .diff_ids
        .iter()
        .map(|d| Digest::parse(d).map_err(|e| format!("rootfs.diff_ids: {e}")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let c = raw.config.unwrap_or_default();
    Ok(ParsedConfig {
        architecture: raw.architecture,
        os: raw.os,
        config: ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
            stop_signal: c.stop_signal.filter(|s| !s.is_empty()),
        },
        diff_ids,
    })
}

/// The host's platform in GOARCH terms: (architecture, variant).
pub fn host_platform() -> (&'static str, Option<&'static str>) {
    if cfg!(target_arch = "x86_64") {
        ("amd64", None)
    } else if cfg!(target_arch = "aarch64") {
        ("arm64", Some("v8"))
    } else if cfg!(target_arch = "arm") {
        ("arm", Some("v7"))
    } else if cfg!(target_arch = "x86") {
        ("386", None)
    } else if cfg!(target_arch = "riscv64") {
        ("riscv64", None)
    } else {
        (std::env::consts::ARCH, None)
    }
}

/// Does a descriptor's platform run here? A missing variant matches; arm64's `v8` is its default.
pub fn platform_matches(p: &Platform, arch: &str, variant: Option<&str>) -> bool {
    if p.os != "linux" || p.architecture != arch {
        return false;
    }
    match (p.variant.as_deref().filter(|v| !v.is_empty()), variant) {
        (None, _) => true,
        (Some(v), Some(want)) => v == want,
        (Some(_), None) => false,
    }
}

/// Pick the manifest for `(arch, variant)` out of an index: an exact variant first, then one
/// without a variant.
pub fn pick_platform<'a>(
    manifests: &'a [Descriptor],
    arch: &str,
    variant: Option<&str>,
) -> Option<&'a Descriptor> {
    let candidates = || {
        manifests.iter().filter(|d| !d.is_index()).filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| platform_matches(p, arch, variant))
        })
    };
    candidates()
        .find(|d| d.platform.as_ref().and_then(|p| p.variant.as_deref()) == variant)
        .or_else(|| candidates().next())
}

/// Where an image's name comes from, in order: an explicit name (which, given without a tag,
/// takes the archive's tag); a full reference in `ref.name`; containerd's name annotation; and
/// last `localhost/<archive file stem>:<tag>`, as skopeo's `oci-archive:file:tag` leaves only a
/// tag in `ref.name`. `Err` (a plain reason) only when none of these gives a valid name.
pub fn oci_image_name(
    annotations: &BTreeMap<String, String>,
    name_override: Option<&str>,
    archive: &Path,
) -> Result<std::result::Result<String, String>> {
    let ref_name = annotations.get(ANNOTATION_REF_NAME);
    let tag = ref_name
        .filter(|r| reference::valid_tag(r))
        .map(String::as_str);
    if let Some(n) = name_override {
        return Ok(Ok(with_tag(n, tag)?));
    }
    if let Some(r) = ref_name.filter(|_| tag.is_none()) {
        return Ok(Ok(reference::parse(r)?.to_string()));
    }
    if let Some(n) = annotations.get(ANNOTATION_CONTAINERD_NAME) {
        return Ok(Ok(reference::parse(n)?.to_string()));
    }
    Ok(name_from_file(archive, tag))
}

/// `name`, normalised; `tag` added when `name` has neither tag nor digest of its own.
pub fn with_tag(name: &str, tag: Option<&str>) -> Result<String> {
    match tag {
        Some(t) if !reference::has_tag_or_digest(name) => {
            Ok(reference::parse(&format!("{name}:{t}"))?.to_string())
        }
        _ => Ok(reference::parse(name)?.to_string()),
    }
}

/// `localhost/<stem>:<tag>` from an archive's file name (`busybox.oci.tar` -> `busybox`).
pub fn name_from_file(archive: &Path, tag: Option<&str>) -> std::result::Result<String, String> {
    let file = archive.file_name().and_then(|f| f.to_str()).unwrap_or("");
    let stem = file.split('.').next().unwrap_or("").to_ascii_lowercase();
    let cleaned: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let candidate = format!("localhost/{cleaned}:{}", tag.unwrap_or("latest"));
    match reference::parse(&candidate) {
        Ok(r) if !cleaned.is_empty() => {
            tracing::warn!(archive = %archive.display(), name = %r, "archive names no image; naming it after the file");
            Ok(r.to_string())
        }
        _ => Err(format!("the archive names no image and {file:?} gives no valid name; import with an explicit name")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn plat(arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: variant.map(String::from),
        }
    }

    fn desc(arch: &str, variant: Option<&str>, n: u64) -> Descriptor {
        Descriptor {
            media_type: MT_OCI_MANIFEST.into(),
            digest: format!("sha256:{H}"),
            size: n,
            annotations: BTreeMap::new(),
            platform: Some(plat(arch, variant)),
        }
    }

    #[test]
    fn platform_table() {
        let cases = [
            (plat("amd64", None), "amd64", None, true),
            (plat("amd64", None), "arm64", Some("v8"), false),
            (plat("arm64", None), "arm64", Some("v8"), true),
            (plat("arm64", Some("v8")), "arm64", Some("v8"), true),
            (plat("arm", Some("v7")), "arm", Some("v7"), true),
            (plat("arm", Some("v6")), "arm", Some("v7"), false),
            (plat("arm", None), "arm", Some("v7"), true),
            (plat("amd64", Some("v3")), "amd64", None, false),
            (
                Platform {
                    os: "windows".into(),
                    ..plat("amd64", None)
                },
                "amd64",
                None,
                false,
            ),
        ];
        for (p, arch, variant, want) in cases {
            assert_eq!(
                platform_matches(&p, arch, variant),
                want,
                "{p:?} on {arch}/{variant:?}"
            );
        }
    }

    #[test]
    fn pick_prefers_exact_variant() {
        let ms = vec![
            desc("amd64", None, 1),
            desc("arm", Some("v6"), 2),
            desc("arm", None, 3),
            desc("arm", Some("v7"), 4),
        ];
        assert_eq!(
            pick_platform(&ms, "arm", Some("v7")).map(|d| d.size),
            Some(4)
        );
        assert_eq!(pick_platform(&ms, "amd64", None).map(|d| d.size), Some(1));
        assert_eq!(pick_platform(&ms, "riscv64", None), None);
        assert_eq!(
            pick_platform(&ms[..3], "arm", Some("v7")).map(|d| d.size),
            Some(3)
        );
    }

    #[test]
    fn host_platform_is_goarch() {
        let (arch, _) = host_platform();
        if cfg!(target_arch = "x86_64") {
            assert_eq!(arch, "amd64");
        }
        assert!(!arch.is_empty());
    }

    #[test]
    fn names_table() {
        let ann = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let file = Path::new("/x/busybox.oci.tar");
        type Case<'a> = (BTreeMap<String, String>, Option<&'a str>, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (
                ann(&[(ANNOTATION_REF_NAME, "localhost/busybox:1.35")]),
                None,
                "localhost/busybox:1.35",
            ),
            (
                ann(&[(ANNOTATION_REF_NAME, "docker.io/library/busybox:1")]),
                None,
                "docker.io/library/busybox:1",
            ),
            (
                ann(&[(ANNOTATION_REF_NAME, "1.35")]),
                None,
                "localhost/busybox:1.35",
            ),
            (
                ann(&[(ANNOTATION_REF_NAME, "1.35")]),
                Some("localhost/x:2"),
                "localhost/x:2",
            ),
            (
                ann(&[(ANNOTATION_REF_NAME, "1.35")]),
                Some("localhost/x"),
                "localhost/x:1.35",
            ),
            (
                ann(&[(ANNOTATION_REF_NAME, "localhost/a:1")]),
                Some("localhost/x"),
                "localhost/x:latest",
            ),
            (
                ann(&[
                    (ANNOTATION_REF_NAME, "1.35"),
                    (ANNOTATION_CONTAINERD_NAME, "docker.io/library/busybox:1.35"),
                ]),
                None,
                "docker.io/library/busybox:1.35",
            ),
            (ann(&[]), None, "localhost/busybox:latest"),
            (
                ann(&[]),
                Some("busybox"),
                "docker.io/library/busybox:latest",
            ),
        ];
        for (a, o, want) in cases {
            assert_eq!(
                oci_image_name(&a, o, file).unwrap().unwrap(),
                want,
                "{a:?} {o:?}"
            );
        }
        let bad = ann(&[(ANNOTATION_REF_NAME, "Bad/Name:1")]);
        assert!(matches!(
            oci_image_name(&bad, None, file),
            Err(crate::Error::BadReference { .. })
        ));
        let no_name = oci_image_name(&ann(&[]), None, Path::new("/x/...tar")).unwrap();
        assert!(no_name
            .unwrap_err()
            .contains("import with an explicit name"));
    }

    #[test]
    fn names_from_files() {
        let cases = [
            (
                "/a/busybox.oci.tar",
                Some("1.35"),
                Some("localhost/busybox:1.35"),
            ),
            ("My Image.tar", None, Some("localhost/my-image:latest")),
            ("__x__.tar", None, Some("localhost/x:latest")),
            ("a--b.tar", None, Some("localhost/a--b:latest")),
            (".tar", None, None),
            ("-.tar", None, None),
        ];
        for (f, tag, want) in cases {
            assert_eq!(
                name_from_file(Path::new(f), tag).ok().as_deref(),
                want,
                "{f}"
            );
        }
    }

    #[test]
    fn config_parsing() {
        let json = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Entrypoint":["/bin/echo"],"Cmd":null,
            "Env":["PATH=/bin","GREETING=hello"],"WorkingDir":"/work","User":"1000:1000","StopSignal":"SIGINT"}},
            "rootfs":{{"type":"layers","diff_ids":["sha256:{H}"]}}}}"#
        );
        let c = parse_config(json.as_bytes()).unwrap();
        assert_eq!(c.architecture, "amd64");
        assert_eq!(c.config.entrypoint, vec!["/bin/echo"]);
        assert!(c.config.cmd.is_empty());
        assert_eq!(c.config.env, vec!["PATH=/bin", "GREETING=hello"]);
        assert_eq!(c.config.working_dir, "/work");
        assert_eq!(c.config.user, "1000:1000");
        assert_eq!(c.config.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(c.diff_ids.len(), 1);

        let minimal = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["sha256:{H}"]}}}}"#);
        assert_eq!(
            parse_config(minimal.as_bytes()).unwrap().config,
            ImageConfig::default()
        );

        let bad: &[(&str, &str)] = &[
            ("{}", "rootfs"),
            ("[1]", "not an image config"),
            (
                r#"{"rootfs":{"type":"other","diff_ids":[]}}"#,
                "rootfs.type",
            ),
            (
                r#"{"rootfs":{"type":"layers","diff_ids":["sha512:00"]}}"#,
                "unsupported digest algorithm",
            ),
            ("garbage", "not an image config"),
        ];
        for (json, why) in bad {
            let e = parse_config(json.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{json}: {e}");
        }
    }

    #[test]
    fn index_manifest_and_docker_parsing() {
        let d = format!(r#"{{"mediaType":"{MT_OCI_MANIFEST}","digest":"sha256:{H}","size":3}}"#);
        let idx =
            parse_index(format!(r#"{{"schemaVersion":2,"manifests":[{d}]}}"#).as_bytes()).unwrap();
        assert_eq!(idx.manifests.len(), 1);
        assert!(parse_index(br#"{"schemaVersion":1}"#)
            .unwrap_err()
            .contains("schemaVersion"));
        assert!(parse_index(b"\x00\x01")
            .unwrap_err()
            .contains("not an OCI image index"));

        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MT_OCI_MANIFEST}","config":{d},"layers":[{d},{d}]}}"#
        );
        assert_eq!(parse_manifest(m.as_bytes()).unwrap().layers.len(), 2);
        let wrong = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MT_OCI_INDEX}","config":{d},"layers":[]}}"#
        );
        assert!(parse_manifest(wrong.as_bytes())
            .unwrap_err()
            .contains("not an image manifest"));

        let dm =
            br#"[{"Config":"abc.json","RepoTags":["localhost/x:1"],"Layers":["l/layer.tar"]}]"#;
        let e = parse_docker_manifest(dm).unwrap();
        assert_eq!(
            e[0].repo_tags.as_deref(),
            Some(&["localhost/x:1".to_string()][..])
        );
        assert!(parse_docker_manifest(b"[]")
            .unwrap_err()
            .contains("no image"));
        assert!(looks_like_index(br#"{"schemaVersion":2,"manifests":[]}"#));
        assert!(!looks_like_index(
            br#"{"schemaVersion":2,"config":{},"layers":[]}"#
        ));
        assert!(!looks_like_index(b"nonsense"));
        let null_tags = br#"[{"Config":"a.json","RepoTags":null,"Layers":[]}]"#;
        assert_eq!(parse_docker_manifest(null_tags).unwrap()[0].repo_tags, None);
    }
}
