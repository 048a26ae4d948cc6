//! [`AuthorityFix`]: a byte-stream adapter for the *server* side of an HTTP/2 connection over
//! a unix socket, so that gRPC clients which send a unix socket's path as `:authority` can talk
//! to a tonic server.
//!
//! gRPC C-core clients (grpcio for Python >= 1.57, and others) send the socket's path
//! (`/var/lib/kubelet/device-plugins/kubelet.sock`, raw or percent-encoded) as `:authority`;
//! some send it empty. h2 parses `:authority` with `http::uri::Authority` and resets the stream
//! with PROTOCOL_ERROR when that fails (h2 0.4 `src/server.rs`, `Peer::convert_poll_message`,
//! "malformed authority"), before tonic sees the request. h2 has no option to accept such
//! values (hyperium/h2#487, the pull request that would, is still open), and its HPACK codec
//! is private.
//!
//! So this adapter sits between the accepted socket and h2. It parses the client-to-server
//! frames, HPACK-decodes every header block (HEADERS + CONTINUATION) with the client's dynamic
//! table, replaces an `:authority` that `http` rejects (the empty one included) with
//! `localhost`, and re-encodes *every* block as "literal without indexing" fields. h2's own
//! HPACK table thus stays empty and can never disagree with the client's, which is why every
//! block is re-encoded and not only the bad ones. All other frames, and the whole
//! server-to-client direction, pass through byte for byte.
//!
//! The parsing is [`Rewriter`], free of I/O; [`AuthorityFix`] only moves bytes through it.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface, `PRI * HTTP/2.0...` (RFC 9113 3.4).
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame the client may send us, and the largest we send on to h2: the server's
/// SETTINGS_MAX_FRAME_SIZE. tonic leaves it at hyper's default, 16 KiB (hyper
/// `src/proto/h2/server.rs` `DEFAULT_MAX_FRAME_SIZE`, the same as h2's and the protocol's
/// floor) unless `Server::max_frame_size` is set, which tidelet never does. The adapter cannot
/// see the server's SETTINGS, so it holds to that default; a larger frame is a protocol error
/// h2 would answer with FRAME_SIZE_ERROR anyway.
pub const MAX_FRAME: usize = 16_384;
/// The largest header block (HEADERS + CONTINUATIONs, encoded or decoded) taken: a larger one
/// closes the connection. hyper's server already refuses header lists over 16 KiB (its
/// SETTINGS_MAX_HEADER_LIST_SIZE), so no legitimate request comes near this; it bounds what
/// one connection can make us buffer.
pub const MAX_BLOCK: usize = 1 << 20;
/// The client's HPACK table may not grow past h2's SETTINGS_HEADER_TABLE_SIZE, 4 KiB (h2
/// `src/frame/settings.rs` `DEFAULT_SETTINGS_HEADER_TABLE_SIZE`; hyper keeps it).
const HPACK_TABLE_SIZE: usize = 4_096;
/// The most bytes read from the socket at once.
const READ_CHUNK: usize = 16 * 1024;
/// Frames are rewritten only while less than this waits for h2: with one block's worth on
/// top, the output buffer stays under `OUT_HIGH_WATER + MAX_BLOCK` plus frame headers.
const OUT_HIGH_WATER: usize = 64 * 1024;
/// What replaces an `:authority` that is not a valid URI authority.
const REPLACEMENT: &[u8] = b"localhost";

/// Why a connection was closed: each is a protocol error h2 would close it for too, or a
/// bound of ours.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A frame over the server's SETTINGS_MAX_FRAME_SIZE.
    #[error("a frame of {len} bytes, over the {MAX_FRAME} bytes the server accepts")]
    FrameTooLarge { len: usize },
    /// A header block over [`MAX_BLOCK`].
    #[error("a header block on stream {stream} over {MAX_BLOCK} bytes")]
    BlockTooLarge { stream: u32 },
    /// A frame other than CONTINUATION of the same stream inside a header block.
    #[error(
        "a frame of type {kind:#x} on stream {stream} inside the header block of stream {block}"
    )]
    Interleaved { kind: u8, stream: u32, block: u32 },
    /// A HEADERS frame too short for its padding or priority fields.
    #[error("a malformed HEADERS frame on stream {stream}")]
    MalformedHeaders { stream: u32 },
    /// A header block HPACK cannot decode.
    #[error("an undecodable header block on stream {stream}: {reason}")]
    Hpack { stream: u32, reason: String },
}

/// A header block whose CONTINUATION frames are still to come.
struct Pending {
    stream: u32,
    /// The HEADERS frame's flags.
    flags: u8,
    /// The HEADERS frame's priority fields, when its PRIORITY flag is set.
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

/// The client-to-server byte stream, rewritten: feed it with [`Rewriter::push`], run
/// [`Rewriter::process`], take [`Rewriter::output`]. No I/O.
pub struct Rewriter {
    /// Bytes from the client not processed yet: less than one frame plus one read.
    raw: BytesMut,
    /// Rewritten bytes for h2.
    out: BytesMut,
    preface_left: usize,
    pending: Option<Pending>,
    decoder: loona_hpack::Decoder<'static>,
}

impl Default for Rewriter {
    fn default() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_SIZE);
        Rewriter {
            raw: BytesMut::new(),
            out: BytesMut::new(),
            preface_left: PREFACE_LEN,
            pending: None,
            decoder,
        }
    }
}

impl Rewriter {
    /// Bytes read from the client.
    pub fn push(&mut self, bytes: &[u8]) {
        self.raw.extend_from_slice(bytes);
    }

    /// What is ready for h2.
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// The unprocessed input, handed over as it is (at the client's EOF: h2 reports the
    /// truncated frame).
    pub fn flush_raw(&mut self) {
        let raw = self.raw.split();
        self.out.extend_from_slice(&raw);
    }

    /// Rewrites the complete frames of the input into the output, while the output is short.
    pub fn process(&mut self) -> Result<(), Error> {
        if self.preface_left > 0 {
            let n = self.preface_left.min(self.raw.len());
            self.out.extend_from_slice(&self.raw.split_to(n));
            self.preface_left -= n;
            if self.preface_left > 0 {
                return Ok(());
            }
        }
        while self.raw.len() >= FRAME_HEADER_LEN && self.out.len() < OUT_HIGH_WATER {
            let len = u32::from_be_bytes([0, self.raw[0], self.raw[1], self.raw[2]]) as usize;
            if len > MAX_FRAME {
                return Err(Error::FrameTooLarge { len });
            }
            if self.raw.len() < FRAME_HEADER_LEN + len {
                break;
            }
            let kind = self.raw[3];
            let flags = self.raw[4];
            let stream = u32::from_be_bytes([self.raw[5], self.raw[6], self.raw[7], self.raw[8]])
                & 0x7fff_ffff;
            let frame = self.raw.split_to(FRAME_HEADER_LEN + len);
            let payload = &frame[FRAME_HEADER_LEN..];
            match (kind, &mut self.pending) {
                (HEADERS, None) => {
                    let (priority, fragment) = split_headers_payload(flags, payload)
                        .ok_or(Error::MalformedHeaders { stream })?;
                    self.pending = Some(Pending {
                        stream,
                        flags,
                        priority,
                        block: fragment.to_vec(),
                    });
                    if flags & END_HEADERS != 0 {
                        self.finish_block()?;
                    }
                }
                (CONTINUATION, Some(p)) if p.stream == stream => {
                    if p.block.len() + payload.len() > MAX_BLOCK {
                        return Err(Error::BlockTooLarge { stream });
                    }
                    p.block.extend_from_slice(payload);
                    if flags & END_HEADERS != 0 {
                        self.finish_block()?;
                    }
                }
                (_, Some(p)) => {
                    return Err(Error::Interleaved {
                        kind,
                        stream,
                        block: p.stream,
                    })
                }
                // Everything else (DATA, SETTINGS, WINDOW_UPDATE, PING, RST_STREAM, GOAWAY,
                // PRIORITY, a stray CONTINUATION...) is h2's to judge, byte for byte.
                (_, None) => self.out.extend_from_slice(&frame),
            }
        }
        Ok(())
    }

    fn finish_block(&mut self) -> Result<(), Error> {
        let p = self.pending.take().expect("a pending block");
        let stream = p.stream;
        // The re-encoded block, built as the fields are decoded: a field may borrow from the
        // HPACK table, valid only inside the callback.
        let mut block = Vec::with_capacity(p.block.len() + 64);
        let mut replaced = None;
        let mut too_large = false;
        self.decoder
            .decode_with_cb(&p.block, |name, value| {
                let value: &[u8] = if &*name == b":authority" && !valid_authority(&value) {
                    replaced = Some(String::from_utf8_lossy(&value).into_owned());
                    REPLACEMENT
                } else {
                    &value
                };
                if block.len() + name.len() + value.len() + 12 > MAX_BLOCK {
                    too_large = true;
                    return;
                }
                // Literal Header Field without Indexing, new name (RFC 7541 6.2.2), no
                // Huffman coding.
                block.push(0x00);
                encode_string(&name, &mut block);
                encode_string(value, &mut block);
            })
            .map_err(|e| Error::Hpack {
                stream,
                reason: e.to_string(),
            })?;
        if too_large {
            return Err(Error::BlockTooLarge { stream });
        }
        if let Some(original) = replaced {
            tracing::debug!(
                stream,
                original,
                "replaced an :authority h2 would refuse with localhost"
            );
        }
        // HEADERS (END_STREAM and PRIORITY kept, PADDED dropped), then CONTINUATIONs.
        let mut rest: &[u8] = &block;
        let mut first = true;
        loop {
            let prio = if first { p.priority } else { None };
            let room = MAX_FRAME - if prio.is_some() { 5 } else { 0 };
            let n = rest.len().min(room);
            let last = n == rest.len();
            let (kind, mut flags) = if first {
                (HEADERS, p.flags & (END_STREAM | PRIORITY))
            } else {
                (CONTINUATION, 0)
            };
            if last {
                flags |= END_HEADERS;
            }
            let len = n + if prio.is_some() { 5 } else { 0 };
            self.out.put_uint(len as u64, 3);
            self.out.put_u8(kind);
            self.out.put_u8(flags);
            self.out.put_u32(stream);
            if let Some(prio) = prio {
                self.out.extend_from_slice(&prio);
            }
            self.out.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            first = false;
            if last {
                return Ok(());
            }
        }
    }
}

/// A HEADERS payload's priority fields and header block fragment (padding stripped); `None`
/// when it is too short for them.
fn split_headers_payload(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut p = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        let (&n, tail) = p.split_first()?;
        pad = n as usize;
        p = tail;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        priority = Some(p.get(..5)?.try_into().ok()?);
        p = &p[5..];
    }
    let end = p.len().checked_sub(pad)?;
    Some((priority, &p[..end]))
}

/// h2's test of `:authority` (`uri::Authority::from_maybe_shared`, in `convert_poll_message`).
fn valid_authority(v: &[u8]) -> bool {
    http::uri::Authority::try_from(v).is_ok()
}

/// An HPACK string literal, without Huffman coding (RFC 7541 5.2), its length a 7-bit prefix
/// integer (5.1).
fn encode_string(s: &[u8], dst: &mut Vec<u8>) {
    let mut n = s.len();
    if n < 127 {
        dst.push(n as u8);
    } else {
        dst.push(127);
        n -= 127;
        while n >= 128 {
            dst.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        dst.push(n as u8);
    }
    dst.extend_from_slice(s);
}

/// A server-side connection whose client-to-server header blocks go through [`Rewriter`];
/// what [`crate::incoming`] yields.
pub struct AuthorityFix<S> {
    inner: S,
    rewriter: Rewriter,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            rewriter: Rewriter::default(),
            eof: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let out = this.rewriter.output();
            if !out.is_empty() {
                let n = out.len().min(buf.remaining());
                buf.put_slice(&out[..n]);
                out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if let Err(e) = this.rewriter.process() {
                tracing::warn!("closing a device-plugin API connection: {e}");
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
            if !this.rewriter.output().is_empty() {
                continue;
            }
            if this.eof {
                this.rewriter.flush_raw();
                if this.rewriter.output().is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            // Only when the input holds no complete frame: the input stays under one frame
            // plus one read.
            let mut tmp = [0u8; READ_CHUNK];
            let mut rb = ReadBuf::new(&mut tmp);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.eof = true;
            } else {
                this.rewriter.push(rb.filled());
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, b)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for AuthorityFix<tokio::net::UnixStream> {
    type ConnectInfo = <tokio::net::UnixStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::Connected::connect_info(&self.inner)
    }
}

#[cfg(test)]
#[path = "authority_fix_tests.rs"]
mod tests;
