//! Resource signals and pressure triggers: the measuring and waking half of eviction.
//!
//! This module owns what the eviction manager reads from the OS and how it gets woken up
//! early; the policy (thresholds, ranking, decisions) lives elsewhere and only sees plain
//! numbers. Readers take their paths as parameters (`/proc/meminfo`, `/proc/loadavg`, the
//! state directory) so tests run on temp files:
//! - `memory`: the node's memory from `/proc/meminfo`, as the `MemorySample` that
//!   `Cgroups::memory_sample` gives per cgroup (the type lives in `cgroups`: signals reads
//!   through cgroups, never the other way);
//! - `pids`: `PidSample` from `pid_max` and `/proc/loadavg`;
//! - `fs`: `FsSample` of a file system (statvfs), for `nodefs.available`/`inodesFree`;
//! - `triggers`: PSI, v1 memory thresholds and v2 `memory.events`, multiplexed in one
//!   `poll(2)` so pressure is noticed without waiting for the periodic tick.
//!
//! Every file read here is read with a bounded buffer (`read_bounded`).

use std::path::{Path, PathBuf};

mod fs;
mod memory;
mod pids;
mod triggers;

pub use crate::cgroups::{working_set, MemorySample};
pub use fs::{fs_sample, FsSample};
pub use memory::{node_memory, parse_meminfo};
pub use pids::{node_pids, parse_loadavg, parse_pid_max, PidSample};
pub use triggers::{
    psi_trigger_line, psi_unprivileged_fallback, TriggerSpec, TriggerWarning, Triggers,
    V1Threshold, Wake, PSI_WINDOW_MAX, PSI_WINDOW_MIN,
};

/// Largest file the readers accept: `/proc/meminfo` is ~1.5 KiB, a `memory.stat` ~2 KiB.
pub const MAX_FILE: usize = crate::cgroups::MAX_FILE;

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A field that must be there is not (e.g. `MemTotal` in meminfo).
    #[error("{file}: no {field:?} field")]
    Missing { file: PathBuf, field: &'static str },
    /// A field whose value is not what the kernel writes there.
    #[error("{file}: field {field:?} has value {value:?}: {reason}")]
    Malformed {
        file: PathBuf,
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A file larger than `MAX_FILE`: not the kernel file we expected.
    #[error("{path}: larger than {limit} bytes, not a kernel interface file")]
    TooLarge { path: PathBuf, limit: usize },
    /// A trigger that could not be (re-)registered.
    #[error("{source_name} trigger at {path}: {reason}")]
    Trigger {
        source_name: &'static str,
        path: PathBuf,
        reason: String,
    },
}

impl SignalError {
    /// True when the file is gone (`ENOENT`, or `ENODEV` for a cgroup file removed while open):
    /// for a per-pod reading this means the pod exited, not that something is broken.
    pub fn is_gone(&self) -> bool {
        matches!(self, SignalError::Io { source, .. } if io_is_gone(source))
    }

    /// The same error, naming `path` as the file (parsers report a placeholder name).
    pub(crate) fn in_file(self, path: &Path) -> SignalError {
        match self {
            SignalError::Missing { field, .. } => SignalError::Missing {
                file: path.to_path_buf(),
                field,
            },
            SignalError::Malformed {
                field,
                value,
                reason,
                ..
            } => SignalError::Malformed {
                file: path.to_path_buf(),
                field,
                value,
                reason,
            },
            other => other,
        }
    }
}

pub(crate) use crate::cgroups::io_is_gone;

/// Read all of `path`, at most `MAX_FILE` bytes (`TooLarge` beyond), as UTF-8 (lossy: kernel
/// files are ASCII).
pub(crate) fn read_bounded(path: &Path) -> Result<String, SignalError> {
    match crate::cgroups::read_bounded(path) {
        Ok(Some(text)) => Ok(text),
        Ok(None) => Err(SignalError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_FILE,
        }),
        Err(source) => Err(SignalError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod privileged;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_read_refuses_huge_files_and_reports_gone() {
        let t = tempfile::tempdir().unwrap();
        let big = t.path().join("big");
        std::fs::write(&big, vec![b'x'; MAX_FILE + 1]).unwrap();
        let err = read_bounded(&big).unwrap_err();
        assert!(matches!(err, SignalError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("big"), "{err}");
        std::fs::write(&big, vec![b'x'; MAX_FILE]).unwrap();
        assert_eq!(read_bounded(&big).unwrap().len(), MAX_FILE);

        let err = read_bounded(&t.path().join("missing")).unwrap_err();
        assert!(err.is_gone(), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
        let enodev = SignalError::Io {
            path: big.clone(),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        };
        assert!(enodev.is_gone());
        let eacces = SignalError::Io {
            path: big,
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        };
        assert!(!eacces.is_gone());
    }
}
