//! Hostile upload bodies, sent through real sockets: each test is one attack from the
//! hardening review, and checks the answer, that nothing was stored, and (where the attack
//! was about memory) the server's peak RSS from /proc.

mod common;

use common::streaming::StreamingRequest;
use common::*;
use std::time::Duration;

/// How far above its idle peak the server's memory may go under any single hostile body.
const MEMORY_BOUND_KIB: u64 = 64 * 1024;
const HOSTILE_BYTES: u64 = 256 * 1024 * 1024;
/// An upload held open half-way: past one S3 part (8 MiB), so it shows in the bucket as a
/// multipart upload, as it shows on disk as a partial file.
const HELD_FILE: usize = 12 * 1024 * 1024;
const HELD_PART: usize = 9 * 1024 * 1024;

/// A server warmed up by one ordinary upload, so its idle peak includes the upload path.
async fn warmed_app(builder: TestAppBuilder) -> (TestApp, String) {
    let app = builder.start().await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "0.0.1", &payload(1, 3 * 1024 * 1024))
        .await;
    (app, product)
}

/// Streams `prefix` and then `filler` repeatedly (up to [`HOSTILE_BYTES`]) as an upload
/// body that declares it is that long, and returns the server's answer.
async fn hostile_upload(app: &TestApp, token: &str, prefix: &[u8], filler: &[u8]) -> RawReply {
    let boundary = "hostile-boundary";
    let mut request = StreamingRequest::upload(
        app,
        token,
        &format!("multipart/form-data; boundary={boundary}"),
        HOSTILE_BYTES + prefix.len() as u64,
    )
    .await;
    request.send(prefix).await;
    let sent = request.send_repeatedly(filler, HOSTILE_BYTES).await;
    assert!(
        sent < HOSTILE_BYTES,
        "the server kept reading all {sent} bytes of a hostile body"
    );
    request
        .response(Duration::from_secs(30))
        .await
        .expect("the server answers the hostile body before closing")
}

#[track_caller]
fn assert_memory_bounded(app: &TestApp, idle_kib: u64) {
    let peak = app.peak_rss_kib();
    assert!(
        peak <= idle_kib + MEMORY_BOUND_KIB,
        "peak RSS {peak} KiB, idle peak {idle_kib} KiB: more than {MEMORY_BOUND_KIB} KiB above"
    );
}

#[tokio::test]
async fn a_part_header_that_never_ends_is_413_with_memory_bounded() {
    let (app, _) = warmed_app(TestApp::builder()).await;
    let token = app.register(false).await;
    let idle = app.peak_rss_kib();
    let prefix =
        b"--hostile-boundary\r\nContent-Disposition: form-data; name=\"product\"\r\nX-Padding: ";
    let reply = hostile_upload(&app, &token, prefix, &[b'a'; 64 * 1024]).await;
    reply.assert_error(413, "form_too_large");
    assert_memory_bounded(&app, idle);
    app.assert_blob_count(1);
}

#[tokio::test]
async fn a_body_without_a_first_boundary_is_413_with_memory_bounded() {
    let (app, _) = warmed_app(TestApp::builder()).await;
    let token = app.register(false).await;
    let idle = app.peak_rss_kib();
    let reply = hostile_upload(&app, &token, b"", &[b'z'; 64 * 1024]).await;
    reply.assert_error(413, "form_too_large");
    assert_memory_bounded(&app, idle);
}

#[tokio::test]
async fn endlessly_repeated_checksum_fields_are_refused_with_memory_bounded() {
    let (app, _) = warmed_app(TestApp::builder()).await;
    let token = app.register(false).await;
    let idle = app.peak_rss_kib();
    let field = format!(
        "--hostile-boundary\r\nContent-Disposition: form-data; name=\"checksum\"\r\n\r\n{}\r\n",
        "a".repeat(64)
    );
    let reply = hostile_upload(&app, &token, b"", field.as_bytes()).await;
    reply.assert_error(400, "duplicate_field");
    assert_memory_bounded(&app, idle);
}

#[tokio::test]
async fn endlessly_many_unknown_fields_are_refused_with_memory_bounded() {
    let (app, _) = warmed_app(TestApp::builder()).await;
    let token = app.register(false).await;
    let idle = app.peak_rss_kib();
    let field =
        "--hostile-boundary\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n";
    let reply = hostile_upload(&app, &token, b"", field.as_bytes()).await;
    reply.assert_error(400, "too_many_fields");
    assert_memory_bounded(&app, idle);
}

#[tokio::test]
async fn text_fields_past_the_64_kib_form_budget_are_413_form_too_large() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let padding = "p".repeat(1000);
    let mut form = Form::new();
    for i in 0..14 {
        form = form.text(&format!("note{i}"), &padding);
    }
    // 14 fields of 1000 bytes pass; 66 more KiB of file name do not.
    let name = "n".repeat(66 * 1024);
    let form = form
        .text("product", &product)
        .text("version", "1.0.0")
        .file("file", Some(&name), b"data");
    app.upload_form(Some(app.admin()), form)
        .await
        .assert_error(413, "form_too_large");
    app.wait_blob_count(0).await;
}

#[tokio::test]
async fn each_of_product_version_and_checksum_may_come_only_once() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let data = b"artifact bytes";
    let digest = sha256_hex(data);
    for (field, value) in [
        ("product", product.as_str()),
        ("version", "1.0.0"),
        ("checksum", digest.as_str()),
    ] {
        let form = Form::new()
            .text("product", &product)
            .text("version", "1.0.0")
            .text("checksum", &digest)
            .text(field, value)
            .file("file", Some("a.bin"), data);
        app.upload_form(Some(app.admin()), form)
            .await
            .assert_error(400, "duplicate_field");
    }
    // A label field, too, comes once.
    let two_labels = Form::upload(&product, "1.0.0", "a.bin", data)
        .text("label.channel", "a")
        .text("label.channel", "b");
    app.upload_form(Some(app.admin()), two_labels)
        .await
        .assert_error(400, "duplicate_field");
    app.wait_blob_count(0).await;
    assert!(app.versions(&product).await.is_empty());
}

#[tokio::test]
async fn a_version_field_repeated_after_the_file_is_400_duplicate_field_not_503() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let form =
        Form::upload(&product, "1.0.0", "a.bin", &payload(2, 100_000)).text("version", "2.0.0");
    app.upload_form(Some(app.admin()), form)
        .await
        .assert_error(400, "duplicate_field");
    app.wait_blob_count(0).await;
    // Nothing is left holding the version.
    app.upload_ok(app.admin(), &product, "1.0.0", b"retry")
        .await;
}

#[tokio::test]
async fn a_file_before_its_product_from_a_token_without_upload_rights_stores_nothing() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let reader = app.token_with(&product, Perms::DOWNLOAD).await;
    let file = payload(3, 8 * 1024 * 1024);
    let form = Form::new()
        .file("file", Some("a.bin"), &file)
        .text("product", &product)
        .text("version", "1.0.0");
    let (content_type, body) = form.finish();
    let mut request =
        StreamingRequest::upload(&app, &reader, &content_type, body.len() as u64).await;
    // Send the head of the file part and a first MiB, then look at the store.
    request.send(&body[..1024 * 1024]).await;
    let reply = request
        .response(Duration::from_secs(10))
        .await
        .expect("an answer");
    reply.assert_error(403, "forbidden");
    app.assert_blob_count(0);
    assert!(app.versions(&product).await.is_empty());
}

#[tokio::test]
async fn file_first_streams_per_token_are_limited_with_429_and_retry_after() {
    let app = TestApp::builder()
        .env("DEPOT_MAX_EARLY_FILE_UPLOADS_PER_TOKEN", 1)
        .start()
        .await;
    let product = app.product().await;
    let uploader = app.token_with(&product, Perms::UPLOAD).await;
    let file = payload(4, HELD_FILE);
    let form = || {
        Form::new()
            .file("file", Some("a.bin"), &file)
            .text("product", &product)
            .text("version", "1.0.0")
            .finish()
    };
    let (content_type, body) = form();
    let mut first =
        StreamingRequest::upload(&app, &uploader, &content_type, body.len() as u64).await;
    first.send(&body[..HELD_PART]).await;
    eventually(
        Duration::from_secs(10),
        "the first stream is stored",
        || async { app.blob_count().is_some_and(|n| n > 0) },
    )
    .await;
    // A second, small one (the server answers before reading a big body to its end).
    let (content_type, second) = Form::new()
        .file("file", Some("b.bin"), b"small")
        .text("product", &product)
        .text("version", "2.0.0")
        .finish();
    let req = app
        .request(reqwest::Method::POST, "/product/upload", Some(&uploader))
        .header("Content-Type", content_type)
        .body(second);
    let reply = app.send(req).await;
    reply.assert_error(429, "too_many_uploads");
    assert!(reply.header("retry-after").is_some());
    // The held stream finishes normally once the rest arrives.
    first.send(&body[HELD_PART..]).await;
    let done = first
        .response(Duration::from_secs(30))
        .await
        .expect("an answer");
    assert_eq!(done.status, 201, "{}", String::from_utf8_lossy(&done.body));
}

#[tokio::test]
async fn a_stalled_upload_is_aborted_with_408_and_frees_its_version() {
    let app = TestApp::builder()
        .env("DEPOT_UPLOAD_IDLE_TIMEOUT_SECONDS", 2)
        .start()
        .await;
    let product = app.product().await;
    let (content_type, body) =
        Form::upload(&product, "1.0.0", "a.bin", &payload(5, 4 * 1024 * 1024)).finish();
    let mut stalled =
        StreamingRequest::upload(&app, app.admin(), &content_type, body.len() as u64).await;
    stalled.send(&body[..1024 * 1024]).await;
    // While it runs, the version answers 409 version_pending... until the idle timeout.
    let reply = stalled
        .response(Duration::from_secs(20))
        .await
        .expect("an answer");
    reply.assert_error(408, "upload_timeout");
    app.wait_blob_count(0).await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"the real one")
        .await;
}

#[tokio::test]
async fn uploads_past_the_concurrency_limit_get_503_too_busy_with_retry_after() {
    let app = TestApp::builder()
        .env("DEPOT_MAX_CONCURRENT_UPLOADS", 1)
        .start()
        .await;
    let product = app.product().await;
    let (content_type, body) =
        Form::upload(&product, "1.0.0", "a.bin", &payload(6, HELD_FILE)).finish();
    let mut running =
        StreamingRequest::upload(&app, app.admin(), &content_type, body.len() as u64).await;
    running.send(&body[..HELD_PART]).await;
    eventually(
        Duration::from_secs(10),
        "the first upload is stored",
        || async { app.blob_count().is_some_and(|n| n > 0) },
    )
    .await;
    let reply = app.upload(app.admin(), &product, "2.0.0", b"second").await;
    reply.assert_error(503, "too_busy");
    let retry: u64 = reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(retry >= 1);
    running.send(&body[HELD_PART..]).await;
    let done = running
        .response(Duration::from_secs(30))
        .await
        .expect("an answer");
    assert_eq!(done.status, 201);
    // The slot is free again.
    app.upload_ok(app.admin(), &product, "2.0.0", b"second")
        .await;
}

#[tokio::test]
async fn bidi_overrides_are_stripped_from_uploaded_file_names() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let form = Form::upload(&product, "1.0.0", "invoice\u{202E}fdp.exe", b"MZ");
    let reply = app.upload_form(Some(app.admin()), form).await;
    reply.assert_status(201);
    assert_eq!(reply.json()["file_name"], "invoicefdp.exe");
}
