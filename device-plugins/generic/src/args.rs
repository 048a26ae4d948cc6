//! The command line: `tidelet-generic-plugin --config FILE [--device-plugin-dir DIR]
//! [--dev-root /dev] [--scan-interval SECONDS]`.

use std::path::PathBuf;
use std::time::Duration;

use tidelet_device_plugin::cli::{Flags, UsageError, ValueError};

/// The usage text, printed for `--help` and on a bad command line.
pub const USAGE: &str = "usage: tidelet-generic-plugin --config FILE [--device-plugin-dir DIR] [--dev-root /dev] [--scan-interval SECONDS]
  --config             YAML file of device groups (resource, paths, share, permissions)
  --device-plugin-dir  where kubelet.sock is and the plugin sockets go (default /var/lib/kubelet/device-plugins)
  --dev-root           the /dev the paths are matched under (default /dev)
  --scan-interval      seconds between full scans; a device node made or removed is seen at once
                       through inotify (default 10, or 1 where inotify cannot be had)
Logging: RUST_LOG (error, warn, info, debug, trace; default info). A bad config exits 2.";

const FLAGS: &[&str] = &["config", "device-plugin-dir", "dev-root", "scan-interval"];

/// The plugin's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    pub config: PathBuf,
    pub device_plugin_dir: PathBuf,
    pub dev_root: PathBuf,
    /// `None`: the default, which depends on inotify (see `SCAN_WATCHED`).
    pub scan_interval: Option<Duration>,
}

/// A command line that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error("--config FILE is required")]
    NoConfig,
    #[error(transparent)]
    Value(#[from] ValueError),
}

impl Args {
    /// Parses the arguments after the program name.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Args, ArgsError> {
        let f = Flags::parse(args, FLAGS)?;
        f.get("config").ok_or(ArgsError::NoConfig)?;
        Ok(Args {
            config: f.path("config", "")?,
            device_plugin_dir: f
                .path("device-plugin-dir", tidelet_deviceplugin_api::DEFAULT_DIR)?,
            dev_root: f.path("dev-root", "/dev")?,
            scan_interval: f
                .get("scan-interval")
                .is_some()
                .then(|| f.seconds("scan-interval", Duration::ZERO))
                .transpose()?,
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
    fn command_lines_by_table() {
        let a = parse(&["--config", "/etc/g.yaml"]).unwrap();
        assert_eq!(a.config, PathBuf::from("/etc/g.yaml"));
        assert_eq!(
            a.device_plugin_dir,
            PathBuf::from("/var/lib/kubelet/device-plugins")
        );
        assert_eq!(a.dev_root, PathBuf::from("/dev"));
        assert_eq!(a.scan_interval, None);
        let a = parse(&[
            "--config=c",
            "--device-plugin-dir",
            "/dp",
            "--dev-root",
            "/d",
            "--scan-interval",
            "2",
        ])
        .unwrap();
        assert_eq!(
            (a.device_plugin_dir, a.dev_root, a.scan_interval),
            (
                PathBuf::from("/dp"),
                PathBuf::from("/d"),
                Some(Duration::from_secs(2))
            )
        );
        let bad: &[&[&str]] = &[
            &[],
            &["--config"],
            &["--config="],
            &["--config", "c", "--proc-root", "/p"],
            &["--config", "c", "--scan-interval", "-1"],
        ];
        for args in bad {
            assert!(parse(args).is_err(), "{args:?}");
        }
        assert!(matches!(parse(&[]), Err(ArgsError::NoConfig)));
    }
}
