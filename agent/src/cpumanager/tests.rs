//! The manager against a fake `Cgroups` that records `cpuset.cpus` writes (admission,
//! checkpoint across a restart, release and reconcile), and, as root, against the host's real
//! cgroup v1 cpuset hierarchy with a real process.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::*;
use crate::cgroups::{self, Resources, Version};

/// Cgroups whose `apply` creates a path and `set_cpuset` records the value, refusing paths
/// not created (as the kernel: the file is not there).
#[derive(Default)]
struct Fake {
    cpus: Mutex<BTreeMap<String, String>>,
}

impl Fake {
    fn get(&self, path: &str) -> Option<String> {
        self.cpus.lock().unwrap().get(path).cloned()
    }
}

impl Cgroups for Fake {
    fn version(&self) -> Version {
        Version::V2
    }
    fn apply(&self, path: &str, _: &Resources) -> cgroups::Result<()> {
        self.cpus.lock().unwrap().entry(path.into()).or_default();
        Ok(())
    }
    fn procs_files(&self, _: &str) -> Vec<PathBuf> {
        vec![]
    }
    fn oom_kill_file(&self, _: &str) -> PathBuf {
        PathBuf::new()
    }
    fn pids(&self, _: &str) -> cgroups::Result<Vec<i32>> {
        Ok(vec![])
    }
    fn kill_all(&self, _: &str) -> cgroups::Result<()> {
        Ok(())
    }
    fn remove(&self, path: &str) -> cgroups::Result<()> {
        self.cpus
            .lock()
            .unwrap()
            .retain(|k, _| !k.starts_with(path));
        Ok(())
    }
    fn memory_sample(&self, path: &str) -> cgroups::Result<cgroups::MemorySample> {
        Err(cgroups::Error::Unsupported(format!(
            "no memory in the fake ({path})"
        )))
    }
    fn memory_files(&self, path: &str) -> cgroups::MemoryFiles {
        cgroups::MemoryFiles::V2 {
            events: PathBuf::from(path).join("memory.events"),
            pressure: PathBuf::from(path).join("memory.pressure"),
        }
    }
    fn set_cpuset(&self, path: &str, cpus: &str) -> cgroups::Result<()> {
        match self.cpus.lock().unwrap().get_mut(path) {
            Some(v) => {
                *v = cpus.to_string();
                Ok(())
            }
            None => Err(cgroups::Error::Write {
                path: path.into(),
                value: cpus.into(),
                source: std::io::ErrorKind::NotFound.into(),
            }),
        }
    }
    fn set_devices(&self, _: &str, _: &[cgroups::devices::DeviceRule]) -> cgroups::Result<()> {
        Ok(())
    }
}

fn set(s: &str) -> CpuSet {
    CpuSet::parse(s).unwrap()
}

/// A pod of one container `app`; `cpu` None makes it BestEffort.
fn spec(cpu: Option<&str>) -> PodSpec {
    let resources = cpu.map(|c| {
        let list: BTreeMap<String, Quantity> = [
            ("cpu".to_string(), Quantity(c.into())),
            ("memory".to_string(), Quantity("64Mi".into())),
        ]
        .into();
        ResourceRequirements {
            requests: Some(list.clone()),
            limits: Some(list),
            ..Default::default()
        }
    });
    PodSpec {
        containers: vec![Container {
            name: "app".into(),
            resources,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn manager(dir: &std::path::Path, fake: &Arc<Fake>, online: &str) -> Result<CpuManager> {
    CpuManager::new(
        set(online),
        set("0"),
        dir.join(checkpoint::FILE),
        fake.clone(),
        "infra",
    )
}

/// Admit a pod and create its cgroups (app and infra) as the worker does, applying each.
fn start(m: &CpuManager, fake: &Fake, uid: &str, cpu: Option<&str>) -> Result<()> {
    m.admit(uid, &format!("kp/pod{uid}"), &spec(cpu))?;
    for leaf in ["infra", "app"] {
        fake.apply(&format!("kp/pod{uid}/{leaf}"), &Resources::default())
            .unwrap();
        m.apply(uid, leaf)?;
    }
    Ok(())
}

#[test]
fn exclusive_pod_shrinks_the_pool_and_gives_it_back() {
    let t = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default());
    let m = manager(t.path(), &fake, "0-1").unwrap();
    start(&m, &fake, "be", None).unwrap();
    assert_eq!(fake.get("kp/podbe/app").as_deref(), Some("0-1"));
    start(&m, &fake, "g", Some("1")).unwrap();
    assert_eq!(fake.get("kp/podg/app").as_deref(), Some("1"));
    assert_eq!(fake.get("kp/podg/infra").as_deref(), Some("0"));
    // The running BestEffort pod was moved off CPU 1 at once.
    assert_eq!(fake.get("kp/podbe/app").as_deref(), Some("0"));
    assert_eq!(fake.get("kp/podbe/infra").as_deref(), Some("0"));
    let st = m.status();
    assert_eq!(
        (st.shared.to_string(), st.free.to_string()),
        ("0".into(), "".into())
    );
    assert_eq!(st.exclusive["g"]["app"], set("1"));

    // Only CPU 1 is allocatable: a second exclusive pod is refused, with kubelet's reason.
    let e = start(&m, &fake, "g2", Some("1")).unwrap_err();
    assert_eq!(e.reason(), "UnexpectedAdmissionError");
    let msg = e.to_string();
    assert!(
        msg.contains("not enough cpus available to satisfy request")
            && msg.contains("requested 1 exclusive CPU(s), 0 available"),
        "{msg}"
    );
    assert!(!m.status().exclusive.contains_key("g2"));

    m.release("g").unwrap();
    assert_eq!(fake.get("kp/podbe/app").as_deref(), Some("0-1"));
    assert_eq!(m.status().free, set("1"));
    // The freed CPU can be taken again.
    start(&m, &fake, "g2", Some("1000m")).unwrap();
    assert_eq!(fake.get("kp/podg2/app").as_deref(), Some("1"));
}

#[test]
fn checkpoint_keeps_assignments_across_a_restart() {
    let t = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default());
    {
        let m = manager(t.path(), &fake, "0-3").unwrap();
        start(&m, &fake, "a", Some("2")).unwrap();
        start(&m, &fake, "b", Some("1")).unwrap();
        assert_eq!(fake.get("kp/poda/app").as_deref(), Some("1-2"));
        assert_eq!(fake.get("kp/podb/app").as_deref(), Some("3"));
    }
    let text = std::fs::read_to_string(t.path().join(checkpoint::FILE)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["policyName"], "static", "{text}");
    assert_eq!(v["defaultCpuSet"], "0", "{text}");
    assert_eq!(
        v["entries"],
        serde_json::json!({"a": {"app": "1-2"}, "b": {"app": "3"}}),
        "{text}"
    );
    assert!(v["checksum"].is_u64(), "{text}");
    // A new process: "b" is adopted (keeps CPU 3), "a" was deleted while the agent was down.
    let m = manager(t.path(), &fake, "0-3").unwrap();
    assert_eq!(
        m.admit("b", "kp/podb", &spec(Some("1"))).unwrap()["app"],
        set("3")
    );
    m.remove_stale(&["b".to_string()].into()).unwrap();
    assert_eq!(m.status().shared, set("0-2"));
    assert_eq!(fake.get("kp/podb/infra").as_deref(), Some("0-2"));
    start(&m, &fake, "c", Some("2")).unwrap();
    assert_eq!(fake.get("kp/podc/app").as_deref(), Some("1-2"));
}

#[test]
fn bad_state_or_reservation_stops_the_start() {
    let t = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default());
    let path = t.path().join(checkpoint::FILE);
    std::fs::write(&path, "{not json").unwrap();
    let e = manager(t.path(), &fake, "0-1").err().unwrap().to_string();
    assert!(
        e.contains(&path.display().to_string()) && e.contains("delete the file"),
        "{e}"
    );
    std::fs::write(&path, r#"{"policyName":"none","defaultCpuSet":""}"#).unwrap();
    let e = manager(t.path(), &fake, "0-1").err().unwrap().to_string();
    assert!(e.contains("written by cpuManagerPolicy \"none\""), "{e}");
    // Assignments naming a CPU the machine no longer has.
    std::fs::write(
        &path,
        r#"{"policyName":"static","entries":{"u":{"app":"3"}}}"#,
    )
    .unwrap();
    let e = manager(t.path(), &fake, "0-1").err().unwrap().to_string();
    assert!(e.contains("not online"), "{e}");
    std::fs::remove_file(&path).unwrap();

    let cases = [
        ("0-1", "0-1", "reserves every online CPU"),
        (
            "0-1",
            "2",
            "names CPUs 2 that this machine does not have online (online: 0-1)",
        ),
        ("0-1", "", "static needs reservedSystemCPUs"),
    ];
    for (online, reserved, want) in cases {
        let e = CpuManager::new(
            set(online),
            set(reserved),
            path.clone(),
            fake.clone(),
            "infra",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains(want), "{reserved}: {e}");
        if !reserved.is_empty() {
            assert!(e.starts_with("reservedSystemCPUs:"), "{e}");
        }
    }
    assert!(!path.exists(), "a refused start writes no checkpoint");
}

#[test]
fn policy_none_refuses_a_static_checkpoint() {
    let t = tempfile::tempdir().unwrap();
    let fake: Arc<dyn Cgroups> = Arc::new(Fake::default());
    let cfg = Options {
        policy: Policy::None,
        reserved: CpuSet::default(),
        root_dir: t.path().into(),
    };
    let online = t.path().join("online");
    std::fs::write(&online, "0-1\n").unwrap();
    assert!(CpuManager::from_options(&cfg, &online, fake.clone(), "i")
        .unwrap()
        .is_none());
    let stat = Options {
        policy: Policy::Static,
        reserved: set("0"),
        ..cfg.clone()
    };
    let m = CpuManager::from_options(&stat, &online, fake.clone(), "i")
        .unwrap()
        .unwrap();
    assert_eq!(m.status().free, set("1"));
    drop(m);
    let e = CpuManager::from_options(&cfg, &online, fake.clone(), "i")
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("cpu_manager_state") && e.contains("configured policy is \"none\""),
        "{e}"
    );
    std::fs::write(&online, "garbage").unwrap();
    let e = CpuManager::from_options(&stat, &online, fake, "i")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("online") && e.contains("garbage"), "{e}");
}

#[test]
fn unknown_pod_and_missing_cgroups() {
    let t = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default());
    let m = manager(t.path(), &fake, "0-1").unwrap();
    assert!(matches!(
        m.apply("nope", "app"),
        Err(Error::UnknownPod { .. })
    ));
    // Admitted but no cgroup created yet: reconcile skips it; apply names the leaf.
    m.admit("p", "kp/podp", &spec(None)).unwrap();
    m.reconcile().unwrap();
    let e = m.apply("p", "app").unwrap_err().to_string();
    assert!(e.contains("\"app\"") && e.contains("podp"), "{e}");
}

/// Real cgroups (v1 cpuset hierarchy on this host): a process in a container cgroup follows
/// its cpuset as exclusive pods come and go.
#[test]
fn privileged_cpuset_moves_a_real_process() {
    if !tidelet_testgate::privileged_here() {
        return;
    }
    let online = read_online(std::path::Path::new(ONLINE_FILE)).unwrap();
    if online.len() < 2 {
        panic!("this test needs at least 2 online CPUs, the host has {online}");
    }
    let cg: Arc<dyn Cgroups> = Arc::from(
        cgroups::detect(
            std::path::Path::new("/sys/fs/cgroup"),
            std::path::Path::new("/proc/self/mountinfo"),
        )
        .unwrap(),
    );
    let base = format!("tidelet-cpuset-test-{}", std::process::id());
    struct Cleanup(Arc<dyn Cgroups>, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = self.0.kill_all(&self.1);
            let _ = self.0.remove(&self.1);
        }
    }
    let _cleanup = Cleanup(cg.clone(), base.clone());
    let t = tempfile::tempdir().unwrap();
    let first = online.iter().next().unwrap();
    let reserved: CpuSet = [first].into_iter().collect();
    let m = CpuManager::new(
        online.clone(),
        reserved.clone(),
        t.path().join(checkpoint::FILE),
        cg.clone(),
        "infra",
    )
    .unwrap();
    let spawn_in = |path: &str| {
        cg.apply(path, &Resources::default()).unwrap();
        let child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        for f in cg.procs_files(path) {
            std::fs::write(&f, child.id().to_string())
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        }
        child
    };
    let allowed = |pid: u32| {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let v = s
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string();
        CpuSet::parse(&v).unwrap()
    };
    m.admit("be", &format!("{base}/podbe"), &spec(None))
        .unwrap();
    let mut be = spawn_in(&format!("{base}/podbe/app"));
    m.apply("be", "app").unwrap();
    assert_eq!(allowed(be.id()), online);

    let want = online.difference(&reserved).take_lowest(1).unwrap();
    let got = m
        .admit("g", &format!("{base}/podg"), &spec(Some("1")))
        .unwrap();
    assert_eq!(got["app"], want);
    let mut g = spawn_in(&format!("{base}/podg/app"));
    m.apply("g", "app").unwrap();
    assert_eq!(allowed(g.id()), want);
    let shared = online.difference(&want);
    assert_eq!(
        allowed(be.id()),
        shared,
        "the shared process left the exclusive CPU"
    );
    let file = PathBuf::from("/sys/fs/cgroup/cpuset")
        .join(&base)
        .join("podbe/app/cpuset.cpus");
    if file.exists() {
        assert_eq!(
            CpuSet::parse(&std::fs::read_to_string(&file).unwrap()).unwrap(),
            shared
        );
    }

    m.release("g").unwrap();
    assert_eq!(
        allowed(be.id()),
        online,
        "the freed CPU is back in the pool"
    );
    let _ = g.kill();
    let _ = be.kill();
    let _ = g.wait();
    let _ = be.wait();
}
