//! The one gate of tidelet's privileged tests (namespaces, cgroups, mounts, mknod): they run as
//! root; elsewhere they skip with a word on stderr, except where `TIDELET_REQUIRE_PRIVILEGED`
//! demands them (CI sets it to `1`, through scripts/test.sh): then a missing privilege is a
//! failure, never a skip. Every crate's privileged tests ask here, so they agree on what turns
//! the demand on (before this crate, eight copies did not).

/// The variable that makes a privileged test that cannot run a failure.
pub const REQUIRE: &str = "TIDELET_REQUIRE_PRIVILEGED";

/// Whether privileged tests are demanded: `value` (of `REQUIRE`) set to anything but empty or
/// `0` (pure, for the table test).
pub fn demanded(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether this environment demands privileged tests (and what else they need: a cross-built
/// binary, protoc) to run rather than skip.
pub fn required() -> bool {
    demanded(std::env::var_os(REQUIRE).as_deref())
}

/// Whether the privileged test `test` may run: true as root; as another user, false after
/// saying so on stderr, or a panic naming the test when the environment demands it.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if required() {
        panic!("{test} needs root and {REQUIRE} is set: it must run, not skip");
    }
    eprintln!("skipping {test}: needs root (set {REQUIRE}=1 to make this a failure)");
    false
}

/// `privileged` for the test running on this thread, named as libtest names its thread.
pub fn privileged_here() -> bool {
    let t = std::thread::current();
    privileged(t.name().unwrap_or("this test"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_demands_privileged_tests() {
        let cases: [(Option<&str>, bool); 5] = [
            (None, false),
            (Some(""), false),
            (Some("0"), false),
            (Some("1"), true),
            (Some("yes"), true),
        ];
        for (v, want) in cases {
            assert_eq!(demanded(v.map(std::ffi::OsStr::new)), want, "{v:?}");
        }
    }
}
