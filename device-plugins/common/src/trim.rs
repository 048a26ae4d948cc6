//! Giving start-up code back: a plugin runs for months, but most of its code (argument and
//! config parsing, discovery, the gRPC client used to register, connection set-up) runs once.
//! Those pages of the executable stay resident until memory gets tight. After a registration,
//! the plugin asks the kernel to page out the read-only mappings of its own executable
//! (`MADV_PAGEOUT`, Linux 5.4+; a no-op error on older kernels) and marks them for random
//! access, so that the few pages the idle loop uses fault back in one by one, without the
//! 64 KiB fault-around. Only clean, file-backed pages are dropped: the kernel never discards
//! data for `MADV_PAGEOUT`, so this is safe on any mapping.

/// One mapping of `/proc/self/maps`: its range, whether it is read-only, and its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: usize,
    pub end: usize,
    pub read_only: bool,
    pub path: String,
}

/// Parses one line of `/proc/<pid>/maps`.
pub fn parse_maps_line(line: &str) -> Option<Mapping> {
    let mut f = line.split_whitespace();
    let (range, perms) = (f.next()?, f.next()?);
    let (_offset, _dev, _inode) = (f.next()?, f.next()?, f.next()?);
    let path = f.collect::<Vec<_>>().join(" ");
    let (s, e) = range.split_once('-')?;
    let start = usize::from_str_radix(s, 16).ok()?;
    let end = usize::from_str_radix(e, 16).ok()?;
    let p = perms.as_bytes();
    (p.len() == 4 && end > start).then(|| Mapping {
        start,
        end,
        read_only: p[0] == b'r' && p[1] == b'-',
        path,
    })
}

/// The read-only mappings of the running executable (its code and constants).
pub fn own_code_mappings() -> Vec<Mapping> {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return Vec::new();
    };
    let exe = exe.to_string_lossy().into_owned();
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    maps.lines()
        .filter_map(parse_maps_line)
        .filter(|m| m.read_only && m.path == exe)
        .collect()
}

/// Pages out the read-only mappings of the running executable; returns the bytes the kernel
/// accepted the advice for (0 on kernels without `MADV_PAGEOUT`).
pub fn page_out_own_code() -> usize {
    let mut advised = 0;
    for m in own_code_mappings() {
        let (addr, len) = (m.start as *mut core::ffi::c_void, m.end - m.start);
        // SAFETY: the range is a whole mapping of this process as the kernel lists it.
        // MADV_RANDOM only changes read-ahead (no fault-around: a page that faults back in
        // brings 4 KiB, not 64), and MADV_PAGEOUT only reclaims pages (writing dirty ones back
        // first); neither changes contents or unmaps, so no reference into the range breaks.
        let rc = unsafe {
            madvise(addr, len, MADV_RANDOM);
            madvise(addr, len, MADV_PAGEOUT)
        };
        if rc == 0 {
            advised += len;
        }
    }
    tracing::debug!(bytes = advised, "paged out start-up code");
    advised
}

const MADV_RANDOM: i32 = 1;
const MADV_PAGEOUT: i32 = 21;

extern "C" {
    fn madvise(addr: *mut core::ffi::c_void, len: usize, advice: i32) -> i32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse_by_table() {
        let cases: &[(&str, Option<Mapping>)] = &[
            (
                "55d0c4a00000-55d0c4b40000 r-xp 00037000 08:01 1234 /usr/bin/tidelet-gpu-plugin",
                Some(Mapping {
                    start: 0x55d0c4a00000,
                    end: 0x55d0c4b40000,
                    read_only: true,
                    path: "/usr/bin/tidelet-gpu-plugin".into(),
                }),
            ),
            (
                "7f00-8f00 rw-p 00000000 00:00 0 [heap]",
                Some(Mapping {
                    start: 0x7f00,
                    end: 0x8f00,
                    read_only: false,
                    path: "[heap]".into(),
                }),
            ),
            (
                "1000-2000 r--p 00000000 08:01 9 /opt/my dir/plugin",
                Some(Mapping {
                    start: 0x1000,
                    end: 0x2000,
                    read_only: true,
                    path: "/opt/my dir/plugin".into(),
                }),
            ),
            (
                "1000-2000 ---p 00000000 00:00 0",
                Some(Mapping {
                    start: 0x1000,
                    end: 0x2000,
                    read_only: false,
                    path: String::new(),
                }),
            ),
            ("2000-1000 r-xp 0 0 0 /x", None),
            ("garbage", None),
        ];
        for (line, want) in cases {
            assert_eq!(&parse_maps_line(line), want, "{line}");
        }
    }

    #[test]
    fn the_executable_code_is_found_and_paging_it_out_keeps_it_running() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let maps = own_code_mappings();
        assert!(!maps.is_empty(), "the test binary has read-only mappings");
        assert!(maps
            .iter()
            .all(|m| m.read_only && std::path::Path::new(&m.path) == exe));
        page_out_own_code();
        // Code paged out faults back in: this test's own code keeps running.
        assert_eq!(own_code_mappings().len(), maps.len());
    }
}
