//! Image GC beside a running agent: `tidelet image prune` / `image rm` remove the images no
//! pod uses (and the layers only they hold) while the pods keep running on theirs, and refuse
//! to guess when the agent cannot say which images are in use.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use tidelet_e2e::*;

use crate::pod_yaml;

/// (names, layer dirs) of every image in the store's index.
fn store_images(root: &Path) -> Vec<(Vec<String>, Vec<String>)> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(root.join("images/index.json")).unwrap()).unwrap();
    index["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let names = i["names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
                .collect();
            let layers = i["diff_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    d.as_str()
                        .unwrap()
                        .trim_start_matches("sha256:")
                        .to_string()
                })
                .collect();
            (names, layers)
        })
        .collect()
}

fn layers_of(images: &[(Vec<String>, Vec<String>)], name: &str) -> BTreeSet<String> {
    images
        .iter()
        .find(|(n, _)| n.iter().any(|x| x == name))
        .unwrap_or_else(|| panic!("{name} not in the store"))
        .1
        .iter()
        .cloned()
        .collect()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn prune_removes_unused_images_while_the_pod_keeps_running_on_its_own() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    for archive in ["layered.oci.tar", "busybox.docker.tar"] {
        let out = a.cli(&["image", "import", images().join(archive).to_str().unwrap()]);
        assert!(out.status.success(), "import {archive}: {}", text(&out));
    }
    a.write(
        "app.yaml",
        &pod_yaml("app", "", &[("c", "echo up; sleep 3600", "")]),
    );
    let name = a.full_name("app");
    a.wait_running(&name);
    let pid = a.container_pid(&name, "c");

    // busybox.docker.tar is the same image as busybox.oci.tar: one image, two names.
    let before = store_images(&a.root);
    assert_eq!(before.len(), 2, "{before:?}");
    let kept = layers_of(&before, "localhost/busybox:1.35");
    let unused = layers_of(&before, "localhost/layered:1");
    let gone: BTreeSet<String> = unused.difference(&kept).cloned().collect();
    let shared: BTreeSet<String> = unused.intersection(&kept).cloned().collect();
    assert!(!gone.is_empty(), "the unused image holds layers of its own");
    assert!(!shared.is_empty(), "and shares the busybox layer");
    let layers_dir = a.root.join("images/layers");

    // The image in use cannot be removed by name.
    let out = a.cli(&["image", "rm", "localhost/busybox:1.35"]);
    assert!(!out.status.success(), "rm of an image in use must fail");
    assert!(text(&out).contains("in use"), "{}", text(&out));

    // Its other name is only a name: untagged, nothing removed.
    let out = a.cli(&["image", "rm", "localhost/busybox-docker:1.35"]);
    assert!(out.status.success(), "image rm: {}", text(&out));
    assert!(
        text(&out).contains("untagged localhost/busybox-docker:1.35"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("0 image(s)"), "{}", text(&out));
    let out = a.cli(&["image", "prune"]);
    assert!(out.status.success(), "image prune: {}", text(&out));
    assert!(text(&out).contains("localhost/layered:1"), "{}", text(&out));

    let after = store_images(&a.root);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].0, vec!["localhost/busybox:1.35".to_string()]);
    for l in &gone {
        assert!(!layers_dir.join(l).exists(), "unused layer {l} removed");
    }
    for l in &kept {
        assert!(
            layers_dir.join(l).is_dir(),
            "layer {l} of the running pod kept (shared with the removed image: {})",
            shared.contains(l)
        );
    }
    let ls = a.cli(&["image", "ls"]);
    assert!(!text(&ls).contains("layered"), "{}", text(&ls));

    // The pod never noticed: same process, no restart, its root file system still whole.
    let p = a.wait_running(&name);
    assert_eq!(a.container_pid(&name, "c"), pid);
    assert_eq!(Agent::container_status(&p, "c")["restartCount"], 0);
    let out = a.cli(&[
        "exec",
        &name,
        "-c",
        "c",
        "--",
        "sh",
        "-c",
        "ls /bin/sh && echo fine",
    ]);
    assert!(
        out.status.success() && text(&out).contains("fine"),
        "{}",
        text(&out)
    );

    // With the agent gone (its pods live on), nobody can say what is in use: refuse.
    let out = a.cli(&[
        "image",
        "import",
        images().join("layered.oci.tar").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "re-import: {}", text(&out));
    a.kill9();
    let out = a.cli(&["image", "prune"]);
    assert!(!out.status.success(), "prune without an agent must fail");
    assert!(
        text(&out).contains("cannot tell which images the pods use"),
        "{}",
        text(&out)
    );
    assert_eq!(store_images(&a.root).len(), 2, "nothing removed");
    assert!(gone.iter().all(|l| layers_dir.join(l).is_dir()));
    a.spawn();
    a.wait_running(&name);
    a.stop_all();
}

#[test]
fn bad_image_gc_thresholds_stop_the_agent_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "imageGCHighThresholdPercent: 85\nimageGCLowThresholdPercent: 90\n",
            "imageGCLowThresholdPercent: 90 must be less than imageGCHighThresholdPercent (85)",
        ),
        (
            "imageGCHighThresholdPercent: 150\n",
            "imageGCHighThresholdPercent: 150 is not a percentage",
        ),
        ("imageMinimumGCAge: 2 minutes\n", "imageMinimumGCAge"),
    ];
    for (yaml, want) in cases {
        let (status, text) = tidelet_e2e::run_with_config(dir.path(), yaml);
        assert!(!status.success(), "{yaml}: the agent must not start");
        assert!(text.contains(want), "{yaml}: {text}");
        assert!(!dir.path().join("root").exists(), "{yaml}: nothing created");
    }
}
