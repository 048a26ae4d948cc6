//! The guest machine: what differs between architectures (QEMU binary, machine, console
//! device, the name `build-initramfs.sh` knows), building the kernel and initramfs, and booting
//! them under TCG with a hard timeout while the console goes to a log file.
//!
//! A boot may give the guest a network that reaches only the host's loopback (`Options::
//! host_ports`): QEMU's user network with `restrict=on` (no route out) and one `guestfwd` per
//! port that turns each guest connection to `10.0.2.100:PORT` into `nc 127.0.0.1 PORT` on the
//! host (the `cmd:` form serves many connections, the `tcp:` form one). The guest learns each
//! PORT from `tidelet.NAME=PORT` on its kernel command line (`tidelet.hostport=` for the echo
//! exchange, `tidelet.mqttport=` for the MQTT broker).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Everything architecture-specific about a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arch {
    /// `uname -m` in the guest, and the ARCH argument of `build-initramfs.sh`.
    pub name: &'static str,
    pub qemu: &'static str,
    /// Machine and CPU arguments (never `-cpu host`: there is no KVM).
    pub machine: &'static [&'static str],
    /// The serial console device on the kernel command line.
    pub console: &'static str,
    /// The Debian package that holds `qemu`.
    pub qemu_package: &'static str,
}

pub const X86_64: Arch = Arch {
    name: "x86_64",
    qemu: "qemu-system-x86_64",
    machine: &["-M", "pc"],
    console: "ttyS0",
    qemu_package: "qemu-system-x86",
};

pub const AARCH64: Arch = Arch {
    name: "aarch64",
    qemu: "qemu-system-aarch64",
    machine: &["-M", "virt", "-cpu", "cortex-a72"],
    console: "ttyAMA0",
    qemu_package: "qemu-system-arm",
};

impl Arch {
    pub fn by_name(name: &str) -> Option<Arch> {
        [X86_64, AARCH64].into_iter().find(|a| a.name == name)
    }

    /// The full QEMU command line (TCG, no display, no reboot: a guest panic ends QEMU).
    pub fn qemu_args(&self, kernel: &Path, initrd: &Path, memory_mb: u32) -> Vec<String> {
        self.qemu_args_with(
            kernel,
            initrd,
            &Options {
                memory_mb,
                host_ports: Vec::new(),
            },
        )
    }

    /// `qemu_args` with every boot option.
    pub fn qemu_args_with(&self, kernel: &Path, initrd: &Path, opts: &Options) -> Vec<String> {
        let mut append = format!("console={} panic=-1 quiet loglevel=3", self.console);
        for p in &opts.host_ports {
            append.push_str(&format!(" tidelet.{}={}", p.name, p.port));
        }
        let mut a: Vec<String> = vec!["-accel".into(), "tcg".into()];
        a.extend(self.machine.iter().map(|s| s.to_string()));
        a.extend(
            [
                "-m",
                &opts.memory_mb.to_string(),
                "-smp",
                "1",
                "-nographic",
                "-no-reboot",
            ]
            .map(String::from),
        );
        a.extend(net_args(&opts.host_ports));
        a.extend(
            [
                "-kernel",
                &kernel.display().to_string(),
                "-initrd",
                &initrd.display().to_string(),
                "-append",
                // loglevel=3 keeps the kernel's OOM-kill lines (KERN_ERR) out of the markers.
                &append,
            ]
            .map(String::from),
        );
        a
    }
}

/// How to boot a guest, beyond its architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Guest RAM (`-m`).
    pub memory_mb: u32,
    /// If not empty, give the guest a NIC on QEMU's restricted user network whose
    /// `10.0.2.100:PORT` is the host's `127.0.0.1:PORT` for each of these ports (through `nc`,
    /// which must be on the host's PATH).
    pub host_ports: Vec<HostPort>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            memory_mb: 512,
            host_ports: Vec::new(),
        }
    }
}

/// A host loopback port the guest reaches at `10.0.2.100:port`, named to the guest by
/// `tidelet.<name>=<port>` on its kernel command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPort {
    /// The kernel command-line key after `tidelet.` (`hostport`, `mqttport`).
    pub name: &'static str,
    pub port: u16,
}

/// The guest's address for the host's loopback port (`guestfwd`).
pub const HOST_FWD_ADDR: &str = "10.0.2.100";

/// QEMU's network arguments: none at all (no ports), or a virtio NIC (PCI on both machines;
/// no option ROM, the kernel is booted directly) on a user network with no route out
/// (`restrict=on`) and one forward to the host's loopback per port (`guestfwd` repeated).
pub fn net_args(host_ports: &[HostPort]) -> Vec<String> {
    if host_ports.is_empty() {
        return vec!["-nic".into(), "none".into()];
    }
    let mut netdev = "user,id=net0,restrict=on".to_string();
    for HostPort { port, .. } in host_ports {
        netdev.push_str(&format!(
            ",guestfwd=tcp:{HOST_FWD_ADDR}:{port}-cmd:nc 127.0.0.1 {port}"
        ));
    }
    vec![
        "-netdev".into(),
        netdev,
        "-device".into(),
        "virtio-net-pci,netdev=net0,romfile=".into(),
    ]
}

/// Run `tests/vm/build-initramfs.sh OUTDIR ARCH` (cached) with these binaries of the agent and
/// the generic device plugin; returns (kernel, initramfs).
pub fn build(
    script: &Path,
    outdir: &Path,
    arch: &Arch,
    tidelet: &Path,
    plugin: &Path,
) -> (PathBuf, PathBuf) {
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .arg(outdir)
        .arg(arch.name)
        .env("TIDELET_BIN", tidelet)
        .env("TIDELET_PLUGIN_BIN", plugin);
    match build_outputs(&mut cmd, &["kernel", "initramfs"]).as_slice() {
        [k, i] => (k.clone(), i.clone()),
        _ => unreachable!("build_outputs returns one path per name"),
    }
}

/// Run a guest's build script (its stderr shown as it goes) and return the paths it prints on
/// stdout, one line each, in the order `names` lists them; panics unless it succeeds and
/// every path exists.
pub fn build_outputs(cmd: &mut Command, names: &[&str]) -> Vec<PathBuf> {
    let what = format!("{cmd:?}");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(out.status.success(), "{what} failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let paths: Vec<PathBuf> = text.lines().take(names.len()).map(PathBuf::from).collect();
    if paths.len() < names.len() || !paths.iter().all(|p| p.exists()) {
        panic!("{what} printed no {} paths: {text:?}", names.join(", "));
    }
    paths
}

/// How a boot ended.
#[derive(Debug)]
pub struct Boot {
    pub console: String,
    pub elapsed: Duration,
    /// QEMU was killed at the timeout.
    pub timed_out: bool,
    pub status: Option<std::process::ExitStatus>,
}

/// Boot the guest with these options; its console (QEMU's stdout and stderr) goes to `log`.
pub fn boot_with(
    arch: &Arch,
    kernel: &Path,
    initrd: &Path,
    log: &Path,
    timeout: Duration,
    opts: &Options,
) -> Boot {
    if !opts.host_ports.is_empty() {
        assert!(
            on_path("nc"),
            "nc not found: the guest's forward to the host's loopback runs `nc 127.0.0.1 PORT` \
             (install netcat-openbsd)"
        );
    }
    let args = arch.qemu_args_with(kernel, initrd, opts);
    run(arch, &args, log, timeout)
}

/// Run QEMU with `args` until it exits or `timeout` passes (then it is killed); its console
/// (stdout and stderr) goes to `log`.
pub fn run(arch: &Arch, args: &[String], log: &Path, timeout: Duration) -> Boot {
    let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    eprintln!("vm: {} {}", arch.qemu, args.join(" "));
    let start = Instant::now();
    let mut child = Command::new(arch.qemu)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "starting {}: {e} (install {}; scripts/test.sh does)",
                arch.qemu, arch.qemu_package
            )
        });
    let (status, timed_out) = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break (Some(s), false);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let console = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
    Boot {
        console,
        elapsed: start.elapsed(),
        timed_out,
        status,
    }
}

/// Whether `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_table() {
        let cases = [
            ("x86_64", Some(("qemu-system-x86_64", "ttyS0"))),
            ("aarch64", Some(("qemu-system-aarch64", "ttyAMA0"))),
            ("riscv64", None),
        ];
        for (name, want) in cases {
            let got = Arch::by_name(name).map(|a| (a.qemu, a.console));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn qemu_args_are_tcg_with_the_arch_console() {
        let a = AARCH64.qemu_args(Path::new("/k"), Path::new("/i"), 512);
        let s = a.join(" ");
        assert!(
            s.starts_with("-accel tcg -M virt -cpu cortex-a72 -m 512"),
            "{s}"
        );
        assert!(s.contains("-kernel /k -initrd /i"), "{s}");
        assert!(
            s.ends_with("console=ttyAMA0 panic=-1 quiet loglevel=3"),
            "{s}"
        );
        assert!(!s.contains("host") && !s.contains("kvm"), "{s}");
        assert!(s.contains("-nic none"), "{s}");
    }

    #[test]
    fn net_args_table() {
        let echo = HostPort {
            name: "hostport",
            port: 18830,
        };
        let mqtt = HostPort {
            name: "mqttport",
            port: 41883,
        };
        // (host ports, expected arguments joined by spaces)
        let cases: [(&[HostPort], &str); 3] = [
            (&[], "-nic none"),
            (
                &[echo],
                "-netdev user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:18830-cmd:nc 127.0.0.1 \
                 18830 -device virtio-net-pci,netdev=net0,romfile=",
            ),
            (
                &[echo, mqtt],
                "-netdev user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:18830-cmd:nc 127.0.0.1 \
                 18830,guestfwd=tcp:10.0.2.100:41883-cmd:nc 127.0.0.1 41883 \
                 -device virtio-net-pci,netdev=net0,romfile=",
            ),
        ];
        for (ports, want) in cases {
            assert_eq!(net_args(ports).join(" "), want, "{ports:?}");
        }
    }

    #[test]
    fn host_ports_reach_the_kernel_command_line() {
        let opts = Options {
            memory_mb: 256,
            host_ports: vec![
                HostPort {
                    name: "hostport",
                    port: 4242,
                },
                HostPort {
                    name: "mqttport",
                    port: 1883,
                },
            ],
        };
        let a = AARCH64.qemu_args_with(Path::new("/k"), Path::new("/i"), &opts);
        let s = a.join(" ");
        assert!(s.contains("-m 256 "), "{s}");
        assert!(s.contains("restrict=on"), "{s}");
        assert!(!s.contains("-nic none"), "{s}");
        assert_eq!(
            a.last().unwrap(),
            "console=ttyAMA0 panic=-1 quiet loglevel=3 tidelet.hostport=4242 tidelet.mqttport=1883"
        );
    }
}
