//! Trusted publishing (issue 15): trust policies, and the exchange of a CI job's OIDC
//! token for a short-lived Depot token, against a local OIDC issuer speaking the real
//! protocol (discovery document and JWKS over HTTP, RSA and EC keys, key rotation,
//! outages). Both backend sets.

mod common;

use common::oidc::{Key, TestIssuer};
use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const GITHUB_REPO: &str = "org/repo";

async fn app_trusting(issuer: &TestIssuer) -> TestApp {
    TestApp::builder()
        .env("DEPOT_OIDC_ISSUERS", issuer.url())
        .env("DEPOT_OIDC_ALLOW_HTTP", "true")
        .start()
        .await
}

/// The policy of a release workflow: tags only, that workflow file only.
fn release_policy(issuer: &TestIssuer) -> Value {
    json!({
        "issuer": issuer.url(),
        "claims": {
            "repository": GITHUB_REPO,
            "ref": "refs/tags/v*",
            "workflow_ref": "org/repo/.github/workflows/release.yml@*",
        },
        "permissions": {"upload": true, "download": true},
        "ttl_seconds": 600,
    })
}

async fn add_policy(app: &TestApp, product: &str, policy: &Value) -> Value {
    let r = app
        .put_json(
            &format!("/product/trust/{product}"),
            Some(app.admin()),
            policy,
        )
        .await;
    r.assert_status(201);
    r.json()
}

async fn exchange(app: &TestApp, jwt: &str) -> Reply {
    app.send(
        app.request(Method::POST, "/oidc/token", None)
            .json(&json!({ "token": jwt })),
    )
    .await
}

fn with(mut claims: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

#[tokio::test]
async fn a_matching_token_is_exchanged_for_a_short_lived_token_with_the_policys_rights_only() {
    let issuer = TestIssuer::start().await;
    let app = app_trusting(&issuer).await;
    let product = app.product().await;
    let other = app.product().await;
    let policy = add_policy(&app, &product, &release_policy(&issuer)).await;
    assert!(policy["id"].as_str().unwrap().starts_with("trust_"));

    let jwt = issuer.sign(&issuer.claims(), Key::Rsa1);
    let r = exchange(&app, &jwt).await;
    r.assert_status(201);
    let issued = r.json();
    let token = issued["token"].as_str().unwrap().to_string();
    app.remember_secret(&token);
    app.remember_secret(&jwt);
    assert!(token.starts_with("depot_"));
    assert_eq!(
        issued["grants"],
        json!({ product.clone(): {"maintainer": false, "download": true, "upload": true, "delete": false} })
    );
    let expires = chrono::DateTime::parse_from_rfc3339(issued["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert!(
        (expires - now_s() - 600).abs() <= 5,
        "expires in ~600 s: {issued}"
    );

    // It uploads and downloads on its product, and nothing more.
    app.upload_ok(&token, &product, "1.0.0", b"built by CI")
        .await;
    app.download(&token, &product, "1.0.0")
        .await
        .assert_status(200);
    app.delete(&format!("/product/delete/{product}/1.0.0"), Some(&token))
        .await
        .assert_error(403, "forbidden");
    app.upload(&token, &other, "1.0.0", b"x")
        .await
        .assert_error(404, "product_not_found");
    app.put_json(
        &format!("/product/settings/{product}"),
        Some(&token),
        &json!({}),
    )
    .await
    .assert_error(403, "forbidden");
    // It may not mint tokens.
    app.put_json(
        "/register",
        Some(&token),
        &json!({"products": {product.clone(): {"download": true}}}),
    )
    .await
    .assert_error(403, "forbidden");

    // An ordinary token: listed, named after the subject, revocable.
    let tokens = app.get("/tokens", Some(app.admin())).await.json();
    let listed = tokens
        .as_array()
        .or_else(|| tokens["tokens"].as_array())
        .unwrap()
        .iter()
        .find(|t| t["id"] == issued["token_id"])
        .cloned()
        .expect("the exchanged token is listed");
    assert_eq!(listed["name"], "oidc:repo:org/repo:ref:refs/tags/v1.0.0");

    // The exchange is recorded with the identity, never the OIDC token.
    let audit = app
        .get("/audit?type=token.exchanged", Some(app.admin()))
        .await;
    audit.assert_status(200);
    let event = audit.json()["events"][0].clone();
    let claims = issuer.claims();
    assert_eq!(event["actor"], json!({"system": "oidc"}));
    let details = &event["details"];
    assert_eq!(details["token_id"], issued["token_id"]);
    assert_eq!(details["iss"], issuer.url());
    assert_eq!(details["sub"], claims["sub"]);
    assert_eq!(details["repository"], GITHUB_REPO);
    assert_eq!(details["ref"], "refs/tags/v1.0.0");
    assert_eq!(details["workflow_ref"], claims["workflow_ref"]);
    assert!(details["jti"].is_string());
    assert!(
        !audit.text().contains(&jwt),
        "the JWT never reaches an event"
    );
    // Recorded under the product it reaches: its maintainers see it.
    let scoped = app
        .get(
            &format!("/audit?product={product}&type=token.exchanged"),
            Some(app.admin()),
        )
        .await
        .json();
    assert_eq!(scoped["events"].as_array().unwrap().len(), 1);

    app.prune(issued["token_id"].as_str().unwrap()).await;
    app.download(&token, &product, "1.0.0")
        .await
        .assert_status(401);
    app.assert_no_secrets_logged();
}

#[tokio::test]
async fn the_rfc_8693_token_exchange_form_is_accepted_and_ec_keys_work() {
    let issuer = TestIssuer::start().await;
    let app = app_trusting(&issuer).await;
    let product = app.product().await;
    add_policy(&app, &product, &release_policy(&issuer)).await;
    let jwt = issuer.sign(&issuer.claims(), Key::Ec1);
    let form = format!(
        "grant_type={}&subject_token={jwt}&subject_token_type={}",
        "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange",
        "urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt"
    );
    let r = app
        .send(
            app.request(Method::POST, "/oidc/token", None)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form),
        )
        .await;
    r.assert_status(201);
    let body = r.json();
    assert_eq!(body["access_token"], body["token"]);
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert!(body["expires_in"].as_i64().unwrap() > 500);

    for (form, code) in [
        (
            "grant_type=password&subject_token=x&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt",
            "unsupported_grant_type",
        ),
        (
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=x&subject_token_type=saml",
            "invalid_body",
        ),
        (
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt",
            "invalid_body",
        ),
    ] {
        app.send(
            app.request(Method::POST, "/oidc/token", None)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form),
        )
        .await
        .assert_error(400, code);
    }
    for body in [
        json!({}),
        json!({"token": 1}),
        json!({"token": "x", "extra": 1}),
        json!([]),
    ] {
        app.send(app.request(Method::POST, "/oidc/token", None).json(&body))
            .await
            .assert_error(400, "invalid_body");
    }
}

#[tokio::test]
async fn tokens_that_fail_a_check_are_refused_saying_which_check_failed() {
    let issuer = TestIssuer::start().await;
    let app = app_trusting(&issuer).await;
    let product = app.product().await;
    add_policy(&app, &product, &release_policy(&issuer)).await;
    let base = issuer.claims();
    let now = now_s();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            issuer.sign(
                &with(
                    base.clone(),
                    json!({"exp": now - 120, "iat": now - 400, "nbf": now - 400}),
                ),
                Key::Rsa1,
            ),
            "expired",
        ),
        (
            "not yet valid",
            issuer.sign(&with(base.clone(), json!({"nbf": now + 300})), Key::Rsa1),
            "nbf",
        ),
        (
            "issued in the future",
            issuer.sign(&with(base.clone(), json!({"iat": now + 300})), Key::Rsa1),
            "iat",
        ),
        (
            "wrong audience",
            issuer.sign(
                &with(base.clone(), json!({"aud": "someone-else"})),
                Key::Rsa1,
            ),
            "audience",
        ),
        (
            "untrusted issuer",
            issuer.sign(
                &with(base.clone(), json!({"iss": "https://evil.example"})),
                Key::Rsa1,
            ),
            "not trusted",
        ),
        (
            "no expiry",
            issuer.sign(&with(base.clone(), json!({"exp": null})), Key::Rsa1),
            "exp",
        ),
        ("alg none", issuer.forge_none(&base), "algorithm"),
        (
            "HS256 keyed with the public key",
            issuer.forge_hs256_with_public_key(&base),
            "algorithm",
        ),
        (
            "RS256 header over an EC key",
            issuer.forge_rs256_header_over_ec_key(&base),
            "key is for",
        ),
        (
            "tampered payload",
            issuer.tamper(
                &issuer.sign(&base, Key::Rsa1),
                &with(base.clone(), json!({"repository": "org/other"})),
            ),
            "signature",
        ),
        ("unknown key", issuer.sign(&base, Key::Rsa2), "no key"),
        ("not a JWT", "not-a-jwt".to_string(), "JWT"),
        ("huge", "a".repeat(20_000), "longer"),
    ];
    for (what, jwt, says) in cases {
        let r = exchange(&app, &jwt).await;
        r.assert_error(401, "invalid_oidc_token");
        let message = r.json()["error"].as_str().unwrap().to_string();
        assert!(message.contains(says), "{what}: {message}");
        assert!(
            !message.contains(&jwt),
            "{what}: the message repeats the token"
        );
    }
    // None of them got a token.
    let audit = app
        .get("/audit?type=token.exchanged", Some(app.admin()))
        .await;
    assert_eq!(audit.json()["events"], json!([]));
}

#[tokio::test]
async fn only_tokens_whose_claims_match_a_policy_get_a_token() {
    let issuer = TestIssuer::start().await;
    let app = app_trusting(&issuer).await;
    let product = app.product().await;
    add_policy(&app, &product, &release_policy(&issuer)).await;
    let base = issuer.claims();
    for (what, changes) in [
        ("another repository", json!({"repository": "org/repo-fork"})),
        ("a branch, not a tag", json!({"ref": "refs/heads/main"})),
        (
            "another workflow",
            json!({"workflow_ref": "org/repo/.github/workflows/ci.yml@refs/tags/v1.0.0"}),
        ),
        ("no ref claim", json!({"ref": null})),
        (
            "a ref that is not a string",
            json!({"ref": ["refs/tags/v1"]}),
        ),
        // The reusable workflow's ref is not the one matched (PyPI's early mistake).
        (
            "release.yml only as the called workflow",
            json!({
                "workflow_ref": "org/repo/.github/workflows/ci.yml@refs/tags/v1.0.0",
                "job_workflow_ref": "org/repo/.github/workflows/release.yml@refs/tags/v1.0.0",
            }),
        ),
    ] {
        let r = exchange(&app, &issuer.sign(&with(base.clone(), changes), Key::Rsa1)).await;
        assert_eq!(r.status, 403, "{what}: {}", r.text());
        r.assert_error(403, "no_trust_policy");
    }
    // Glob edges that do match: any tag, the workflow at any ref.
    for changes in [
        json!({"ref": "refs/tags/v"}),
        json!({"ref": "refs/tags/v2.0.0-rc.1/x"}),
        json!({"workflow_ref": "org/repo/.github/workflows/release.yml@refs/heads/main"}),
    ] {
        exchange(
            &app,
            &issuer.sign(&with(issuer.claims(), changes), Key::Rsa1),
        )
        .await
        .assert_status(201);
    }
    // Two matching policies: the union of their rights, the shorter lifetime.
    let second = app.product().await;
    add_policy(
        &app,
        &second,
        &json!({"issuer": issuer.url(), "claims": {"sub": "repo:org/repo:*"},
                "permissions": {"delete": true}, "ttl_seconds": 120}),
    )
    .await;
    let r = exchange(&app, &issuer.sign(&issuer.claims(), Key::Rsa1)).await;
    r.assert_status(201);
    let issued = r.json();
    assert_eq!(issued["grants"][&second]["delete"], true);
    assert_eq!(issued["grants"][&product]["upload"], true);
    let expires = chrono::DateTime::parse_from_rfc3339(issued["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert!((expires - now_s() - 120).abs() <= 5, "{issued}");
}

#[tokio::test]
async fn a_token_is_exchanged_once_even_on_another_replica() {
    let issuer = TestIssuer::start().await;
    let app = app_trusting(&issuer).await;
    let product = app.product().await;
    add_policy(&app, &product, &release_policy(&issuer)).await;
    let jwt = issuer.sign(&issuer.claims(), Key::Rsa1);
    exchange(&app, &jwt).await.assert_status(201);
    let r = exchange(&app, &jwt).await;
    r.assert_error(401, "invalid_oidc_token");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("already exchanged")
    );
    // A token without a jti cannot be told apart from its replay: refused.
    exchange(
        &app,
        &issuer.sign(&with(issuer.claims(), json!({"jti": null})), Key::Rsa1),
    )
    .await
    .assert_error(401, "invalid_oidc_token");

    if Backend::from_env() == Backend::Production {
        let replica = TestApp::builder()
            .share_backends_with(&app)
            .env("DEPOT_OIDC_ISSUERS", issuer.url())
            .env("DEPOT_OIDC_ALLOW_HTTP", "true")
            .start()
            .await;
        exchange(&replica, &jwt)
            .await
            .assert_error(401, "invalid_oidc_token");
        // Two replicas racing with one fresh token: exactly one wins.
        let fresh = issuer.sign(&issuer.claims(), Key::Rsa1);
        let (a, b) = tokio::join!(exchange(&app, &fresh), exchange(&replica, &fresh));
        let mut statuses = [a.status.as_u16(), b.status.as_u16()];
        statuses.sort();
        assert_eq!(statuses, [201, 401]);
    }
}

#[tokio::test]
async fn keys_are_cached_refetched_after_their_max_age_and_an_outage_is_a_503() {
    let issuer = TestIssuer::start().await;
    let app = app_trusting(&issuer).await;
    let product = app.product().await;
    add_policy(&app, &product, &release_policy(&issuer)).await;
    for _ in 0..3 {
        exchange(&app, &issuer.sign(&issuer.claims(), Key::Rsa1))
            .await
            .assert_status(201);
    }
    assert_eq!(issuer.jwks_fetches(), 1, "keys are cached");

    // Rotation: a token signed with a key published after the last fetch is refused
    // without hammering the issuer (at most one refresh a minute on unknown keys)...
    issuer.publish(&[Key::Rsa2, Key::Ec1]);
    let rotated = issuer.sign(&issuer.claims(), Key::Rsa2);
    exchange(&app, &rotated)
        .await
        .assert_error(401, "invalid_oidc_token");
    assert_eq!(issuer.jwks_fetches(), 1);

    // ...and accepted once the cached keys are older than the JWKS said (max-age).
    let issuer2 = TestIssuer::start().await;
    issuer2.set_jwks_max_age(1);
    let app2 = app_trusting(&issuer2).await;
    let product2 = app2.product().await;
    add_policy(&app2, &product2, &release_policy(&issuer2)).await;
    exchange(&app2, &issuer2.sign(&issuer2.claims(), Key::Rsa1))
        .await
        .assert_status(201);
    issuer2.publish(&[Key::Rsa2]);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    exchange(&app2, &issuer2.sign(&issuer2.claims(), Key::Rsa2))
        .await
        .assert_status(201);
    // The old key is gone from the new set.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    exchange(&app2, &issuer2.sign(&issuer2.claims(), Key::Rsa1))
        .await
        .assert_error(401, "invalid_oidc_token");

    // Issuer down, keys not cached: 503, no token.
    issuer2.set_down(true);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = exchange(&app2, &issuer2.sign(&issuer2.claims(), Key::Rsa2)).await;
    r.assert_error(503, "oidc_issuer_unavailable");
    let audit = app2
        .get("/audit?type=token.exchanged", Some(app2.admin()))
        .await
        .json();
    assert_eq!(audit["events"].as_array().unwrap().len(), 2);
    // An issuer nobody listens on: 503 too.
    drop(issuer);
}

#[tokio::test]
async fn an_exchanged_token_stops_working_at_its_expiry() {
    let issuer = TestIssuer::start().await;
    let app = app_trusting(&issuer).await;
    let product = app.product().await;
    let mut policy = release_policy(&issuer);
    policy["ttl_seconds"] = json!(60);
    add_policy(&app, &product, &policy).await;
    // A JWT that expired 55 s ago (inside the minute of leeway): the Depot token lives
    // at most its TTL past the JWT's own expiry, so 5 s.
    let now = now_s();
    let claims = with(
        issuer.claims(),
        json!({"exp": now - 55, "iat": now - 300, "nbf": now - 300}),
    );
    let r = exchange(&app, &issuer.sign(&claims, Key::Rsa1)).await;
    r.assert_status(201);
    let token = r.json()["token"].as_str().unwrap().to_string();
    app.upload_ok(&token, &product, "1.0.0", b"x").await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    app.download(&token, &product, "1.0.0")
        .await
        .assert_error(401, "token_expired");
}

#[tokio::test]
async fn trust_policies_are_validated_permission_checked_and_recorded() {
    let issuer = TestIssuer::start().await;
    let app = app_trusting(&issuer).await;
    let product = app.product().await;
    let path = format!("/product/trust/{product}");
    let good = release_policy(&issuer);
    let mut cases = vec![
        (
            with(good.clone(), json!({"claims": {"ref": "refs/tags/v*"}})),
            "invalid_trust_policy",
        ),
        (
            with(good.clone(), json!({"claims": {"repository": "*"}})),
            "invalid_trust_policy",
        ),
        (
            with(good.clone(), json!({"issuer": "https://gitlab.com"})),
            "invalid_trust_policy",
        ),
        (
            with(good.clone(), json!({"ttl_seconds": 100000})),
            "invalid_trust_policy",
        ),
        (
            with(good.clone(), json!({"ttl_seconds": 10})),
            "invalid_trust_policy",
        ),
        (
            with(good.clone(), json!({"permissions": {}})),
            "invalid_trust_policy",
        ),
        (
            with(good.clone(), json!({"permissions": {"maintainer": true}})),
            "invalid_body",
        ),
        (
            with(good.clone(), json!({"permissions": {"admin": true}})),
            "invalid_body",
        ),
        (with(good.clone(), json!({"extra": 1})), "invalid_body"),
        (json!([]), "invalid_body"),
    ];
    cases.push((
        with(
            good.clone(),
            json!({"claims": {"repository": "a", "bad name": "x"}}),
        ),
        "invalid_trust_policy",
    ));
    for (body, code) in cases {
        app.put_json(&path, Some(app.admin()), &body)
            .await
            .assert_error(400, code);
    }
    // Maintainers manage policies; other grants may not; no grant sees no product.
    let maintainer = app.token_with(&product, Perms::MAINTAINER).await;
    let r = app.put_json(&path, Some(&maintainer), &good).await;
    r.assert_status(201);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let uploader = app.token_with(&product, Perms::UPLOAD).await;
    app.put_json(&path, Some(&uploader), &good)
        .await
        .assert_error(403, "forbidden");
    app.get(&path, Some(&uploader))
        .await
        .assert_error(403, "forbidden");
    let stranger = app.register(false).await;
    app.get(&path, Some(&stranger))
        .await
        .assert_error(404, "product_not_found");
    let listed = app.get(&path, Some(&maintainer)).await;
    listed.assert_status(200);
    assert_eq!(listed.json()["policies"][0]["id"], id);
    assert_eq!(listed.json()["policies"][0]["ttl_seconds"], 600);

    app.delete(&format!("{path}/{id}"), Some(&maintainer))
        .await
        .assert_status(204);
    app.delete(&format!("{path}/{id}"), Some(&maintainer))
        .await
        .assert_error(404, "trust_policy_not_found");
    let audit = app
        .get(&format!("/audit?product={product}"), Some(app.admin()))
        .await
        .json();
    let kinds: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"trust.created") && kinds.contains(&"trust.deleted"),
        "{kinds:?}"
    );

    // Deleting the product takes its policies along.
    add_policy(&app, &product, &good).await;
    app.delete(&format!("/product/delete/{product}"), Some(app.admin()))
        .await
        .assert_status(204);
    exchange(&app, &issuer.sign(&issuer.claims(), Key::Rsa1))
        .await
        .assert_error(403, "no_trust_policy");

    // A server without DEPOT_OIDC_ISSUERS has the feature off.
    let plain = TestApp::start().await;
    let p = plain.product().await;
    plain
        .put_json(&format!("/product/trust/{p}"), Some(plain.admin()), &good)
        .await
        .assert_error(404, "oidc_disabled");
    exchange(&plain, &issuer.sign(&issuer.claims(), Key::Rsa1))
        .await
        .assert_error(404, "oidc_disabled");
}

#[tokio::test]
async fn an_unknown_key_fetches_the_keys_again_but_at_most_once_a_minute() {
    let issuer = TestIssuer::start().await;
    issuer.set_jwks_max_age(3600);
    let app = app_trusting(&issuer).await;
    let product = app.product().await;
    add_policy(&app, &product, &release_policy(&issuer)).await;
    exchange(&app, &issuer.sign(&issuer.claims(), Key::Rsa1))
        .await
        .assert_status(201);
    assert_eq!(issuer.jwks_fetches(), 1);
    // The issuer rotates to a key the cached (still fresh) set does not have.
    issuer.publish(&[Key::Rsa1, Key::Rsa2]);
    for _ in 0..5 {
        exchange(&app, &issuer.sign(&issuer.claims(), Key::Rsa2))
            .await
            .assert_error(401, "invalid_oidc_token");
    }
    assert_eq!(issuer.jwks_fetches(), 1, "no refetch within the minute");
    // A minute after the last fetch, the unknown key makes Depot ask again, and the
    // rotated key is accepted.
    tokio::time::sleep(Duration::from_secs(61)).await;
    exchange(&app, &issuer.sign(&issuer.claims(), Key::Rsa2))
        .await
        .assert_status(201);
    assert_eq!(issuer.jwks_fetches(), 2);
    // The known key still works from the refreshed set without another fetch.
    exchange(&app, &issuer.sign(&issuer.claims(), Key::Rsa1))
        .await
        .assert_status(201);
    assert_eq!(issuer.jwks_fetches(), 2);
}
