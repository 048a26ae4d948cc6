//! The memory controller: the limit (v1 `memory.limit_in_bytes`, v2 `memory.max`) and the
//! file that counts OOM kills.
//!
//! tidelet never sets a swap limit, so raising or lowering the memory limit needs no ordering
//! against `memory.memsw.limit_in_bytes`. A limit of 0 or below means "unlimited".

use std::path::Path;

use super::common::write;
use super::{Resources, Result};

/// v1 `memory.limit_in_bytes` value (`-1` is unlimited).
pub(crate) fn v1_limit(res: &Resources) -> Option<String> {
    res.memory_limit
        .map(|v| if v > 0 { v.to_string() } else { "-1".into() })
}

/// v2 `memory.max` value.
pub(crate) fn v2_max(res: &Resources) -> Option<String> {
    res.memory_limit
        .map(|v| if v > 0 { v.to_string() } else { "max".into() })
}

pub(crate) fn apply_v1(dir: &Path, res: &Resources) -> Result<()> {
    match v1_limit(res) {
        Some(v) => write(dir, "memory.limit_in_bytes", &v),
        None => Ok(()),
    }
}

pub(crate) fn apply_v2(dir: &Path, res: &Resources) -> Result<()> {
    match v2_max(res) {
        Some(v) => write(dir, "memory.max", &v),
        None => Ok(()),
    }
}

/// v1 has hierarchical accounting always on since Linux 5.x (writing 0 fails there); on older
/// kernels it must be switched on before the cgroup gets children. Best effort: a failure is
/// logged, never fatal.
pub(crate) fn use_hierarchy_v1(dir: &Path) {
    if let Err(e) = write(dir, "memory.use_hierarchy", "1") {
        tracing::debug!(dir = %dir.display(), error = %e, "memory.use_hierarchy not written");
    }
}

pub(crate) const OOM_FILE_V1: &str = "memory.oom_control";
pub(crate) const OOM_FILE_V2: &str = "memory.events";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_values() {
        let cases = [
            (None, None, None),
            (Some(64 << 20), Some("67108864"), Some("67108864")),
            (Some(0), Some("-1"), Some("max")),
            (Some(-1), Some("-1"), Some("max")),
        ];
        for (limit, v1, v2) in cases {
            let res = Resources {
                memory_limit: limit,
                ..Default::default()
            };
            assert_eq!(v1_limit(&res).as_deref(), v1, "{limit:?}");
            assert_eq!(v2_max(&res).as_deref(), v2, "{limit:?}");
        }
    }
}
