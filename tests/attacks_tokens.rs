//! Attacks on secrets, tokens, grants and signed links (issue 10, findings 5, 10, 12), each
//! through a real Depot process over real sockets.

mod common;

use common::secrets::{depot_token, refused_start};
use common::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn an_empty_or_short_signing_key_is_refused_at_start() {
    // An unset compose `${DEPOT_SIGNING_KEY}` gives the empty string: an HMAC key of b"".
    for key in ["", "short-key", &"k".repeat(31)] {
        let stderr = refused_start(&[("DEPOT_SIGNING_KEY", key)]).await;
        assert!(
            stderr.contains("DEPOT_SIGNING_KEY") && stderr.contains("32 bytes"),
            "key of {} bytes: {stderr}",
            key.len()
        );
    }
}

#[tokio::test]
async fn a_weak_or_malformed_admin_token_is_refused_at_start() {
    let good = depot_token();
    for token in [
        "",
        "aaaaaaaaaaaaaaaa",
        "depot_short",
        &format!("{good}x"),
        &good.replace("depot_", "depot-"),
    ] {
        let stderr = refused_start(&[("DEPOT_ADMIN_TOKEN", token)]).await;
        assert!(
            stderr.contains("DEPOT_ADMIN_TOKEN") && stderr.contains("depot token generate"),
            "{token:?}: {stderr}"
        );
        if !token.is_empty() {
            assert!(!stderr.contains(token), "the refused value is not echoed");
        }
    }
}

#[tokio::test]
async fn depot_token_generate_prints_a_token_the_server_accepts() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_depot"))
        .args(["token", "generate"])
        .output()
        .await
        .expect("run depot token generate");
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("depot_") && token.len() == 49, "{token}");
    let app = TestApp::builder()
        .env("DEPOT_ADMIN_TOKEN", &token)
        .start()
        .await;
    app.get("/tokens", Some(&token)).await.assert_status(200);
}

#[tokio::test]
async fn changing_the_admin_token_and_restarting_revokes_the_old_one() {
    let mut app = TestApp::start().await;
    let old = app.admin().to_string();
    let product = app.product().await;
    // A token the old admin minted survives the rotation (it can be listed and pruned).
    let minted = app.register(false).await;
    // Warm the token cache (Redis on production) with the old admin token.
    for _ in 0..3 {
        app.get("/tokens", Some(&old)).await.assert_status(200);
    }
    let old_id = app.token_id(&old).await;
    let fetched = app.get(&format!("/fetch/{old}"), Some(&old)).await.json();
    assert_eq!(fetched["parent"], serde_json::Value::Null, "{fetched}");

    let new = depot_token();
    app.restart_with_admin(&new).await;

    app.get("/tokens", Some(&old))
        .await
        .assert_error(401, "invalid_token");
    app.put_json("/register", Some(&old), &json!({ "admin": true }))
        .await
        .assert_error(401, "invalid_token");
    let tokens = app.get("/tokens", Some(&new)).await;
    tokens.assert_status(200);
    let ids: Vec<&str> = tokens
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string().leak() as &str)
        .collect();
    assert!(!ids.contains(&old_id.as_str()), "old admin listed: {ids:?}");
    app.get(&format!("/fetch/{minted}"), Some(&minted))
        .await
        .assert_status(200);
    app.get(&format!("/product/fetch/{product}"), Some(&new))
        .await
        .assert_status(200);

    // Restarting with the same (new) token keeps it.
    app.restart().await;
    app.get("/tokens", Some(&new)).await.assert_status(200);
}

#[tokio::test]
async fn secrets_database_and_blobs_are_private_files_even_under_umask_022() {
    // SAFETY: umask only changes this process's file-creation mask (inherited by the
    // server it spawns); 022 is the common default and harmless to other tests.
    unsafe {
        libc::umask(0o022);
    }
    // Filesystem blobs on both backend sets, so the data dir holds artifacts either way.
    let mut app = depot_signing().start().await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", &payload(5, 70_000))
        .await;
    let data = app.data_dir().to_path_buf();
    // The production harness configures DEPOT_SIGNING_KEY (Redis needs it): then there is
    // no key file; the embedded one generates signing.key.
    let key = data.join("signing.key");
    let generated_key = app.setting("DEPOT_SIGNING_KEY").is_none();
    let embedded = app.backend == Backend::Embedded;
    assert_eq!(mode(&data), 0o700, "data dir");
    if generated_key {
        assert_eq!(mode(&key), 0o600, "signing.key");
    }
    if embedded {
        assert_eq!(mode(&data.join("depot.redb")), 0o600, "depot.redb");
    }
    let blobs = list_files(&data.join("blobs"));
    assert!(!blobs.is_empty(), "a blob was stored");
    for blob in &blobs {
        assert_eq!(mode(blob), 0o600, "{}", blob.display());
    }
    // Files left readable by an older version are made private at the next start.
    app.stop().await;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    if generated_key {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    if embedded {
        std::fs::set_permissions(
            data.join("depot.redb"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    app.restart().await;
    assert_eq!(mode(&data), 0o700, "data dir after restart");
    if generated_key {
        assert_eq!(mode(&key), 0o600, "signing.key after restart");
    }
    if embedded {
        assert_eq!(
            mode(&data.join("depot.redb")),
            0o600,
            "depot.redb after restart"
        );
    }
}

/// `by` mints a token with download on `product`.
async fn mint(app: &TestApp, by: &str, product: &str) -> String {
    let r = app
        .put_json(
            "/register",
            Some(by),
            &json!({ "products": { product: { "download": true } } }),
        )
        .await;
    r.assert_status(201);
    let raw = r.text();
    app.remember_secret(&raw);
    raw
}

/// A product, a maintainer token A minted by the admin, B minted by A, C minted by B.
async fn chain(app: &TestApp) -> (String, [String; 3]) {
    let product = app.product().await;
    let a = app.token_with(&product, Perms::ALL).await;
    let b = mint(app, &a, &product).await;
    let c = mint(app, &b, &product).await;
    (product, [a, b, c])
}

#[tokio::test]
async fn a_minted_token_shows_its_parent_in_fetch_and_in_the_token_list() {
    let app = TestApp::start().await;
    let (_, [a, b, c]) = chain(&app).await;
    let admin_id = app.token_id(app.admin()).await;
    let (a_id, b_id, c_id) = (
        app.token_id(&a).await,
        app.token_id(&b).await,
        app.token_id(&c).await,
    );
    let parent = |raw: String| {
        let app = &app;
        async move { app.get(&format!("/fetch/{raw}"), Some(&raw)).await.json()["parent"].clone() }
    };
    assert_eq!(parent(a.clone()).await, json!(admin_id));
    assert_eq!(parent(b.clone()).await, json!(a_id));
    assert_eq!(parent(c.clone()).await, json!(b_id));
    let list = app.get("/tokens", Some(app.admin())).await.json();
    let parent_of = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap_or_else(|| panic!("{id} listed"))["parent"]
            .clone()
    };
    assert_eq!(parent_of(&c_id), json!(b_id));
    assert_eq!(parent_of(&admin_id), serde_json::Value::Null);
}

#[tokio::test]
async fn pruning_a_token_revokes_its_children_and_grandchildren_on_every_replica_at_once() {
    let app = TestApp::start().await;
    // With Redis, a second replica sharing the backends (and the token cache).
    let replica = if app.backend == Backend::Production {
        Some(TestApp::builder().share_backends_with(&app).start().await)
    } else {
        None
    };
    let (product, [a, b, c]) = chain(&app).await;
    let unrelated = app.token_with(&product, Perms::DOWNLOAD).await;
    for raw in [&a, &b, &c, &unrelated] {
        for server in std::iter::once(&app).chain(replica.as_ref()) {
            server.remember_secret(raw);
            // Warm every replica's view of each token.
            for _ in 0..2 {
                server
                    .get(&format!("/product/fetch/{product}"), Some(raw))
                    .await
                    .assert_status(200);
            }
        }
    }
    app.prune(&a).await;
    for server in std::iter::once(&app).chain(replica.as_ref()) {
        for raw in [&a, &b, &c] {
            server
                .get(&format!("/product/fetch/{product}"), Some(raw))
                .await
                .assert_error(401, "invalid_token");
            server
                .put_json(
                    "/register",
                    Some(raw),
                    &json!({ "products": { product.clone(): { "download": true } } }),
                )
                .await
                .assert_error(401, "invalid_token");
        }
        server
            .get(&format!("/product/fetch/{product}"), Some(&unrelated))
            .await
            .assert_status(200);
    }
    app.get(&format!("/fetch/{c}"), Some(app.admin()))
        .await
        .assert_error(404, "token_not_found");
}

#[tokio::test]
async fn a_misspelled_permission_key_is_a_400_instead_of_a_silent_grant() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = app.register(false).await;
    let typo = json!({ "downlaod": true });
    let r = app
        .put_json(
            "/product/modify/addToken",
            Some(app.admin()),
            &json!({ "product": product, "token": token, "permissions": typo }),
        )
        .await;
    r.assert_error(400, "invalid_body");
    assert!(r.text().contains("downlaod"), "{}", r.text());
    app.put_json(
        "/register",
        Some(app.admin()),
        &json!({ "products": { product.clone(): { "download": true, "uplod": true } } }),
    )
    .await
    .assert_error(400, "invalid_body");
    // Nothing was granted.
    assert_eq!(app.get("/product/access", Some(&token)).await.text(), "[]");
    app.download(&token, &product, "latest")
        .await
        .assert_error(404, "product_not_found");
}

#[tokio::test]
async fn an_all_false_grant_is_refused_with_empty_grant_and_gives_no_access() {
    let app = TestApp::start().await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"bytes")
        .await;
    let token = app.register(false).await;
    let all_false =
        json!({ "maintainer": false, "download": false, "upload": false, "delete": false });
    for permissions in [json!({}), all_false.clone()] {
        app.put_json(
            "/product/modify/addToken",
            Some(app.admin()),
            &json!({ "product": product, "token": token, "permissions": permissions }),
        )
        .await
        .assert_error(400, "empty_grant");
    }
    // Minting: by an admin and by a maintainer handing out a subset of its grant.
    let maintainer = app.token_with(&product, Perms::ALL).await;
    for by in [app.admin().to_string(), maintainer] {
        app.put_json(
            "/register",
            Some(&by),
            &json!({ "products": { product.clone(): all_false } }),
        )
        .await
        .assert_error(400, "empty_grant");
        app.put_json(
            "/register",
            Some(&by),
            &json!({ "products": { product.clone(): {} } }),
        )
        .await
        .assert_error(400, "empty_grant");
    }
    assert_eq!(app.get("/product/access", Some(&token)).await.text(), "[]");
    app.get(&format!("/product/fetch/{product}"), Some(&token))
        .await
        .assert_error(404, "product_not_found");
}

/// A server whose blobs stay on the filesystem, so Depot signs its links itself: on the
/// production backends too (MongoDB + Redis, `DEPOT_S3_BUCKET` empty = no S3).
fn depot_signing() -> common::TestAppBuilder {
    TestApp::builder().env("DEPOT_S3_BUCKET", "")
}

/// A direct download URL for `product`/1.0.0 made with `token`.
async fn presigned(app: &TestApp, token: &str, product: &str) -> String {
    let r = app
        .get(&format!("/product/presign/{product}/1.0.0"), Some(token))
        .await;
    r.assert_status(200);
    r.json()["url"].as_str().expect("url").to_string()
}

#[tokio::test]
async fn a_signed_link_stops_working_when_the_version_is_deleted_and_reuploaded_with_other_bytes() {
    let app = depot_signing().start().await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"original bytes")
        .await;
    let reader = app.token_with(&product, Perms::DOWNLOAD).await;
    let url = presigned(&app, &reader, &product).await;
    let first = app.send(app.client().get(&url)).await;
    first.assert_status(200);
    assert_eq!(first.body, b"original bytes");
    // (An object store's own presigned URL cannot be revoked like this; it lives at most
    // DEPOT_PRESIGN_TTL_SECONDS: README, Security.)
    assert!(url.contains("/signed/"), "a Depot-signed link: {url}");

    app.delete(
        &format!("/product/delete/{product}/1.0.0"),
        Some(app.admin()),
    )
    .await
    .assert_status(204);
    app.send(app.client().get(&url))
        .await
        .assert_error(403, "invalid_signature");
    app.upload_ok(app.admin(), &product, "1.0.0", b"replaced bytes")
        .await;
    let replaced = app.send(app.client().get(&url)).await;
    replaced.assert_error(403, "invalid_signature");
    assert!(!String::from_utf8_lossy(&replaced.body).contains("replaced"));
    // A fresh link serves the new bytes.
    let fresh = presigned(&app, &reader, &product).await;
    let r = app.send(app.client().get(&fresh)).await;
    r.assert_status(200);
    assert_eq!(r.body, b"replaced bytes");
}

#[tokio::test]
async fn a_signed_link_stops_working_when_its_issuing_token_is_revoked_or_expires() {
    let app = depot_signing().start().await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"bytes")
        .await;
    let reader = app.token_with(&product, Perms::DOWNLOAD).await;
    let url = presigned(&app, &reader, &product).await;
    app.send(app.client().get(&url)).await.assert_status(200);
    assert!(url.contains("/signed/"), "a Depot-signed link: {url}");

    // Swapping in another token's id breaks the signature.
    let other = app.token_with(&product, Perms::DOWNLOAD).await;
    let other_id = app.token_id(&other).await;
    let reader_id = app.token_id(&reader).await;
    app.send(app.client().get(url.replace(&reader_id, &other_id)))
        .await
        .assert_error(403, "invalid_signature");
    // The grant taken away, then the token revoked.
    app.delete_json(
        "/product/modify/deleteToken",
        Some(app.admin()),
        &json!({ "product": product, "token": reader }),
    )
    .await
    .assert_status(204);
    app.send(app.client().get(&url))
        .await
        .assert_error(403, "invalid_signature");
    app.grant(&product, &reader, Perms::DOWNLOAD).await;
    app.send(app.client().get(&url)).await.assert_status(200);
    app.prune(&reader).await;
    app.send(app.client().get(&url))
        .await
        .assert_error(403, "invalid_signature");

    // A token that expires takes its links with it.
    let r = app
        .put_json(
            "/register",
            Some(app.admin()),
            &json!({ "expires_in": 2, "products": { product.clone(): { "download": true } } }),
        )
        .await;
    r.assert_status(201);
    let short = r.text();
    app.remember_secret(&short);
    let url = presigned(&app, &short, &product).await;
    app.send(app.client().get(&url)).await.assert_status(200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    app.send(app.client().get(&url))
        .await
        .assert_error(403, "invalid_signature");
}

#[tokio::test]
async fn a_host_header_with_a_path_query_or_user_info_never_reaches_location() {
    let app = depot_signing()
        .env("DEPOT_DOWNLOAD_MODE", "redirect")
        .start()
        .await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"bytes")
        .await;
    let head = format!(
        "GET /product/download/{product}/1.0.0 HTTP/1.1\r\nX-Api-Token: {}",
        app.admin()
    );
    for host in [
        "attacker.test/x?",
        "attacker.test/x",
        "attacker.test?a=",
        "user@attacker.test",
        "attacker.test:80/x",
        "attacker.test:http",
        "attacker .test",
        "attacker.test#",
        "[::1",
    ] {
        let r = app.raw_request_with_host(&head, host).await;
        r.assert_error(400, "invalid_host");
        assert!(
            !r.head
                .to_ascii_lowercase()
                .contains("location: http://attacker"),
            "{host}: {}",
            r.head
        );
    }
    // A plain host[:port] still works.
    for host in [
        format!("127.0.0.1:{}", app.port()),
        "[::1]:8080".to_string(),
    ] {
        let r = app.raw_request_with_host(&head, &host).await;
        assert_eq!(r.status, 302, "{host}: {}", r.head);
        assert!(
            r.head
                .to_ascii_lowercase()
                .contains(&format!("location: http://{host}/signed/")),
            "{}",
            r.head
        );
    }
}

#[tokio::test]
async fn depot_public_url_is_the_redirect_base_whatever_the_host_and_a_bad_one_is_refused() {
    for bad in [
        "depot.example.com",
        "ftp://depot.example.com",
        "https://depot.example.com/?x=1",
        "https://u:p@depot.example.com",
    ] {
        let stderr = refused_start(&[("DEPOT_PUBLIC_URL", bad)]).await;
        assert!(stderr.contains("DEPOT_PUBLIC_URL"), "{bad}: {stderr}");
    }
    let app = depot_signing()
        .env("DEPOT_DOWNLOAD_MODE", "redirect")
        .env("DEPOT_PUBLIC_URL", "https://depot.example.com/base/")
        .start()
        .await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"bytes")
        .await;
    let head = format!(
        "GET /product/download/{product}/1.0.0 HTTP/1.1\r\nX-Api-Token: {}",
        app.admin()
    );
    let r = app.raw_request_with_host(&head, "attacker.test").await;
    assert_eq!(r.status, 302, "{}", r.head);
    assert!(!r.head.contains("attacker"), "{}", r.head);
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("location: https://depot.example.com/base/signed/"),
        "{}",
        r.head
    );
}
