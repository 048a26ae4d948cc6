//! The command line: `tidelet-gpu-plugin [--device-plugin-dir DIR] [--dev-root /dev]
//! [--proc-root /proc] [--sys-root /sys] [--scan-interval SECONDS]`.

use std::path::PathBuf;
use std::time::Duration;

use tidelet_device_plugin::cli::{Flags, UsageError, ValueError};

/// The usage text, printed for `--help` and on a bad command line.
pub const USAGE: &str = "usage: tidelet-gpu-plugin [--device-plugin-dir DIR] [--dev-root /dev] [--proc-root /proc] [--sys-root /sys] [--scan-interval SECONDS]
  --device-plugin-dir  where kubelet.sock is and the plugin sockets go (default /var/lib/kubelet/device-plugins)
  --dev-root           the /dev to find GPU nodes in (default /dev)
  --proc-root          the /proc with driver/nvidia/gpus (default /proc)
  --sys-root           the /sys with class/drm (default /sys)
  --scan-interval      seconds between scans for GPUs and their health (default 5)
Logging: RUST_LOG (error, warn, info, debug, trace; default info).";

const FLAGS: &[&str] = &[
    "device-plugin-dir",
    "dev-root",
    "proc-root",
    "sys-root",
    "scan-interval",
];

/// The plugin's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    pub device_plugin_dir: PathBuf,
    pub dev_root: PathBuf,
    pub proc_root: PathBuf,
    pub sys_root: PathBuf,
    pub scan_interval: Duration,
}

/// A command line that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error(transparent)]
    Value(#[from] ValueError),
}

impl Args {
    /// Parses the arguments after the program name.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Args, ArgsError> {
        let f = Flags::parse(args, FLAGS)?;
        Ok(Args {
            device_plugin_dir: f
                .path("device-plugin-dir", tidelet_deviceplugin_api::DEFAULT_DIR)?,
            dev_root: f.path("dev-root", "/dev")?,
            proc_root: f.path("proc-root", "/proc")?,
            sys_root: f.path("sys-root", "/sys")?,
            scan_interval: f.seconds("scan-interval", Duration::from_secs(5))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, ArgsError> {
        Args::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_flags() {
        let a = parse(&[]).unwrap();
        assert_eq!(
            a.device_plugin_dir,
            PathBuf::from("/var/lib/kubelet/device-plugins")
        );
        assert_eq!(a.dev_root, PathBuf::from("/dev"));
        assert_eq!(a.proc_root, PathBuf::from("/proc"));
        assert_eq!(a.sys_root, PathBuf::from("/sys"));
        assert_eq!(a.scan_interval, Duration::from_secs(5));
        let a = parse(&[
            "--device-plugin-dir",
            "/t/dp",
            "--dev-root=/t/dev",
            "--proc-root",
            "/t/proc",
            "--sys-root",
            "/t/sys",
            "--scan-interval",
            "0.5",
        ])
        .unwrap();
        assert_eq!(a.device_plugin_dir, PathBuf::from("/t/dp"));
        assert_eq!(a.dev_root, PathBuf::from("/t/dev"));
        assert_eq!(a.proc_root, PathBuf::from("/t/proc"));
        assert_eq!(a.sys_root, PathBuf::from("/t/sys"));
        assert_eq!(a.scan_interval, Duration::from_millis(500));
    }

    #[test]
    fn bad_command_lines_are_refused() {
        let cases: &[&[&str]] = &[
            &["--config", "x"],
            &["--dev-root"],
            &["--dev-root="],
            &["--scan-interval", "0"],
            &["--scan-interval", "soon"],
            &["extra"],
        ];
        for args in cases {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }
}
