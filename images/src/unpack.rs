//! Unpacking one layer into `layers/<diffid-hex>/`, streaming: the blob is decompressed,
//! hashed (to check the diff_id) and written entry by entry into a temporary directory that is
//! renamed into place only once everything checked out, so a crash or a rejected layer never
//! leaves a directory that looks complete.
//!
//! OCI whiteouts become overlayfs ones (`.wh.NAME` -> 0/0 character device `NAME`,
//! `.wh..wh..opq` -> `trusted.overlay.opaque=y` on the directory), so the layer directories
//! stack directly as overlay lower dirs. Entries are checked before anything is written: no
//! absolute paths, no `..`, never through a symlink, hard links only to files of this layer.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::digest::{Digest, HashingReader};
use crate::tarext::{Extensions, Member};
use crate::xattr::lsetxattr;
use crate::{Error, Result};

/// The xattr overlayfs reads to hide a lower directory's contents.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

/// Decide a layer's compression from its media type (when the archive gives one) and its first
/// bytes. The magic bytes are the truth; a media type that claims gzip over something that is
/// not gzip is an error, and zstd (either way) is refused as unsupported.
pub fn compression(
    media_type: Option<&str>,
    magic: &[u8],
) -> std::result::Result<Compression, String> {
    let is_gzip = magic.starts_with(&[0x1f, 0x8b]);
    let is_zstd = magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    let mt = media_type.unwrap_or("");
    if is_zstd || mt.ends_with("+zstd") || mt.ends_with(".zstd") {
        return Err(format!(
            "zstd-compressed layers are unsupported (media type {mt:?})"
        ));
    }
    let says_gzip = mt.ends_with("+gzip") || mt.ends_with(".gzip") || mt.ends_with(".gz");
    match (says_gzip, is_gzip) {
        (_, true) => Ok(Compression::Gzip),
        (true, false) => Err(format!(
            "media type {mt:?} says gzip but the blob does not start with the gzip magic"
        )),
        (false, false) => {
            let known = mt.is_empty()
                || mt.ends_with(".tar")
                || mt.ends_with("tar.v1")
                || mt == "application/vnd.docker.image.rootfs.diff.tar";
            if known {
                Ok(Compression::None)
            } else {
                Err(format!("unsupported layer media type {mt:?}"))
            }
        }
    }
}

/// Check a tar entry's path and turn it into a path relative to the layer root (empty for the
/// root itself). `Err` carries the reason the entry is unsafe.
pub fn entry_rel_path(raw: &[u8]) -> std::result::Result<PathBuf, String> {
    if raw.is_empty() {
        return Err("empty path".into());
    }
    if raw[0] == b'/' {
        return Err("absolute path".into());
    }
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("path has a `..` component".into()),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path".into()),
        }
    }
    Ok(out)
}

/// What a layer is, for error messages and for finding it.
pub struct LayerSource<'a> {
    /// The archive being imported (named in errors).
    pub archive: &'a Path,
    /// The verified compressed (or plain) blob on disk.
    pub blob: &'a Path,
    pub media_type: Option<&'a str>,
    /// The uncompressed digest from the image config; also the layer's directory name.
    pub diff_id: &'a Digest,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn nix_err(path: &Path) -> impl FnOnce(nix::Error) -> Error + '_ {
    move |e| Error::Io {
        path: path.to_path_buf(),
        source: io::Error::from(e),
    }
}

/// Unpack `src` into `layers_dir/<diffid-hex>` unless it is already there; returns that dir.
pub fn unpack_layer(src: &LayerSource<'_>, layers_dir: &Path) -> Result<PathBuf> {
    let dest = layers_dir.join(src.diff_id.hex());
    // Refuse what we could not unpack even when this diff_id is already here, so an archive
    // is accepted or refused the same way whatever the store already holds.
    drop(open_layer(src)?);
    if dest.is_dir() {
        tracing::debug!(layer = %src.diff_id, "layer already unpacked");
        return Ok(dest);
    }
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = layers_dir.join(format!(
        ".tmp-{}-{}-{n}",
        src.diff_id.hex(),
        std::process::id()
    ));
    fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    // The layer root is `/` of every container using it: 0755 unless the layer says otherwise.
    let result = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
        .map_err(io_err(&tmp))
        .and_then(|()| unpack_into(src, &tmp))
        .and_then(|()| {
            // Everything on disk before the rename makes the layer look complete.
            let dir = File::open(&tmp).map_err(io_err(&tmp))?;
            nix::unistd::syncfs(&dir).map_err(nix_err(&tmp))
        });
    if let Err(e) = result {
        if let Err(rm) = fs::remove_dir_all(&tmp) {
            tracing::warn!(path = %tmp.display(), error = %rm, "cannot remove rejected layer");
        }
        return Err(e);
    }
    if let Err(e) = fs::rename(&tmp, &dest) {
        // Someone else unpacked the same layer meanwhile: theirs is as good as ours.
        let _ = fs::remove_dir_all(&tmp);
        if !dest.is_dir() {
            return Err(Error::Io {
                path: dest,
                source: e,
            });
        }
    }
    crate::store::fsync_dir(layers_dir)?;
    tracing::info!(layer = %src.diff_id, path = %dest.display(), "layer unpacked");
    Ok(dest)
}

/// The layer's uncompressed stream, after checking its compression is one we read.
fn open_layer(src: &LayerSource<'_>) -> Result<Box<dyn Read>> {
    let file = File::open(src.blob).map_err(io_err(src.blob))?;
    let mut buffered = BufReader::with_capacity(64 * 1024, file);
    let magic = buffered.fill_buf().map_err(io_err(src.blob))?;
    let compression = compression(src.media_type, magic).map_err(|reason| Error::BadArchive {
        archive: src.archive.to_path_buf(),
        reason: format!("layer {}: {reason}", src.diff_id),
    })?;
    let reader: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::None => Box::new(buffered),
    };
    Ok(reader)
}

fn unpack_into(src: &LayerSource<'_>, root: &Path) -> Result<()> {
    let layer = src.diff_id.to_string();
    let bad = |reason: String| Error::BadArchive {
        archive: src.archive.to_path_buf(),
        reason: format!("layer {layer}: {reason}"),
    };
    let decompressed = open_layer(src)?;
    let mut hashing = HashingReader::new(decompressed);
    let mut unpacker = Unpacker {
        archive: src.archive,
        layer: &layer,
        root,
        as_root: nix::unistd::geteuid().is_root(),
        dirs: Vec::new(),
    };
    {
        let mut tar = tar::Archive::new(&mut hashing);
        let entries = tar
            .entries()
            .map_err(|e| bad(format!("reading tar: {e}")))?;
        let mut extensions = Extensions::default();
        for entry in entries.raw(true) {
            let mut entry = entry.map_err(|e| bad(format!("reading tar: {e}")))?;
            if let Some(member) = extensions.absorb(&mut entry).map_err(&bad)? {
                unpacker.entry(entry, member)?;
            }
        }
        extensions.finish().map_err(&bad)?;
    }
    let (actual, _) = hashing
        .finish()
        .map_err(|e| bad(format!("reading layer: {e}")))?;
    if &actual != src.diff_id {
        return Err(Error::DigestMismatch {
            archive: src.archive.to_path_buf(),
            digest: layer.clone(),
            actual: actual.to_string(),
        });
    }
    unpacker.finish_dirs()
}

/// Metadata applied to a written entry.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Unpacker<'a> {
    archive: &'a Path,
    layer: &'a str,
    root: &'a Path,
    as_root: bool,
    /// Directories whose mode and mtime are set once their contents are written (a read-only
    /// directory could not be filled, and each write would bump its mtime).
    dirs: Vec<(PathBuf, Meta)>,
}

impl Unpacker<'_> {
    fn unsafe_entry(&self, entry: &str, reason: impl Into<String>) -> Error {
        Error::UnsafeEntry {
            archive: self.archive.to_path_buf(),
            layer: self.layer.to_string(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    fn bad(&self, entry: &str, reason: impl std::fmt::Display) -> Error {
        Error::BadArchive {
            archive: self.archive.to_path_buf(),
            reason: format!("layer {}: entry {entry:?}: {reason}", self.layer),
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>, member: Member) -> Result<()> {
        let name = String::from_utf8_lossy(&member.path).into_owned();
        let rel = entry_rel_path(&member.path).map_err(|r| self.unsafe_entry(&name, r))?;
        let kind = entry.header().entry_type();
        let meta = self.meta(&entry, &member, &name)?;

        let file_name = rel
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        if file_name.starts_with(WHITEOUT_PREFIX) {
            let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
            return self.whiteout(&name, &parent, &file_name);
        }
        if rel.as_os_str().is_empty() {
            // The layer root itself (`./`): keep its metadata for the root directory.
            if kind.is_dir() {
                self.dirs.push((self.root.to_path_buf(), meta));
            }
            return Ok(());
        }
        let parent = rel.parent().unwrap_or(Path::new(""));
        self.ensure_dirs(&name, parent)?;
        let path = self.root.join(&rel);

        if kind.is_dir() {
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    self.remove(&path)?;
                    fs::create_dir(&path).map_err(io_err(&path))?;
                }
                Err(_) => fs::create_dir(&path).map_err(io_err(&path))?,
            }
            self.chown(&path, &meta)?;
            self.set_xattrs(&path, &meta);
            self.dirs.push((path, meta));
            return Ok(());
        }
        // Anything else replaces what an earlier entry of this layer put there; removing a
        // symlink removes the link, never what it points to.
        if fs::symlink_metadata(&path).is_ok() {
            self.remove(&path)?;
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(io_err(&path))?;
                let copied = io::copy(&mut entry, &mut out)
                    .map_err(|e| self.bad(&name, format!("reading contents: {e}")))?;
                if copied != entry.size() {
                    return Err(self.bad(
                        &name,
                        format!("truncated ({copied} of {} bytes)", entry.size()),
                    ));
                }
                self.finish_entry(&path, &meta, true)
            }
            tar::EntryType::Symlink => {
                let target = member
                    .link
                    .clone()
                    .ok_or_else(|| self.bad(&name, "symlink without a target"))?;
                // Kept as is, even when absolute: it resolves inside the container's root.
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(io_err(&path))?;
                self.finish_entry(&path, &meta, false)
            }
            tar::EntryType::Link => {
                let target = member
                    .link
                    .clone()
                    .ok_or_else(|| self.bad(&name, "hard link without a target"))?;
                let target_name = String::from_utf8_lossy(&target).into_owned();
                let target_rel = entry_rel_path(&target).map_err(|r| {
                    self.unsafe_entry(&name, format!("hard link target {target_name:?}: {r}"))
                })?;
                if let Some(p) = target_rel.parent() {
                    self.check_no_symlink(&name, p, false)?;
                }
                let source = self.root.join(&target_rel);
                match fs::symlink_metadata(&source) {
                    Ok(m) if !m.is_dir() => {}
                    Ok(_) => return Err(self.unsafe_entry(&name, format!("hard link to directory {target_name:?}"))),
                    Err(_) => {
                        return Err(self.unsafe_entry(
                            &name,
                            format!("hard link target {target_name:?} is not an earlier entry of this layer"),
                        ))
                    }
                }
                // link(2) does not follow a symlink source: the link is to the symlink itself.
                fs::hard_link(&source, &path).map_err(io_err(&path))
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                let dev = nix::sys::stat::makedev(u64::from(major), u64::from(minor));
                nix::sys::stat::mknod(&path, sflag, Mode::from_bits_truncate(0o600), dev)
                    .map_err(nix_err(&path))?;
                self.finish_entry(&path, &meta, true)
            }
            other => Err(self.bad(&name, format!("unsupported tar entry type {other:?}"))),
        }
    }

    /// `.wh..wh..opq` makes `parent` opaque; `.wh.NAME` becomes a 0/0 char device `NAME`.
    fn whiteout(&mut self, name: &str, parent: &Path, file_name: &str) -> Result<()> {
        self.ensure_dirs(name, parent)?;
        let dir = self.root.join(parent);
        if file_name == OPAQUE_MARKER {
            return lsetxattr(&dir, OPAQUE_XATTR.as_bytes(), b"y").map_err(io_err(&dir));
        }
        if file_name.starts_with(".wh..wh.") {
            // aufs bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`): meaningless to overlayfs.
            tracing::debug!(entry = name, "skipping aufs metadata");
            return Ok(());
        }
        let hidden = &file_name[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(self.unsafe_entry(name, "whiteout names no file"));
        }
        let path = dir.join(hidden);
        if fs::symlink_metadata(&path).is_ok() {
            self.remove(&path)?;
        }
        nix::sys::stat::mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::empty(),
            nix::sys::stat::makedev(0, 0),
        )
        .map_err(nix_err(&path))
    }

    /// Make sure every component of `rel_dir` is a real directory inside the layer, creating
    /// missing ones; a symlink anywhere on the way is refused (it could point anywhere).
    fn ensure_dirs(&self, name: &str, rel_dir: &Path) -> Result<()> {
        self.check_no_symlink(name, rel_dir, true)
    }

    fn check_no_symlink(&self, name: &str, rel_dir: &Path, create: bool) -> Result<()> {
        let mut cur = self.root.to_path_buf();
        for c in rel_dir.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    let shown = cur
                        .strip_prefix(self.root)
                        .unwrap_or(&cur)
                        .display()
                        .to_string();
                    return Err(self.unsafe_entry(name, format!("parent {shown:?} is a symlink")));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    let shown = cur
                        .strip_prefix(self.root)
                        .unwrap_or(&cur)
                        .display()
                        .to_string();
                    return Err(
                        self.unsafe_entry(name, format!("parent {shown:?} is not a directory"))
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    // A directory the tar implies but does not list: 0755 whatever our umask.
                    fs::create_dir(&cur).map_err(io_err(&cur))?;
                    fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))
                        .map_err(io_err(&cur))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let shown = cur
                        .strip_prefix(self.root)
                        .unwrap_or(&cur)
                        .display()
                        .to_string();
                    return Err(self.unsafe_entry(name, format!("{shown:?} is not in this layer")));
                }
                Err(e) => {
                    return Err(Error::Io {
                        path: cur,
                        source: e,
                    })
                }
            }
        }
        Ok(())
    }

    fn meta<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        member: &Member,
        name: &str,
    ) -> Result<Meta> {
        let h = entry.header();
        let mode = h.mode().map_err(|e| self.bad(name, format!("mode: {e}")))? & 0o7777;
        let mut uid = h.uid().map_err(|e| self.bad(name, format!("uid: {e}")))?;
        let mut gid = h.gid().map_err(|e| self.bad(name, format!("gid: {e}")))?;
        let secs = h
            .mtime()
            .map_err(|e| self.bad(name, format!("mtime: {e}")))?;
        // time_t is 32 bits on armv7 glibc: clamp what it cannot hold.
        let mut mtime = TimeSpec::new(libc::time_t::try_from(secs).unwrap_or(libc::time_t::MAX), 0);
        let mut xattrs = Vec::new();
        for (key, value) in &member.pax {
            let text = std::str::from_utf8(value).unwrap_or("");
            if let Some(x) = key.strip_prefix(b"SCHILY.xattr.") {
                xattrs.push((x.to_vec(), value.clone()));
            } else if key == b"uid" {
                uid = text
                    .parse()
                    .map_err(|_| self.bad(name, format!("pax uid {text:?}")))?;
            } else if key == b"gid" {
                gid = text
                    .parse()
                    .map_err(|_| self.bad(name, format!("pax gid {text:?}")))?;
            } else if key == b"mtime" {
                mtime = parse_pax_time(text)
                    .ok_or_else(|| self.bad(name, format!("pax mtime {text:?}")))?;
            }
        }
        let uid =
            u32::try_from(uid).map_err(|_| self.bad(name, format!("uid {uid} out of range")))?;
        let gid =
            u32::try_from(gid).map_err(|_| self.bad(name, format!("gid {gid} out of range")))?;
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }

    fn chown(&self, path: &Path, meta: &Meta) -> Result<()> {
        // Unprivileged, files stay ours: the only useful thing an unprivileged import can do.
        if self.as_root {
            std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid))
                .map_err(io_err(path))?;
        }
        Ok(())
    }

    fn set_xattrs(&self, path: &Path, meta: &Meta) {
        for (k, v) in &meta.xattrs {
            let key = String::from_utf8_lossy(k);
            // A layer must not steer overlayfs (redirects, opaque, metacopy) through xattrs.
            if key.starts_with("trusted.overlay.") {
                tracing::warn!(path = %path.display(), xattr = %key, "dropping overlay xattr from layer");
                continue;
            }
            if let Err(e) = lsetxattr(path, k, v) {
                tracing::warn!(path = %path.display(), xattr = %key, error = %e, "cannot set xattr");
            }
        }
    }

    /// Owner, then mode (chown clears set-id bits), xattrs, mtime last.
    fn finish_entry(&self, path: &Path, meta: &Meta, chmod: bool) -> Result<()> {
        self.chown(path, meta)?;
        if chmod {
            fs::set_permissions(path, fs::Permissions::from_mode(meta.mode))
                .map_err(io_err(path))?;
        }
        self.set_xattrs(path, meta);
        set_mtime(path, meta.mtime)
    }

    /// Remove what an earlier entry put at `path`, and forget the directories that went with
    /// it: their deferred chmod must never land on whatever replaces them (a symlink to `/etc`).
    fn remove(&mut self, path: &Path) -> Result<()> {
        remove_any(path)?;
        self.dirs.retain(|(d, _)| !d.starts_with(path));
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        for (path, meta) in dirs.into_iter().rev() {
            // chmod follows symlinks: check once more that the whole path is still real dirs.
            let rel = path.strip_prefix(self.root).unwrap_or(Path::new(""));
            self.check_no_symlink(&rel.display().to_string(), rel, false)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(meta.mode))
                .map_err(io_err(&path))?;
            set_mtime(&path, meta.mtime)?;
        }
        Ok(())
    }
}

fn parse_pax_time(s: &str) -> Option<TimeSpec> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let nanos: i64 = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    // time_t and tv_nsec are 32 bits on armv7 glibc: clamp seconds, nanos always fit.
    let secs = libc::time_t::try_from(secs).unwrap_or(if secs < 0 {
        libc::time_t::MIN
    } else {
        libc::time_t::MAX
    });
    Some(TimeSpec::new(secs, libc::c_long::try_from(nanos).ok()?))
}

fn set_mtime(path: &Path, mtime: TimeSpec) -> Result<()> {
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &mtime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(nix_err(path))
}

fn remove_any(path: &Path) -> Result<()> {
    let m = fs::symlink_metadata(path).map_err(io_err(path))?;
    if m.is_dir() {
        fs::remove_dir_all(path).map_err(io_err(path))
    } else {
        fs::remove_file(path).map_err(io_err(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_table() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"bin/sh", Some("bin/sh")),
            (b"./bin/sh", Some("bin/sh")),
            (b"./", Some("")),
            (b".", Some("")),
            (b"a//b/./c/", Some("a/b/c")),
            (b"etc/.wh.passwd", Some("etc/.wh.passwd")),
            (b"..", None),
            (b"../x", None),
            (b"a/../../x", None),
            (b"a/..", None),
            (b"/etc/passwd", None),
            (b"//x", None),
            (b"", None),
        ];
        for (raw, want) in cases {
            let got = entry_rel_path(raw);
            match (got, want) {
                (Ok(p), Some(w)) => {
                    assert_eq!(p, Path::new(w), "{:?}", String::from_utf8_lossy(raw))
                }
                (Err(_), None) => {}
                (g, w) => panic!("{:?}: got {g:?}, want {w:?}", String::from_utf8_lossy(raw)),
            }
        }
    }

    #[test]
    fn compression_table() {
        let gz: &[u8] = &[0x1f, 0x8b, 8, 0];
        let zst: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
        let tar: &[u8] = b"bin/";
        let oci_gz = "application/vnd.oci.image.layer.v1.tar+gzip";
        let oci_tar = "application/vnd.oci.image.layer.v1.tar";
        let docker_gz = "application/vnd.docker.image.rootfs.diff.tar.gzip";
        type Case<'a> = (
            Option<&'a str>,
            &'a [u8],
            std::result::Result<Compression, &'a str>,
        );
        let cases: &[Case<'_>] = &[
            (Some(oci_gz), gz, Ok(Compression::Gzip)),
            (Some(docker_gz), gz, Ok(Compression::Gzip)),
            (Some(oci_tar), tar, Ok(Compression::None)),
            (Some(oci_tar), gz, Ok(Compression::Gzip)),
            (None, gz, Ok(Compression::Gzip)),
            (None, tar, Ok(Compression::None)),
            (None, b"", Ok(Compression::None)),
            (Some(oci_gz), tar, Err("says gzip")),
            (
                Some("application/vnd.oci.image.layer.v1.tar+zstd"),
                zst,
                Err("zstd"),
            ),
            (None, zst, Err("zstd")),
            (Some(oci_tar), zst, Err("zstd")),
            (
                Some("application/x-bzip2"),
                tar,
                Err("unsupported layer media type"),
            ),
        ];
        for (mt, magic, want) in cases {
            match (compression(*mt, magic), want) {
                (Ok(c), Ok(w)) => assert_eq!(c, *w, "{mt:?}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{mt:?}: {e}"),
                (g, w) => panic!("{mt:?}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time("12"), Some(TimeSpec::new(12, 0)));
        assert_eq!(parse_pax_time("12.5"), Some(TimeSpec::new(12, 500_000_000)));
        assert_eq!(parse_pax_time("x"), None);
    }
}
