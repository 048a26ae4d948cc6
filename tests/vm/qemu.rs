//! The guest machine: what differs between architectures (QEMU binary, machine, console
//! device, the name `build-initramfs.sh` knows), building the kernel and initramfs, and booting
//! them under TCG with a hard timeout while the console goes to a log file.

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

    /// The guest architecture: `$TIDELET_VM_ARCH`, else the host's.
    pub fn selected() -> Arch {
        let name =
            std::env::var("TIDELET_VM_ARCH").unwrap_or_else(|_| std::env::consts::ARCH.to_string());
        Arch::by_name(&name)
            .unwrap_or_else(|| panic!("TIDELET_VM_ARCH={name}: not x86_64 or aarch64"))
    }

    /// The full QEMU command line (TCG, no display, no reboot: a guest panic ends QEMU).
    pub fn qemu_args(&self, kernel: &Path, initrd: &Path, memory_mb: u32) -> Vec<String> {
        let mut a: Vec<String> = vec!["-accel".into(), "tcg".into()];
        a.extend(self.machine.iter().map(|s| s.to_string()));
        a.extend(
            [
                "-m",
                &memory_mb.to_string(),
                "-smp",
                "1",
                "-nographic",
                "-no-reboot",
                // No network in the guest (and no iPXE option ROM to load).
                "-nic",
                "none",
                "-kernel",
                &kernel.display().to_string(),
                "-initrd",
                &initrd.display().to_string(),
                "-append",
                // loglevel=3 keeps the kernel's OOM-kill lines (KERN_ERR) out of the markers.
                &format!("console={} panic=-1 quiet loglevel=3", self.console),
            ]
            .map(String::from),
        );
        a
    }
}

/// Run `tests/vm/build-initramfs.sh OUTDIR ARCH` (cached); returns (kernel, initramfs).
pub fn build(script: &Path, outdir: &Path, arch: &Arch, tidelet: &Path) -> (PathBuf, PathBuf) {
    let out = Command::new("bash")
        .arg(script)
        .arg(outdir)
        .arg(arch.name)
        .env("TIDELET_BIN", tidelet)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} {} {} failed: {}",
        script.display(),
        outdir.display(),
        arch.name,
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(PathBuf::from);
    match (lines.next(), lines.next()) {
        (Some(k), Some(i)) if k.exists() && i.exists() => (k, i),
        _ => panic!(
            "{} printed no kernel and initramfs paths: {text:?}",
            script.display()
        ),
    }
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

/// Boot the guest; its console (QEMU's stdout and stderr) goes to `log`.
pub fn boot(arch: &Arch, kernel: &Path, initrd: &Path, log: &Path, timeout: Duration) -> Boot {
    let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let args = arch.qemu_args(kernel, initrd, 512);
    eprintln!("vm: {} {}", arch.qemu, args.join(" "));
    let start = Instant::now();
    let mut child = Command::new(arch.qemu)
        .args(&args)
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
    }
}
