//! OIDC token verification for trusted publishing: an issuer's keys come from its
//! discovery document (`{iss}/.well-known/openid-configuration`) and the `jwks_uri` it
//! names, cached as the JWKS response's `Cache-Control` allows (at most an hour) and
//! fetched again when a token names an unknown key id (at most once a minute per
//! issuer). Only RS256 and ES256 are accepted, each only with a key of its own type;
//! `iss`, `aud`, `exp`, `nbf` and `iat` are checked with a minute of leeway.
//!
//! A refusal says which check failed, never the token; an issuer that cannot be reached
//! is [`OidcError::Unavailable`], never a refusal of a token that may be valid.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECONDS: u64 = 60;
/// Longest token accepted (GitHub's are ~1.5 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest discovery document or JWKS read.
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;
/// Longest time keys are cached, whatever the issuer says.
const MAX_KEYS_AGE: Duration = Duration::from_secs(3600);
/// How long keys are cached when the JWKS response says nothing.
const DEFAULT_KEYS_AGE: Duration = Duration::from_secs(300);
/// An unknown key id fetches the keys again at most this often per issuer.
const UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(60);
/// Whatever happens (keys expired at once, an issuer failing), an issuer is asked at most
/// this often: a flood of forged tokens cannot turn Depot against it, and meanwhile the
/// last answer stands (the keys it gave, or its failure).
const MIN_FETCH_INTERVAL: Duration = Duration::from_secs(2);
/// Timeout of each request to an issuer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OidcError {
    /// The token fails a check (which one, in words); 401 `invalid_oidc_token`.
    Invalid(String),
    /// The issuer's discovery document or keys cannot be had; 503.
    Unavailable(String),
}

/// A token whose signature and claims checked out.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub issuer: String,
    /// Seconds since the epoch.
    pub expires_at: i64,
    pub claims: Map<String, Value>,
}

impl VerifiedToken {
    /// A string claim, if the token has one.
    pub fn claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
}

/// One issuer's keys, and when they were fetched.
struct IssuerKeys {
    keys: Vec<Jwk>,
    fetched_at: Instant,
    max_age: Duration,
}

pub struct OidcVerifier {
    issuers: Vec<String>,
    audience: String,
    http: reqwest::Client,
    keys: Mutex<HashMap<String, Arc<IssuerKeys>>>,
    /// Per issuer: when it was last asked, and why that failed (if it did).
    attempts: Mutex<HashMap<String, (Instant, Option<String>)>>,
    /// One fetch per issuer at a time; later callers wait and use its result.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn invalid(why: impl Into<String>) -> OidcError {
    OidcError::Invalid(why.into())
}

impl OidcVerifier {
    pub fn new(issuers: Vec<String>, audience: String) -> OidcVerifier {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        OidcVerifier {
            issuers,
            audience,
            http,
            keys: Mutex::default(),
            attempts: Mutex::default(),
            fetching: Mutex::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.issuers.is_empty()
    }

    pub fn is_trusted_issuer(&self, issuer: &str) -> bool {
        self.issuers.iter().any(|i| i == issuer)
    }

    pub fn issuers(&self) -> &[String] {
        &self.issuers
    }

    /// Checks `token` and returns its claims.
    pub async fn verify(&self, token: &str, now_s: i64) -> Result<VerifiedToken, OidcError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid(format!(
                "the token is longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            invalid("the token is not a signed JWT with an accepted algorithm (RS256, ES256)")
        })?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(invalid(format!(
                "algorithm {:?} is not accepted: only RS256 and ES256",
                header.alg
            )));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| invalid("the token's header names no key id (kid)"))?;
        // The issuer picks the keys, so it is read before the signature is checked; the
        // signature check below then covers it.
        let issuer = unverified_issuer(token)?;
        if !self.is_trusted_issuer(&issuer) {
            return Err(invalid(format!(
                "issuer '{}' is not trusted by this server",
                crate::domain::names::terminal_safe(&issuer.chars().take(200).collect::<String>())
            )));
        }
        let jwk = self.key(&issuer, kid).await?;
        let key_alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => {
                return Err(invalid(
                    "the key the token names is neither RSA nor EC P-256",
                ));
            }
        };
        if key_alg != header.alg {
            return Err(invalid(format!(
                "the token says {:?} but its key is for {key_alg:?}",
                header.alg
            )));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| {
            OidcError::Unavailable("the issuer published a key that cannot be read".into())
        })?;
        let mut validation = Validation::new(key_alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_audience(&[&self.audience]);
        validation.set_issuer(&[&issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| invalid(check_failed(e.kind(), &self.audience)))?;
        let claims = data.claims;
        // OIDC Core 3.1.3.7: a token that also names audiences this server does not trust
        // is refused (the other party could replay it here).
        if claims
            .get("aud")
            .and_then(Value::as_array)
            .is_some_and(|audiences| audiences.len() != 1)
        {
            return Err(invalid(format!(
                "the token names other audiences besides '{}'",
                self.audience
            )));
        }
        let iat = claims.get("iat").and_then(Value::as_i64);
        if iat.is_none_or(|iat| iat > now_s + LEEWAY_SECONDS as i64) {
            return Err(invalid("the token is issued in the future (iat)"));
        }
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or_else(|| invalid("the token has no numeric expiry (exp)"))?;
        Ok(VerifiedToken {
            issuer,
            expires_at,
            claims,
        })
    }

    /// The key `kid` of `issuer`: from the cache while it is fresh, else fetched; an
    /// unknown id fetches again unless that was done within the last minute.
    async fn key(&self, issuer: &str, kid: &str) -> Result<Jwk, OidcError> {
        let cached = self.cached(issuer);
        if let Some(keys) = &cached
            && keys.fetched_at.elapsed() < keys.max_age
            && let Some(jwk) = find(&keys.keys, kid)
        {
            return Ok(jwk);
        }
        let turn = {
            let mut fetching = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
            fetching.entry(issuer.to_string()).or_default().clone()
        };
        let _turn = turn.lock().await;
        let no_key = || {
            invalid(format!(
                "the issuer has no key '{}'",
                crate::domain::names::terminal_safe(&kid.chars().take(100).collect::<String>())
            ))
        };
        // Someone else may have fetched while we waited.
        let cached = self.cached(issuer);
        if let Some(keys) = &cached {
            let fresh = keys.fetched_at.elapsed() < keys.max_age;
            if let Some(jwk) = find(&keys.keys, kid).filter(|_| fresh) {
                return Ok(jwk);
            }
            if fresh && keys.fetched_at.elapsed() < UNKNOWN_KID_REFRESH {
                return Err(no_key());
            }
        }
        let last = self
            .attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(issuer)
            .cloned();
        if let Some((at, failure)) = last
            && at.elapsed() < MIN_FETCH_INTERVAL
        {
            // Asked moments ago: its answer stands.
            if let Some(why) = failure {
                return Err(OidcError::Unavailable(why));
            }
            return cached
                .and_then(|keys| find(&keys.keys, kid))
                .ok_or_else(no_key);
        }
        let outcome = self.fetch_keys(issuer).await;
        let failure = match &outcome {
            Err(OidcError::Unavailable(why)) | Err(OidcError::Invalid(why)) => Some(why.clone()),
            Ok(_) => None,
        };
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(issuer.to_string(), (Instant::now(), failure));
        let fetched = Arc::new(outcome?);
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(issuer.to_string(), fetched.clone());
        find(&fetched.keys, kid).ok_or_else(no_key)
    }

    fn cached(&self, issuer: &str) -> Option<Arc<IssuerKeys>> {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(issuer)
            .cloned()
    }

    async fn fetch_keys(&self, issuer: &str) -> Result<IssuerKeys, OidcError> {
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let (discovery, _) = self.fetch_json(&discovery_url).await?;
        if discovery.get("issuer").and_then(Value::as_str) != Some(issuer) {
            return Err(OidcError::Unavailable(
                "the issuer's discovery document names another issuer".into(),
            ));
        }
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                OidcError::Unavailable("the discovery document has no jwks_uri".into())
            })?;
        let same_scheme = url::Url::parse(jwks_uri)
            .ok()
            .zip(url::Url::parse(issuer).ok())
            .is_some_and(|(jwks, iss)| jwks.scheme() == "https" || jwks.scheme() == iss.scheme());
        if !same_scheme {
            return Err(OidcError::Unavailable(
                "the discovery document's jwks_uri is not an https URL".into(),
            ));
        }
        let (jwks, max_age) = self.fetch_json(jwks_uri).await?;
        // A key this server cannot read (another type) is skipped, not fatal.
        let keys: Vec<Jwk> = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| OidcError::Unavailable("the issuer's JWKS has no keys".into()))?
            .iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
            .collect();
        tracing::info!(issuer = %issuer, keys = keys.len(), "fetched OIDC signing keys");
        Ok(IssuerKeys {
            keys,
            fetched_at: Instant::now(),
            max_age: max_age.unwrap_or(DEFAULT_KEYS_AGE).min(MAX_KEYS_AGE),
        })
    }

    /// GETs a JSON document (bounded in size and time) and its `Cache-Control` max-age.
    async fn fetch_json(&self, url: &str) -> Result<(Value, Option<Duration>), OidcError> {
        let unavailable = |why: String| OidcError::Unavailable(why);
        let mut resp = self
            .http
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unavailable(format!("cannot reach the issuer: {}", e.without_url())))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!(
                "the issuer answered {} for {url}",
                resp.status().as_u16()
            )));
        }
        let max_age = resp
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(cache_max_age);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            unavailable(format!(
                "reading from the issuer failed: {}",
                e.without_url()
            ))
        })? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(unavailable(format!(
                    "{url} is larger than {MAX_DOCUMENT_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let value =
            serde_json::from_slice(&body).map_err(|_| unavailable(format!("{url} is not JSON")))?;
        Ok((value, max_age))
    }
}

fn find(keys: &[Jwk], kid: &str) -> Option<Jwk> {
    keys.iter()
        .find(|k| k.common.key_id.as_deref() == Some(kid))
        .cloned()
}

/// `max-age` of a `Cache-Control` value; `no-store`/`no-cache` is zero.
fn cache_max_age(value: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(seconds) = lower.strip_prefix("max-age=") {
            max_age = seconds
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    max_age
}

/// The `iss` claim, read without checking the signature (only to pick the keys).
fn unverified_issuer(token: &str) -> Result<String, OidcError> {
    use base64::Engine;
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| invalid("the token is not a JWT"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| invalid("the token's payload is not base64url"))?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|_| invalid("the token's payload is not a JSON object"))?;
    claims
        .get("iss")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| invalid("the token names no issuer (iss)"))
}

/// Which check a token failed, in words (never the token).
fn check_failed(kind: &jsonwebtoken::errors::ErrorKind, audience: &str) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => "the signature does not verify".into(),
        K::ExpiredSignature => "the token has expired (exp)".into(),
        K::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        K::InvalidAudience => format!("the token's audience (aud) is not '{audience}'"),
        K::InvalidIssuer => "the token's issuer (iss) does not match".into(),
        K::InvalidAlgorithm | K::MissingAlgorithm => {
            "the token's algorithm does not match its key".into()
        }
        K::MissingRequiredClaim(claim) => format!("the token has no '{claim}' claim"),
        _ => "the token is malformed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age_is_read_and_no_store_is_zero() {
        assert_eq!(
            cache_max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            cache_max_age("max-age=\"60\""),
            Some(Duration::from_secs(60))
        );
        assert_eq!(cache_max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(cache_max_age("private"), None);
        assert_eq!(cache_max_age("max-age=abc"), None);
    }

    #[test]
    fn the_issuer_is_read_from_the_payload_and_junk_is_refused() {
        use base64::Engine;
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let token = format!("{}.{}.sig", enc("{}"), enc(r#"{"iss":"https://i"}"#));
        assert_eq!(unverified_issuer(&token), Ok("https://i".to_string()));
        for bad in [
            "",
            "a",
            "a.!!!.c",
            &format!("a.{}.c", enc("[]")),
            &format!("a.{}.c", enc("{}")),
        ] {
            assert!(
                matches!(unverified_issuer(bad), Err(OidcError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
