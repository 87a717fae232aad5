//! Retention policies and storage quotas: which published versions a sweep deletes, and
//! whether an upload fits a product's quota, with no I/O.
//!
//! Verdicts are per version (see [`judge`]) so that a sweep can stream a product's
//! versions page by page in listing order and stay in bounded memory however many
//! versions the product holds.

use super::assets::{Label, is_label_key};
use super::names::terminal_safe;
use super::version::VersionKind;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeSet;

/// Most label keys a policy may protect (as many as a version may carry).
pub const MAX_PROTECT_LABELS: usize = 32;
/// Longest day count a rule accepts: a century is "forever" for any artifact.
pub const MAX_DAYS: u64 = 36_500;
const DAY_MS: i64 = 86_400_000;

/// Which published versions a sweep keeps. Every rule is optional; `None` (null) is off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionPolicy {
    pub keep_last: Option<u64>,
    pub max_age_days: Option<u64>,
    /// Falls back to `max_age_days` when off.
    pub prerelease_max_age_days: Option<u64>,
    pub not_downloaded_days: Option<u64>,
    #[serde(deserialize_with = "null_as_default")]
    pub protect_labels: Vec<String>,
}

/// Storage limits of one product. `None` (null) is no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaPolicy {
    pub max_bytes: Option<u64>,
    pub max_versions: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProductSettings {
    #[serde(deserialize_with = "null_as_default")]
    pub retention: RetentionPolicy,
    #[serde(deserialize_with = "null_as_default")]
    pub quota: QuotaPolicy,
}

/// `"retention": null` means the same as leaving it out: everything off.
fn null_as_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

impl RetentionPolicy {
    /// Whether a sweep may delete anything. Protected labels only ever keep versions, so
    /// a policy with nothing but `protect_labels` deletes nothing and is not active.
    pub fn is_active(&self) -> bool {
        self.keep_last.is_some()
            || self.max_age_days.is_some()
            || self.prerelease_max_age_days.is_some()
            || self.not_downloaded_days.is_some()
    }

    /// The age rule for a version of this kind, if any.
    fn age_limit(&self, kind: VersionKind) -> Option<u64> {
        match kind {
            VersionKind::PreRelease => self.prerelease_max_age_days.or(self.max_age_days),
            _ => self.max_age_days,
        }
    }
}

/// The largest quota limit: what MongoDB stores as a 64-bit signed integer.
pub const MAX_LIMIT: u64 = i64::MAX as u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsError {
    KeepLastZero,
    DaysOutOfRange {
        field: &'static str,
        days: u64,
    },
    ZeroLimit(&'static str),
    /// Past what the stores keep as a signed 64-bit integer.
    LimitTooLarge(&'static str),
    TooManyLabels(usize),
    InvalidLabelKey(String),
    DuplicateLabel(String),
}

impl std::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SettingsError::KeepLastZero => f.write_str(
                "retention.keep_last must be at least 1: 0 would delete every version; use null to turn the rule off",
            ),
            SettingsError::DaysOutOfRange { field, days } => write!(
                f,
                "retention.{field} must be between 1 and {MAX_DAYS} days (got {days}); use null to turn the rule off"
            ),
            SettingsError::ZeroLimit(field) => write!(
                f,
                "quota.{field} must be at least 1; use null for no limit"
            ),
            SettingsError::LimitTooLarge(field) => write!(
                f,
                "quota.{field} must be at most {MAX_LIMIT}; use null for no limit"
            ),
            SettingsError::TooManyLabels(n) => write!(
                f,
                "retention.protect_labels holds at most {MAX_PROTECT_LABELS} label keys (got {n})"
            ),
            SettingsError::InvalidLabelKey(key) => write!(
                f,
                "retention.protect_labels: invalid label key '{}': use 1-64 characters from a-z 0-9 _ . -, starting with a letter or digit",
                terminal_safe(&key.chars().take(64).collect::<String>())
            ),
            SettingsError::DuplicateLabel(key) => {
                write!(f, "retention.protect_labels lists '{key}' twice")
            }
        }
    }
}

impl ProductSettings {
    /// Refuses settings that are well-formed JSON but make no sense (or are dangerous).
    pub fn validate(&self) -> Result<(), SettingsError> {
        let r = &self.retention;
        if r.keep_last == Some(0) {
            return Err(SettingsError::KeepLastZero);
        }
        for (field, days) in [
            ("max_age_days", r.max_age_days),
            ("prerelease_max_age_days", r.prerelease_max_age_days),
            ("not_downloaded_days", r.not_downloaded_days),
        ] {
            if let Some(days) = days.filter(|d| !(1..=MAX_DAYS).contains(d)) {
                return Err(SettingsError::DaysOutOfRange { field, days });
            }
        }
        for (field, limit) in [
            ("max_bytes", self.quota.max_bytes),
            ("max_versions", self.quota.max_versions),
        ] {
            if limit == Some(0) {
                return Err(SettingsError::ZeroLimit(field));
            }
            if limit.is_some_and(|l| l > MAX_LIMIT) {
                return Err(SettingsError::LimitTooLarge(field));
            }
        }
        if r.protect_labels.len() > MAX_PROTECT_LABELS {
            return Err(SettingsError::TooManyLabels(r.protect_labels.len()));
        }
        let mut seen = BTreeSet::new();
        for key in &r.protect_labels {
            if !is_label_key(key) {
                return Err(SettingsError::InvalidLabelKey(key.clone()));
            }
            if !seen.insert(key.as_str()) {
                return Err(SettingsError::DuplicateLabel(key.clone()));
            }
        }
        Ok(())
    }
}

/// What [`judge`] needs to know about one published version.
#[derive(Debug, Clone, Copy)]
pub struct VersionFacts<'a> {
    pub version: &'a str,
    pub kind: VersionKind,
    pub uploaded_at_ms: i64,
    pub last_download_ms: Option<i64>,
    pub labels: &'a [Label],
    /// Whether `latest` resolves to this version, with or without `prerelease=true`.
    pub is_latest: bool,
}

/// A rule that keeps a version, as the preview names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    KeepLast,
    MaxAge,
    NotDownloaded,
    ProtectedLabel,
    Latest,
}

/// Why a version goes, e.g. "older than 90 days, not among the 10 newest": one clause per
/// active rule that applies to it, in a fixed order, so the text is stable across sweeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DeleteReason(String);

impl DeleteReason {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Kept, by these rules (in [`Rule`] order). Empty when the policy is inactive or none
    /// of its active rules applies to this version.
    Keep(Vec<Rule>),
    Delete(DeleteReason),
}

/// Whether `since_ms` lies less than `days` before `now_ms`. A time in the future (clock
/// skew) counts as recent: when in doubt, keep.
fn within(days: u64, since_ms: i64, now_ms: i64) -> bool {
    let span = i64::try_from(days)
        .ok()
        .and_then(|d| d.checked_mul(DAY_MS))
        .unwrap_or(i64::MAX);
    now_ms.saturating_sub(since_ms) < span
}

fn days(n: u64) -> String {
    if n == 1 {
        "1 day".into()
    } else {
        format!("{n} days")
    }
}

/// The verdict on one published version at 0-based `position` among the product's
/// published versions in listing order (newest first). Drafts are never candidates.
///
/// An inactive policy keeps everything (`Keep` with no rules). Otherwise a version is
/// kept when any rule holds; a rule that is off keeps nothing. Two readings worth
/// knowing: `not_downloaded_days` counts from the upload when the version was never
/// downloaded (a fresh version is not deleted before anyone could fetch it), and a
/// version that no active rule applies to (a release when only
/// `prerelease_max_age_days` is set) is kept, since nothing asked for it to go.
pub fn judge(
    policy: &RetentionPolicy,
    position: u64,
    facts: &VersionFacts,
    now_ms: i64,
) -> Verdict {
    if !policy.is_active() {
        return Verdict::Keep(Vec::new());
    }
    let age_limit = policy.age_limit(facts.kind);
    let last_use = facts
        .last_download_ms
        .map_or(facts.uploaded_at_ms, |t| t.max(facts.uploaded_at_ms));
    let mut kept = Vec::new();
    if policy.keep_last.is_some_and(|n| position < n) {
        kept.push(Rule::KeepLast);
    }
    if age_limit.is_some_and(|d| within(d, facts.uploaded_at_ms, now_ms)) {
        kept.push(Rule::MaxAge);
    }
    if policy
        .not_downloaded_days
        .is_some_and(|d| within(d, last_use, now_ms))
    {
        kept.push(Rule::NotDownloaded);
    }
    if facts
        .labels
        .iter()
        .any(|l| policy.protect_labels.contains(&l.key))
    {
        kept.push(Rule::ProtectedLabel);
    }
    if facts.is_latest {
        kept.push(Rule::Latest);
    }
    if !kept.is_empty() {
        return Verdict::Keep(kept);
    }
    let mut clauses = Vec::new();
    if let Some(d) = age_limit {
        let pre = facts.kind == VersionKind::PreRelease && policy.prerelease_max_age_days.is_some();
        clauses.push(format!(
            "{}older than {}",
            if pre { "pre-release " } else { "" },
            days(d)
        ));
    }
    match policy.keep_last {
        Some(1) => clauses.push("not the newest".into()),
        Some(n) => clauses.push(format!("not among the {n} newest")),
        None => {}
    }
    if let Some(d) = policy.not_downloaded_days {
        clauses.push(format!("not downloaded in {}", days(d)));
    }
    if clauses.is_empty() {
        return Verdict::Keep(Vec::new());
    }
    Verdict::Delete(DeleteReason(clauses.join(", ")))
}

/// What a product holds: bytes of published versions, drafts and uploads in flight, and
/// versions (drafts included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub versions: u64,
}

/// A refused upload (413 `quota_exceeded`). `usage` is what the upload would have
/// brought the product to, so it always exceeds `limit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaExceeded {
    pub quota: &'static str,
    pub usage: u64,
    pub limit: u64,
}

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.quota == "max_versions" {
            return write!(
                f,
                "this upload would bring the product to {} versions of its {} version quota (max_versions)",
                self.usage, self.limit
            );
        }
        let (usage, limit) = (human_bytes(self.usage), human_bytes(self.limit));
        if usage == limit {
            // Rounded alike: give the exact counts, or the message reads "10 GiB of 10 GiB".
            write!(
                f,
                "this upload would bring the product to {usage} ({} bytes) of its {limit} ({} bytes) quota (max_bytes)",
                self.usage, self.limit
            )
        } else {
            write!(
                f,
                "this upload would bring the product to {usage} of its {limit} quota (max_bytes)"
            )
        }
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.1}");
    format!(
        "{} {}",
        text.strip_suffix(".0").unwrap_or(&text),
        UNITS[unit]
    )
}

/// Whether adding `extra_bytes` (and a version, when `new_version`) keeps the product
/// within its quota. Reaching a limit exactly is allowed; adding nothing never fails, so
/// a product over a lowered limit can still be cleaned up and read. A sum past `u64::MAX`
/// passes every limit (reported as `u64::MAX`).
pub fn check_quota(
    quota: &QuotaPolicy,
    usage: &Usage,
    extra_bytes: u64,
    new_version: bool,
) -> Result<(), QuotaExceeded> {
    let checks = [
        ("max_bytes", quota.max_bytes, usage.bytes, extra_bytes),
        (
            "max_versions",
            quota.max_versions,
            usage.versions,
            u64::from(new_version),
        ),
    ];
    for (name, limit, used, extra) in checks {
        let after = used.checked_add(extra);
        if let Some(limit) = limit.filter(|&l| extra > 0 && after.is_none_or(|a| a > l)) {
            let usage = after.unwrap_or(u64::MAX);
            return Err(QuotaExceeded {
                quota: name,
                usage,
                limit,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use VersionKind::{Other, PreRelease, Release};

    const NOW: i64 = 1_000 * DAY_MS;

    /// keep_last, max_age_days, prerelease_max_age_days, not_downloaded_days.
    fn policy(k: Option<u64>, a: Option<u64>, p: Option<u64>, d: Option<u64>) -> RetentionPolicy {
        let (keep_last, max_age_days, prerelease_max_age_days, not_downloaded_days) = (k, a, p, d);
        RetentionPolicy {
            keep_last,
            max_age_days,
            prerelease_max_age_days,
            not_downloaded_days,
            protect_labels: vec![],
        }
    }

    fn facts(kind: VersionKind, age_days: i64) -> VersionFacts<'static> {
        let uploaded_at_ms = NOW - age_days * DAY_MS;
        VersionFacts {
            version: "v",
            kind,
            uploaded_at_ms,
            last_download_ms: None,
            labels: &[],
            is_latest: false,
        }
    }

    /// The rules that keep the version at `position`, or the reason it goes.
    fn run(p: &RetentionPolicy, position: u64, f: &VersionFacts) -> Result<Vec<Rule>, String> {
        match judge(p, position, f, NOW) {
            Verdict::Keep(rules) => Ok(rules),
            Verdict::Delete(reason) => Err(reason.to_string()),
        }
    }

    #[test]
    fn keep_last_keeps_the_first_positions_only() {
        let p = policy(Some(2), None, None, None);
        let old = facts(Release, 500);
        assert_eq!(run(&p, 0, &old), Ok(vec![Rule::KeepLast]));
        assert_eq!(run(&p, 1, &old), Ok(vec![Rule::KeepLast]));
        assert_eq!(run(&p, 2, &old), Err("not among the 2 newest".into()));
    }

    #[test]
    fn max_age_keeps_young_versions_and_future_uploads() {
        let p = policy(None, Some(90), None, None);
        assert_eq!(run(&p, 5, &facts(Release, 89)), Ok(vec![Rule::MaxAge]));
        assert_eq!(run(&p, 5, &facts(Other, -3)), Ok(vec![Rule::MaxAge]));
        assert_eq!(
            run(&p, 0, &facts(Release, 90)),
            Err("older than 90 days".into())
        );
    }

    #[test]
    fn prerelease_age_falls_back_to_max_age() {
        let both = policy(None, Some(90), Some(14), None);
        let pre = facts(PreRelease, 30);
        assert_eq!(
            run(&both, 0, &pre),
            Err("pre-release older than 14 days".into())
        );
        assert_eq!(run(&both, 0, &facts(Release, 30)), Ok(vec![Rule::MaxAge]));
        let fallback = policy(None, Some(20), None, None);
        assert_eq!(run(&fallback, 0, &pre), Err("older than 20 days".into()));
        // Only the pre-release rule: releases are none of its business.
        let only_pre = policy(None, None, Some(14), None);
        assert_eq!(run(&only_pre, 9, &facts(Release, 999)), Ok(vec![]));
    }

    #[test]
    fn not_downloaded_counts_from_the_last_download_or_the_upload() {
        let p = policy(None, None, None, Some(30));
        let mut f = facts(Release, 100);
        assert_eq!(run(&p, 0, &f), Err("not downloaded in 30 days".into()));
        f.last_download_ms = Some(NOW - 29 * DAY_MS);
        assert_eq!(run(&p, 0, &f), Ok(vec![Rule::NotDownloaded]));
        f.last_download_ms = Some(NOW - 31 * DAY_MS);
        assert!(run(&p, 0, &f).is_err());
        assert_eq!(
            run(&p, 0, &facts(Release, 2)),
            Ok(vec![Rule::NotDownloaded])
        );
    }

    #[test]
    fn protected_labels_and_latest_are_kept_when_the_policy_is_active() {
        let p = RetentionPolicy {
            protect_labels: vec!["keep".into()],
            ..policy(Some(1), None, None, None)
        };
        let label = |key: &str, value: &str| Label {
            key: key.into(),
            value: value.into(),
        };
        let (protected, other) = ([label("keep", "")], [label("channel", "keep")]);
        let mut f = facts(Release, 500);
        f.labels = &protected;
        assert_eq!(run(&p, 7, &f), Ok(vec![Rule::ProtectedLabel]));
        f.labels = &other;
        assert_eq!(run(&p, 7, &f), Err("not the newest".into()));
        f.is_latest = true;
        assert_eq!(run(&p, 7, &f), Ok(vec![Rule::Latest]));
    }

    #[test]
    fn combined_rules_keep_if_any_holds_and_list_every_one() {
        let p = policy(Some(3), Some(90), None, None);
        let (young, old) = (facts(Release, 10), facts(Release, 100));
        assert_eq!(run(&p, 1, &young), Ok(vec![Rule::KeepLast, Rule::MaxAge]));
        assert_eq!(run(&p, 1, &old), Ok(vec![Rule::KeepLast]));
        assert_eq!(run(&p, 50, &young), Ok(vec![Rule::MaxAge]));
        assert!(run(&p, 3, &old).is_err());
    }

    #[test]
    fn an_inactive_policy_deletes_nothing() {
        let p = RetentionPolicy {
            protect_labels: vec!["keep".into()],
            ..Default::default()
        };
        assert!(!p.is_active() && !RetentionPolicy::default().is_active());
        assert_eq!(run(&p, 9_999, &facts(PreRelease, 9_999)), Ok(vec![]));
    }

    #[test]
    fn delete_reasons_name_the_active_rules_in_a_fixed_order() {
        // [keep_last, max_age_days, prerelease_max_age_days, not_downloaded_days], 0 = off.
        let table = [
            (
                [10, 90, 0, 0],
                Release,
                "older than 90 days, not among the 10 newest",
            ),
            (
                [1, 1, 0, 1],
                Other,
                "older than 1 day, not the newest, not downloaded in 1 day",
            ),
            (
                [0, 90, 14, 30],
                PreRelease,
                "pre-release older than 14 days, not downloaded in 30 days",
            ),
            ([5, 0, 14, 0], Release, "not among the 5 newest"),
            ([0, 60, 14, 0], Other, "older than 60 days"),
        ];
        let on = |n: u64| (n > 0).then_some(n);
        for ([k, a, p, d], kind, want) in table {
            let p = policy(on(k), on(a), on(p), on(d));
            assert_eq!(run(&p, 100, &facts(kind, 200)), Err(want.into()), "{p:?}");
        }
    }

    #[test]
    fn settings_parse_with_nulls_and_refuse_unknown_keys() {
        let json = r#"{"retention": {"keep_last": 10, "not_downloaded_days": null, "protect_labels": ["keep"]}, "quota": null}"#;
        let s: ProductSettings = serde_json::from_str(json).unwrap();
        assert_eq!(s.retention.keep_last, Some(10));
        assert_eq!(s.quota, QuotaPolicy::default());
        assert!(s.validate().is_ok());
        let off = serde_json::json!({"max_bytes": null, "max_versions": null});
        assert_eq!(serde_json::to_value(&s.quota).unwrap(), off);
        for bad in [r#"{"retention": {"keep_lats": 1}}"#, r#"{"retain": {}}"#] {
            assert!(
                serde_json::from_str::<ProductSettings>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn validation_refuses_dangerous_or_malformed_settings() {
        let check = |retention: RetentionPolicy| {
            ProductSettings {
                retention,
                ..Default::default()
            }
            .validate()
        };
        let labels = |keys: &[&str]| RetentionPolicy {
            protect_labels: keys.iter().map(|k| k.to_string()).collect(),
            ..Default::default()
        };
        let err = check(policy(Some(0), None, None, None)).unwrap_err();
        assert_eq!(err, SettingsError::KeepLastZero);
        assert!(err.to_string().contains("delete every version"));
        for days in [0, MAX_DAYS + 1] {
            assert!(check(policy(None, Some(days), None, None)).is_err());
        }
        assert!(check(policy(None, None, None, Some(MAX_DAYS))).is_ok());
        let many: Vec<String> = (0..=MAX_PROTECT_LABELS).map(|i| format!("k{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(check(labels(&many)), Err(SettingsError::TooManyLabels(33)));
        assert_eq!(
            check(labels(&["Keep"])),
            Err(SettingsError::InvalidLabelKey("Keep".into()))
        );
        assert_eq!(
            check(labels(&["a", "a"])),
            Err(SettingsError::DuplicateLabel("a".into()))
        );
        let quota = QuotaPolicy {
            max_versions: Some(0),
            ..Default::default()
        };
        let zero = ProductSettings {
            quota,
            ..Default::default()
        }
        .validate();
        assert_eq!(zero, Err(SettingsError::ZeroLimit("max_versions")));
    }

    #[test]
    fn quota_allows_reaching_the_limit_and_refuses_one_byte_more() {
        let q = QuotaPolicy {
            max_bytes: Some(10 << 30),
            max_versions: None,
        };
        let usage = Usage {
            bytes: 9 << 30,
            versions: 3,
        };
        assert!(check_quota(&q, &usage, 1 << 30, true).is_ok());
        let err = check_quota(&q, &usage, (1 << 30) + 1, false).unwrap_err();
        let want = QuotaExceeded {
            quota: "max_bytes",
            usage: (10 << 30) + 1,
            limit: 10 << 30,
        };
        assert_eq!(err, want);
        assert!(err.to_string().contains("(10737418241 bytes)"), "{err}");
        let err = check_quota(&q, &usage, 2 << 30, false)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "this upload would bring the product to 11 GiB of its 10 GiB quota (max_bytes)"
        );
        assert!(
            check_quota(
                &q,
                &Usage {
                    bytes: 20 << 30,
                    versions: 3
                },
                0,
                false
            )
            .is_ok()
        );
    }

    #[test]
    fn max_versions_counts_a_version_only_when_it_is_new() {
        let q = QuotaPolicy {
            max_bytes: None,
            max_versions: Some(3),
        };
        assert!(
            check_quota(
                &q,
                &Usage {
                    bytes: 0,
                    versions: 2
                },
                5,
                true
            )
            .is_ok()
        );
        let full = Usage {
            bytes: 0,
            versions: 3,
        };
        assert!(check_quota(&q, &full, 5, false).is_ok());
        let err = check_quota(&q, &full, 5, true).unwrap_err();
        assert_eq!((err.quota, err.usage, err.limit), ("max_versions", 4, 3));
    }

    #[test]
    fn quota_arithmetic_does_not_overflow_at_u64_max() {
        let q = QuotaPolicy {
            max_bytes: Some(u64::MAX),
            max_versions: Some(u64::MAX),
        };
        let usage = Usage {
            bytes: u64::MAX - 1,
            versions: u64::MAX - 1,
        };
        assert!(check_quota(&q, &usage, 1, true).is_ok());
        let full = Usage {
            bytes: u64::MAX,
            versions: u64::MAX,
        };
        let err = check_quota(&q, &full, u64::MAX, true).unwrap_err();
        assert_eq!((err.quota, err.usage), ("max_bytes", u64::MAX));
        assert!(err.to_string().contains("EiB"), "{err}");
        assert_eq!(
            check_quota(&q, &full, 0, true).unwrap_err().quota,
            "max_versions"
        );
    }

    proptest::proptest! {
        #[test]
        fn judge_never_panics(
            k: Option<u64>, a: Option<u64>, p: Option<u64>, d: Option<u64>,
            position: u64, uploaded: i64, downloaded: Option<i64>, now: i64, pre: bool,
        ) {
            let mut f = facts(if pre { PreRelease } else { Release }, 0);
            (f.uploaded_at_ms, f.last_download_ms) = (uploaded, downloaded);
            let _ = judge(&policy(k, a, p, d), position, &f, now);
        }
    }
}
