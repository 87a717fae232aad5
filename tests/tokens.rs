//! Token management: register, fetch, prune, grants by public id, and the log never
//! showing a raw token.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn register_returns_201_with_a_plain_text_raw_token_starting_with_depot() {
    let app = TestApp::start().await;
    let r = app
        .put_json("/register", Some(app.admin()), &json!({ "admin": false }))
        .await;
    r.assert_status(201);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "content-type {ct:?}");
    let raw = r.text();
    app.remember_secret(&raw);
    assert!(raw.starts_with("depot_"), "token {raw:?}");
    assert_eq!(raw.trim(), raw, "no surrounding whitespace or quotes");
    assert!(!raw.contains('"'));

    // The new token works at once, and a new token has no products.
    let access = app.get("/product/access", Some(&raw)).await;
    access.assert_status(200);
    assert_eq!(access.text(), "[]");
}

#[tokio::test]
async fn register_with_an_empty_body_makes_a_non_admin_token() {
    let app = TestApp::start().await;
    let r = app
        .send(app.request(reqwest::Method::PUT, "/register", Some(app.admin())))
        .await;
    r.assert_status(201);
    let raw = r.text();
    app.remember_secret(&raw);
    let info = app
        .get(&format!("/fetch/{raw}"), Some(app.admin()))
        .await
        .json();
    assert_eq!(info["admin"], false);
}

#[tokio::test]
async fn register_admin_true_makes_an_admin_token_that_can_register() {
    let app = TestApp::start().await;
    let second_admin = app.register(true).await;
    let r = app
        .put_json("/register", Some(&second_admin), &json!({}))
        .await;
    r.assert_status(201);
    app.remember_secret(&r.text());
    let info = app
        .get(&format!("/fetch/{second_admin}"), Some(&second_admin))
        .await
        .json();
    assert_eq!(info["admin"], true);
}

#[tokio::test]
async fn register_with_a_malformed_body_is_400_invalid_body() {
    let app = TestApp::start().await;
    for body in [
        "{",
        "not json",
        "{\"admin\": \"yes\"}",
        "[]",
        "{\"admin\": false, \"bogus\": 1}",
    ] {
        let req = app
            .request(reqwest::Method::PUT, "/register", Some(app.admin()))
            .header("Content-Type", "application/json")
            .body(body);
        app.send(req).await.assert_error(400, "invalid_body");
    }
}

#[tokio::test]
async fn fetch_token_returns_id_admin_and_created_at_for_admin_and_for_the_token_itself() {
    let app = TestApp::start().await;
    let raw = app.register(false).await;
    let other = app.register(false).await;

    let by_admin = app.get(&format!("/fetch/{raw}"), Some(app.admin())).await;
    by_admin.assert_status(200);
    let info = by_admin.json();
    let id = info["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("tok_"), "id {id}");
    assert_eq!(info["admin"], false);
    let created = info["created_at"].as_str().expect("created_at");
    assert!(
        created.contains('T') && created.len() >= 20,
        "created_at {created}"
    );
    assert!(
        !by_admin.text().contains(&raw),
        "fetch must not echo the raw token"
    );
    assert!(
        !by_admin.text().contains(&sha256_hex(raw.as_bytes())),
        "fetch must not show the hash"
    );

    // The token itself, by raw value and by id.
    let by_self = app.get(&format!("/fetch/{raw}"), Some(&raw)).await;
    by_self.assert_status(200);
    assert_eq!(by_self.json()["id"], id.as_str());
    app.get(&format!("/fetch/{id}"), Some(&raw))
        .await
        .assert_status(200);
    // The admin by id.
    let by_id = app.get(&format!("/fetch/{id}"), Some(app.admin())).await;
    by_id.assert_status(200);
    assert_eq!(by_id.json()["id"], id.as_str());

    // Another non-admin token: 403.
    app.get(&format!("/fetch/{raw}"), Some(&other))
        .await
        .assert_error(403, "forbidden");
    app.get(&format!("/fetch/{id}"), Some(&other))
        .await
        .assert_error(403, "forbidden");
}

#[tokio::test]
async fn fetch_of_an_unknown_token_is_404_token_not_found_for_admin() {
    let app = TestApp::start().await;
    let unknown = format!("depot_{}", random_string(43));
    app.get(&format!("/fetch/{unknown}"), Some(app.admin()))
        .await
        .assert_error(404, "token_not_found");
    app.get("/fetch/tok_0123456789abcdef", Some(app.admin()))
        .await
        .assert_error(404, "token_not_found");
}

#[tokio::test]
async fn requests_without_a_token_are_401_missing_token_and_with_an_unknown_one_401_invalid_token()
{
    let app = TestApp::start().await;
    app.get("/product/access", None)
        .await
        .assert_error(401, "missing_token");
    let empty = app
        .request(reqwest::Method::GET, "/product/access", None)
        .header("X-Api-Token", "");
    app.send(empty).await.assert_error(401, "missing_token");
    let unknown = format!("depot_{}", random_string(43));
    app.get("/product/access", Some(&unknown))
        .await
        .assert_error(401, "invalid_token");
    app.get("/product/access", Some("garbage"))
        .await
        .assert_error(401, "invalid_token");
    // Bearer authentication is accepted too.
    let bearer = app
        .request(reqwest::Method::GET, "/product/access", None)
        .header("Authorization", format!("Bearer {}", app.admin()));
    app.send(bearer).await.assert_status(200);
}

#[tokio::test]
async fn prune_revokes_the_token_at_once_and_removes_its_grants() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let raw = app.token_with(&product, Perms::DOWNLOAD).await;
    let id = app.token_id(&raw).await;
    app.get(&format!("/product/fetch/{product}"), Some(&raw))
        .await
        .assert_status(200);
    assert!(
        app.fetch_product(&product).await["tokens"]
            .get(&id)
            .is_some()
    );

    app.prune(&raw).await;

    app.get("/product/access", Some(&raw))
        .await
        .assert_error(401, "invalid_token");
    app.get(&format!("/product/fetch/{product}"), Some(&raw))
        .await
        .assert_error(401, "invalid_token");
    let tokens = app.fetch_product(&product).await["tokens"].clone();
    assert!(
        tokens.get(&id).is_none(),
        "grant of a pruned token survives: {tokens}"
    );
    app.get(&format!("/fetch/{id}"), Some(app.admin()))
        .await
        .assert_error(404, "token_not_found");
    // Pruning again: the token is gone.
    app.delete(&format!("/prune/{raw}"), Some(app.admin()))
        .await
        .assert_error(404, "token_not_found");
}

#[tokio::test]
async fn prune_accepts_the_public_id() {
    let app = TestApp::start().await;
    let raw = app.register(false).await;
    let id = app.token_id(&raw).await;
    app.prune(&id).await;
    app.get("/product/access", Some(&raw))
        .await
        .assert_error(401, "invalid_token");
    app.delete(&format!("/prune/{id}"), Some(app.admin()))
        .await
        .assert_error(404, "token_not_found");
}

#[tokio::test]
async fn prune_of_an_unknown_token_is_404_token_not_found() {
    let app = TestApp::start().await;
    let unknown = format!("depot_{}", random_string(43));
    app.delete(&format!("/prune/{unknown}"), Some(app.admin()))
        .await
        .assert_error(404, "token_not_found");
    app.delete("/prune/tok_00000000deadbeef", Some(app.admin()))
        .await
        .assert_error(404, "token_not_found");
}

#[tokio::test]
async fn product_tokens_map_is_keyed_by_public_id_and_never_shows_raw_tokens_or_hashes() {
    let app = TestApp::start().await;
    let creator = app.register(false).await;
    let product = unique("prod");
    app.create_product(&creator, &product).await;
    let reader = app.token_with(&product, Perms::DOWNLOAD).await;
    app.upload_ok(&creator, &product, "1.0.0", b"bytes").await;
    let creator_id = app.token_id(&creator).await;
    let reader_id = app.token_id(&reader).await;

    for caller in [app.admin().to_string(), creator.clone(), reader.clone()] {
        let r = app
            .get(&format!("/product/fetch/{product}"), Some(&caller))
            .await;
        r.assert_status(200);
        let body = r.text();
        let v = r.json();
        let tokens = v["tokens"].as_object().expect("tokens object");
        assert_eq!(tokens.len(), 2, "{body}");
        for key in tokens.keys() {
            assert!(key.starts_with("tok_"), "key {key} is not a public id");
        }
        assert_eq!(tokens[&creator_id], Perms::ALL.json());
        assert_eq!(tokens[&reader_id], Perms::DOWNLOAD.json());
        for secret in [app.admin(), creator.as_str(), reader.as_str()] {
            assert!(
                !body.contains(secret),
                "a raw token appears in the product body: {body}"
            );
            assert!(
                !body.contains(&sha256_hex(secret.as_bytes())),
                "a token hash appears in the product body: {body}"
            );
        }
    }
}

#[tokio::test]
async fn add_token_accepts_the_raw_token_or_the_public_id() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let by_raw = app.register(false).await;
    let by_id = app.register(false).await;
    let id = app.token_id(&by_id).await;
    app.grant(&product, &by_raw, Perms::DOWNLOAD).await;
    app.grant(&product, &id, Perms::UPLOAD).await;

    let tokens = app.fetch_product(&product).await["tokens"].clone();
    assert_eq!(tokens[app.token_id(&by_raw).await], Perms::DOWNLOAD.json());
    assert_eq!(tokens[&id], Perms::UPLOAD.json());
    app.get(&format!("/product/fetch/{product}"), Some(&by_id))
        .await
        .assert_status(200);

    // Granting again replaces the flags.
    app.grant(&product, &id, Perms::DELETE).await;
    assert_eq!(
        app.fetch_product(&product).await["tokens"][&id],
        Perms::DELETE.json()
    );
}

#[tokio::test]
async fn delete_token_accepts_the_raw_token_or_the_public_id() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let a = app.token_with(&product, Perms::DOWNLOAD).await;
    let b = app.token_with(&product, Perms::DOWNLOAD).await;
    let b_id = app.token_id(&b).await;

    for target in [a.as_str(), b_id.as_str()] {
        let body = json!({ "product": product, "token": target });
        app.delete_json("/product/modify/deleteToken", Some(app.admin()), &body)
            .await
            .assert_status(204);
    }
    for t in [&a, &b] {
        app.get(&format!("/product/fetch/{product}"), Some(t))
            .await
            .assert_error(404, "product_not_found");
        let access = app.get("/product/access", Some(t)).await;
        assert_eq!(access.text(), "[]");
    }
    // Removing a grant that no longer exists.
    let body = json!({ "product": product, "token": a });
    app.delete_json("/product/modify/deleteToken", Some(app.admin()), &body)
        .await
        .assert_error(404, "token_not_found");
}

#[tokio::test]
async fn granting_or_revoking_an_unknown_token_is_404_token_not_found() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let unknown_raw = format!("depot_{}", random_string(43));
    for token in [unknown_raw.as_str(), "tok_0123456789abcdef"] {
        let body =
            json!({ "product": product, "token": token, "permissions": Perms::DOWNLOAD.json() });
        app.put_json("/product/modify/addToken", Some(app.admin()), &body)
            .await
            .assert_error(404, "token_not_found");
        let body = json!({ "product": product, "token": token });
        app.delete_json("/product/modify/deleteToken", Some(app.admin()), &body)
            .await
            .assert_error(404, "token_not_found");
    }
    // Nothing was added.
    assert_eq!(
        app.fetch_product(&product).await["tokens"]
            .as_object()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_revoked_grant_takes_effect_on_the_next_request() {
    let app = TestApp::start().await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"x").await;
    let raw = app.token_with(&product, Perms::DOWNLOAD).await;
    app.download(&raw, &product, "1.0.0")
        .await
        .assert_status(200);
    let body = json!({ "product": product, "token": raw });
    app.delete_json("/product/modify/deleteToken", Some(app.admin()), &body)
        .await
        .assert_status(204);
    app.download(&raw, &product, "1.0.0")
        .await
        .assert_error(404, "product_not_found");
    // And a narrowed grant too.
    app.grant(&product, &raw, Perms::UPLOAD).await;
    app.download(&raw, &product, "1.0.0")
        .await
        .assert_error(403, "forbidden");
}

#[tokio::test]
async fn no_raw_token_appears_in_the_server_log() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let user = app.token_with(&product, Perms::ALL).await;
    let victim = app.register(false).await;
    let unknown = format!("depot_{}", random_string(43));
    app.remember_secret(&unknown);

    // Raw tokens in paths, bodies and headers, on success and failure paths.
    app.get(&format!("/fetch/{user}"), Some(&user))
        .await
        .assert_status(200);
    app.get(&format!("/fetch/{victim}"), Some(&user))
        .await
        .assert_error(403, "forbidden");
    app.get(&format!("/fetch/{unknown}"), Some(app.admin()))
        .await
        .assert_error(404, "token_not_found");
    app.get("/product/access", Some(&unknown))
        .await
        .assert_error(401, "invalid_token");
    app.get(&format!("/product/fetch/{unknown}"), Some(&user))
        .await
        .assert_error(404, "product_not_found");
    let body =
        json!({ "product": product, "token": victim, "permissions": Perms::DOWNLOAD.json() });
    app.put_json("/product/modify/addToken", Some(&user), &body)
        .await
        .assert_status(201);
    let body =
        json!({ "product": product, "token": unknown, "permissions": Perms::DOWNLOAD.json() });
    app.put_json("/product/modify/addToken", Some(&user), &body)
        .await
        .assert_error(404, "token_not_found");
    let body = json!({ "product": product, "token": victim });
    app.delete_json("/product/modify/deleteToken", Some(&user), &body)
        .await
        .assert_status(204);
    app.upload_ok(&user, &product, "1.0.0", b"payload").await;
    app.download(&user, &product, "1.0.0")
        .await
        .assert_status(200);
    app.download(&unknown, &product, "1.0.0")
        .await
        .assert_error(401, "invalid_token");
    let r = app
        .put_json("/register", Some(&user), &json!({ "admin": true }))
        .await;
    r.assert_error(403, "forbidden");
    app.delete(&format!("/prune/{victim}"), Some(&user))
        .await
        .assert_error(403, "forbidden");
    app.prune(&victim).await;
    app.get("/product/access", Some(&victim))
        .await
        .assert_error(401, "invalid_token");
    app.delete(&format!("/prune/{unknown}"), Some(app.admin()))
        .await
        .assert_error(404, "token_not_found");

    app.assert_no_secrets_logged();
    assert!(
        app.log().contains("token pruned"),
        "the log is captured:\n{}",
        app.log()
    );
}

#[tokio::test]
async fn an_expiry_past_the_year_9999_is_refused_rather_than_shown_as_1970() {
    let app = TestApp::start().await;
    let r = app
        .put_json(
            "/register",
            Some(app.admin()),
            &json!({ "expires_in": 9_000_000_000_000_000u64 }),
        )
        .await;
    r.assert_error(400, "invalid_body");
    // The last expiry RFC 3339 can write is fine, given either way.
    let r = app
        .put_json(
            "/register",
            Some(app.admin()),
            &json!({ "expires_at": "9999-12-31T23:59:59Z" }),
        )
        .await;
    r.assert_status(201);
    let raw = r.text();
    app.remember_secret(&raw);
    let info = app
        .get(&format!("/fetch/{raw}"), Some(app.admin()))
        .await
        .json();
    assert_eq!(info["expires_at"], "9999-12-31T23:59:59Z");
}
