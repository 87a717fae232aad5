//! Products: create, fetch, access, delete, the modify actions, names, the `/api` mount,
//! health, and JSON errors everywhere.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn create_product_is_201_and_the_creator_gets_all_four_flags() {
    let app = TestApp::start().await;
    let creator = app.register(false).await;
    let name = unique("lib");
    let r = app
        .put_json("/product/create", Some(&creator), &json!({ "name": name }))
        .await;
    r.assert_status(201);
    let p = app.fetch_product(&name).await;
    assert_eq!(p["name"], name.as_str());
    let id = app.token_id(&creator).await;
    assert_eq!(p["tokens"][&id], Perms::ALL.json());
    assert_eq!(p["versions"], json!({}));
    let access = app.get("/product/access", Some(&creator)).await;
    assert_eq!(access.json(), json!([name]));
}

#[tokio::test]
async fn creating_a_duplicate_product_is_409_product_exists() {
    let app = TestApp::start().await;
    let name = app.product().await;
    let other = app.register(false).await;
    for token in [app.admin(), other.as_str()] {
        app.put_json("/product/create", Some(token), &json!({ "name": name }))
            .await
            .assert_error(409, "product_exists");
    }
    // The loser got no grant.
    let id = app.token_id(&other).await;
    assert!(app.fetch_product(&name).await["tokens"].get(&id).is_none());
}

#[tokio::test]
async fn product_names_outside_the_pattern_are_400_invalid_name() {
    let app = TestApp::start().await;
    let too_long = "a".repeat(129);
    let bad = [
        "",
        "-lead",
        ".hidden",
        "_x",
        "a b",
        "a/b",
        "a\\b",
        "..",
        ".",
        "../etc",
        "..%2F..%2Fetc",
        "%2e%2e",
        "é",
        "a\nb",
        "a:b",
        too_long.as_str(),
    ];
    for name in bad {
        app.put_json(
            "/product/create",
            Some(app.admin()),
            &json!({ "name": name }),
        )
        .await
        .assert_error(400, "invalid_name");
    }
    let listed = app.get("/product/access", Some(app.admin())).await.json();
    assert_eq!(listed, json!([]), "no product was created");

    for good in ["a".repeat(128), "A0._+-z".to_string(), "9".to_string()] {
        app.create_product(app.admin(), &good).await;
    }
}

#[tokio::test]
async fn malformed_create_bodies_are_400_invalid_body() {
    let app = TestApp::start().await;
    for body in [
        "",
        "{",
        "nope",
        "{}",
        "{\"name\": 5}",
        "{\"name\": \"ok\", \"extra\": 1}",
    ] {
        let req = app
            .request(Method::PUT, "/product/create", Some(app.admin()))
            .header("Content-Type", "application/json")
            .body(body);
        app.send(req).await.assert_error(400, "invalid_body");
    }
    // Without a JSON content type.
    let req = app
        .request(Method::PUT, "/product/create", Some(app.admin()))
        .header("Content-Type", "text/plain")
        .body("{\"name\": \"x\"}");
    app.send(req).await.assert_error(400, "invalid_body");
}

#[tokio::test]
async fn a_product_without_a_grant_looks_exactly_like_a_missing_product() {
    let app = TestApp::start().await;
    let hidden = app.product().await;
    let missing = unique("missing");
    let stranger = app.register(false).await;
    let a = app
        .get(&format!("/product/fetch/{hidden}"), Some(&stranger))
        .await;
    let b = app
        .get(&format!("/product/fetch/{missing}"), Some(&stranger))
        .await;
    a.assert_error(404, "product_not_found");
    b.assert_error(404, "product_not_found");
    assert_eq!(
        a.text().replace(&hidden, "P"),
        b.text().replace(&missing, "P")
    );
    // And for the admin, a missing product is the same 404.
    app.get(&format!("/product/fetch/{missing}"), Some(app.admin()))
        .await
        .assert_error(404, "product_not_found");
}

#[tokio::test]
async fn operations_on_a_missing_product_are_404_product_not_found_even_for_admin() {
    let app = TestApp::start().await;
    let missing = unique("missing");
    let admin = Some(app.admin());
    app.get(&format!("/product/fetch/{missing}"), admin)
        .await
        .assert_error(404, "product_not_found");
    app.delete(&format!("/product/delete/{missing}"), admin)
        .await
        .assert_error(404, "product_not_found");
    app.delete(&format!("/product/delete/{missing}/1.0.0"), admin)
        .await
        .assert_error(404, "product_not_found");
    let body = json!({ "product": missing, "version": "1.0.0" });
    app.delete_json("/product/modify/deleteVersion", admin, &body)
        .await
        .assert_error(404, "product_not_found");
    app.get(&format!("/product/download/{missing}/1.0.0"), admin)
        .await
        .assert_error(404, "product_not_found");
    app.get(&format!("/product/download/{missing}/latest"), admin)
        .await
        .assert_error(404, "product_not_found");
    app.get(&format!("/product/presign/{missing}/1.0.0"), admin)
        .await
        .assert_error(404, "product_not_found");
    app.get(&format!("/product/versions/{missing}"), admin)
        .await
        .assert_error(404, "product_not_found");
    app.upload(app.admin(), &missing, "1.0.0", b"x")
        .await
        .assert_error(404, "product_not_found");
    let token = app.register(false).await;
    let body = json!({ "product": missing, "token": token, "permissions": Perms::DOWNLOAD.json() });
    app.put_json("/product/modify/addToken", admin, &body)
        .await
        .assert_error(404, "product_not_found");
    let body = json!({ "product": missing, "token": token });
    app.delete_json("/product/modify/deleteToken", admin, &body)
        .await
        .assert_error(404, "product_not_found");
    app.assert_blob_count(0);
}

#[tokio::test]
async fn product_fetch_lists_versions_with_size_checksum_and_file_name() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let bytes = payload(1, 3000);
    let form = Form::upload(&product, "1.0.0", "lib.tar.gz", &bytes);
    app.upload_form(Some(app.admin()), form)
        .await
        .assert_status(201);
    let p = app.fetch_product(&product).await;
    let v = &p["versions"]["1.0.0"];
    assert_eq!(v["size"], 3000);
    assert_eq!(v["file_name"], "lib.tar.gz");
    assert_eq!(
        v["checksum"].as_str().unwrap(),
        format!("sha256:{}", sha256_hex(&bytes))
    );
    assert_eq!(p["versions"].as_object().unwrap().len(), 1);
}

#[tokio::test]
async fn product_access_lists_granted_products_and_admin_sees_all() {
    let app = TestApp::start().await;
    let a = app.product().await;
    let b = app.product().await;
    let c = app.product().await;
    let fresh = app.register(false).await;
    let r = app.get("/product/access", Some(&fresh)).await;
    r.assert_status(200);
    assert_eq!(r.text(), "[]", "an empty list, never null");

    let t = app.token_with(&a, Perms::DOWNLOAD).await;
    app.grant(&c, &t, Perms::UPLOAD).await; // a grant without download still lists the product
    let mut expected = vec![a.clone(), c.clone()];
    expected.sort();
    assert_eq!(
        app.get("/product/access", Some(&t)).await.json(),
        json!(expected)
    );
    app.get(&format!("/product/fetch/{c}"), Some(&t))
        .await
        .assert_status(200);

    let mut all = vec![a, b, c];
    all.sort();
    assert_eq!(
        app.get("/product/access", Some(app.admin())).await.json(),
        json!(all)
    );
    let other_admin = app.register(true).await;
    assert_eq!(
        app.get("/product/access", Some(&other_admin)).await.json(),
        json!(all)
    );
}

#[tokio::test]
async fn deleting_a_product_removes_its_versions_blobs_and_grants() {
    let app = TestApp::start().await;
    let keep = app.product().await;
    app.upload_ok(app.admin(), &keep, "1.0.0", b"keep").await;
    let product = app.product().await;
    let user = app.token_with(&product, Perms::DOWNLOAD).await;
    for (i, v) in ["1.0.0", "1.1.0", "2.0.0"].iter().enumerate() {
        app.upload_ok(app.admin(), &product, v, &payload(i as u64, 100))
            .await;
    }
    app.assert_blob_count(4);

    app.delete(&format!("/product/delete/{product}"), Some(app.admin()))
        .await
        .assert_status(204);

    app.get(&format!("/product/fetch/{product}"), Some(app.admin()))
        .await
        .assert_error(404, "product_not_found");
    app.download(app.admin(), &product, "1.0.0")
        .await
        .assert_error(404, "product_not_found");
    assert_eq!(app.get("/product/access", Some(&user)).await.text(), "[]");
    app.assert_blob_count(1);
    app.download(app.admin(), &keep, "1.0.0")
        .await
        .assert_status(200);

    // The name is free again, with no versions and no old grants.
    app.create_product(app.admin(), &product).await;
    let p = app.fetch_product(&product).await;
    assert_eq!(p["versions"], json!({}));
    assert_eq!(p["tokens"].as_object().unwrap().len(), 1);
    app.get(&format!("/product/fetch/{product}"), Some(&user))
        .await
        .assert_error(404, "product_not_found");
    app.upload_ok(app.admin(), &product, "1.0.0", b"new").await;
    assert_eq!(
        app.download(app.admin(), &product, "1.0.0").await.body,
        b"new"
    );
}

#[tokio::test]
async fn unknown_modify_actions_are_400_unknown_action() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let body = json!({ "product": product, "token": app.admin(), "permissions": {} });
    for action in ["deleteToken", "deleteVersion", "bogus", "addtoken"] {
        app.put_json(
            &format!("/product/modify/{action}"),
            Some(app.admin()),
            &body,
        )
        .await
        .assert_error(400, "unknown_action");
    }
    let body = json!({ "product": product, "version": "1.0.0" });
    for action in ["addToken", "bogus", "deleteversion"] {
        app.delete_json(
            &format!("/product/modify/{action}"),
            Some(app.admin()),
            &body,
        )
        .await
        .assert_error(400, "unknown_action");
    }
}

#[tokio::test]
async fn malformed_modify_bodies_are_400_invalid_body() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let raw = |method: Method, action: &str, body: &str| {
        app.request(
            method,
            &format!("/product/modify/{action}"),
            Some(app.admin()),
        )
        .header("Content-Type", "application/json")
        .body(body.to_string())
    };
    let cases = [
        (Method::PUT, "addToken", "{".to_string()),
        (
            Method::PUT,
            "addToken",
            json!({ "product": product }).to_string(),
        ),
        (
            Method::PUT,
            "addToken",
            json!({ "product": product, "token": 5 }).to_string(),
        ),
        (
            Method::PUT,
            "addToken",
            json!({ "product": product, "token": "x", "permissions": { "download": "yes" } })
                .to_string(),
        ),
        (Method::DELETE, "deleteToken", "".to_string()),
        (
            Method::DELETE,
            "deleteToken",
            json!({ "product": product }).to_string(),
        ),
        (Method::DELETE, "deleteVersion", "[]".to_string()),
        (
            Method::DELETE,
            "deleteVersion",
            json!({ "product": product }).to_string(),
        ),
        (
            Method::DELETE,
            "deleteVersion",
            json!({ "product": product, "version": "1", "x": 1 }).to_string(),
        ),
    ];
    for (method, action, body) in cases {
        app.send(raw(method, action, &body))
            .await
            .assert_error(400, "invalid_body");
    }
}

#[tokio::test]
async fn bad_names_in_modify_bodies_are_400_invalid_name() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let cases = [
        (
            Method::PUT,
            "addToken",
            json!({ "product": "../etc", "token": app.admin(), "permissions": {} }),
        ),
        (
            Method::DELETE,
            "deleteToken",
            json!({ "product": "%2e%2e", "token": app.admin() }),
        ),
        (
            Method::DELETE,
            "deleteVersion",
            json!({ "product": "..%2F..%2Fetc", "version": "1.0.0" }),
        ),
        (
            Method::DELETE,
            "deleteVersion",
            json!({ "product": product, "version": "../../etc" }),
        ),
    ];
    for (method, action, body) in cases {
        let req = app
            .request(
                method,
                &format!("/product/modify/{action}"),
                Some(app.admin()),
            )
            .json(&body);
        app.send(req).await.assert_error(400, "invalid_name");
    }
}

/// Product and version in paths: percent-encoded or raw `..` is refused before any lookup.
#[tokio::test]
async fn path_traversal_in_route_parameters_is_400_invalid_name() {
    let app = TestApp::start().await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"x").await;
    let before = list_files(app.root());
    let evil = [
        "..%2F..%2Fetc",
        "%2e%2e",
        "%2E%2E%2Fetc",
        ".%2e",
        "..",
        "..%5C..%5Cetc",
    ];
    for e in evil {
        let token = app.admin();
        for (method, path) in [
            ("GET", format!("/product/fetch/{e}")),
            ("DELETE", format!("/product/delete/{e}")),
            ("GET", format!("/product/download/{e}/1.0.0")),
            ("GET", format!("/product/download/{product}/{e}")),
            ("GET", format!("/product/presign/{product}/{e}")),
            ("GET", format!("/product/versions/{e}")),
            ("DELETE", format!("/product/delete/{product}/{e}")),
            ("DELETE", format!("/product/delete/{e}/1.0.0")),
            ("GET", format!("/api/product/download/{product}/{e}")),
        ] {
            let r = app
                .raw_request(
                    &format!("{method} {path} HTTP/1.1\r\nX-Api-Token: {token}"),
                    b"",
                )
                .await;
            r.assert_error(400, "invalid_name");
        }
    }
    assert_eq!(
        list_files(app.root()),
        before,
        "no file appeared or vanished"
    );
    assert_eq!(app.versions(&product).await, vec!["1.0.0".to_string()]);
}

#[tokio::test]
async fn health_needs_no_token_and_has_one_entry_per_backend() {
    let app = TestApp::start().await;
    for path in ["/health", "/api/health"] {
        let r = app.get(path, None).await;
        r.assert_status(200);
        let v = r.json();
        let keys: Vec<&str> = match app.backend {
            Backend::Embedded => vec!["embedded", "storage"],
            Backend::Production => vec!["mongo", "redis", "storage"],
        };
        for key in &keys {
            let s = v[key]
                .as_str()
                .unwrap_or_else(|| panic!("no '{key}' entry: {v}"));
            assert!(s.ends_with("is fine"), "{key}: {s}");
        }
        let backend_entries = v
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.as_str() != "status")
            .count();
        assert_eq!(backend_entries, keys.len(), "{v}");
    }
    app.get("/livez", None).await.assert_status(200);
    app.get("/readyz", None).await.assert_status(200);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let app = TestApp::start().await;
    let r = app.get("/nope", Some(app.admin())).await;
    r.assert_error(404, "not_found");
    let r = app.get("/api/product/nope", None).await;
    r.assert_error(404, "not_found");
    let r = app
        .send(app.request(Method::POST, "/product/create", Some(app.admin())))
        .await;
    assert_eq!(r.status.as_u16(), 405);
    r.error_code();
}

/// Drives the whole API through `prefix` and checks every answer.
async fn lifecycle(app: &TestApp, prefix: &str) {
    let p = |path: &str| format!("{prefix}{path}");
    let admin = Some(app.admin());

    let health = app.get(&p("/health"), None).await;
    health.assert_status(200);
    app.get(&p("/livez"), None).await.assert_status(200);
    app.get(&p("/readyz"), None).await.assert_status(200);

    let r = app.put_json(&p("/register"), admin, &json!({})).await;
    r.assert_status(201);
    let user = r.text();
    app.remember_secret(&user);
    let r = app.get(&p(&format!("/fetch/{user}")), admin).await;
    r.assert_status(200);
    let user_id = r.json()["id"].as_str().unwrap().to_string();
    let r = app.get(&p("/tokens"), admin).await;
    r.assert_status(200);
    assert!(r.text().contains(&user_id));

    let product = unique("api");
    app.put_json(&p("/product/create"), admin, &json!({ "name": product }))
        .await
        .assert_status(201);
    let body = json!({ "product": product, "token": user, "permissions": Perms::ALL.json() });
    app.put_json(&p("/product/modify/addToken"), admin, &body)
        .await
        .assert_status(201);
    let access = app.get(&p("/product/access"), Some(&user)).await;
    assert_eq!(access.json(), json!([product]));
    app.get(&p(&format!("/product/fetch/{product}")), Some(&user))
        .await
        .assert_status(200);

    let bytes = payload(7, 500);
    for v in ["1.0.0", "2.0.0", "3.0.0"] {
        let (ct, body) = Form::upload(&product, v, "f.bin", &bytes).finish();
        let req = app
            .request(Method::POST, &p("/product/upload"), Some(&user))
            .header("Content-Type", ct)
            .body(body);
        app.send(req).await.assert_status(201);
    }
    let dl = app
        .get(
            &p(&format!("/product/download/{product}/1.0.0")),
            Some(&user),
        )
        .await;
    dl.assert_status(200);
    assert_eq!(dl.body, bytes);
    let head = app
        .send(app.request(
            Method::HEAD,
            &p(&format!("/product/download/{product}/1.0.0")),
            Some(&user),
        ))
        .await;
    head.assert_status(200);
    let presign = app
        .get(
            &p(&format!("/product/presign/{product}/1.0.0")),
            Some(&user),
        )
        .await;
    presign.assert_status(200);
    let url = presign.json()["url"].as_str().unwrap().to_string();
    let signed = app.send(app.client().get(&url)).await;
    signed.assert_status(200);
    assert_eq!(signed.body, bytes);
    // The signed route itself under the prefix (when Depot signed the URL).
    if let Some((_, path_and_query)) = url.split_once("/signed/") {
        let r = app
            .get(&p(&format!("/signed/{path_and_query}")), None)
            .await;
        r.assert_status(200);
        assert_eq!(r.body, bytes);
    } else {
        assert_eq!(app.backend, Backend::Production, "{url}");
    }
    let r = app
        .get(&p(&format!("/product/versions/{product}")), Some(&user))
        .await;
    r.assert_status(200);
    assert_eq!(r.json()["versions"].as_array().unwrap().len(), 3);

    app.delete(&p(&format!("/product/delete/{product}/3.0.0")), Some(&user))
        .await
        .assert_status(204);
    let body = json!({ "product": product, "version": "2.0.0" });
    app.delete_json(&p("/product/modify/deleteVersion"), Some(&user), &body)
        .await
        .assert_status(204);
    assert_eq!(app.versions(&product).await, vec!["1.0.0".to_string()]);
    let body = json!({ "product": product, "token": user_id });
    app.delete_json(&p("/product/modify/deleteToken"), admin, &body)
        .await
        .assert_status(204);
    app.delete(&p(&format!("/product/delete/{product}")), admin)
        .await
        .assert_status(204);
    app.delete(&p(&format!("/prune/{user}")), admin)
        .await
        .assert_status(204);
    app.get(&p("/product/access"), Some(&user))
        .await
        .assert_error(401, "invalid_token");
    app.get(&p("/product/access"), None)
        .await
        .assert_error(401, "missing_token");
}

#[tokio::test]
async fn every_route_is_served_at_the_root() {
    let app = TestApp::start().await;
    lifecycle(&app, "").await;
    app.wait_blob_count(0).await;
}

#[tokio::test]
async fn every_route_is_also_served_under_api() {
    let app = TestApp::start().await;
    lifecycle(&app, "/api").await;
    app.wait_blob_count(0).await;
}

#[tokio::test]
async fn api_and_root_mounts_share_state() {
    let app = TestApp::start().await;
    let product = unique("shared");
    app.put_json(
        "/api/product/create",
        Some(app.admin()),
        &json!({ "name": product }),
    )
    .await
    .assert_status(201);
    let v: Value = app.fetch_product(&product).await;
    assert_eq!(v["name"], product.as_str());
}
