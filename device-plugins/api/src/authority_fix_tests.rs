//! The rewriter on hand-built frames; its output decoded again with loona-hpack.

use super::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SOCK: &str = "/var/lib/kubelet/device-plugins/kubelet.sock";
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const DATA: u8 = 0x0;
const WINDOW_UPDATE: u8 = 0x8;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

// HPACK representations (RFC 7541 6), strings without Huffman coding.
fn string(s: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_string(s, &mut v);
    v
}
/// Indexed Header Field (6.1); `i` < 127.
fn indexed(i: u8) -> Vec<u8> {
    vec![0x80 | i]
}
/// Literal with Incremental Indexing, new name (6.2.1).
fn add(name: &str, value: &[u8]) -> Vec<u8> {
    [vec![0x40], string(name.as_bytes()), string(value)].concat()
}
/// Literal with Incremental Indexing, indexed name (6.2.1); `i` < 63.
fn add_named(i: u8, value: &[u8]) -> Vec<u8> {
    [vec![0x40 | i], string(value)].concat()
}
/// Literal without Indexing, indexed name (6.2.2); `i` < 15.
fn plain_named(i: u8, value: &[u8]) -> Vec<u8> {
    [vec![i], string(value)].concat()
}
/// Static table indexes (Appendix A).
const AUTHORITY: u8 = 1;
const POST: u8 = 3;
const PATH: u8 = 4;
const HTTP: u8 = 6;

/// A gRPC request's block as a C-core client starts a connection: everything indexed, so the
/// second request can refer to it. `authority`: `None` for none.
fn first_block(authority: Option<&[u8]>) -> Vec<u8> {
    let mut b = [
        indexed(POST),
        indexed(HTTP),
        add_named(PATH, b"/v1beta1.Registration/Register"),
    ]
    .concat();
    if let Some(a) = authority {
        b.extend(add_named(AUTHORITY, a));
    }
    b.extend(add("content-type", b"application/grpc"));
    b.extend(add("te", b"trailers"));
    b
}

type Fields = Vec<(String, String)>;

fn fields(list: &[(&str, &str)]) -> Fields {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// The rewriter's output for `input` fed at once, and its error.
fn run(input: &[u8]) -> (Vec<u8>, Result<(), Error>) {
    let mut r = Rewriter::default();
    r.push(input);
    let mut out = Vec::new();
    loop {
        let res = r.process();
        let o = r.output().split();
        out.extend_from_slice(&o);
        if res.is_err() || o.is_empty() {
            return (out, res);
        }
    }
}

/// The frames of `out` after the preface: (type, flags, stream, payload).
fn frames(out: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    assert_eq!(&out[..PREFACE_LEN], PREFACE);
    let mut rest = &out[PREFACE_LEN..];
    let mut v = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        assert!(len <= MAX_FRAME, "a frame of {len} bytes sent on");
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
        v.push((rest[3], rest[4], stream, rest[9..9 + len].to_vec()));
        rest = &rest[9 + len..];
    }
    v
}

/// The header blocks of `out`, each decoded, with its stream: what h2 would see. Also checks
/// that no block uses HPACK indexing (h2's table must stay empty).
fn blocks(out: &[u8]) -> Vec<(u32, Fields)> {
    let mut d = loona_hpack::Decoder::new();
    let mut v = Vec::new();
    let mut block: Option<(u32, Vec<u8>)> = None;
    for (kind, flags, stream, payload) in frames(out) {
        match kind {
            HEADERS => {
                assert!(block.is_none());
                let skip = if flags & PRIORITY != 0 { 5 } else { 0 };
                assert_eq!(flags & PADDED, 0);
                block = Some((stream, payload[skip..].to_vec()));
            }
            CONTINUATION => block.as_mut().unwrap().1.extend_from_slice(&payload),
            _ => continue,
        }
        if flags & END_HEADERS != 0 {
            let (stream, b) = block.take().unwrap();
            let f = d.decode(&b).unwrap();
            v.push((
                stream,
                f.into_iter()
                    .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
                    .collect(),
            ));
        }
    }
    assert!(block.is_none(), "an unfinished header block");
    v
}

fn request(authority: Option<&str>) -> Fields {
    let mut f = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/v1beta1.Registration/Register"),
    ];
    if let Some(a) = authority {
        f.push((":authority", a));
    }
    f.extend([("content-type", "application/grpc"), ("te", "trailers")]);
    fields(&f)
}

#[test]
fn authorities_h2_refuses_become_localhost() {
    // (sent, what h2 gets)
    let cases: &[(Option<&str>, Option<&str>)] = &[
        (Some(SOCK), Some("localhost")),
        (Some("unix:/tmp/dp/kubelet.sock"), Some("localhost")),
        (Some("/tmp/a%20b/kubelet.sock"), Some("localhost")),
        // grpcio's default for `unix:///var/lib/...`.
        (
            Some("var%2Flib%2Fkubelet%2Fdevice-plugins%2Fkubelet.sock"),
            Some("localhost"),
        ),
        (
            Some("%2Fvar%2Flib%2Fkubelet%2Fdevice-plugins%2Fkubelet.sock"),
            Some("localhost"),
        ),
        (Some(""), Some("localhost")),
        (Some("localhost"), Some("localhost")),
        (Some("tidelet:1234"), Some("tidelet:1234")),
        (None, None),
    ];
    for (sent, want) in cases {
        let (out, res) = run(&[
            PREFACE,
            &frame(
                HEADERS,
                END_HEADERS,
                1,
                &first_block(sent.map(str::as_bytes)),
            ),
        ]
        .concat());
        res.unwrap();
        // What `http` says is what the rewriter went by.
        if let (Some(s), Some(w)) = (sent, want) {
            assert_eq!(valid_authority(s.as_bytes()), s == w, "{s:?}");
        }
        assert_eq!(blocks(&out), vec![(1, request(*want))], "{sent:?}");
    }
}

#[test]
fn the_clients_dynamic_table_carries_over_between_requests() {
    // Dynamic table after the first block, newest first: te (62), content-type (63),
    // :authority (64), :path (65).
    let second = [
        indexed(POST),
        indexed(HTTP),
        indexed(65),
        indexed(64),
        indexed(63),
        indexed(62),
        // Without indexing: not added to the table.
        plain_named(PATH, b"/ignored"),
    ]
    .concat();
    let third = [indexed(62), indexed(64)].concat();
    let (out, res) = run(&[
        PREFACE,
        &frame(HEADERS, END_HEADERS, 1, &first_block(Some(SOCK.as_bytes()))),
        &frame(HEADERS, END_HEADERS, 3, &second),
        &frame(HEADERS, END_HEADERS | END_STREAM, 5, &third),
    ]
    .concat());
    res.unwrap();
    let mut second_want = request(Some("localhost"));
    second_want.push((":path".into(), "/ignored".into()));
    assert_eq!(
        blocks(&out),
        vec![
            (1, request(Some("localhost"))),
            (3, second_want),
            (
                5,
                fields(&[("te", "trailers"), (":authority", "localhost")])
            ),
        ]
    );
}

#[test]
fn a_block_over_continuation_frames_is_joined_and_split_again() {
    let big = "x".repeat(20_000);
    let mut block = first_block(Some(b""));
    block.extend(add("x-big", big.as_bytes()));
    let (a, rest) = block.split_at(10);
    let (b, c) = rest.split_at(16_000);
    let (out, res) = run(&[
        PREFACE,
        &frame(HEADERS, END_STREAM, 1, a),
        &frame(CONTINUATION, 0, 1, b),
        &frame(CONTINUATION, END_HEADERS, 1, c),
    ]
    .concat());
    res.unwrap();
    let kinds: Vec<(u8, u8)> = frames(&out).iter().map(|f| (f.0, f.1)).collect();
    // Full frames of the largest size h2 takes, END_STREAM kept on the HEADERS frame.
    assert_eq!(kinds, [(HEADERS, END_STREAM), (CONTINUATION, END_HEADERS)]);
    let mut want = request(Some("localhost"));
    want.push(("x-big".into(), big));
    assert_eq!(blocks(&out), vec![(1, want)]);
}

#[test]
fn padding_is_dropped_and_priority_kept() {
    let prio = [0x80, 0, 0, 0, 200];
    let cases: &[(u8, &str)] = &[
        (PADDED, "padded"),
        (PRIORITY, "priority"),
        (PADDED | PRIORITY, "both"),
        (0, "neither"),
    ];
    for &(flags, what) in cases {
        let mut payload = Vec::new();
        if flags & PADDED != 0 {
            payload.push(7);
        }
        if flags & PRIORITY != 0 {
            payload.extend_from_slice(&prio);
        }
        payload.extend(first_block(Some(SOCK.as_bytes())));
        if flags & PADDED != 0 {
            payload.extend([0; 7]);
        }
        let (out, res) = run(&[
            PREFACE,
            &frame(HEADERS, flags | END_HEADERS | END_STREAM, 7, &payload),
        ]
        .concat());
        res.unwrap();
        let f = frames(&out);
        assert_eq!(f.len(), 1, "{what}");
        assert_eq!(
            f[0].1,
            (flags & PRIORITY) | END_HEADERS | END_STREAM,
            "{what}"
        );
        if flags & PRIORITY != 0 {
            assert_eq!(f[0].3[..5], prio, "{what}");
        }
        assert_eq!(
            blocks(&out),
            vec![(7, request(Some("localhost")))],
            "{what}"
        );
    }
}

#[test]
fn other_frames_pass_byte_for_byte() {
    let input = [
        PREFACE,
        &frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff, 0, 2, 0, 0, 0, 0]),
        &frame(SETTINGS, 1, 0, &[]),
        &frame(PING, 0, 0, b"12345678"),
        &frame(WINDOW_UPDATE, 0, 0, &[0, 1, 0, 0]),
        &frame(DATA, 0, 1, b"\0\0\0\0\x05hello"),
        &frame(DATA, PADDED | END_STREAM, 1, b"\x02ab\0\0"),
        // A PRIORITY frame, an unknown type, a stray CONTINUATION: h2's to judge.
        &frame(0x2, 0, 3, &[0, 0, 0, 1, 16]),
        &frame(0xfa, 0xff, 9, b"?"),
        &frame(CONTINUATION, END_HEADERS, 11, b"\x82"),
    ]
    .concat();
    let (out, res) = run(&input);
    res.unwrap();
    assert_eq!(out, input);
    // Fed a byte at a time, the same.
    assert_eq!(bytewise(&input), input);
}

#[test]
fn headers_fed_a_byte_at_a_time_come_out_whole() {
    let input = [
        PREFACE,
        &frame(HEADERS, END_HEADERS, 1, &first_block(Some(SOCK.as_bytes()))),
        &frame(PING, 0, 0, b"abcdefgh"),
    ]
    .concat();
    let out = bytewise(&input);
    assert_eq!(blocks(&out), vec![(1, request(Some("localhost")))]);
    assert_eq!(
        frames(&out).last().unwrap(),
        &(PING, 0, 0, b"abcdefgh".to_vec())
    );
}

#[test]
fn oversized_and_malformed_input_is_refused() {
    // A header of 4,000 bytes in the table, referred to by one byte 300 times: 1.2 MB decoded.
    let mut bomb = add("x-bomb", &[b'b'; 4_000]);
    bomb.extend(std::iter::repeat_n(0x80 | 62, 300));
    let huge = [0u8; MAX_FRAME];
    let mut over_block = vec![frame(HEADERS, 0, 1, &[0x82])];
    for _ in 0..=MAX_BLOCK / MAX_FRAME {
        over_block.push(frame(CONTINUATION, 0, 1, &huge));
    }
    let cases: Vec<(&str, Vec<u8>, Error)> = vec![
        (
            "a DATA frame over the frame size",
            frame(DATA, 0, 1, &[0; MAX_FRAME + 1]),
            Error::FrameTooLarge { len: MAX_FRAME + 1 },
        ),
        (
            "a HEADERS frame over the frame size",
            frame(HEADERS, END_HEADERS, 1, &[0; MAX_FRAME + 1]),
            Error::FrameTooLarge { len: MAX_FRAME + 1 },
        ),
        (
            "a block over MAX_BLOCK in CONTINUATIONs",
            over_block.concat(),
            Error::BlockTooLarge { stream: 1 },
        ),
        (
            "a block over MAX_BLOCK once decoded",
            [
                frame(HEADERS, 0, 1, &bomb[..2_000]),
                frame(CONTINUATION, END_HEADERS, 1, &bomb[2_000..]),
            ]
            .concat(),
            Error::BlockTooLarge { stream: 1 },
        ),
        (
            "a DATA frame inside a header block",
            [frame(HEADERS, 0, 1, &[0x82]), frame(DATA, 0, 1, b"x")].concat(),
            Error::Interleaved {
                kind: DATA,
                stream: 1,
                block: 1,
            },
        ),
        (
            "a CONTINUATION of another stream",
            [
                frame(HEADERS, 0, 1, &[0x82]),
                frame(CONTINUATION, END_HEADERS, 3, &[0x84]),
            ]
            .concat(),
            Error::Interleaved {
                kind: CONTINUATION,
                stream: 3,
                block: 1,
            },
        ),
        (
            "padding longer than the frame",
            frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 0x82]),
            Error::MalformedHeaders { stream: 1 },
        ),
        (
            "a HEADERS frame short of its priority",
            frame(HEADERS, END_HEADERS | PRIORITY, 1, &[0, 0]),
            Error::MalformedHeaders { stream: 1 },
        ),
        (
            "an index past the table",
            frame(HEADERS, END_HEADERS, 1, &[0x80 | 70]),
            Error::Hpack {
                stream: 1,
                reason: "Header index out of bounds".into(),
            },
        ),
        (
            "a table size over SETTINGS_HEADER_TABLE_SIZE",
            // Size update to 8192 (5-bit prefix: 31 + 8161), then :method POST.
            frame(HEADERS, END_HEADERS, 1, &[0x3f, 0xe2, 0x3f, 0x83]),
            Error::Hpack {
                stream: 1,
                reason: "Dynamic table size exceeds the maximum size".into(),
            },
        ),
    ];
    for (what, input, want) in cases {
        let (_, res) = run(&[PREFACE, &input].concat());
        assert_eq!(res, Err(want), "{what}");
    }
}

#[test]
fn the_output_waiting_for_h2_is_bounded() {
    let ping = frame(PING, 0, 0, b"12345678");
    let mut r = Rewriter::default();
    r.push(PREFACE);
    for _ in 0..10_000 {
        r.push(&ping);
    }
    r.process().unwrap();
    let first = r.output().split();
    assert!(first.len() < OUT_HIGH_WATER + ping.len(), "{}", first.len());
    let mut total = first.len();
    loop {
        r.process().unwrap();
        let o = r.output().split();
        if o.is_empty() {
            break;
        }
        total += o.len();
    }
    assert_eq!(total, PREFACE_LEN + 10_000 * ping.len());
}

#[test]
fn string_lengths_use_prefix_integers() {
    assert_eq!(string(&[b'a'; 126])[..1], [126]);
    assert_eq!(string(&[b'a'; 127])[..2], [127, 0]);
    assert_eq!(string(&[b'a'; 300])[..3], [127, 173, 1]);
}

/// The adapter on a real socket pair: what a client writes arrives rewritten; what the server
/// writes arrives as it is.
#[tokio::test]
async fn the_adapter_rewrites_reads_and_passes_writes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (client, server) = tokio::net::UnixStream::pair().unwrap();
    let mut server = AuthorityFix::new(server);
    let (mut cr, mut cw) = client.into_split();
    let input = [
        PREFACE,
        &frame(HEADERS, END_HEADERS, 1, &first_block(Some(SOCK.as_bytes()))),
    ]
    .concat();
    cw.write_all(&input).await.unwrap();
    drop(cw);
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    assert_eq!(blocks(&got), vec![(1, request(Some("localhost")))]);
    server.write_all(b"\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let mut back = [0; 9];
    cr.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"\0\0\0\x04\0\0\0\0\0");
}

/// What the rewriter makes of `input` fed to it one byte at a time.
fn bytewise(input: &[u8]) -> Vec<u8> {
    let mut r = Rewriter::default();
    let mut out = Vec::new();
    for b in input {
        r.push(&[*b]);
        r.process().unwrap();
        out.extend_from_slice(&r.output().split());
    }
    out
}
