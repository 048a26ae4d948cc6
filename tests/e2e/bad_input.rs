//! Bad input gets a clear error naming file, field and reason; the agent never dies and other
//! pods are untouched.

use std::time::Duration;

use tidelet_e2e::*;

use crate::pod_yaml;

/// (file name, content, what the error must mention)
fn bad_manifests() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let bomb = {
        let mut s = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for i in 0..9u8 {
            let (prev, cur) = ((b'a' + i) as char, (b'a' + i + 1) as char);
            s.push_str(&format!("{cur}: &{cur} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
        }
        s
    };
    vec![
        ("invalid.yaml", b"apiVersion: v1\nkind: Pod\nmetadata: {name: [x\n".to_vec(), "invalid.yaml"),
        ("bomb.yaml", bomb.into_bytes(), "bomb.yaml"),
        ("huge.yaml", vec![b'#'; 11 << 20], "huge.yaml"),
        ("garbage.yaml", (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(), "garbage.yaml"),
        ("empty.yaml", vec![], "empty"),
        ("svc.yaml", b"apiVersion: v1\nkind: Service\nmetadata: {name: s}\n".to_vec(), "Service"),
        ("escape.yaml", b"apiVersion: v1\nkind: Pod\nmetadata: {name: ../../etc}\nspec:\n  containers: [{name: c, image: busybox}]\n".to_vec(), "metadata.name"),
        ("limits.yaml", b"apiVersion: v1\nkind: Pod\nmetadata: {name: lim}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources: {requests: {memory: 2Gi}, limits: {memory: 1Gi}}\n".to_vec(), "resources"),
        ("dupc.yaml", b"apiVersion: v1\nkind: Pod\nmetadata: {name: dupc}\nspec:\n  containers: [{name: c, image: busybox}, {name: c, image: busybox}]\n".to_vec(), "containers[1].name"),
    ]
}

#[test]
fn validate_reports_file_field_and_reason_for_each_bad_manifest() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (file, content, must) in bad_manifests() {
        let p = dir.path().join(file);
        std::fs::write(&p, &content).unwrap();
        let t0 = std::time::Instant::now();
        let out = std::process::Command::new(bin())
            .args(["validate", p.to_str().unwrap(), "--node-name", "n"])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{file}: exit 1: {text}");
        assert!(
            text.contains("error:") && text.contains(file),
            "{file}: names the file: {text}"
        );
        assert!(text.contains(must), "{file}: mentions {must:?}: {text}");
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{file}: no runaway parsing"
        );
    }
    // A good one passes, with warnings for fields not honoured.
    let good = dir.path().join("good.yaml");
    let mut yaml = pod_yaml("good", "", &[("c", "true", "")]);
    yaml.push_str("    readinessProbe: {exec: {command: [\"true\"]}}\n");
    std::fs::write(&good, yaml).unwrap();
    let out = std::process::Command::new(bin())
        .args(["validate", good.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("warning:") && text.contains("readinessProbe"),
        "{text}"
    );
    // A field the Pod API does not have is dropped, as kubelet's decoder does: a warning
    // naming the API version; --strict makes it an error (for CI pipelines).
    let unknown = dir.path().join("unknown.yaml");
    std::fs::write(
        &unknown,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: unk}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicyy: Never\n",
    )
    .unwrap();
    for (strict, code, word) in [(false, 0, "warning:"), (true, 1, "error:")] {
        let mut args = vec!["validate", unknown.to_str().unwrap()];
        if strict {
            args.push("--strict");
        }
        let out = std::process::Command::new(bin())
            .args(&args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {text}");
        assert!(
            text.contains(&format!("{word} {}: line 8: spec.containers[0].imagePullPolicyy: not in the Kubernetes 1.37 Pod API that tidelet knows; ignored", unknown.display())),
            "{args:?}: {text}"
        );
    }
    // A bad one lists its warnings too, beside its errors.
    let bad = dir.path().join("bad.yaml");
    let mut yaml = pod_yaml("bad", "", &[("c", "true", "")]);
    yaml.push_str(
        "    readinessProbe: {exec: {command: [\"true\"]}}\n    resources: {requests: {memory: 2Gi}, limits: {memory: 1Gi}}\n",
    );
    std::fs::write(&bad, yaml).unwrap();
    let out = std::process::Command::new(bin())
        .args(["validate", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("error:") && text.contains("resources"),
        "{text}"
    );
    assert!(
        text.contains("warning:") && text.contains("readinessProbe"),
        "{text}"
    );
}

#[test]
fn bad_manifests_in_the_directory_leave_the_agent_and_other_pods_alone() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    a.write(
        "good.yaml",
        &pod_yaml("good", "", &[("c", "sleep 3600", "")]),
    );
    let good = a.full_name("good");
    a.wait_running(&good);
    let pid = a.container_pid(&good, "c");
    for (file, content, _) in bad_manifests() {
        a.write_bytes(file, &content);
    }
    // Duplicate pod name in a second file: the first file (in path order) wins.
    a.write(
        "good2.yaml",
        &pod_yaml("good", "", &[("c", "sleep 1234", "")]),
    );
    // A command that does not exist in the image, and a missing image.
    a.write("nocmd.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: nocmd}\nspec:\n  restartPolicy: Never\n  containers:\n  - {name: c, image: localhost/busybox:1.35, command: [/no/such/cmd]}\n");
    a.write("noimg.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: noimg}\nspec:\n  containers:\n  - {name: c, image: localhost/nothere:1, imagePullPolicy: Never}\n");
    let nocmd = a.wait_pod(&a.full_name("nocmd"), "start error", |p| {
        p["status"]["containerStatuses"][0]["state"]["terminated"].is_object()
    });
    let t = &nocmd["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["reason"], "StartError", "{t}");
    assert!(
        t["message"].as_str().unwrap_or("").contains("/no/such/cmd"),
        "{t}"
    );
    let noimg = a.wait_pod(&a.full_name("noimg"), "image waiting", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImageNeverPull"
    });
    assert_eq!(noimg["status"]["phase"], "Pending");

    std::thread::sleep(Duration::from_millis(500));
    assert!(a.alive(), "agent survived every bad manifest");
    assert_eq!(
        a.container_pid(&good, "c"),
        pid,
        "the good pod is untouched"
    );
    let names: Vec<String> = a
        .pods()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 3, "only good, nocmd and noimg run: {names:?}");
    let log = a.agent_log();
    for (file, _, _) in bad_manifests() {
        assert!(log.contains(file), "agent log names {file}");
    }
    assert!(log.contains("already defined"), "duplicate name reported");
    assert!(!log.contains("panicked"), "no panic in the agent");
    a.stop_all();
}

#[test]
fn image_import_rejects_bad_archives_and_accepts_docker_save() {
    if !privileged() {
        return;
    }
    let a = Agent::start();
    // docker save format imports and runs.
    let out = a.cli(&[
        "image",
        "import",
        images().join("busybox.docker.tar").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ls = String::from_utf8_lossy(&a.cli(&["image", "ls"]).stdout).to_string();
    assert!(
        ls.contains("localhost/busybox:1.35") && ls.contains("localhost/busybox-docker:1.35"),
        "{ls}"
    );
    // A corrupted copy: flip one byte inside a blob.
    let mut bytes = std::fs::read(images().join("busybox.oci.tar")).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    let bad = a.dir.path().join("bad.tar");
    std::fs::write(&bad, &bytes).unwrap();
    let out = a.cli(&["image", "import", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(
        err.contains("bad.tar")
            && (err.contains("digest") || err.contains("mismatch") || err.contains("tar")),
        "{err}"
    );
    let garbage = a.dir.path().join("garbage.tar");
    std::fs::write(&garbage, b"not a tar at all").unwrap();
    let out = a.cli(&["image", "import", garbage.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("garbage.tar"));
}

#[test]
fn layered_image_applies_whiteouts_and_image_command_rules() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    let out = a.cli(&[
        "image",
        "import",
        images().join("layered.oci.tar").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No command: the image's Entrypoint + Cmd; args alone replace Cmd; $(VAR) expansion.
    a.write("l.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: l}\nspec:\n  restartPolicy: Never\n  containers:\n  - {name: plain, image: localhost/layered:1}\n  - name: args\n    image: localhost/layered:1\n    args: [\"$(WHO)-$(GREETING)-$$(WHO)\"]\n    env: [{name: WHO, value: me}]\n  - name: fs\n    image: localhost/layered:1\n    command: [sh, -c, \"pwd; echo $GREETING; ls /data /etc; cat /etc/keep.txt\"]\n");
    let name = a.full_name("l");
    a.wait_pod(&name, "all done", |p| {
        p["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|cs| cs.iter().all(|c| c["state"]["terminated"].is_object()))
    });
    let log = |c: &str| {
        String::from_utf8_lossy(&a.cli(&["logs", &name, "-c", c]).stdout)
            .trim()
            .to_string()
    };
    assert_eq!(log("plain"), "from-entrypoint cmd-arg");
    // Kubernetes does not expand image env vars in args; $$ escapes.
    assert_eq!(log("args"), "from-entrypoint me-$(GREETING)-$(WHO)");
    let fs = log("fs");
    assert!(fs.starts_with("/work\nhello\n"), "{fs}");
    // The top layer's opaque `data/` hides the middle layer's files; its `.wh.` whiteout
    // deletes etc/removeme.txt; the rest of etc/ stays.
    let words: Vec<&str> = fs.split_whitespace().collect();
    assert!(words.contains(&"new.txt"), "{fs}");
    for gone in [
        "old1.txt",
        "sub",
        "removeme.txt",
        ".wh..wh..opq",
        ".wh.removeme.txt",
    ] {
        assert!(!words.contains(&gone), "{gone} must not show: {fs}");
    }
    assert!(words.contains(&"keep.txt") && fs.contains("kept"), "{fs}");
    a.stop_all();
}
