//! Raw tar iteration with bounded extension headers. The `tar` crate, left to itself, reads a
//! GNU long name or a PAX header of any size into memory; a hostile layer could claim
//! gigabytes. Here the archive is read raw and those headers are collected with a cap, then
//! applied (path, link target, PAX records) to the member they describe.

use std::io::Read;

/// Largest GNU long-name/long-link or PAX header accepted for one member.
pub const MAX_EXTENSION_BYTES: u64 = 64 * 1024;

/// A real member's names and PAX records, after its extension headers.
#[derive(Debug, Default)]
pub struct Member {
    pub path: Vec<u8>,
    pub link: Option<Vec<u8>>,
    /// PAX `key=value` records (keys like `SCHILY.xattr.user.x`, `uid`, `mtime`).
    pub pax: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Extension headers seen since the last member.
#[derive(Debug, Default)]
pub struct Extensions {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

fn read_capped<R: Read>(entry: &mut tar::Entry<'_, R>, what: &str) -> Result<Vec<u8>, String> {
    let size = entry.size();
    if size > MAX_EXTENSION_BYTES {
        return Err(format!(
            "{what} header of {size} bytes is over the {MAX_EXTENSION_BYTES} byte limit"
        ));
    }
    let mut buf = Vec::with_capacity(size as usize);
    entry
        .take(MAX_EXTENSION_BYTES)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{what} header: {e}"))?;
    if buf.len() as u64 != size {
        return Err(format!(
            "{what} header truncated ({} of {size} bytes)",
            buf.len()
        ));
    }
    Ok(buf)
}

fn strip_nuls(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

impl Extensions {
    /// Feed the next raw entry: `Ok(None)` when it was an extension header (kept for the next
    /// member), `Ok(Some(member))` for a member, with its extensions applied.
    pub fn absorb<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<Option<Member>, String> {
        let kind = entry.header().entry_type();
        let slot = match kind {
            tar::EntryType::GNULongName => Some(("GNU long name", &mut self.long_name)),
            tar::EntryType::GNULongLink => Some(("GNU long link", &mut self.long_link)),
            tar::EntryType::XHeader => Some(("PAX", &mut self.pax)),
            tar::EntryType::XGlobalHeader => {
                // Global defaults (usually just a comment): bounded, then ignored.
                read_capped(entry, "PAX global")?;
                return Ok(None);
            }
            _ => None,
        };
        if let Some((what, slot)) = slot {
            if slot.is_some() {
                return Err(format!("two {what} headers for one member"));
            }
            *slot = Some(read_capped(entry, what)?);
            return Ok(None);
        }
        let mut member = Member::default();
        if let Some(bytes) = self.pax.take() {
            for ext in tar::PaxExtensions::new(&bytes) {
                let ext = ext.map_err(|e| format!("malformed PAX header: {e}"))?;
                member
                    .pax
                    .push((ext.key_bytes().to_vec(), ext.value_bytes().to_vec()));
            }
        }
        let pax_value = |key: &[u8]| {
            member
                .pax
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        if let Some(size) = pax_value(b"size") {
            if std::str::from_utf8(&size)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                != Some(entry.size())
            {
                return Err("PAX size override is not supported".into());
            }
        }
        let long_name = self.long_name.take().map(strip_nuls);
        let long_link = self.long_link.take().map(strip_nuls);
        member.path = pax_value(b"path")
            .or(long_name)
            .unwrap_or_else(|| entry.path_bytes().into_owned());
        member.link = pax_value(b"linkpath")
            .or(long_link)
            .or_else(|| entry.link_name_bytes().map(|l| l.into_owned()));
        Ok(Some(member))
    }

    /// At the end of the archive: extension headers must have described a member.
    pub fn finish(&self) -> Result<(), String> {
        if self.long_name.is_some() || self.long_link.is_some() || self.pax.is_some() {
            return Err("extension header at the end of the archive describes no member".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(bytes: &[u8]) -> Result<Vec<Member>, String> {
        let mut ar = tar::Archive::new(bytes);
        let mut ext = Extensions::default();
        let mut out = Vec::new();
        for e in ar.entries().unwrap().raw(true) {
            let mut e = e.map_err(|e| e.to_string())?;
            if let Some(m) = ext.absorb(&mut e)? {
                out.push(m);
            }
        }
        ext.finish()?;
        Ok(out)
    }

    #[test]
    fn long_names_links_and_pax_are_applied() {
        let long = format!("{}/file", "d".repeat(150));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"hi"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "l", &long).unwrap();
        b.append_pax_extensions([("SCHILY.xattr.user.k", &b"v"[..]), ("path", b"pax/name")])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        b.append_data(&mut h, "short", &b""[..]).unwrap();
        let ms = members(&b.into_inner().unwrap()).unwrap();
        assert_eq!(ms.len(), 3);
        assert_eq!(ms[0].path, long.as_bytes());
        assert_eq!(ms[1].link.as_deref(), Some(long.as_bytes()));
        assert_eq!(ms[2].path, b"pax/name");
        assert_eq!(
            ms[2].pax[0],
            (b"SCHILY.xattr.user.k".to_vec(), b"v".to_vec())
        );
    }

    #[test]
    fn oversized_and_dangling_extensions_are_refused() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(MAX_EXTENSION_BYTES + 1);
        h.set_cksum();
        b.append(&h, &vec![b'x'; (MAX_EXTENSION_BYTES + 1) as usize][..])
            .unwrap();
        let e = members(&b.into_inner().unwrap()).unwrap_err();
        assert!(e.contains("over the"), "{e}");

        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("path", &b"x"[..])]).unwrap();
        let e = members(&b.into_inner().unwrap()).unwrap_err();
        assert!(e.contains("describes no member"), "{e}");
    }
}
