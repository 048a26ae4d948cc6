//! Merging the two pod sources: the static-pod directory (local) and the control plane
//! (remote). A key (`namespace/name`) defined by both runs the local pod: whoever can write
//! the node's static-pod directory outranks the network. The remote pod is reported as a
//! `Conflict` (it stays accepted and persisted, and runs if the local file goes away).

use std::path::PathBuf;

use super::remote::{conflict_message, DesiredResult, RemoteSource};
use super::static_dir::DesiredSet;

/// A remote pod shadowed by a local static pod with the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// `namespace/name`.
    pub key: String,
    /// The static-pod file that defines it.
    pub local_file: PathBuf,
    /// `pod <key> is defined by the local static-pod file <file>; the local file wins`.
    pub message: String,
}

/// One desired set from both sources: every local pod, every remote pod whose key is not
/// local; errors of both. The conflicts are returned for the caller to report
/// (`RemoteSource::note_conflicts`, `conflict_result`).
pub fn merge(local: DesiredSet, remote: DesiredSet) -> (DesiredSet, Vec<Conflict>) {
    let mut set = local;
    let mut conflicts = Vec::new();
    set.errors.extend(remote.errors);
    for (key, pod) in remote.pods {
        if let Some(l) = set.pods.get(&key) {
            let local_file = l.pod.file.clone();
            conflicts.push(Conflict {
                message: conflict_message(&key, &local_file),
                key,
                local_file,
            });
            continue;
        }
        set.pods.insert(key, pod);
    }
    (set, conflicts)
}

/// The rejection to publish for a conflict, with the echo fields of the remote version. `None`
/// if `remote` holds no pod for that key (it was removed since the merge).
pub fn conflict_result(c: &Conflict, remote: &RemoteSource) -> Option<DesiredResult> {
    remote.conflict_result(&c.key, &c.local_file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{self, Problem};
    use crate::source::policy::RemotePolicy;
    use crate::source::remote::ResultReason;
    use crate::source::static_dir::DesiredPod;
    use std::path::Path;
    use std::sync::Arc;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: NAME\n  generation: 3\nspec:\n  containers:\n  - name: c\n    image: busybox:test\n";

    fn local(names: &[&str]) -> DesiredSet {
        let mut set = DesiredSet::default();
        for n in names {
            let file = PathBuf::from(format!("/etc/tidelet/pods/{n}.yaml"));
            let r = manifest::parse_manifest(&file, POD.replace("NAME", n).as_bytes(), "node1");
            let p = r.pods.into_iter().next().unwrap();
            set.pods.insert(
                crate::source::static_dir::pod_key(&p),
                DesiredPod {
                    pod: Arc::new(p),
                    file_errors: vec![],
                },
            );
        }
        set.errors.push(Problem {
            file: "/etc/tidelet/pods/bad.yaml".into(),
            field: "spec".into(),
            reason: "required".into(),
            at: Default::default(),
        });
        set
    }

    fn remote(dir: &Path, names: &[&str]) -> RemoteSource {
        let (mut src, problems) = RemoteSource::open(dir, "node1", RemotePolicy::default());
        assert_eq!(problems, vec![]);
        for n in names {
            let r = src.handle("default", n, POD.replace("NAME", n).as_bytes());
            assert!(r.accepted, "{r:?}");
        }
        // One rejected, for the errors.
        let r = src.handle("default", "broken", b"apiVersion: v1\nkind: Pod\n");
        assert!(!r.accepted);
        src
    }

    #[test]
    fn local_pods_win_and_conflicts_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        // Static pods are named <name>-<node>: a remote pod clashes by using that name.
        /// Local names, remote names, merged keys, conflicting keys.
        type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], &'a [&'a str]);
        let cases: &[Case] = &[
            (&[], &[], &[], &[]),
            (&["a"], &["b"], &["default/a-node1", "default/b"], &[]),
            (
                &["a"],
                &["a-node1", "c"],
                &["default/a-node1", "default/c"],
                &["default/a-node1"],
            ),
            (
                &["a", "b"],
                &["a-node1", "b-node1"],
                &["default/a-node1", "default/b-node1"],
                &["default/a-node1", "default/b-node1"],
            ),
            (&[], &["a-node1"], &["default/a-node1"], &[]),
        ];
        for (i, (l, r, want_pods, want_conflicts)) in cases.iter().enumerate() {
            let sub = dir.path().join(i.to_string());
            let src = remote(&sub, r);
            let local_set = local(l);
            let (set, conflicts) = merge(local_set.clone(), src.desired());
            let keys: Vec<&str> = set.pods.keys().map(String::as_str).collect();
            assert_eq!(keys, *want_pods, "case {i}");
            for (k, d) in &set.pods {
                let from_local = local_set.pods.contains_key(k);
                assert_eq!(
                    d.pod.file.starts_with("/etc/tidelet/pods"),
                    from_local,
                    "{k}"
                );
            }
            let ck: Vec<&str> = conflicts.iter().map(|c| c.key.as_str()).collect();
            assert_eq!(ck, *want_conflicts, "case {i}");
            // Errors: the local ones, then the remote ones.
            assert_eq!(set.errors.len(), 2, "{:?}", set.errors);
            assert_eq!(set.errors[0].file, Path::new("/etc/tidelet/pods/bad.yaml"));
            assert_eq!(
                set.errors[1].file,
                Path::new("mqtt:desired/pods/default/broken")
            );
        }
    }

    #[test]
    fn a_conflict_is_answered_with_the_remote_versions_echo() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = remote(dir.path(), &["a-node1"]);
        let (_, conflicts) = merge(local(&["a"]), src.desired());
        assert_eq!(
            conflicts,
            vec![Conflict {
                key: "default/a-node1".into(),
                local_file: "/etc/tidelet/pods/a.yaml".into(),
                message: "pod default/a-node1 is defined by the local static-pod file /etc/tidelet/pods/a.yaml; the local file wins".into(),
            }]
        );
        let r = conflict_result(&conflicts[0], &src).unwrap();
        assert_eq!((r.accepted, r.reason), (false, ResultReason::Conflict));
        assert_eq!(r.generation, Some(3));
        assert_eq!(r.uid, None, "tidelet runs the local pod, not this one");
        assert_eq!(
            r.errors,
            vec![format!("metadata.name: {}", conflicts[0].message)]
        );

        // The source remembers it: results() and a new version answer Conflict too.
        let changed = src.note_conflicts(&conflicts);
        assert_eq!(changed, vec![r.clone()]);
        assert!(
            src.note_conflicts(&conflicts).is_empty(),
            "no change, nothing to publish"
        );
        assert!(src.results().contains(&r));
        let again = src.handle(
            "default",
            "a-node1",
            POD.replace("NAME", "a-node1")
                .replace("busybox:test", "busybox:2")
                .as_bytes(),
        );
        assert_eq!(again.reason, ResultReason::Conflict);
        // The local file goes: the remote pod is accepted again and runs.
        let back = src.note_conflicts(&[]);
        assert_eq!(back.len(), 1);
        assert_eq!(
            (back[0].accepted, back[0].reason),
            (true, ResultReason::Accepted)
        );
        let (set, conflicts) = merge(DesiredSet::default(), src.desired());
        assert!(conflicts.is_empty());
        assert!(set.pods.contains_key("default/a-node1"));
    }
}
