//! Image GC on stores filled from real archives built in temp dirs: unused images go, least
//! recently used first; shared and in-use layers stay; orphans left by a crash are swept.

// Test code: an unwrap that fails is a failed test, named with its location.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::*;
use serde_json::json;
use tidelet_images::{Error, Store};

fn base() -> Layer {
    gz(layer_tar(&[
        E::Dir("bin/"),
        E::File("bin/hello", &[7u8; 40_000]),
        E::Hardlink("bin/hello2", "bin/hello"),
    ]))
}

fn top(name: &'static str, size: usize) -> Layer {
    let data: &'static [u8] = Box::leak(vec![b'x'; size].into_boxed_slice());
    plain(layer_tar(&[E::File(name, data)]))
}

fn run() -> serde_json::Value {
    json!({"Cmd": ["/bin/hello"]})
}

fn import(store: &Store, dir: &Path, name: &str, layers: &[Layer]) {
    let file = format!("{}.tar", name.replace(['/', ':'], "_"));
    let archive = write_archive(dir, &file, &oci_files(name, layers, run()));
    store.import(&archive).unwrap();
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn hex(diff_id: &str) -> String {
    diff_id.trim_start_matches("sha256:").to_string()
}

fn names(store: &Store) -> Vec<String> {
    let mut v: Vec<String> = store
        .list()
        .unwrap()
        .into_iter()
        .flat_map(|i| i.names)
        .collect();
    v.sort();
    v
}

#[test]
fn gc_removes_the_unused_image_and_its_unshared_layers_and_keeps_shared_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let (b, a_top, b_top) = (base(), top("a.txt", 30_000), top("b.txt", 50_000));
    let ids = (
        b.diff_id.clone(),
        a_top.diff_id.clone(),
        b_top.diff_id.clone(),
    );
    import(&store, dir.path(), "localhost/a:1", &[base(), a_top]);
    import(&store, dir.path(), "localhost/b:1", &[b, b_top]);
    // A legacy docker-save image too: its manifest is synthesised at import.
    let d_top = top("d.txt", 20_000);
    let d_id = d_top.diff_id.clone();
    let archive = write_archive(
        dir.path(),
        "d.tar",
        &docker_files("localhost/d:1", &[d_top], run()),
    );
    store.import(&archive).unwrap();
    let blobs_before = ls(&store.root().join("blobs/sha256")).len();

    let usage = store.disk_usage().unwrap();
    let b_usage = usage.iter().find(|u| u.names == ["localhost/b:1"]).unwrap();
    assert!(
        b_usage.unique_bytes >= 50_000 && b_usage.unique_bytes < b_usage.total_bytes,
        "unique {} total {}: the base layer is shared",
        b_usage.unique_bytes,
        b_usage.total_bytes
    );
    let d_usage = usage.iter().find(|u| u.names == ["localhost/d:1"]).unwrap();
    assert_eq!(d_usage.unique_bytes, d_usage.total_bytes);

    let a_id = store.resolve("localhost/a:1").unwrap().unwrap().id;
    // In use by ID prefix (as a status imageID may be shortened) and by short name.
    let in_use = set(&[&a_id[..20], "busybox"]);
    let report = store.prune(&in_use).unwrap();

    let removed: BTreeSet<String> = report
        .images_removed
        .iter()
        .flat_map(|r| r.names.clone())
        .collect();
    assert_eq!(removed, set(&["localhost/b:1", "localhost/d:1"]));
    assert_eq!(names(&store), vec!["localhost/a:1"]);
    let mut want_layers = vec![hex(&ids.0), hex(&ids.1)];
    want_layers.sort();
    assert_eq!(ls(&store.root().join("layers")), want_layers);
    let mut gone = vec![hex(&ids.2), hex(&d_id)];
    gone.sort();
    let mut got = report.layers_removed.clone();
    got.sort();
    assert_eq!(got, gone);
    // Config, manifest and layer blob of each removed image.
    assert_eq!(report.blobs_removed, 6);
    assert_eq!(
        ls(&store.root().join("blobs/sha256")).len(),
        blobs_before - 6
    );
    assert!(
        report.bytes_freed >= b_usage.unique_bytes + d_usage.unique_bytes,
        "freed {} < the two images' unique bytes",
        report.bytes_freed
    );
    let a = store
        .resolve("localhost/a:1")
        .unwrap()
        .expect("in-use image stays");
    assert!(a.lowerdirs.iter().all(|d| d.is_dir()));
    assert_eq!(
        fs::read(a.lowerdirs[1].join("bin/hello")).unwrap().len(),
        40_000
    );

    // Nothing left to do: a second pass removes nothing.
    let again = store.prune(&in_use).unwrap();
    assert!(again.images_removed.is_empty() && again.bytes_freed == 0);
    // The surviving image can be removed once unused; then the store is empty.
    let r = store.prune(&BTreeSet::new()).unwrap();
    assert_eq!(r.images_removed.len(), 1);
    assert!(ls(&store.root().join("layers")).is_empty());
    assert!(ls(&store.root().join("blobs/sha256")).is_empty());
}

#[test]
fn least_recently_used_goes_first_and_young_images_stay() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    import(&store, dir.path(), "localhost/a:1", &[top("a", 10_000)]);
    import(&store, dir.path(), "localhost/b:1", &[top("b", 10_000)]);
    import(&store, dir.path(), "localhost/c:1", &[top("c", 10_000)]);
    let now = SystemTime::now();
    let later = now + Duration::from_secs(3600);
    // b never used (its import time counts), a used before c.
    assert!(store
        .mark_used("localhost/a:1", now + Duration::from_secs(10))
        .unwrap());
    assert!(store
        .mark_used("localhost/c:1", now + Duration::from_secs(20))
        .unwrap());
    assert!(!store.mark_used("localhost/nope:1", now).unwrap());
    let min_age = Duration::from_secs(120);
    let none = BTreeSet::new();

    // Too young at `now`: nothing goes.
    let r = store
        .garbage_collect(&none, u64::MAX, min_age, now)
        .unwrap();
    assert!(r.images_removed.is_empty());
    assert_eq!(names(&store).len(), 3);

    let r = store.garbage_collect(&none, 1, min_age, later).unwrap();
    assert_eq!(r.images_removed[0].names, ["localhost/b:1"]);
    assert_eq!(r.images_removed.len(), 1, "one image frees a byte");
    let r = store.garbage_collect(&none, 1, min_age, later).unwrap();
    assert_eq!(r.images_removed[0].names, ["localhost/a:1"]);
    // In use: kept however much is asked.
    let r = store
        .garbage_collect(&set(&["localhost/c:1"]), u64::MAX, min_age, later)
        .unwrap();
    assert!(r.images_removed.is_empty());
    assert_eq!(names(&store), vec!["localhost/c:1"]);
}

#[test]
fn orphans_of_a_crash_are_swept_and_live_images_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = Store::open(&root).unwrap();
    import(&store, dir.path(), "localhost/a:1", &[base()]);
    import(&store, dir.path(), "localhost/b:1", &[top("b", 10_000)]);
    let b = store.resolve("localhost/b:1").unwrap().unwrap();

    // A crash after b left the index but before its files went: edit the index by hand.
    let index_path = root.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    index["images"]
        .as_array_mut()
        .unwrap()
        .retain(|i| i["id"] != b.id.as_str());
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    // Debris of a removal that died midway (pid 999999999 does not exist), and of a blob.
    let debris = root.join(format!("layers/.tmp-rm{}-999999999-0", "e".repeat(64)));
    fs::create_dir_all(debris.join("usr")).unwrap();
    fs::write(debris.join("usr/f"), [1u8; 5000]).unwrap();
    fs::write(root.join("blobs/sha256").join("d".repeat(64)), [2u8; 5000]).unwrap();
    // A stray file among the layer directories goes too.
    let stray = root.join("layers").join("c".repeat(64));
    fs::write(&stray, [3u8; 100]).unwrap();
    // A temp of a live process (ours) is not touched.
    let live = root.join(format!(
        "layers/.tmp-{}-{}-0",
        "f".repeat(64),
        std::process::id()
    ));
    fs::create_dir(&live).unwrap();

    let r = store
        .garbage_collect(&BTreeSet::new(), 0, Duration::ZERO, SystemTime::now())
        .unwrap();
    assert!(
        r.images_removed.is_empty(),
        "nothing asked beyond the sweep"
    );
    assert!(!b.lowerdirs[0].exists(), "orphan layer of b swept");
    assert!(!debris.exists());
    assert!(!stray.exists());
    assert!(
        ls(&root.join("layers")).iter().all(|n| !n.contains("rm")),
        "no removal debris left"
    );
    assert!(!root.join("blobs/sha256").join("d".repeat(64)).exists());
    assert!(live.is_dir());
    assert_eq!(r.layers_removed.len(), 3, "{:?}", r.layers_removed);
    assert!(r.bytes_freed >= 10_000 + 5000 + 5000, "{}", r.bytes_freed);
    let a = store.resolve("localhost/a:1").unwrap().unwrap();
    assert_eq!(
        fs::read(a.lowerdirs[0].join("bin/hello")).unwrap().len(),
        40_000
    );
}

#[test]
fn remove_image_refuses_in_use_and_unknown_images() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    import(&store, dir.path(), "localhost/a:1", &[base()]);
    let e = store
        .remove_image("localhost/a:1", &set(&["localhost/a:1"]))
        .unwrap_err();
    assert!(matches!(e, Error::InUse { .. }), "{e}");
    assert!(e.to_string().contains("localhost/a:1"), "{e}");
    let e = store
        .remove_image("localhost/zz:1", &BTreeSet::new())
        .unwrap_err();
    assert!(matches!(e, Error::BadReference { .. }), "{e}");
    let r = store
        .remove_image("localhost/a:1", &set(&["localhost/other:1"]))
        .unwrap();
    assert_eq!(r.images_removed.len(), 1);
    assert!(store.list().unwrap().is_empty());
    assert!(ls(&store.root().join("layers")).is_empty());
}

#[test]
fn remove_image_by_a_shared_name_only_untags() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    import(&store, dir.path(), "localhost/a:1", &[base()]);
    import(&store, dir.path(), "localhost/a:2", &[base()]);
    let layers = ls(&store.root().join("layers"));
    assert_eq!(store.list().unwrap().len(), 1, "same image, two names");
    // A pod names a:1: that name stays; a:2 may go, as a name only, even while a:1 runs.
    let e = store
        .remove_image("localhost/a:1", &set(&["localhost/a:1"]))
        .unwrap_err();
    assert!(matches!(e, Error::InUse { .. }), "{e}");
    let r = store
        .remove_image("localhost/a:2", &set(&["localhost/a:1"]))
        .unwrap();
    assert_eq!(r.untagged, ["localhost/a:2"]);
    assert!(r.images_removed.is_empty() && r.bytes_freed == 0);
    assert_eq!(names(&store), vec!["localhost/a:1"]);
    assert_eq!(ls(&store.root().join("layers")), layers);
    // Its last name removes the image.
    let r = store
        .remove_image("localhost/a:1", &BTreeSet::new())
        .unwrap();
    assert_eq!(r.images_removed.len(), 1);
    assert!(ls(&store.root().join("layers")).is_empty());
}

#[test]
fn gc_does_not_wait_for_a_running_import() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = Store::open(&root).unwrap();
    import(&store, dir.path(), "localhost/a:1", &[base()]);
    // What an import in another process holds while it unpacks.
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(".gc.lock"))
        .unwrap();
    let held = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockShared).unwrap();
    let e = store.prune(&BTreeSet::new()).unwrap_err();
    assert!(matches!(e, Error::Busy { .. }), "{e}");
    assert!(e.to_string().contains("import is running"), "{e}");
    assert_eq!(names(&store), vec!["localhost/a:1"]);
    drop(held);
    assert_eq!(
        store.prune(&BTreeSet::new()).unwrap().images_removed.len(),
        1
    );
}
