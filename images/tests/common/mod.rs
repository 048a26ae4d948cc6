//! Builders for small image archives written with the `tar` crate, so each test states the
//! exact bytes it feeds the store (including entries a well-behaved tar writer would refuse).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

pub fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// One entry of a layer tar; names and link targets are written raw.
pub enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Kind(&'a str, tar::EntryType),
}

pub fn layer_tar(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_old();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        let (name, data): (&str, &[u8]) = match e {
            E::Dir(n) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                (n, b"")
            }
            E::File(n, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                (n, d)
            }
            E::Symlink(n, t) | E::Hardlink(n, t) => {
                let kind = if matches!(e, E::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                h.set_entry_type(kind);
                h.set_mode(0o777);
                let ln = &mut h.as_old_mut().linkname;
                ln[..t.len()].copy_from_slice(t.as_bytes());
                (n, b"")
            }
            E::Kind(n, k) => {
                h.set_entry_type(*k);
                h.set_mode(0o644);
                (n, b"")
            }
        };
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    g.write_all(b).unwrap();
    g.finish().unwrap()
}

/// A layer as stored in an archive: its blob, media type, and its diff_id (of the tar).
pub struct Layer {
    pub blob: Vec<u8>,
    pub media_type: &'static str,
    pub diff_id: String,
}

pub fn plain(tar: Vec<u8>) -> Layer {
    Layer {
        diff_id: format!("sha256:{}", sha(&tar)),
        blob: tar,
        media_type: "application/vnd.oci.image.layer.v1.tar",
    }
}

pub fn gz(tar: Vec<u8>) -> Layer {
    Layer {
        diff_id: format!("sha256:{}", sha(&tar)),
        blob: gzip(&tar),
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
    }
}

pub fn config(layers: &[Layer], run: serde_json::Value) -> Vec<u8> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    serde_json::to_vec(&json!({
        "architecture": host_arch(), "os": "linux", "config": run,
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap()
}

pub fn host_arch() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "amd64"
    } else if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "arm"
    }
}

/// The files of an OCI layout (path, contents) naming its single image `ref_name`.
pub fn oci_files(
    ref_name: &str,
    layers: &[Layer],
    run: serde_json::Value,
) -> Vec<(String, Vec<u8>)> {
    let cfg = config(layers, run);
    oci_files_with_config(ref_name, layers, cfg)
}

pub fn oci_files_with_config(
    ref_name: &str,
    layers: &[Layer],
    cfg: Vec<u8>,
) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![(format!("blobs/sha256/{}", sha(&cfg)), cfg.clone())];
    let mut descs = Vec::new();
    for l in layers {
        files.push((format!("blobs/sha256/{}", sha(&l.blob)), l.blob.clone()));
        descs.push(json!({"mediaType": l.media_type, "digest": format!("sha256:{}", sha(&l.blob)), "size": l.blob.len()}));
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", sha(&cfg)), "size": cfg.len()},
        "layers": descs,
    }))
    .unwrap();
    files.push((format!("blobs/sha256/{}", sha(&manifest)), manifest.clone()));
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": format!("sha256:{}", sha(&manifest)), "size": manifest.len(),
                        "annotations": {"org.opencontainers.image.ref.name": ref_name}}],
    }))
    .unwrap();
    files.push(("index.json".into(), index));
    files.push((
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    ));
    files
}

/// A legacy `docker save` archive: `<id>/layer.tar`, `<config-hex>.json`, `manifest.json`.
pub fn docker_files(tag: &str, layers: &[Layer], run: serde_json::Value) -> Vec<(String, Vec<u8>)> {
    let cfg = config(layers, run);
    let mut files = vec![(format!("{}.json", sha(&cfg)), cfg.clone())];
    let mut paths = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let p = format!("{}/layer.tar", sha(format!("layer{i}").as_bytes()));
        files.push((p.clone(), l.blob.clone()));
        paths.push(p);
    }
    let m = json!([{"Config": format!("{}.json", sha(&cfg)), "RepoTags": [tag], "Layers": paths}]);
    files.push(("manifest.json".into(), serde_json::to_vec(&m).unwrap()));
    files
}

/// The newer `docker save` form: layers and config under `blobs/sha256/`.
pub fn docker_blob_files(
    tag: &str,
    layers: &[Layer],
    run: serde_json::Value,
) -> Vec<(String, Vec<u8>)> {
    let cfg = config(layers, run);
    let mut files = vec![(format!("blobs/sha256/{}", sha(&cfg)), cfg.clone())];
    let mut paths = Vec::new();
    for l in layers {
        let p = format!("blobs/sha256/{}", sha(&l.blob));
        files.push((p.clone(), l.blob.clone()));
        paths.push(p);
    }
    let m = json!([{"Config": format!("blobs/sha256/{}", sha(&cfg)), "RepoTags": [tag], "Layers": paths}]);
    files.push(("manifest.json".into(), serde_json::to_vec(&m).unwrap()));
    files
}

pub fn write_archive(dir: &Path, name: &str, files: &[(String, Vec<u8>)]) -> PathBuf {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, p, &data[..]).unwrap();
    }
    let path = dir.join(name);
    std::fs::write(&path, b.into_inner().unwrap()).unwrap();
    path
}

/// Privileged tests run as root; elsewhere they skip, unless CI demands them (the one gate).
// Not every test crate that includes this module has privileged tests.
#[allow(unused_imports)]
pub use tidelet_testgate::privileged;

/// Entries of `dir`, sorted, as names.
pub fn ls(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
