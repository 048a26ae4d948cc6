//! Desired pods vs what the pod workers were last told -> what to tell them (pure).
//!
//! A pod is identified by `namespace/name`; its UID changes whenever its manifest's content
//! changes, so "replace" is just a new desired UID for the same key: the worker stops the old
//! pod before it starts the new one, as kubelet does for static pods.

use std::collections::BTreeMap;

use crate::manifest::Problem;

/// What a worker was last told about its pod, enough to see a difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Told {
    pub uid: String,
    pub file_errors: Vec<Problem>,
    /// Whether the pod may run (admission).
    pub gate: crate::eviction::admission::Gate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run (or keep running) `uid` under `key`; also sent when only the file's errors changed.
    Set { key: String },
    /// Stop and remove the pod under `key`.
    Remove { key: String },
}

pub fn diff(desired: &BTreeMap<String, Told>, told: &BTreeMap<String, Told>) -> Vec<Action> {
    let mut actions = Vec::new();
    for (key, d) in desired {
        if told.get(key) != Some(d) {
            actions.push(Action::Set { key: key.clone() });
        }
    }
    for key in told.keys() {
        if !desired.contains_key(key) {
            actions.push(Action::Remove { key: key.clone() });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn told(uid: &str, errs: usize) -> Told {
        Told {
            uid: uid.into(),
            file_errors: (0..errs)
                .map(|i| Problem {
                    file: "f".into(),
                    field: String::new(),
                    reason: format!("e{i}"),
                    at: Default::default(),
                })
                .collect(),
            gate: Default::default(),
        }
    }

    #[test]
    fn diff_table() {
        let m = |v: &[(&str, Told)]| {
            v.iter()
                .map(|(k, t)| (k.to_string(), t.clone()))
                .collect::<BTreeMap<_, _>>()
        };
        let set = |k: &str| Action::Set { key: k.into() };
        let rm = |k: &str| Action::Remove { key: k.into() };
        let cases = vec![
            ("nothing", m(&[]), m(&[]), vec![]),
            ("new pod", m(&[("a", told("1", 0))]), m(&[]), vec![set("a")]),
            (
                "unchanged",
                m(&[("a", told("1", 0))]),
                m(&[("a", told("1", 0))]),
                vec![],
            ),
            (
                "spec changed",
                m(&[("a", told("2", 0))]),
                m(&[("a", told("1", 0))]),
                vec![set("a")],
            ),
            (
                "file became invalid",
                m(&[("a", told("1", 1))]),
                m(&[("a", told("1", 0))]),
                vec![set("a")],
            ),
            ("removed", m(&[]), m(&[("a", told("1", 0))]), vec![rm("a")]),
            (
                "mixed",
                m(&[("a", told("1", 0)), ("c", told("3", 0))]),
                m(&[("a", told("1", 0)), ("b", told("2", 0))]),
                vec![set("c"), rm("b")],
            ),
        ];
        for (name, desired, was, want) in cases {
            assert_eq!(diff(&desired, &was), want, "{name}");
        }
    }
}
