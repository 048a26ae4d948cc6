//! Writing state to disk so that a crash at any instant leaves either the old or the new file,
//! never a torn one.
//!
//! Two strengths, chosen by what the file describes:
//! - `atomic_write`: temp file, fsync, rename, fsync of the directory. For state that must
//!   survive a power loss (the image store's index, configuration).
//! - `atomic_replace`: temp file and rename, no fsync. For the files under a pod's directory
//!   (`pod.json`, `sandbox.json`, the supervisor's records): they describe running processes,
//!   which a power loss ends anyway, and rename alone makes them consistent across the crash
//!   tidelet must survive while pods keep running, the agent's or a supervisor's own. This
//!   keeps journal commits (milliseconds each) off the path that starts a pod.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Atomically and durably replace `path` with `data` (temp file, fsync, rename, fsync of the
/// directory).
pub fn atomic_write(path: &Path, data: &[u8]) -> io::Result<()> {
    write_via_temp(path, data, true)
}

/// Atomically replace `path` with `data` (temp file, rename), without forcing it to disk.
pub fn atomic_replace(path: &Path, data: &[u8]) -> io::Result<()> {
    write_via_temp(path, data, false)
}

fn write_via_temp(path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Serialise `value` as JSON and write it atomically and durably.
pub fn atomic_write_json<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    atomic_write(path, &data)
}

/// Serialise `value` as JSON and `atomic_replace` `path` with it.
pub fn atomic_replace_json<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let data = serde_json::to_vec(value).map_err(io::Error::other)?;
    atomic_replace(path, &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        atomic_replace(&p, b"three").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }
}
