//! Hostile input on the resumable (tus) and direct upload routes (issue 14), over real
//! sockets where a URL library would tidy the request: malformed `Upload-Metadata`,
//! lengths and offsets, bodies past the declared length, PATCHes racing on one upload,
//! guessed ids, path traversal in file names, forged and expired direct-upload URLs,
//! completing twice, and a 1 GiB PATCH in bounded memory. Every refusal is checked for its
//! JSON error code, and for leaving nothing behind.

mod common;

use common::streaming::StreamingRequest;
use common::*;
use rand::Rng;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const MIB: usize = 1 << 20;
/// How far above its idle peak the server's memory may go while a PATCH streams in.
const MEMORY_BOUND_KIB: u64 = 64 * 1024;

/// `POST /uploads` sent as raw bytes: `headers` are extra header lines (CRLF-joined).
async fn raw_create(app: &TestApp, token: &str, headers: &[String], body: &[u8]) -> RawReply {
    let mut head = format!("POST /uploads HTTP/1.1\r\nX-Api-Token: {token}");
    for h in headers {
        head.push_str("\r\n");
        head.push_str(h);
    }
    if !body.is_empty() {
        head.push_str(&format!("\r\nContent-Length: {}", body.len()));
    }
    app.raw_request(&head, body).await
}

/// `PATCH location` sent as raw bytes with `headers` and a `Content-Length` body.
async fn raw_patch(
    app: &TestApp,
    token: &str,
    location: &str,
    headers: &[String],
    body: &[u8],
) -> RawReply {
    let mut head = format!("PATCH {location} HTTP/1.1\r\nX-Api-Token: {token}");
    for h in headers {
        head.push_str("\r\n");
        head.push_str(h);
    }
    head.push_str(&format!("\r\nContent-Length: {}", body.len()));
    app.raw_request(&head, body).await
}

/// A `POST /uploads` whose `Upload-Metadata` is `meta`, however big: written while the
/// answer is read, errors ignored (the server may close mid-way); returns what came back.
async fn oversized_request(app: &TestApp, token: &str, meta: &str) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port()))
        .await
        .expect("connect");
    let (mut read, mut write) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut answer = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        answer
    });
    let request = format!(
        "POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Token: {token}\r\nTus-Resumable: 1.0.0\r\nUpload-Length: 10\r\nUpload-Metadata: {meta}\r\nConnection: close\r\n\r\n"
    );
    let _ = write.write_all(request.as_bytes()).await;
    let _ = write.shutdown().await;
    tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the server answers or closes within 30 s")
        .expect("reader task")
}

/// Rewrites one query parameter of a URL (`None` drops it).
type QueryRewrite<'a> = dyn Fn(&str, &str) -> Option<(String, String)> + 'a;

fn tus_headers(length: &str, meta: &str) -> Vec<String> {
    vec![
        "Tus-Resumable: 1.0.0".to_string(),
        format!("Upload-Length: {length}"),
        format!("Upload-Metadata: {meta}"),
    ]
}

fn patch_headers(offset: &str) -> Vec<String> {
    vec![
        "Tus-Resumable: 1.0.0".to_string(),
        "Content-Type: application/offset+octet-stream".to_string(),
        format!("Upload-Offset: {offset}"),
    ]
}

fn meta_of(product: &str, version: &str, filename: &str) -> String {
    tus_metadata(&[
        ("product", product),
        ("version", version),
        ("filename", filename),
    ])
}

fn b64(s: &[u8]) -> String {
    base64_of(s)
}

/// Asserts that nothing was created: no upload listed, no blob stored.
async fn assert_nothing_open(app: &TestApp, blobs: usize) {
    let listed = app.tus_list(app.admin(), "").await;
    assert!(listed.is_empty(), "uploads were created: {listed:?}");
    app.assert_blob_count(blobs);
}

#[tokio::test]
async fn malformed_upload_metadata_is_refused_with_its_code() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::UPLOAD).await;
    let blobs = app.blob_count().unwrap();
    let p = b64(product.as_bytes());
    let v = b64(b"1.0.0");
    let f = b64(b"a.bin");
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "bad base64",
            format!("product {p},version !!not*base64!!,filename {f}"),
            400,
            "invalid_metadata",
        ),
        (
            "duplicate key",
            format!(
                "product {p},version {v},version {},filename {f}",
                b64(b"2.0.0")
            ),
            400,
            "invalid_metadata",
        ),
        (
            "value not UTF-8",
            format!(
                "product {p},version {v},filename {}",
                b64(&[0xff, 0xfe, 0x41])
            ),
            400,
            "invalid_metadata",
        ),
        (
            "three parts in a pair",
            format!("product {p} {p},version {v},filename {f}"),
            400,
            "invalid_metadata",
        ),
        (
            "no filename",
            format!("product {p},version {v}"),
            400,
            "missing_metadata",
        ),
        (
            "no product",
            format!("version {v},filename {f}"),
            400,
            "missing_metadata",
        ),
        ("empty header", String::new(), 400, "missing_metadata"),
        (
            "draft not a boolean",
            format!("product {p},version {v},filename {f},draft {}", b64(b"yes")),
            400,
            "invalid_metadata",
        ),
        (
            "checksum not sha256:hex",
            format!(
                "product {p},version {v},filename {f},checksum {}",
                b64(b"md5:d41d8cd98f00b204e9800998ecf8427e")
            ),
            400,
            "invalid_checksum",
        ),
    ];
    for (what, meta, status, code) in &cases {
        let r = raw_create(&app, &token, &tus_headers("10", meta), b"").await;
        assert_eq!(
            (r.status, r.json()["code"].as_str().unwrap_or_default()),
            (*status, *code),
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // A thousand keys: unknown keys are ignored (tus clients add their own, such as
    // filetype) or refused as too many, never a crash or a slow answer.
    let many: Vec<String> = (0..1000).map(|i| format!("k{i} {}", b64(b"x"))).collect();
    let meta = format!("product {p},version {v},filename {f},{}", many.join(","));
    let r = raw_create(&app, &token, &tus_headers("10", &meta), b"").await;
    match r.status {
        201 => {}
        _ => r.assert_error(400, "invalid_metadata"),
    }
    // A huge header: 200 KiB of metadata value (within hyper's header buffer) is a JSON
    // refusal; 1 MiB is more than any header block may hold: 431, or the connection closed.
    let huge = format!(
        "product {p},version {v},filename {f},note {}",
        b64(&vec![b'a'; 200 * 1024])
    );
    let r = raw_create(&app, &token, &tus_headers("10", &huge), b"").await;
    r.assert_error(400, "invalid_metadata");
    let huger = format!("product {p},version {v},filename {}", b64(&vec![b'a'; MIB]));
    let answer = oversized_request(&app, &token, &huger).await;
    if !answer.is_empty() {
        let r = parse_raw_response(&answer);
        assert_eq!(r.status, 431, "{}", r.head);
    }
    app.get("/livez", None).await.assert_status(200);
    let listed = app.tus_list(app.admin(), "").await;
    assert!(
        listed.len() <= 1,
        "only the thousand-keys upload may exist: {listed:?}"
    );
    app.assert_blob_count(blobs);
}

#[tokio::test]
async fn path_traversal_in_names_is_refused_and_writes_nothing_outside() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::UPLOAD).await;
    let blobs = app.blob_count().unwrap();
    let long = "a".repeat(256);
    for (what, filename, code) in [
        ("dot-dot path", "../../../../etc/passwd", "invalid_name"),
        ("slash", "a/b.bin", "invalid_name"),
        ("backslash", "..\\..\\x.bin", "invalid_name"),
        ("dot-dot", "..", "invalid_name"),
        ("dot", ".", "invalid_name"),
        ("empty", "", "missing_metadata"),
        ("NUL", "a\0b.bin", "invalid_name"),
        ("newline", "a\nb.bin", "invalid_name"),
        ("absolute", "/etc/passwd", "invalid_name"),
        ("256 bytes", long.as_str(), "invalid_name"),
        ("reserved", "SHA256SUMS", "reserved_name"),
    ] {
        let r = app
            .tus_create(
                &token,
                10,
                &[
                    ("product", &product),
                    ("version", "1.0.0"),
                    ("filename", filename),
                ],
            )
            .await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_deref()),
            (400, Some(code)),
            "{what}: {}",
            r.text()
        );
    }
    for (what, version) in [("dot-dot", "../../x"), ("slash", "1.0/0"), ("empty", "")] {
        let r = app
            .tus_create(
                &token,
                10,
                &[
                    ("product", &product),
                    ("version", version),
                    ("filename", "a.bin"),
                ],
            )
            .await;
        assert_eq!(r.status.as_u16(), 400, "version {what}: {}", r.text());
        assert!(
            ["invalid_name", "missing_metadata"].contains(&r.error_code().as_str()),
            "version {what}: {}",
            r.text()
        );
    }
    let r = app
        .tus_create(
            app.admin(),
            10,
            &[
                ("product", "../../etc"),
                ("version", "1.0.0"),
                ("filename", "a.bin"),
            ],
        )
        .await;
    r.assert_error(400, "invalid_name");
    assert_nothing_open(&app, blobs).await;
    // Nothing landed next to the data dir either.
    let outside: Vec<_> = list_files(app.root())
        .into_iter()
        .filter(|p| !p.starts_with(app.data_dir()))
        .filter(|p| !p.to_string_lossy().ends_with(".log"))
        .collect();
    assert!(
        outside.is_empty(),
        "files outside the data dir: {outside:?}"
    );
}

#[tokio::test]
async fn upload_length_must_be_a_plain_number_within_the_limit() {
    let app = TestApp::builder().max_upload_bytes(1 << 30).start().await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::UPLOAD).await;
    let blobs = app.blob_count().unwrap();
    let meta = meta_of(&product, "1.0.0", "a.bin");
    for length in [
        "-1",
        "abc",
        "1e6",
        "",
        "0x10",
        "+5",
        "1.5",
        "99999999999999999999999",
        "18446744073709551616",
        "10 10",
    ] {
        let r = raw_create(&app, &token, &tus_headers(length, &meta), b"").await;
        r.assert_error(400, "invalid_upload_length");
    }
    for length in ["18446744073709551615", "1073741825", "9223372036854775807"] {
        raw_create(&app, &token, &tus_headers(length, &meta), b"")
            .await
            .assert_error(413, "payload_too_large");
    }
    // No Upload-Length; deferred length (not offered).
    let r = raw_create(
        &app,
        &token,
        &[
            "Tus-Resumable: 1.0.0".to_string(),
            format!("Upload-Metadata: {meta}"),
        ],
        b"",
    )
    .await;
    r.assert_error(400, "invalid_upload_length");
    let r = raw_create(
        &app,
        &token,
        &[
            "Tus-Resumable: 1.0.0".to_string(),
            "Upload-Defer-Length: 1".to_string(),
            format!("Upload-Metadata: {meta}"),
        ],
        b"",
    )
    .await;
    r.assert_error(400, "invalid_upload_length");
    // Two Upload-Length headers that disagree.
    let mut two = tus_headers("10", &meta);
    two.push("Upload-Length: 20".to_string());
    raw_create(&app, &token, &two, b"")
        .await
        .assert_error(400, "invalid_upload_length");
    assert_nothing_open(&app, blobs).await;
}

#[tokio::test]
async fn patch_headers_are_checked_before_a_byte_is_kept() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::UPLOAD).await;
    let location = app
        .tus_create_ok(
            &token,
            100,
            &[
                ("product", &product),
                ("version", "1.0.0"),
                ("filename", "a.bin"),
            ],
        )
        .await;
    let body = payload(1, 100);
    let mut cases: Vec<(&str, Vec<String>, u16, &str)> = vec![
        (
            "no Tus-Resumable",
            vec![
                "Content-Type: application/offset+octet-stream".into(),
                "Upload-Offset: 0".into(),
            ],
            412,
            "unsupported_tus_version",
        ),
        (
            "Tus-Resumable 0.2.2",
            vec![
                "Tus-Resumable: 0.2.2".into(),
                "Content-Type: application/offset+octet-stream".into(),
                "Upload-Offset: 0".into(),
            ],
            412,
            "unsupported_tus_version",
        ),
    ];
    for ct in [
        "application/octet-stream",
        "text/plain",
        "multipart/form-data; boundary=x",
    ] {
        cases.push((
            "wrong Content-Type",
            vec![
                "Tus-Resumable: 1.0.0".into(),
                format!("Content-Type: {ct}"),
                "Upload-Offset: 0".into(),
            ],
            415,
            "unsupported_media_type",
        ));
    }
    cases.push((
        "no Content-Type",
        vec!["Tus-Resumable: 1.0.0".into(), "Upload-Offset: 0".into()],
        415,
        "unsupported_media_type",
    ));
    for garbage in ["abc", "-1", "", "1e3", "0x0", "18446744073709551616", "0 0"] {
        cases.push((
            "garbage Upload-Offset",
            patch_headers(garbage),
            400,
            "invalid_upload_offset",
        ));
    }
    cases.push((
        "no Upload-Offset",
        vec![
            "Tus-Resumable: 1.0.0".into(),
            "Content-Type: application/offset+octet-stream".into(),
        ],
        400,
        "invalid_upload_offset",
    ));
    for offset in ["5", "100", "101", "18446744073709551615"] {
        cases.push((
            "another offset",
            patch_headers(offset),
            409,
            "offset_mismatch",
        ));
    }
    for checksum in ["sha256 !!!", "sha256", "sha256 ", "sha1 AAAA", "SHA256"] {
        let mut h = patch_headers("0");
        h.push(format!("Upload-Checksum: {checksum}"));
        cases.push(("bad Upload-Checksum", h, 400, "invalid_checksum"));
    }
    for alg in ["md5", "crc32", "sha512"] {
        let mut h = patch_headers("0");
        h.push(format!(
            "Upload-Checksum: {alg} {}",
            b64(b"0123456789abcdef")
        ));
        cases.push((
            "unknown algorithm",
            h,
            400,
            "unsupported_checksum_algorithm",
        ));
    }
    for (what, headers, status, code) in &cases {
        let r = raw_patch(&app, &token, &location, headers, &body).await;
        assert_eq!(
            (r.status, r.json()["code"].as_str().unwrap_or_default()),
            (*status, *code),
            "{what} {headers:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            app.tus_offset(&token, &location).await,
            0,
            "{what}: a refused PATCH kept bytes"
        );
    }
    // Still intact: the right PATCH completes it.
    app.tus_patch(&token, &location, 0, &body, None)
        .await
        .assert_status(204);
    assert!(app.download(app.admin(), &product, "1.0.0").await.body == body);
}

#[tokio::test]
async fn a_body_past_upload_length_is_refused_and_never_stored() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::UPLOAD).await;
    let length = 1000u64;
    let intended = payload(2, 3000);
    let location = app
        .tus_create_ok(
            &token,
            length,
            &[
                ("product", &product),
                ("version", "1.0.0"),
                ("filename", "a.bin"),
            ],
        )
        .await;
    let assert_too_long = |r: &Reply| {
        assert!(
            matches!(r.status.as_u16(), 400 | 413),
            "{} {}",
            r.status,
            r.text()
        );
        assert_eq!(r.error_code(), "upload_too_long", "{}", r.text());
    };
    // Where the upload stands: never past its length, and what is stored is what was sent.
    let offset_now = || async {
        let offset = app.tus_offset(&token, &location).await;
        assert!(
            offset <= length,
            "offset {offset} past Upload-Length {length}"
        );
        offset
    };
    // A declared body longer than what is left: refused (what came before the excess
    // may be kept, nothing past the length).
    let r = app
        .tus_patch(&token, &location, 0, &intended[..2000], None)
        .await;
    assert_too_long(&r);
    let offset = offset_now().await;
    let r = app
        .tus_patch(
            &token,
            &location,
            offset,
            &intended[offset as usize..1001],
            None,
        )
        .await;
    assert_too_long(&r);
    let offset = offset_now().await;

    // A chunked body (no length declared) that runs past the end.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = intended[offset as usize..2400]
        .chunks(100)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let r = app
        .send(
            app.request(Method::PATCH, &location, Some(&token))
                .header("Tus-Resumable", "1.0.0")
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Offset", offset.to_string())
                .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks))),
        )
        .await;
    assert_too_long(&r);
    let offset = offset_now().await;
    // The rest, exactly: the upload completes with the intended bytes.
    app.tus_patch(
        &token,
        &location,
        offset,
        &intended[offset as usize..length as usize],
        None,
    )
    .await
    .assert_status(204);
    let d = app.download(app.admin(), &product, "1.0.0").await;
    d.assert_status(200);
    assert_eq!(d.body.len() as u64, length, "stored past Upload-Length");
    assert!(d.body == intended[..length as usize]);
    // A finished upload takes no more bytes.
    let r = app
        .tus_patch(&token, &location, length, b"more", None)
        .await;
    match r.status.as_u16() {
        409 => r.assert_error(409, "offset_mismatch"),
        _ => assert_too_long(&r),
    }
    assert_eq!(
        app.download(app.admin(), &product, "1.0.0")
            .await
            .body
            .len() as u64,
        length
    );

    // creation-with-upload: a body past the declared length.
    let meta = meta_of(&product, "2.0.0", "b.bin");
    let mut headers = tus_headers("10", &meta);
    headers.push("Content-Type: application/offset+octet-stream".to_string());
    let r = raw_create(&app, &token, &headers, &[7u8; 20]).await;
    assert!(matches!(r.status, 400 | 413), "{}", r.head);
    assert_eq!(r.json()["code"], "upload_too_long");
    // No Location reached the client: the upload is gone.
    eventually(
        Duration::from_secs(10),
        "the refused creation leaves no upload",
        || async { app.tus_list(&token, "").await.is_empty() },
    )
    .await;
    // creation-with-upload within the length works.
    let r = raw_create(&app, &token, &headers, &[7u8; 10]).await;
    assert_eq!(r.status, 201, "{}", r.head);
    assert!(
        r.head.to_ascii_lowercase().contains("upload-offset: 10"),
        "{}",
        r.head
    );
    assert_eq!(
        app.download(app.admin(), &product, "2.0.0").await.body,
        [7u8; 10]
    );
}

#[tokio::test]
async fn concurrent_patches_on_one_upload_lock_and_the_data_stays_right() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::UPLOAD).await;
    let first = payload(3, 2 * MIB);
    let location = app
        .tus_create_ok(
            &token,
            4 * MIB as u64,
            &[
                ("product", &product),
                ("version", "1.0.0"),
                ("filename", "a.bin"),
            ],
        )
        .await;
    // One PATCH holds the upload, half its body sent.
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nX-Api-Token: {token}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: {}",
        first.len()
    );
    let mut holder = StreamingRequest::open(&app, &head).await;
    assert!(holder.send(&first[..MIB]).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = app
        .tus_patch(&token, &location, 0, &payload(4, 2 * MIB), None)
        .await;
    match r.status.as_u16() {
        423 => r.assert_error(423, "upload_locked"),
        _ => r.assert_error(409, "offset_mismatch"),
    }
    assert!(holder.send(&first[MIB..]).await);
    let done = holder
        .response(Duration::from_secs(30))
        .await
        .expect("an answer");
    assert_eq!(done.status, 204, "{}", done.head);
    assert!(
        done.head
            .to_ascii_lowercase()
            .contains(&format!("upload-offset: {}", 2 * MIB)),
        "{}",
        done.head
    );

    // Eight PATCHes of the rest at once, each with its own bytes: one wins, whole.
    let racers: Vec<Vec<u8>> = (0..8).map(|i| payload(100 + i, 2 * MIB)).collect();
    let replies = futures::future::join_all(
        racers
            .iter()
            .map(|b| app.tus_patch(&token, &location, 2 * MIB as u64, b, None)),
    )
    .await;
    let mut winners = Vec::new();
    for (i, r) in replies.iter().enumerate() {
        match r.status.as_u16() {
            204 => winners.push(i),
            423 => r.assert_error(423, "upload_locked"),
            _ => r.assert_error(409, "offset_mismatch"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one PATCH wins: {winners:?}");
    let d = app.download(app.admin(), &product, "1.0.0").await;
    d.assert_status(200);
    assert!(
        d.body == [first.as_slice(), racers[winners[0]].as_slice()].concat(),
        "the stored file is the first PATCH and the winner's, unmixed"
    );
}

#[tokio::test]
async fn guessed_and_malformed_upload_ids_find_nothing() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::UPLOAD).await;
    let real = app
        .tus_create_ok(
            &token,
            10,
            &[
                ("product", &product),
                ("version", "1.0.0"),
                ("filename", "a.bin"),
            ],
        )
        .await;
    let id = tus_id(&real);
    let mut rng = rand::rng();
    for i in 0..200 {
        let guess: String = (0..32)
            .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap())
            .collect();
        let location = format!("/uploads/{guess}");
        app.tus_head(&token, &location).await.assert_status(404);
        if i % 10 == 0 {
            app.tus_patch(&token, &location, 0, b"x", None)
                .await
                .assert_error(404, "upload_not_found");
            app.tus_delete(&token, &location)
                .await
                .assert_error(404, "upload_not_found");
        }
    }
    // Near misses and hostile ids: the same 404.
    let mut near = vec![
        id.to_uppercase(),
        format!("{id}0"),
        id[..31].to_string(),
        format!("{}{}", &id[..31], if id.ends_with('0') { '1' } else { '0' }),
        "x".repeat(10_000),
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd".to_string(),
        format!("{id}%00"),
        format!("{id}%2f..%2f"),
    ];
    near.push(String::from("..%2F..%2F..%2Fetc%2Fpasswd"));
    for bad in &near {
        let head = format!(
            "PATCH /uploads/{bad} HTTP/1.1\r\nX-Api-Token: {token}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: 1"
        );
        let r = app.raw_request(&head, b"x").await;
        r.assert_error(404, "upload_not_found");
        let head = format!(
            "DELETE /uploads/{bad} HTTP/1.1\r\nX-Api-Token: {token}\r\nTus-Resumable: 1.0.0"
        );
        app.raw_request(&head, b"")
            .await
            .assert_error(404, "upload_not_found");
    }
    // The real one is untouched.
    assert_eq!(app.tus_offset(&token, &real).await, 0);
}

#[tokio::test]
async fn direct_puts_with_forged_or_expired_signatures_are_refused() {
    let app = TestApp::builder()
        .env("DEPOT_UPLOAD_URL_TTL_SECONDS", 6)
        .start()
        .await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::UPLOAD).await;
    let bytes = payload(5, 100_000);
    let body = |version: &str| {
        json!({"product": product, "version": version, "file": "f.bin", "size": bytes.len(),
               "checksum": format!("sha256:{}", sha256_hex(&bytes)), "draft": false})
    };
    let r = app.upload_url(&token, &body("1.0.0")).await;
    r.assert_status(201);
    let g = r.json();
    let r = app.upload_url(&token, &body("2.0.0")).await;
    r.assert_status(201);
    let other = r.json();
    let url = url::Url::parse(g["url"].as_str().unwrap()).unwrap();
    let with_query = |f: &QueryRewrite<'_>| -> Value {
        let mut u = url.clone();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .filter_map(|(k, v)| f(k.as_ref(), v.as_ref()))
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        let mut forged = g.clone();
        forged["url"] = json!(u.to_string());
        forged
    };
    let flip = |v: &str| -> String {
        let mut c: Vec<char> = v.chars().collect();
        let last = c.len() - 1;
        c[last] = if c[last] == '0' { '1' } else { '0' };
        c.into_iter().collect()
    };
    let signature_key = if app.backend == Backend::Production {
        "X-Amz-Signature"
    } else {
        "signature"
    };
    let expires_key = if app.backend == Backend::Production {
        "X-Amz-Expires"
    } else {
        "expires"
    };
    let mut forgeries: Vec<(&str, Value)> = vec![
        (
            "flipped signature",
            with_query(&|k, v| {
                Some((
                    k.to_string(),
                    if k == signature_key {
                        flip(v)
                    } else {
                        v.to_string()
                    },
                ))
            }),
        ),
        (
            "later expiry",
            with_query(&|k, v| {
                Some((
                    k.to_string(),
                    if k == expires_key {
                        (v.parse::<i64>().unwrap() + 100_000).to_string()
                    } else {
                        v.to_string()
                    },
                ))
            }),
        ),
        (
            "no signature",
            with_query(&|k, v| (k != signature_key).then(|| (k.to_string(), v.to_string()))),
        ),
    ];
    // Another grant's signature on this one's URL.
    let other_url = url::Url::parse(other["url"].as_str().unwrap()).unwrap();
    let other_sig = other_url
        .query_pairs()
        .find(|(k, _)| k == signature_key)
        .map(|(_, v)| v.to_string())
        .unwrap();
    forgeries.push((
        "another grant's signature",
        with_query(&|k, v| {
            Some((
                k.to_string(),
                if k == signature_key {
                    other_sig.clone()
                } else {
                    v.to_string()
                },
            ))
        }),
    ));
    for (what, forged) in &forgeries {
        let r = app.put_direct(forged, &bytes).await;
        match app.backend {
            // The bucket: 400 MissingFields for a presigned URL without its signature.
            Backend::Production if *what == "no signature" => assert!(
                matches!(r.status.as_u16(), 400 | 403),
                "{what}: {} {}",
                r.status,
                r.text()
            ),
            Backend::Production => assert_eq!(r.status.as_u16(), 403, "{what}: {}", r.text()),
            // A URL without its signature is no signed URL at all.
            Backend::Embedded if *what == "no signature" => r.assert_error(400, "invalid_query"),
            Backend::Embedded => r.assert_error(403, "invalid_signature"),
        }
    }
    app.complete_direct(&token, g["upload_id"].as_str().unwrap())
        .await
        .assert_error(409, "upload_not_received");
    // Expired: the genuine URL, once its time is up.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let r = app.put_direct(&g, &bytes).await;
    match app.backend {
        Backend::Production => assert_eq!(r.status.as_u16(), 403, "expired: {}", r.text()),
        Backend::Embedded => {
            assert_eq!(r.status.as_u16(), 403, "expired: {}", r.text());
            assert!(
                ["invalid_signature", "upload_expired"].contains(&r.error_code().as_str()),
                "{}",
                r.text()
            );
        }
    }
    match app.backend {
        Backend::Production => {
            let (keys, multipart) = app.s3_listing().await;
            assert!(keys.is_empty() && multipart == 0, "{keys:?}");
        }
        Backend::Embedded => app.assert_blob_count(0),
    }
}

#[tokio::test]
async fn completing_twice_commits_once() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::UPLOAD).await;
    let bytes = payload(6, 50_000);
    let request = |version: &str| {
        json!({"product": product, "version": version, "file": "f.bin", "size": bytes.len(),
               "checksum": format!("sha256:{}", sha256_hex(&bytes)), "draft": false})
    };
    let r = app.upload_url(&token, &request("1.0.0")).await;
    r.assert_status(201);
    let g = r.json();
    let id = g["upload_id"].as_str().unwrap().to_string();
    assert!(app.put_direct(&g, &bytes).await.status.is_success());
    let first = app.complete_direct(&token, &id).await;
    first.assert_status(201);
    // A second completion commits nothing more.
    app.complete_direct(&token, &id)
        .await
        .assert_error(409, "upload_completed");
    // Racing completions of a fresh upload: one commit.
    let r = app.upload_url(&token, &request("2.0.0")).await;
    r.assert_status(201);
    let g = r.json();
    let id = g["upload_id"].as_str().unwrap().to_string();
    assert!(app.put_direct(&g, &bytes).await.status.is_success());
    let replies = futures::future::join_all((0..6).map(|_| app.complete_direct(&token, &id))).await;
    let mut committed = 0;
    for r in &replies {
        match r.status.as_u16() {
            201 => committed += 1,
            423 => r.assert_error(423, "upload_locked"),
            _ => r.assert_error(409, "upload_completed"),
        }
    }
    assert_eq!(committed, 1, "{replies:?}");
    // The grant's URL stays signed for those bytes only: other bytes are refused and
    // the committed file stays as it was.
    let r = app.put_direct(&g, &payload(60, bytes.len())).await;
    match app.backend {
        Backend::Production => assert!(r.status.is_client_error(), "{} {}", r.status, r.text()),
        Backend::Embedded => r.assert_error(409, "upload_completed"),
    }
    assert!(app.download(app.admin(), &product, "2.0.0").await.body == bytes);
    let u = app
        .get(&format!("/product/usage/{product}"), Some(app.admin()))
        .await
        .json();
    assert_eq!(u["bytes"], 2 * bytes.len(), "{u}");
    assert_eq!(u["versions"], 2, "{u}");
    app.wait_blob_count(2).await;
}

#[tokio::test]
async fn a_1_gib_patch_streams_through_in_bounded_memory() {
    const LEN: u64 = 1 << 30;
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::UPLOAD).await;
    // Warm the PATCH path up, so the idle peak includes it.
    let warm = payload(7, 12 * MIB);
    let location = app
        .tus_create_ok(
            &token,
            warm.len() as u64,
            &[
                ("product", &product),
                ("version", "0.0.1"),
                ("filename", "warm.bin"),
            ],
        )
        .await;
    app.tus_patch(&token, &location, 0, &warm, None)
        .await
        .assert_status(204);
    let idle = app.peak_rss_kib();

    let location = app
        .tus_create_ok(
            &token,
            LEN,
            &[
                ("product", &product),
                ("version", "1.0.0"),
                ("filename", "big.bin"),
            ],
        )
        .await;
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nX-Api-Token: {token}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: {LEN}"
    );
    let mut request = StreamingRequest::open(&app, &head).await;
    let block = payload(8, MIB);
    let sent = request.send_repeatedly(&block, LEN).await;
    assert_eq!(sent, LEN, "the server stopped taking the body at {sent}");
    let reply = request
        .response(Duration::from_secs(300))
        .await
        .expect("an answer to the 1 GiB PATCH");
    assert_eq!(reply.status, 204, "{}", reply.head);
    let peak = app.peak_rss_kib();
    assert!(
        peak <= idle + MEMORY_BOUND_KIB,
        "peak RSS {peak} KiB, idle peak {idle} KiB: more than {MEMORY_BOUND_KIB} KiB above"
    );
    let listed = app
        .get(&format!("/product/versions/{product}"), Some(app.admin()))
        .await
        .json();
    let big = listed["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == "1.0.0")
        .unwrap_or_else(|| panic!("1.0.0 not listed: {listed}"))
        .clone();
    assert_eq!(big["size"], LEN, "{big}");
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    for _ in 0..(LEN as usize / MIB) {
        sha2::Digest::update(&mut hasher, &block);
    }
    let digest = hex::encode(sha2::Digest::finalize(hasher));
    assert_eq!(big["checksum"], format!("sha256:{digest}"), "{big}");
    // Free the disk (and the bucket) again.
    app.delete(
        &format!("/product/delete/{product}/1.0.0"),
        Some(app.admin()),
    )
    .await
    .assert_status(204);
}

#[tokio::test]
async fn an_upload_id_of_one_kind_is_unknown_to_the_other_kinds_routes() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::UPLOAD).await;
    let tus = app
        .tus_create_ok(
            &token,
            10,
            &[
                ("product", &product),
                ("version", "1.0.0"),
                ("filename", "a.bin"),
            ],
        )
        .await;
    let bytes = payload(9, 10);
    let r = app
        .upload_url(
            &token,
            &json!({"product": product, "version": "2.0.0", "file": "b.bin", "size": 10,
                    "checksum": format!("sha256:{}", sha256_hex(&bytes)), "draft": false}),
        )
        .await;
    r.assert_status(201);
    let grant = r.json();
    let direct = grant["upload_id"].as_str().unwrap().to_string();
    let as_tus = format!("/uploads/{direct}");
    // A direct upload's id on the tus routes.
    app.tus_head(&token, &as_tus).await.assert_status(404);
    app.tus_patch(&token, &as_tus, 0, &bytes, None)
        .await
        .assert_error(404, "upload_not_found");
    app.tus_delete(&token, &as_tus)
        .await
        .assert_error(404, "upload_not_found");
    assert!(
        app.tus_list(&token, "")
            .await
            .iter()
            .all(|u| u["id"] != direct.as_str()),
        "GET /uploads lists tus uploads only"
    );
    // A tus upload's id on the completion route.
    app.complete_direct(&token, &tus_id(&tus))
        .await
        .assert_error(404, "upload_not_found");
    // Both still work as what they are.
    assert!(app.put_direct(&grant, &bytes).await.status.is_success());
    app.complete_direct(&token, &direct)
        .await
        .assert_status(201);
    app.tus_patch(&token, &tus, 0, &payload(10, 10), None)
        .await
        .assert_status(204);
    assert_eq!(
        app.download(app.admin(), &product, "2.0.0").await.body,
        bytes
    );
}
