//! The CNI protocol, runtime side (spec 1.0.0, with 1.1.0's STATUS and GC where the list asks
//! for 1.1.0): finding plugins, building each plugin's stdin in a chain, ADD, DEL, CHECK.
//!
//! What tidelet adds to what libcni does, and why:
//! - every plugin run is bounded in time and output (`exec`);
//! - the caller records the attachment (config, netns, args) *before* ADD and the result
//!   after it (`net::store`), so an ADD cut short by a crash is undone by a DEL from the
//!   record: the spec says DEL must be issued even when ADD failed, and portmap's DEL only
//!   removes rules it is told about again.

pub mod config;
pub mod exec;
pub mod result;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use config::ConfList;
use result::PluginError;

/// Where plugins are found and how long each may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// Searched in order (`CNI_PATH`).
    pub bin_dirs: Vec<PathBuf>,
    pub timeout: Duration,
}

/// A descriptor every plugin of an operation inherits (`exec::Invocation::hold`).
pub type Hold = Option<std::os::fd::RawFd>;

/// One attachment's identity and arguments: the same for its ADD, CHECK and DEL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Args {
    pub container_id: String,
    /// The network namespace's path; `None` on a DEL whose namespace is gone.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS` pairs (`K8S_POD_NAME`, ...).
    pub cni_args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `bandwidth`): each plugin gets those its
    /// `capabilities` ask for, as `runtimeConfig`.
    pub capability_args: Map<String, Value>,
}

/// An operation on a chain that failed, named as libcni names it:
/// `plugin type="bridge" failed (add): ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin type={plugin:?} failed ({op}): {reason}")]
pub struct Error {
    pub plugin: String,
    pub op: &'static str,
    pub reason: String,
    /// The CNI error code, when the plugin printed one.
    pub code: Option<u64>,
}

impl Runtime {
    /// The plugin binary of type `t`: the first executable file of that name in `bin_dirs`.
    pub fn find(&self, t: &str) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        self.bin_dirs.iter().map(|d| d.join(t)).find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    }

    /// The plugin types of `list` that are not installed.
    pub fn missing(&self, list: &ConfList) -> Vec<String> {
        list.types()
            .into_iter()
            .filter(|t| self.find(t).is_none())
            .map(str::to_string)
            .collect()
    }

    fn cni_path(&self) -> String {
        self.bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    fn env(&self, command: &str, args: Option<&Args>) -> Vec<(String, String)> {
        let mut env = vec![
            ("CNI_COMMAND".to_string(), command.to_string()),
            ("CNI_PATH".to_string(), self.cni_path()),
        ];
        if let Some(a) = args {
            env.push(("CNI_CONTAINERID".into(), a.container_id.clone()));
            env.push(("CNI_IFNAME".into(), a.ifname.clone()));
            if let Some(ns) = &a.netns {
                env.push(("CNI_NETNS".into(), ns.display().to_string()));
            }
            if !a.cni_args.is_empty() {
                let s = a
                    .cni_args
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(";");
                env.push(("CNI_ARGS".into(), s));
            }
        }
        env
    }

    /// Run plugin `i` of `list` with `command`; its stdout.
    fn invoke(
        &self,
        list: &ConfList,
        i: usize,
        op: &'static str,
        args: Option<&Args>,
        stdin: &[u8],
        hold: Hold,
    ) -> Result<Vec<u8>, Error> {
        let t = list.types().get(i).copied().unwrap_or_default().to_string();
        let fail = |reason: String, code: Option<u64>| Error {
            plugin: t.clone(),
            op,
            reason,
            code,
        };
        let plugin = self
            .find(&t)
            .ok_or_else(|| fail(format!("no executable {t:?} in {}", self.cni_path()), None))?;
        // libcni's word for each operation in its errors, and the verb the plugin is given.
        let command = match op {
            "delete" => "DEL",
            "add" => "ADD",
            "check" => "CHECK",
            "status" => "STATUS",
            _ => "GC",
        };
        let env = self.env(command, args);
        exec::run(&exec::Invocation {
            plugin: &plugin,
            args: &[],
            env: &env,
            stdin,
            timeout: self.timeout,
            hold,
        })
        .map_err(|e| match e {
            exec::ExecError::Failed {
                stdout,
                stderr,
                status,
                ..
            } => match result::parse_error(&stdout) {
                Some(PluginError { code, msg, details }) => {
                    let pe = PluginError { code, msg, details };
                    fail(pe.to_string(), Some(code))
                }
                // libcni's wording for a plugin that printed no error object.
                None if stdout.is_empty() && stderr.is_empty() => fail(
                    format!("netplugin failed with no error message: {status}"),
                    None,
                ),
                None if stdout.is_empty() => fail(format!("netplugin failed: {stderr:?}"), None),
                None => fail(
                    format!(
                        "netplugin failed but error parsing its diagnostic message {:?}",
                        String::from_utf8_lossy(&stdout[..stdout.len().min(300)])
                    ),
                    None,
                ),
            },
            other => fail(other.to_string(), None),
        })
    }

    /// ADD the attachment: each plugin in order, each given the one before's result; the
    /// last plugin's result.
    pub fn add(&self, list: &ConfList, args: &Args, hold: Hold) -> Result<Value, Error> {
        let mut prev: Option<Value> = None;
        for i in 0..list.plugins.len() {
            let stdin = plugin_stdin(list, i, prev.as_ref(), &args.capability_args, None);
            let out = self.invoke(list, i, "add", Some(args), &stdin, hold)?;
            let r = result::parse_result(&out).map_err(|reason| Error {
                plugin: list.types()[i].to_string(),
                op: "add",
                reason,
                code: None,
            })?;
            prev = Some(r);
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// DEL the attachment: each plugin in reverse order, given the ADD's result when there is
    /// one. Every plugin is run even when one fails (what the others hold is still freed);
    /// the first failure is returned.
    pub fn del(
        &self,
        list: &ConfList,
        args: &Args,
        prev: Option<&Value>,
        hold: Hold,
    ) -> Result<(), Error> {
        let mut first = None;
        for i in (0..list.plugins.len()).rev() {
            let stdin = plugin_stdin(list, i, prev, &args.capability_args, None);
            if let Err(e) = self.invoke(list, i, "delete", Some(args), &stdin, hold) {
                tracing::warn!(error = %e, container = %args.container_id, "CNI DEL");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// CHECK the attachment against the ADD's result (0.4.0 and later, unless the list has
    /// `disableCheck`); `Ok` when there is nothing to check.
    pub fn check(
        &self,
        list: &ConfList,
        args: &Args,
        prev: &Value,
        hold: Hold,
    ) -> Result<(), Error> {
        if list.disable_check || !config::has_check(&list.cni_version) {
            return Ok(());
        }
        for i in 0..list.plugins.len() {
            let stdin = plugin_stdin(list, i, Some(prev), &args.capability_args, None);
            self.invoke(list, i, "check", Some(args), &stdin, hold)?;
        }
        Ok(())
    }

    /// STATUS (1.1.0 lists only): whether every plugin can serve ADD.
    pub fn status(&self, list: &ConfList) -> Result<(), Error> {
        if !config::has_status_and_gc(&list.cni_version) {
            return Ok(());
        }
        for i in 0..list.plugins.len() {
            let stdin = plugin_stdin(list, i, None, &Map::new(), None);
            self.invoke(list, i, "status", None, &stdin, None)?;
        }
        Ok(())
    }

    /// GC (1.1.0 lists only): the plugins may free what belongs to any attachment not in
    /// `valid` (container ID, ifname). Never instead of DEL: tidelet DELs every attachment it
    /// recorded first.
    pub fn gc(&self, list: &ConfList, valid: &[(String, String)]) -> Result<(), Error> {
        if !config::has_status_and_gc(&list.cni_version) {
            return Ok(());
        }
        let attachments: Vec<Value> = valid
            .iter()
            .map(|(id, ifname)| serde_json::json!({"containerID": id, "ifname": ifname}))
            .collect();
        let mut first = None;
        for i in 0..list.plugins.len() {
            let stdin = plugin_stdin(list, i, None, &Map::new(), Some(&attachments));
            if let Err(e) = self.invoke(list, i, "gc", None, &stdin, None) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// What plugin `i` of `list` reads on stdin (pure): its own object with the list's `name` and
/// `cniVersion`, `prevResult` when given, `runtimeConfig` with the capability arguments its
/// `capabilities` ask for, and for GC the valid attachments (under both keys libcni sends).
pub fn plugin_stdin(
    list: &ConfList,
    i: usize,
    prev: Option<&Value>,
    capability_args: &Map<String, Value>,
    gc_valid: Option<&[Value]>,
) -> Vec<u8> {
    let mut p = list.plugins.get(i).cloned().unwrap_or_default();
    p.insert("name".into(), Value::String(list.name.clone()));
    p.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(prev) = prev {
        p.insert("prevResult".into(), prev.clone());
    }
    let wanted: Map<String, Value> = match p.get("capabilities") {
        Some(Value::Object(caps)) => capability_args
            .iter()
            .filter(|(k, _)| caps.get(*k) == Some(&Value::Bool(true)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        _ => Map::new(),
    };
    if !wanted.is_empty() {
        let rc = p
            .entry("runtimeConfig")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(rc) = rc {
            rc.extend(wanted);
        }
    }
    if let Some(valid) = gc_valid {
        let v = Value::Array(valid.to_vec());
        p.insert("cni.dev/valid-attachments".into(), v.clone());
        p.insert("cni.dev/attachments".into(), v);
    }
    serde_json::to_vec(&p).unwrap_or_default()
}

/// Whether `path` is a network namespace (a pinned one still mounted, or `/proc/*/ns/net`).
pub fn is_netns(path: &Path) -> bool {
    use nix::sys::statfs::{statfs, NSFS_MAGIC};
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    fn list(v: Value) -> ConfList {
        config::from_raw(&v).unwrap()
    }

    #[test]
    fn each_plugin_gets_name_version_prev_result_and_only_its_capabilities() {
        let l = list(json!({
            "cniVersion": "1.0.0", "name": "net",
            "plugins": [
                {"type": "bridge", "bridge": "b0"},
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "bandwidth", "capabilities": {"bandwidth": true, "portMappings": false},
                 "runtimeConfig": {"keep": 1}}
            ]
        }));
        let caps: Map<String, Value> = json!({
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 1000}
        })
        .as_object()
        .unwrap()
        .clone();
        let prev = json!({"ips": [{"address": "10.0.0.2/24"}]});
        let get = |i, prev: Option<&Value>| -> Value {
            serde_json::from_slice(&plugin_stdin(&l, i, prev, &caps, None)).unwrap()
        };
        let cases = [
            (
                get(0, None),
                json!({"type": "bridge", "bridge": "b0", "name": "net", "cniVersion": "1.0.0"}),
            ),
            (
                get(1, Some(&prev)),
                json!({"type": "portmap", "capabilities": {"portMappings": true}, "name": "net",
                       "cniVersion": "1.0.0", "prevResult": prev,
                       "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}}),
            ),
            (
                get(2, Some(&prev)),
                json!({"type": "bandwidth", "capabilities": {"bandwidth": true, "portMappings": false},
                       "name": "net", "cniVersion": "1.0.0", "prevResult": prev,
                       "runtimeConfig": {"keep": 1, "bandwidth": {"ingressRate": 1000}}}),
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
        let gc: Value = serde_json::from_slice(&plugin_stdin(
            &l,
            0,
            None,
            &Map::new(),
            Some(&[json!({"containerID": "c1", "ifname": "eth0"})]),
        ))
        .unwrap();
        assert_eq!(
            gc["cni.dev/valid-attachments"],
            json!([{"containerID": "c1", "ifname": "eth0"}])
        );
        assert_eq!(gc["cni.dev/attachments"], gc["cni.dev/valid-attachments"]);
    }

    /// A plugin written as a shell script: logs its command and stdin, answers from a file.
    fn fake(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn args() -> Args {
        Args {
            container_id: "c1".into(),
            netns: Some("/proc/self/ns/net".into()),
            ifname: "eth0".into(),
            cni_args: vec![("K8S_POD_NAME".into(), "web".into())],
            capability_args: Map::new(),
        }
    }

    #[test]
    fn add_chains_results_del_runs_backwards_and_failures_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let logit = format!(
            r#"in=$(cat); echo "$CNI_COMMAND $(basename $0) $CNI_CONTAINERID $CNI_IFNAME $CNI_ARGS prev=$(echo "$in" | grep -c prevResult)" >> {}"#,
            log.display()
        );
        fake(
            dir.path(),
            "one",
            &format!(
                r#"{logit}; echo '{{"cniVersion":"1.0.0","ips":[{{"address":"10.9.0.2/24"}}]}}'"#
            ),
        );
        fake(
            dir.path(),
            "two",
            &format!(
                r#"{logit}; [ "$CNI_COMMAND" = DEL ] && {{ echo '{{"code":11,"msg":"busy"}}'; exit 1; }}; echo "$in" | sed 's/.*"prevResult":\({{[^}}]*}}\]}}\).*/\1/'"#
            ),
        );
        let rt = Runtime {
            bin_dirs: vec![dir.path().join("none"), dir.path().to_path_buf()],
            timeout: Duration::from_secs(10),
        };
        let l = list(
            json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "one"}, {"type": "two"}]}),
        );
        let r = rt.add(&l, &args(), None).unwrap();
        assert_eq!(result::pod_ips(&r, "eth0"), ["10.9.0.2"]);
        let e = rt.del(&l, &args(), Some(&r), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "plugin type=\"two\" failed (delete): busy (CNI error 11)"
        );
        assert_eq!(e.code, Some(11));
        let log = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            log.lines().collect::<Vec<_>>(),
            [
                "ADD one c1 eth0 K8S_POD_NAME=web prev=0",
                "ADD two c1 eth0 K8S_POD_NAME=web prev=1",
                "DEL two c1 eth0 K8S_POD_NAME=web prev=1",
                "DEL one c1 eth0 K8S_POD_NAME=web prev=1",
            ],
            "DEL goes on after a failure, in reverse order"
        );
        let missing =
            list(json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "nope"}]}));
        assert_eq!(rt.missing(&missing), ["nope"]);
        let e = rt.add(&missing, &args(), None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("plugin type=\"nope\" failed (add): no executable \"nope\""),
            "{e}"
        );
    }

    #[test]
    fn status_and_gc_reach_plugins_of_1_1_0_lists_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        fake(
            dir.path(),
            "newer",
            &format!(
                r#"in=$(cat); echo "$CNI_COMMAND id=${{CNI_CONTAINERID:-none}} $(echo "$in" | grep -o '"cni.dev/valid-attachments":[^]]*]')" >> {}; [ "$CNI_COMMAND" = STATUS ] && [ -e {}/down ] && {{ echo '{{"code":50,"msg":"plugin not available"}}'; exit 1; }}; exit 0"#,
                log.display(),
                dir.path().display()
            ),
        );
        let rt = Runtime {
            bin_dirs: vec![dir.path().to_path_buf()],
            timeout: Duration::from_secs(10),
        };
        let v110 =
            list(json!({"cniVersion": "1.1.0", "name": "n", "plugins": [{"type": "newer"}]}));
        let v100 =
            list(json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "newer"}]}));
        rt.status(&v110).unwrap();
        rt.status(&v100).unwrap();
        rt.gc(&v110, &[("c1-ab".into(), "eth0".into())]).unwrap();
        rt.gc(&v100, &[]).unwrap();
        std::fs::write(dir.path().join("down"), "").unwrap();
        let e = rt.status(&v110).unwrap_err();
        assert_eq!((e.code, e.op), (Some(50), "status"));
        let log = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            log.lines().collect::<Vec<_>>(),
            [
                "STATUS id=none ",
                r#"GC id=none "cni.dev/valid-attachments":[{"containerID":"c1-ab","ifname":"eth0"}]"#,
                "STATUS id=none ",
            ],
            "1.0.0 lists get neither verb"
        );
    }

    #[test]
    fn garbage_and_silent_failures_are_reported_as_libcni_words_them() {
        let dir = tempfile::tempdir().unwrap();
        fake(
            dir.path(),
            "garbage",
            "cat >/dev/null; echo 'not json at all'",
        );
        fake(dir.path(), "silent", "cat >/dev/null; exit 3");
        fake(
            dir.path(),
            "chatty",
            "cat >/dev/null; echo 'stack trace' >&2; exit 2",
        );
        fake(
            dir.path(),
            "badjson",
            "cat >/dev/null; echo 'panic!'; exit 2",
        );
        let rt = Runtime {
            bin_dirs: vec![dir.path().to_path_buf()],
            timeout: Duration::from_secs(10),
        };
        for (t, want) in [
            ("garbage", "result is not JSON"),
            (
                "silent",
                "netplugin failed with no error message: exit status: 3",
            ),
            ("chatty", "netplugin failed: \"stack trace\""),
            (
                "badjson",
                "netplugin failed but error parsing its diagnostic message \"panic!\\n\"",
            ),
        ] {
            let l = list(json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": t}]}));
            let e = rt.add(&l, &args(), None).unwrap_err().to_string();
            assert!(e.contains(want), "{t}: {e}");
        }
    }
}
