//! Trusted publishing: which CI identities (OIDC tokens of an issuer, with claims that
//! match) may exchange their token for a short-lived Depot token on a product, and with
//! which rights. Pure rules: the policy's shape, claim matching with `*` globs, and how
//! several matching policies combine.

use crate::domain::permissions::Grant;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Claims of which a policy must pin at least one: without, it would trust every
/// repository of the issuer (GitHub: `repository`; GitLab: `project_path`; any: `sub`).
pub const PINNING_CLAIMS: &[&str] = &["repository", "project_path", "sub"];
/// Most claims one policy matches on.
pub const MAX_CLAIMS: usize = 16;
/// Longest claim value (pattern) a policy holds.
pub const MAX_CLAIM_VALUE: usize = 512;
/// Most policies one product holds.
pub const MAX_POLICIES_PER_PRODUCT: usize = 64;
/// Shortest lifetime of an exchanged token.
pub const MIN_TTL_SECONDS: u64 = 60;

/// Rights a policy may give: never maintainer, never admin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustPermissions {
    pub upload: bool,
    pub download: bool,
    pub delete: bool,
}

impl TrustPermissions {
    pub fn grant(&self) -> Grant {
        Grant {
            maintainer: false,
            download: self.download,
            upload: self.upload,
            delete: self.delete,
        }
    }
}

/// What `PUT /product/trust/{product}` takes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustPolicyInput {
    pub issuer: String,
    pub claims: BTreeMap<String, String>,
    pub permissions: TrustPermissions,
    pub ttl_seconds: Option<u64>,
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustPolicy {
    /// `trust_` + 16 hex.
    pub id: String,
    pub product: String,
    pub issuer: String,
    pub claims: BTreeMap<String, String>,
    pub permissions: TrustPermissions,
    pub ttl_seconds: u64,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Public id of the token that created it.
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustError {
    IssuerNotAllowed(String),
    NoPinningClaim,
    TooManyClaims,
    InvalidClaimName(String),
    InvalidClaimValue(String),
    NoPermission,
    TtlOutOfRange { ttl: u64, max: u64 },
}

impl std::fmt::Display for TrustError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrustError::IssuerNotAllowed(issuer) => write!(
                f,
                "issuer '{}' is not one this server trusts (DEPOT_OIDC_ISSUERS)",
                crate::domain::names::terminal_safe(&issuer.chars().take(200).collect::<String>())
            ),
            TrustError::NoPinningClaim => f.write_str(
                "a policy must pin the repository: set repository or project_path without '*', \
                 or sub with a literal prefix naming it (e.g. 'repo:org/repo:*')",
            ),
            TrustError::TooManyClaims => write!(f, "a policy matches at most {MAX_CLAIMS} claims"),
            TrustError::InvalidClaimName(name) => write!(
                f,
                "invalid claim name '{}': use 1-64 characters from a-z A-Z 0-9 _",
                crate::domain::names::terminal_safe(&name.chars().take(64).collect::<String>())
            ),
            TrustError::InvalidClaimValue(name) => write!(
                f,
                "the value of claim '{name}' must be 1-{MAX_CLAIM_VALUE} characters without control characters, and not only '*'"
            ),
            TrustError::NoPermission => {
                f.write_str("a policy must give at least one of upload, download, delete")
            }
            TrustError::TtlOutOfRange { ttl, max } => write!(
                f,
                "ttl_seconds must be between {MIN_TTL_SECONDS} and {max} (DEPOT_OIDC_MAX_TTL_SECONDS), got {ttl}"
            ),
        }
    }
}

/// Whether a claim names one repository: `repository` or `project_path` exactly (no
/// `*`), or `sub` exactly or with a literal prefix up to a `:` that includes the
/// repository's path (`repo:org/repo:*`, `project_path:group/project:*`).
fn pins_repository(name: &str, value: &str) -> bool {
    if !PINNING_CLAIMS.contains(&name) {
        return false;
    }
    match value.find('*') {
        None => true,
        Some(_) if name != "sub" => false,
        Some(star) => {
            let prefix = &value[..star];
            prefix.ends_with(':') && prefix.contains('/')
        }
    }
}

fn is_claim_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl TrustPolicyInput {
    /// Checks the policy against the rules and the server's limits; the TTL defaults to
    /// the server's maximum.
    pub fn validate(&self, allowed_issuers: &[String], max_ttl: u64) -> Result<u64, TrustError> {
        if !allowed_issuers.contains(&self.issuer) {
            return Err(TrustError::IssuerNotAllowed(self.issuer.clone()));
        }
        if self.claims.len() > MAX_CLAIMS {
            return Err(TrustError::TooManyClaims);
        }
        for (name, value) in &self.claims {
            if !is_claim_name(name) {
                return Err(TrustError::InvalidClaimName(name.clone()));
            }
            if value.is_empty()
                || value.chars().count() > MAX_CLAIM_VALUE
                || value.chars().any(char::is_control)
                || value.chars().all(|c| c == '*')
            {
                return Err(TrustError::InvalidClaimValue(name.clone()));
            }
        }
        if !self
            .claims
            .iter()
            .any(|(name, value)| pins_repository(name, value))
        {
            return Err(TrustError::NoPinningClaim);
        }
        let p = &self.permissions;
        if !(p.upload || p.download || p.delete) {
            return Err(TrustError::NoPermission);
        }
        let ttl = self.ttl_seconds.unwrap_or(max_ttl);
        if !(MIN_TTL_SECONDS..=max_ttl).contains(&ttl) {
            return Err(TrustError::TtlOutOfRange { ttl, max: max_ttl });
        }
        Ok(ttl)
    }
}

/// Whether `value` matches `pattern`: exactly, or as a glob where each `*` stands for any
/// run of characters (`/` included). Matching is linear in both lengths (no backtracking
/// blow-up on hostile patterns).
pub fn glob_matches(pattern: &str, value: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == value;
    }
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    let (mut pi, mut vi) = (0, 0);
    // The last `*` seen and the value position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, vi));
            pi += 1;
        } else if pi < p.len() && p[pi] == v[vi] {
            pi += 1;
            vi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether the token's claims satisfy every claim of the policy. A claim the token lacks,
/// or holds as something other than a string, does not match.
pub fn policy_matches(policy: &TrustPolicy, claims: &serde_json::Map<String, Value>) -> bool {
    policy.claims.iter().all(|(name, pattern)| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .is_some_and(|value| glob_matches(pattern, value))
    })
}

/// What an exchange gives: per product, the union of the matching policies' rights, and
/// the shortest of their lifetimes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub grants: BTreeMap<String, Grant>,
    pub ttl_seconds: u64,
    pub policy_ids: Vec<String>,
}

/// Combines the policies that match (`None` when none does).
pub fn combine<'a>(matching: impl IntoIterator<Item = &'a TrustPolicy>) -> Option<Exchange> {
    let mut out: Option<Exchange> = None;
    for policy in matching {
        let ex = out.get_or_insert_with(|| Exchange {
            grants: BTreeMap::new(),
            ttl_seconds: u64::MAX,
            policy_ids: Vec::new(),
        });
        let g = ex.grants.entry(policy.product.clone()).or_default();
        let add = policy.permissions.grant();
        g.download |= add.download;
        g.upload |= add.upload;
        g.delete |= add.delete;
        ex.ttl_seconds = ex.ttl_seconds.min(policy.ttl_seconds);
        ex.policy_ids.push(policy.id.clone());
    }
    out
}

/// When the exchanged token expires (Unix ms): `ttl` from now, never later than the
/// JWT's own expiry plus `ttl`.
pub fn exchanged_expiry(now_ms: i64, jwt_exp_seconds: i64, ttl_seconds: u64) -> i64 {
    let ttl_ms = (ttl_seconds as i64).saturating_mul(1000);
    now_ms
        .saturating_add(ttl_ms)
        .min(jwt_exp_seconds.saturating_mul(1000).saturating_add(ttl_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(claims: Value) -> TrustPolicyInput {
        serde_json::from_value(json!({
            "issuer": "https://token.actions.githubusercontent.com",
            "claims": claims,
            "permissions": {"upload": true},
        }))
        .unwrap()
    }

    fn issuers() -> Vec<String> {
        vec!["https://token.actions.githubusercontent.com".to_string()]
    }

    #[test]
    fn a_policy_must_pin_the_repository_and_give_a_right_within_the_ttl() {
        assert_eq!(
            input(json!({"repository": "org/repo"})).validate(&issuers(), 900),
            Ok(900)
        );
        assert_eq!(
            input(json!({"ref": "refs/tags/v*"})).validate(&issuers(), 900),
            Err(TrustError::NoPinningClaim)
        );
        for pinned in PINNING_CLAIMS {
            assert!(
                input(json!({ *pinned: "org/x" }))
                    .validate(&issuers(), 900)
                    .is_ok()
            );
        }
        // Wildcards that match every repository pin nothing.
        for (name, value) in [
            ("repository", "*/*"),
            ("repository", "org/*"),
            ("project_path", "*/*"),
            ("sub", "repo:*"),
            ("sub", "*:ref:refs/tags/*"),
            ("sub", "repo:org/*"),
        ] {
            assert_eq!(
                input(json!({ name: value })).validate(&issuers(), 900),
                Err(TrustError::NoPinningClaim),
                "{name}={value}"
            );
        }
        for (name, value) in [
            ("sub", "repo:org/repo:*"),
            ("sub", "project_path:group/project:*"),
        ] {
            assert!(
                input(json!({ name: value }))
                    .validate(&issuers(), 900)
                    .is_ok()
            );
        }
        // A pin of nothing but `*` pins nothing.
        assert!(matches!(
            input(json!({"repository": "**"})).validate(&issuers(), 900),
            Err(TrustError::InvalidClaimValue(_))
        ));
        let mut p = input(json!({"repository": "org/repo"}));
        p.permissions = TrustPermissions::default();
        assert_eq!(p.validate(&issuers(), 900), Err(TrustError::NoPermission));
        p.permissions.download = true;
        p.ttl_seconds = Some(901);
        assert!(matches!(
            p.validate(&issuers(), 900),
            Err(TrustError::TtlOutOfRange { .. })
        ));
        p.ttl_seconds = Some(59);
        assert!(p.validate(&issuers(), 900).is_err());
        p.ttl_seconds = Some(600);
        assert_eq!(p.validate(&issuers(), 900), Ok(600));
        p.issuer = "https://gitlab.com".into();
        assert!(matches!(
            p.validate(&issuers(), 900),
            Err(TrustError::IssuerNotAllowed(_))
        ));
        assert!(matches!(
            input(json!({"repository": "a", "bad-name": "x"})).validate(&issuers(), 900),
            Err(TrustError::InvalidClaimName(_))
        ));
        // Maintainer and admin cannot even be written.
        assert!(
            serde_json::from_value::<TrustPolicyInput>(json!({
                "issuer": "x", "claims": {}, "permissions": {"maintainer": true}
            }))
            .is_err()
        );
    }

    #[test]
    fn globs_match_any_run_of_characters_and_nothing_else() {
        for (pattern, value, want) in [
            ("refs/tags/v*", "refs/tags/v1.2.3", true),
            ("refs/tags/v*", "refs/tags/v", true),
            ("refs/tags/v*", "refs/heads/main", false),
            ("refs/tags/v*", "xrefs/tags/v1", false),
            ("org/repo", "org/repo", true),
            ("org/repo", "org/repo2", false),
            ("org/repo", "Org/repo", false),
            (
                "org/*/.github/workflows/release.yml@*",
                "org/repo/.github/workflows/release.yml@refs/tags/v1",
                true,
            ),
            (
                "org/*/.github/workflows/release.yml@*",
                "org/repo/.github/workflows/evil.yml@refs/tags/v1",
                false,
            ),
            ("*@refs/tags/*", "a@refs/tags/b", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "acb", false),
            ("*", "", true),
            ("a?", "ab", false),
            ("repo:org/repo:*", "repo:org/repo:ref:refs/heads/main", true),
            ("repo:org/repo:*", "repo:org/repo-fork:ref:x", false),
        ] {
            assert_eq!(glob_matches(pattern, value), want, "{pattern} vs {value}");
        }
        // Hostile patterns stay linear.
        let pattern = "*a".repeat(200) + "b";
        assert!(!glob_matches(&pattern, &"a".repeat(10_000)));
    }

    #[test]
    fn claims_must_all_match_as_strings() {
        let policy = TrustPolicy {
            id: "trust_1".into(),
            product: "p".into(),
            issuer: "i".into(),
            claims: [("repository", "org/repo"), ("ref", "refs/tags/*")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            permissions: TrustPermissions {
                upload: true,
                ..Default::default()
            },
            ttl_seconds: 600,
            created_at: 0,
            created_by: "tok".into(),
        };
        let claims = |v: Value| v.as_object().unwrap().clone();
        assert!(policy_matches(
            &policy,
            &claims(json!({"repository": "org/repo", "ref": "refs/tags/v1"}))
        ));
        assert!(!policy_matches(
            &policy,
            &claims(json!({"repository": "org/repo"}))
        ));
        assert!(!policy_matches(
            &policy,
            &claims(json!({"repository": "org/repo", "ref": ["refs/tags/v1"]}))
        ));
        assert!(!policy_matches(
            &policy,
            &claims(json!({"repository": "org/other", "ref": "refs/tags/v1"}))
        ));
    }

    #[test]
    fn matching_policies_combine_into_the_union_of_rights_and_the_shortest_ttl() {
        let policy = |id: &str, product: &str, perms: TrustPermissions, ttl| TrustPolicy {
            id: id.into(),
            product: product.into(),
            issuer: "i".into(),
            claims: BTreeMap::new(),
            permissions: perms,
            ttl_seconds: ttl,
            created_at: 0,
            created_by: "tok".into(),
        };
        let up = TrustPermissions {
            upload: true,
            ..Default::default()
        };
        let down = TrustPermissions {
            download: true,
            ..Default::default()
        };
        let all = [
            policy("t1", "a", up, 600),
            policy("t2", "a", down, 300),
            policy("t3", "b", down, 900),
        ];
        let ex = combine(&all).unwrap();
        assert_eq!(ex.ttl_seconds, 300);
        assert_eq!(
            ex.grants["a"],
            Grant {
                upload: true,
                download: true,
                ..Default::default()
            }
        );
        assert_eq!(
            ex.grants["b"],
            Grant {
                download: true,
                ..Default::default()
            }
        );
        assert!(ex.grants.values().all(|g| !g.maintainer));
        assert!(combine(&[]).is_none());
    }

    #[test]
    fn an_exchanged_token_never_outlives_the_jwt_by_more_than_its_ttl() {
        let now = 1_000_000_000;
        assert_eq!(exchanged_expiry(now, now / 1000 + 300, 600), now + 600_000);
        // A JWT that expires in 10 s (within the leeway): exp + ttl.
        assert_eq!(
            exchanged_expiry(now, now / 1000 - 30, 600),
            now - 30_000 + 600_000
        );
    }
}
