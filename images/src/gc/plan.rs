//! The pure part of image GC, with kubelet's semantics: when to collect (`bytes_to_free`,
//! from the file system's figures and the high/low thresholds) and which images go (`plan`:
//! unused, old enough, least recently used first, shared layers freed with their last user).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

/// One image as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// `sha256:` image ID.
    pub id: String,
    /// Bytes that go with the image alone: its config and manifest blobs.
    pub own_bytes: u64,
    /// Its layers (diff ID hex); their cost is in the map given to `plan`.
    pub layers: Vec<String>,
    /// When it was imported (kubelet's "first detected"): the minimum age counts from here.
    pub imported: SystemTime,
    /// When a container last started with it (the import time if never).
    pub last_used: SystemTime,
    /// A pod uses it: never removed.
    pub in_use: bool,
}

/// What `plan` decided: image IDs to remove, in order, and the bytes that frees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub remove: Vec<String>,
    pub bytes: u64,
}

/// kubelet's trigger: nothing below `high_percent` used; at or above it, the bytes to free so
/// that usage falls to `low_percent`. `high_percent` 100 disables image GC (kubelet's rule).
pub fn bytes_to_free(capacity: u64, available: u64, high_percent: u8, low_percent: u8) -> u64 {
    if capacity == 0 || high_percent >= 100 {
        return 0;
    }
    let available = u128::from(available.min(capacity));
    let capacity = u128::from(capacity);
    // kubelet: usagePercent := 100 - int(available*100/capacity)
    let usage_percent = 100 - available * 100 / capacity;
    if usage_percent < u128::from(high_percent) {
        return 0;
    }
    let target_available = capacity * u128::from(100 - low_percent.min(100)) / 100;
    u64::try_from(target_available.saturating_sub(available)).unwrap_or(u64::MAX)
}

/// Which images to remove to free `bytes_to_free`: those not in use and at least `min_age`
/// old, least recently used first, until enough is freed. A shared layer frees its bytes only
/// with the last image that references it; `layer_bytes` is each layer's cost by diff ID hex.
pub fn plan(
    candidates: &[Candidate],
    layer_bytes: &BTreeMap<String, u64>,
    bytes_to_free: u64,
    min_age: Duration,
    now: SystemTime,
) -> Plan {
    let mut out = Plan::default();
    if bytes_to_free == 0 {
        return out;
    }
    let mut refs: BTreeMap<&str, usize> = BTreeMap::new();
    for c in candidates {
        for l in unique(&c.layers) {
            *refs.entry(l).or_default() += 1;
        }
    }
    let old_enough = |c: &&Candidate| {
        // An import time in the future (the clock went back) counts as young.
        now.duration_since(c.imported)
            .is_ok_and(|age| age >= min_age)
    };
    let mut order: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| !c.in_use)
        .filter(old_enough)
        .collect();
    order.sort_by(|a, b| (a.last_used, a.imported, &a.id).cmp(&(b.last_used, b.imported, &b.id)));
    for c in order {
        if out.bytes >= bytes_to_free {
            break;
        }
        out.remove.push(c.id.clone());
        out.bytes = out.bytes.saturating_add(c.own_bytes);
        for l in unique(&c.layers) {
            if let Some(n) = refs.get_mut(l) {
                *n -= 1;
                if *n == 0 {
                    let b = layer_bytes.get(l).copied().unwrap_or(0);
                    out.bytes = out.bytes.saturating_add(b);
                }
            }
        }
    }
    out
}

pub(crate) fn unique(layers: &[String]) -> BTreeSet<&str> {
    layers.iter().map(String::as_str).collect()
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const GI: u64 = 1 << 30;

    #[test]
    fn bytes_to_free_table() {
        // (capacity, available, high, low, want)
        let cases = [
            (100 * GI, 50 * GI, 85, 80, 0),      // 50 % used: below high
            (100 * GI, 16 * GI, 85, 80, 0),      // 84 % used
            (100 * GI, 15 * GI, 85, 80, 5 * GI), // 85 %: free down to 80 %
            (100 * GI, 5 * GI, 85, 80, 15 * GI), // 95 %
            (100 * GI, 0, 85, 80, 20 * GI),      // full
            (100 * GI, 200 * GI, 85, 80, 0),     // bogus available > capacity
            (0, 0, 85, 80, 0),                   // no file system figures
            (100 * GI, 0, 100, 80, 0),           // high 100: GC disabled
            (100 * GI, 99 * GI, 0, 0, GI),       // high 0: always, down to 0 % used
        ];
        for (cap, avail, high, low, want) in cases {
            assert_eq!(
                bytes_to_free(cap, avail, high, low),
                want,
                "cap {cap} avail {avail} high {high} low {low}"
            );
        }
    }

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn cand(
        id: &str,
        own: u64,
        layers: &[&str],
        imported: u64,
        used: u64,
        in_use: bool,
    ) -> Candidate {
        Candidate {
            id: id.into(),
            own_bytes: own,
            layers: layers.iter().map(|s| s.to_string()).collect(),
            imported: t(imported),
            last_used: t(used),
            in_use,
        }
    }

    /// (name, candidates, bytes to free, want removed, want bytes)
    type PlanCase<'a> = (&'a str, Vec<Candidate>, u64, Vec<&'a str>, u64);

    #[test]
    fn plan_table() {
        let layer_bytes: BTreeMap<String, u64> = [("base", 100), ("a", 10), ("b", 20), ("c", 30)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let now = t(10_000);
        let min_age = Duration::from_secs(120);
        let a = cand("A", 1, &["base", "a"], 1000, 5000, false);
        let b = cand("B", 1, &["base", "b"], 1000, 3000, false);
        let c = cand("C", 1, &["c"], 1000, 4000, false);
        let used = cand("U", 1, &["base"], 1000, 1000, true);
        let young = cand("Y", 1, &["c"], 9_950, 9_950, false);
        let future = cand("F", 1, &["a"], 20_000, 20_000, false);
        let cases: Vec<PlanCase> = vec![
            ("nothing to free", vec![a.clone(), b.clone()], 0, vec![], 0),
            (
                "LRU first: B before A",
                vec![a.clone(), b.clone()],
                1,
                vec!["B"],
                21,
            ),
            (
                "shared base frees with the last image",
                vec![a.clone(), b.clone()],
                50,
                vec!["B", "A"],
                132,
            ),
            (
                "in-use image keeps the shared base",
                vec![a.clone(), b.clone(), used.clone()],
                u64::MAX,
                vec!["B", "A"],
                32,
            ),
            (
                "LRU order across three",
                vec![a.clone(), b.clone(), c.clone()],
                40,
                vec!["B", "C"],
                52,
            ),
            (
                "young image skipped",
                vec![young.clone()],
                u64::MAX,
                vec![],
                0,
            ),
            (
                "young image holds its layer; old one sharing it frees only itself",
                vec![young.clone(), c.clone()],
                u64::MAX,
                vec!["C"],
                1,
            ),
            (
                "future import time is young",
                vec![future],
                u64::MAX,
                vec![],
                0,
            ),
            ("only in-use", vec![used.clone()], u64::MAX, vec![], 0),
            (
                "stops once enough is freed",
                vec![a.clone(), b.clone(), c.clone()],
                21,
                vec!["B"],
                21,
            ),
        ];
        for (name, cands, need, want, want_bytes) in cases {
            let got = plan(&cands, &layer_bytes, need, min_age, now);
            assert_eq!(got.remove, want, "{name}");
            assert_eq!(got.bytes, want_bytes, "{name}");
        }
    }

    #[test]
    fn repeated_layer_counts_once() {
        let layer_bytes: BTreeMap<String, u64> = [("x".to_string(), 7)].into_iter().collect();
        let c = cand("R", 0, &["x", "x"], 0, 0, false);
        let got = plan(&[c], &layer_bytes, u64::MAX, Duration::ZERO, t(1));
        assert_eq!(got.bytes, 7);
    }
}
