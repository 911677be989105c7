//! Debian package versions (`[epoch:]upstream[-revision]`) and their
//! ordering, implemented exactly as dpkg's `verrevcmp`/`dpkg_version_compare`
//! (lib/dpkg/version.c): epochs compare numerically, then upstream and
//! revision compare part by part, non-digit runs by a modified ASCII order in
//! which `~` sorts before everything (even the end of the string) and
//! letters sort before all other characters, digit runs numerically.
//!
//! Parsing is as lenient as apt's: only what dpkg itself refuses outright
//! (empty version, non-numeric epoch, empty upstream or revision, embedded
//! whitespace) is an error, because a version we cannot order must not be
//! guessed.

use std::cmp::Ordering;

/// A parsed Debian version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DebVersion {
    pub epoch: u32,
    pub upstream: String,
    /// Empty when the version has no `-revision` (same order as `-0`).
    pub revision: String,
}

/// Why a version string cannot be ordered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Debian version {version:?}: {why}")]
pub struct VersionError {
    pub version: String,
    pub why: &'static str,
}

impl DebVersion {
    /// Parse as dpkg's `parseversion` does (minus its warnings).
    pub fn parse(s: &str) -> Result<DebVersion, VersionError> {
        let err = |why| VersionError { version: s.to_string(), why };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("empty version"));
        }
        if t.chars().any(char::is_whitespace) {
            return Err(err("embedded whitespace"));
        }
        let (epoch, rest) = match t.split_once(':') {
            Some((e, rest)) => {
                if e.is_empty() {
                    return Err(err("empty epoch"));
                }
                if !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err("epoch is not a number"));
                }
                let epoch = e.parse::<u32>().map_err(|_| err("epoch too large"))?;
                if epoch > i32::MAX as u32 {
                    return Err(err("epoch too large"));
                }
                (epoch, rest)
            }
            None => (0, t),
        };
        if rest.is_empty() {
            return Err(err("nothing after the epoch colon"));
        }
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((u, r)) => {
                if r.is_empty() {
                    return Err(err("empty revision"));
                }
                (u, r)
            }
            None => (rest, ""),
        };
        if upstream.is_empty() {
            return Err(err("empty upstream version"));
        }
        Ok(DebVersion { epoch, upstream: upstream.to_string(), revision: revision.to_string() })
    }
}

impl std::fmt::Display for DebVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.epoch != 0 {
            write!(f, "{}:", self.epoch)?;
        }
        f.write_str(&self.upstream)?;
        if !self.revision.is_empty() {
            write!(f, "-{}", self.revision)?;
        }
        Ok(())
    }
}

impl Ord for DebVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(self.upstream.as_bytes(), other.upstream.as_bytes()))
            .then_with(|| verrevcmp(self.revision.as_bytes(), other.revision.as_bytes()))
    }
}

impl PartialOrd for DebVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compare two version strings; an unparsable one is an error.
pub fn compare(a: &str, b: &str) -> Result<Ordering, VersionError> {
    Ok(DebVersion::parse(a)?.cmp(&DebVersion::parse(b)?))
}

/// dpkg's `order()`: the weight of one byte of a non-digit run. The end of
/// the string is 0, so `~` (-1) sorts before it and everything else after.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0usize, 0usize);
    let at = |s: &[u8], k: usize| s.get(k).copied();
    let is_digit = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_digit());
    while at(a, i).is_some() || at(b, j).is_some() {
        while (at(a, i).is_some() && !is_digit(at(a, i))) || (at(b, j).is_some() && !is_digit(at(b, j))) {
            let (ac, bc) = (order(at(a, i)), order(at(b, j)));
            if ac != bc {
                return ac.cmp(&bc);
            }
            // Equal weights mean neither side is at its end here (see order()).
            i += 1;
            j += 1;
        }
        while at(a, i) == Some(b'0') {
            i += 1;
        }
        while at(b, j) == Some(b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while is_digit(at(a, i)) && is_digit(at(b, j)) {
            if first_diff == Ordering::Equal {
                first_diff = at(a, i).cmp(&at(b, j));
            }
            i += 1;
            j += 1;
        }
        if is_digit(at(a, i)) {
            return Ordering::Greater;
        }
        if is_digit(at(b, j)) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal as E, Greater as G, Less as L};

    #[test]
    fn dpkg_test_suite_cases() {
        // From dpkg's lib/dpkg/t/t-version.c and the Debian Policy's examples.
        let cases: &[(&str, &str, Ordering)] = &[
            ("0", "0", E),
            ("0", "00", E),
            ("0:0", "0", E),
            ("0:0-0", "0", E),
            ("1.0", "1.0-0", E),
            ("1", "0", G),
            ("0", "1", L),
            ("1:0", "0:1", G),
            ("1:2.0", "3.0", G),
            ("0.0", "0.0", E),
            ("1.2.3", "1.2.3", E),
            ("1.2.3", "1.2.4", L),
            ("1.2.10", "1.2.9", G),
            ("1.0-1", "1.0-2", L),
            ("1.0-2", "1.0-10", L),
            ("1.0~rc1", "1.0", L),
            ("1.0~rc1-1", "1.0-1", L),
            ("1.0~", "1.0", L),
            ("1.0~~", "1.0~", L),
            ("1.0~~a", "1.0~", L),
            ("1.0~", "1.0~a", L),
            ("1.0", "1.0+b1", L),
            ("1.0", "1.0a", L),
            ("1.0a", "1.0.", L), // letters sort before non-letters
            ("1.0+", "1.0.", L), // '+' (43) before '.' (46)
            ("1.0", "1.0.1", L),
            ("a", "b", L),
            ("1.0-a", "1.0-b", L),
            ("0:1.0-1", "1.0-1", E),
            ("1:1.18:36", "1:1.18:37", L), // colons in upstream after an epoch
            ("2:1.0", "1:9.9", G),
            ("1.0-0ubuntu1", "1.0-0ubuntu2", L),
            ("2.36-9+deb12u7", "2.36-9+deb12u14", L),
            ("252.38-1~deb12u1", "252.39-1~deb12u2", L),
            ("5.36.0-7+deb12u3", "5.36.0-7+deb12u4", L),
            ("1:2.38.1-5+deb12u1", "2.38.1-5+deb12u3", G),
            ("1.2-3-4", "1.2-3-5", L), // the revision is after the last hyphen
            ("0001", "1", E),
            ("1.001", "1.1", E),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b).unwrap(), *want, "{a} vs {b}");
            assert_eq!(compare(b, a).unwrap(), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn parse_splits_and_rejects_like_dpkg() {
        let v = DebVersion::parse("1:2.38.1-5+deb12u3").unwrap();
        assert_eq!((v.epoch, v.upstream.as_str(), v.revision.as_str()), (1, "2.38.1", "5+deb12u3"));
        assert_eq!(v.to_string(), "1:2.38.1-5+deb12u3");
        let v = DebVersion::parse("1.2-3-4").unwrap();
        assert_eq!((v.upstream.as_str(), v.revision.as_str()), ("1.2-3", "4"));
        for bad in ["", "  ", "a:1.0", ":1.0", "1:", "1.0-", "-1", "1 0", "99999999999:1"] {
            assert!(DebVersion::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    fn version_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        // A small alphabet so that random triples are often related.
        "([0-2]:)?[0-9][0-9a~+.]{0,5}(-[0-9a~+.]{1,3})?"
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = DebVersion::parse(&s);
            let _ = compare(&s, "1.0");
        }

        #[test]
        fn compare_never_panics_on_bytes(a in proptest::collection::vec(proptest::num::u8::ANY, 0..12),
                                         b in proptest::collection::vec(proptest::num::u8::ANY, 0..12)) {
            let _ = verrevcmp(&a, &b);
        }

        #[test]
        fn antisymmetric(a in version_strategy(), b in version_strategy()) {
            let (x, y) = (DebVersion::parse(&a).unwrap(), DebVersion::parse(&b).unwrap());
            proptest::prop_assert_eq!(x.cmp(&y), y.cmp(&x).reverse());
            proptest::prop_assert_eq!(x.cmp(&x), Ordering::Equal);
        }

        #[test]
        fn transitive(a in version_strategy(), b in version_strategy(), c in version_strategy()) {
            let (x, y, z) = (DebVersion::parse(&a).unwrap(), DebVersion::parse(&b).unwrap(), DebVersion::parse(&c).unwrap());
            if x <= y && y <= z {
                proptest::prop_assert!(x <= z, "{x} <= {y} <= {z} but not {x} <= {z}");
            }
            if x < y && y < z {
                proptest::prop_assert!(x < z);
            }
        }
    }
}
