//! Importing archives built in temp dirs: the good shapes of both formats, and each bad input
//! the issue names, which must fail with its specific error and leave no layer behind.

// Test code: an unwrap that fails is a failed test, named with its location.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::json;
use tidelet_images::{Error, ImageConfig, Store};

fn base_layer() -> Vec<u8> {
    layer_tar(&[
        E::Dir("bin/"),
        E::File("bin/hello", b"#!/bin/sh\necho hi\n"),
        E::Symlink("bin/sh", "/bin/busybox"),
        E::Hardlink("bin/hello2", "bin/hello"),
        E::Dir("etc/"),
        E::File("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
    ])
}

fn run() -> serde_json::Value {
    json!({"Entrypoint": ["/bin/hello"], "Cmd": ["a"], "Env": ["PATH=/bin", "X=1"], "WorkingDir": "/w",
           "User": "1000:1000", "StopSignal": "SIGINT"})
}

/// Layer dirs of the store, temp dirs included (they must not survive a failure either).
fn layer_dirs(store: &Store) -> Vec<String> {
    ls(&store.root().join("layers"))
}

#[test]
fn good_oci_archive_imports_resolves_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let layers = [
        gz(base_layer()),
        plain(layer_tar(&[E::File("top.txt", b"top")])),
    ];
    let archive = write_archive(
        dir.path(),
        "x.tar",
        &oci_files("localhost/x:1", &layers, run()),
    );

    assert_eq!(store.import(&archive).unwrap(), vec!["localhost/x:1"]);
    let img = store
        .resolve("localhost/x:1")
        .unwrap()
        .expect("imported image resolves");
    assert_eq!(img.name, "localhost/x:1");
    assert_eq!(
        img.config,
        ImageConfig {
            entrypoint: vec!["/bin/hello".into()],
            cmd: vec!["a".into()],
            env: vec!["PATH=/bin".into(), "X=1".into()],
            working_dir: "/w".into(),
            user: "1000:1000".into(),
            stop_signal: Some("SIGINT".into()),
        }
    );
    // Top-most first.
    assert_eq!(img.lowerdirs.len(), 2);
    assert!(img.lowerdirs[0].join("top.txt").is_file());
    let base = &img.lowerdirs[1];
    assert_eq!(
        fs::read(base.join("bin/hello")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(
        fs::read_link(base.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox"),
        "absolute symlink kept as is"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(base.join("bin/hello2")).unwrap().ino(),
        fs::metadata(base.join("bin/hello")).unwrap().ino()
    );
    assert_eq!(
        fs::metadata(base.join("bin/hello")).unwrap().mode() & 0o7777,
        0o644
    );
    assert_eq!(
        fs::metadata(base.join("bin/hello")).unwrap().mtime(),
        1_700_000_000
    );
    assert_eq!(
        fs::metadata(base.join("etc")).unwrap().mtime(),
        1_700_000_000,
        "dir mtime set after its contents"
    );

    // ID and ID prefixes resolve too.
    let id = img.id.clone();
    assert!(id.starts_with("sha256:"));
    assert_eq!(
        store.resolve(&id).unwrap().unwrap().lowerdirs,
        img.lowerdirs
    );
    assert_eq!(store.resolve(&id[7..19]).unwrap().unwrap().id, id);
    assert_eq!(store.resolve("localhost/nope:1").unwrap(), None);

    let summary = store.list().unwrap();
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].names, vec!["localhost/x:1"]);
    assert_eq!(summary[0].id, id);
    assert_eq!(
        summary[0].size,
        layers.iter().map(|l| l.blob.len() as u64).sum::<u64>()
    );
    assert_eq!(
        (summary[0].architecture.as_str(), summary[0].os.as_str()),
        (host_arch(), "linux")
    );

    // Again: same result, nothing new on disk.
    let before = layer_dirs(&store);
    assert_eq!(store.import(&archive).unwrap(), vec!["localhost/x:1"]);
    assert_eq!(store.list().unwrap(), summary);
    assert_eq!(layer_dirs(&store), before);
    assert!(ls(&store.root().join("tmp")).is_empty(), "staging removed");
    for l in &layers {
        assert!(
            store
                .root()
                .join("blobs/sha256")
                .join(sha(&l.blob))
                .is_file(),
            "blob kept"
        );
    }
}

#[test]
fn new_image_under_same_name_moves_the_name_and_shares_layers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let a = write_archive(
        dir.path(),
        "a.tar",
        &oci_files("localhost/x:1", &[gz(base_layer())], json!({"Cmd": ["a"]})),
    );
    let b = write_archive(
        dir.path(),
        "b.tar",
        &oci_files("localhost/x:1", &[gz(base_layer())], json!({"Cmd": ["b"]})),
    );
    store.import(&a).unwrap();
    let first = store.resolve("localhost/x:1").unwrap().unwrap();
    store.import(&b).unwrap();
    let second = store.resolve("localhost/x:1").unwrap().unwrap();
    assert_ne!(first.id, second.id);
    assert_eq!(second.config.cmd, vec!["b"]);
    assert_eq!(
        first.lowerdirs, second.lowerdirs,
        "the shared layer is unpacked once"
    );
    assert_eq!(layer_dirs(&store).len(), 1);
    let list = store.list().unwrap();
    assert_eq!(list.len(), 2);
    let old = list.iter().find(|s| s.id == first.id).unwrap();
    assert!(old.names.is_empty(), "the old image lost its name");
    assert_eq!(
        store.resolve(&first.id).unwrap().unwrap().config.cmd,
        vec!["a"],
        "still reachable by ID"
    );
}

#[test]
fn good_docker_save_archives_both_forms() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let layers = [
        plain(base_layer()),
        plain(layer_tar(&[E::File("top.txt", b"top")])),
    ];
    let legacy = write_archive(
        dir.path(),
        "legacy.tar",
        &docker_files("busybox", &layers, run()),
    );
    assert_eq!(
        store.import(&legacy).unwrap(),
        vec!["docker.io/library/busybox:latest"]
    );
    let img = store.resolve("busybox").unwrap().unwrap();
    assert_eq!(img.config.entrypoint, vec!["/bin/hello"]);
    assert!(img.lowerdirs[0].join("top.txt").is_file());
    assert!(img.lowerdirs[1].join("etc/passwd").is_file());

    let blobs = write_archive(
        dir.path(),
        "new.tar",
        &docker_blob_files("localhost/new:2", &layers, run()),
    );
    assert_eq!(store.import(&blobs).unwrap(), vec!["localhost/new:2"]);
    let img2 = store.resolve("localhost/new:2").unwrap().unwrap();
    // Same config, same image: one image, two names.
    assert_eq!(img2.id, img.id);
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(store.list().unwrap()[0].names.len(), 2);
}

#[test]
fn tag_only_oci_name_takes_the_file_name_or_an_explicit_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let archive = write_archive(
        dir.path(),
        "tagged.oci.tar",
        &oci_files("1.35", &[plain(base_layer())], json!({})),
    );
    assert_eq!(
        store.import(&archive).unwrap(),
        vec!["localhost/tagged:1.35"]
    );
    assert_eq!(
        store
            .import_named(&archive, Some("localhost/named"))
            .unwrap(),
        vec!["localhost/named:1.35"]
    );
    assert_eq!(
        store.import_named(&archive, Some("busybox:2")).unwrap(),
        vec!["docker.io/library/busybox:2"]
    );
    let ids: Vec<String> = ["localhost/tagged:1.35", "localhost/named:1.35", "busybox:2"]
        .iter()
        .map(|n| store.resolve(n).unwrap().unwrap().id)
        .collect();
    assert!(ids.iter().all(|i| i == &ids[0]), "one image, three names");
    match store.import_named(&archive, Some("Not A Name")) {
        Err(Error::BadReference { reference, .. }) => assert_eq!(reference, "Not A Name:1.35"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn untagged_docker_save_is_named_after_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let mut files = docker_files("x:1", &[plain(base_layer())], json!({}));
    let m = files
        .iter_mut()
        .find(|(p, _)| p == "manifest.json")
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&m.1).unwrap();
    v[0]["RepoTags"] = serde_json::Value::Null;
    m.1 = serde_json::to_vec(&v).unwrap();
    let archive = write_archive(dir.path(), "by-id.tar", &files);
    assert_eq!(
        store.import(&archive).unwrap(),
        vec!["localhost/by-id:latest"]
    );
}

/// Import `files` as an archive and return the error, checking nothing was left behind.
fn import_fails(files: &[(String, Vec<u8>)]) -> (Error, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let archive = write_archive(dir.path(), "bad.tar", files);
    let err = store.import(&archive).expect_err("import must fail");
    assert!(
        layer_dirs(&store).is_empty(),
        "layer dirs left: {:?}",
        layer_dirs(&store)
    );
    assert!(ls(&store.root().join("tmp")).is_empty(), "staging left");
    assert!(store.list().unwrap().is_empty());
    (err, archive)
}

fn unsafe_layer(entries: &[E<'_>], want_entry: &str, want_reason: &str) {
    let (err, archive) = import_fails(&oci_files(
        "localhost/bad:1",
        &[plain(layer_tar(entries))],
        json!({}),
    ));
    match err {
        Error::UnsafeEntry {
            archive: a,
            layer,
            entry,
            reason,
        } => {
            assert_eq!(a, archive);
            assert!(layer.starts_with("sha256:"), "{layer}");
            assert_eq!(entry, want_entry);
            assert!(reason.contains(want_reason), "{reason}");
        }
        other => panic!("want UnsafeEntry for {want_entry}, got {other:?}"),
    }
}

#[test]
fn dotdot_entries_are_rejected() {
    unsafe_layer(
        &[E::File("ok", b"1"), E::File("../evil", b"x")],
        "../evil",
        "..",
    );
    unsafe_layer(
        &[E::Dir("a/"), E::File("a/../../evil", b"x")],
        "a/../../evil",
        "..",
    );
}

#[test]
fn absolute_entries_are_rejected() {
    unsafe_layer(&[E::File("/etc/evil", b"x")], "/etc/evil", "absolute");
}

#[test]
fn writing_through_a_symlink_is_rejected() {
    let before = fs::read("/etc/passwd").unwrap();
    unsafe_layer(
        &[E::Symlink("evil", "/etc"), E::File("evil/passwd", b"x")],
        "evil/passwd",
        "symlink",
    );
    assert_eq!(
        fs::read("/etc/passwd").unwrap(),
        before,
        "nothing written through the symlink"
    );
    unsafe_layer(
        &[
            E::Dir("d/"),
            E::Symlink("d/up", ".."),
            E::File("d/up/x", b"x"),
        ],
        "d/up/x",
        "symlink",
    );
}

#[test]
fn hardlinks_out_of_the_layer_are_rejected() {
    unsafe_layer(&[E::Hardlink("h", "/etc/passwd")], "h", "absolute");
    unsafe_layer(&[E::Hardlink("h", "../../etc/passwd")], "h", "..");
    unsafe_layer(&[E::Hardlink("h", "missing")], "h", "not an earlier entry");
    unsafe_layer(
        &[E::Symlink("s", "/etc"), E::Hardlink("h", "s/passwd")],
        "h",
        "symlink",
    );
}

#[test]
fn bad_blob_digest_is_rejected() {
    let mut files = oci_files("localhost/bad:1", &[gz(base_layer())], json!({}));
    let layer = files
        .iter_mut()
        .find(|(_, d)| d.starts_with(&[0x1f, 0x8b]))
        .unwrap();
    let n = layer.1.len();
    layer.1[n / 2] ^= 0xff;
    let claimed = layer.0.clone();
    match import_fails(&files).0 {
        Error::DigestMismatch { digest, actual, .. } => {
            assert_eq!(format!("blobs/sha256/{}", &digest[7..]), claimed);
            assert_ne!(digest, actual);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_config_name_in_docker_archive_is_rejected() {
    let mut files = docker_files("localhost/d:1", &[plain(base_layer())], json!({}));
    let cfg = files
        .iter_mut()
        .find(|(p, _)| p.ends_with(".json") && p != "manifest.json")
        .unwrap();
    cfg.1.push(b' ');
    assert!(matches!(
        import_fails(&files).0,
        Error::DigestMismatch { .. }
    ));
}

#[test]
fn bad_diff_id_is_rejected() {
    let layers = [plain(base_layer())];
    let mut cfg: serde_json::Value = serde_json::from_slice(&config(&layers, json!({}))).unwrap();
    let wrong = format!("sha256:{}", sha(b"something else"));
    cfg["rootfs"]["diff_ids"] = json!([wrong]);
    let files = oci_files_with_config(
        "localhost/bad:1",
        &layers,
        serde_json::to_vec(&cfg).unwrap(),
    );
    match import_fails(&files).0 {
        Error::DigestMismatch { digest, actual, .. } => {
            assert_eq!(digest, wrong);
            assert_eq!(actual, layers[0].diff_id);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn zstd_layers_are_unsupported() {
    let mut blob = vec![0x28, 0xb5, 0x2f, 0xfd];
    blob.extend_from_slice(&[0; 64]);
    let layer = Layer {
        diff_id: format!("sha256:{}", sha(b"x")),
        blob,
        media_type: "application/vnd.oci.image.layer.v1.tar+zstd",
    };
    match import_fails(&oci_files("localhost/z:1", &[layer], json!({}))).0 {
        Error::BadArchive { reason, .. } => assert!(
            reason.contains("zstd") && reason.contains("unsupported"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn oversized_and_garbage_json_is_rejected() {
    let mut files = oci_files("localhost/j:1", &[plain(base_layer())], json!({}));
    let idx = files.iter_mut().find(|(p, _)| p == "index.json").unwrap();
    idx.1 = vec![b' '; 5 * 1024 * 1024];
    match import_fails(&files).0 {
        Error::BadArchive { reason, .. } => assert!(reason.contains("limit"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let mut files = oci_files("localhost/j:1", &[plain(base_layer())], json!({}));
    files.iter_mut().find(|(p, _)| p == "index.json").unwrap().1 = b"{not json".to_vec();
    assert!(matches!(import_fails(&files).0, Error::BadArchive { .. }));
}

#[test]
fn other_digest_algorithms_are_rejected() {
    let files = vec![("blobs/sha512/abcd".to_string(), b"x".to_vec())];
    match import_fails(&files).0 {
        Error::BadArchive { reason, .. } => {
            assert!(reason.contains("unsupported digest algorithm"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

fn raw_import_fails(bytes: &[u8], want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let archive = dir.path().join("raw.tar");
    fs::write(&archive, bytes).unwrap();
    match store.import(&archive) {
        Err(Error::BadArchive { archive: a, reason }) => {
            assert_eq!(a, archive);
            assert!(reason.contains(want), "{reason} should contain {want}");
        }
        other => panic!("{other:?}"),
    }
    assert!(layer_dirs(&store).is_empty());
    assert!(ls(&store.root().join("tmp")).is_empty());
}

#[test]
fn truncated_archive_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_archive(
        dir.path(),
        "g.tar",
        &oci_files("localhost/t:1", &[plain(base_layer())], json!({})),
    );
    let bytes = fs::read(good).unwrap();
    // Cut inside the layer blob (the largest file) and at a header boundary.
    raw_import_fails(&bytes[..bytes.len() / 3], "truncated");
    raw_import_fails(&bytes[..1536], "truncated");
}

#[test]
fn non_tar_and_empty_files_are_rejected() {
    raw_import_fails(
        &b"this is not a tar archive at all\n".repeat(40),
        "not a valid tar archive",
    );
    raw_import_fails(b"", "empty");
    raw_import_fails(&[0u8; 1024], "no files");
}

#[test]
fn missing_archive_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    match store.import(&dir.path().join("nope.tar")) {
        Err(Error::Io { path, .. }) => assert_eq!(path, dir.path().join("nope.tar")),
        other => panic!("{other:?}"),
    }
}

/// An OCI layout whose index.json points at a nested (multi-arch) index.
fn multi_arch_files(arches: &[(&str, Option<&str>)]) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    let mut files = Vec::new();
    let mut descs = Vec::new();
    let mut cmds = Vec::new();
    for (arch, variant) in arches {
        let cmd = format!("built-for-{arch}-{}", variant.unwrap_or(""));
        cmds.push(cmd.clone());
        let layer = plain(layer_tar(&[E::File("arch", arch.as_bytes())]));
        let single = oci_files(
            "unused:1",
            std::slice::from_ref(&layer),
            json!({"Cmd": [cmd]}),
        );
        let manifest = single
            .iter()
            .find(|(p, d)| p.starts_with("blobs/") && d.starts_with(b"{\"config\""))
            .cloned();
        // serde_json orders keys alphabetically: the manifest is the blob starting with "config".
        let (mpath, mbytes) = manifest.expect("manifest blob");
        let mut platform = json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            platform["variant"] = json!(v);
        }
        descs.push(
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "digest": format!("sha256:{}", &mpath["blobs/sha256/".len()..]),
                          "size": mbytes.len(), "platform": platform}),
        );
        files.extend(single.into_iter().filter(|(p, _)| p.starts_with("blobs/")));
    }
    let nested = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": descs})).unwrap();
    files.push((format!("blobs/sha256/{}", sha(&nested)), nested.clone()));
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": format!("sha256:{}", sha(&nested)),
        "size": nested.len(), "annotations": {"org.opencontainers.image.ref.name": "localhost/multi:1"}}]});
    files.push(("index.json".into(), serde_json::to_vec(&index).unwrap()));
    files.push((
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    ));
    (files, cmds)
}

#[test]
fn nested_index_picks_the_host_platform() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let host = host_arch();
    let host_variant = match host {
        "arm" => Some("v7"),
        _ => None,
    };
    let (mut files, cmds) =
        multi_arch_files(&[("s390x", None), (host, host_variant), ("arm", Some("v6"))]);
    files.dedup_by(|a, b| a.0 == b.0);
    let archive = write_archive(dir.path(), "multi.tar", &files);
    assert_eq!(store.import(&archive).unwrap(), vec!["localhost/multi:1"]);
    let img = store.resolve("localhost/multi:1").unwrap().unwrap();
    assert_eq!(img.config.cmd, vec![cmds[1].clone()]);
    assert_eq!(
        fs::read(img.lowerdirs[0].join("arch")).unwrap(),
        host.as_bytes()
    );
    assert_eq!(
        layer_dirs(&store).len(),
        1,
        "only the host's layer is unpacked"
    );
}

#[test]
fn nested_index_without_the_host_platform_is_rejected() {
    let (files, _) = multi_arch_files(&[("s390x", None), ("mips64le", None)]);
    match import_fails(&files).0 {
        Error::BadArchive { reason, .. } => {
            assert!(reason.contains("no image for platform linux/"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn docker_save_with_linked_repeated_layer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    // The same (empty-ish) layer twice; docker save writes the second as a symlink.
    let l = layer_tar(&[E::Dir("d/")]);
    let layers = [
        plain(l.clone()),
        plain(layer_tar(&[E::File("x", b"x")])),
        plain(l),
    ];
    let files = docker_files("localhost/rep:1", &layers, json!({}));
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in &files {
        let mut h = tar::Header::new_gnu();
        if p.starts_with(&sha(b"layer2")) {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            let target = format!("../{}/layer.tar", sha(b"layer0"));
            b.append_link(&mut h, p, &target).unwrap();
            continue;
        }
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, p, &data[..]).unwrap();
    }
    let archive = dir.path().join("rep.tar");
    fs::write(&archive, b.into_inner().unwrap()).unwrap();
    store.import(&archive).unwrap();
    let img = store.resolve("localhost/rep:1").unwrap().unwrap();
    assert_eq!(img.lowerdirs.len(), 3);
    assert_eq!(img.lowerdirs[0], img.lowerdirs[2]);
    assert_eq!(layer_dirs(&store).len(), 2);
}

#[test]
fn docker_save_link_out_of_the_archive_is_rejected() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "l/layer.tar", "../../etc/passwd")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let archive = dir.path().join("l.tar");
    fs::write(&archive, b.into_inner().unwrap()).unwrap();
    match store.import(&archive) {
        Err(Error::BadArchive { reason, .. }) => {
            assert!(reason.contains("leaves the archive"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn long_names_and_pax_records_are_honoured() {
    let long = format!("{}/file.txt", "long-directory-name".repeat(8));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mode(0o640);
    h.set_mtime(1_600_000_000);
    b.append_data(&mut h, &long, &b"long"[..]).unwrap();
    b.append_pax_extensions([
        ("SCHILY.xattr.user.tidelet", &b"yes"[..]),
        ("mtime", b"1500000000.5"),
    ])
    .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_size(1);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    h.set_mode(0o600);
    b.append_data(&mut h, "xattr-file", &b"x"[..]).unwrap();
    let layer = plain(b.into_inner().unwrap());

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let archive = write_archive(
        dir.path(),
        "p.tar",
        &oci_files("localhost/pax:1", &[layer], json!({})),
    );
    store.import(&archive).unwrap();
    let root = store.resolve("localhost/pax:1").unwrap().unwrap().lowerdirs[0].clone();
    assert_eq!(fs::read(root.join(&long)).unwrap(), b"long");
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(root.join(&long)).unwrap();
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o640, 1_600_000_000));
    let m = fs::metadata(root.join("xattr-file")).unwrap();
    assert_eq!(
        (m.mtime(), m.mtime_nsec()),
        (1_500_000_000, 500_000_000),
        "PAX mtime wins"
    );
    // user.* xattrs need a file system that has them (ext4 and tmpfs do).
    assert_eq!(
        tidelet_images::lgetxattr(&root.join("xattr-file"), "user.tidelet")
            .unwrap()
            .as_deref(),
        Some(&b"yes"[..])
    );
}

#[test]
fn layer_overlay_xattrs_are_not_taken_from_the_archive() {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..])])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    h.set_mode(0o755);
    b.append_data(&mut h, "d/", &b""[..]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let archive = write_archive(
        dir.path(),
        "o.tar",
        &oci_files(
            "localhost/o:1",
            &[plain(b.into_inner().unwrap())],
            json!({}),
        ),
    );
    store.import(&archive).unwrap();
    let root = store.resolve("localhost/o:1").unwrap().unwrap().lowerdirs[0].clone();
    assert!(root.join("d").is_dir());
    assert_eq!(
        tidelet_images::lgetxattr(&root.join("d"), "trusted.overlay.redirect").unwrap(),
        None
    );
}

#[test]
fn a_file_as_parent_is_rejected() {
    unsafe_layer(
        &[E::File("f", b"x"), E::File("f/g", b"y")],
        "f/g",
        "not a directory",
    );
}

#[test]
fn unsupported_entry_types_are_rejected() {
    let (err, _) = import_fails(&oci_files(
        "localhost/s:1",
        &[plain(layer_tar(&[E::Kind(
            "sparse",
            tar::EntryType::GNUSparse,
        )]))],
        json!({}),
    ));
    match err {
        Error::BadArchive { reason, .. } => {
            assert!(reason.contains("unsupported tar entry type"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn resolve_reports_a_missing_layer_dir() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let archive = write_archive(
        dir.path(),
        "m.tar",
        &oci_files("localhost/m:1", &[plain(base_layer())], json!({})),
    );
    store.import(&archive).unwrap();
    let layer = store.resolve("localhost/m:1").unwrap().unwrap().lowerdirs[0].clone();
    fs::remove_dir_all(&layer).unwrap();
    match store.resolve("localhost/m:1") {
        Err(Error::Io { path, source }) => {
            assert_eq!(path, layer);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    // Importing again repairs it.
    store.import(&archive).unwrap();
    assert!(store.resolve("localhost/m:1").unwrap().unwrap().lowerdirs[0].is_dir());
}

#[test]
fn stale_temp_dirs_of_dead_imports_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    Store::open(&root).unwrap();
    // pid 0x7ffffffe cannot be alive (above pid_max); our own pid is.
    let dead = root
        .join("layers")
        .join(format!(".tmp-{}-2147483646-0", "a".repeat(64)));
    let live = root
        .join("tmp")
        .join(format!("import-{}-99", std::process::id()));
    fs::create_dir_all(dead.join("half")).unwrap();
    fs::create_dir_all(&live).unwrap();
    Store::open(&root).unwrap();
    assert!(
        !dead.exists(),
        "half-unpacked layer of a dead import removed"
    );
    assert!(live.exists(), "a live import's staging kept");
}

#[test]
fn implied_directories_are_0755_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let archive = write_archive(
        dir.path(),
        "u.tar",
        &oci_files(
            "localhost/u:1",
            &[plain(layer_tar(&[E::File("a/b/c", b"c")]))],
            json!({}),
        ),
    );
    // umask is process-wide: other tests of this binary only create files whose modes they set.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let result = store.import(&archive);
    nix::sys::stat::umask(old);
    result.unwrap();
    let root = store.resolve("localhost/u:1").unwrap().unwrap().lowerdirs[0].clone();
    use std::os::unix::fs::MetadataExt;
    for p in ["", "a", "a/b"] {
        assert_eq!(
            fs::metadata(root.join(p)).unwrap().mode() & 0o777,
            0o755,
            "{p:?}"
        );
    }
}

#[test]
fn nested_index_without_media_type_is_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let (mut files, _) = multi_arch_files(&[(
        host_arch(),
        if host_arch() == "arm" {
            Some("v7")
        } else {
            None
        },
    )]);
    let idx = files.iter_mut().find(|(p, _)| p == "index.json").unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&idx.1).unwrap();
    v["manifests"][0]
        .as_object_mut()
        .unwrap()
        .remove("mediaType");
    idx.1 = serde_json::to_vec(&v).unwrap();
    let archive = write_archive(dir.path(), "multi.tar", &files);
    assert_eq!(store.import(&archive).unwrap(), vec!["localhost/multi:1"]);
}

/// A directory entry later replaced by a symlink: its deferred chmod must not follow the link.
#[test]
fn replaced_directories_do_not_leak_their_mode_through_symlinks() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir_all(outside.join("b")).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(outside.join("b"), fs::Permissions::from_mode(0o755)).unwrap();
    let target = outside.display().to_string();

    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, mode: u32, link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_size(0);
        match link {
            Some(l) => b.append_link(&mut h, name, l).unwrap(),
            None => b.append_data(&mut h, name, &b""[..]).unwrap(),
        }
    };
    add("d/", tar::EntryType::Directory, 0o700, None);
    add("d", tar::EntryType::Symlink, 0o777, Some(&target));
    add("a/", tar::EntryType::Directory, 0o755, None);
    add("a/b/", tar::EntryType::Directory, 0o700, None);
    add("a", tar::EntryType::Symlink, 0o777, Some(&target));
    let layer = plain(b.into_inner().unwrap());

    let store = Store::open(&dir.path().join("store")).unwrap();
    let archive = write_archive(
        dir.path(),
        "r.tar",
        &oci_files("localhost/r:1", &[layer], json!({})),
    );
    store.import(&archive).unwrap();
    let root = store.resolve("localhost/r:1").unwrap().unwrap().lowerdirs[0].clone();
    assert_eq!(fs::read_link(root.join("d")).unwrap(), outside);
    assert_eq!(fs::read_link(root.join("a")).unwrap(), outside);
    assert_eq!(
        fs::metadata(&outside).unwrap().mode() & 0o777,
        0o755,
        "outside dir untouched"
    );
    assert_eq!(
        fs::metadata(outside.join("b")).unwrap().mode() & 0o777,
        0o755,
        "outside subdir untouched"
    );
}
