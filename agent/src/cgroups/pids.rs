//! The pids controller: `pids.max` (the same file on v1 and v2). A limit of 0 or below means
//! "unlimited" (`max`).

use std::path::Path;

use super::common::write;
use super::{Resources, Result};

pub(crate) fn max(res: &Resources) -> Option<String> {
    res.pids_limit
        .map(|v| if v > 0 { v.to_string() } else { "max".into() })
}

pub(crate) fn apply(dir: &Path, res: &Resources) -> Result<()> {
    match max(res) {
        Some(v) => write(dir, "pids.max", &v),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_values() {
        for (limit, want) in [
            (None, None),
            (Some(100), Some("100")),
            (Some(0), Some("max")),
            (Some(-1), Some("max")),
        ] {
            let res = Resources {
                pids_limit: limit,
                ..Default::default()
            };
            assert_eq!(max(&res).as_deref(), want, "{limit:?}");
        }
    }
}
