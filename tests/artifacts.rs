//! Artifacts: upload (field order, checksums, limits, names, races, disconnects),
//! download (headers, ranges, conditional requests, HEAD, latest), deletion, and
//! signed/presigned URLs.

mod common;

use base64::Engine;
use common::*;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// A form with the three upload fields in `order` (names: product, version, file).
fn ordered_form(
    order: &[&str],
    product: &str,
    version: &str,
    file_name: &str,
    bytes: &[u8],
) -> Form {
    let mut form = Form::new();
    for field in order {
        form = match *field {
            "product" => form.text("product", product),
            "version" => form.text("version", version),
            "file" => form.file("file", Some(file_name), bytes),
            other => panic!("unknown field {other}"),
        };
    }
    form
}

const ORDERS: [[&str; 3]; 6] = [
    ["product", "version", "file"],
    ["product", "file", "version"],
    ["version", "product", "file"],
    ["version", "file", "product"],
    ["file", "product", "version"],
    ["file", "version", "product"],
];

#[tokio::test]
async fn upload_accepts_product_version_and_file_in_any_of_the_six_orders() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let uploader = app.token_with(&product, Perms::UPLOAD).await;
    for (i, order) in ORDERS.iter().enumerate() {
        let version = format!("1.0.{i}");
        let bytes = payload(i as u64, 10_000 + i);
        let form = ordered_form(order, &product, &version, "pkg.tgz", &bytes);
        let r = app.upload_form(Some(&uploader), form).await;
        r.assert_status(201);
        let v = r.json();
        assert_eq!(v["version"], version.as_str(), "order {order:?}");
        assert_eq!(v["size"], bytes.len(), "order {order:?}");
        let dl = app.download(app.admin(), &product, &version).await;
        dl.assert_status(200);
        assert!(dl.body == bytes, "order {order:?}: downloaded bytes differ");
    }
    assert_eq!(app.versions(&product).await.len(), 6);
    app.assert_blob_count(6);
}

#[tokio::test]
async fn upload_response_has_product_version_file_name_size_and_sha256_checksum() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let bytes = payload(3, 4321);
    let form = Form::upload(&product, "2.1.0", "my-lib-2.1.0.tar.gz", &bytes);
    let r = app.upload_form(Some(app.admin()), form).await;
    r.assert_status(201);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let v = r.json();
    assert_eq!(v["product"], product.as_str());
    assert_eq!(v["version"], "2.1.0");
    assert_eq!(v["file_name"], "my-lib-2.1.0.tar.gz");
    assert_eq!(v["size"], 4321);
    assert_eq!(
        v["checksum"],
        format!("sha256:{}", sha256_hex(&bytes)).as_str()
    );
}

#[tokio::test]
async fn an_empty_file_can_be_uploaded_and_downloaded() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let v = app.upload_ok(app.admin(), &product, "0.0.1", b"").await;
    assert_eq!(v["size"], 0);
    assert_eq!(
        v["checksum"],
        format!("sha256:{}", sha256_hex(b"")).as_str()
    );
    let dl = app.download(app.admin(), &product, "0.0.1").await;
    dl.assert_status(200);
    assert!(dl.body.is_empty());
    assert_eq!(dl.header("content-length").as_deref(), Some("0"));
}

#[tokio::test]
async fn uploaded_file_names_are_reduced_to_a_safe_base_name() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let cases = [
        ("dir/sub/app.tar.gz", "app.tar.gz"),
        ("C:\\build\\out\\app.zip", "app.zip"),
        ("/abs/path/tool", "tool"),
        ("plain.bin", "plain.bin"),
    ];
    for (i, (raw, expected)) in cases.iter().enumerate() {
        let version = format!("0.{i}.0");
        let form = Form::upload(&product, &version, raw, b"data");
        let r = app.upload_form(Some(app.admin()), form).await;
        r.assert_status(201);
        assert_eq!(r.json()["file_name"], *expected, "for {raw:?}");
        let dl = app.download(app.admin(), &product, &version).await;
        let cd = dl.header("content-disposition").unwrap();
        assert!(cd.starts_with("attachment"), "{cd}");
        assert!(cd.contains(&format!("filename=\"{expected}\"")), "{cd}");
        assert_eq!(
            app.fetch_product(&product).await["versions"][&version]["file_name"],
            *expected
        );
    }
}

#[tokio::test]
async fn checksum_field_and_header_accept_hex_and_sha256_prefixed_forms() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let bytes = payload(9, 2048);
    let hex = sha256_hex(&bytes);
    let variants: [(&str, Option<String>, Option<String>); 5] = [
        ("1.0.0", Some(hex.clone()), None),
        ("1.0.1", Some(format!("sha256:{hex}")), None),
        ("1.0.2", None, Some(hex.clone())),
        (
            "1.0.3",
            None,
            Some(format!("sha256:{}", hex.to_uppercase())),
        ),
        ("1.0.4", Some(hex.clone()), Some(format!("sha256:{hex}"))),
    ];
    for (version, field, header) in variants {
        let mut form = Form::upload(&product, version, "a.bin", &bytes);
        if let Some(f) = &field {
            form = form.text("checksum", f);
        }
        let (ct, body) = form.finish();
        let mut req = app
            .request(Method::POST, "/product/upload", Some(app.admin()))
            .header("Content-Type", ct)
            .body(body);
        if let Some(h) = &header {
            req = req.header("X-Checksum-Sha256", h);
        }
        let r = app.send(req).await;
        r.assert_status(201);
        assert_eq!(r.json()["checksum"], format!("sha256:{hex}").as_str());
    }
    // The checksum field may also come before the file.
    let form = Form::new()
        .text("checksum", &format!("sha256:{hex}"))
        .text("product", &product)
        .text("version", "1.0.5")
        .file("file", Some("a.bin"), &bytes);
    app.upload_form(Some(app.admin()), form)
        .await
        .assert_status(201);
}

#[tokio::test]
async fn checksum_mismatch_is_400_and_stores_nothing() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let bytes = payload(11, 5000);
    let wrong = sha256_hex(b"something else");

    // As a field after the file, as a field before it, and in the header; also file-first.
    let forms: Vec<(Form, Option<String>)> = vec![
        (
            Form::upload(&product, "1.0.0", "a.bin", &bytes).text("checksum", &wrong),
            None,
        ),
        (
            Form::new()
                .text("checksum", &format!("sha256:{wrong}"))
                .text("product", &product)
                .text("version", "1.0.0")
                .file("file", Some("a.bin"), &bytes),
            None,
        ),
        (
            Form::upload(&product, "1.0.0", "a.bin", &bytes),
            Some(wrong.clone()),
        ),
        (
            ordered_form(
                &["file", "version", "product"],
                &product,
                "1.0.0",
                "a.bin",
                &bytes,
            ),
            Some(format!("sha256:{wrong}")),
        ),
    ];
    for (form, header) in forms {
        let (ct, body) = form.finish();
        let mut req = app
            .request(Method::POST, "/product/upload", Some(app.admin()))
            .header("Content-Type", ct)
            .body(body);
        if let Some(h) = header {
            req = req.header("X-Checksum-Sha256", h);
        }
        app.send(req).await.assert_error(400, "checksum_mismatch");
        assert!(
            app.versions(&product).await.is_empty(),
            "a version was stored"
        );
        app.assert_blob_count(0);
    }
    app.download(app.admin(), &product, "1.0.0")
        .await
        .assert_error(404, "version_not_found");

    // The version is free: the right bytes go in at once.
    let form =
        Form::upload(&product, "1.0.0", "a.bin", &bytes).text("checksum", &sha256_hex(&bytes));
    app.upload_form(Some(app.admin()), form)
        .await
        .assert_status(201);
    assert_eq!(
        app.download(app.admin(), &product, "1.0.0").await.body,
        bytes
    );
    app.assert_blob_count(1);
}

#[tokio::test]
async fn malformed_checksums_are_400_invalid_checksum() {
    let app = TestApp::start().await;
    let product = app.product().await;
    for bad in [
        "xyz",
        "sha256:1234",
        &"g".repeat(64),
        "md5:d41d8cd98f00b204e9800998ecf8427e",
    ] {
        let form = Form::upload(&product, "1.0.0", "a.bin", b"abc").text("checksum", bad);
        app.upload_form(Some(app.admin()), form)
            .await
            .assert_error(400, "invalid_checksum");
        let (ct, body) = Form::upload(&product, "1.0.0", "a.bin", b"abc").finish();
        let req = app
            .request(Method::POST, "/product/upload", Some(app.admin()))
            .header("Content-Type", ct)
            .header("X-Checksum-Sha256", bad)
            .body(body);
        app.send(req).await.assert_error(400, "invalid_checksum");
    }
    assert!(app.versions(&product).await.is_empty());
    app.wait_blob_count(0).await;
}

#[tokio::test]
async fn upload_over_the_size_limit_is_413_and_stores_nothing() {
    let app = TestApp::builder().max_upload_bytes(1000).start().await;
    let product = app.product().await;

    // Just over the limit (streamed and counted), and far over it (declared length).
    for (version, size) in [("1.0.0", 1001), ("1.0.1", 1500), ("1.0.2", 200_000)] {
        let r = app
            .upload(app.admin(), &product, version, &payload(1, size))
            .await;
        r.assert_error(413, "payload_too_large");
        assert!(app.versions(&product).await.is_empty());
        app.assert_blob_count(0);
    }
    // File first: the limit holds before the reservation too.
    let form = ordered_form(
        &["file", "product", "version"],
        &product,
        "1.0.3",
        "a.bin",
        &payload(2, 1001),
    );
    app.upload_form(Some(app.admin()), form)
        .await
        .assert_error(413, "payload_too_large");
    assert!(app.versions(&product).await.is_empty());
    app.assert_blob_count(0);

    // Exactly the limit is fine, and the refused version is free.
    let bytes = payload(3, 1000);
    app.upload_ok(app.admin(), &product, "1.0.0", &bytes).await;
    assert_eq!(
        app.download(app.admin(), &product, "1.0.0").await.body,
        bytes
    );
    assert_eq!(app.versions(&product).await, vec!["1.0.0".to_string()]);
    app.assert_blob_count(1);
}

#[tokio::test]
async fn duplicate_version_upload_is_409_and_keeps_the_first_bytes() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let first = payload(1, 3000);
    app.upload_ok(app.admin(), &product, "1.0.0", &first).await;
    for order in ORDERS {
        let form = ordered_form(&order, &product, "1.0.0", "b.bin", &payload(2, 3000));
        app.upload_form(Some(app.admin()), form)
            .await
            .assert_error(409, "version_exists");
    }
    let dl = app.download(app.admin(), &product, "1.0.0").await;
    assert!(dl.body == first);
    let v = &app.fetch_product(&product).await["versions"]["1.0.0"];
    assert_eq!(
        v["checksum"],
        format!("sha256:{}", sha256_hex(&first)).as_str()
    );
    app.wait_blob_count(1).await;
}

#[tokio::test]
async fn twenty_concurrent_uploads_of_one_version_have_exactly_one_winner() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        let bytes = payload(100 + i, 8 * 1024 + i as usize);
        let (ct, body) = Form::upload(&product, "1.0.0", "race.bin", &bytes).finish();
        let req = app
            .request(Method::POST, "/product/upload", Some(app.admin()))
            .header("Content-Type", ct)
            .body(body);
        tasks.push(tokio::spawn(async move {
            let r = Reply::read(req.send().await.expect("send upload")).await;
            (bytes, r)
        }));
    }
    let mut winners = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        let (bytes, r) = t.await.unwrap();
        match r.status.as_u16() {
            201 => winners.push((bytes, r.json())),
            409 => {
                // Lost to the winner while it still ran, or after it committed.
                let code = r.error_code();
                assert!(
                    code == "version_pending" || code == "version_exists",
                    "{}",
                    r.text()
                );
                conflicts += 1;
            }
            other => panic!("unexpected status {other}: {}", r.text()),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one upload wins");
    assert_eq!(conflicts, 19);
    let (bytes, v) = &winners[0];
    assert_eq!(
        v["checksum"],
        format!("sha256:{}", sha256_hex(bytes)).as_str()
    );
    let dl = app.download(app.admin(), &product, "1.0.0").await;
    assert!(&dl.body == bytes, "downloaded bytes are the winner's");
    assert_eq!(dl.header("x-checksum-sha256").unwrap(), sha256_hex(bytes));
    app.wait_blob_count(1).await;
}

/// Sends the headers of an upload with a large Content-Length and part of the body,
/// waits until the server is writing, then drops the connection.
async fn disconnect_mid_upload(app: &TestApp, form: &Form, writing_blobs: usize) {
    let partial = form.unterminated();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port()))
        .await
        .unwrap();
    let head = format!(
        "POST /product/upload HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Api-Token: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
        app.port(),
        app.admin(),
        form.content_type(),
        50 * 1024 * 1024,
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&partial).await.unwrap();
    stream.flush().await.unwrap();
    // The upload is under way once its blob (a partial file or multipart upload) exists.
    if app.blob_count().is_some() {
        eventually(
            Duration::from_secs(10),
            "the server starts writing the blob",
            || async { app.blob_count().unwrap() >= writing_blobs },
        )
        .await;
    } else {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(stream);
}

#[tokio::test]
async fn a_client_disconnecting_mid_upload_leaves_no_version_and_no_blob() {
    let app = TestApp::start().await;
    let product = app.product().await;
    // More than one S3 part (8 MiB by default), so the store has a multipart upload
    // under way when the client hangs up; on the filesystem, a partial file.
    let big = payload(5, 9 * 1024 * 1024);
    for (i, order) in [
        ["product", "version", "file"],
        ["file", "product", "version"],
    ]
    .iter()
    .enumerate()
    {
        let version = format!("3.0.{i}");
        // Only the part up to the file's bytes is sent: the file part never ends.
        let mut form = Form::new();
        for field in order.iter() {
            match *field {
                "product" => form = form.text("product", &product),
                "version" => form = form.text("version", &version),
                _ => {}
            }
            if *field == "file" {
                form = form.file("file", Some("big.bin"), &big);
                break;
            }
        }
        // Wait until the server is writing this upload's blob, then hang up.
        disconnect_mid_upload(&app, &form, i + 1).await;

        // Only the blobs of the earlier, completed uploads remain.
        app.wait_blob_count(i).await;
        assert_eq!(
            app.versions(&product).await.len(),
            i,
            "no version after a disconnect"
        );
        app.download(app.admin(), &product, &version)
            .await
            .assert_error(404, "version_not_found");
        // The reservation is released: the same version can be uploaded.
        let bytes = payload(6, 1234);
        eventually(Duration::from_secs(10), "the version is free again", || {
            let bytes = bytes.clone();
            let (product, version) = (product.clone(), version.clone());
            let app = &app;
            async move {
                let r = app.upload(app.admin(), &product, &version, &bytes).await;
                if r.status.as_u16() == 201 {
                    return true;
                }
                // Until the cleanup has run, the reservation may still be there.
                r.assert_error(409, "version_pending");
                false
            }
        })
        .await;
        assert_eq!(
            app.download(app.admin(), &product, &version).await.body,
            bytes
        );
    }
    app.wait_blob_count(2).await;
}

#[tokio::test]
async fn an_upload_that_outlasts_the_janitor_grace_is_503_upload_expired_and_stores_nothing() {
    let app = TestApp::builder()
        .env("DEPOT_JANITOR_INTERVAL_SECONDS", 1)
        .env("DEPOT_JANITOR_GRACE_SECONDS", 1)
        .start()
        .await;
    let product = app.product().await;
    let boundary = "slow-boundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"product\"\r\n\r\n{product}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n1.0.0\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.bin\"\r\n\r\n"
    );
    // The body pauses long enough for a sweep to find the reservation stale.
    let pieces = vec![
        (0, head.into_bytes()),
        (0, vec![1u8; 64 * 1024]),
        (3500, vec![2u8; 64 * 1024]),
        (0, format!("\r\n--{boundary}--\r\n").into_bytes()),
    ];
    let body = futures::StreamExt::then(
        futures::stream::iter(pieces),
        |(pause_ms, chunk)| async move {
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            Ok::<_, std::io::Error>(chunk)
        },
    );
    let request = app
        .request(Method::POST, "/product/upload", Some(app.admin()))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(reqwest::Body::wrap_stream(body));
    app.send(request).await.assert_error(503, "upload_expired");
    assert!(app.versions(&product).await.is_empty());
    if app.blob_count().is_some() {
        app.wait_blob_count(0).await;
    }
    // A prompt upload of the same version then goes through.
    app.upload_ok(app.admin(), &product, "1.0.0", b"in time")
        .await;
}

#[tokio::test]
async fn path_traversal_in_upload_fields_is_400_and_touches_nothing() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let before = list_files(app.root());
    let evil = [
        "../../../../etc",
        "..%2F..%2Fetc",
        "%2e%2e",
        "..",
        "..\\..\\etc",
        "%2e%2e%2f%2e%2e%2fetc",
        "a/../../b",
    ];
    for e in evil {
        for order in [
            ["product", "version", "file"],
            ["file", "product", "version"],
        ] {
            // In the product, the version, and the file name.
            let cases = [
                ordered_form(&order, e, "1.0.0", "ok.bin", b"evil"),
                ordered_form(&order, &product, e, "ok.bin", b"evil"),
                ordered_form(&order, &product, "1.0.0", &format!("{e}/passwd"), b"evil"),
                ordered_form(&order, &product, "1.0.0", e, b"evil"),
            ];
            for (i, form) in cases.into_iter().enumerate() {
                let r = app.upload_form(Some(app.admin()), form).await;
                assert_eq!(
                    r.status.as_u16(),
                    400,
                    "case {i} {e:?} {order:?}: {}",
                    r.text()
                );
                assert_eq!(r.error_code(), "invalid_name", "case {i} {e:?} {order:?}");
            }
        }
    }
    app.wait_blob_count(0).await;
    assert!(app.versions(&product).await.is_empty());
    assert_eq!(
        list_files(app.root()),
        before,
        "no file appeared outside (or inside) the data dir"
    );
    for name in ["etc", "passwd", "b"] {
        assert!(!app.root().join(name).exists());
        assert!(!app.root().join("srv").join(name).exists());
    }
}

#[tokio::test]
async fn upload_without_a_field_is_400_missing_field() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let forms = [
        Form::new()
            .text("version", "1.0.0")
            .file("file", Some("a"), b"x"),
        Form::new()
            .text("product", &product)
            .file("file", Some("a"), b"x"),
        Form::new()
            .text("product", &product)
            .text("version", "1.0.0"),
    ];
    for form in forms {
        app.upload_form(Some(app.admin()), form)
            .await
            .assert_error(400, "missing_field");
    }
    app.wait_blob_count(0).await;
    assert!(app.versions(&product).await.is_empty());
}

#[tokio::test]
async fn malformed_upload_bodies_are_400_json_errors() {
    let app = TestApp::start().await;
    let product = app.product().await;
    // Not multipart at all.
    let req = app
        .request(Method::POST, "/product/upload", Some(app.admin()))
        .json(&json!({ "product": product, "version": "1.0.0" }));
    app.send(req).await.assert_error(400, "invalid_body");
    // Multipart without a boundary.
    let req = app
        .request(Method::POST, "/product/upload", Some(app.admin()))
        .header("Content-Type", "multipart/form-data")
        .body("garbage");
    app.send(req).await.assert_error(400, "invalid_body");
    // Truncated multipart (no closing delimiter).
    let form = Form::upload(&product, "1.0.0", "a.bin", b"abc");
    let req = app
        .request(Method::POST, "/product/upload", Some(app.admin()))
        .header("Content-Type", form.content_type())
        .body(form.unterminated());
    app.send(req).await.assert_error(400, "invalid_body");
    // Two version fields (several file fields make one version of several files:
    // tests/release_assets.rs).
    let form = Form::upload(&product, "1.0.0", "a.bin", b"abc").text("version", "2.0.0");
    app.upload_form(Some(app.admin()), form)
        .await
        .assert_error(400, "duplicate_field");
    app.wait_blob_count(0).await;
    assert!(app.versions(&product).await.is_empty());
}

#[tokio::test]
async fn upload_version_names_are_validated() {
    let app = TestApp::start().await;
    let product = app.product().await;
    for bad in ["", "-1", ".1", "1 0", "v1/2", &"1".repeat(129)] {
        app.upload(app.admin(), &product, bad, b"x")
            .await
            .assert_error(400, "invalid_name");
    }
    app.upload(app.admin(), &product, "latest", b"x")
        .await
        .assert_error(400, "reserved_name");
    for good in [
        "v1.0.0",
        "1.2.3+build.5",
        "nightly_2024-01-01",
        &"1".repeat(128),
    ] {
        app.upload_ok(app.admin(), &product, good, b"x").await;
    }
    app.wait_blob_count(4).await;
}

#[tokio::test]
async fn download_sends_length_disposition_strong_etag_and_digests() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let bytes = payload(21, 70_000);
    let form = Form::upload(&product, "1.0.0", "tool-1.0.0.tar.gz", &bytes);
    app.upload_form(Some(app.admin()), form)
        .await
        .assert_status(201);
    let reader = app.token_with(&product, Perms::DOWNLOAD).await;

    let r = app.download(&reader, &product, "1.0.0").await;
    r.assert_status(200);
    assert!(r.body == bytes);
    let hex = sha256_hex(&bytes);
    let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(&hex).unwrap());
    assert_eq!(r.header("content-length").unwrap(), bytes.len().to_string());
    let cd = r.header("content-disposition").unwrap();
    assert!(cd.starts_with("attachment;"), "{cd}");
    assert!(cd.contains("filename=\"tool-1.0.0.tar.gz\""), "{cd}");
    let etag = r.header("etag").unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "strong etag: {etag}"
    );
    assert_eq!(r.header("x-checksum-sha256").unwrap(), hex);
    assert_eq!(r.header("repr-digest").unwrap(), format!("sha-256=:{b64}:"));
    assert_eq!(r.header("accept-ranges").as_deref(), Some("bytes"));

    // The ETag is stable across requests and identical on HEAD.
    let again = app.download(&reader, &product, "1.0.0").await;
    assert_eq!(again.header("etag").unwrap(), etag);
}

#[tokio::test]
async fn range_requests_get_206_with_content_range() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let bytes = payload(22, 10_000);
    app.upload_ok(app.admin(), &product, "1.0.0", &bytes).await;
    let path = format!("/product/download/{product}/1.0.0");
    let cases: [(&str, usize, usize); 5] = [
        ("bytes=0-9", 0, 9),
        ("bytes=100-199", 100, 199),
        ("bytes=9990-", 9990, 9999),
        ("bytes=-25", 9975, 9999),
        ("bytes=9000-20000", 9000, 9999),
    ];
    for (range, start, end) in cases {
        let req = app
            .request(Method::GET, &path, Some(app.admin()))
            .header("Range", range);
        let r = app.send(req).await;
        r.assert_status(206);
        assert_eq!(
            r.header("content-range").unwrap(),
            format!("bytes {start}-{end}/10000"),
            "{range}"
        );
        assert_eq!(
            r.header("content-length").unwrap(),
            (end - start + 1).to_string(),
            "{range}"
        );
        assert!(r.body == bytes[start..=end], "{range}: wrong bytes");
    }
}

#[tokio::test]
async fn unsatisfiable_ranges_are_416() {
    let app = TestApp::start().await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", &payload(1, 100))
        .await;
    let path = format!("/product/download/{product}/1.0.0");
    for range in ["bytes=100-", "bytes=500-600", "bytes=-0"] {
        let req = app
            .request(Method::GET, &path, Some(app.admin()))
            .header("Range", range);
        let r = app.send(req).await;
        r.assert_error(416, "range_not_satisfiable");
        assert_eq!(r.header("content-range").unwrap(), "bytes */100", "{range}");
    }
}

#[tokio::test]
async fn if_none_match_with_the_etag_is_304_without_a_body() {
    let app = TestApp::start().await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", &payload(1, 5000))
        .await;
    let first = app.download(app.admin(), &product, "1.0.0").await;
    let etag = first.header("etag").unwrap();
    let path = format!("/product/download/{product}/1.0.0");

    let req = app
        .request(Method::GET, &path, Some(app.admin()))
        .header("If-None-Match", &etag);
    let r = app.send(req).await;
    r.assert_status(304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag").unwrap(), etag);

    let req = app
        .request(Method::GET, &path, Some(app.admin()))
        .header("If-None-Match", "\"something-else\"");
    app.send(req).await.assert_status(200);
    // Conditional requests still need a valid token with download rights.
    let req = app
        .request(Method::GET, &path, None)
        .header("If-None-Match", &etag);
    app.send(req).await.assert_error(401, "missing_token");
}

#[tokio::test]
async fn head_returns_the_download_headers_without_a_body() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let bytes = payload(1, 12_345);
    app.upload_ok(app.admin(), &product, "1.0.0", &bytes).await;
    let get = app.download(app.admin(), &product, "1.0.0").await;
    let path = format!("/product/download/{product}/1.0.0");
    let head = app
        .send(app.request(Method::HEAD, &path, Some(app.admin())))
        .await;
    head.assert_status(200);
    assert!(head.body.is_empty());
    for name in [
        "content-length",
        "etag",
        "x-checksum-sha256",
        "repr-digest",
        "content-disposition",
    ] {
        assert_eq!(head.header(name), get.header(name), "{name}");
    }
    assert_eq!(head.header("content-length").unwrap(), "12345");
    // HEAD with a range.
    let req = app
        .request(Method::HEAD, &path, Some(app.admin()))
        .header("Range", "bytes=0-99");
    let r = app.send(req).await;
    r.assert_status(206);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length").unwrap(), "100");
}

#[tokio::test]
async fn latest_resolves_to_the_highest_semver() {
    let app = TestApp::start().await;
    let product = app.product().await;
    app.download(app.admin(), &product, "latest")
        .await
        .assert_error(404, "version_not_found");
    for v in ["1.2.0", "1.10.0", "1.9.3", "0.99.0", "2.0.0-rc.1"] {
        app.upload_ok(app.admin(), &product, v, v.as_bytes()).await;
    }
    let r = app.download(app.admin(), &product, "latest").await;
    r.assert_status(200);
    assert_eq!(r.body, b"1.10.0");
    let r = app
        .get(
            &format!("/product/download/{product}/latest?prerelease=true"),
            Some(app.admin()),
        )
        .await;
    assert_eq!(r.body, b"2.0.0-rc.1");
    // Deleting the highest moves latest down.
    app.delete(
        &format!("/product/delete/{product}/1.10.0"),
        Some(app.admin()),
    )
    .await
    .assert_status(204);
    assert_eq!(
        app.download(app.admin(), &product, "latest").await.body,
        b"1.9.3"
    );
    let presign = app
        .get(
            &format!("/product/presign/{product}/latest"),
            Some(app.admin()),
        )
        .await;
    presign.assert_status(200);
    assert_eq!(presign.json()["version"], "1.9.3");
}

#[tokio::test]
async fn unknown_versions_are_404_version_not_found() {
    let app = TestApp::start().await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"x").await;
    let reader = app.token_with(&product, Perms::ALL).await;
    app.download(&reader, &product, "9.9.9")
        .await
        .assert_error(404, "version_not_found");
    app.get(&format!("/product/presign/{product}/9.9.9"), Some(&reader))
        .await
        .assert_error(404, "version_not_found");
    app.delete(&format!("/product/delete/{product}/9.9.9"), Some(&reader))
        .await
        .assert_error(404, "version_not_found");
    let body = json!({ "product": product, "version": "9.9.9" });
    app.delete_json("/product/modify/deleteVersion", Some(&reader), &body)
        .await
        .assert_error(404, "version_not_found");
}

#[tokio::test]
async fn deleting_a_version_removes_its_blob_and_metadata_on_both_routes() {
    let app = TestApp::start().await;
    let product = app.product().await;
    for v in ["1.0.0", "1.0.1", "1.0.2"] {
        app.upload_ok(app.admin(), &product, v, v.as_bytes()).await;
    }
    app.assert_blob_count(3);

    app.delete(
        &format!("/product/delete/{product}/1.0.0"),
        Some(app.admin()),
    )
    .await
    .assert_status(204);
    app.assert_blob_count(2);
    let body = json!({ "product": product, "version": "1.0.1" });
    app.delete_json("/product/modify/deleteVersion", Some(app.admin()), &body)
        .await
        .assert_status(204);
    app.assert_blob_count(1);

    assert_eq!(app.versions(&product).await, vec!["1.0.2".to_string()]);
    for v in ["1.0.0", "1.0.1"] {
        app.download(app.admin(), &product, v)
            .await
            .assert_error(404, "version_not_found");
        app.delete(&format!("/product/delete/{product}/{v}"), Some(app.admin()))
            .await
            .assert_error(404, "version_not_found");
    }
    // The names are free again.
    app.upload_ok(app.admin(), &product, "1.0.0", b"again")
        .await;
    assert_eq!(
        app.download(app.admin(), &product, "1.0.0").await.body,
        b"again"
    );
    app.assert_blob_count(2);
    if let Some(files) = app
        .blob_count()
        .map(|_| list_files(&app.data_dir().join("blobs")))
    {
        assert!(
            files
                .iter()
                .all(|f| !f.to_string_lossy().ends_with(".partial")),
            "{files:?}"
        );
    }
}

#[tokio::test]
async fn redirect_download_is_302_to_a_signed_url_that_works_without_a_token() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let bytes = payload(31, 9000);
    app.upload_ok(app.admin(), &product, "1.0.0", &bytes).await;
    let reader = app.token_with(&product, Perms::DOWNLOAD).await;

    let r = app
        .get(
            &format!("/product/download/{product}/1.0.0?redirect=true"),
            Some(&reader),
        )
        .await;
    r.assert_status(302);
    let location = r.header("location").expect("Location header");
    let url = reqwest::Url::parse(&location).expect("absolute Location");
    // Depot signs the URL itself when the store cannot presign (the filesystem); an S3
    // store may answer with its own presigned URL instead.
    let depot_signed = url.path().starts_with("/signed/");
    if app.backend == Backend::Embedded {
        assert!(depot_signed, "a Depot-signed URL: {location}");
    }
    assert!(
        !location.contains(&reader) && !location.contains(app.admin()),
        "no token in the URL"
    );

    let signed = app.send(app.client().get(&location)).await;
    signed.assert_status(200);
    assert!(signed.body == bytes);
    if depot_signed {
        assert_eq!(
            signed.header("x-checksum-sha256").unwrap(),
            sha256_hex(&bytes)
        );
        assert!(
            signed
                .header("content-disposition")
                .unwrap()
                .starts_with("attachment")
        );
    }
    // Ranges work on the signed URL too.
    let r = app
        .send(app.client().get(&location).header("Range", "bytes=0-9"))
        .await;
    r.assert_status(206);
    assert!(r.body == bytes[..10]);

    // Tampering with the signature.
    let (sig_param, sig) = url
        .query_pairs()
        .find(|(k, _)| k == "signature" || k == "X-Amz-Signature")
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .expect("a signature in the URL");
    let mut flipped = sig.clone().into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    let r = app
        .send(app.client().get(location.replace(
            &format!("{sig_param}={sig}"),
            &format!("{sig_param}={flipped}"),
        )))
        .await;
    if !depot_signed {
        assert_eq!(
            r.status.as_u16(),
            403,
            "tampered presigned URL: {}",
            r.text()
        );
        return;
    }
    r.assert_error(403, "invalid_signature");

    // Tampering with the expiry or the version, or dropping the signature.
    let expires = url
        .query_pairs()
        .find(|(k, _)| k == "expires")
        .unwrap()
        .1
        .to_string();
    let later: i64 = expires.parse::<i64>().unwrap() + 1000;
    app.upload_ok(app.admin(), &product, "1.0.1", b"other")
        .await;
    for tampered in [
        location.replace(&format!("expires={expires}"), &format!("expires={later}")),
        location.replace("/1.0.0?", "/1.0.1?"),
        location.replace(&format!("signature={sig}"), "signature="),
        location.replace(&format!("signature={sig}"), "signature=zz"),
    ] {
        let r = app.send(app.client().get(&tampered)).await;
        r.assert_error(403, "invalid_signature");
    }
    // An expired link.
    let past = location.replace(&format!("expires={expires}"), "expires=1000");
    app.send(app.client().get(&past))
        .await
        .assert_error(403, "invalid_signature");
}

#[tokio::test]
async fn presign_returns_a_url_and_expiry_that_download_the_same_bytes() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let bytes = payload(41, 3333);
    app.upload_ok(app.admin(), &product, "1.0.0", &bytes).await;
    let reader = app.token_with(&product, Perms::DOWNLOAD).await;
    let r = app
        .get(&format!("/product/presign/{product}/1.0.0"), Some(&reader))
        .await;
    r.assert_status(200);
    let v = r.json();
    let url = v["url"].as_str().expect("url");
    let expires_at = v["expires_at"].as_str().expect("expires_at");
    assert!(expires_at.contains('T'), "RFC 3339: {expires_at}");
    let dl = app.send(app.client().get(url)).await;
    dl.assert_status(200);
    assert!(dl.body == bytes);
    // A signed URL dies with its version.
    app.delete(
        &format!("/product/delete/{product}/1.0.0"),
        Some(app.admin()),
    )
    .await
    .assert_status(204);
    let gone = app.send(app.client().get(url)).await;
    if url.contains("/signed/") {
        // The link was bound to the deleted upload.
        gone.assert_error(403, "invalid_signature");
    } else {
        assert_eq!(gone.status.as_u16(), 404, "{}", gone.text());
    }
}
