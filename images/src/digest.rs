//! Content digests: parsing `sha256:<hex>` strings (the only algorithm tidelet accepts) and
//! hashing streams as they are copied, so a blob or an uncompressed layer is verified without
//! ever being held in memory.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

/// A parsed `sha256:<64 lowercase hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parse `algorithm:hex`; anything but a well-formed sha256 digest is refused with the reason.
    pub fn parse(s: &str) -> std::result::Result<Digest, String> {
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(format!(
                "digest {s:?} has no algorithm (expected sha256:<hex>)"
            ));
        };
        if alg != "sha256" {
            return Err(format!(
                "digest {s:?}: unsupported digest algorithm {alg:?} (only sha256 is supported)"
            ));
        }
        Digest::from_hex(hex)
            .ok_or_else(|| format!("digest {s:?}: expected 64 lowercase hex digits"))
    }

    /// A digest from its bare hex part, `None` unless 64 lowercase hex digits.
    pub fn from_hex(hex: &str) -> Option<Digest> {
        let ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| Digest {
            hex: hex.to_string(),
        })
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// The digest of a byte slice (small JSON documents).
pub fn of_bytes(bytes: &[u8]) -> Digest {
    Digest {
        hex: hex::encode(Sha256::digest(bytes)),
    }
}

/// A reader that hashes and counts everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Read what is left (tar padding after the end-of-archive marker counts towards the
    /// diff_id), then return the digest and the byte count.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((
            Digest {
                hex: hex::encode(self.hasher.finalize()),
            },
            self.count,
        ))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn finish(self) -> (W, Digest, u64) {
        (
            self.inner,
            Digest {
                hex: hex::encode(self.hasher.finalize()),
            },
            self.count,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_accepts_only_well_formed_sha256() {
        let upper = H.to_uppercase();
        let cases: Vec<(String, bool, &str)> = vec![
            (format!("sha256:{H}"), true, ""),
            (H.to_string(), false, "no algorithm"),
            (format!("sha512:{H}"), false, "unsupported digest algorithm"),
            (format!("md5:{H}"), false, "unsupported digest algorithm"),
            ("sha256:abc".to_string(), false, "64 lowercase hex"),
            (format!("sha256:{upper}"), false, "64 lowercase hex"),
            (format!("sha256:{H}0"), false, "64 lowercase hex"),
            (format!("sha256:{}g", &H[..63]), false, "64 lowercase hex"),
            (String::new(), false, "no algorithm"),
        ];
        for (input, ok, why) in cases {
            match Digest::parse(&input) {
                Ok(d) => {
                    assert!(ok, "{input:?} accepted");
                    assert_eq!(d.to_string(), input);
                    assert_eq!(d.hex(), H);
                }
                Err(e) => {
                    assert!(!ok, "{input:?} refused: {e}");
                    assert!(e.contains(why), "{input:?}: {e} should say {why}");
                }
            }
        }
    }

    #[test]
    fn hashing_reader_and_writer_agree_with_of_bytes() {
        let data = b"hello, layer".repeat(1000);
        let mut r = HashingReader::new(&data[..]);
        let mut first = [0u8; 10];
        r.read_exact(&mut first).unwrap();
        let (d, n) = r.finish().unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(d, of_bytes(&data));
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data).unwrap();
        let (out, d2, n2) = w.finish();
        assert_eq!(
            (out, d2, n2),
            (data.clone(), of_bytes(&data), data.len() as u64)
        );
        assert_eq!(of_bytes(b"").hex(), H);
    }
}
