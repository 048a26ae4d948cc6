//! Container logs in the CRI format, as kubelet's `pkg/kubelet/kuberuntime/logs` reads them:
//! `2016-10-06T00:17:09.669794202Z stdout F the line`, with tag `P` for the pieces of a line
//! longer than the per-stream buffer (the last piece is `F`).
//!
//! The writer side (`StreamBuffer` + `LogFile`) lives in the pod supervisor: each container
//! stream owns one fixed buffer of `LINE_BUFFER` bytes, allocated when the stream first has
//! something to read, so a container costs at most 2 × 16 KiB of supervisor memory however
//! it writes, and nothing if it never writes. `LogFile` rotates by size, keeping
//! `path`, `path.1`, …, `path.<max_files-1>` (`.1` is the newest rotated file).
//! The reader side (`read_logs`) is for the CLI: it prints the message parts, oldest file
//! first, and can follow the file as it grows and rotates.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Bytes buffered per stream before a partial (`P`) line is emitted.
pub const LINE_BUFFER: usize = 16 * 1024;

/// Longest CRI line the reader accepts (timestamp, stream, tag and a full buffer, with room).
const MAX_READ_LINE: usize = LINE_BUFFER + 256;

/// Which of the container's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Format a unix time in nanoseconds as RFC 3339 UTC with 9 fraction digits (kubelet's
/// `2006-01-02T15:04:05.000000000Z07:00`).
pub fn format_timestamp(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let nanos = unix_nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// One CRI log line (with its trailing newline) for `msg`, which must not contain `\n`.
pub fn format_cri_line(unix_nanos: i64, stream: Stream, partial: bool, msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + msg.len());
    out.extend_from_slice(format_timestamp(unix_nanos).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(msg);
    out.push(b'\n');
    out
}

/// A parsed CRI log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriLine<'a> {
    pub timestamp: &'a str,
    pub stream: Stream,
    pub partial: bool,
    pub message: &'a [u8],
}

/// Parse one CRI line (without its newline). The error says what is wrong.
pub fn parse_cri_line(line: &[u8]) -> Result<CriLine<'_>, String> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let ts = parts.next().unwrap_or(b"");
    let timestamp = std::str::from_utf8(ts).map_err(|_| "timestamp is not UTF-8".to_string())?;
    if timestamp.len() < 20 || !timestamp.ends_with('Z') || timestamp.as_bytes()[10] != b'T' {
        return Err(format!("bad timestamp {timestamp:?}"));
    }
    let stream = parts.next().ok_or("missing stream")?;
    let tag = parts.next().ok_or("missing tag")?;
    let message = parts.next().unwrap_or(b"");
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        other => return Err(format!("bad stream {:?}", String::from_utf8_lossy(other))),
    };
    let partial = match tag {
        b"P" => true,
        b"F" => false,
        other => return Err(format!("bad tag {:?}", String::from_utf8_lossy(other))),
    };
    Ok(CriLine {
        timestamp,
        stream,
        partial,
        message,
    })
}

/// Splits a byte stream into CRI pieces with a fixed buffer: whole lines are `F`, a line
/// that fills the buffer is emitted as `P` pieces.
#[derive(Debug)]
pub struct StreamBuffer {
    /// Empty until `spare` is first called: a quiet container's streams cost nothing.
    buf: Box<[u8]>,
    cap: usize,
    len: usize,
}

impl Default for StreamBuffer {
    fn default() -> Self {
        Self::with_capacity(LINE_BUFFER)
    }
}

impl StreamBuffer {
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            buf: Box::default(),
            cap: cap.max(1),
            len: 0,
        }
    }

    /// The free part of the buffer, to `read(2)` into; then call `filled(n)`.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = vec![0; self.cap].into_boxed_slice();
        }
        &mut self.buf[self.len..]
    }

    /// Account for `n` bytes read into `spare()`, calling `emit(partial, message)` for every
    /// complete line, and for the whole buffer as a partial piece when it is full.
    pub fn filled(&mut self, n: usize, emit: &mut dyn FnMut(bool, &[u8])) {
        let old = self.len;
        self.len += n;
        let mut start = 0;
        let mut scan = old;
        while let Some(i) = self.buf[scan..self.len].iter().position(|&b| b == b'\n') {
            let end = scan + i;
            emit(false, &self.buf[start..end]);
            start = end + 1;
            scan = start;
        }
        if start > 0 {
            self.buf.copy_within(start..self.len, 0);
            self.len -= start;
        }
        if self.len == self.buf.len() {
            emit(true, &self.buf[..self.len]);
            self.len = 0;
        }
    }

    /// At end of stream: the unterminated rest, if any, as a full line.
    pub fn finish(&mut self, emit: &mut dyn FnMut(bool, &[u8])) {
        if self.len > 0 {
            emit(false, &self.buf[..self.len]);
            self.len = 0;
        }
    }

    /// Convenience for tests and small inputs: feed `data` through the buffer.
    pub fn push(&mut self, mut data: &[u8], emit: &mut dyn FnMut(bool, &[u8])) {
        while !data.is_empty() {
            let spare = self.spare();
            let n = spare.len().min(data.len());
            spare[..n].copy_from_slice(&data[..n]);
            data = &data[n..];
            self.filled(n, emit);
        }
    }
}

/// The file name of rotated file `n` (`n` = 0 is the current file).
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return path.to_path_buf();
    }
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// An append-only CRI log file rotated by size.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    max_files: u32,
}

impl LogFile {
    /// Open (append, create; parent created) the log at `path`.
    pub fn open(path: &Path, max_bytes: u64, max_files: u32) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
            max_files: max_files.max(1),
        })
    }

    /// Append one formatted line, rotating first if it would pass `max_bytes`.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        if self.max_bytes > 0 && self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// Shift `path.k` to `path.k+1` (dropping the oldest) and start an empty `path`.
    pub fn rotate(&mut self) -> io::Result<()> {
        let keep = self.max_files - 1;
        if keep == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        match fs::remove_file(rotated_path(&self.path, keep)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (0..keep).rev() {
            match fs::rename(rotated_path(&self.path, n), rotated_path(&self.path, n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Print the messages of the CRI log at `path` to `out`, oldest rotated file first. With
/// `follow`, keep printing what is appended (across rotations) until the flag becomes true.
/// Lines that do not parse are skipped (a torn last line is completed on the next read).
pub fn read_logs(path: &Path, follow: Option<&AtomicBool>, out: &mut dyn Write) -> io::Result<()> {
    let mut n = 1;
    while rotated_path(path, n).exists() {
        n += 1;
    }
    for k in (1..n).rev() {
        match File::open(rotated_path(path, k)) {
            Ok(f) => {
                let mut r = BufReader::new(f);
                copy_messages(&mut r, out, &mut Vec::new())?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let Some(stop) = follow else {
        return match File::open(path) {
            Ok(f) => copy_messages(&mut BufReader::new(f), out, &mut Vec::new()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
    };
    let mut current: Option<(BufReader<File>, u64)> = None;
    let mut pending = Vec::new();
    loop {
        if current.is_none() {
            if let Ok(f) = File::open(path) {
                let ino = f.metadata()?.ino();
                current = Some((BufReader::new(f), ino));
            }
        }
        if let Some((r, ino)) = current.as_mut() {
            copy_messages(r, out, &mut pending)?;
            out.flush()?;
            let rotated = fs::metadata(path).map(|m| m.ino() != *ino).unwrap_or(true);
            if rotated {
                // Finish what was written to the old file before it was renamed, then the
                // files rotated in after it (several rotations may fall between two polls).
                copy_messages(r, out, &mut pending)?;
                pending.clear();
                let old = *ino;
                current = None;
                for newer in newer_rotated_files(path, old).iter().rev() {
                    if let Ok(f) = File::open(newer) {
                        copy_messages(&mut BufReader::new(f), out, &mut pending)?;
                        pending.clear();
                    }
                }
                continue;
            }
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The rotated files of `path` newer than the file with inode `ino`, newest first (all of
/// them when that file was already rotated away).
fn newer_rotated_files(path: &Path, ino: u64) -> Vec<PathBuf> {
    let mut newer = Vec::new();
    for k in 1.. {
        let p = rotated_path(path, k);
        match fs::metadata(&p) {
            Ok(m) if m.ino() == ino => break,
            Ok(_) => newer.push(p),
            Err(_) => break,
        }
    }
    newer
}

/// Copy the messages of complete lines from `r`; an incomplete last line stays in `pending`.
fn copy_messages<R: BufRead>(
    r: &mut R,
    out: &mut dyn Write,
    pending: &mut Vec<u8>,
) -> io::Result<()> {
    loop {
        let room = MAX_READ_LINE.saturating_sub(pending.len()) as u64;
        let n = r.by_ref().take(room.max(1)).read_until(b'\n', pending)?;
        if n == 0 {
            return Ok(());
        }
        if pending.last() != Some(&b'\n') {
            if pending.len() >= MAX_READ_LINE {
                pending.clear(); // not a line we wrote: drop it
            }
            continue;
        }
        pending.pop();
        if let Ok(line) = parse_cri_line(pending) {
            out.write_all(line.message)?;
            if !line.partial {
                out.write_all(b"\n")?;
            }
        }
        pending.clear();
    }
}

/// Current unix time in nanoseconds.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_with_nine_digits() {
        let cases: &[(i64, &str)] = &[
            (0, "1970-01-01T00:00:00.000000000Z"),
            (1_475_713_029_669_794_202, "2016-10-06T00:17:09.669794202Z"),
            (951_782_400_000_000_001, "2000-02-29T00:00:00.000000001Z"),
            (4_102_444_799_999_999_999, "2099-12-31T23:59:59.999999999Z"),
        ];
        for (nanos, want) in cases {
            assert_eq!(format_timestamp(*nanos), *want, "{nanos}");
        }
    }

    #[test]
    fn cri_lines_format_and_parse_back() {
        let cases: &[(Stream, bool, &[u8], &str)] = &[
            (
                Stream::Stdout,
                false,
                b"the line",
                "2016-10-06T00:17:09.669794202Z stdout F the line\n",
            ),
            (
                Stream::Stderr,
                true,
                b"part",
                "2016-10-06T00:17:09.669794202Z stderr P part\n",
            ),
            (
                Stream::Stdout,
                false,
                b"",
                "2016-10-06T00:17:09.669794202Z stdout F \n",
            ),
            (
                Stream::Stdout,
                false,
                b"a b  c",
                "2016-10-06T00:17:09.669794202Z stdout F a b  c\n",
            ),
        ];
        for (stream, partial, msg, want) in cases {
            let line = format_cri_line(1_475_713_029_669_794_202, *stream, *partial, msg);
            assert_eq!(String::from_utf8_lossy(&line), *want);
            let parsed = parse_cri_line(&line[..line.len() - 1]).unwrap();
            assert_eq!(
                (parsed.stream, parsed.partial, parsed.message),
                (*stream, *partial, *msg)
            );
        }
    }

    #[test]
    fn bad_cri_lines_are_rejected_with_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "bad timestamp"),
            (b"2016-10-06T00:17:09.669794202Z", "missing stream"),
            (b"2016-10-06T00:17:09.669794202Z stdin F x", "bad stream"),
            (b"2016-10-06T00:17:09.669794202Z stdout X x", "bad tag"),
            (b"yesterday stdout F x", "bad timestamp"),
        ];
        for (line, want) in cases {
            let err = parse_cri_line(line).unwrap_err();
            assert!(
                err.contains(want),
                "{:?}: {err}",
                String::from_utf8_lossy(line)
            );
        }
    }

    fn pieces(cap: usize, chunks: &[&[u8]], finish: bool) -> Vec<(bool, String)> {
        let mut b = StreamBuffer::with_capacity(cap);
        let mut out = Vec::new();
        for c in chunks {
            b.push(c, &mut |p, m| {
                out.push((p, String::from_utf8_lossy(m).into_owned()))
            });
        }
        if finish {
            b.finish(&mut |p, m| out.push((p, String::from_utf8_lossy(m).into_owned())));
        }
        out
    }

    #[test]
    fn a_stream_buffer_is_allocated_only_when_there_is_something_to_read() {
        let mut b = StreamBuffer::default();
        assert_eq!(b.buf.len(), 0, "a new stream holds no buffer");
        b.finish(&mut |_, _| panic!("nothing to emit"));
        assert_eq!(
            b.buf.len(),
            0,
            "finishing an empty stream allocates nothing"
        );
        assert_eq!(b.spare().len(), LINE_BUFFER);
    }

    #[test]
    fn stream_buffer_splits_lines_and_partials() {
        let f = |s: &str| (false, s.to_string());
        let p = |s: &str| (true, s.to_string());
        assert_eq!(pieces(8, &[b"a\nb\n"], false), vec![f("a"), f("b")]);
        assert_eq!(pieces(8, &[b"hel", b"lo\nwo"], false), vec![f("hello")]);
        assert_eq!(
            pieces(8, &[b"hel", b"lo\nwo"], true),
            vec![f("hello"), f("wo")]
        );
        assert_eq!(
            pieces(4, &[b"abcdefghij\n"], false),
            vec![p("abcd"), p("efgh"), f("ij")]
        );
        assert_eq!(pieces(4, &[b"abcd\n"], false), vec![p("abcd"), f("")]);
        assert_eq!(pieces(4, &[b"\n\n"], false), vec![f(""), f("")]);
        assert_eq!(pieces(4, &[], true), vec![]);
    }

    #[test]
    fn rotation_keeps_max_files_and_reader_joins_partials_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/0.log");
        let mut log = LogFile::open(&path, 100, 3).unwrap();
        let mut buf = StreamBuffer::with_capacity(10);
        for i in 0..20 {
            let msg = format!("line-{i:02}-{}", "x".repeat(i % 3 * 6));
            buf.push(format!("{msg}\n").as_bytes(), &mut |partial, m| {
                log.write_line(&format_cri_line(i as i64, Stream::Stdout, partial, m))
                    .unwrap();
            });
        }
        assert!(
            path.exists() && rotated_path(&path, 1).exists() && rotated_path(&path, 2).exists()
        );
        assert!(!rotated_path(&path, 3).exists());
        for n in 0..3 {
            let len = fs::metadata(rotated_path(&path, n)).unwrap().len();
            assert!(len <= 100, "file {n} has {len} bytes");
        }
        let mut out = Vec::new();
        read_logs(&path, None, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // The oldest lines were rotated away; what is left is a contiguous, ordered tail
        // (whose first line may be the end of a line whose first pieces were dropped).
        let want = |i: usize| format!("line-{i:02}-{}", "x".repeat(i % 3 * 6));
        assert_eq!(*lines.last().unwrap(), want(19));
        let skip = usize::from(!lines[0].starts_with("line-"));
        let first: usize = lines[skip][5..7].parse().unwrap();
        assert!(first > 1, "nothing was rotated away");
        if skip == 1 {
            assert!(want(first - 1).ends_with(lines[0]), "{:?}", lines[0]);
        }
        for (k, l) in lines[skip..].iter().enumerate() {
            assert_eq!(*l, want(first + k));
        }
    }

    #[test]
    fn reader_follows_growth_and_rotation_until_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut log = LogFile::open(&path, 100, 2).unwrap();
        log.write_line(&format_cri_line(1, Stream::Stdout, false, b"first"))
            .unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (p2, s2) = (path.clone(), stop.clone());
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            read_logs(&p2, Some(&s2), &mut out).unwrap();
            String::from_utf8(out).unwrap()
        });
        std::thread::sleep(Duration::from_millis(250));
        log.write_line(&format_cri_line(2, Stream::Stderr, true, b"sec"))
            .unwrap();
        log.write_line(&format_cri_line(3, Stream::Stderr, false, b"ond"))
            .unwrap();
        std::thread::sleep(Duration::from_millis(250));
        log.write_line(&format_cri_line(4, Stream::Stdout, false, b"third"))
            .unwrap();
        std::thread::sleep(Duration::from_millis(250));
        stop.store(true, Ordering::Relaxed);
        assert_eq!(reader.join().unwrap(), "first\nsecond\nthird\n");
    }

    #[test]
    fn reader_following_catches_up_over_several_rotations_between_polls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        // Each line is 46 bytes: every line rotates the file; three files are kept.
        let mut log = LogFile::open(&path, 60, 3).unwrap();
        log.write_line(&format_cri_line(1, Stream::Stdout, false, b"one"))
            .unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (p2, s2) = (path.clone(), stop.clone());
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            read_logs(&p2, Some(&s2), &mut out).unwrap();
            String::from_utf8(out).unwrap()
        });
        std::thread::sleep(Duration::from_millis(250));
        for m in ["two", "six"] {
            log.write_line(&format_cri_line(2, Stream::Stdout, false, m.as_bytes()))
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(250));
        stop.store(true, Ordering::Relaxed);
        assert_eq!(reader.join().unwrap(), "one\ntwo\nsix\n");
    }
}
