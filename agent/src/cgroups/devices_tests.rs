//! `Cgroups::set_devices`: its refusals on temp dirs, and, as root, the rules enforced by the
//! real kernel: cgroup v1 `devices.allow/deny` on this
//! hybrid host's devices hierarchy, and the v2 eBPF device program on its cgroup2 mounted at
//! `/sys/fs/cgroup/unified` (which has no controllers, and needs none for device programs:
//! the kernel runs the programs of a task's unified-hierarchy cgroup on every device access).
//!
//! A forked child joins the test cgroup and then opens (or creates) device nodes made with
//! `mknod` in a temp dir, with the numbers of harmless host devices not in the default allow
//! list: `/dev/net/tun` 10:200 and `/dev/fuse` 10:229. Its exit code carries the errno back.
//! Without root they skip, unless `TIDELET_REQUIRE_PRIVILEGED` is set (CI), where they fail.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::devices::{allow, default_rules, DevKind, DeviceRule};
use super::testing::*;
use super::*;

const TUN: (u32, u32) = (10, 200);
const FUSE: (u32, u32) = (10, 229);
const NULL: (u32, u32) = (1, 3);

/// What the child does once in the cgroup.
enum Probe<'a> {
    /// `open(path, O_RDWR)`.
    Open(&'a Path),
    /// `mknod(path, S_IFCHR or S_IFBLK | 0600, major:minor)`.
    Mknod(&'a Path, libc::mode_t, (u32, u32)),
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Fork a child that joins `procs_files` (writing `0`, "myself", to each) and runs `probe`:
/// `Ok` when it succeeded, else the errno it got.
fn in_cgroup(procs_files: &[PathBuf], probe: Probe<'_>) -> std::result::Result<(), i32> {
    // Everything the child needs is allocated before the fork: after it, in a multi-threaded
    // test process, the child may only make plain system calls.
    let procs: Vec<CString> = procs_files.iter().map(|p| cstr(p)).collect();
    let (target, mknod) = match probe {
        Probe::Open(p) => (cstr(p), None),
        Probe::Mknod(p, kind, (major, minor)) => {
            (cstr(p), Some((kind | 0o600, libc::makedev(major, minor))))
        }
    };
    // SAFETY: the child only calls async-signal-safe functions (open, write, close, mknod,
    // _exit) on memory prepared above, and never returns into Rust code.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: see the fork above; the pointers are valid NUL-terminated strings.
        unsafe {
            for p in &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(200);
                }
                libc::close(fd);
            }
            let ok = match mknod {
                None => {
                    let fd = libc::open(target.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
                    fd >= 0
                }
                Some((mode, dev)) => libc::mknod(target.as_ptr(), mode, dev) == 0,
            };
            libc::_exit(if ok {
                0
            } else {
                *libc::__errno_location() & 0x7f
            });
        }
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    match libc::WEXITSTATUS(status) {
        0 => Ok(()),
        200 => panic!("the child could not join {procs_files:?}"),
        errno => Err(errno),
    }
}

/// Device nodes in a temp dir: `tun`, `fuse`, `null`.
struct Nodes {
    dir: tempfile::TempDir,
}

impl Nodes {
    fn new() -> Nodes {
        let dir = tempfile::tempdir().unwrap();
        for (name, (major, minor)) in [("tun", TUN), ("fuse", FUSE), ("null", NULL)] {
            let p = dir.path().join(name);
            nix::sys::stat::mknod(
                &p,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                libc::makedev(major, minor),
            )
            .unwrap_or_else(|e| panic!("mknod {}: {e}", p.display()));
            // Outside any restricted cgroup each opens: a denial later is the cgroup's doing.
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .unwrap_or_else(|e| panic!("{} opens outside the cgroup: {e}", p.display()));
        }
        Nodes { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Open each node from a child in the cgroup; `(name, allowed)`.
    fn check(&self, procs: &[PathBuf], want: &[(&str, bool)]) {
        for (name, allowed) in want {
            let got = in_cgroup(procs, Probe::Open(&self.path(name)));
            let expected = if *allowed { Ok(()) } else { Err(libc::EPERM) };
            assert_eq!(got, expected, "opening {name} (errno on Err)");
        }
    }
}

fn char_rule(major: u32, minor: u32, access: &str) -> DeviceRule {
    allow(DevKind::Char, Some(major), Some(minor), access).unwrap()
}

fn deny_all() -> DeviceRule {
    DeviceRule {
        allow: false,
        kind: DevKind::All,
        major: None,
        minor: None,
        access: "rwm".into(),
    }
}

#[test]
fn set_devices_refusals_name_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let h = |c: &str| mountinfo::Hierarchy {
        mount_point: dir.path().join(c),
        controllers: vec![c.to_string()],
    };
    let v1 = V1::new(vec![h("memory"), h("cpu"), h("pids")]).unwrap();
    let err = v1.set_devices("a/b", &default_rules()).unwrap_err();
    assert!(
        matches!(&err, Error::MissingControllers { root, missing, .. }
            if root == dir.path() && missing == "devices"),
        "{err}"
    );
    assert!(err.to_string().contains("CONFIG_CGROUP_DEVICE"), "{err}");
    let v2 = V2::with_controllers(dir.path(), &[]);
    for cg in [&v1 as &dyn Cgroups, &v2] {
        for bad in ["", "/", "a/../b"] {
            assert!(
                matches!(cg.set_devices(bad, &[]), Err(Error::InvalidPath { .. })),
                "{bad:?}"
            );
        }
    }
    // v2 on a directory that is not a cgroup: as root the load works and the kernel refuses
    // the query on the directory; without root the load is refused (EPERM, with the hint).
    std::fs::create_dir(dir.path().join("c")).unwrap();
    let err = v2.set_devices("c", &default_rules()).unwrap_err();
    if nix::unistd::geteuid().is_root() {
        assert!(
            matches!(&err, Error::Bpf(bpf::Error::Cgroup { path, step: bpf::Step::Query, source })
                if path == &dir.path().join("c") && source.raw_os_error() == Some(libc::EBADF)),
            "{err}"
        );
    } else {
        assert!(matches!(&err, Error::Bpf(bpf::Error::Load { .. })), "{err}");
        assert!(err.to_string().contains("CAP_BPF"), "{err}");
    }
}

#[test]
fn v1_device_rules_allow_only_what_is_listed() {
    if !privileged("v1_device_rules_allow_only_what_is_listed") {
        return;
    }
    let cg = detect(Path::new(MOUNT_ROOT), Path::new(MOUNTINFO)).unwrap();
    assert_eq!(cg.version(), Version::V1, "this host is a cgroup v1 hybrid");
    let base = unique_base();
    let _cleanup = Cleanup {
        cg: cg.as_ref(),
        base: base.clone(),
    };
    let pod = format!("{base}/pod");
    let path = format!("{pod}/c1");
    cg.apply(&path, &Resources::default()).unwrap();
    let procs = cg.procs_files(&path);
    let nodes = Nodes::new();

    let rules = [
        deny_all(),
        char_rule(NULL.0, NULL.1, "rwm"),
        char_rule(TUN.0, TUN.1, "rw"),
    ];
    cg.set_devices(&path, &rules).unwrap();
    let list = Path::new(MOUNT_ROOT)
        .join("devices")
        .join(&path)
        .join("devices.list");
    assert_eq!(
        std::fs::read_to_string(&list).unwrap(),
        "c 1:3 rwm\nc 10:200 rw\n"
    );
    nodes.check(&procs, &[("tun", true), ("fuse", false), ("null", true)]);
    // No `m` in these rules: creating a node is refused too.
    assert_eq!(
        in_cgroup(
            &procs,
            Probe::Mknod(&nodes.path("made"), libc::S_IFCHR, TUN)
        ),
        Err(libc::EPERM)
    );

    // Again with the defaults plus fuse: the old allows are gone (the deny-all resets them).
    let mut rules = default_rules();
    rules.push(char_rule(FUSE.0, FUSE.1, "rwm"));
    cg.set_devices(&path, &rules).unwrap();
    nodes.check(&procs, &[("tun", false), ("fuse", true), ("null", true)]);
    // The defaults allow mknod of any node; opening it stays refused.
    let made = nodes.path("made");
    assert_eq!(
        in_cgroup(&procs, Probe::Mknod(&made, libc::S_IFCHR, TUN)),
        Ok(())
    );
    assert_eq!(in_cgroup(&procs, Probe::Open(&made)), Err(libc::EPERM));

    // A deny-all on a cgroup with children is refused; the error names the file and line.
    let err = cg.set_devices(&pod, &default_rules()).unwrap_err();
    assert!(
        matches!(&err, Error::Write { path, value, source }
            if path.ends_with("pod/devices.deny") && value == "a *:* rwm"
                && source.raw_os_error() == Some(libc::EINVAL)),
        "{err}"
    );
    // A v1 directory takes no device program; the error says why.
    let err = bpf::attached(&list.with_file_name("")).unwrap_err();
    assert!(
        matches!(&err, bpf::Error::Cgroup { step: bpf::Step::Query, source, .. }
            if source.raw_os_error() == Some(libc::EBADF)),
        "{err}"
    );
    assert!(err.to_string().contains("not a cgroup v2"), "{err}");
    // A missing cgroup is an error, not a new file.
    let err = cg.set_devices(&format!("{base}/nope"), &rules).unwrap_err();
    assert!(
        matches!(&err, Error::Write { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err}"
    );
    cg.remove(&base).unwrap();
}

#[test]
fn v2_device_program_enforces_and_replaces_on_the_unified_hierarchy() {
    if !privileged("v2_device_program_enforces_and_replaces_on_the_unified_hierarchy") {
        return;
    }
    let unified = Path::new(MOUNT_ROOT).join("unified");
    let cg = V2::with_controllers(&unified, &[]);
    let base = unique_base();
    let _cleanup = Cleanup {
        cg: &cg,
        base: base.clone(),
    };
    let path = format!("{base}/pod/c1");
    cg.apply(&path, &Resources::default()).unwrap();
    let dir = unified.join(&path);
    let procs = cg.procs_files(&path);
    let nodes = Nodes::new();
    assert!(bpf::attached(&dir).unwrap().is_empty());
    // Before any program, the unified cgroup restricts nothing.
    nodes.check(&procs, &[("tun", true), ("fuse", true)]);

    let mut rules = default_rules();
    rules.push(char_rule(TUN.0, TUN.1, "rw"));
    cg.set_devices(&path, &rules).unwrap();
    let first = bpf::attached(&dir).unwrap();
    assert_eq!(first.len(), 1, "one program attached: {first:?}");
    nodes.check(&procs, &[("tun", true), ("fuse", false), ("null", true)]);
    // mknod is allowed by the defaults (`c *:* m`), opening the new node is not.
    let made = nodes.path("made");
    assert_eq!(
        in_cgroup(&procs, Probe::Mknod(&made, libc::S_IFCHR, FUSE)),
        Ok(())
    );
    assert_eq!(in_cgroup(&procs, Probe::Open(&made)), Err(libc::EPERM));
    assert_eq!(
        in_cgroup(
            &procs,
            Probe::Mknod(&nodes.path("blk"), libc::S_IFBLK, (7, 0))
        ),
        Ok(())
    );

    // New rules replace the program: fuse now, tun no longer; still one program.
    let mut rules = default_rules();
    rules.push(char_rule(FUSE.0, FUSE.1, "rwm"));
    cg.set_devices(&path, &rules).unwrap();
    let second = bpf::attached(&dir).unwrap();
    assert_eq!(second.len(), 1, "replaced, not stacked: {second:?}");
    assert_ne!(first, second, "a new program");
    nodes.check(&procs, &[("tun", false), ("fuse", true), ("null", true)]);

    // Read-only access: a write open is refused.
    cg.set_devices(&path, &[deny_all(), char_rule(TUN.0, TUN.1, "r")])
        .unwrap();
    assert_eq!(bpf::attached(&dir).unwrap().len(), 1);
    nodes.check(&procs, &[("tun", false), ("null", false)]);

    // A sibling cgroup is not affected by c1's program.
    let sibling = format!("{base}/pod/c2");
    cg.apply(&sibling, &Resources::default()).unwrap();
    nodes.check(&cg.procs_files(&sibling), &[("fuse", true)]);

    // A program the verifier refuses (exit without setting r0): its log is in the error.
    let bad = [bpf::Insn {
        code: bpf::op::EXIT,
        dst: 0,
        src: 0,
        off: 0,
        imm: 0,
    }];
    let err = bpf::load(&bad).unwrap_err();
    assert!(
        matches!(&err, bpf::Error::Load { insns: 1, log, .. } if log.contains("R0 !read_ok")),
        "{err}"
    );

    // A missing cgroup names the path and the step.
    let missing = format!("{base}/pod/nope");
    let err = cg.set_devices(&missing, &rules).unwrap_err();
    assert!(
        matches!(&err, Error::Bpf(bpf::Error::Cgroup { path, step: bpf::Step::Open, .. })
            if path == &unified.join(&missing)),
        "{err}"
    );
    cg.remove(&base).unwrap();
}
