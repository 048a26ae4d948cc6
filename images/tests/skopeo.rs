//! Archives written by the real `skopeo` (from the images `build-test-images.sh` makes), so the
//! store is checked against what users will actually feed it, not only against our own
//! writers. Needs root (the script installs busybox-static) and skopeo; without skopeo the
//! test says so and passes, unless TIDELET_REQUIRE_SKOPEO is set.

// Test code: an unwrap that fails is a failed test, named with its location.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use tidelet_images::{Error, Store};

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn skopeo_written_archives_import() {
    if !privileged("skopeo_written_archives_import") {
        return;
    }
    if Command::new("skopeo").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("TIDELET_REQUIRE_SKOPEO").is_none(),
            "skopeo missing and TIDELET_REQUIRE_SKOPEO set"
        );
        eprintln!("skipping skopeo_written_archives_import: skopeo not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("build-test-images.sh");
    assert!(Command::new("bash")
        .arg(&script)
        .arg(out)
        .status()
        .unwrap()
        .success());
    let p = |n: &str| out.join(n).display().to_string();

    skopeo(&[
        "copy",
        &format!("docker-archive:{}", p("busybox.docker.tar")),
        &format!("oci-archive:{}:localhost/sk-full:1", p("full.tar")),
    ]);
    skopeo(&[
        "copy",
        &format!("docker-archive:{}", p("busybox.docker.tar")),
        &format!("oci-archive:{}:2.0", p("sk-tag.tar")),
    ]);
    skopeo(&[
        "copy",
        &format!("oci-archive:{}", p("layered.oci.tar")),
        &format!(
            "docker-archive:{}:localhost/sk-docker:3",
            p("sk-docker.tar")
        ),
    ]);
    skopeo(&[
        "copy",
        "--dest-compress",
        "--dest-compress-format",
        "zstd",
        &format!("docker-archive:{}", p("busybox.docker.tar")),
        &format!("oci-archive:{}:localhost/sk-zstd:1", p("zstd.tar")),
    ]);

    let store = Store::open(&out.join("store")).unwrap();
    assert_eq!(
        store.import(&out.join("full.tar")).unwrap(),
        vec!["localhost/sk-full:1"]
    );
    assert_eq!(
        store.import(&out.join("sk-tag.tar")).unwrap(),
        vec!["localhost/sk-tag:2.0"]
    );
    assert_eq!(
        store.import(&out.join("sk-docker.tar")).unwrap(),
        vec!["localhost/sk-docker:3"]
    );
    let full = store.resolve("localhost/sk-full:1").unwrap().unwrap();
    assert_eq!(full.config.cmd, vec!["/bin/sh"]);
    assert!(full.lowerdirs[0].join("bin/busybox").is_file());
    let layered = store.resolve("localhost/sk-docker:3").unwrap().unwrap();
    assert_eq!(
        layered.config.entrypoint,
        vec!["/bin/echo", "from-entrypoint"]
    );
    assert_eq!(layered.lowerdirs.len(), 3);
    assert!(layered.lowerdirs[0].join("work/added.txt").is_file());

    let layers_before = ls(&store.root().join("layers"));
    match store.import(&out.join("zstd.tar")) {
        Err(Error::BadArchive { reason, .. }) => assert!(reason.contains("zstd"), "{reason}"),
        other => panic!("zstd archive: {other:?}"),
    }
    assert_eq!(ls(&store.root().join("layers")), layers_before);
}
