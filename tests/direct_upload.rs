//! Direct-to-bucket uploads (issue 14): `POST /product/upload-url` hands out a URL (S3: a
//! presigned PUT with the SHA-256 signed in; filesystem: a Depot-signed `/direct/{id}`),
//! the client PUTs with exactly the returned headers, `complete` verifies and commits.
//! Tampered bytes refused by the bucket (or by Depot), mismatched objects deleted at
//! completion, never-completed uploads removed by the janitor, expired URLs refused, and
//! every check of an upload done before a URL is handed out. Both backend sets.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const MIB: usize = 1 << 20;
const GIB: u64 = 1 << 30;
/// How long a direct-upload URL lives in the expiry tests: long enough for the steps
/// before it runs out on a busy machine.
const SHORT_URL_TTL_SECONDS: u64 = 8;

/// The `POST /product/upload-url` body for `bytes`.
fn request_for(product: &str, version: &str, file: &str, bytes: &[u8], draft: bool) -> Value {
    json!({
        "product": product,
        "version": version,
        "file": file,
        "size": bytes.len(),
        "checksum": format!("sha256:{}", sha256_hex(bytes)),
        "draft": draft,
    })
}

/// A direct-upload grant for `bytes` (asserts 201 and its shape).
async fn grant(app: &TestApp, token: &str, body: &Value) -> Value {
    let r = app.upload_url(token, body).await;
    r.assert_status(201);
    let g = r.json();
    assert!(
        g["upload_id"].as_str().is_some_and(|id| !id.is_empty()),
        "{g}"
    );
    assert_eq!(g["method"], "PUT", "{g}");
    assert!(g["headers"].is_object(), "{g}");
    let url = g["url"].as_str().expect("url");
    let id = g["upload_id"].as_str().unwrap();
    match app.backend {
        Backend::Production => {
            let endpoint = app.setting("DEPOT_S3_ENDPOINT").unwrap();
            assert!(
                url.starts_with(&endpoint),
                "a presigned URL of the bucket: {url}"
            );
            let sha = body["checksum"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:");
            let headers: BTreeMap<String, String> = g["headers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap().to_string()))
                .collect();
            if let Some(length) = headers.get("content-length") {
                assert_eq!(length, &body["size"].to_string(), "{g}");
            }
            assert_eq!(
                headers.get("x-amz-checksum-sha256"),
                Some(&base64_of(&hex::decode(sha).unwrap())),
                "the SHA-256 is one of the headers to send: {g}"
            );
            assert!(
                url.contains("X-Amz-Signature=") && url.contains("x-amz-checksum-sha256"),
                "the checksum header is signed in: {url}"
            );
        }
        Backend::Embedded => {
            let prefix = app.url(&format!("/direct/{id}?"));
            assert!(url.starts_with(&prefix), "{url} is Depot's /direct/{id}");
            assert!(
                url.contains("expires=") && url.contains("signature="),
                "{url}"
            );
        }
    }
    g
}

fn id_of(g: &Value) -> String {
    g["upload_id"].as_str().unwrap().to_string()
}

#[track_caller]
fn assert_put_ok(r: &Reply) {
    assert!(
        r.status.is_success(),
        "the PUT with the returned headers: {} {}",
        r.status,
        r.text()
    );
}

/// What the store holds under the server's prefix: object keys (S3) or blob files.
async fn stored(app: &TestApp) -> Vec<String> {
    match app.backend {
        Backend::Production => {
            let (mut keys, multipart) = app.s3_listing().await;
            keys.extend((0..multipart).map(|i| format!("<multipart upload {i}>")));
            keys
        }
        Backend::Embedded => list_files(&app.data_dir().join("blobs"))
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
    }
}

/// The bucket and key a presigned path-style URL points at.
fn bucket_key(url: &str) -> (String, String) {
    let parsed = url::Url::parse(url).unwrap();
    let path = percent_encoding::percent_decode_str(parsed.path())
        .decode_utf8()
        .unwrap()
        .to_string();
    let (bucket, key) = path
        .trim_start_matches('/')
        .split_once('/')
        .expect("/bucket/key");
    (bucket.to_string(), key.to_string())
}

/// Writes `bytes` under the grant's key behind Depot's back (S3 only).
async fn plant(app: &TestApp, g: &Value, bytes: &[u8]) {
    let (bucket, key) = bucket_key(g["url"].as_str().unwrap());
    s3_client(&app.setting("DEPOT_S3_ENDPOINT").unwrap())
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(aws_sdk_s3::primitives::ByteStream::from(bytes.to_vec()))
        .send()
        .await
        .expect("put an object behind Depot's back");
}

#[tokio::test]
async fn a_direct_upload_is_put_with_the_returned_headers_and_completed() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = app
        .token_with(
            &product,
            Perms {
                upload: true,
                download: true,
                ..Perms::default()
            },
        )
        .await;
    let colleague = app.token_with(&product, Perms::UPLOAD).await;
    let bytes = payload(1, 3 * MIB);
    let before = now_s();
    let body = request_for(&product, "1.0.0", "tool.bin", &bytes, false);
    let g = grant(&app, &token, &body).await;
    let expires = rfc3339_secs(&g["expires_at"]);
    assert!(
        expires >= before + 3600 - 1 && expires <= now_s() + 3600 + 1,
        "expires_at is an hour away by default: {g}"
    );
    let id = id_of(&g);
    // Handed out, not yet put: the version is reserved, completing is too early.
    app.upload(app.admin(), &product, "1.0.0", b"other")
        .await
        .assert_error(409, "version_pending");
    app.complete_direct(&token, &id)
        .await
        .assert_error(409, "upload_not_received");

    assert_put_ok(&app.put_direct(&g, &bytes).await);
    // Someone else's upload is not there for them; an admin's sight is not needed here.
    app.complete_direct(&colleague, &id)
        .await
        .assert_error(404, "upload_not_found");
    let r = app.complete_direct(&token, &id).await;
    r.assert_status(201);
    let done = r.json();
    assert_eq!(done["product"], product.as_str(), "{done}");
    assert_eq!(done["version"], "1.0.0");
    assert_eq!(done["file_name"], "tool.bin");
    assert_eq!(done["size"], bytes.len());
    assert_eq!(done["checksum"], format!("sha256:{}", sha256_hex(&bytes)));
    assert_eq!(done["state"], "published");
    assert_eq!(done["files"].as_array().map(Vec::len), Some(1), "{done}");
    let d = app.download(&token, &product, "1.0.0").await;
    d.assert_status(200);
    assert!(d.body == bytes, "the download is the PUT's bytes");
    assert_eq!(app.usage(&product).await["bytes"], bytes.len());
    app.wait_blob_count(1).await;

    // An admin completes anyone's; draft=true puts files into the draft.
    let a = payload(2, 1000);
    let g = grant(
        &app,
        &token,
        &request_for(&product, "2.0.0", "a.bin", &a, true),
    )
    .await;
    assert_put_ok(&app.put_direct(&g, &a).await);
    let r = app.complete_direct(app.admin(), &id_of(&g)).await;
    r.assert_status(201);
    assert_eq!(r.json()["state"], "draft", "{}", r.text());
    let b = payload(3, 2000);
    let g = grant(
        &app,
        &token,
        &request_for(&product, "2.0.0", "b.bin", &b, true),
    )
    .await;
    assert_put_ok(&app.put_direct(&g, &b).await);
    let r = app.complete_direct(&token, &id_of(&g)).await;
    r.assert_status(201);
    assert_eq!(r.json()["state"], "draft");
    let listed = app
        .get(&format!("/product/versions/{product}"), Some(&token))
        .await
        .json();
    let draft = listed["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == "2.0.0")
        .unwrap_or_else(|| panic!("2.0.0 not listed: {listed}"))
        .clone();
    assert_eq!(draft["state"], "draft", "{draft}");
    let mut names: Vec<&str> = draft["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a.bin", "b.bin"]);
    let f = app
        .get(
            &format!("/product/download/{product}/2.0.0/b.bin"),
            Some(&token),
        )
        .await;
    f.assert_status(200);
    assert!(f.body == b);
}

#[tokio::test]
async fn tampered_bytes_are_refused_and_nothing_is_kept() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::ALL).await;
    let bytes = payload(4, MIB);
    let g = grant(
        &app,
        &token,
        &request_for(&product, "1.0.0", "t.bin", &bytes, false),
    )
    .await;
    let id = id_of(&g);
    let mut flipped = bytes.clone();
    flipped[MIB / 2] ^= 0x01;
    let attempts: [(&str, Vec<u8>); 3] = [
        ("one flipped bit", flipped.clone()),
        ("a byte short", bytes[..MIB - 1].to_vec()),
        ("a byte more", [bytes.as_slice(), b"x"].concat()),
    ];
    for (what, body) in &attempts {
        let r = app.put_direct(&g, body).await;
        match app.backend {
            // The bucket itself checks the signed SHA-256.
            Backend::Production => assert!(
                r.status.is_client_error(),
                "{what}: the bucket took it ({} {})",
                r.status,
                r.text()
            ),
            Backend::Embedded => {
                if body.len() == bytes.len() {
                    r.assert_error(400, "checksum_mismatch");
                } else {
                    r.assert_error(400, "size_mismatch");
                }
            }
        }
        assert!(stored(&app).await.is_empty(), "{what}: something was kept");
    }
    // Other bytes without the checksum header: the signature (S3) or Depot refuses.
    let mut no_checksum = g.clone();
    no_checksum["headers"] = json!({});
    let r = app.put_direct(&no_checksum, &flipped).await;
    match app.backend {
        Backend::Production => assert!(
            r.status.is_client_error(),
            "unsigned headers: {} {}",
            r.status,
            r.text()
        ),
        Backend::Embedded => r.assert_error(400, "checksum_mismatch"),
    }
    assert!(stored(&app).await.is_empty());
    app.complete_direct(&token, &id)
        .await
        .assert_error(409, "upload_not_received");
    // The right bytes still go in.
    assert_put_ok(&app.put_direct(&g, &bytes).await);
    app.complete_direct(&token, &id).await.assert_status(201);
    assert!(app.download(&token, &product, "1.0.0").await.body == bytes);
}

#[tokio::test]
async fn an_object_that_differs_at_completion_is_deleted_with_its_upload() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::ALL).await;
    let bytes = payload(5, 2 * MIB);
    if app.backend == Backend::Embedded {
        // Depot stores the PUT itself and verifies it while storing (see
        // tampered_bytes_are_refused_and_nothing_is_kept): nothing else can write there.
        // A refused PUT leaves no object, so completing finds none and keeps none.
        let g = grant(
            &app,
            &token,
            &request_for(&product, "1.0.0", "m.bin", &bytes, false),
        )
        .await;
        app.put_direct(&g, &payload(6, 2 * MIB))
            .await
            .assert_error(400, "checksum_mismatch");
        app.complete_direct(&token, &id_of(&g))
            .await
            .assert_error(409, "upload_not_received");
        assert!(stored(&app).await.is_empty());
        return;
    }
    // S3: objects written under the granted keys behind Depot's back.
    let cases: [(&str, Vec<u8>, &[&str]); 2] = [
        (
            "same size, other bytes",
            payload(6, 2 * MIB),
            &["checksum_mismatch"],
        ),
        (
            "another size",
            payload(7, MIB),
            &["size_mismatch", "checksum_mismatch"],
        ),
    ];
    for (i, (what, other, codes)) in cases.iter().enumerate() {
        let version = format!("{}.0.0", i + 1);
        let g = grant(
            &app,
            &token,
            &request_for(&product, &version, "m.bin", &bytes, false),
        )
        .await;
        plant(&app, &g, other).await;
        let r = app.complete_direct(&token, &id_of(&g)).await;
        assert_eq!(r.status.as_u16(), 400, "{what}: {}", r.text());
        assert!(
            codes.contains(&r.error_code().as_str()),
            "{what}: {}",
            r.text()
        );
        assert!(
            stored(&app).await.is_empty(),
            "{what}: the object stays: {:?}",
            stored(&app).await
        );
        app.complete_direct(&token, &id_of(&g))
            .await
            .assert_error(404, "upload_not_found");
        app.download(&token, &product, &version)
            .await
            .assert_error(404, "version_not_found");
    }
    let u = app.usage(&product).await;
    assert_eq!((&u["bytes"], &u["versions"]), (&json!(0), &json!(0)), "{u}");
    // The versions are free again.
    app.upload_ok(&token, &product, "1.0.0", b"free").await;
    // An object without a stored checksum (put without one) is read and hashed once.
    let g = grant(
        &app,
        &token,
        &request_for(&product, "3.0.0", "m.bin", &bytes, false),
    )
    .await;
    plant(&app, &g, &bytes).await;
    app.complete_direct(&token, &id_of(&g))
        .await
        .assert_status(201);
    assert!(app.download(&token, &product, "3.0.0").await.body == bytes);
}

#[tokio::test]
async fn never_completed_uploads_expire_their_urls_refused_and_the_janitor_removes_them() {
    let app = TestApp::builder()
        .env("DEPOT_UPLOAD_URL_TTL_SECONDS", SHORT_URL_TTL_SECONDS)
        .env("DEPOT_JANITOR_INTERVAL_SECONDS", 1)
        .env("DEPOT_JANITOR_GRACE_SECONDS", 1)
        .start()
        .await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::ALL).await;
    let bytes = payload(8, MIB);
    // Room for two of them.
    app.set_quota(&product, json!({"max_bytes": 5 * MIB / 2}))
        .await;
    let put = grant(
        &app,
        &token,
        &request_for(&product, "1.0.0", "p.bin", &bytes, false),
    )
    .await;
    let expires = rfc3339_secs(&put["expires_at"]);
    assert!(
        (expires - now_s() - SHORT_URL_TTL_SECONDS as i64).abs() <= 1,
        "{put}"
    );
    assert_put_ok(&app.put_direct(&put, &bytes).await);
    let unused = grant(
        &app,
        &token,
        &request_for(&product, "2.0.0", "q.bin", &bytes, false),
    )
    .await;
    // While they live, they hold their versions and their quota.
    app.upload_url(
        &token,
        &request_for(&product, "3.0.0", "r.bin", &bytes, false),
    )
    .await
    .assert_error(413, "quota_exceeded");
    app.upload(&token, &product, "1.0.0", b"x")
        .await
        .assert_error(409, "version_pending");
    let last = expires.max(rfc3339_secs(&unused["expires_at"]));
    while now_s() <= last + 1 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // An expired URL is refused.
    let r = app.put_direct(&unused, &bytes).await;
    match app.backend {
        Backend::Production => assert_eq!(r.status.as_u16(), 403, "{}", r.text()),
        Backend::Embedded => {
            assert_eq!(r.status.as_u16(), 403, "{}", r.text());
            assert!(
                ["invalid_signature", "upload_expired"].contains(&r.error_code().as_str()),
                "{}",
                r.text()
            );
        }
    }
    // Completing too late is refused, and the janitor removes the object.
    let r = app.complete_direct(&token, &id_of(&put)).await;
    match r.status.as_u16() {
        410 => r.assert_error(410, "upload_expired"),
        _ => r.assert_error(404, "upload_not_found"),
    }
    eventually(
        Duration::from_secs(20),
        "the janitor removes the object",
        || async { stored(&app).await.is_empty() },
    )
    .await;
    app.complete_direct(&token, &id_of(&put))
        .await
        .assert_error(404, "upload_not_found");
    let u = app.usage(&product).await;
    assert_eq!((&u["bytes"], &u["versions"]), (&json!(0), &json!(0)), "{u}");
    // Versions and quota free again: two more fit.
    app.upload_ok(&token, &product, "1.0.0", &bytes).await;
    app.upload_ok(&token, &product, "2.0.0", &bytes).await;
}

#[tokio::test]
async fn a_single_put_is_at_most_5_gib_larger_files_use_tus() {
    let app = TestApp::builder().max_upload_bytes(10 * GIB).start().await;
    let product = app.product().await;
    let checksum = format!("sha256:{}", sha256_hex(b"never sent"));
    let body = |size: u64| {
        json!({"product": product, "version": "1.0.0", "file": "big.iso", "size": size,
               "checksum": checksum, "draft": false})
    };
    app.upload_url(app.admin(), &body(5 * GIB + 1))
        .await
        .assert_error(400, "use_resumable_upload");
    app.upload_url(app.admin(), &body(9 * GIB))
        .await
        .assert_error(400, "use_resumable_upload");
    // Exactly 5 GiB is one PUT.
    let g = grant(&app, app.admin(), &body(5 * GIB)).await;
    assert!(!id_of(&g).is_empty());
    // Past DEPOT_MAX_UPLOAD_BYTES: too large whichever way.
    app.upload_url(app.admin(), &body(10 * GIB + 1))
        .await
        .assert_error(413, "payload_too_large");
}

#[tokio::test]
async fn every_check_refuses_before_a_url_is_handed_out() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::ALL).await;
    let reader = app.token_with(&product, Perms::DOWNLOAD).await;
    let stranger = app.register(false).await;
    app.upload_ok(&token, &product, "1.0.0", &payload(9, 600_000))
        .await;
    app.set_quota(&product, json!({"max_bytes": 1_000_000}))
        .await;
    let bytes = payload(10, 600_000);
    let ok = request_for(&product, "2.0.0", "f.bin", &bytes, false);
    let with = |patch: Value| {
        let mut b = ok.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let r = app.upload_url(&token, &ok).await;
    r.assert_error(413, "quota_exceeded");
    let body = r.json();
    assert_eq!(
        (&body["quota"], &body["usage"], &body["limit"]),
        (&json!("max_bytes"), &json!(1_200_000), &json!(1_000_000)),
        "{body}"
    );
    assert!(body.get("url").is_none() && body.get("upload_id").is_none());
    app.set_quota(&product, json!({"max_bytes": null})).await;

    let cases: Vec<(&str, String, Value, u16, &str)> = vec![
        (
            "download only",
            reader.clone(),
            ok.clone(),
            403,
            "forbidden",
        ),
        (
            "no grant",
            stranger.clone(),
            ok.clone(),
            404,
            "product_not_found",
        ),
        (
            "unknown product",
            app.admin().to_string(),
            with(json!({"product": "no-such-product"})),
            404,
            "product_not_found",
        ),
        (
            "existing version",
            token.clone(),
            with(json!({"version": "1.0.0"})),
            409,
            "version_exists",
        ),
        (
            "bad version",
            token.clone(),
            with(json!({"version": "../1"})),
            400,
            "invalid_name",
        ),
        (
            "bad file name",
            token.clone(),
            with(json!({"file": "../../etc/passwd"})),
            400,
            "invalid_name",
        ),
        (
            "md5 checksum",
            token.clone(),
            with(json!({"checksum": "md5:d41d8cd98f00b204e9800998ecf8427e"})),
            400,
            "invalid_checksum",
        ),
        (
            "short sha256",
            token.clone(),
            with(json!({"checksum": "sha256:abcd"})),
            400,
            "invalid_checksum",
        ),
    ];
    for (what, t, body, status, code) in &cases {
        let r = app.upload_url(t, body).await;
        assert_eq!(r.status.as_u16(), *status, "{what}: {}", r.text());
        assert_eq!(r.error_code(), *code, "{what}: {}", r.text());
    }
    // Without a token.
    app.send(
        app.request(reqwest::Method::POST, "/product/upload-url", None)
            .json(&ok),
    )
    .await
    .assert_error(401, "missing_token");
    // A draft with the file already: file_exists.
    let draft = payload(11, 10);
    let g = grant(
        &app,
        &token,
        &request_for(&product, "3.0.0", "d.bin", &draft, true),
    )
    .await;
    assert_put_ok(&app.put_direct(&g, &draft).await);
    app.complete_direct(&token, &id_of(&g))
        .await
        .assert_status(201);
    app.upload_url(
        &token,
        &request_for(&product, "3.0.0", "d.bin", &draft, true),
    )
    .await
    .assert_error(409, "file_exists");

    // No checksum at all: the one the spec names for it (400 invalid_checksum).
    let mut no_checksum = ok.clone();
    no_checksum.as_object_mut().unwrap().remove("checksum");
    app.upload_url(&token, &no_checksum)
        .await
        .assert_error(400, "invalid_checksum");

    // None of it reserved anything: 2.0.0 is free.
    app.upload_ok(&token, &product, "2.0.0", &bytes).await;
}

#[tokio::test]
async fn a_cancelled_direct_upload_frees_its_version_and_quota_at_once() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::ALL).await;
    let other = app.token_with(&product, Perms::ALL).await;
    let bytes = payload(11, MIB);
    app.set_quota(&product, json!({"max_bytes": 3 * MIB / 2}))
        .await;
    let put = grant(
        &app,
        &token,
        &request_for(&product, "1.0.0", "c.bin", &bytes, false),
    )
    .await;
    assert_put_ok(&app.put_direct(&put, &bytes).await);
    let path = format!("/product/upload-url/{}", id_of(&put));
    // Only its token (or an admin) may cancel it; others see no such upload.
    app.delete(&path, Some(&other))
        .await
        .assert_error(404, "upload_not_found");
    app.delete(&path, Some(&token)).await.assert_status(204);
    // Gone at once, with what it stored: no waiting for the URL to expire.
    assert!(stored(&app).await.is_empty(), "{:?}", stored(&app).await);
    app.complete_direct(&token, &id_of(&put))
        .await
        .assert_error(404, "upload_not_found");
    app.delete(&path, Some(&token))
        .await
        .assert_error(404, "upload_not_found");
    let u = app.usage(&product).await;
    assert_eq!((&u["bytes"], &u["versions"]), (&json!(0), &json!(0)), "{u}");
    app.upload_ok(&token, &product, "1.0.0", &bytes).await;

    // A completed one is not cancelled: its file is the version's now.
    let done = grant(
        &app,
        &token,
        &request_for(&product, "2.0.0", "d.bin", b"small", false),
    )
    .await;
    assert_put_ok(&app.put_direct(&done, b"small").await);
    app.complete_direct(&token, &id_of(&done))
        .await
        .assert_status(201);
    app.delete(
        &format!("/product/upload-url/{}", id_of(&done)),
        Some(&token),
    )
    .await
    .assert_error(409, "upload_completed");
}
