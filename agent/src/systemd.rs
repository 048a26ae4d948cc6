//! systemd's service protocol, the parts tidelet uses: `READY=1` once the agent has read its
//! sources and adopted its pods (`Type=notify`), and `WATCHDOG=1` from the agent's main loop
//! (`WatchdogSec=`), so a stuck loop gets the service restarted while the pods keep running.
//! Written against the documented datagram protocol (sd_notify(3)) rather than libsystemd, so
//! the binary has no C dependency; the socket path is a parameter for tests.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Where to send notifications: `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
/// namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notifier {
    socket: String,
}

impl Notifier {
    /// The notifier systemd set up for this process, if any.
    pub fn from_env() -> Option<Notifier> {
        let socket = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| !s.is_empty())?;
        Some(Notifier { socket })
    }

    pub fn new(socket: impl Into<String>) -> Notifier {
        Notifier {
            socket: socket.into(),
        }
    }

    /// Send one notification (`READY=1`, `WATCHDOG=1`, `STATUS=...`, newline-separated).
    /// Never blocks: the agent's main loop sends these, and a socket nobody reads (its queue
    /// holds `net.unix.max_dgram_qlen` datagrams, 10 by default) must not stall it; the send
    /// fails instead (EAGAIN), and the caller logs that.
    pub fn notify(&self, state: &str) -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        if let Some(name) = self.socket.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), PathBuf::from(&self.socket))?;
        }
        Ok(())
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3)
/// advises, when `WATCHDOG_PID` is unset or names this process (pure).
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(p) = pid {
        if p.trim().parse::<u32>().ok()? != my_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// `watchdog_interval` from this process's environment.
pub fn watchdog_from_env() -> Option<Duration> {
    watchdog_interval(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_table() {
        let cases = [
            (Some("2000000"), None, Some(1_000_000)),
            (Some("2000000"), Some("42"), Some(1_000_000)),
            (Some("2000000"), Some("43"), None),
            (Some("0"), None, None),
            (Some("x"), None, None),
            (None, Some("42"), None),
        ];
        for (usec, pid, want) in cases {
            assert_eq!(
                watchdog_interval(usec, pid, 42),
                want.map(Duration::from_micros),
                "{usec:?} {pid:?}"
            );
        }
    }

    #[test]
    fn notifications_reach_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        Notifier::new(path.to_str().unwrap())
            .notify("READY=1\nSTATUS=ok")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("tidelet-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::new(format!("@{name}"))
            .notify("WATCHDOG=1")
            .unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    /// A socket whose reader is gone or stuck: the notifications fail rather than block.
    #[test]
    fn a_full_notification_socket_fails_the_send_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let _rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str().unwrap());
        let results: Vec<_> = (0..1000).map(|_| n.notify("WATCHDOG=1")).collect();
        let refused = results.iter().filter(|r| r.is_err()).count();
        assert!(
            refused > 0,
            "every send was queued: the queue never filled?"
        );
        let e = results.into_iter().find_map(Result::err).unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
    }
}
