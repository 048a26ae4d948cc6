//! The host side of the guest's network: a TCP service on the host's 127.0.0.1 (the only
//! address QEMU's `guestfwd` reaches with `nc 127.0.0.1 PORT`), which the guest reaches at
//! `10.0.2.100:PORT`. It stands in for what later guests will talk to (an MQTT broker).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A TCP service on the host's 127.0.0.1 for the guest to reach through `guestfwd`: it
/// answers each line with `ack LINE` and records the lines.
pub struct HostEcho {
    pub port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HostEcho {
    pub fn start() -> HostEcho {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().unwrap().port();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, st) = (lines.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut line = String::new();
                // One line per connection (the guest sends one), of at most 4 KiB.
                let mut reader = BufReader::new(std::io::Read::take(&conn, 4096));
                if reader.read_line(&mut line).is_ok() {
                    let line = line.trim_end().to_string();
                    // Recorded before the answer, so whoever got the answer finds the line.
                    l.lock().unwrap().push(line.clone());
                    let _ = (&conn).write_all(format!("ack {line}\n").as_bytes());
                }
            }
        });
        HostEcho {
            port,
            lines,
            stop,
            thread: Some(thread),
        }
    }

    /// The lines received so far, in order.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for HostEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    #[test]
    fn host_echo_answers_each_line_and_records_it() {
        let echo = HostEcho::start();
        for msg in ["hello from test", "second"] {
            let mut conn = TcpStream::connect(("127.0.0.1", echo.port)).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            conn.write_all(format!("{msg}\n").as_bytes()).unwrap();
            let mut reply = String::new();
            BufReader::new(&conn).read_line(&mut reply).unwrap();
            assert_eq!(reply, format!("ack {msg}\n"));
        }
        assert_eq!(echo.lines(), ["hello from test", "second"]);
    }
}
