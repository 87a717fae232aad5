//! Hostile input on the release-asset routes (draft file upload, file delete, file
//! download and links, labels): refused with a stable code, nothing stored, nothing
//! revealed to a token that may not see drafts. Both backend sets.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

/// `PUT /product/upload/{product}/{version}/{file}`, `file` already encoded for the path.
async fn put_raw(
    app: &TestApp,
    token: &str,
    product: &str,
    version: &str,
    encoded_name: &str,
    bytes: &[u8],
) -> Reply {
    let req = app
        .request(
            Method::PUT,
            &format!("/product/upload/{product}/{version}/{encoded_name}"),
            Some(token),
        )
        .body(bytes.to_vec());
    app.send(req).await
}

#[tokio::test]
async fn a_delete_only_token_can_neither_remove_nor_probe_a_draft_file() {
    let app = TestApp::start().await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    put_raw(&app, &admin, &product, "1.0.0", "a.bin", b"draft file")
        .await
        .assert_status(201);
    let deleter = app.token_with(&product, Perms::DELETE).await;
    // The same answer for a file the draft has, one it lacks, and no version at all.
    for path in ["1.0.0/a.bin", "1.0.0/zz.bin", "9.9.9/a.bin"] {
        app.delete(&format!("/product/delete/{product}/{path}"), Some(&deleter))
            .await
            .assert_error(404, "version_not_found");
    }
    let got = app
        .get(
            &format!("/product/download/{product}/1.0.0/a.bin?redirect=false"),
            Some(&admin),
        )
        .await;
    got.assert_status(200);
    assert_eq!(got.text(), "draft file", "the draft keeps its file");
}

#[tokio::test]
async fn the_checksum_list_name_is_reserved_in_any_case_on_both_upload_routes() {
    let app = TestApp::start().await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    let before = app.blob_count();
    for name in ["SHA256SUMS", "sha256sums", "Sha256Sums"] {
        put_raw(&app, &admin, &product, "1.0.0", name, b"x")
            .await
            .assert_error(400, "reserved_name");
        app.upload_form(Some(&admin), Form::upload(&product, "1.0.1", name, b"x"))
            .await
            .assert_error(400, "reserved_name");
    }
    app.get(&format!("/product/download/{product}/1.0.0"), Some(&admin))
        .await
        .assert_status(404);
    app.wait_blob_count(before.unwrap_or(0)).await;
}

#[tokio::test]
async fn unsafe_file_names_on_the_draft_route_are_400_invalid_name_and_store_nothing() {
    let app = TestApp::start().await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    let before = app.blob_count();
    // `..`, its encodings, a slash or backslash inside, a control and a bidi character.
    for encoded in [
        "..",
        "%2e%2e",
        "%2E.",
        "a%2Fb",
        "a%5Cb",
        "%2e",
        "a%01b",
        "evil%E2%80%AEfdp.exe",
        "%20",
    ] {
        let r = put_raw(&app, &admin, &product, "1.0.0", encoded, b"x").await;
        assert!(
            r.status == 400 || r.status == 404,
            "{encoded}: {} {}",
            r.status,
            r.text()
        );
        if r.status == 400 {
            assert_eq!(r.error_code(), "invalid_name", "{encoded}");
        }
    }
    let long = "a".repeat(256);
    put_raw(&app, &admin, &product, "1.0.0", &long, b"x")
        .await
        .assert_error(400, "invalid_name");
    let listed = app
        .get(&format!("/product/versions/{product}"), Some(&admin))
        .await
        .json();
    assert_eq!(listed["versions"], json!([]), "no draft was created");
    app.wait_blob_count(before.unwrap_or(0)).await;
}

#[tokio::test]
async fn names_with_url_characters_download_by_path_link_and_content_location() {
    let app = TestApp::start().await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    let name = "a b?c#d%41+e.bin";
    let encoded = "a%20b%3Fc%23d%2541%2Be.bin";
    put_raw(&app, &admin, &product, "1.0.0", encoded, b"odd name")
        .await
        .assert_status(201);
    let r = app
        .send(app.request(
            Method::POST,
            &format!("/product/publish/{product}/1.0.0"),
            Some(&admin),
        ))
        .await;
    r.assert_status(200);
    assert_eq!(r.json()["files"][0]["name"], name);

    let direct = app
        .get(
            &format!("/product/download/{product}/1.0.0/{encoded}?redirect=false"),
            Some(&admin),
        )
        .await;
    direct.assert_status(200);
    assert_eq!(direct.text(), "odd name");
    assert_eq!(
        direct.header("content-location").as_deref(),
        Some(format!("/product/download/{product}/1.0.0/{encoded}").as_str())
    );

    // The link (presigned by S3, or signed by Depot) fetches these bytes without a token.
    let link = app
        .get(
            &format!("/product/presign/{product}/1.0.0/{encoded}"),
            Some(&admin),
        )
        .await;
    link.assert_status(200);
    let url = link.json()["url"].as_str().expect("url").to_string();
    let fetched = app.client().get(&url).send().await.expect("GET the link");
    assert_eq!(fetched.status(), 200, "{url}");
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), b"odd name");
}

#[tokio::test]
async fn a_drafts_files_are_not_cached_as_immutable_but_published_ones_are() {
    let app = TestApp::start().await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    put_raw(&app, &admin, &product, "1.0.0", "a.bin", b"first")
        .await
        .assert_status(201);
    let path = format!("/product/download/{product}/1.0.0/a.bin?redirect=false");
    let draft = app.get(&path, Some(&admin)).await;
    draft.assert_status(200);
    let cache = draft.header("cache-control").unwrap_or_default();
    assert!(
        cache.contains("no-cache") && !cache.contains("immutable"),
        "{cache}"
    );
    app.send(app.request(
        Method::POST,
        &format!("/product/publish/{product}/1.0.0"),
        Some(&admin),
    ))
    .await
    .assert_status(200);
    let published = app.get(&path, Some(&admin)).await;
    assert!(
        published
            .header("cache-control")
            .unwrap_or_default()
            .contains("immutable")
    );
}

#[tokio::test]
async fn label_changes_past_the_limits_are_400_invalid_label_and_change_nothing() {
    let app = TestApp::start().await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    app.upload_ok(&admin, &product, "1.0.0", b"x").await;
    let path = format!("/product/labels/{product}/1.0.0");
    app.put_json(&path, Some(&admin), &json!({"keep": "yes"}))
        .await
        .assert_status(200);
    let too_many: serde_json::Map<String, serde_json::Value> =
        (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    for body in [
        serde_json::Value::Object(too_many),
        json!({"Upper": "x"}),
        json!({"a b": "x"}),
        json!({"k": "v".repeat(257)}),
        json!({"k": "line\nbreak"}),
        json!({"": "x"}),
    ] {
        app.put_json(&path, Some(&admin), &body)
            .await
            .assert_error(400, "invalid_label");
    }
    app.put_json(&path, Some(&admin), &json!(["not", "an", "object"]))
        .await
        .assert_status(400);
    let listed = app
        .get(&format!("/product/versions/{product}"), Some(&admin))
        .await
        .json();
    assert_eq!(listed["versions"][0]["labels"], json!({"keep": "yes"}));
}
