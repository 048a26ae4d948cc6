//! The node's process-id signal, as kubelet computes it: `pid_max` from
//! `/proc/sys/kernel/pid_max`, and the number of kernel scheduling entities (threads, which
//! use pids too) from the total after the `/` in `/proc/loadavg`'s fourth field. The caller
//! computes `pid.available = max - running`.

use std::path::Path;

use super::{read_bounded, SignalError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PidSample {
    pub max: u64,
    pub running: u64,
}

impl PidSample {
    /// `max - running`, 0 when more are in use than the limit says (the limit was lowered).
    pub fn available(&self) -> u64 {
        self.max.saturating_sub(self.running)
    }
}

/// The value of `/proc/sys/kernel/pid_max` (a positive number and a newline).
pub fn parse_pid_max(text: &str) -> Result<u64, SignalError> {
    let v = text.trim();
    match v.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(SignalError::Malformed {
            file: "pid_max".into(),
            field: "pid_max",
            value: v.to_string(),
            reason: "not a positive number",
        }),
    }
}

/// The thread total from `/proc/loadavg` (`0.35 1.31 2.09 1/86 18260` gives 86).
pub fn parse_loadavg(text: &str) -> Result<u64, SignalError> {
    let field = text.split_whitespace().nth(3).ok_or(SignalError::Missing {
        file: "loadavg".into(),
        field: "running/total",
    })?;
    field
        .split_once('/')
        .and_then(|(_, total)| total.parse().ok())
        .ok_or_else(|| SignalError::Malformed {
            file: "loadavg".into(),
            field: "running/total",
            value: field.to_string(),
            reason: "expected `<running>/<total>`",
        })
}

/// Read both files (normally `/proc/sys/kernel/pid_max` and `/proc/loadavg`).
pub fn node_pids(pid_max: &Path, loadavg: &Path) -> Result<PidSample, SignalError> {
    let max = parse_pid_max(&read_bounded(pid_max)?).map_err(|e| e.in_file(pid_max))?;
    let running = parse_loadavg(&read_bounded(loadavg)?).map_err(|e| e.in_file(loadavg))?;
    Ok(PidSample { max, running })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pid_max() {
        let cases: &[(&str, Option<u64>)] = &[
            ("32768\n", Some(32768)),
            ("4194304", Some(4194304)),
            ("0\n", None),
            ("-1\n", None),
            ("", None),
            ("12 34\n", None),
        ];
        for (text, want) in cases {
            match (parse_pid_max(text), want) {
                (Ok(got), Some(want)) => assert_eq!(got, *want, "{text:?}"),
                (Err(e), None) => assert!(e.to_string().contains("not a positive number"), "{e}"),
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn parses_loadavg() {
        let cases: &[(&str, Result<u64, &str>)] = &[
            ("0.35 1.31 2.09 1/86 18260\n", Ok(86)),
            ("0.00 0.00 0.00 12/34567 1\n", Ok(34567)),
            ("0.35 1.31 2.09\n", Err("no \"running/total\" field")),
            ("0.35 1.31 2.09 86 18260\n", Err("value \"86\": expected")),
            ("0.35 1.31 2.09 1/x 18260\n", Err("value \"1/x\"")),
            ("", Err("no \"running/total\"")),
        ];
        for (text, want) in cases {
            match (parse_loadavg(text), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{text:?}"),
                (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{text:?}: {e}"),
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn node_pids_reads_files_and_names_them() {
        let t = tempfile::tempdir().unwrap();
        let (max, load) = (t.path().join("pid_max"), t.path().join("loadavg"));
        std::fs::write(&max, "1000\n").unwrap();
        std::fs::write(&load, "0.1 0.2 0.3 2/250 99\n").unwrap();
        let s = node_pids(&max, &load).unwrap();
        assert_eq!(
            s,
            PidSample {
                max: 1000,
                running: 250
            }
        );
        assert_eq!(s.available(), 750);
        std::fs::write(&load, "garbage\n").unwrap();
        let err = node_pids(&max, &load).unwrap_err().to_string();
        assert!(err.starts_with(&load.display().to_string()), "{err}");
        assert!(node_pids(&t.path().join("nope"), &load)
            .unwrap_err()
            .is_gone());

        let host = node_pids(
            Path::new("/proc/sys/kernel/pid_max"),
            Path::new("/proc/loadavg"),
        )
        .unwrap();
        assert!(
            host.max > 0 && host.running > 0 && host.running < host.max,
            "{host:?}"
        );
        assert_eq!(PidSample { max: 5, running: 9 }.available(), 0);
    }
}
