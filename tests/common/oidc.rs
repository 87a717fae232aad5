//! A local OIDC issuer for the tests: a real HTTP server on loopback that serves a
//! discovery document and a JWKS, signs GitHub-Actions-like ID tokens with the test keys
//! in `tests/fixtures/oidc/`, forges the classic bad tokens, and fakes the GitHub Actions
//! ID-token request endpoint (`ACTIONS_ID_TOKEN_REQUEST_URL`/`_TOKEN`).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

const RSA_1_PEM: &str = include_str!("../fixtures/oidc/rsa-1.pem");
const RSA_1_PUB_PEM: &str = include_str!("../fixtures/oidc/rsa-1.pub.pem");
const RSA_1_JWK: &str = include_str!("../fixtures/oidc/rsa-1.jwk.json");
const RSA_2_PEM: &str = include_str!("../fixtures/oidc/rsa-2.pem");
const RSA_2_JWK: &str = include_str!("../fixtures/oidc/rsa-2.jwk.json");
const EC_1_PEM: &str = include_str!("../fixtures/oidc/ec-1.pem");
const EC_1_JWK: &str = include_str!("../fixtures/oidc/ec-1.jwk.json");

/// The audience `claims()` puts in `aud`.
pub const AUDIENCE: &str = "depot";

/// One of the fixture keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// RSA 2048, RS256, kid `rsa-1`.
    Rsa1,
    /// RSA 2048, RS256, kid `rsa-2`.
    Rsa2,
    /// P-256, ES256, kid `ec-1`.
    Ec1,
}

impl Key {
    pub fn kid(self) -> &'static str {
        match self {
            Key::Rsa1 => "rsa-1",
            Key::Rsa2 => "rsa-2",
            Key::Ec1 => "ec-1",
        }
    }

    /// The algorithm `TestIssuer::sign` uses with this key.
    pub fn algorithm(self) -> Algorithm {
        match self {
            Key::Rsa1 | Key::Rsa2 => Algorithm::RS256,
            Key::Ec1 => Algorithm::ES256,
        }
    }

    /// The public JWK, as committed in `tests/fixtures/oidc/<kid>.jwk.json`.
    pub fn jwk(self) -> Value {
        let text = match self {
            Key::Rsa1 => RSA_1_JWK,
            Key::Rsa2 => RSA_2_JWK,
            Key::Ec1 => EC_1_JWK,
        };
        serde_json::from_str(text).expect("the fixture JWK is JSON")
    }

    fn encoding_key(self) -> EncodingKey {
        match self {
            Key::Rsa1 => EncodingKey::from_rsa_pem(RSA_1_PEM.as_bytes()),
            Key::Rsa2 => EncodingKey::from_rsa_pem(RSA_2_PEM.as_bytes()),
            Key::Ec1 => EncodingKey::from_ec_pem(EC_1_PEM.as_bytes()),
        }
        .expect("the fixture private key parses")
    }
}

struct Shared {
    url: String,
    published: Mutex<Vec<Key>>,
    down: AtomicBool,
    jwks_fetches: AtomicUsize,
    jwks_max_age: AtomicU64,
    /// The bearer the fake Actions endpoint wants.
    request_token: String,
    actions_tokens_issued: AtomicUsize,
}

pub struct TestIssuer {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn random_hex(bytes: usize) -> String {
    hex::encode(
        (0..bytes)
            .map(|_| rand::random::<u8>())
            .collect::<Vec<u8>>(),
    )
}

fn claims_for(url: &str, aud: &str) -> Value {
    let now = now();
    json!({
        "iss": url,
        "aud": aud,
        "sub": "repo:org/repo:ref:refs/tags/v1.0.0",
        "repository": "org/repo",
        "repository_owner": "org",
        "ref": "refs/tags/v1.0.0",
        "workflow_ref": "org/repo/.github/workflows/release.yml@refs/tags/v1.0.0",
        "job_workflow_ref": "org/shared/.github/workflows/build.yml@refs/heads/main",
        "environment": "release",
        "jti": random_hex(16),
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    })
}

fn sign_with(claims: &Value, key: Key) -> String {
    let mut header = Header::new(key.algorithm());
    header.kid = Some(key.kid().to_string());
    jsonwebtoken::encode(&header, claims, &key.encoding_key()).expect("signing works")
}

/// `b64(header).b64(claims).b64(sign(signing input))`, with the header taken verbatim.
fn compact(header: &Value, claims: &Value, key: &EncodingKey, algorithm: Algorithm) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, algorithm).unwrap();
    format!("{input}.{signature}")
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "issuer down\n").into_response()
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    if shared.down.load(Ordering::SeqCst) {
        return unavailable();
    }
    Json(json!({
        "issuer": shared.url,
        "jwks_uri": format!("{}/.well-known/jwks", shared.url),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
    }))
    .into_response()
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    if shared.down.load(Ordering::SeqCst) {
        return unavailable();
    }
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys: Vec<Value> = shared
        .published
        .lock()
        .unwrap()
        .iter()
        .map(|k| k.jwk())
        .collect();
    let max_age = shared.jwks_max_age.load(Ordering::SeqCst);
    let mut response = Json(json!({ "keys": keys })).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&format!("max-age={max_age}")).unwrap(),
    );
    response
}

/// GitHub's `ACTIONS_ID_TOKEN_REQUEST_URL`: `?api-version=2.0&audience=X`, bearer auth.
async fn actions_token(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let expected = format!("Bearer {}", shared.request_token);
    let authorized = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !authorized {
        return (StatusCode::UNAUTHORIZED, "bad request token\n").into_response();
    }
    // Without `audience`, GitHub uses the owner's URL.
    let aud = query
        .get("audience")
        .cloned()
        .unwrap_or_else(|| "https://github.com/org".to_string());
    let key = shared
        .published
        .lock()
        .unwrap()
        .iter()
        .copied()
        .find(|k| k.algorithm() == Algorithm::RS256)
        .unwrap_or(Key::Rsa1);
    let token = sign_with(&claims_for(&shared.url, &aud), key);
    shared.actions_tokens_issued.fetch_add(1, Ordering::SeqCst);
    Json(json!({ "value": token })).into_response()
}

impl TestIssuer {
    /// Starts the issuer; publishes rsa-1 and ec-1 in its JWKS.
    pub async fn start() -> TestIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        let shared = Arc::new(Shared {
            url: url.clone(),
            published: Mutex::new(vec![Key::Rsa1, Key::Ec1]),
            down: AtomicBool::new(false),
            jwks_fetches: AtomicUsize::new(0),
            jwks_max_age: AtomicU64::new(300),
            request_token: random_hex(20),
            actions_tokens_issued: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(discovery),
            )
            .route("/.well-known/jwks", axum::routing::get(jwks))
            .route("/actions-token", axum::routing::get(actions_token))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestIssuer { url, shared, task }
    }

    /// `http://127.0.0.1:PORT` — the `iss` value and the base of discovery.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Which keys the JWKS lists (replaces the set), e.g. rotate: `publish(&[Key::Rsa2, Key::Ec1])`.
    pub fn publish(&self, keys: &[Key]) {
        *self.shared.published.lock().unwrap() = keys.to_vec();
    }

    /// While down, discovery and JWKS answer 503 (the Actions endpoint keeps working:
    /// on GitHub it is a different service).
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// How many times the JWKS document was fetched (503s while down are not counted).
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Cache-Control max-age the JWKS answers with (default 300).
    pub fn set_jwks_max_age(&self, seconds: u64) {
        self.shared.jwks_max_age.store(seconds, Ordering::SeqCst);
    }

    /// GitHub-Actions-like claims for this issuer (aud `depot`, a tag push of `org/repo`
    /// in environment `release`, fresh `jti`, valid for 300 seconds from now).
    pub fn claims(&self) -> Value {
        claims_for(&self.url, AUDIENCE)
    }

    /// A compact JWS of `claims`: RS256 for Rsa1/Rsa2, ES256 for Ec1, header kid = the key's kid.
    pub fn sign(&self, claims: &Value, key: Key) -> String {
        sign_with(claims, key)
    }

    /// `{"alg":"none","typ":"JWT","kid":"rsa-1"}` with an empty signature (`h.p.`).
    pub fn forge_none(&self, claims: &Value) -> String {
        let header = json!({"alg": "none", "typ": "JWT", "kid": Key::Rsa1.kid()});
        format!(
            "{}.{}.",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        )
    }

    /// HS256 (kid rsa-1) with the bytes of rsa-1's public PEM as the HMAC secret.
    pub fn forge_hs256_with_public_key(&self, claims: &Value) -> String {
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": Key::Rsa1.kid()});
        let secret = EncodingKey::from_secret(RSA_1_PUB_PEM.as_bytes());
        compact(&header, claims, &secret, Algorithm::HS256)
    }

    /// A header saying `{"alg":"RS256","kid":"ec-1"}`, signed with the EC key using ES256.
    pub fn forge_rs256_header_over_ec_key(&self, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": Key::Ec1.kid()});
        compact(&header, claims, &Key::Ec1.encoding_key(), Algorithm::ES256)
    }

    /// `token` with its payload segment replaced by `new_claims`, keeping the original
    /// header and signature.
    pub fn tamper(&self, token: &str, new_claims: &Value) -> String {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "not a compact JWS: {token}");
        format!(
            "{}.{}.{}",
            parts[0],
            b64(new_claims.to_string().as_bytes()),
            parts[2]
        )
    }

    /// The fake GitHub Actions ID-token endpoint: `(ACTIONS_ID_TOKEN_REQUEST_URL,
    /// ACTIONS_ID_TOKEN_REQUEST_TOKEN)`. The URL already has `?api-version=2.0`, so clients
    /// append `&audience=...`; with the bearer, it answers `{"value": <RS256 JWT of claims()
    /// with aud=audience>}` (401 without it). The token is signed with the first published
    /// RSA key (rsa-1 if none is published).
    pub fn actions_endpoint(&self) -> (String, String) {
        (
            format!("{}/actions-token?api-version=2.0", self.url),
            self.shared.request_token.clone(),
        )
    }

    /// How many ID tokens the Actions endpoint handed out.
    pub fn actions_tokens_issued(&self) -> usize {
        self.shared.actions_tokens_issued.load(Ordering::SeqCst)
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
