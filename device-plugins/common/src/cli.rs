//! Command-line flags for the plugin binaries: `--name VALUE` or `--name=VALUE`, every flag
//! taking a value, plus `-h`/`--help`. Hand-written (a dozen lines of logic) rather than clap,
//! to keep the plugin binaries small for boards.

use std::collections::BTreeMap;

/// Why the command line was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("help requested")]
    Help,
    #[error("unknown flag {0:?}")]
    Unknown(String),
    #[error("flag {0} needs a value")]
    MissingValue(String),
    #[error("unexpected argument {0:?}")]
    Positional(String),
}

/// Parsed flags, by name without the leading `--`; the last occurrence wins.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flags {
    values: BTreeMap<String, String>,
}

impl Flags {
    /// Parses `args` (without the program name), accepting only the flags in `known`
    /// (names without `--`).
    pub fn parse<I: IntoIterator<Item = String>>(
        args: I,
        known: &[&str],
    ) -> Result<Flags, UsageError> {
        let mut flags = Flags::default();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            if arg == "-h" || arg == "--help" {
                return Err(UsageError::Help);
            }
            let Some(body) = arg.strip_prefix("--") else {
                return Err(UsageError::Positional(arg));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            if !known.contains(&name.as_str()) {
                return Err(UsageError::Unknown(arg));
            }
            let value = match value {
                Some(v) => v,
                None => it
                    .next()
                    .filter(|v| !v.starts_with("--"))
                    .ok_or_else(|| UsageError::MissingValue(format!("--{name}")))?,
            };
            flags.values.insert(name, value);
        }
        Ok(flags)
    }

    /// The value of `--name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// `--name` as a path (`default` when not given); an empty one is refused.
    pub fn path(
        &self,
        name: &'static str,
        default: &str,
    ) -> Result<std::path::PathBuf, ValueError> {
        let v = self.get(name).unwrap_or(default);
        if v.is_empty() {
            return Err(ValueError {
                flag: name,
                value: v.into(),
                reason: "empty path",
            });
        }
        Ok(v.into())
    }

    /// `--name` as seconds from 0.1 to 3600 (`default` when not given).
    pub fn seconds(
        &self,
        name: &'static str,
        default: std::time::Duration,
    ) -> Result<std::time::Duration, ValueError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.parse::<f64>() {
                Ok(s) if (0.1..=3600.0).contains(&s) => Ok(std::time::Duration::from_secs_f64(s)),
                _ => Err(ValueError {
                    flag: name,
                    value: v.into(),
                    reason: "must be a number of seconds from 0.1 to 3600",
                }),
            },
        }
    }
}

/// A flag whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{flag} {value:?}: {reason}")]
pub struct ValueError {
    pub flag: &'static str,
    pub value: String,
    pub reason: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, UsageError> {
        Flags::parse(args.iter().map(|s| s.to_string()), &["dev-root", "config"])
    }

    #[test]
    fn flags_parse_by_table() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
        let ok: &[Case] = &[
            (&[], &[]),
            (&["--dev-root", "/d"], &[("dev-root", "/d")]),
            (&["--dev-root=/d"], &[("dev-root", "/d")]),
            (
                &["--dev-root=/a", "--dev-root", "/b"],
                &[("dev-root", "/b")],
            ),
            (
                &["--config", "c.yaml", "--dev-root=/d"],
                &[("config", "c.yaml"), ("dev-root", "/d")],
            ),
            (&["--config="], &[("config", "")]),
        ];
        for (args, want) in ok {
            let f = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            for (k, v) in *want {
                assert_eq!(f.get(k), Some(*v), "{args:?}");
            }
            assert_eq!(f.values.len(), want.len(), "{args:?}");
        }
        let bad: &[(&[&str], UsageError)] = &[
            (&["--help"], UsageError::Help),
            (&["-h"], UsageError::Help),
            (&["--nope", "x"], UsageError::Unknown("--nope".into())),
            (
                &["--dev-root"],
                UsageError::MissingValue("--dev-root".into()),
            ),
            (
                &["--dev-root", "--config", "x"],
                UsageError::MissingValue("--dev-root".into()),
            ),
            (&["stray"], UsageError::Positional("stray".into())),
        ];
        for (args, want) in bad {
            assert_eq!(parse(args).as_ref().err(), Some(want), "{args:?}");
        }
    }
}
