//! Version ordering: semantic versions (an optional leading `v`) sort by semver
//! precedence; anything else sorts after them, newest upload first.

use std::cmp::Ordering;

pub fn parse_semver(version: &str) -> Option<semver::Version> {
    let trimmed = version.strip_prefix(['v', 'V']).unwrap_or(version);
    semver::Version::parse(trimmed).ok()
}

/// Orders versions newest-first: semver releases by precedence (descending), then
/// non-semver names by upload time (descending), ties broken by name.
pub fn newest_first(a: (&str, i64), b: (&str, i64)) -> Ordering {
    match (parse_semver(a.0), parse_semver(b.0)) {
        (Some(x), Some(y)) => y.cmp(&x).then_with(|| b.0.cmp(a.0)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => b.1.cmp(&a.1).then_with(|| b.0.cmp(a.0)),
    }
}

/// Picks what `latest` means among `(name, uploaded_at)` pairs: the highest semver
/// release (pre-releases only when allowed), else the newest upload.
pub fn pick_latest<'a>(
    versions: impl IntoIterator<Item = (&'a str, i64)>,
    allow_prerelease: bool,
) -> Option<&'a str> {
    let all: Vec<(&str, i64)> = versions.into_iter().collect();
    let best_semver = all
        .iter()
        .filter_map(|(name, _)| parse_semver(name).map(|v| (v, *name)))
        .filter(|(v, _)| allow_prerelease || v.pre.is_empty())
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, name)| name);
    if best_semver.is_some() {
        return best_semver;
    }
    if all.iter().any(|(name, _)| parse_semver(name).is_some()) {
        // Only pre-releases exist and they were not asked for.
        return None;
    }
    all.iter()
        .max_by_key(|(name, at)| (*at, *name))
        .map(|(name, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_sorts_before_other_names() {
        let mut v = [
            ("nightly", 5),
            ("v1.10.0", 1),
            ("v1.2.0", 2),
            ("2.0.0-rc.1", 3),
            ("build-7", 9),
        ];
        v.sort_by(|a, b| newest_first(*a, *b));
        let names: Vec<&str> = v.iter().map(|x| x.0).collect();
        assert_eq!(
            names,
            ["2.0.0-rc.1", "v1.10.0", "v1.2.0", "build-7", "nightly"]
        );
    }

    #[test]
    fn latest_skips_prereleases_unless_asked() {
        let v = [("v1.0.0", 1), ("v1.1.0-beta.1", 2), ("v0.9.0", 3)];
        assert_eq!(pick_latest(v, false), Some("v1.0.0"));
        assert_eq!(pick_latest(v, true), Some("v1.1.0-beta.1"));
    }

    #[test]
    fn latest_falls_back_to_newest_upload() {
        let v = [("abc", 10), ("def", 20), ("ghi", 15)];
        assert_eq!(pick_latest(v, false), Some("def"));
        assert_eq!(pick_latest(std::iter::empty(), false), None);
    }
}
