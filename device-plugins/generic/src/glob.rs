//! Matching one path component against a shell pattern: `*` (any run), `?` (any one
//! character), `[abc]`, `[a-z]`, `[!a-z]`/`[^a-z]` (a set, or its complement). Patterns are
//! parsed once (so a bad one is a config error, not a silent non-match) and matched without
//! recursion (stars backtrack to the last star only, so matching is linear-ish and bounded).

/// A parsed pattern for one file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    tokens: Vec<Tok>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    One,
    Star,
    Class {
        negate: bool,
        ranges: Vec<(char, char)>,
    },
}

/// Why a pattern cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("empty pattern")]
    Empty,
    #[error("`[` without a closing `]`")]
    Unclosed,
    #[error("empty `[]` set")]
    EmptyClass,
    #[error("range {0}-{1} is backwards")]
    Backwards(char, char),
    #[error("`/` in a name pattern")]
    Slash,
}

impl Glob {
    /// Parses a file-name pattern.
    pub fn parse(pattern: &str) -> Result<Glob, GlobError> {
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::with_capacity(chars.len());
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '/' => return Err(GlobError::Slash),
                '*' => {
                    if tokens.last() != Some(&Tok::Star) {
                        tokens.push(Tok::Star);
                    }
                }
                '?' => tokens.push(Tok::One),
                '[' => {
                    let (tok, next) = parse_class(&chars, i + 1)?;
                    tokens.push(tok);
                    i = next;
                    continue;
                }
                c => tokens.push(Tok::Lit(c)),
            }
            i += 1;
        }
        Ok(Glob { tokens })
    }

    /// Whether the pattern has any wildcard (else it names one file).
    pub fn is_literal(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Tok::Lit(_)))
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let (mut p, mut n) = (0usize, 0usize);
        // Where to resume after the last star: (token after the star, name position).
        let mut back: Option<(usize, usize)> = None;
        while n < name.len() {
            match self.tokens.get(p) {
                Some(Tok::Star) => {
                    back = Some((p + 1, n));
                    p += 1;
                    continue;
                }
                Some(t) if one(t, name[n]) => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
            match back {
                Some((bp, bn)) => {
                    p = bp;
                    n = bn + 1;
                    back = Some((bp, bn + 1));
                }
                None => return false,
            }
        }
        self.tokens[p..].iter().all(|t| *t == Tok::Star)
    }
}

fn one(t: &Tok, c: char) -> bool {
    match t {
        Tok::Lit(l) => *l == c,
        Tok::One => true,
        Tok::Star => false,
        Tok::Class { negate, ranges } => {
            ranges.iter().any(|(a, b)| (*a..=*b).contains(&c)) != *negate
        }
    }
}

/// Parses a set starting after `[`; returns the token and the index after `]`.
fn parse_class(chars: &[char], mut i: usize) -> Result<(Tok, usize), GlobError> {
    let negate = matches!(chars.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut ranges = Vec::new();
    // A `]` first in the set is a literal, as in shells.
    let mut first = true;
    loop {
        let c = *chars.get(i).ok_or(GlobError::Unclosed)?;
        if c == ']' && !first {
            break;
        }
        if c == '/' {
            return Err(GlobError::Slash);
        }
        first = false;
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|e| *e != ']') {
            let end = chars[i + 2];
            if end < c {
                return Err(GlobError::Backwards(c, end));
            }
            ranges.push((c, end));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
    if ranges.is_empty() {
        return Err(GlobError::EmptyClass);
    }
    Ok((Tok::Class { negate, ranges }, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_patterns_by_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("ttyUSB*", "ttyUSB0", true),
            ("ttyUSB*", "ttyUSB", true),
            ("ttyUSB*", "ttyUSB10", true),
            ("ttyUSB*", "ttyACM0", false),
            ("ttyUSB*", "xttyUSB0", false),
            ("video?", "video0", true),
            ("video?", "video10", false),
            ("video[0-3]", "video2", true),
            ("video[0-3]", "video4", false),
            ("video[!0-3]", "video4", true),
            ("video[^0-3]", "video1", false),
            ("i2c-[0-9]*", "i2c-1", true),
            ("i2c-[0-9]*", "i2c-x", false),
            ("*chip*", "gpiochip0", true),
            ("*chip*", "gpio", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("a*b", "abab", true),
            ("*", "anything", true),
            ("**", "", true),
            ("[]x]", "]", true),
            ("[]x]", "x", true),
            ("[a-]", "-", true),
            ("kmsg", "kmsg", true),
            ("kmsg", "kmsg1", false),
            ("ttyUSB*", "ttyUSB\u{e9}", true),
        ];
        for (pattern, name, want) in cases {
            let g = Glob::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            assert_eq!(g.matches(name), *want, "{pattern} ~ {name}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        let cases: &[(&str, GlobError)] = &[
            ("", GlobError::Empty),
            ("tty[0-9", GlobError::Unclosed),
            ("tty[", GlobError::Unclosed),
            ("tty[!]", GlobError::Unclosed),
            ("tty[9-0]", GlobError::Backwards('9', '0')),
            ("a/b", GlobError::Slash),
        ];
        for (pattern, want) in cases {
            assert_eq!(Glob::parse(pattern).as_ref().err(), Some(want), "{pattern}");
        }
        assert!(Glob::parse("kmsg").unwrap().is_literal());
        assert!(!Glob::parse("tty*").unwrap().is_literal());
    }
}
