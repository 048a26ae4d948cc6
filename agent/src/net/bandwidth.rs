//! The `kubernetes.io/ingress-bandwidth` and `kubernetes.io/egress-bandwidth` annotations, as
//! kubelet reads them (`ExtractPodBandwidthResources`: a quantity in bits per second, between
//! 1k and 1P) and as containerd hands them to the bandwidth plugin (`toCNIBandWidth`: the
//! rate, and a burst of 2^32-1 bits, the most the plugin takes).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

pub const INGRESS: &str = "kubernetes.io/ingress-bandwidth";
pub const EGRESS: &str = "kubernetes.io/egress-bandwidth";

const MIN_BITS: i64 = 1_000;
const MAX_BITS: i64 = 1_000_000_000_000_000;
const BURST: u64 = u32::MAX as u64;

/// The bandwidth plugin's `bandwidth` capability argument; `None` when the pod sets neither
/// annotation. An annotation that is not a reasonable rate is an error naming it.
pub fn from_annotations(a: Option<&BTreeMap<String, String>>) -> Result<Option<Value>, String> {
    let Some(a) = a else { return Ok(None) };
    let rate = |key: &str| -> Result<Option<i64>, String> {
        let Some(v) = a.get(key) else { return Ok(None) };
        let bits = crate::quantity::parse_units(v)
            .map_err(|e| format!("metadata.annotations[{key}]: {e}"))?;
        if bits < MIN_BITS {
            return Err(format!(
                "metadata.annotations[{key}]: {v:?}: resource is unreasonably small (< 1kbit)"
            ));
        }
        if bits > MAX_BITS {
            return Err(format!(
                "metadata.annotations[{key}]: {v:?}: resource is unreasonably large (> 1Pbit)"
            ));
        }
        Ok(Some(bits))
    };
    let (ingress, egress) = (rate(INGRESS)?, rate(EGRESS)?);
    if ingress.is_none() && egress.is_none() {
        return Ok(None);
    }
    let mut m = Map::new();
    if let Some(r) = ingress {
        m.insert("ingressRate".into(), json!(r));
        m.insert("ingressBurst".into(), json!(BURST));
    }
    if let Some(r) = egress {
        m.insert("egressRate".into(), json!(r));
        m.insert("egressBurst".into(), json!(BURST));
    }
    Ok(Some(Value::Object(m)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_become_rates_in_bits_or_a_reason() {
        let ann = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        type Case<'a> = (BTreeMap<String, String>, Result<Option<Value>, &'a str>);
        let cases: Vec<Case> = vec![
            (ann(&[]), Ok(None)),
            (ann(&[("other", "1")]), Ok(None)),
            (
                ann(&[(INGRESS, "10M")]),
                Ok(Some(
                    json!({"ingressRate": 10_000_000, "ingressBurst": 4294967295u64}),
                )),
            ),
            (
                ann(&[(EGRESS, "1Mi"), (INGRESS, "1k")]),
                Ok(Some(
                    json!({"ingressRate": 1000, "ingressBurst": 4294967295u64,
                                "egressRate": 1048576, "egressBurst": 4294967295u64}),
                )),
            ),
            (
                ann(&[(INGRESS, "999")]),
                Err("kubernetes.io/ingress-bandwidth]: \"999\": resource is unreasonably small"),
            ),
            (ann(&[(EGRESS, "2P")]), Err("unreasonably large")),
            (
                ann(&[(EGRESS, "fast")]),
                Err("metadata.annotations[kubernetes.io/egress-bandwidth]: quantity \"fast\""),
            ),
        ];
        for (a, want) in cases {
            let got = from_annotations(Some(&a));
            match (&want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(w, g, "{a:?}"),
                (Err(part), Err(e)) => assert!(e.contains(part), "{a:?}: {e}"),
                _ => panic!("{a:?}: want {want:?}, got {got:?}"),
            }
        }
        assert_eq!(from_annotations(None), Ok(None));
    }
}
