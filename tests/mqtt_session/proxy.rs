//! A TCP proxy in front of the broker that records the MQTT control packets the client sends
//! (type, and the topic of a PUBLISH), so a test can say WHAT an idle session sends. MQTT
//! 3.1.1 framing: a type byte, a variable-length remaining length, and for PUBLISH a
//! length-prefixed topic first in the variable header.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub const PUBLISH: u8 = 3;
pub const PINGREQ: u8 = 12;

/// One packet from the client: its type (the high nibble of the first byte) and, for a
/// PUBLISH, its topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub kind: u8,
    pub topic: Option<String>,
}

/// What the proxy saw the client send, in order.
pub type Sent = Arc<Mutex<Vec<Packet>>>;

/// Splits the complete packets off the front of `buf`.
fn parse(buf: &mut Vec<u8>) -> Vec<Packet> {
    let mut out = Vec::new();
    loop {
        let (mut len, mut shift, mut at) = (0usize, 0, 1);
        let complete = loop {
            let Some(b) = buf.get(at) else { break false };
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            at += 1;
            if b & 0x80 == 0 {
                break true;
            }
        };
        if !complete || buf.len() < at + len {
            return out;
        }
        let kind = buf[0] >> 4;
        let topic = (kind == PUBLISH).then(|| {
            let n = usize::from(u16::from_be_bytes([buf[at], buf[at + 1]]));
            String::from_utf8_lossy(&buf[at + 2..at + 2 + n]).into_owned()
        });
        out.push(Packet { kind, topic });
        buf.drain(..at + len);
    }
}

/// Copies `r` to `w`; with `sent`, records the packets that pass.
async fn pipe(mut r: OwnedReadHalf, mut w: OwnedWriteHalf, sent: Option<Sent>) {
    let mut buf = vec![0u8; 16 << 10];
    let mut pending = Vec::new();
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 || w.write_all(&buf[..n]).await.is_err() {
            break;
        }
        if let Some(sent) = &sent {
            pending.extend_from_slice(&buf[..n]);
            sent.lock().unwrap().extend(parse(&mut pending));
        }
    }
    let _ = w.shutdown().await;
}

/// A proxy on a free loopback port to the broker on `port`: (its port, what clients sent).
pub async fn recording_proxy(port: u16) -> (u16, Sent) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = listener.local_addr().unwrap().port();
    let sent = Sent::default();
    let log = sent.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pipe(cr, sw, Some(log.clone())));
            tokio::spawn(pipe(sr, cw, None));
        }
    });
    (front, sent)
}

#[test]
fn packets_are_split_and_publish_topics_read() {
    let publish = [0x32, 7, 0, 3, b'a', b'/', b'b', 0, 1];
    let cases: &[(&[u8], Vec<Packet>, usize)] = &[
        (&[], vec![], 0),
        (&[0xc0], vec![], 1),
        (
            &[0xc0, 0],
            vec![Packet {
                kind: PINGREQ,
                topic: None,
            }],
            0,
        ),
        (&publish[..5], vec![], 5),
        (
            &[&publish[..], &[0xc0, 0, 0xe0]].concat(),
            vec![
                Packet {
                    kind: PUBLISH,
                    topic: Some("a/b".into()),
                },
                Packet {
                    kind: PINGREQ,
                    topic: None,
                },
            ],
            1,
        ),
        // A two-byte remaining length (200 = 0xc8 0x01), not yet complete.
        (&[0x30, 0xc8, 0x01, 0, 1, b'x'], vec![], 6),
    ];
    for (bytes, want, left) in cases {
        let mut buf = bytes.to_vec();
        assert_eq!(&parse(&mut buf), want, "{bytes:?}");
        assert_eq!(buf.len(), *left, "{bytes:?}");
    }
}
