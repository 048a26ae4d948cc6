//! Hooks run as real processes (`/bin/sh`): what they get, how they fail, and the pure rules.

use super::*;
use std::fs;

fn hook(stage: Stage, script: &str, env: &[&str], timeout_secs: Option<u32>) -> Hook {
    Hook {
        stage,
        path: PathBuf::from("/bin/sh"),
        args: vec!["my-hook".into(), "-c".into(), script.into()],
        env: env.iter().map(|s| s.to_string()).collect(),
        timeout_secs,
    }
}

fn state(stage: Stage, bundle: &Path) -> State {
    let mut ann = BTreeMap::new();
    ann.insert("vendor.com/gpu".to_string(), "gpu0".to_string());
    State::new("uid-c-0", stage, Some(4242), bundle, &ann)
}

#[test]
fn stages_have_oci_names_statuses_and_failure_rules() {
    // (stage, name, status, fatal, before pivot in the runtime)
    let cases = [
        (Stage::Prestart, "prestart", "creating", true, true),
        (
            Stage::CreateRuntime,
            "createRuntime",
            "creating",
            true,
            true,
        ),
        (
            Stage::CreateContainer,
            "createContainer",
            "creating",
            true,
            false,
        ),
        (
            Stage::StartContainer,
            "startContainer",
            "created",
            true,
            false,
        ),
        (Stage::Poststart, "poststart", "running", false, false),
        (Stage::Poststop, "poststop", "stopped", false, false),
    ];
    for (stage, name, status, fatal, runtime) in cases {
        assert_eq!(stage.name(), name);
        assert_eq!(Stage::parse(name), Some(stage));
        assert_eq!(stage.status(), status, "{name}");
        assert_eq!(stage.fatal(), fatal, "{name}");
        assert_eq!(stage.before_pivot_in_runtime(), runtime, "{name}");
    }
    assert_eq!(Stage::parse("beforeEverything"), None);
}

#[test]
fn the_start_budget_sums_the_timeouts_of_the_hooks_before_the_exit() {
    let h = |stage, t| hook(stage, "true", &[], t);
    let cases: Vec<(Vec<Hook>, u64)> = vec![
        (vec![], 0),
        (
            vec![h(Stage::CreateContainer, None)],
            DEFAULT_TIMEOUT.as_secs(),
        ),
        (
            vec![
                h(Stage::CreateRuntime, Some(3)),
                h(Stage::Poststart, Some(4)),
            ],
            7,
        ),
        (vec![h(Stage::Poststop, Some(100))], 0),
        (
            vec![
                h(Stage::StartContainer, Some(1)),
                h(Stage::Poststop, Some(9)),
            ],
            1,
        ),
    ];
    for (hooks, want) in cases {
        assert_eq!(start_budget(&hooks), Duration::from_secs(want), "{hooks:?}");
    }
}

#[test]
fn the_state_is_oci_json_without_a_pid_once_gone() {
    let s = state(Stage::CreateRuntime, Path::new("/b"));
    let v: serde_json::Value = serde_json::to_value(&s).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "ociVersion": OCI_VERSION, "id": "uid-c-0", "status": "creating", "pid": 4242,
            "bundle": "/b", "annotations": {"vendor.com/gpu": "gpu0"},
        })
    );
    let gone = State::new(
        "x",
        Stage::Poststop,
        None,
        Path::new("/b"),
        &BTreeMap::new(),
    );
    let v = serde_json::to_value(&gone).unwrap();
    assert_eq!(v["status"], "stopped");
    assert!(
        v.get("pid").is_none() && v.get("annotations").is_none(),
        "{v}"
    );
}

#[test]
fn a_hook_gets_the_state_on_stdin_its_args_exactly_its_env_and_the_bundle_as_cwd() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let script = format!(
        "cat > {o}.state; tr '\\0' '|' < /proc/$$/cmdline > {o}.args; env > {o}.env; pwd > {o}.cwd",
        o = out.display()
    );
    let mut h = hook(Stage::CreateRuntime, &script, &["A=1", "EMPTY"], None);
    h.args.push("extra".into());
    let st = state(Stage::CreateRuntime, dir.path());
    run_stage(&[h], Stage::CreateRuntime, &st, dir.path()).unwrap();
    let read = |ext: &str| fs::read_to_string(format!("{}.{ext}", out.display())).unwrap();
    let got: State = serde_json::from_str(&read("state")).unwrap();
    assert_eq!(got, st);
    let args = read("args");
    assert!(
        args.starts_with("my-hook|-c|cat ") && args.ends_with("|extra|"),
        "{args}"
    );
    let mut env: Vec<String> = read("env").lines().map(str::to_string).collect();
    // sh itself sets PWD (and some shells SHLVL); nothing of ours is inherited.
    env.retain(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("OLDPWD="));
    env.sort();
    assert_eq!(env, vec!["A=1", "EMPTY="]);
    assert_eq!(read("cwd").trim(), dir.path().to_str().unwrap());
}

#[test]
fn only_the_hooks_of_the_stage_run_in_order_and_the_first_failure_stops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let say = |stage, word: &str, code: i32| {
        hook(
            stage,
            &format!("echo {word} >> {}; exit {code}", log.display()),
            &[],
            None,
        )
    };
    let hooks = vec![
        say(Stage::CreateContainer, "one", 0),
        say(Stage::Poststart, "other-stage", 0),
        say(Stage::CreateContainer, "two", 5),
        say(Stage::CreateContainer, "three", 0),
    ];
    let st = state(Stage::CreateContainer, dir.path());
    let err = run_stage(&hooks, Stage::CreateContainer, &st, dir.path()).unwrap_err();
    assert!(
        err.starts_with("createContainer hook /bin/sh: exit status 5"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&log).unwrap(), "one\ntwo\n");
    // No hooks of a stage: nothing runs, nothing fails.
    run_stage(&hooks, Stage::Poststop, &st, dir.path()).unwrap();
}

#[test]
fn a_failing_hook_names_its_stage_path_status_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let h = hook(
        Stage::StartContainer,
        "echo no driver loaded >&2; exit 3",
        &[],
        None,
    );
    let err = run(&h, b"{}", dir.path()).unwrap_err();
    assert_eq!(
        err,
        "startContainer hook /bin/sh: exit status 3: output: \"no driver loaded\""
    );
    let h = hook(Stage::Poststop, "kill -9 $$", &[], None);
    let err = run(&h, b"{}", dir.path()).unwrap_err();
    assert!(err.ends_with("killed by signal 9"), "{err}");
    let missing = Hook {
        stage: Stage::CreateRuntime,
        path: dir.path().join("no-such-hook"),
        args: vec![],
        env: vec![],
        timeout_secs: None,
    };
    let err = run(&missing, b"{}", dir.path()).unwrap_err();
    assert!(
        err.starts_with("createRuntime hook ") && err.contains("no-such-hook: start:"),
        "{err}"
    );
    assert!(err.contains("No such file"), "{err}");
}

#[test]
fn a_hook_past_its_timeout_is_killed_with_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("bg.pid");
    let h = hook(
        Stage::CreateContainer,
        &format!(
            "sleep 300 & echo $! > {}; echo started; wait",
            pidfile.display()
        ),
        &[],
        Some(1),
    );
    let err = run(&h, b"{}", dir.path()).unwrap_err();
    assert_eq!(
        err,
        "createContainer hook /bin/sh: timed out after 1 s: output: \"started\""
    );
    // The background `sleep` was in the hook's process group: killed too (it is gone once
    // its new parent has reaped it).
    let bg: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stat = format!("/proc/{bg}/stat");
    let gone = (0..200).any(|_| {
        let alive = fs::read_to_string(&stat)
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        if alive {
            std::thread::sleep(Duration::from_millis(25));
        }
        !alive
    });
    assert!(
        gone,
        "the hook's background process {bg} outlived the timeout"
    );
}

#[test]
fn a_hook_that_writes_a_lot_and_ignores_stdin_ends_with_the_tail_of_its_output() {
    let dir = tempfile::tempdir().unwrap();
    // 1 MiB of output (far more than a pipe holds), a 1 MiB state it never reads.
    let h = hook(
        Stage::CreateRuntime,
        "i=0; while [ $i -lt 16384 ]; do echo 0123456789012345678901234567890123456789012345678901234567890123; i=$((i+1)); done; echo the-end; exit 1",
        &[],
        Some(60),
    );
    let big = vec![b'x'; 1 << 20];
    let err = run(&h, &big, dir.path()).unwrap_err();
    assert!(
        err.starts_with("createRuntime hook /bin/sh: exit status 1: output: \"…"),
        "{}",
        &err[..80]
    );
    assert!(err.ends_with("the-end\""), "{}", &err[err.len() - 40..]);
    assert!(err.len() < MAX_OUTPUT + 200, "{} bytes", err.len());
}

#[test]
fn the_bundle_config_names_the_rootfs_relative_to_the_bundle() {
    let spec = super::super::ContainerSpec {
        name: "c".into(),
        attempt: 2,
        image: "i".into(),
        image_id: "sha256:x".into(),
        argv: vec!["sh".into()],
        env: vec!["PATH=/bin".into()],
        cwd: String::new(),
        uid: 1000,
        gid: 100,
        additional_gids: vec![44],
        lowerdirs: vec![PathBuf::from("/l")],
        upperdir: PathBuf::from("/pods/u/rootfs/c-2/upper"),
        workdir: PathBuf::from("/pods/u/rootfs/c-2/work"),
        rootfs: PathBuf::from("/pods/u/rootfs/c-2/merged"),
        readonly_rootfs: true,
        security: crate::security::ContainerSecurity {
            privileged: false,
            caps: crate::security::CapSet::default_set(),
            no_new_privs: false,
            masked_paths: vec![],
            readonly_paths: vec![],
            seccomp: None,
            seccomp_profile: "Unconfined".into(),
        },
        userns: None,
        mounts: vec![super::super::BindMount {
            source: PathBuf::from("/host/data"),
            destination: "/data".into(),
            readonly: true,
        }],
        devices: vec![],
        hooks: vec![],
        annotations: [("a".to_string(), "b".to_string())].into(),
        cgroup_procs: vec![],
        oom_kill_file: None,
        oom_score_adj: 0,
        log_path: PathBuf::from("/l.log"),
        log_max_bytes: 1,
        log_max_files: 1,
        stop_signal: 15,
    };
    assert_eq!(bundle_dir(&spec), PathBuf::from("/pods/u/rootfs/c-2"));
    let c = bundle_config(&spec);
    assert_eq!(c["ociVersion"], OCI_VERSION);
    assert_eq!(
        c["root"],
        serde_json::json!({"path": "merged", "readonly": true})
    );
    assert_eq!(c["process"]["cwd"], "/");
    assert_eq!(
        c["process"]["user"],
        serde_json::json!({"uid": 1000, "gid": 100, "additionalGids": [44]})
    );
    assert_eq!(
        c["mounts"],
        serde_json::json!([{"destination": "/data", "type": "bind", "source": "/host/data", "options": ["rbind", "ro"]}])
    );
    assert_eq!(c["annotations"], serde_json::json!({"a": "b"}));
}
