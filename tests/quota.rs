//! Quotas and usage (issue 13): `max_bytes` refused by declared length before a byte is
//! stored and while a body without a length streams, `max_versions` counting drafts, 16
//! uploads racing a quota, usage exact after uploads, deletes and retention, the admin's
//! usage of every product, the config file's `[quota]` table, metrics. Both backend sets.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

/// `PUT /product/upload/{p}/{v}/{file}` with a length (`Content-Length`).
async fn put_file(
    app: &TestApp,
    token: &str,
    product: &str,
    version: &str,
    file: &str,
    bytes: &[u8],
) -> Reply {
    app.send(
        app.request(
            Method::PUT,
            &format!("/product/upload/{product}/{version}/{file}"),
            Some(token),
        )
        .body(bytes.to_vec()),
    )
    .await
}

/// The same, as a chunked body without a length, `chunks` pieces of `chunk` bytes.
async fn put_file_streamed(
    app: &TestApp,
    product: &str,
    version: &str,
    chunks: usize,
    chunk: usize,
) -> Reply {
    let body = futures::stream::iter(
        (0..chunks)
            .map(move |i| Ok::<_, std::io::Error>(bytes::Bytes::from(payload(i as u64, chunk)))),
    );
    app.send(
        app.request(
            Method::PUT,
            &format!("/product/upload/{product}/{version}/a.bin"),
            Some(app.admin()),
        )
        .body(reqwest::Body::wrap_stream(body)),
    )
    .await
}

#[tokio::test]
async fn an_upload_whose_declared_length_passes_max_bytes_is_refused_before_a_byte_is_stored() {
    let app = TestApp::start().await;
    let product = app.product().await;
    app.set_quota(&product, json!({"max_bytes": 1_000_000}))
        .await;
    app.upload_ok(app.admin(), &product, "1.0.0", &payload(1, 600_000))
        .await;
    let blobs = app.blob_count();

    // A raw file upload declares its exact length: 600,000 more would make 1,200,000.
    let r = put_file(
        &app,
        app.admin(),
        &product,
        "2.0.0",
        "a.bin",
        &payload(2, 600_000),
    )
    .await;
    assert_quota_refusal(&r, "max_bytes", 1_200_000, 1_000_000);

    // Its headers alone are answered: the refusal comes before any byte of the body
    // (one that waited for the body would time out instead).
    let head = format!(
        "PUT /product/upload/{product}/2.0.0/a.bin HTTP/1.1\r\nX-Api-Token: {}\r\nContent-Length: 600000",
        app.admin()
    );
    app.raw_request(&head, b"")
        .await
        .assert_error(413, "quota_exceeded");

    // A form: its declared length less the form's own bytes (at most 64 KiB) is the
    // least its files hold; 2 MiB cannot fit. The file part's header is all it sends.
    let form = Form::new()
        .text("product", &product)
        .text("version", "3.0.0")
        .file("file", Some("big.bin"), b"");
    let mut partial = form.unterminated();
    partial.truncate(partial.len() - 2);
    let head = format!(
        "POST /product/upload HTTP/1.1\r\nX-Api-Token: {}\r\nContent-Type: {}\r\nContent-Length: {}",
        app.admin(),
        form.content_type(),
        2 << 20
    );
    let r = app.raw_request(&head, &partial).await;
    r.assert_error(413, "quota_exceeded");
    assert_eq!(r.json()["quota"], "max_bytes");

    // Nothing was stored, no version appeared, and the usage is the first upload's.
    assert_eq!(app.blob_count(), blobs);
    let u = app.usage(&product).await;
    assert_eq!(u["bytes"], 600_000, "{u}");
    assert_eq!(u["versions"], 1, "{u}");
    assert_eq!(u["in_flight_bytes"], 0, "{u}");
    assert_eq!(app.versions(&product).await, vec!["1.0.0"]);
    // Reaching the limit exactly is allowed.
    put_file(
        &app,
        app.admin(),
        &product,
        "2.0.0",
        "a.bin",
        &payload(3, 400_000),
    )
    .await
    .assert_status(201);
    assert_eq!(app.usage(&product).await["bytes"], 1_000_000);
}

#[tokio::test]
async fn a_body_without_a_length_is_counted_while_it_streams_and_aborted_as_it_passes() {
    let app = TestApp::start().await;
    let product = app.product().await;
    app.set_quota(&product, json!({"max_bytes": 3_000_000}))
        .await;
    app.upload_ok(app.admin(), &product, "1.0.0", &payload(1, 1_000_000))
        .await;
    let blobs = app.blob_count();

    // 40 chunks of 100,000 bytes: the quota has room for 2,000,000 of them.
    let r = put_file_streamed(&app, &product, "2.0.0", 40, 100_000).await;
    r.assert_error(413, "quota_exceeded");
    let body = r.json();
    assert_eq!(body["quota"], "max_bytes");
    assert_eq!(body["limit"], 3_000_000);
    assert!(body["usage"].as_u64().unwrap() > 3_000_000, "{body}");

    // A form sent chunked (no length at all) is counted the same way.
    let (ct, form) = Form::upload(&product, "3.0.0", "a.bin", &payload(4, 2_500_000)).finish();
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = form
        .chunks(64 * 1024)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let r = app
        .send(
            app.request(Method::POST, "/product/upload", Some(app.admin()))
                .header("Content-Type", ct)
                .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks))),
        )
        .await;
    r.assert_error(413, "quota_exceeded");

    // Nothing half-written survives: no blob, no version, no reservation left counting.
    app.wait_blob_count(blobs.unwrap_or(0)).await;
    let u = app.usage(&product).await;
    assert_eq!(
        (u["bytes"].as_u64(), u["versions"].as_u64()),
        (Some(1_000_000), Some(1)),
        "{u}"
    );
    assert_eq!(u["in_flight_bytes"], 0, "{u}");

    // A stream that fits goes through, however it is cut.
    put_file_streamed(&app, &product, "2.0.0", 20, 100_000)
        .await
        .assert_status(201);
    assert_eq!(app.usage(&product).await["bytes"], 3_000_000);
}

#[tokio::test]
async fn max_versions_counts_drafts_and_refuses_only_new_versions() {
    let app = TestApp::start().await;
    let product = app.product().await;
    app.set_quota(&product, json!({"max_versions": 2})).await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"one").await;
    put_file(&app, app.admin(), &product, "2.0.0", "a.bin", b"draft")
        .await
        .assert_status(201);

    // A third version, by either way in, is refused; the draft still takes files.
    let r = app.upload(app.admin(), &product, "3.0.0", b"three").await;
    assert_quota_refusal(&r, "max_versions", 3, 2);
    let r = put_file(&app, app.admin(), &product, "3.0.0", "a.bin", b"three").await;
    assert_quota_refusal(&r, "max_versions", 3, 2);
    put_file(&app, app.admin(), &product, "2.0.0", "b.bin", b"more")
        .await
        .assert_status(201);
    let u = app.usage(&product).await;
    assert_eq!(
        (
            u["versions"].as_u64(),
            u["drafts"].as_u64(),
            u["files"].as_u64()
        ),
        (Some(2), Some(1), Some(3)),
        "{u}"
    );

    // Deleting a version makes room again; raising the limit does too.
    app.delete(
        &format!("/product/delete/{product}/1.0.0"),
        Some(app.admin()),
    )
    .await
    .assert_status(204);
    app.upload_ok(app.admin(), &product, "3.0.0", b"three")
        .await;
    app.set_quota(&product, json!({"max_versions": 3})).await;
    app.upload_ok(app.admin(), &product, "4.0.0", b"four").await;
    assert_eq!(app.usage(&product).await["versions"], 3);
}

#[tokio::test]
async fn sixteen_uploads_racing_a_quota_never_take_the_product_past_it() {
    let app = TestApp::start().await;
    let product = app.product().await;
    const SIZE: usize = 200_000;
    const LIMIT: u64 = 5 * SIZE as u64;
    app.set_quota(&product, json!({"max_bytes": LIMIT})).await;

    // Half declare their length (raw PUTs into drafts), half stream a form chunked.
    let uploads = (0..16).map(|i| {
        let app = &app;
        let product = product.clone();
        async move {
            let version = format!("1.0.{i}");
            let bytes = payload(i, SIZE);
            if i % 2 == 0 {
                put_file(app, app.admin(), &product, &version, "a.bin", &bytes).await
            } else {
                let (ct, form) = Form::upload(&product, &version, "a.bin", &bytes).finish();
                let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = form
                    .chunks(16 * 1024)
                    .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                    .collect();
                app.send(
                    app.request(Method::POST, "/product/upload", Some(app.admin()))
                        .header("Content-Type", ct)
                        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks))),
                )
                .await
            }
        }
    });
    // Usage sampled all through the race: reservations included, it never passes.
    let done = std::sync::atomic::AtomicBool::new(false);
    let sampler = async {
        let mut samples = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            let u = app.usage(&product).await;
            assert!(
                u["bytes"].as_u64().unwrap() <= LIMIT,
                "usage passed the quota: {u}"
            );
            samples += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        samples
    };
    let race = async {
        let replies = futures::future::join_all(uploads).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        replies
    };
    let (replies, samples) = tokio::join!(race, sampler);
    assert!(samples > 0);

    let mut stored = 0;
    for r in &replies {
        if r.status == 201 {
            stored += 1;
        } else {
            r.assert_error(413, "quota_exceeded");
        }
    }
    assert!((1..=5).contains(&stored), "{stored} uploads went through");
    let u = app.usage(&product).await;
    assert_eq!(u["bytes"], stored * SIZE as u64, "{u}");
    assert_eq!(u["versions"], stored, "{u}");
    assert_eq!(u["in_flight_bytes"], 0, "{u}");
    app.wait_blob_count(stored as usize).await;
}

#[tokio::test]
async fn usage_is_exact_after_uploads_deletes_and_retention() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let empty = app.usage(&product).await;
    assert_eq!(
        empty,
        json!({"product": product, "bytes": 0, "versions": 0, "files": 0, "drafts": 0,
               "in_flight_bytes": 0, "quota": {"max_bytes": null, "max_versions": null}})
    );

    // A two-file version, a one-file version, a draft with two files.
    let form = Form::new()
        .text("product", &product)
        .text("version", "1.0.0")
        .file("file", Some("a.bin"), &payload(1, 1000))
        .file("file", Some("b.bin"), &payload(2, 2000));
    app.upload_form(Some(app.admin()), form)
        .await
        .assert_status(201);
    app.upload_ok(app.admin(), &product, "1.1.0", &payload(3, 4000))
        .await;
    put_file(
        &app,
        app.admin(),
        &product,
        "2.0.0-rc.1",
        "x.bin",
        &payload(4, 8000),
    )
    .await
    .assert_status(201);
    put_file(
        &app,
        app.admin(),
        &product,
        "2.0.0-rc.1",
        "y.bin",
        &payload(5, 16000),
    )
    .await
    .assert_status(201);
    let u = app.usage(&product).await;
    assert_eq!(
        (&u["bytes"], &u["versions"], &u["files"], &u["drafts"]),
        (&json!(31000), &json!(3), &json!(5), &json!(1)),
        "{u}"
    );

    // A draft file removed, then the draft published.
    app.delete(
        &format!("/product/delete/{product}/2.0.0-rc.1/x.bin"),
        Some(app.admin()),
    )
    .await
    .assert_status(204);
    app.send(app.request(
        Method::POST,
        &format!("/product/publish/{product}/2.0.0-rc.1"),
        Some(app.admin()),
    ))
    .await
    .assert_status(200);
    let u = app.usage(&product).await;
    assert_eq!(
        (&u["bytes"], &u["versions"], &u["files"], &u["drafts"]),
        (&json!(23000), &json!(3), &json!(4), &json!(0)),
        "{u}"
    );

    // A version deleted.
    app.delete(
        &format!("/product/delete/{product}/1.1.0"),
        Some(app.admin()),
    )
    .await
    .assert_status(204);
    assert_eq!(app.usage(&product).await["bytes"], 19000);

    // Retention keeps the newest (2.0.0-rc.1 sorts after 1.0.0) and what latest resolves to.
    app.upload_ok(app.admin(), &product, "1.2.0", &payload(6, 500))
        .await;
    app.put_json(
        &format!("/product/settings/{product}"),
        Some(app.admin()),
        &json!({"retention": {"keep_last": 1}}),
    )
    .await
    .assert_status(200);
    let r = app
        .send(app.request(
            Method::POST,
            &format!("/product/retention/{product}/run"),
            Some(app.admin()),
        ))
        .await;
    r.assert_status(200);
    let report = r.json();
    let deleted: Vec<&str> = report["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["version"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, vec!["1.0.0"]);
    let u = app.usage(&product).await;
    assert_eq!(
        (&u["bytes"], &u["versions"], &u["files"], &u["drafts"]),
        (&json!(16500), &json!(2), &json!(2), &json!(0)),
        "{u}"
    );
}

#[tokio::test]
async fn usage_is_readable_with_any_grant_and_every_product_is_listed_for_admins_by_size() {
    let app = TestApp::start().await;
    let small = app.product().await;
    let large = app.product().await;
    app.upload_ok(app.admin(), &small, "1", &payload(1, 100))
        .await;
    app.upload_ok(app.admin(), &large, "1", &payload(2, 5000))
        .await;

    for perms in [
        Perms::DOWNLOAD,
        Perms::UPLOAD,
        Perms::DELETE,
        Perms::MAINTAINER,
    ] {
        let token = app.token_with(&small, perms).await;
        let r = app
            .get(&format!("/product/usage/{small}"), Some(&token))
            .await;
        r.assert_status(200);
        assert_eq!(r.json()["bytes"], 100);
        // No grant on the other: the same 404 as a product that does not exist.
        app.get(&format!("/product/usage/{large}"), Some(&token))
            .await
            .assert_error(404, "product_not_found");
        app.get("/usage", Some(&token))
            .await
            .assert_error(403, "forbidden");
    }
    app.get(&format!("/product/usage/{small}"), None)
        .await
        .assert_status(401);
    app.get("/product/usage/nope-such-product", Some(app.admin()))
        .await
        .assert_error(404, "product_not_found");
    app.get("/product/usage/bad%20name", Some(app.admin()))
        .await
        .assert_error(400, "invalid_name");

    let listed = |body: Value| -> Vec<String> {
        body["products"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["product"].as_str().unwrap().to_string())
            .filter(|p| *p == small || *p == large)
            .collect()
    };
    let r = app.get("/usage", Some(app.admin())).await;
    r.assert_status(200);
    assert_eq!(listed(r.json()), vec![large.clone(), small.clone()]);
    let r = app.get("/usage?sort=name", Some(app.admin())).await;
    let mut by_name = vec![large.clone(), small.clone()];
    by_name.sort();
    assert_eq!(listed(r.json()), by_name);
    let r = app.get("/usage?limit=1", Some(app.admin())).await;
    assert_eq!(r.json()["products"].as_array().unwrap().len(), 1);
    for bad in [
        "/usage?sort=size",
        "/usage?limit=0",
        "/usage?limit=10001",
        "/usage?x=1",
    ] {
        app.get(bad, Some(app.admin()))
            .await
            .assert_error(400, "invalid_query");
    }
}

#[tokio::test]
async fn products_without_settings_follow_the_config_files_quota_table_and_refusals_are_metered() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("depot.toml");
    std::fs::write(&config, "[quota]\nmax_bytes = 10000\nmax_versions = 5\n").unwrap();
    let app = TestApp::builder()
        .env("DEPOT_CONFIG", config.display())
        .start()
        .await;
    let product = app.product().await;
    let settings = app
        .get(&format!("/product/settings/{product}"), Some(app.admin()))
        .await
        .json();
    assert_eq!(
        settings["quota"],
        json!({"max_bytes": 10000, "max_versions": 5})
    );
    app.upload_ok(app.admin(), &product, "1", &payload(1, 6000))
        .await;
    let r = app
        .upload(app.admin(), &product, "2", &payload(2, 6000))
        .await;
    r.assert_error(413, "quota_exceeded");
    assert_eq!(app.usage(&product).await["quota"]["max_bytes"], 10000);

    // The product's own settings replace the default.
    app.set_quota(&product, json!({"max_bytes": null})).await;
    app.upload_ok(app.admin(), &product, "2", &payload(2, 6000))
        .await;

    // The gauge follows each computation of a product's usage (and a periodic refresh).
    app.usage(&product).await;
    let metrics = app.get("/metrics", None).await.text();
    assert!(
        metrics.contains("depot_quota_refusals_total{quota=\"max_bytes\"}"),
        "refusals are counted"
    );
    let gauge = format!("depot_product_bytes{{product=\"{product}\"}} 12000");
    assert!(
        metrics.contains(&gauge),
        "the gauge holds the product's bytes"
    );

    // Settings are checked: no zero, nothing past what the stores keep.
    for quota in [
        json!({"max_bytes": 0}),
        json!({"max_versions": 0}),
        json!({"max_bytes": 9223372036854775808u64}),
    ] {
        app.put_json(
            &format!("/product/settings/{product}"),
            Some(app.admin()),
            &json!({ "quota": quota }),
        )
        .await
        .assert_error(400, "invalid_settings");
    }
    // A token that only downloads cannot change them.
    let reader = app.token_with(&product, Perms::DOWNLOAD).await;
    app.put_json(
        &format!("/product/settings/{product}"),
        Some(&reader),
        &json!({"quota": {"max_bytes": 1}}),
    )
    .await
    .assert_error(403, "forbidden");
}
