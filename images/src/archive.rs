//! Reading an image archive (an OCI layout or a `docker save` tar) into a staging directory,
//! streaming: every file is copied to disk once while its sha256 is computed, blobs named by
//! digest are checked on the way, and only the small JSON documents are read back into memory
//! (capped). The result is a list of `ImagePlan`s that the store then unpacks and commits.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use crate::digest::{self, Digest, HashingWriter};
use crate::manifest::{self, Descriptor, Manifest, ParsedConfig};
use crate::tarext::Extensions;
use crate::unpack::entry_rel_path;
use crate::{Error, Result};

/// A file of the archive, copied into the staging directory.
#[derive(Debug, Clone)]
pub struct StagedFile {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
}

/// Everything the archive holds, by its path inside the archive.
pub struct Staged {
    pub archive: PathBuf,
    files: HashMap<String, StagedFile>,
}

/// One layer to unpack.
#[derive(Debug, Clone)]
pub struct LayerPlan {
    pub file: StagedFile,
    pub media_type: Option<String>,
    pub diff_id: Digest,
}

/// One image to commit: its (real or synthesised) OCI manifest, config and layers.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    pub names: Vec<String>,
    pub manifest_json: Vec<u8>,
    pub manifest_digest: Digest,
    pub config_file: StagedFile,
    pub config: ParsedConfig,
    pub layers: Vec<LayerPlan>,
}

impl Staged {
    fn bad(&self, reason: impl Into<String>) -> Error {
        Error::BadArchive {
            archive: self.archive.clone(),
            reason: reason.into(),
        }
    }

    pub fn get(&self, path: &str) -> Result<&StagedFile> {
        let key = normalize_key(path)
            .ok_or_else(|| self.bad(format!("path {path:?} escapes the archive")))?;
        self.files
            .get(&key)
            .ok_or_else(|| self.bad(format!("{path:?} is missing from the archive")))
    }

    fn has(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    /// A blob by digest; blobs were already checked against their names while staging.
    fn blob(&self, desc: &Descriptor) -> Result<&StagedFile> {
        let d = Digest::parse(&desc.digest).map_err(|e| self.bad(e))?;
        let f = self.get(&format!("blobs/sha256/{}", d.hex()))?;
        if f.size != desc.size {
            return Err(self.bad(format!(
                "blob {d}: descriptor says {} bytes, blob has {}",
                desc.size, f.size
            )));
        }
        Ok(f)
    }

    fn json(&self, what: &str, f: &StagedFile) -> Result<Vec<u8>> {
        if f.size > manifest::MAX_JSON_BYTES {
            return Err(self.bad(format!(
                "{what} is {} bytes, over the {} byte limit",
                f.size,
                manifest::MAX_JSON_BYTES
            )));
        }
        let mut buf = Vec::with_capacity(f.size as usize);
        File::open(&f.path)
            .and_then(|file| file.take(manifest::MAX_JSON_BYTES).read_to_end(&mut buf))
            .map_err(|e| Error::Io {
                path: f.path.clone(),
                source: e,
            })?;
        Ok(buf)
    }
}

/// Lexically normalise a path inside the archive; `None` if it climbs out.
fn normalize_key(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str()?),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

/// Copy every file of `archive` into `staging` (an empty directory), hashing as it goes.
pub fn stage(archive: &Path, staging: &Path) -> Result<Staged> {
    let bad = |reason: String| Error::BadArchive {
        archive: archive.to_path_buf(),
        reason,
    };
    let file = File::open(archive).map_err(|e| Error::Io {
        path: archive.to_path_buf(),
        source: e,
    })?;
    let len = file
        .metadata()
        .map_err(|e| Error::Io {
            path: archive.to_path_buf(),
            source: e,
        })?
        .len();
    if len == 0 {
        return Err(bad("archive is empty (0 bytes)".into()));
    }
    let mut tar = tar::Archive::new(BufReader::with_capacity(64 * 1024, file));
    let mut staged = Staged {
        archive: archive.to_path_buf(),
        files: HashMap::new(),
    };
    let mut links: Vec<(String, String)> = Vec::new();
    let entries = tar
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    let mut extensions = Extensions::default();
    for (n, entry) in entries.raw(true).enumerate() {
        // The tar crate quotes the bad header: keep the reason readable.
        let mut entry =
            entry.map_err(|e| bad(format!("not a valid tar archive: {}", clip(&e.to_string()))))?;
        let Some(member) = extensions.absorb(&mut entry).map_err(&bad)? else {
            continue;
        };
        let raw = member.path;
        let name = String::from_utf8_lossy(&raw).into_owned();
        let rel = entry_rel_path(&raw).map_err(|r| bad(format!("entry {name:?}: {r}")))?;
        let key = rel
            .to_str()
            .ok_or_else(|| bad(format!("entry {name:?}: path is not UTF-8")))?
            .to_string();
        match entry.header().entry_type() {
            tar::EntryType::Directory => {}
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let dest = staging.join(format!("f{n}"));
                let out = File::create(&dest).map_err(|e| Error::Io {
                    path: dest.clone(),
                    source: e,
                })?;
                let mut w = HashingWriter::new(out);
                let copied = io::copy(&mut entry, &mut w)
                    .map_err(|e| bad(format!("entry {name:?}: {e}")))?;
                if copied != entry.size() {
                    return Err(bad(format!(
                        "entry {name:?}: truncated ({copied} of {} bytes)",
                        entry.size()
                    )));
                }
                let (_, digest, size) = w.finish();
                check_blob_name(archive, &key, &digest)?;
                staged.files.insert(
                    key,
                    StagedFile {
                        path: dest,
                        digest,
                        size,
                    },
                );
            }
            // `docker save` links repeated layers to their first copy.
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = member
                    .link
                    .ok_or_else(|| bad(format!("entry {name:?}: link without target")))?;
                let target = String::from_utf8_lossy(&target).into_owned();
                let resolved = if entry.header().entry_type() == tar::EntryType::Symlink {
                    let parent = rel.parent().and_then(Path::to_str).unwrap_or("");
                    if target.starts_with('/') {
                        None
                    } else {
                        normalize_key(&format!("{parent}/{target}"))
                    }
                } else {
                    normalize_key(&target)
                };
                let resolved = resolved.ok_or_else(|| {
                    bad(format!(
                        "entry {name:?}: link target {target:?} leaves the archive"
                    ))
                })?;
                links.push((key, resolved));
            }
            other => {
                tracing::debug!(archive = %archive.display(), entry = %name, kind = ?other, "skipping entry")
            }
        }
    }
    extensions.finish().map_err(&bad)?;
    for (key, target) in links {
        let f = staged
            .files
            .get(&target)
            .cloned()
            .ok_or_else(|| bad(format!("link {key:?} -> {target:?}: no such file")))?;
        staged.files.insert(key, f);
    }
    if staged.files.is_empty() {
        return Err(bad("archive holds no files".into()));
    }
    Ok(staged)
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(120) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// A file named `blobs/<alg>/<hex>` must hash to that name.
fn check_blob_name(archive: &Path, key: &str, actual: &Digest) -> Result<()> {
    let Some(rest) = key.strip_prefix("blobs/") else {
        return Ok(());
    };
    let Some((alg, hex)) = rest.split_once('/') else {
        return Ok(());
    };
    let claimed = Digest::parse(&format!("{alg}:{hex}")).map_err(|e| Error::BadArchive {
        archive: archive.to_path_buf(),
        reason: format!("blob {key:?}: {e}"),
    })?;
    if &claimed != actual {
        return Err(Error::DigestMismatch {
            archive: archive.to_path_buf(),
            digest: claimed.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// Work out the images of a staged archive: `docker save` (`manifest.json`) or OCI layout.
pub fn plan(staged: &Staged, name_override: Option<&str>) -> Result<Vec<ImagePlan>> {
    if staged.has("manifest.json") {
        plan_docker(staged, name_override)
    } else if staged.has("index.json") {
        plan_oci(staged, name_override)
    } else {
        Err(staged
            .bad("neither an OCI layout (index.json) nor a docker save archive (manifest.json)"))
    }
}

fn plan_oci(staged: &Staged, name_override: Option<&str>) -> Result<Vec<ImagePlan>> {
    if staged.has("oci-layout") {
        let layout = staged.json("oci-layout", staged.get("oci-layout")?)?;
        let v: serde_json::Value =
            serde_json::from_slice(&layout).map_err(|e| staged.bad(format!("oci-layout: {e}")))?;
        if v.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
            return Err(staged.bad(format!(
                "oci-layout: unsupported imageLayoutVersion {}",
                v["imageLayoutVersion"]
            )));
        }
    }
    let index = manifest::parse_index(&staged.json("index.json", staged.get("index.json")?)?)
        .map_err(|e| staged.bad(format!("index.json: {e}")))?;
    let (arch, variant) = manifest::host_platform();
    let mut plans = Vec::new();
    for top in &index.manifests {
        let top_json = staged.json("manifest", staged.blob(top)?)?;
        // Some writers leave out mediaType: an index is what has `manifests`.
        let is_index =
            top.is_index() || (top.media_type.is_empty() && manifest::looks_like_index(&top_json));
        let chosen = if is_index {
            let bytes = top_json;
            let nested = manifest::parse_index(&bytes)
                .map_err(|e| staged.bad(format!("index {}: {e}", top.digest)))?;
            match manifest::pick_platform(&nested.manifests, arch, variant) {
                Some(d) => d.clone(),
                None => {
                    tracing::warn!(archive = %staged.archive.display(), index = %top.digest, arch, "no manifest for this platform");
                    continue;
                }
            }
        } else {
            if top
                .platform
                .as_ref()
                .is_some_and(|p| !manifest::platform_matches(p, arch, variant))
            {
                continue;
            }
            top.clone()
        };
        // The name sits on the top-level descriptor; some tools put it on the nested one.
        let mut annotations = chosen.annotations.clone();
        annotations.extend(top.annotations.clone());
        let name = manifest::oci_image_name(&annotations, name_override, &staged.archive)?
            .map_err(|reason| staged.bad(format!("manifest {}: {reason}", chosen.digest)))?;
        let manifest_file = staged.blob(&chosen)?;
        let manifest_json = staged.json("manifest", manifest_file)?;
        let m = manifest::parse_manifest(&manifest_json)
            .map_err(|e| staged.bad(format!("manifest {}: {e}", chosen.digest)))?;
        plans.push(image_plan(
            staged,
            vec![name],
            manifest_json,
            manifest_file.digest.clone(),
            &m,
        )?);
    }
    if plans.is_empty() {
        return Err(staged.bad(format!(
            "no image for platform linux/{arch}{} in index.json",
            variant.map(|v| format!("/{v}")).unwrap_or_default()
        )));
    }
    Ok(plans)
}

fn image_plan(
    staged: &Staged,
    names: Vec<String>,
    manifest_json: Vec<u8>,
    manifest_digest: Digest,
    m: &Manifest,
) -> Result<ImagePlan> {
    let config_file = staged.blob(&m.config)?.clone();
    let config = manifest::parse_config(&staged.json("config", &config_file)?)
        .map_err(|e| staged.bad(format!("config {}: {e}", m.config.digest)))?;
    if config.diff_ids.len() != m.layers.len() {
        return Err(staged.bad(format!(
            "config {} lists {} diff_ids but the manifest has {} layers",
            m.config.digest,
            config.diff_ids.len(),
            m.layers.len()
        )));
    }
    let layers = m
        .layers
        .iter()
        .zip(&config.diff_ids)
        .map(|(d, diff_id)| {
            Ok(LayerPlan {
                file: staged.blob(d)?.clone(),
                media_type: Some(d.media_type.clone()).filter(|m| !m.is_empty()),
                diff_id: diff_id.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ImagePlan {
        names,
        manifest_json,
        manifest_digest,
        config_file,
        config,
        layers,
    })
}

fn plan_docker(staged: &Staged, name_override: Option<&str>) -> Result<Vec<ImagePlan>> {
    let entries = manifest::parse_docker_manifest(
        &staged.json("manifest.json", staged.get("manifest.json")?)?,
    )
    .map_err(|e| staged.bad(e))?;
    let mut plans = Vec::new();
    for e in entries {
        let config_file = staged.get(&e.config)?;
        // Legacy archives name the config `<hex>.json`: that is its digest.
        let stem = Path::new(&e.config)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("");
        if let Some(claimed) = Digest::from_hex(stem) {
            if claimed != config_file.digest {
                return Err(Error::DigestMismatch {
                    archive: staged.archive.clone(),
                    digest: claimed.to_string(),
                    actual: config_file.digest.to_string(),
                });
            }
        }
        let names = match (name_override, &e.repo_tags) {
            (Some(n), _) => vec![crate::reference::parse(n)?.to_string()],
            (None, Some(tags)) if !tags.is_empty() => tags
                .iter()
                .map(|t| crate::reference::parse(t).map(|r| r.to_string()))
                .collect::<Result<Vec<_>>>()?,
            // `docker save <id>` writes no tags: name it after the file, as for OCI.
            (None, _) => {
                vec![
                    manifest::name_from_file(&staged.archive, None).map_err(|reason| {
                        staged.bad(format!("image {}: no RepoTags, and {reason}", e.config))
                    })?,
                ]
            }
        };
        let desc = |f: &StagedFile, media_type: &str| Descriptor {
            media_type: media_type.to_string(),
            digest: f.digest.to_string(),
            size: f.size,
            annotations: Default::default(),
            platform: None,
        };
        let layer_files = e
            .layers
            .iter()
            .map(|l| staged.get(l).cloned())
            .collect::<Result<Vec<_>>>()?;
        let config = manifest::parse_config(&staged.json("config", config_file)?)
            .map_err(|err| staged.bad(format!("config {}: {err}", e.config)))?;
        if config.diff_ids.len() != layer_files.len() {
            return Err(staged.bad(format!(
                "config {} lists {} diff_ids but manifest.json has {} layers",
                e.config,
                config.diff_ids.len(),
                layer_files.len()
            )));
        }
        // Synthesise the OCI manifest the archive lacks, so the store keeps one shape.
        let m = Manifest {
            schema_version: 2,
            media_type: manifest::MT_OCI_MANIFEST.into(),
            config: desc(config_file, manifest::MT_OCI_CONFIG),
            layers: layer_files
                .iter()
                .map(|f| desc(f, manifest::MT_DOCKER_LAYER))
                .collect(),
        };
        let manifest_json = serde_json::to_vec(&m)
            .map_err(|err| staged.bad(format!("encoding manifest: {err}")))?;
        let manifest_digest = digest::of_bytes(&manifest_json);
        // No media types in docker save: the layer's magic bytes decide.
        let layers = layer_files
            .into_iter()
            .zip(&config.diff_ids)
            .map(|(file, diff_id)| LayerPlan {
                file,
                media_type: None,
                diff_id: diff_id.clone(),
            })
            .collect();
        plans.push(ImagePlan {
            names,
            manifest_json,
            manifest_digest,
            config_file: config_file.clone(),
            config,
            layers,
        });
    }
    Ok(plans)
}

/// Remove a staging directory, logging (not failing) when it cannot be.
pub fn remove_staging(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %dir.display(), error = %e, "cannot remove staging directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_normalised_lexically() {
        let cases = [
            ("a/b", Some("a/b")),
            ("./a//b", Some("a/b")),
            ("x/../a/b", Some("a/b")),
            ("abc/../../etc", None),
            ("../x", None),
            ("/blobs/sha256/x", Some("blobs/sha256/x")),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_key(input).as_deref(), want, "{input}");
        }
    }
}
