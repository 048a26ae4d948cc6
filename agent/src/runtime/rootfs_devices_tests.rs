//! `create_device_node` as root against a temp dir standing for a container's rootfs: real
//! `mknod`, mode, owner, replacement of what is there, and paths that would leave the root.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use super::*;

use tidelet_testgate::privileged;

fn node(
    path: &str,
    kind: DevKind,
    major: u32,
    minor: u32,
    mode: u32,
    uid: u32,
    gid: u32,
) -> DeviceNode {
    DeviceNode {
        container_path: path.into(),
        host_path: PathBuf::from("/host").join(path.trim_start_matches('/')),
        kind,
        major,
        minor,
        file_mode: mode,
        uid,
        gid,
        permissions: "rw".into(),
    }
}

#[test]
fn device_nodes_are_made_with_their_numbers_mode_and_owner_replacing_what_was_there() {
    if !privileged("device_nodes_are_made_with_their_numbers_mode_and_owner") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("dev")).unwrap();
    fs::write(root.join("dev/null"), "a regular file in the way").unwrap();
    std::os::unix::fs::symlink("/dev/real", root.join("dev/link")).unwrap();
    let cases = [
        (
            node("/dev/net/tun", DevKind::Char, 10, 200, 0o620, 0, 5),
            "dev/net/tun",
            true,
        ),
        (
            node("/dev/kmsg", DevKind::Char, 1, 11, 0o600, 1234, 1234),
            "dev/kmsg",
            true,
        ),
        (
            node("/dev/null", DevKind::Char, 1, 3, 0o666, 0, 0),
            "dev/null",
            true,
        ),
        (
            node("/dev/blk0", DevKind::Block, 7, 0, 0o660, 0, 6),
            "dev/blk0",
            false,
        ),
        // A symlink in the path is followed inside the root, as the container would see it.
        (
            node("/dev/link", DevKind::Char, 1, 5, 0o644, 0, 0),
            "dev/real",
            true,
        ),
    ];
    // Modes 0o666 and 0o620 would come out as 0o644 and 0o600 under the usual umask 022
    // if the node were not chmod'ed. (The umask is not changed here: it is process-wide
    // and other tests run in parallel.)
    for (d, _, _) in &cases {
        create_device_node(root, d).unwrap_or_else(|e| panic!("{}: {e}", d.container_path));
    }
    for (d, at, is_char) in &cases {
        let m = fs::symlink_metadata(root.join(at)).unwrap();
        let t = m.file_type();
        assert_eq!(
            (t.is_char_device(), t.is_block_device()),
            (*is_char, !*is_char),
            "{at}"
        );
        let rdev = m.rdev();
        let got = (
            nix::sys::stat::major(rdev) as u32,
            nix::sys::stat::minor(rdev) as u32,
            m.mode() & 0o7777,
            m.uid(),
            m.gid(),
        );
        assert_eq!(got, (d.major, d.minor, d.file_mode, d.uid, d.gid), "{at}");
    }
    // Making it again (a restarted container keeps its upper dir) replaces the node.
    create_device_node(root, &cases[0].0).unwrap();
}

#[test]
fn device_nodes_outside_the_rootfs_or_in_the_way_of_a_directory_are_refused() {
    if !privileged("device_nodes_outside_the_rootfs_are_refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("dev/dir")).unwrap();
    std::os::unix::fs::symlink("../../..", root.join("dev/up")).unwrap();
    let c = |p: &str| node(p, DevKind::Char, 1, 3, 0o666, 0, 0);
    let cases = [
        (
            c("/dev/../../x"),
            "device node \"/dev/../../x\": contains \"..\"",
        ),
        (c("dev/x"), "not an absolute path"),
        (c("/dev/up/x"), "leads out of the rootfs"),
        (c("/dev/dir"), "a directory is in the way"),
        (c("/"), "is the container's root"),
        (
            node("/dev/any", DevKind::All, 1, 3, 0o666, 0, 0),
            "not a node type",
        ),
    ];
    for (d, want) in cases {
        let err = create_device_node(&root, &d).unwrap_err();
        assert!(err.contains(want), "{}: {err}", d.container_path);
    }
    assert!(
        !dir.path().join("x").exists(),
        "a node was made outside the root"
    );
    assert!(root.join("dev/dir").is_dir());
}
