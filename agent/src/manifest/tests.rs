//! Whole-file behaviour: names, size and content checks, multi-document files, errors with
//! file/field/reason, warnings, and defaulting.

use super::*;
use std::fs::File;
use std::io::Write;

/// A valid pod: the fixture of these tests and of the desired-pod ones (`remote_tests.rs`).
pub(super) const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: c
    image: busybox:1.36
    command: [sleep, '1000']
";

fn parse(text: &str) -> FileResult {
    parse_manifest(Path::new("/pods/web.yaml"), text.as_bytes(), "node1")
}

fn reasons(r: &FileResult) -> Vec<String> {
    r.errors.iter().map(|p| p.to_string()).collect()
}

#[test]
fn manifest_file_names() {
    let cases = [
        ("web.yaml", true),
        ("web.yml", true),
        ("web.json", true),
        ("a.b.yaml", true),
        ("Web.YAML", true),
        (".web.yaml", false),
        (".web.yaml.swp", false),
        ("web.yaml.swp", false),
        ("web.yaml.swx", false),
        ("web.yaml~", false),
        ("#web.yaml#", false),
        (".#web.yaml", false),
        ("web.yaml.bak", false),
        ("web.yaml.orig", false),
        ("4913", false),
        ("web", false),
        (".yaml", false),
        ("web.txt", false),
        ("web.yaml.tmp", false),
    ];
    for (name, want) in cases {
        assert_eq!(is_manifest_file_name(name), want, "{name}");
    }
}

#[test]
fn a_valid_pod_is_defaulted_for_the_node() {
    let r = parse(POD);
    assert_eq!(r.errors, vec![]);
    assert_eq!(r.pods.len(), 1);
    let p = &r.pods[0];
    assert_eq!(p.file, Path::new("/pods/web.yaml"));
    assert_eq!(p.pod.metadata.name.as_deref(), Some("web-node1"));
    assert_eq!(p.pod.metadata.uid.as_deref(), Some(p.uid.as_str()));
    assert_eq!(
        p.pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node1")
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    // Formatting and comments do not change the UID; content, node and file do.
    let reformatted = format!(
        "# a comment\n{}",
        POD.replace("[sleep, '1000']", "\n    - sleep\n    - \"1000\"")
    );
    assert_eq!(parse(&reformatted).pods[0].uid, p.uid);
    assert_ne!(parse(&POD.replace("1000", "1001")).pods[0].uid, p.uid);
    assert_ne!(
        parse_manifest(Path::new("/pods/web.yaml"), POD.as_bytes(), "node2").pods[0].uid,
        p.uid
    );
}

#[test]
fn json_manifests_are_read() {
    let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
    let r = parse_manifest(Path::new("/pods/j.json"), json.as_bytes(), "n");
    assert_eq!(r.errors, vec![]);
    assert_eq!(r.pods[0].pod.metadata.name.as_deref(), Some("j-n"));
}

#[test]
fn several_documents_and_empty_ones() {
    let text = format!(
        "---\n{POD}---\n---\n{}",
        POD.replace("name: web", "name: api")
    );
    let r = parse(&text);
    assert_eq!(r.errors, vec![]);
    let names: Vec<_> = r
        .pods
        .iter()
        .map(|p| p.pod.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["web-node1", "api-node1"]);
    assert_ne!(r.pods[0].uid, r.pods[1].uid);
}

#[test]
fn one_bad_document_rejects_the_whole_file() {
    let text = format!(
        "{POD}---\n{}",
        POD.replace("image: busybox:1.36", "image: ''")
    );
    let r = parse(&text);
    assert!(r.pods.is_empty());
    assert_eq!(
        reasons(&r),
        ["/pods/web.yaml: document 2 (line 18): spec.containers[0].image: required"]
    );
    let dup = parse(&format!("{POD}---\n{POD}"));
    assert!(dup.pods.is_empty());
    assert!(
        reasons(&dup)[0].contains(
            "document 2 (line 14): metadata.name: pod default/web is already defined by document 1"
        ),
        "{:?}",
        reasons(&dup)
    );
}

#[test]
fn bad_input_gets_a_clear_error() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "/pods/web.yaml: file is empty"),
        (
            b"   \n# nothing\n",
            "/pods/web.yaml: file holds no Pod (only empty documents or comments)",
        ),
        (
            b"apiVersion: v1\x00kind: Pod",
            "/pods/web.yaml: binary data, not a manifest (NUL byte at offset 14)",
        ),
        (
            b"kind: \xff\xfe",
            "/pods/web.yaml: binary data, not a manifest (not UTF-8 at offset 6)",
        ),
        (
            b"apiVersion: v1\nkind: ConfigMap\n",
            "/pods/web.yaml: line 2: kind: \"ConfigMap\" is not supported (only Pod)",
        ),
        (
            b"just a string",
            "/pods/web.yaml: a document must be a mapping (a Pod), got a string",
        ),
    ];
    for (bytes, want) in cases {
        let r = parse_manifest(Path::new("/pods/web.yaml"), bytes, "node1");
        assert!(r.pods.is_empty());
        assert_eq!(reasons(&r), [*want], "{:?}", String::from_utf8_lossy(bytes));
    }
    let r = parse("apiVersion: v1\nkind: Pod\nmetadata: {name: [}\n");
    assert!(
        reasons(&r)[0].starts_with("/pods/web.yaml: invalid YAML: "),
        "{:?}",
        reasons(&r)
    );
    assert!(reasons(&r)[0].contains("line 3"), "{:?}", reasons(&r));
}

/// As kubelet's decoder: a field the Pod API does not have (a typo, or a Kubernetes newer than
/// 1.37) is dropped and named in a warning with the API version tidelet knows, once (not what
/// lies below it); a field 1.37 has but tidelet does not honour (1.34's restartPolicyRules) is
/// the usual "not supported" warning.
#[test]
fn unknown_fields_are_warnings_naming_the_api_version() {
    let r = parse(
        &(POD.replace(
            "    image:",
            "    imagePullPolicyy: Always\n    restartPolicy: Never\n    restartPolicyRules: [{action: Restart, exitCodes: {operator: In, values: [42]}}]\n    image:",
        ) + "  fromTheFuture: {a: 1, b: [2]}\n"),
    );
    assert_eq!(r.errors, vec![]);
    let w: Vec<String> = r.pods[0].warnings.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        w,
        [
            "/pods/web.yaml: line 8: spec.containers[0].imagePullPolicyy: not in the Kubernetes 1.37 Pod API that tidelet knows; ignored",
            "/pods/web.yaml: line 13: spec.fromTheFuture: not in the Kubernetes 1.37 Pod API that tidelet knows; ignored",
            "/pods/web.yaml: line 9: spec.containers[0].restartPolicy: not supported by tidelet yet; ignored",
            "/pods/web.yaml: line 10: spec.containers[0].restartPolicyRules: not supported by tidelet yet; ignored",
        ]
    );
}

/// The version named in the warnings is the one compiled in.
#[test]
fn the_api_version_named_is_k8s_openapis_feature() {
    let compiled = k8s_openapi::k8s_if_ge_1_37! { "1.37" };
    assert_eq!(super::KUBERNETES_API, compiled);
    assert!(super::NOT_IN_API.contains(&format!("Kubernetes {compiled} Pod API")));
}

#[test]
fn alias_bomb_is_refused_quickly() {
    let mut y = String::from("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations:\n    a0: &a0 [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]\n");
    for i in 1..10 {
        let p = i - 1;
        y.push_str(&format!(
            "    a{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"
        ));
    }
    let r = parse(&y);
    assert_eq!(r.errors.len(), 1);
    assert!(r.errors[0].reason.contains("alias bomb"), "{:?}", r.errors);
}

#[test]
fn unsupported_fields_are_warnings() {
    let text = POD.replace(
        "    image:",
        "    livenessProbe:\n      exec: {command: [\"true\"]}\n    image:",
    ) + "  tolerations:\n  - key: k\n";
    let r = parse(&text);
    assert_eq!(r.errors, vec![]);
    let w: Vec<String> = r.pods[0].warnings.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        w,
        [
            "/pods/web.yaml: line 8: spec.containers[0].livenessProbe: not supported by tidelet yet; ignored",
            "/pods/web.yaml: line 12: spec.tolerations: not supported by tidelet yet; ignored"
        ]
    );
}

#[test]
fn a_rejected_file_still_reports_its_unsupported_fields() {
    let text = POD.replace(
        "    image:",
        "    livenessProbe:\n      exec: {command: [\"true\"]}\n    image:",
    ) + "  tolerations:\n  - key: k\n  restartPolicy: Sometimes\n";
    let r = parse(&text);
    assert!(r.pods.is_empty());
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert_eq!(r.errors[0].field, "spec.restartPolicy");
    let w: Vec<String> = r.rejected_warnings.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        w,
        [
            "/pods/web.yaml: line 8: spec.containers[0].livenessProbe: not supported by tidelet yet; ignored",
            "/pods/web.yaml: line 12: spec.tolerations: not supported by tidelet yet; ignored"
        ]
    );
    // A file that is accepted keeps them on its pods only.
    assert_eq!(parse(POD).rejected_warnings, vec![]);
}

#[test]
fn a_uid_in_the_file_is_replaced_and_reported() {
    let r = parse(&POD.replace("  name: web\n", "  name: web\n  uid: ../../evil\n"));
    assert_eq!(r.errors, vec![]);
    let p = &r.pods[0];
    assert_eq!(p.uid.len(), 32);
    assert_eq!(p.pod.metadata.uid.as_deref(), Some(p.uid.as_str()));
    let w: Vec<String> = p.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        w,
        ["/pods/web.yaml: line 5: metadata.uid: not supported by tidelet yet; ignored"]
    );
    // Content changes still change the UID.
    let changed = parse(
        &POD.replace("  name: web\n", "  name: web\n  uid: ../../evil\n")
            .replace("1000", "1001"),
    );
    assert_ne!(changed.pods[0].uid, p.uid);
}

#[test]
fn load_file_reads_real_files_and_refuses_big_ones() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("web.yaml");
    std::fs::write(&good, POD).unwrap();
    let r = load_file(&good, "node1");
    assert_eq!(r.errors, vec![]);
    assert_eq!(r.pods[0].file, good);

    let big = dir.path().join("big.yaml");
    let mut f = File::create(&big).unwrap();
    f.write_all(POD.as_bytes()).unwrap();
    f.set_len(MAX_MANIFEST_BYTES + 1).unwrap(); // sparse: cheap to create
    let r = load_file(&big, "node1");
    assert_eq!(
        reasons(&r),
        [format!(
            "{}: file is too large ({} bytes; the limit is {MAX_MANIFEST_BYTES} bytes)",
            big.display(),
            MAX_MANIFEST_BYTES + 1
        )]
    );

    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "").unwrap();
    assert_eq!(
        reasons(&load_file(&empty, "n")),
        [format!("{}: file is empty", empty.display())]
    );

    let missing = dir.path().join("missing.yaml");
    assert!(reasons(&load_file(&missing, "n"))[0].contains("cannot read: No such file"));
    let fifo = dir.path().join("fifo.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    assert_eq!(
        reasons(&load_file(&fifo, "n")),
        [format!("{}: not a regular file", fifo.display())]
    );
    assert_eq!(
        reasons(&load_file(dir.path(), "n")),
        [format!("{}: not a regular file", dir.path().display())]
    );
}

/// A manifest using much of the Pod API, as `kubectl get -o yaml` writes it: no field may be
/// mistaken for an unknown one, and everything tidelet ignores is reported.
#[test]
fn a_rich_manifest_has_no_false_unknown_fields() {
    let text = r#"
apiVersion: v1
kind: Pod
metadata:
  name: rich
  namespace: tools
  creationTimestamp: null
  labels: {app.kubernetes.io/name: rich, tier: ""}
  annotations: {note: "hello: world"}
  ownerReferences: []
spec:
  hostNetwork: false
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 5
  restartPolicy: OnFailure
  dnsPolicy: ClusterFirstWithHostNet
  priorityClassName: system-node-critical
  priority: 2000001000
  serviceAccountName: default
  enableServiceLinks: false
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{operator: Exists, effect: NoExecute, tolerationSeconds: 300}]
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms: [{matchExpressions: [{key: a, operator: In, values: [b]}]}]
  securityContext: {runAsUser: 1000, runAsGroup: 1000, supplementalGroups: [5], fsGroup: 2000, sysctls: [{name: net.ipv4.ip_forward, value: "1"}]}
  volumes:
  - name: scratch
    emptyDir: {medium: Memory, sizeLimit: 64Mi}
  - name: host
    hostPath: {path: /var/log, type: Directory}
  - name: cfg
    configMap: {name: cfg, items: [{key: a, path: a.conf}], defaultMode: 420}
  initContainers:
  - name: init
    image: busybox:1.36
    command: [sh, -c, "echo init"]
  containers:
  - name: main
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: [sh, -c]
    args: ["echo $(GREETING) && sleep 3600"]
    workingDir: /tmp
    env:
    - {name: GREETING, value: hi}
    - name: POD
      valueFrom: {fieldRef: {apiVersion: v1, fieldPath: metadata.name}}
    - name: MEM
      valueFrom: {resourceFieldRef: {containerName: main, resource: limits.memory, divisor: 1Mi}}
    envFrom: [{configMapRef: {name: cfg}}]
    ports: [{name: http, containerPort: 8080, protocol: TCP, hostPort: 8080}]
    resources:
      limits: {cpu: 500m, memory: 128Mi, ephemeral-storage: 1Gi}
      requests: {cpu: 0.1, memory: 64Mi}
    volumeMounts:
    - {name: scratch, mountPath: /scratch}
    - {name: host, mountPath: /host-logs, readOnly: true, mountPropagation: HostToContainer}
    securityContext: {runAsUser: 1001, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
    livenessProbe: {httpGet: {path: /healthz, port: http}, initialDelaySeconds: 3, periodSeconds: 10}
    readinessProbe: {tcpSocket: {port: 8080}}
    lifecycle: {preStop: {exec: {command: [sh, -c, "sleep 1"]}}}
    terminationMessagePath: /dev/termination-log
    terminationMessagePolicy: FallbackToLogsOnError
    stdin: false
    tty: false
status: {}
"#;
    let r = parse(text);
    assert_eq!(r.errors, vec![]);
    let w: Vec<&str> = r.pods[0]
        .warnings
        .iter()
        .map(|p| p.field.as_str())
        .collect();
    assert_eq!(
        w,
        [
            "spec.affinity",
            "spec.containers[0].envFrom",
            "spec.containers[0].lifecycle",
            "spec.containers[0].livenessProbe",
            "spec.containers[0].readinessProbe",
            "spec.containers[0].stdin",
            "spec.containers[0].tty",
            "spec.containers[0].volumeMounts[1].mountPropagation",
            "spec.initContainers",
            "spec.nodeSelector",
            "spec.tolerations",
            "spec.volumes[0].emptyDir",
            "spec.volumes[2].configMap",
        ]
    );
    let p = &r.pods[0].pod;
    assert_eq!(p.metadata.name.as_deref(), Some("rich-node1"));
    assert_eq!(p.metadata.namespace.as_deref(), Some("tools"));
}
