//! File-system signals (`nodefs.available`, `nodefs.inodesFree`) from `statvfs(2)` on a path
//! in the file system, normally tidelet's state directory.
//!
//! As kubelet does: capacity is `f_blocks * f_frsize`, available is what an unprivileged
//! writer may still use (`f_bavail * f_frsize`, without the root reserve), and free inodes
//! are `f_ffree`.

use std::path::{Path, PathBuf};

use super::SignalError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct FsSample {
    /// Bytes.
    pub capacity: u64,
    /// Bytes.
    pub available: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

/// Sample the file system that holds `path`.
pub fn fs_sample(path: &Path) -> Result<FsSample, SignalError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| SignalError::Io {
        path: PathBuf::from(path),
        source: e.into(),
    })?;
    // The statvfs field types are u32 or u64 depending on the target (armv7 vs x86_64).
    let frsize = st.fragment_size() as u64;
    Ok(FsSample {
        capacity: (st.blocks() as u64).saturating_mul(frsize),
        available: (st.blocks_available() as u64).saturating_mul(frsize),
        inodes: st.files() as u64,
        inodes_free: st.files_free() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_a_real_file_system_and_sees_a_file_use_space() {
        // tmpfs (when there) charges pages at once and sees little traffic from builds.
        let shm = Path::new("/dev/shm");
        let t = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let before = fs_sample(t.path()).unwrap();
        assert!(before.capacity > 0, "{before:?}");
        assert!(before.available <= before.capacity, "{before:?}");
        assert!(before.inodes_free <= before.inodes, "{before:?}");
        // The same file system, sampled through the file it holds; fsync makes the
        // allocation visible in the block counts.
        let f = t.path().join("data");
        std::fs::write(&f, vec![1u8; 8 << 20]).unwrap();
        std::fs::File::open(&f).unwrap().sync_all().unwrap();
        let after = fs_sample(&f).unwrap();
        assert_eq!(after.capacity, before.capacity);
        // Other writers share the file system: allow for noise, but 8 MiB must show.
        assert!(
            after.available + (4 << 20) <= before.available,
            "{before:?} -> {after:?}"
        );
    }

    #[test]
    fn missing_path_is_gone_and_named() {
        let err = fs_sample(Path::new("/nonexistent/tidelet-state")).unwrap_err();
        assert!(err.is_gone(), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/tidelet-state"),
            "{err}"
        );
    }
}
