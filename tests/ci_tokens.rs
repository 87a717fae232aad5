//! Tokens for CI: names and expiry on `PUT /register`, `token_expired`, and non-admin
//! tokens minting narrower, no longer-lived tokens from their own grants.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// `PUT /register` with `body` as `token`; the reply as is.
async fn register_as(app: &TestApp, token: &str, body: Value) -> Reply {
    let r = app.put_json("/register", Some(token), &body).await;
    if r.status.as_u16() == 201 {
        app.remember_secret(&r.text());
    }
    r
}

/// Registers and asserts 201; returns the raw token.
async fn mint(app: &TestApp, token: &str, body: Value) -> String {
    let r = register_as(app, token, body).await;
    r.assert_status(201);
    r.text()
}

/// `GET /fetch/{raw}` as the token itself.
async fn info(app: &TestApp, raw: &str) -> Value {
    let r = app.get(&format!("/fetch/{raw}"), Some(raw)).await;
    r.assert_status(200);
    r.json()
}

fn epoch(rfc3339: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339.as_str().expect("a date-time string"))
        .unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {rfc3339}"))
        .timestamp()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn grant_json(download: bool, upload: bool) -> Value {
    json!({ "maintainer": false, "download": download, "upload": upload, "delete": false })
}

// ---- names and expiry ---------------------------------------------------------------

#[tokio::test]
async fn register_with_name_and_expires_in_shows_both_in_fetch() {
    let app = TestApp::start().await;
    let before = now();
    let raw = mint(
        &app,
        app.admin(),
        json!({ "name": "release pipeline", "expires_in": 3600 }),
    )
    .await;
    let after = now();
    for v in [
        info(&app, &raw).await,
        app.get(&format!("/fetch/{raw}"), Some(app.admin()))
            .await
            .json(),
    ] {
        assert_eq!(v["name"], "release pipeline");
        assert_eq!(v["admin"], false);
        let expires = epoch(&v["expires_at"]);
        assert!(
            (before + 3599..=after + 3600).contains(&expires),
            "expires_at {} is not about an hour from now",
            v["expires_at"]
        );
    }
    // The public id shows the same.
    let id = app.token_id(&raw).await;
    let by_id = app
        .get(&format!("/fetch/{id}"), Some(app.admin()))
        .await
        .json();
    assert_eq!(by_id["name"], "release pipeline");
}

#[tokio::test]
async fn register_with_expires_at_shows_that_instant_in_fetch() {
    let app = TestApp::start().await;
    let raw = mint(
        &app,
        app.admin(),
        json!({ "name": "nightly", "expires_at": "2099-06-30T12:00:00Z" }),
    )
    .await;
    let v = info(&app, &raw).await;
    assert_eq!(v["expires_at"], "2099-06-30T12:00:00Z");
    assert_eq!(v["name"], "nightly");
    // Any offset is accepted and shown in UTC.
    let raw = mint(
        &app,
        app.admin(),
        json!({ "expires_at": "2099-06-30T14:00:00+02:00" }),
    )
    .await;
    assert_eq!(info(&app, &raw).await["expires_at"], "2099-06-30T12:00:00Z");
}

#[tokio::test]
async fn register_without_name_or_expiry_gives_a_token_that_never_expires() {
    let app = TestApp::start().await;
    let raw = mint(&app, app.admin(), json!({})).await;
    let v = info(&app, &raw).await;
    assert!(v["name"].is_null(), "{v}");
    assert!(v["expires_at"].is_null(), "{v}");
    let listed = app.get("/tokens", Some(app.admin())).await;
    listed.assert_status(200);
    let id = app.token_id(&raw).await;
    let entry = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .cloned()
        .expect("listed in /tokens");
    assert!(entry["expires_at"].is_null());
}

#[tokio::test]
async fn register_refuses_bad_names_and_expiries_with_400() {
    let app = TestApp::start().await;
    for body in [
        json!({ "expires_in": 60, "expires_at": "2099-01-01T00:00:00Z" }),
        json!({ "expires_in": 0 }),
        json!({ "expires_in": -5 }),
        json!({ "expires_in": "soon" }),
        json!({ "expires_in": u64::MAX }),
        json!({ "expires_at": "2000-01-01T00:00:00Z" }),
        json!({ "expires_at": "tomorrow" }),
        json!({ "expires_at": "2099-01-01" }),
        json!({ "name": "x".repeat(129) }),
        json!({ "name": "line\nbreak" }),
        json!({ "name": 7 }),
        json!({ "expiry": 60 }),
    ] {
        let r = register_as(&app, app.admin(), body.clone()).await;
        assert_eq!(r.status.as_u16(), 400, "{body}: {}", r.text());
        assert_eq!(r.error_code(), "invalid_body", "{body}");
    }
    // The longest allowed name is fine.
    mint(&app, app.admin(), json!({ "name": "x".repeat(128) })).await;
}

#[tokio::test]
async fn an_expired_token_is_refused_with_401_token_expired() {
    let app = TestApp::start().await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"x").await;
    let raw = mint(
        &app,
        app.admin(),
        json!({ "name": "short", "expires_in": 1, "products": { &product: grant_json(true, false) } }),
    )
    .await;
    // Poll until it expires: 200 before, then 401 token_expired.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = app.download(&raw, &product, "1.0.0").await;
        if r.status.as_u16() != 200 {
            r.assert_error(401, "token_expired");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the token did not expire within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Refused everywhere, including on itself, and it stays refused.
    for path in [
        format!("/product/versions/{product}"),
        format!("/fetch/{raw}"),
        "/product/access".to_string(),
    ] {
        app.get(&path, Some(&raw))
            .await
            .assert_error(401, "token_expired");
    }
    register_as(
        &app,
        &raw,
        json!({ "products": { &product: grant_json(true, false) } }),
    )
    .await
    .assert_error(401, "token_expired");
    // An admin can still look at it.
    let v = app.get(&format!("/fetch/{raw}"), Some(app.admin())).await;
    v.assert_status(200);
    assert_eq!(v.json()["name"], "short");
    assert!(epoch(&v.json()["expires_at"]) <= now());
}

// ---- minting by non-admin tokens ----------------------------------------------------

/// A non-admin parent with download+upload on `a`, download on `b`, expiring in an hour.
struct Parent {
    raw: String,
    a: String,
    b: String,
    other: String,
}

async fn parent(app: &TestApp) -> Parent {
    let (a, b, other) = (
        app.product().await,
        app.product().await,
        app.product().await,
    );
    let raw = mint(
        app,
        app.admin(),
        json!({
            "name": "ci",
            "expires_in": 3600,
            "products": { &a: grant_json(true, true), &b: grant_json(true, false) },
        }),
    )
    .await;
    for p in [&a, &b, &other] {
        app.upload_ok(app.admin(), p, "1.0.0", p.as_bytes()).await;
    }
    Parent { raw, a, b, other }
}

#[tokio::test]
async fn a_non_admin_token_mints_a_token_with_a_subset_of_its_grants() {
    let app = TestApp::start().await;
    let p = parent(&app).await;
    let r = register_as(
        &app,
        &p.raw,
        json!({
            "name": "consumer",
            "expires_in": 600,
            "products": { &p.a: { "download": true } },
        }),
    )
    .await;
    r.assert_status(201);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("text/plain")
    );
    let child = r.text();
    assert!(child.starts_with("depot_"));

    // Exactly download on `a`.
    let got = app.download(&child, &p.a, "1.0.0").await;
    got.assert_status(200);
    assert_eq!(got.body, p.a.as_bytes());
    app.get(&format!("/product/versions/{}", p.a), Some(&child))
        .await
        .assert_status(200);
    app.upload(&child, &p.a, "2.0.0", b"y")
        .await
        .assert_error(403, "forbidden");
    app.download(&child, &p.b, "1.0.0")
        .await
        .assert_error(404, "product_not_found");
    app.download(&child, &p.other, "1.0.0")
        .await
        .assert_error(404, "product_not_found");
    let access = app.get("/product/access", Some(&child)).await;
    assert_eq!(access.json(), json!([p.a]));
    let id = app.token_id(&child).await;
    assert_eq!(
        app.fetch_product(&p.a).await["tokens"][&id],
        json!({ "maintainer": false, "download": true, "upload": false, "delete": false })
    );
    app.get("/tokens", Some(&child))
        .await
        .assert_error(403, "forbidden");

    let v = info(&app, &child).await;
    assert_eq!(v["name"], "consumer");
    assert_eq!(v["admin"], false);
    assert!(epoch(&v["expires_at"]) <= epoch(&info(&app, &p.raw).await["expires_at"]));

    // The parent keeps what it had.
    app.upload_ok(&p.raw, &p.a, "3.0.0", b"z").await;
}

#[tokio::test]
async fn a_minted_token_may_cover_several_products_and_all_of_the_parents_rights() {
    let app = TestApp::start().await;
    let p = parent(&app).await;
    let child = mint(
        &app,
        &p.raw,
        json!({ "products": { &p.a: grant_json(true, true), &p.b: grant_json(true, false) } }),
    )
    .await;
    app.upload_ok(&child, &p.a, "2.0.0", b"from the child")
        .await;
    app.download(&child, &p.b, "1.0.0").await.assert_status(200);
    let mut access: Vec<String> =
        serde_json::from_value(app.get("/product/access", Some(&child)).await.json()).unwrap();
    access.sort();
    let mut expected = vec![p.a.clone(), p.b.clone()];
    expected.sort();
    assert_eq!(access, expected);
}

#[tokio::test]
async fn minting_more_rights_than_its_own_is_403() {
    let app = TestApp::start().await;
    let p = parent(&app).await;
    for products in [
        json!({ &p.b: { "upload": true } }),
        json!({ &p.b: { "download": true, "upload": true } }),
        json!({ &p.a: { "maintainer": true } }),
        json!({ &p.a: { "delete": true } }),
        json!({ &p.a: { "download": true }, &p.b: { "delete": true } }),
    ] {
        let r = register_as(&app, &p.raw, json!({ "products": products.clone() })).await;
        assert_eq!(r.status.as_u16(), 403, "{products}: {}", r.text());
        assert_eq!(r.error_code(), "forbidden");
    }
}

#[tokio::test]
async fn minting_an_admin_token_or_an_unrestricted_one_is_403() {
    let app = TestApp::start().await;
    let p = parent(&app).await;
    for body in [
        json!({ "admin": true, "products": { &p.a: { "download": true } } }),
        json!({ "admin": true }),
        json!({}),
        json!({ "products": {} }),
        json!({ "name": "no grants", "expires_in": 60 }),
    ] {
        let r = register_as(&app, &p.raw, body.clone()).await;
        assert_eq!(r.status.as_u16(), 403, "{body}: {}", r.text());
        assert_eq!(r.error_code(), "forbidden");
    }
    // An empty body, too.
    let r = app
        .send(app.request(reqwest::Method::PUT, "/register", Some(&p.raw)))
        .await;
    r.assert_error(403, "forbidden");
}

#[tokio::test]
async fn minting_a_token_that_outlives_its_parent_is_403() {
    let app = TestApp::start().await;
    let p = parent(&app).await;
    let own = info(&app, &p.raw).await["expires_at"].clone();
    let later = chrono::DateTime::from_timestamp(epoch(&own) + 60, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for expiry in [
        json!({ "expires_in": 7200 }),
        json!({ "expires_at": "2099-01-01T00:00:00Z" }),
        json!({ "expires_at": later }),
    ] {
        let mut body = expiry.clone();
        body["products"] = json!({ &p.a: { "download": true } });
        let r = register_as(&app, &p.raw, body).await;
        assert_eq!(r.status.as_u16(), 403, "{expiry}: {}", r.text());
        assert_eq!(r.error_code(), "forbidden");
    }
    // Its own expiry (shown to the second, so no later than the real one) is fine.
    let child = mint(
        &app,
        &p.raw,
        json!({ "expires_at": own, "products": { &p.a: { "download": true } } }),
    )
    .await;
    assert_eq!(info(&app, &child).await["expires_at"], own);
}

#[tokio::test]
async fn minting_for_a_product_without_a_grant_is_404() {
    let app = TestApp::start().await;
    let p = parent(&app).await;
    for products in [
        json!({ &p.other: { "download": true } }),
        json!({ &p.a: { "download": true }, &p.other: { "download": true } }),
        json!({ "no-such-product": { "download": true } }),
    ] {
        let r = register_as(&app, &p.raw, json!({ "products": products.clone() })).await;
        assert_eq!(r.status.as_u16(), 404, "{products}: {}", r.text());
        assert_eq!(r.error_code(), "product_not_found");
    }
    // Admins get 404 only for a product that does not exist.
    register_as(
        &app,
        app.admin(),
        json!({ "products": { "no-such-product": { "download": true } } }),
    )
    .await
    .assert_error(404, "product_not_found");
    let minted = mint(
        &app,
        app.admin(),
        json!({ "products": { &p.other: { "download": true } } }),
    )
    .await;
    app.download(&minted, &p.other, "1.0.0")
        .await
        .assert_status(200);
}

#[tokio::test]
async fn a_minted_token_inherits_the_parents_expiry_when_none_is_given() {
    let app = TestApp::start().await;
    let p = parent(&app).await;
    let child = mint(
        &app,
        &p.raw,
        json!({ "products": { &p.a: { "download": true } } }),
    )
    .await;
    let own = info(&app, &p.raw).await["expires_at"].clone();
    assert!(own.is_string());
    assert_eq!(info(&app, &child).await["expires_at"], own);
    // A grandchild minted by the child inherits the same expiry again.
    let grandchild = mint(
        &app,
        &child,
        json!({ "products": { &p.a: { "download": true } } }),
    )
    .await;
    assert_eq!(info(&app, &grandchild).await["expires_at"], own);
}

#[tokio::test]
async fn a_parent_without_expiry_may_mint_with_or_without_one() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let parent = app.token_with(&product, Perms::DOWNLOAD).await;
    let forever = mint(
        &app,
        &parent,
        json!({ "products": { &product: { "download": true } } }),
    )
    .await;
    assert!(info(&app, &forever).await["expires_at"].is_null());
    let short = mint(
        &app,
        &parent,
        json!({ "expires_in": 60, "products": { &product: { "download": true } } }),
    )
    .await;
    assert!(info(&app, &short).await["expires_at"].is_string());
}

#[tokio::test]
async fn a_minted_token_with_an_expiry_of_one_second_expires() {
    let app = TestApp::start().await;
    let p = parent(&app).await;
    let child = mint(
        &app,
        &p.raw,
        json!({ "expires_in": 1, "products": { &p.a: { "download": true } } }),
    )
    .await;
    eventually(
        Duration::from_secs(15),
        "the minted token to expire",
        || async {
            app.get("/product/access", Some(&child))
                .await
                .status
                .as_u16()
                == 401
        },
    )
    .await;
    app.download(&child, &p.a, "1.0.0")
        .await
        .assert_error(401, "token_expired");
    // The parent is untouched.
    app.download(&p.raw, &p.a, "1.0.0").await.assert_status(200);
}
