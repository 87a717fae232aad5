//! Events and the audit log (issue 11): every change leaves exactly its event, with the
//! right actor, stored with the change (it survives a SIGKILL right after), readable
//! through `GET /audit` by whom it concerns, and never carrying a secret.

mod common;

use common::*;
use serde_json::{Value, json};

/// Every event with an id above `after`, oldest first.
async fn events_after(app: &TestApp, after: &str) -> Vec<Value> {
    let page = app.get("/audit?limit=1000", Some(app.admin())).await;
    page.assert_status(200);
    let mut events: Vec<Value> = page.json()["events"]
        .as_array()
        .expect("events array")
        .iter()
        .filter(|e| e["id"].as_str().unwrap_or_default() > after)
        .cloned()
        .collect();
    events.reverse();
    events
}

/// The newest event id so far ("" when there is none).
async fn newest(app: &TestApp) -> String {
    let page = app.get("/audit?limit=1", Some(app.admin())).await;
    page.assert_status(200);
    page.json()["events"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Runs `change`, then asserts that exactly `expected` events (type, product, version)
/// appeared, in that order, by the token `actor` (a public id); returns them.
async fn expect_events<F, Fut>(
    app: &TestApp,
    actor: &str,
    expected: &[(&str, Option<&str>, Option<&str>)],
    change: F,
) -> Vec<Value>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let before = newest(app).await;
    change().await;
    let events = events_after(app, &before).await;
    let got: Vec<(String, Value, Value)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("?").to_string(),
                e["product"].clone(),
                e["version"].clone(),
            )
        })
        .collect();
    let want: Vec<(String, Value, Value)> = expected
        .iter()
        .map(|(t, p, v)| (t.to_string(), json!(p), json!(v)))
        .collect();
    assert_eq!(got, want, "events: {events:#?}");
    for e in &events {
        assert_eq!(e["actor"]["token_id"], actor, "actor of {e}");
        assert!(e["actor"]["admin"].is_boolean());
        let time = e["time"].as_str().expect("time");
        assert!(
            chrono::DateTime::parse_from_rfc3339(time).is_ok() && time.ends_with('Z'),
            "time {time} is RFC 3339 UTC"
        );
        assert!(e["request_id"].is_string(), "request_id of {e}");
    }
    events
}

#[tokio::test]
async fn every_mutation_route_records_exactly_its_event_with_its_actor() {
    let app = TestApp::start().await;
    let admin_id = app.token_id(app.admin()).await;
    let product = unique("prod");

    // PUT /product/create
    expect_events(
        &app,
        &admin_id,
        &[("product.created", Some(&product), None)],
        || async {
            app.create_product(app.admin(), &product).await;
        },
    )
    .await;

    // PUT /register
    let mut raw = String::new();
    let created = expect_events(
        &app,
        &admin_id,
        &[("token.created", None, None)],
        || async {
            raw = app.register(false).await;
        },
    )
    .await;
    app.remember_secret(&raw);
    let token_id = app.token_id(&raw).await;
    assert_eq!(created[0]["details"]["token_id"], token_id);
    assert_eq!(created[0]["details"]["parent"], admin_id);

    // PUT /product/modify/addToken
    let set = expect_events(
        &app,
        &admin_id,
        &[("grant.set", Some(&product), None)],
        || async {
            app.grant(&product, &raw, Perms::ALL).await;
        },
    )
    .await;
    assert_eq!(set[0]["details"]["token_id"], token_id);
    assert_eq!(set[0]["details"]["permissions"]["upload"], true);

    // POST /product/upload, by the granted token
    let bytes = payload(7, 1000);
    let published = expect_events(
        &app,
        &token_id,
        &[("version.published", Some(&product), Some("1.0.0"))],
        || async {
            app.upload_ok(&raw, &product, "1.0.0", &bytes).await;
        },
    )
    .await;
    assert_eq!(published[0]["details"]["size"], 1000);
    assert_eq!(published[0]["details"]["checksum"], sha256_hex(&bytes));
    assert_eq!(published[0]["details"]["file_name"], "artifact.bin");

    // DELETE /product/modify/deleteVersion
    let deleted = expect_events(
        &app,
        &token_id,
        &[("version.deleted", Some(&product), Some("1.0.0"))],
        || async {
            app.delete_json(
                "/product/modify/deleteVersion",
                Some(&raw),
                &json!({ "product": product, "version": "1.0.0" }),
            )
            .await
            .assert_status(204);
        },
    )
    .await;
    assert_eq!(deleted[0]["details"]["checksum"], sha256_hex(&bytes));

    // DELETE /product/delete/{product}/{version}
    app.upload_ok(&raw, &product, "2.0.0", &bytes).await;
    expect_events(
        &app,
        &token_id,
        &[("version.deleted", Some(&product), Some("2.0.0"))],
        || async {
            app.delete(&format!("/product/delete/{product}/2.0.0"), Some(&raw))
                .await
                .assert_status(204);
        },
    )
    .await;

    // A token minted by a non-admin records its parent.
    let mut child = String::new();
    let minted = expect_events(
        &app,
        &token_id,
        &[("token.created", None, None)],
        || async {
            let r = app
                .put_json(
                    "/register",
                    Some(&raw),
                    &json!({ "products": { product.clone(): { "download": true } } }),
                )
                .await;
            r.assert_status(201);
            child = r.text();
        },
    )
    .await;
    app.remember_secret(&child);
    assert_eq!(minted[0]["details"]["parent"], token_id);
    assert_eq!(
        minted[0]["details"]["grants"][&product]["download"], true,
        "{minted:?}"
    );

    // DELETE /product/modify/deleteToken
    let removed = expect_events(
        &app,
        &admin_id,
        &[("grant.removed", Some(&product), None)],
        || async {
            app.delete_json(
                "/product/modify/deleteToken",
                Some(app.admin()),
                &json!({ "product": product, "token": child }),
            )
            .await
            .assert_status(204);
        },
    )
    .await;
    assert_eq!(
        removed[0]["details"]["token_id"],
        app.token_id(&child).await
    );

    // DELETE /prune/{token}: the token and the one minted below it.
    let child_id = app.token_id(&child).await;
    let pruned = expect_events(
        &app,
        &admin_id,
        &[("token.pruned", None, None), ("token.pruned", None, None)],
        || async {
            app.prune(&token_id).await;
        },
    )
    .await;
    assert_eq!(pruned[0]["details"]["token_id"], token_id);
    assert_eq!(pruned[1]["details"]["token_id"], child_id);
    assert_eq!(pruned[1]["details"]["reason"], "parent_pruned");

    // DELETE /product/delete/{product}
    app.upload_ok(app.admin(), &product, "3.0.0", &bytes).await;
    let gone = expect_events(
        &app,
        &admin_id,
        &[("product.deleted", Some(&product), None)],
        || async {
            app.delete(&format!("/product/delete/{product}"), Some(app.admin()))
                .await
                .assert_status(204);
        },
    )
    .await;
    assert_eq!(gone[0]["details"]["versions"], 1);

    // Refused changes leave nothing.
    expect_events(&app, &admin_id, &[], || async {
        app.put_json(
            "/product/create",
            Some(app.admin()),
            &json!({ "name": "bad name!" }),
        )
        .await
        .assert_status(400);
        app.delete(&format!("/product/delete/{product}"), Some(app.admin()))
            .await
            .assert_status(404);
    })
    .await;
}

#[tokio::test]
async fn no_event_holds_a_raw_token_or_a_token_hash() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let raw = app.token_with(&product, Perms::ALL).await;
    app.upload_ok(&raw, &product, "1.0.0", b"x").await;
    app.prune(&raw).await;
    let export = app.get("/audit?format=ndjson", Some(app.admin())).await;
    export.assert_status(200);
    let text = export.text();
    assert!(text.lines().count() >= 4, "{text}");
    for secret in [raw.as_str(), app.admin()] {
        assert!(!text.contains(secret), "a raw token is in the audit log");
        assert!(
            !text.contains(&sha256_hex(secret.as_bytes())),
            "a token hash is in the audit log"
        );
    }
}

#[tokio::test]
async fn startup_and_the_cli_record_their_tokens_as_system_actors() {
    let app = TestApp::start().await;
    let events = events_after(&app, "").await;
    let bootstrap = events
        .iter()
        .find(|e| e["type"] == "token.created")
        .expect("the bootstrap admin's token.created");
    assert_eq!(bootstrap["actor"], json!({ "system": "bootstrap" }));
    assert_eq!(bootstrap["details"]["admin"], true);
    let system = app
        .get("/audit?actor=system:bootstrap", Some(app.admin()))
        .await;
    system.assert_status(200);
    assert!(!system.json()["events"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn the_audit_log_is_newest_first_and_pages_with_its_cursor() {
    let app = TestApp::start().await;
    let product = app.product().await;
    for v in 0..7 {
        app.upload_ok(app.admin(), &product, &format!("1.0.{v}"), b"x")
            .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => {
                format!("/audit?product={product}&type=version.published&limit=3&cursor={c}")
            }
            None => format!("/audit?product={product}&type=version.published&limit=3"),
        };
        let page = app.get(&path, Some(app.admin())).await;
        page.assert_status(200);
        let body = page.json();
        for e in body["events"].as_array().unwrap() {
            seen.push(e["version"].as_str().unwrap().to_string());
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let want: Vec<String> = (0..7).rev().map(|v| format!("1.0.{v}")).collect();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn audit_filters_by_type_actor_and_time() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let raw = app.token_with(&product, Perms::ALL).await;
    let id = app.token_id(&raw).await;
    app.upload_ok(&raw, &product, "1.0.0", b"x").await;
    let by_token = app
        .get(&format!("/audit?actor={id}"), Some(app.admin()))
        .await
        .json();
    let types: Vec<&str> = by_token["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["version.published"]);
    let future = app
        .get("/audit?since=2999-01-01T00:00:00Z", Some(app.admin()))
        .await
        .json();
    assert_eq!(future["events"], json!([]));
    let past = app
        .get("/audit?until=2000-01-01T00:00:00Z", Some(app.admin()))
        .await
        .json();
    assert_eq!(past["events"], json!([]));
}

#[tokio::test]
async fn audit_permissions_follow_the_product_grants() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let other = app.product().await;
    let maintainer = app.token_with(&product, Perms::MAINTAINER).await;
    let uploader = app.token_with(&product, Perms::UPLOAD).await;
    app.upload_ok(app.admin(), &other, "1.0.0", b"x").await;

    let own = app
        .get(&format!("/audit?product={product}"), Some(&maintainer))
        .await;
    own.assert_status(200);
    for e in own.json()["events"].as_array().unwrap() {
        assert_eq!(e["product"], product.as_str());
    }
    app.get("/audit", Some(&maintainer))
        .await
        .assert_error(403, "forbidden");
    app.get(&format!("/audit?product={other}"), Some(&maintainer))
        .await
        .assert_error(404, "product_not_found");
    app.get(&format!("/audit?product={product}"), Some(&uploader))
        .await
        .assert_error(403, "forbidden");
    app.get("/audit", None)
        .await
        .assert_error(401, "missing_token");
    let all = app.get("/audit", Some(app.admin())).await;
    all.assert_status(200);
    assert!(
        all.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["product"] == other.as_str())
    );
}

#[tokio::test]
async fn bad_audit_queries_are_400_invalid_query() {
    let app = TestApp::start().await;
    for query in [
        "limit=0",
        "limit=1001",
        "type=version.nope",
        "cursor=garbage",
        "since=yesterday",
        "actor=root",
        "format=xml",
        "unknown=1",
    ] {
        let r = app.get(&format!("/audit?{query}"), Some(app.admin())).await;
        assert_eq!(r.status.as_u16(), 400, "{query}: {}", r.text());
        assert!(r.json()["error"].is_string());
    }
    app.get("/audit?product=..", Some(app.admin()))
        .await
        .assert_status(400);
}

#[tokio::test]
async fn an_event_survives_a_sigkill_right_after_its_change() {
    let mut app = TestApp::start().await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"crash")
        .await;
    app.kill().await;
    app.start_again().await;
    let page = app
        .get(
            &format!("/audit?product={product}&type=version.published"),
            Some(app.admin()),
        )
        .await;
    page.assert_status(200);
    let events = page.json()["events"].clone();
    assert_eq!(events.as_array().map(Vec::len), Some(1), "{events}");
    assert_eq!(events[0]["version"], "1.0.0");
}

// ---- the original web UI's calls ------------------------------------------------------

#[tokio::test]
async fn the_original_web_ui_can_log_in_create_a_product_and_list_products() {
    let app = TestApp::start().await;
    let login = app
        .request(reqwest::Method::POST, "/api/ui/login", None)
        .json(&json!({ "token": app.admin() }));
    let r = app.send(login).await;
    r.assert_status(200);
    assert_eq!(r.json(), json!({ "success": true, "admin": true }));

    let name = unique("ui");
    app.put_json(
        "/api/product/create",
        Some(app.admin()),
        &json!({ "name": name, "tokens": {} }),
    )
    .await
    .assert_status(201);
    app.put_json(
        "/api/product/create",
        Some(app.admin()),
        &json!({ "name": unique("ui"), "tokens": { "tok_0000000000000000": { "download": true } } }),
    )
    .await
    .assert_error(400, "invalid_body");
    let list = app.get("/api/product/list", Some(app.admin())).await;
    list.assert_status(200);
    assert!(list.json().as_array().unwrap().contains(&json!(name)));

    let tokens = app.get("/api/tokens", Some(app.admin())).await.json();
    for t in tokens.as_array().unwrap() {
        assert_eq!(
            t["token"], t["id"],
            "the UI revokes by `token`: the public id"
        );
    }
}

#[tokio::test]
async fn ui_login_answers_400_without_a_token_and_401_for_a_bad_one() {
    let app = TestApp::start().await;
    let user = app.register(false).await;
    let ok = app
        .send(
            app.request(reqwest::Method::POST, "/ui/login", None)
                .json(&json!({ "token": user })),
        )
        .await;
    ok.assert_status(200);
    assert_eq!(ok.json()["admin"], false);
    let missing = app
        .send(
            app.request(reqwest::Method::POST, "/ui/login", None)
                .json(&json!({})),
        )
        .await;
    missing.assert_error(400, "missing_token");
    let bad = app
        .send(
            app.request(reqwest::Method::POST, "/ui/login", None)
                .json(&json!({ "token": format!("depot_{}", random_string(43)) })),
        )
        .await;
    bad.assert_error(401, "invalid_token");
    app.prune(&user).await;
    let revoked = app
        .send(
            app.request(reqwest::Method::POST, "/ui/login", None)
                .json(&json!({ "token": user })),
        )
        .await;
    revoked.assert_error(401, "invalid_token");
    app.assert_no_secrets_logged();
}

#[tokio::test]
async fn the_product_list_shows_only_products_the_caller_has_a_grant_on() {
    let app = TestApp::start().await;
    let mine = app.product().await;
    let theirs = app.product().await;
    let user = app.token_with(&mine, Perms::DOWNLOAD).await;
    let list = app.get("/product/list", Some(&user)).await.json();
    assert_eq!(list, json!([mine]));
    let all = app.get("/product/list", Some(app.admin())).await.json();
    assert!(all.as_array().unwrap().contains(&json!(theirs)));
}
