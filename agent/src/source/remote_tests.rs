//! The remote source against a temp dir: results, persistence and its permissions, restart
//! from disk, removal, sweep, corrupt files, policy changes, invalid updates, bounds.

use super::*;
use std::os::unix::fs::PermissionsExt;

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  generation: 2
  resourceVersion: \"41\"
spec:
  containers:
  - name: c
    image: busybox:test
    command: [sleep, '1000']
";

fn open(dir: &Path) -> RemoteSource {
    let (src, problems) = RemoteSource::open(dir, "node1", RemotePolicy::default());
    assert_eq!(problems, vec![]);
    src
}

fn uids(src: &RemoteSource) -> Vec<(String, String)> {
    src.desired()
        .pods
        .iter()
        .map(|(k, d)| (k.clone(), d.pod.uid.clone()))
        .collect()
}

#[test]
fn an_accepted_pod_is_persisted_and_restarts_from_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("remote-pods");
    let mut src = open(&dir);
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let r = src.handle("default", "web", POD.as_bytes());
    assert_eq!(
        (r.accepted, r.reason),
        (true, ResultReason::Accepted),
        "{r:?}"
    );
    assert_eq!(
        (r.generation, r.resource_version.as_deref()),
        (Some(2), Some("41"))
    );
    let uid = r.uid.clone().unwrap();
    assert_eq!(uids(&src), vec![("default/web".to_string(), uid.clone())]);
    let file = dir.join("default_web.json");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(on_disk["payload"], POD);
    assert_eq!(on_disk["generation"], 2);
    assert_eq!(on_disk["resourceVersion"], "41");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        vec![std::ffi::OsString::from("default_web.json")]
    );

    // A restart with no broker: same desired set, same UID, same answer to re-publish.
    let again = open(&dir);
    assert_eq!(uids(&again), uids(&src));
    assert_eq!(again.desired(), src.desired());
    assert_eq!(again.results(), src.results());
}

#[test]
fn the_result_json_is_the_documented_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let mut src = open(tmp.path());
    let r = src.handle("default", "web", POD.replace("busybox:test", "").as_bytes());
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "apiVersion": "tidelet.io/v1", "kind": "DesiredPodResult",
            "namespace": "default", "name": "web", "accepted": false, "reason": "Invalid",
            "message": "rejected: spec.containers[0].image: required",
            "errors": ["spec.containers[0].image: required"],
            "generation": 2, "resourceVersion": "41", "uid": null
        })
    );
    let back: DesiredResult = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
}

#[test]
fn removal_deletes_the_file_and_the_pod() {
    let tmp = tempfile::tempdir().unwrap();
    let mut src = open(tmp.path());
    let uid = src.handle("default", "web", POD.as_bytes()).uid.unwrap();
    let r = src.handle("default", "web", b"");
    assert_eq!((r.accepted, r.reason), (true, ResultReason::Removed));
    assert_eq!(r.message, format!("pod default/web (uid {uid}) removed"));
    assert_eq!(
        r.uid.as_deref(),
        Some(uid.as_str()),
        "the removed pod's uid"
    );
    assert!(!tmp.path().join("default_web.json").exists());
    assert!(src.desired().pods.is_empty());
    assert_eq!(src.results(), vec![r]);
    assert!(open(tmp.path()).desired().pods.is_empty());
    // Removing what is not there is not an error.
    let r = src.handle("default", "other", b"");
    assert_eq!((r.accepted, r.reason), (true, ResultReason::Removed));
    assert_eq!(r.uid, None, "nothing ran under that name");
}

#[test]
fn an_invalid_update_keeps_the_old_version_running_and_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut src = open(tmp.path());
    let uid = src.handle("default", "web", POD.as_bytes()).uid.unwrap();
    let file = tmp.path().join("default_web.json");
    let before = std::fs::read(&file).unwrap();
    let bad = POD
        .replace("generation: 2", "generation: 3")
        .replace("image: busybox:test", "image: ''");
    let r = src.handle("default", "web", bad.as_bytes());
    assert_eq!((r.accepted, r.reason), (false, ResultReason::Invalid));
    assert_eq!(
        r.generation,
        Some(3),
        "the answer is about the rejected version"
    );
    assert_eq!(r.uid.as_deref(), Some(uid.as_str()), "the old version runs");
    assert!(r.message.contains("keeps running"), "{}", r.message);
    let set = src.desired();
    assert_eq!(set.pods["default/web"].pod.uid, uid);
    assert_eq!(set.pods["default/web"].file_errors.len(), 1);
    assert_eq!(set.errors, set.pods["default/web"].file_errors);
    assert_eq!(std::fs::read(&file).unwrap(), before);
    // After a restart, the accepted version is what comes back.
    assert_eq!(
        uids(&open(tmp.path())),
        vec![("default/web".to_string(), uid.clone())]
    );
    // A valid update replaces it, with a new UID, and clears the errors.
    let r = src.handle("default", "web", POD.replace("1000", "2000").as_bytes());
    assert!(r.accepted);
    let new_uid = r.uid.unwrap();
    assert_ne!(new_uid, uid);
    assert_eq!(
        uids(&src),
        vec![("default/web".to_string(), new_uid.clone())]
    );
    assert!(src.desired().errors.is_empty());
    assert_eq!(
        uids(&open(tmp.path())),
        vec![("default/web".to_string(), new_uid)]
    );
}

#[test]
fn rejected_payloads_are_answered_with_their_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let mut src = open(tmp.path());
    let cases: Vec<(&str, &str, Vec<u8>, ResultReason)> = vec![
        (
            "default",
            "web",
            b"apiVersion: apps/v1\nkind: Deployment\n".to_vec(),
            ResultReason::NotAPod,
        ),
        (
            "default",
            "web",
            vec![0x89, b'P', b'N', b'G', 0, 1],
            ResultReason::NotAPod,
        ),
        (
            "default",
            "web",
            vec![b'a'; MAX_REMOTE_MANIFEST_BYTES + 1],
            ResultReason::TooLarge,
        ),
        (
            "default",
            "web",
            POD.replace("spec:\n", "spec:\n  nodeName: node7\n")
                .into_bytes(),
            ResultReason::WrongNode,
        ),
        (
            "default",
            "api",
            POD.as_bytes().to_vec(),
            ResultReason::Invalid,
        ),
        (
            "default",
            "Web",
            POD.as_bytes().to_vec(),
            ResultReason::Invalid,
        ),
        (
            "default",
            "web",
            POD.replace("spec:\n", "spec:\n  hostNetwork: true\n")
                .into_bytes(),
            ResultReason::PolicyViolation,
        ),
    ];
    for (ns, name, payload, reason) in cases {
        let r = src.handle(ns, name, &payload);
        assert_eq!((r.accepted, r.reason), (false, reason), "{r:?}");
        assert!(!r.errors.is_empty(), "{r:?}");
        assert_eq!(r.uid, None);
    }
    assert!(src.desired().pods.is_empty());
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing rejected is persisted"
    );
    let r = src.handle(
        "default",
        "web",
        POD.replace("spec:\n", "spec:\n  hostPID: true\n")
            .as_bytes(),
    );
    assert_eq!(r.errors, vec!["spec.hostPID: host namespaces are not allowed for remote pods (mqtt.remotePodPolicy.allowHostNamespaces is false)"]);
}

#[test]
fn a_persisted_pod_the_policy_now_rejects_is_dropped_with_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let allow = RemotePolicy {
        allowed_host_paths: vec!["/data".into()],
        ..Default::default()
    };
    let with_host_path = POD.replace(
        "    command: [sleep, '1000']\n",
        "    command: [sleep, '1000']\n  volumes:\n  - name: d\n    hostPath: {path: /data/x}\n",
    );
    let (mut src, _) = RemoteSource::open(tmp.path(), "node1", allow.clone());
    assert!(
        src.handle("default", "web", with_host_path.as_bytes())
            .accepted
    );
    assert!(
        src.handle(
            "default",
            "db",
            POD.replace("name: web", "name: db").as_bytes()
        )
        .accepted
    );
    // Same policy: both come back.
    let (again, problems) = RemoteSource::open(tmp.path(), "node1", allow);
    assert_eq!(problems, vec![]);
    assert_eq!(again.desired().pods.len(), 2);
    // Stricter policy: the hostPath pod is dropped, reported, its file removed.
    let (strict, problems) = RemoteSource::open(tmp.path(), "node1", RemotePolicy::default());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].file, Path::new("mqtt:desired/pods/default/web"));
    assert_eq!(problems[0].field, "spec.volumes[0].hostPath.path");
    assert!(!tmp.path().join("default_web.json").exists());
    assert!(tmp.path().join("default_db.json").exists());
    let keys: Vec<String> = strict.desired().pods.keys().cloned().collect();
    assert_eq!(keys, vec!["default/db"]);
    let r = strict
        .results()
        .into_iter()
        .find(|r| r.name == "web")
        .unwrap();
    assert_eq!(
        (r.accepted, r.reason),
        (false, ResultReason::PolicyViolation)
    );
    // The same goes for a node renamed since: the pod was for another node.
    let (_, problems) = RemoteSource::open(tmp.path(), "node2", RemotePolicy::default());
    assert_eq!(
        problems.len(),
        0,
        "no nodeName in the manifest: it is this node's"
    );
}

#[test]
fn corrupt_files_are_reported_and_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut src = open(tmp.path());
    assert!(src.handle("default", "web", POD.as_bytes()).accepted);
    let dir = tmp.path();
    std::fs::write(
        dir.join("default_torn.json"),
        b"{\"namespace\":\"default\",\"na",
    )
    .unwrap();
    std::fs::write(dir.join("default_bin.json"), [0xff, 0x00, 0x13]).unwrap();
    std::fs::write(
        dir.join("default_moved.json"),
        serde_json::to_vec(&serde_json::json!({"namespace": "default", "name": "elsewhere", "payload": POD, "generation": null, "resourceVersion": null})).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join(".default_x.json.tmp123"), b"half").unwrap();
    std::fs::write(dir.join("README"), b"not ours").unwrap();
    let (again, problems) = RemoteSource::open(dir, "node1", RemotePolicy::default());
    let mut reported: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    reported.sort();
    assert_eq!(reported.len(), 3, "{reported:?}");
    assert!(
        reported[0].starts_with(&format!(
            "{}: corrupt: ",
            dir.join("default_bin.json").display()
        )),
        "{reported:?}"
    );
    assert_eq!(
        reported[1],
        format!(
            "{}: holds pod default/elsewhere, whose file would be default_elsewhere.json; skipped",
            dir.join("default_moved.json").display()
        )
    );
    assert!(
        reported[2].starts_with(&format!(
            "{}: corrupt: EOF",
            dir.join("default_torn.json").display()
        )),
        "{reported:?}"
    );
    assert_eq!(uids(&again), uids(&src), "the good file still loads");
    assert!(
        !dir.join(".default_x.json.tmp123").exists(),
        "a crashed write's temp file is cleaned up"
    );
    assert!(
        dir.join("default_torn.json").exists(),
        "corrupt files are kept for inspection"
    );
}

#[test]
fn a_file_that_cannot_be_written_is_said_in_the_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let mut src = open(tmp.path());
    // A directory in the file's place makes the rename fail, even for root.
    std::fs::create_dir(tmp.path().join("default_web.json")).unwrap();
    std::fs::write(tmp.path().join("default_web.json").join("x"), b"").unwrap();
    let r = src.handle("default", "web", POD.as_bytes());
    assert!(r.accepted, "{r:?}");
    assert!(r.message.contains("could not be saved"), "{}", r.message);
    assert_eq!(src.desired().pods.len(), 1);
}

#[test]
fn sweep_removes_what_the_broker_no_longer_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let mut src = open(tmp.path());
    for n in ["a", "b", "c"] {
        assert!(
            src.handle(
                "default",
                n,
                POD.replace("name: web", &format!("name: {n}")).as_bytes()
            )
            .accepted
        );
    }
    assert!(!src.handle("default", "d", b"not a pod").accepted);
    // A restart while the broker was down, then a reconnect where only `b` is retained.
    let mut src = open(tmp.path());
    let present: BTreeSet<String> = ["default/b".to_string()].into();
    let removed = src.sweep(&present);
    let keys: Vec<String> = removed.iter().map(DesiredResult::key).collect();
    assert_eq!(keys, vec!["default/a", "default/c"]);
    assert!(removed
        .iter()
        .all(|r| r.reason == ResultReason::Removed && r.accepted));
    let left: Vec<String> = src.desired().pods.keys().cloned().collect();
    assert_eq!(left, vec!["default/b"]);
    let files: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, vec![std::ffi::OsString::from("default_b.json")]);
    assert!(
        src.sweep(&present).is_empty(),
        "a second sweep has nothing to do"
    );
}

#[test]
fn long_names_get_a_file_name_that_fits() {
    let name = vec!["a".repeat(62); 4].join(".");
    let f = file_name("kube-system", &name);
    assert!(f.len() < 80, "{f}");
    assert_eq!(file_name("default", "web"), "default_web.json");
    let tmp = tempfile::tempdir().unwrap();
    let mut src = open(tmp.path());
    let r = src.handle(
        "default",
        &name,
        POD.replace("name: web", &format!("name: {name}"))
            .as_bytes(),
    );
    assert!(r.accepted, "{r:?}");
    assert!(!r.message.contains("could not be saved"), "{}", r.message);
    assert_eq!(uids(&open(tmp.path())), uids(&src));
}

#[test]
fn entries_without_a_pod_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let mut src = open(tmp.path());
    assert!(src.handle("default", "web", POD.as_bytes()).accepted);
    for i in 0..MAX_RESULTS_WITHOUT_POD + 10 {
        src.handle("default", &format!("junk-{i}"), b"junk");
    }
    let results = src.results();
    assert_eq!(results.len(), MAX_RESULTS_WITHOUT_POD + 1);
    assert!(
        results.iter().any(|r| r.name == "web"),
        "a running pod is never dropped"
    );
    assert!(
        !results.iter().any(|r| r.name == "junk-0"),
        "the oldest rejection goes first"
    );
    assert!(results
        .iter()
        .any(|r| r.name == format!("junk-{}", MAX_RESULTS_WITHOUT_POD + 9)));
}

#[test]
fn an_unchanged_payload_is_not_written_again() {
    let tmp = tempfile::tempdir().unwrap();
    let mut src = open(tmp.path());
    let first = src.handle("default", "web", POD.as_bytes());
    let file = tmp.path().join("default_web.json");
    // Mark the file: a rewrite would replace it (a new inode through the rename).
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = ino(&file);
    assert_eq!(src.handle("default", "web", POD.as_bytes()), first);
    assert_eq!(
        ino(&file),
        before,
        "the re-delivered retained message is not rewritten"
    );
    // Nor after a restart, which knows what is on disk.
    let mut src = open(tmp.path());
    assert_eq!(src.handle("default", "web", POD.as_bytes()), first);
    assert_eq!(ino(&file), before);
    // A changed payload is.
    assert!(
        src.handle("default", "web", POD.replace("\"41\"", "\"42\"").as_bytes())
            .accepted
    );
    assert_ne!(ino(&file), before);
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(on_disk["resourceVersion"], "42");
}

fn problem(field: &str, reason: &str) -> Problem {
    Problem {
        file: "mqtt:desired/pods/default/web".into(),
        field: field.into(),
        reason: reason.into(),
        at: Default::default(),
    }
}

/// The one-line messages of results: the first problem and how many more, whether an
/// accepted version keeps running; the ignored fields of an accepted pod.
#[test]
fn result_messages_say_why_in_one_line() {
    let one = [problem("spec.hostPID", "not allowed")];
    let three = [
        problem("spec.hostPID", "not allowed"),
        problem("spec.hostIPC", "not allowed"),
        problem(
            "spec.containers[0].securityContext.privileged",
            "not allowed",
        ),
    ];
    let rows: [(ResultReason, &[Problem], Option<&str>, &str); 4] = [
        (
            ResultReason::PolicyViolation,
            &one,
            None,
            "rejected: spec.hostPID: not allowed",
        ),
        (
            ResultReason::PolicyViolation,
            &three,
            None,
            "rejected: spec.hostPID: not allowed (and 2 more)",
        ),
        (
            ResultReason::PolicyViolation,
            &one,
            Some("u1"),
            "rejected: spec.hostPID: not allowed; the accepted version (uid u1) keeps running",
        ),
        (ResultReason::TooLarge, &[], None, "rejected: TooLarge"),
    ];
    for (reason, probs, running, want) in rows {
        assert_eq!(rejected_message(reason, probs, running), want);
    }
    let mut sp = StaticPod {
        pod: Default::default(),
        file: "f".into(),
        uid: "u2".into(),
        warnings: vec![],
    };
    assert_eq!(
        accepted_message("default/web", &sp),
        "accepted as pod default/web (uid u2)"
    );
    sp.warnings = vec![
        problem("spec.initContainers", "not supported yet; ignored"),
        problem("spec.foo", "not in the Pod API"),
    ];
    assert_eq!(
        accepted_message("default/web", &sp),
        "accepted as pod default/web (uid u2); fields ignored: spec.initContainers (not supported yet), spec.foo (not in the Pod API)"
    );
}
