//! Version ordering: semantic versions (an optional leading `v`) sort by descending
//! semver precedence; anything else sorts after them, newest upload first.

pub fn parse_semver(version: &str) -> Option<semver::Version> {
    let trimmed = version.strip_prefix(['v', 'V']).unwrap_or(version);
    semver::Version::parse(trimmed).ok()
}

/// What a version name is, for `latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionKind {
    /// A semantic version without pre-release part.
    Release,
    /// A semantic version with a pre-release part (`1.0.0-rc.1`).
    PreRelease,
    /// Anything else.
    #[default]
    Other,
}

pub fn kind_of(version: &str) -> VersionKind {
    match parse_semver(version) {
        Some(v) if v.pre.is_empty() => VersionKind::Release,
        Some(_) => VersionKind::PreRelease,
        None => VersionKind::Other,
    }
}

/// What `latest` means among `(kind, sort_key, item)`: the first release in listing order
/// (or release or pre-release, when pre-releases are allowed); when no version is semver
/// at all, the newest upload; nothing when only pre-releases exist and were not asked for.
pub fn latest_of<'a, T>(
    items: impl IntoIterator<Item = (VersionKind, &'a str, T)>,
    allow_prerelease: bool,
) -> Option<T> {
    let mut best: [Option<(&'a str, T)>; 3] = [None, None, None];
    for (kind, key, item) in items {
        let slot = &mut best[kind as usize];
        if slot.as_ref().is_none_or(|(k, _)| key < *k) {
            *slot = Some((key, item));
        }
    }
    let [release, pre, other] = best;
    let semver = match (release, pre) {
        (Some(r), Some(p)) if allow_prerelease => Some(if p.0 < r.0 { p } else { r }),
        (Some(r), _) => Some(r),
        (None, Some(p)) if allow_prerelease => Some(p),
        (None, Some(_)) => return None,
        (None, None) => None,
    };
    semver.or(other).map(|(_, item)| item)
}

/// A key whose ascending byte order is the listing order of `newest_first`: semantic
/// versions by descending precedence, then other names by descending upload time. Stores
/// index it, so a page of a long listing is one range query.
pub fn sort_key(version: &str, uploaded_at: i64) -> String {
    let mut key = String::with_capacity(96);
    match parse_semver(version) {
        Some(v) => {
            key.push('0');
            for n in [v.major, v.minor, v.patch] {
                push_desc_u64(&mut key, n);
            }
            if v.pre.is_empty() {
                // A release sorts before its pre-releases.
                key.push('0');
            } else {
                key.push('1');
                for ident in v.pre.as_str().split('.') {
                    match ident.parse::<u64>() {
                        // Alphanumeric identifiers rank above numeric ones.
                        Ok(n) if ident.bytes().all(|b| b.is_ascii_digit()) => {
                            key.push('1');
                            push_desc_u64(&mut key, n);
                        }
                        _ => {
                            key.push('0');
                            push_desc_str(&mut key, ident);
                        }
                    }
                }
                // More identifiers rank above fewer when the shared ones are equal.
                key.push('2');
            }
        }
        None => {
            key.push('1');
            push_desc_u64(&mut key, u64::try_from(uploaded_at).unwrap_or(0));
        }
    }
    // Tie-break (e.g. build metadata): the name, descending.
    key.push('.');
    push_desc_str(&mut key, version);
    key
}

fn push_desc_u64(key: &mut String, n: u64) {
    key.push_str(&format!("{:020}", u64::MAX - n));
}

/// Each byte complemented (as hex), then a terminator above every complemented
/// printable byte, so a longer string sorts before its prefix.
fn push_desc_str(key: &mut String, s: &str) {
    for b in s.bytes() {
        key.push_str(&format!("{:02x}", 255 - b));
    }
    key.push_str("ff");
}

#[cfg(test)]
mod sort_key_tests {
    use super::*;
    use std::cmp::Ordering;

    /// The listing rule, stated directly, as the reference for the sort keys.
    pub fn newest_first(a: (&str, i64), b: (&str, i64)) -> Ordering {
        match (parse_semver(a.0), parse_semver(b.0)) {
            (Some(x), Some(y)) => y.cmp(&x).then_with(|| b.0.cmp(a.0)),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => b.1.cmp(&a.1).then_with(|| b.0.cmp(a.0)),
        }
    }

    #[test]
    fn sort_keys_order_like_newest_first() {
        let names = [
            ("1.0.0", 1),
            ("v1.0.0-rc.1", 2),
            ("1.0.0-rc.2", 3),
            ("1.0.0-rc.10", 4),
            ("1.0.0-beta", 5),
            ("1.0.0-beta.2", 6),
            ("1.0.0-alpha.beta", 7),
            ("1.0.0-alpha", 8),
            ("1.0.0-alpha.1", 9),
            ("1.0.0-1", 10),
            ("1.0.0-1.2", 11),
            ("2.0.0", 12),
            ("1.10.0", 13),
            ("1.9.9", 14),
            ("0.0.1", 15),
            ("nightly", 16),
            ("build-7", 17),
            ("zeta", 18),
            ("10.0.0", 19),
            ("1.0.0+build.1", 20),
            ("1.0.0+build.2", 21),
        ];
        let mut by_rule = names.to_vec();
        by_rule.sort_by(|a, b| newest_first(*a, *b));
        let mut by_key = names.to_vec();
        by_key.sort_by_key(|(n, at)| sort_key(n, *at));
        let rule: Vec<&str> = by_rule.iter().map(|x| x.0).collect();
        let key: Vec<&str> = by_key.iter().map(|x| x.0).collect();
        assert_eq!(key, rule);
    }

    #[test]
    fn latest_prefers_releases_then_falls_back_to_the_newest_upload() {
        fn pick(names: &[(&'static str, i64)], pre: bool) -> Option<&'static str> {
            let keyed: Vec<(VersionKind, String, &'static str)> = names
                .iter()
                .map(|(n, at)| (kind_of(n), sort_key(n, *at), *n))
                .collect();
            latest_of(keyed.iter().map(|(k, s, n)| (*k, s.as_str(), *n)), pre)
        }
        let mixed = [
            ("v1.0.0", 1),
            ("v1.1.0-beta.1", 2),
            ("v0.9.0", 3),
            ("nightly", 4),
        ];
        assert_eq!(pick(&mixed, false), Some("v1.0.0"));
        assert_eq!(pick(&mixed, true), Some("v1.1.0-beta.1"));
        assert_eq!(
            pick(&[("abc", 10), ("def", 20), ("ghi", 15)], false),
            Some("def")
        );
        assert_eq!(pick(&[("1.0.0-rc.1", 1), ("nightly", 2)], false), None);
        assert_eq!(pick(&[], false), None);
    }

    #[test]
    fn kinds() {
        assert_eq!(kind_of("v1.2.3"), VersionKind::Release);
        assert_eq!(kind_of("1.2.3-rc.1"), VersionKind::PreRelease);
        assert_eq!(kind_of("nightly"), VersionKind::Other);
    }
}
