//! Tests that need root: whiteouts become real overlayfs whiteouts (0/0 char devices, opaque
//! xattrs), an actual overlay mount of unpacked layers hides what they delete, and the test
//! images from `build-test-images.sh` import. They skip when not root, unless
//! TIDELET_REQUIRE_PRIVILEGED is set, in which case they fail.

// Test code: an unwrap that fails is a failed test, named with its location.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde_json::json;
use tidelet_images::{lgetxattr, Store, OPAQUE_XATTR};

fn whiteout_image(dir: &Path) -> PathBuf {
    let lower = layer_tar(&[
        E::Dir("etc/"),
        E::File("etc/gone", b"deleted above"),
        E::File("etc/kept", b"kept"),
        E::Dir("data/"),
        E::File("data/a", b"a"),
        E::Dir("data/sub/"),
        E::File("data/sub/b", b"b"),
    ]);
    let upper = layer_tar(&[
        E::Dir("etc/"),
        E::File("etc/.wh.gone", b""),
        E::Dir("data/"),
        E::File("data/.wh..wh..opq", b""),
        E::File("data/c", b"c"),
        // A whiteout whose directory has no entry of its own in this layer.
        E::File("missing-dir/.wh.x", b""),
    ]);
    write_archive(
        dir,
        "wh.tar",
        &oci_files("localhost/wh:1", &[gz(lower), plain(upper)], json!({})),
    )
}

#[test]
fn whiteouts_become_char_devices_and_opaque_xattrs() {
    if !privileged("whiteouts_become_char_devices_and_opaque_xattrs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    store.import(&whiteout_image(dir.path())).unwrap();
    let img = store.resolve("localhost/wh:1").unwrap().unwrap();
    let top = &img.lowerdirs[0];
    for wh in ["etc/gone", "missing-dir/x"] {
        let m = fs::symlink_metadata(top.join(wh)).unwrap();
        assert!(m.file_type().is_char_device(), "{wh} is a char device");
        assert_eq!(m.rdev(), 0, "{wh} is 0/0");
    }
    assert!(
        !top.join("etc/.wh.gone").exists(),
        "the .wh. file itself is not kept"
    );
    assert!(!top.join("data/.wh..wh..opq").exists());
    assert_eq!(
        lgetxattr(&top.join("data"), OPAQUE_XATTR)
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        lgetxattr(&top.join("etc"), OPAQUE_XATTR).unwrap(),
        None,
        "only the marked dir is opaque"
    );
    assert_eq!(
        lgetxattr(&img.lowerdirs[1].join("data"), OPAQUE_XATTR).unwrap(),
        None
    );
}

/// Unmounts on drop, so a failed assertion leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = umount2(&self.0, MntFlags::MNT_DETACH) {
            eprintln!("umount {}: {e}", self.0.display());
        }
    }
}

#[test]
fn overlay_of_unpacked_layers_applies_whiteouts() {
    if !privileged("overlay_of_unpacked_layers_applies_whiteouts") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    store.import(&whiteout_image(dir.path())).unwrap();
    let img = store.resolve("localhost/wh:1").unwrap().unwrap();
    let (upper, work, target) = (
        dir.path().join("upper"),
        dir.path().join("work"),
        dir.path().join("rootfs"),
    );
    for d in [&upper, &work, &target] {
        fs::create_dir(d).unwrap();
    }
    let lower: Vec<String> = img
        .lowerdirs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &target,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .unwrap();
    let guard = Mounted(target.clone());

    assert!(!target.join("etc/gone").exists(), "whited-out file is gone");
    assert_eq!(fs::read(target.join("etc/kept")).unwrap(), b"kept");
    assert_eq!(
        ls(&target.join("data")),
        vec!["c"],
        "opaque dir shows only the top layer's entries"
    );
    assert_eq!(fs::read(target.join("data/c")).unwrap(), b"c");
    assert!(!target.join("missing-dir/x").exists());
    // The container can write without touching the shared layers.
    fs::write(target.join("etc/new"), b"n").unwrap();
    assert!(upper.join("etc/new").is_file());
    assert!(!img.lowerdirs[0].join("etc/new").exists());

    drop(guard);
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&target.display().to_string()), "unmounted");
}

#[test]
fn build_script_images_import() {
    if !privileged("build_script_images_import") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("images");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("build-test-images.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "{} failed: {status}", script.display());

    let store = Store::open(&dir.path().join("store")).unwrap();
    assert_eq!(
        store.import(&out.join("busybox.oci.tar")).unwrap(),
        vec!["localhost/busybox:1.35"]
    );
    assert_eq!(
        store.import(&out.join("busybox.docker.tar")).unwrap(),
        vec!["localhost/busybox-docker:1.35"]
    );
    assert_eq!(
        store.import(&out.join("layered.oci.tar")).unwrap(),
        vec!["localhost/layered:1"]
    );

    let bb = store.resolve("localhost/busybox:1.35").unwrap().unwrap();
    assert_eq!(bb.config.cmd, vec!["/bin/sh"]);
    assert_eq!(
        bb.config.env,
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    );
    let root = &bb.lowerdirs[0];
    assert!(root.join("bin/busybox").is_file());
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        fs::metadata(root.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert_eq!(fs::metadata(root.join("home/app")).unwrap().uid(), 1000);
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nobody:x:65534:65534") && passwd.contains("app:x:1000:1000"));
    for d in ["proc", "sys", "dev"] {
        assert!(ls(&root.join(d)).is_empty(), "/{d} empty");
    }
    // busybox actually runs from the unpacked layer.
    let echo = Command::new(root.join("bin/busybox"))
        .args(["echo", "ok"])
        .output()
        .unwrap();
    assert_eq!(echo.stdout, b"ok\n");

    let docker = store
        .resolve("localhost/busybox-docker:1.35")
        .unwrap()
        .unwrap();
    assert_eq!(docker.config, bb.config);
    assert_eq!(
        docker.lowerdirs, bb.lowerdirs,
        "the same layer, unpacked once"
    );

    let layered = store.resolve("localhost/layered:1").unwrap().unwrap();
    assert_eq!(
        layered.config.entrypoint,
        vec!["/bin/echo", "from-entrypoint"]
    );
    assert_eq!(layered.config.cmd, vec!["cmd-arg"]);
    assert_eq!(layered.config.working_dir, "/work");
    assert!(layered.config.env.contains(&"GREETING=hello".to_string()));
    assert_eq!(layered.lowerdirs.len(), 3);
    assert_eq!(
        layered.lowerdirs[2], bb.lowerdirs[0],
        "base layer shared with busybox"
    );
    let top = &layered.lowerdirs[0];
    assert!(fs::symlink_metadata(top.join("etc/removeme.txt"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert_eq!(
        lgetxattr(&top.join("data"), OPAQUE_XATTR)
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );

    let list = store.list().unwrap();
    // The docker archive holds the very same config: one image ID with both names.
    assert_eq!(list.len(), 2, "{list:?}");
    let shared = list.iter().find(|s| s.id == bb.id).unwrap();
    assert_eq!(
        shared.names,
        vec!["localhost/busybox:1.35", "localhost/busybox-docker:1.35"]
    );
    assert_eq!(
        ls(&store.root().join("layers")).len(),
        3,
        "busybox base + two layered layers"
    );

    // Idempotent script: a second run rewrites identical archives.
    let first = fs::read(out.join("layered.oci.tar")).unwrap();
    assert!(Command::new("bash")
        .arg(&script)
        .arg(&out)
        .status()
        .unwrap()
        .success());
    assert_eq!(fs::read(out.join("layered.oci.tar")).unwrap(), first);
}

#[test]
fn owners_setid_bits_and_device_nodes_are_preserved() {
    if !privileged("owners_setid_bits_and_device_nodes_are_preserved") {
        return;
    }
    let mut b = tar::Builder::new(Vec::new());
    let mut add =
        |name: &str, kind: tar::EntryType, mode: u32, uid: u64, dev: (u32, u32), data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(uid);
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            h.set_device_major(dev.0).unwrap();
            h.set_device_minor(dev.1).unwrap();
            b.append_data(&mut h, name, data).unwrap();
        };
    add("dev/", tar::EntryType::Directory, 0o755, 0, (0, 0), b"");
    add("dev/null", tar::EntryType::Char, 0o666, 0, (1, 3), b"");
    add("dev/loop9", tar::EntryType::Block, 0o660, 6, (7, 9), b"");
    add("dev/fifo", tar::EntryType::Fifo, 0o600, 0, (0, 0), b"");
    add("bin/", tar::EntryType::Directory, 0o755, 0, (0, 0), b"");
    add("bin/su", tar::EntryType::Regular, 0o4755, 0, (0, 0), b"#!");
    add("home/", tar::EntryType::Directory, 0o755, 0, (0, 0), b"");
    add(
        "home/app/",
        tar::EntryType::Directory,
        0o700,
        1000,
        (0, 0),
        b"",
    );
    add(
        "home/app/f",
        tar::EntryType::Regular,
        0o2640,
        1000,
        (0, 0),
        b"f",
    );
    let layer = plain(b.into_inner().unwrap());

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let archive = write_archive(
        dir.path(),
        "dev.tar",
        &oci_files("localhost/dev:1", &[layer], json!({})),
    );
    store.import(&archive).unwrap();
    let root = store.resolve("localhost/dev:1").unwrap().unwrap().lowerdirs[0].clone();
    let meta = |p: &str| fs::symlink_metadata(root.join(p)).unwrap();
    assert!(meta("dev/null").file_type().is_char_device());
    assert_eq!(meta("dev/null").rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(meta("dev/null").mode() & 0o7777, 0o666);
    assert!(meta("dev/loop9").file_type().is_block_device());
    assert_eq!(meta("dev/loop9").rdev(), nix::sys::stat::makedev(7, 9));
    assert_eq!((meta("dev/loop9").uid(), meta("dev/loop9").gid()), (6, 6));
    assert!(meta("dev/fifo").file_type().is_fifo());
    assert_eq!(
        meta("bin/su").mode() & 0o7777,
        0o4755,
        "set-uid survives the chown"
    );
    assert_eq!(
        (meta("home/app").uid(), meta("home/app").mode() & 0o7777),
        (1000, 0o700)
    );
    assert_eq!(
        (
            meta("home/app/f").uid(),
            meta("home/app/f").gid(),
            meta("home/app/f").mode() & 0o7777
        ),
        (1000, 1000, 0o2640)
    );
}
