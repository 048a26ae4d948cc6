//! The cpu controller: shares (v1 `cpu.shares`, v2 `cpu.weight` converted as kubelet does) and
//! CFS bandwidth (v1 `cpu.cfs_period_us` + `cpu.cfs_quota_us`, v2 `cpu.max`). A quota of 0 or
//! below means "unlimited".
//!
//! v1 refuses (EINVAL) a period that would make the current quota exceed the parent's
//! bandwidth, so, as runc does, the period is written first and, if refused, again after the
//! quota.

use std::path::Path;

use super::common::{read, write};
use super::{Error, Resources, Result};

/// kubelet's `MinShares`: the smallest v1 `cpu.shares` written.
pub const MIN_SHARES: u64 = 2;
/// kubelet's `MaxShares`: the largest v1 `cpu.shares` written.
pub const MAX_SHARES: u64 = 262_144;

/// cgroup v2 `cpu.weight` from v1 shares, as kubelet and runc convert:
/// `1 + ((shares - 2) * 9999) / 262142`, so 2 -> 1, 1024 -> 39, 262144 -> 10000. It lives
/// with the controller that writes it; `qos` decides the shares.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(MIN_SHARES, MAX_SHARES);
    1 + ((shares - 2) * 9999) / 262_142
}

pub(crate) fn v1_shares(res: &Resources) -> Option<String> {
    res.cpu_shares
        .map(|s| s.clamp(MIN_SHARES, MAX_SHARES).to_string())
}

pub(crate) fn v1_quota(res: &Resources) -> Option<String> {
    res.cpu_quota
        .map(|q| if q > 0 { q.to_string() } else { "-1".into() })
}

pub(crate) fn v2_weight(res: &Resources) -> Option<String> {
    res.cpu_shares.map(|s| shares_to_weight(s).to_string())
}

/// v2 `cpu.max` ("$MAX $PERIOD"). With only a period, the current quota (`current`, the file's
/// contents) is kept; with only a quota, the kernel keeps the current period.
pub(crate) fn v2_max(res: &Resources, current: Option<&str>) -> Option<String> {
    let quota = |q: i64| {
        if q > 0 {
            q.to_string()
        } else {
            "max".to_string()
        }
    };
    match (res.cpu_quota, res.cpu_period) {
        (None, None) => None,
        (Some(q), None) => Some(quota(q)),
        (Some(q), Some(p)) => Some(format!("{} {p}", quota(q))),
        (None, Some(p)) => {
            let cur = current
                .and_then(|c| c.split_whitespace().next())
                .unwrap_or("max");
            Some(format!("{cur} {p}"))
        }
    }
}

pub(crate) fn apply_v1(dir: &Path, res: &Resources) -> Result<()> {
    if let Some(s) = v1_shares(res) {
        write(dir, "cpu.shares", &s)?;
    }
    let quota = v1_quota(res);
    let mut period_pending = None;
    if let Some(p) = res.cpu_period {
        let p = p.to_string();
        match write(dir, "cpu.cfs_period_us", &p) {
            Ok(()) => {}
            Err(Error::Write { source, .. })
                if source.raw_os_error() == Some(libc::EINVAL) && quota.is_some() =>
            {
                period_pending = Some(p);
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(q) = quota {
        write(dir, "cpu.cfs_quota_us", &q)?;
    }
    if let Some(p) = period_pending {
        write(dir, "cpu.cfs_period_us", &p)?;
    }
    Ok(())
}

pub(crate) fn apply_v2(dir: &Path, res: &Resources) -> Result<()> {
    if let Some(w) = v2_weight(res) {
        write(dir, "cpu.weight", &w)?;
    }
    let current = match (res.cpu_quota, res.cpu_period) {
        (None, Some(_)) => Some(read(&dir.join("cpu.max"))?),
        _ => None,
    };
    if let Some(m) = v2_max(res, current.as_deref()) {
        write(dir, "cpu.max", &m)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_from_shares() {
        for (shares, weight) in [
            (2, 1),
            (1024, 39),
            (102, 4),
            (262_144, 10_000),
            (0, 1),
            (1_000_000, 10_000),
        ] {
            assert_eq!(
                shares_to_weight(shares),
                weight,
                "weight of {shares} shares"
            );
        }
    }

    fn res(shares: Option<u64>, quota: Option<i64>, period: Option<u64>) -> Resources {
        Resources {
            cpu_shares: shares,
            cpu_quota: quota,
            cpu_period: period,
            ..Default::default()
        }
    }

    #[test]
    fn v1_values() {
        let cases = [
            (res(None, None, None), None, None),
            (
                res(Some(1024), Some(50_000), Some(100_000)),
                Some("1024"),
                Some("50000"),
            ),
            (res(Some(0), Some(0), None), Some("2"), Some("-1")),
            (
                res(Some(1 << 20), Some(-1), None),
                Some("262144"),
                Some("-1"),
            ),
        ];
        for (r, shares, quota) in cases {
            assert_eq!(v1_shares(&r).as_deref(), shares, "{r:?}");
            assert_eq!(v1_quota(&r).as_deref(), quota, "{r:?}");
        }
    }

    #[test]
    fn v2_values() {
        let cases = [
            (res(None, None, None), None, None, None),
            (
                res(Some(1024), Some(50_000), Some(100_000)),
                None,
                Some("39"),
                Some("50000 100000"),
            ),
            (
                res(Some(2), Some(-1), Some(100_000)),
                None,
                Some("1"),
                Some("max 100000"),
            ),
            (
                res(Some(262_144), Some(20_000), None),
                None,
                Some("10000"),
                Some("20000"),
            ),
            (
                res(None, None, Some(50_000)),
                Some("30000 100000\n"),
                None,
                Some("30000 50000"),
            ),
            (
                res(None, None, Some(50_000)),
                Some("max 100000\n"),
                None,
                Some("max 50000"),
            ),
        ];
        for (r, current, weight, max) in cases {
            assert_eq!(v2_weight(&r).as_deref(), weight, "{r:?}");
            assert_eq!(v2_max(&r, current).as_deref(), max, "{r:?}");
        }
    }
}
