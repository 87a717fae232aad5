//! Resumable uploads (issue 14): tus 1.0.0 at /uploads, driven by the real tus client
//! (`tuspy` from PyPI, through tests/tus/upload.py and the venv scripts/tus-venv.sh
//! makes) and by raw requests over real sockets: chunked uploads checked against
//! `sha256sum`, uploads cut at random points and resumed, resumed after a restart, after a
//! SIGKILL and on a second replica, per-chunk and whole-file checksums, quota and
//! permission refusals before any byte, termination, expiry, drafts, pending versions and
//! the list of one's own unfinished uploads. Both backend sets.

mod common;

use common::*;
use rand::Rng;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::time::{Duration, Instant, UNIX_EPOCH};

const MIB: usize = 1 << 20;
/// The upload lease the restart tests run with (its minimum): a PATCH lock left by a
/// killed server lapses after it.
const LEASE_SECONDS: u64 = 5;
/// A resumable upload's lifetime in the expiry tests: long enough for its first PATCH of
/// 9 MiB on a busy machine (S3 takes up to 2.5 s alone).
const SHORT_TTL_SECONDS: u64 = 8;

/// `Upload-Expires` (an HTTP date) as unix seconds.
fn expires_of(r: &Reply) -> i64 {
    let raw = r
        .header("upload-expires")
        .unwrap_or_else(|| panic!("no Upload-Expires ({}): {:?}", r.status, r.headers));
    httpdate::parse_http_date(&raw)
        .unwrap_or_else(|e| panic!("Upload-Expires {raw:?} is not an HTTP date: {e}"))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn header_set(r: &Reply, name: &str) -> BTreeSet<String> {
    r.header(name)
        .unwrap_or_else(|| panic!("no {name} header: {:?}", r.headers))
        .split(',')
        .map(|s| s.trim().to_string())
        .collect()
}

/// `Upload-Metadata` decoded into key -> value.
fn decode_metadata(raw: &str) -> std::collections::BTreeMap<String, String> {
    use base64::Engine;
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (k, v) = item.split_once(' ').unwrap_or((item, ""));
            let v = base64::engine::general_purpose::STANDARD
                .decode(v)
                .unwrap_or_else(|e| panic!("metadata {k}: {v:?} is not base64: {e}"));
            (k.to_string(), String::from_utf8(v).expect("UTF-8 metadata"))
        })
        .collect()
}

/// The ids of listed uploads.
fn ids(list: &[Value]) -> BTreeSet<String> {
    list.iter()
        .map(|u| u["id"].as_str().expect("id").to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `PUT /product/upload/{product}/{version}/{name}`: a file into the version's draft.
async fn put_draft_file(
    app: &TestApp,
    token: &str,
    product: &str,
    version: &str,
    name: &str,
    bytes: &[u8],
) -> Reply {
    app.send(
        app.request(
            Method::PUT,
            &format!("/product/upload/{product}/{version}/{name}"),
            Some(token),
        )
        .body(bytes.to_vec()),
    )
    .await
}

/// `POST /uploads` of `file` into `product`/`version` (its draft with `draft`).
async fn create_upload(
    app: &TestApp,
    token: &str,
    product: &str,
    version: &str,
    file: &str,
    length: u64,
    draft: bool,
) -> Reply {
    let mut meta = vec![
        ("product", product),
        ("version", version),
        ("filename", file),
    ];
    if draft {
        meta.push(("draft", "true"));
    }
    app.tus_create(token, length, &meta).await
}

/// The listed versions of a product (as `token`), by name.
async fn listed_version(app: &TestApp, token: &str, product: &str, version: &str) -> Value {
    let r = app
        .get(&format!("/product/versions/{product}"), Some(token))
        .await;
    r.assert_status(200);
    r.json()["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["version"] == version)
        .unwrap_or_else(|| panic!("{version} is not listed: {}", r.text()))
        .clone()
}

fn file_names(entry: &Value) -> Vec<String> {
    let mut names: Vec<String> = entry["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

/// Asserts `version` of `product` downloads as bytes whose SHA-256 is `digest`.
async fn assert_download(app: &TestApp, token: &str, product: &str, version: &str, digest: &str) {
    let r = app.download(token, product, version).await;
    r.assert_status(200);
    assert_eq!(
        sha256_hex(&r.body),
        digest,
        "{product}/{version}: the downloaded bytes ({} of them) differ from the file",
        r.body.len()
    );
    assert_eq!(r.header("x-checksum-sha256").as_deref(), Some(digest));
}

/// The path of an absolute upload URL (`http://host:port/uploads/{id}` -> `/uploads/{id}`).
fn path_of(url: &str) -> String {
    let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("{url:?}: {e}"));
    parsed.path().to_string()
}

/// Waits until the upload takes a PATCH again (an empty one at its offset answers 204),
/// e.g. once the server noticed a cut connection; returns the offset. Only 423
/// `upload_locked` (or 409 `offset_mismatch` while a cut PATCH still stores bytes) is
/// accepted meanwhile.
async fn wait_unlocked(app: &TestApp, token: &str, location: &str, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let offset = app.tus_offset(token, location).await;
        let r = app.tus_patch(token, location, offset, b"", None).await;
        match r.status.as_u16() {
            204 => {
                assert_eq!(
                    r.header("upload-offset"),
                    Some(offset.to_string()),
                    "an empty PATCH changes no offset"
                );
                return offset;
            }
            423 => r.assert_error(423, "upload_locked"),
            409 => r.assert_error(409, "offset_mismatch"),
            _ => panic!("empty PATCH at {offset}: {} {}", r.status, r.text()),
        }
        assert!(
            Instant::now() < deadline,
            "the upload stayed locked for {within:?} after its PATCH went away"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn options_announces_tus_1_0_0_and_creation_needs_tus_resumable() {
    let max = 3u64 << 30;
    let app = TestApp::builder().max_upload_bytes(max).start().await;
    for token in [None, Some("depot_not-a-token")] {
        let r = app
            .send(app.request(Method::OPTIONS, "/uploads", token))
            .await;
        r.assert_status(204);
        assert_eq!(r.header("tus-resumable").as_deref(), Some("1.0.0"));
        assert!(
            header_set(&r, "tus-version").contains("1.0.0"),
            "{:?}",
            r.headers
        );
        assert_eq!(
            header_set(&r, "tus-extension"),
            set(&[
                "creation",
                "creation-with-upload",
                "termination",
                "expiration",
                "checksum"
            ])
        );
        assert_eq!(r.header("tus-max-size"), Some(max.to_string()));
        assert_eq!(
            header_set(&r, "tus-checksum-algorithm"),
            set(&["sha1", "sha256"])
        );
    }

    let product = app.product().await;
    let meta = tus_metadata(&[
        ("product", &product),
        ("version", "1.0.0"),
        ("filename", "a.bin"),
    ]);
    for resumable in [None, Some("0.2.2"), Some("2.0.0"), Some("")] {
        let mut req = app
            .request(Method::POST, "/uploads", Some(app.admin()))
            .header("Upload-Length", "10")
            .header("Upload-Metadata", &meta);
        if let Some(v) = resumable {
            req = req.header("Tus-Resumable", v);
        }
        let r = app.send(req).await;
        r.assert_error(412, "unsupported_tus_version");
        assert!(
            header_set(&r, "tus-version").contains("1.0.0"),
            "a 412 names the versions the server speaks: {:?}",
            r.headers
        );
    }
    // Past Tus-Max-Size: refused at creation.
    app.tus_create(
        app.admin(),
        max + 1,
        &[
            ("product", &product),
            ("version", "1.0.0"),
            ("filename", "a.bin"),
        ],
    )
    .await
    .assert_error(413, "payload_too_large");
    // Nothing above made an upload.
    assert!(app.tus_list(app.admin(), "").await.is_empty());

    // A created upload: Location, Upload-Offset 0, then HEAD tells it all.
    let r = app
        .tus_create(
            app.admin(),
            10,
            &[
                ("product", &product),
                ("version", "1.0.0"),
                ("filename", "a.bin"),
            ],
        )
        .await;
    r.assert_status(201);
    assert_eq!(r.header("tus-resumable").as_deref(), Some("1.0.0"));
    assert_eq!(r.header("upload-offset").as_deref(), Some("0"));
    let location = r.header("location").expect("Location");
    let head = app.tus_head(app.admin(), &location).await;
    head.assert_status(200);
    assert_eq!(head.header("tus-resumable").as_deref(), Some("1.0.0"));
    assert_eq!(head.header("upload-offset").as_deref(), Some("0"));
    assert_eq!(head.header("upload-length").as_deref(), Some("10"));
    assert_eq!(head.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(expires_of(&head), expires_of(&r));
    // The metadata comes back (decoded: a server may add what it defaulted, draft false).
    let echoed = decode_metadata(&head.header("upload-metadata").expect("Upload-Metadata"));
    assert_eq!(echoed.get("product"), Some(&product));
    assert_eq!(echoed.get("version").map(String::as_str), Some("1.0.0"));
    assert_eq!(echoed.get("filename").map(String::as_str), Some("a.bin"));
    assert!(
        echoed.get("draft").is_none_or(|d| d == "false"),
        "{echoed:?}"
    );
    let patch = app
        .tus_patch(app.admin(), &location, 0, b"0123456789", None)
        .await;
    patch.assert_status(204);
    assert_eq!(patch.header("tus-resumable").as_deref(), Some("1.0.0"));
    assert_eq!(patch.header("upload-offset").as_deref(), Some("10"));
    assert_eq!(expires_of(&patch), expires_of(&r));
    assert_eq!(
        app.download(app.admin(), &product, "1.0.0").await.body,
        b"0123456789"
    );
}

#[tokio::test]
async fn upload_expires_follows_the_resumable_ttl() {
    for ttl in [None, Some(3600u64)] {
        let mut builder = TestApp::builder();
        if let Some(ttl) = ttl {
            builder = builder.env("DEPOT_RESUMABLE_TTL_SECONDS", ttl);
        }
        let app = builder.start().await;
        let product = app.product().await;
        let before = now_s();
        let r = app
            .tus_create(
                app.admin(),
                100,
                &[
                    ("product", &product),
                    ("version", "1.0.0"),
                    ("filename", "a.bin"),
                ],
            )
            .await;
        r.assert_status(201);
        let after = now_s();
        let expires = expires_of(&r);
        let ttl = ttl.unwrap_or(86_400) as i64;
        assert!(
            expires >= before + ttl - 1 && expires <= after + ttl + 1,
            "Upload-Expires {expires} is not creation + {ttl} s ({before}..{after})"
        );
        let location = r.header("location").unwrap();
        let listed = app.tus_list(app.admin(), "").await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert!(
            (rfc3339_secs(&listed[0]["expires_at"]) - expires).abs() <= 1,
            "expires_at of GET /uploads is Upload-Expires: {listed:?}"
        );
        // A PATCH does not move the expiry: the upload lives `ttl` from its creation.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let p = app
            .tus_patch(app.admin(), &location, 0, &[7; 50], None)
            .await;
        p.assert_status(204);
        assert_eq!(expires_of(&p), expires);
    }
}

#[tokio::test]
async fn tuspy_uploads_in_chunks_and_the_download_matches_sha256sum() {
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
    // 3 MiB in 1 MiB chunks with a declared checksum; 20 MiB in 6 MiB chunks (past the
    // S3 part size, so parts and a tail between PATCHes) without one, with a Bearer token.
    let cases = [
        ("1.0.0", 3 * MIB, MIB, 1u64, true, false),
        ("2.0.0", 20 * MIB, 6 * MIB, 2, false, true),
    ];
    let mut total = 0u64;
    for (version, len, chunk, seed, declare, bearer) in cases {
        let (file, digest) = payload_file(app.root(), &format!("{version}.bin"), seed, len);
        let mut upload = TusUpload::new(&app, &token, &file, chunk as u64).target(
            &product,
            version,
            "tool.tar.gz",
        );
        if declare {
            upload = upload.meta("checksum", &format!("sha256:{digest}"));
        }
        if bearer {
            upload = upload.bearer();
        }
        let run = upload.run().await;
        run.assert_ok();
        assert_eq!(run.offset(), len as u64);
        assert_eq!(
            run.report["patches"].as_u64(),
            Some(len.div_ceil(chunk) as u64),
            "{}",
            run.report
        );
        assert_download(&app, &token, &product, version, &digest).await;
        let listed = listed_version(&app, &token, &product, version).await;
        assert_eq!(listed["state"], "published", "{listed}");
        assert_eq!(file_names(&listed), ["tool.tar.gz"]);
        total += len as u64;

        // A committed upload still answers HEAD with offset == length, and a repeated
        // final PATCH (a client that missed the answer) gets 204 again.
        let location = path_of(&run.url());
        let head = app.tus_head(&token, &location).await;
        head.assert_status(200);
        assert_eq!(head.header("upload-offset"), Some(len.to_string()));
        assert_eq!(head.header("upload-length"), Some(len.to_string()));
        let again = app
            .tus_patch(&token, &location, len as u64, b"", None)
            .await;
        again.assert_status(204);
        assert_eq!(again.header("upload-offset"), Some(len.to_string()));
        // Not unfinished any more.
        assert!(app.tus_list(&token, "").await.is_empty());
    }
    assert_eq!(app.usage(&product).await["bytes"], total);
    // One blob per version, nothing left of the uploads' parts.
    app.wait_blob_count(2).await;
}

#[tokio::test]
async fn an_upload_cut_at_random_points_resumes_from_the_offset_the_server_reports() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::ALL).await;
    let len = 20 * MIB;
    let (file, digest) = payload_file(app.root(), "cut.bin", 3, len);
    let bytes = std::fs::read(&file).unwrap();
    let location = app
        .tus_create_ok(
            &token,
            len as u64,
            &[
                ("product", &product),
                ("version", "1.0.0"),
                ("filename", "cut.bin"),
                ("checksum", &format!("sha256:{digest}")),
            ],
        )
        .await;
    let mut rng = rand::rng();
    let mut offset = 0usize;
    let mut history = Vec::new();
    for round in 0..4 {
        let rest = len - offset;
        // The first cut passes an S3 part (8 MiB); the others fall anywhere.
        let sent = if round == 0 {
            rng.random_range(9 * MIB..12 * MIB)
        } else {
            rng.random_range(1..rest)
        };
        app.tus_cut_patch(
            &token,
            &location,
            offset as u64,
            rest as u64,
            &bytes[offset..offset + sent],
        )
        .await;
        let now = wait_unlocked(&app, &token, &location, Duration::from_secs(10)).await as usize;
        history.push((offset, sent, now));
        assert!(
            now >= offset && now <= offset + sent,
            "after a PATCH from {offset} cut after {sent} bytes the offset is {now} (rounds: {history:?})"
        );
        offset = now;
    }
    eprintln!("cut PATCHes (from, sent, offset after): {history:?}");
    // The real client picks up from the server's offset.
    let run = TusUpload::new(&app, &token, &file, 4 * MIB as u64)
        .resume(&app.url(&location))
        .run()
        .await;
    run.assert_ok();
    assert_eq!(
        run.report["start_offset"].as_u64(),
        Some(offset as u64),
        "tuspy resumed from HEAD's offset (rounds: {history:?})"
    );
    assert_download(&app, &token, &product, "1.0.0", &digest).await;
    app.wait_blob_count(1).await;
}

#[tokio::test]
async fn an_upload_resumes_after_a_restart_with_its_checksum_state() {
    let mut app = TestApp::builder()
        .env("DEPOT_UPLOAD_LEASE_SECONDS", LEASE_SECONDS)
        .start()
        .await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::ALL).await;
    let len = 12 * MIB;
    let (file, digest) = payload_file(app.root(), "r.bin", 4, len);
    // Two finished PATCHes of 4 MiB: durable on both stores.
    let run = TusUpload::new(&app, &token, &file, 4 * MIB as u64)
        .target(&product, "1.0.0", "r.bin")
        .meta("checksum", &format!("sha256:{digest}"))
        .stop_at(8 * MIB as u64)
        .run()
        .await;
    run.assert_ok();
    assert_eq!(run.offset(), 8 * MIB as u64);
    let location = path_of(&run.url());

    app.restart().await;

    let head = app.tus_head(&token, &location).await;
    head.assert_status(200);
    assert_eq!(head.header("upload-offset"), Some((8 * MIB).to_string()));
    assert_eq!(head.header("upload-length"), Some(len.to_string()));
    let listed = app.tus_list(&token, "").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["offset"], 8 * MIB);
    // The version stays reserved across the restart.
    app.upload(app.admin(), &product, "1.0.0", b"other")
        .await
        .assert_error(409, "version_pending");
    // The declared checksum is verified over all 12 MiB: the hash state of the first
    // 8 MiB survived the restart (a lost one would end in checksum_mismatch).
    let run = TusUpload::new(&app, &token, &file, 4 * MIB as u64)
        .resume(&app.url(&location))
        .run()
        .await;
    run.assert_ok();
    assert_eq!(run.report["start_offset"], 8 * MIB);
    assert_download(&app, &token, &product, "1.0.0", &digest).await;
}

#[tokio::test]
async fn an_upload_cut_by_a_sigkill_resumes_once_the_dead_patch_lock_lapses() {
    let mut app = TestApp::builder()
        .env("DEPOT_UPLOAD_LEASE_SECONDS", LEASE_SECONDS)
        .env("DEPOT_JANITOR_INTERVAL_SECONDS", 1)
        .start()
        .await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::ALL).await;
    let len = 20 * MIB;
    let (file, digest) = payload_file(app.root(), "k.bin", 5, len);
    let bytes = std::fs::read(&file).unwrap();
    let run = TusUpload::new(&app, &token, &file, 4 * MIB as u64)
        .target(&product, "1.0.0", "k.bin")
        .meta("checksum", &format!("sha256:{digest}"))
        .stop_at(4 * MIB as u64)
        .run()
        .await;
    run.assert_ok();
    let location = path_of(&run.url());

    // A PATCH in flight (10 of its 16 MiB sent, past an S3 part) when the server dies.
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nX-Api-Token: {token}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: {}\r\nContent-Length: {}",
        4 * MIB,
        len - 4 * MIB
    );
    let mut inflight = common::streaming::StreamingRequest::open(&app, &head).await;
    assert!(inflight.send(&bytes[4 * MIB..14 * MIB]).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.kill().await;
    drop(inflight);
    app.start_again().await;

    let offset = app.tus_offset(&token, &location).await as usize;
    assert!(
        (4 * MIB..=14 * MIB).contains(&offset),
        "after a SIGKILL mid-PATCH the offset is {offset}"
    );
    // The dead process's lock holds at most until its lease lapses.
    let started = Instant::now();
    let offset = wait_unlocked(
        &app,
        &token,
        &location,
        Duration::from_secs(LEASE_SECONDS + 15),
    )
    .await;
    eprintln!(
        "the killed PATCH's lock was gone after {:?}",
        started.elapsed()
    );
    // The upload itself (and its pending version) outlives the lapsed lease.
    app.upload(app.admin(), &product, "1.0.0", b"other")
        .await
        .assert_error(409, "version_pending");
    let run = TusUpload::new(&app, &token, &file, 4 * MIB as u64)
        .resume(&app.url(&location))
        .run()
        .await;
    run.assert_ok();
    assert_eq!(run.report["start_offset"].as_u64(), Some(offset));
    assert_download(&app, &token, &product, "1.0.0", &digest).await;
    app.wait_blob_count(1).await;
}

#[tokio::test]
async fn an_upload_begun_on_one_replica_is_locked_and_resumed_on_another() {
    if Backend::from_env() != Backend::Production {
        // Two replicas share MongoDB, Redis and S3; the embedded backend is one process's
        // data directory, so this runs with DEPOT_TEST_BACKEND=production only.
        eprintln!("embedded backend: a second replica needs the production backends");
        return;
    }
    let app = TestApp::builder()
        .env("DEPOT_UPLOAD_LEASE_SECONDS", LEASE_SECONDS)
        .start()
        .await;
    let replica = TestApp::builder()
        .share_backends_with(&app)
        .env("DEPOT_UPLOAD_LEASE_SECONDS", LEASE_SECONDS)
        .start()
        .await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::ALL).await;
    let len = 20 * MIB;
    let (file, digest) = payload_file(app.root(), "two.bin", 6, len);
    let bytes = std::fs::read(&file).unwrap();
    let run = TusUpload::new(&app, &token, &file, 4 * MIB as u64)
        .target(&product, "1.0.0", "two.bin")
        .meta("checksum", &format!("sha256:{digest}"))
        .stop_at(4 * MIB as u64)
        .run()
        .await;
    run.assert_ok();
    let location = path_of(&run.url());
    assert_eq!(replica.tus_offset(&token, &location).await, 4 * MIB as u64);
    assert_eq!(replica.tus_list(&token, "").await.len(), 1);

    // A PATCH running on the first replica locks the upload on the second one too.
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nX-Api-Token: {token}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: {}\r\nContent-Length: {}",
        4 * MIB,
        len - 4 * MIB
    );
    let mut inflight = common::streaming::StreamingRequest::open(&app, &head).await;
    assert!(inflight.send(&bytes[4 * MIB..6 * MIB]).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    replica
        .tus_patch(
            &token,
            &location,
            4 * MIB as u64,
            &bytes[4 * MIB..5 * MIB],
            None,
        )
        .await
        .assert_error(423, "upload_locked");
    // Cut it past a part: what it stored is seen from the other replica.
    assert!(inflight.send(&bytes[6 * MIB..13 * MIB]).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(inflight);
    let offset = wait_unlocked(&replica, &token, &location, Duration::from_secs(10)).await;
    assert!(
        (4 * MIB as u64..=13 * MIB as u64).contains(&offset),
        "offset {offset}"
    );
    // tuspy resumes on the second replica, its hash state taken from the shared store.
    let run = TusUpload::new(&replica, &token, &file, 4 * MIB as u64)
        .resume(&replica.url(&location))
        .run()
        .await;
    run.assert_ok();
    assert_eq!(run.report["start_offset"].as_u64(), Some(offset));
    assert_download(&app, &token, &product, "1.0.0", &digest).await;
    assert_download(&replica, &token, &product, "1.0.0", &digest).await;
}

#[tokio::test]
async fn a_chunk_with_a_wrong_checksum_is_460_and_a_right_sha1_or_sha256_is_taken() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::ALL).await;
    let len = 3 * MIB;
    let (file, digest) = payload_file(app.root(), "c.bin", 7, len);
    let bytes = std::fs::read(&file).unwrap();
    let location = app
        .tus_create_ok(
            &token,
            len as u64,
            &[
                ("product", &product),
                ("version", "1.0.0"),
                ("filename", "c.bin"),
                ("checksum", &format!("sha256:{digest}")),
            ],
        )
        .await;
    let chunk = &bytes[..MIB];
    let wrong = format!("sha256 {}", base64_of(&Sha256::digest(b"another chunk")));
    let r = app
        .tus_patch(&token, &location, 0, chunk, Some(&wrong))
        .await;
    r.assert_error(460, "chunk_checksum_mismatch");
    assert_eq!(app.tus_offset(&token, &location).await, 0, "nothing kept");
    let md5 = format!("md5 {}", base64_of(&[0u8; 16]));
    app.tus_patch(&token, &location, 0, chunk, Some(&md5))
        .await
        .assert_error(400, "unsupported_checksum_algorithm");
    assert_eq!(app.tus_offset(&token, &location).await, 0);
    let right = format!("sha256 {}", base64_of(&Sha256::digest(chunk)));
    let r = app
        .tus_patch(&token, &location, 0, chunk, Some(&right))
        .await;
    r.assert_status(204);
    assert_eq!(r.header("upload-offset"), Some(MIB.to_string()));

    // tuspy sending a wrong SHA-256 per chunk stops on the first one, nothing kept.
    let run = TusUpload::new(&app, &token, &file, MIB as u64)
        .resume(&app.url(&location))
        .checksum("sha256-wrong")
        .run()
        .await;
    run.assert_refused(460, "chunk_checksum_mismatch");
    assert_eq!(app.tus_offset(&token, &location).await, MIB as u64);
    // tuspy's default Upload-Checksum algorithm, sha1, on every chunk.
    let run = TusUpload::new(&app, &token, &file, MIB as u64)
        .resume(&app.url(&location))
        .checksum("sha1")
        .run()
        .await;
    run.assert_ok();
    assert_eq!(run.report["start_offset"], MIB);
    assert_eq!(run.report["patches"], 2);
    assert_download(&app, &token, &product, "1.0.0", &digest).await;

    // And a whole upload with sha256 per chunk.
    let (file, digest) = payload_file(app.root(), "d.bin", 8, 2 * MIB + 17);
    TusUpload::new(&app, &token, &file, MIB as u64)
        .target(&product, "2.0.0", "d.bin")
        .checksum("sha256")
        .run()
        .await
        .assert_ok();
    assert_download(&app, &token, &product, "2.0.0", &digest).await;
}

#[tokio::test]
async fn a_whole_file_checksum_mismatch_keeps_nothing() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::ALL).await;
    let blobs = app.blob_count().unwrap();
    let len = 10 * MIB;
    let (file, digest) = payload_file(app.root(), "w.bin", 9, len);
    let declared = sha256_hex(b"some other file");
    let run = TusUpload::new(&app, &token, &file, 4 * MIB as u64)
        .target(&product, "1.0.0", "w.bin")
        .meta("checksum", &format!("sha256:{declared}"))
        .run()
        .await;
    // The last PATCH completes the file, which fails verification.
    run.assert_refused(400, "checksum_mismatch");
    assert_eq!(run.report["patches"], 2, "{}", run.report);
    let location = path_of(&run.url());
    app.tus_head(&token, &location).await.assert_status(404);
    app.tus_patch(&token, &location, len as u64, b"", None)
        .await
        .assert_error(404, "upload_not_found");
    app.download(&token, &product, "1.0.0")
        .await
        .assert_error(404, "version_not_found");
    assert!(app.versions(&product).await.is_empty());
    let u = app.usage(&product).await;
    assert_eq!((&u["bytes"], &u["versions"]), (&json!(0), &json!(0)), "{u}");
    assert!(app.tus_list(&token, "").await.is_empty());
    app.wait_blob_count(blobs).await;
    // The version is free for a right upload.
    TusUpload::new(&app, &token, &file, 4 * MIB as u64)
        .target(&product, "1.0.0", "w.bin")
        .meta("checksum", &format!("sha256:{digest}"))
        .run()
        .await
        .assert_ok();
    assert_download(&app, &token, &product, "1.0.0", &digest).await;
}

#[tokio::test]
async fn quotas_refuse_at_creation_and_an_open_upload_holds_its_reservation() {
    let app = TestApp::builder()
        .env("DEPOT_UPLOAD_LEASE_SECONDS", LEASE_SECONDS)
        .env("DEPOT_JANITOR_INTERVAL_SECONDS", 1)
        .start()
        .await;
    let product = app.product().await;
    let token = app.token_with(&product, Perms::ALL).await;
    app.set_quota(&product, json!({"max_bytes": 1_000_000}))
        .await;
    app.upload_ok(app.admin(), &product, "1.0.0", &payload(1, 600_000))
        .await;
    let blobs = app.blob_count().unwrap();
    let create = |length: u64, version: &'static str| {
        create_upload(&app, &token, &product, version, "q.bin", length, false)
    };
    let r = create(600_000, "2.0.0").await;
    assert_quota_refusal(&r, "max_bytes", 1_200_000, 1_000_000);
    assert!(r.header("location").is_none());
    // tuspy is refused at creation, before it sends a byte.
    let (file, _) = payload_file(app.root(), "q.bin", 2, 600_000);
    let run = TusUpload::new(&app, &token, &file, MIB as u64)
        .target(&product, "2.0.0", "q.bin")
        .run()
        .await;
    run.assert_refused(413, "quota_exceeded");
    assert_eq!(run.report["stage"], "create");
    assert!(app.tus_list(app.admin(), "").await.is_empty());
    app.assert_blob_count(blobs);

    // An open upload reserves its whole length for as long as it lives, past any lease.
    let r = create(300_000, "2.0.0").await;
    r.assert_status(201);
    let open = r.header("location").unwrap();
    app.tus_patch(&token, &open, 0, &payload(3, 100_000), None)
        .await
        .assert_status(204);
    assert_quota_refusal(
        &create(200_000, "3.0.0").await,
        "max_bytes",
        1_100_000,
        1_000_000,
    );
    tokio::time::sleep(Duration::from_secs(2 * LEASE_SECONDS + 2)).await;
    assert_quota_refusal(
        &create(200_000, "3.0.0").await,
        "max_bytes",
        1_100_000,
        1_000_000,
    );
    app.upload(app.admin(), &product, "3.0.0", &payload(4, 200_000))
        .await
        .assert_error(413, "quota_exceeded");
    // Terminated, its reservation goes.
    app.tus_delete(&token, &open).await.assert_status(204);
    let r = create(200_000, "3.0.0").await;
    r.assert_status(201);
    assert_eq!(app.usage(&product).await["bytes"], 800_000);

    // max_versions counts the version an upload would add.
    let other = app.product().await;
    app.set_quota(&other, json!({"max_versions": 1})).await;
    app.upload_ok(app.admin(), &other, "1.0.0", b"one").await;
    let r = app
        .tus_create(
            app.admin(),
            10,
            &[
                ("product", &other),
                ("version", "2.0.0"),
                ("filename", "v.bin"),
            ],
        )
        .await;
    assert_quota_refusal(&r, "max_versions", 2, 1);
}

#[tokio::test]
async fn permissions_are_checked_at_creation_and_an_upload_is_its_creators_alone() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let owner = app
        .token_with(
            &product,
            Perms {
                upload: true,
                download: true,
                ..Perms::default()
            },
        )
        .await;
    let reader = app.token_with(&product, Perms::DOWNLOAD).await;
    let maintainer = app.token_with(&product, Perms::MAINTAINER).await;
    let stranger = app.register(false).await;
    let colleague = app.token_with(&product, Perms::UPLOAD).await;
    let meta = [
        ("product", product.as_str()),
        ("version", "1.0.0"),
        ("filename", "p.bin"),
    ];
    for t in [&reader, &maintainer] {
        app.tus_create(t, 10, &meta)
            .await
            .assert_error(403, "forbidden");
    }
    app.tus_create(&stranger, 10, &meta)
        .await
        .assert_error(404, "product_not_found");
    let r = app
        .send(
            app.request(Method::POST, "/uploads", None)
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Length", "10")
                .header("Upload-Metadata", tus_metadata(&meta)),
        )
        .await;
    r.assert_error(401, "missing_token");
    let (file, digest) = payload_file(app.root(), "p.bin", 10, 2 * MIB);
    TusUpload::new(&app, &reader, &file, MIB as u64)
        .target(&product, "1.0.0", "p.bin")
        .run()
        .await
        .assert_refused(403, "forbidden");
    assert!(app.tus_list(app.admin(), "").await.is_empty());

    let run = TusUpload::new(&app, &owner, &file, MIB as u64)
        .target(&product, "1.0.0", "p.bin")
        .stop_at(MIB as u64)
        .run()
        .await;
    run.assert_ok();
    let location = path_of(&run.url());
    // Another token, even one that may upload to the product, does not see it.
    for t in [&colleague, &reader, &stranger] {
        app.tus_head(t, &location).await.assert_status(404);
        app.tus_patch(t, &location, MIB as u64, b"x", None)
            .await
            .assert_error(404, "upload_not_found");
        app.tus_delete(t, &location)
            .await
            .assert_error(404, "upload_not_found");
        assert!(app.tus_list(t, "").await.is_empty());
    }
    // tuspy resuming it as another token fails at its HEAD (a 404 without a body).
    let run = TusUpload::new(&app, &colleague, &file, MIB as u64)
        .resume(&app.url(&location))
        .run()
        .await;
    assert!(!run.ok, "{}", run.report);
    assert_eq!(
        (run.status(), run.report["stage"].as_str()),
        (Some(404), Some("resume")),
        "{}",
        run.report
    );
    // An admin sees every upload.
    assert_eq!(app.tus_offset(app.admin(), &location).await, MIB as u64);
    assert_eq!(app.tus_list(app.admin(), "").await.len(), 1);
    assert_eq!(app.tus_offset(&owner, &location).await, MIB as u64);
    // Unknown ids are 404 alike.
    let unknown = format!("/uploads/{}", &sha256_hex(b"unknown")[..32]);
    app.tus_head(&owner, &unknown).await.assert_status(404);
    app.tus_patch(&owner, &unknown, 0, b"x", None)
        .await
        .assert_error(404, "upload_not_found");
    app.tus_delete(&owner, &unknown)
        .await
        .assert_error(404, "upload_not_found");
    // Without a token: 401 before anything else.
    let r = app
        .send(
            app.request(Method::PATCH, &location, None)
                .header("Tus-Resumable", "1.0.0")
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Offset", MIB.to_string())
                .body(b"x".to_vec()),
        )
        .await;
    r.assert_error(401, "missing_token");

    TusUpload::new(&app, &owner, &file, MIB as u64)
        .resume(&app.url(&location))
        .run()
        .await
        .assert_ok();
    assert_download(&app, &owner, &product, "1.0.0", &digest).await;
}

#[tokio::test]
async fn a_terminated_upload_leaves_nothing_and_frees_its_version() {
    let app = TestApp::start().await;
    let product = app.product().await;
    app.set_quota(&product, json!({"max_bytes": 100 * MIB}))
        .await;
    let token = app.token_with(&product, Perms::ALL).await;
    let blobs = app.blob_count().unwrap();
    let len = 12 * MIB;
    let (file, digest) = payload_file(app.root(), "t.bin", 11, len);
    let bytes = std::fs::read(&file).unwrap();
    let location = app
        .tus_create_ok(
            &token,
            len as u64,
            &[
                ("product", &product),
                ("version", "1.0.0"),
                ("filename", "t.bin"),
            ],
        )
        .await;
    // 9 MiB: a whole S3 part and a tail.
    let r = app
        .tus_patch(&token, &location, 0, &bytes[..9 * MIB], None)
        .await;
    r.assert_status(204);
    assert_eq!(r.header("upload-offset"), Some((9 * MIB).to_string()));
    let r = app.tus_delete(&token, &location).await;
    r.assert_status(204);
    assert_eq!(r.header("tus-resumable").as_deref(), Some("1.0.0"));
    app.tus_head(&token, &location).await.assert_status(404);
    app.tus_patch(&token, &location, 9 * MIB as u64, &bytes[9 * MIB..], None)
        .await
        .assert_error(404, "upload_not_found");
    app.tus_delete(&token, &location)
        .await
        .assert_error(404, "upload_not_found");
    assert!(app.tus_list(&token, "").await.is_empty());
    // Parts, tail and reservation gone.
    app.wait_blob_count(blobs).await;
    if app.backend == Backend::Production {
        let (keys, multipart) = app.s3_listing().await;
        assert!(keys.is_empty() && multipart == 0, "{keys:?}, {multipart}");
    }
    let u = app.usage(&product).await;
    assert_eq!((&u["bytes"], &u["versions"]), (&json!(0), &json!(0)), "{u}");
    // The version is free again.
    TusUpload::new(&app, &token, &file, 4 * MIB as u64)
        .target(&product, "1.0.0", "t.bin")
        .run()
        .await
        .assert_ok();
    assert_download(&app, &token, &product, "1.0.0", &digest).await;
}

#[tokio::test]
async fn an_expired_upload_is_refused_and_the_janitor_removes_what_it_stored() {
    // Expired, before any sweep (the first one runs 15 s after the start): 410.
    let idle = TestApp::builder()
        .env("DEPOT_RESUMABLE_TTL_SECONDS", 3)
        .env("DEPOT_JANITOR_INTERVAL_SECONDS", 3600)
        .start()
        .await;
    let product = idle.product().await;
    idle.set_quota(&product, json!({"max_bytes": 100 * MIB}))
        .await;
    let r = idle
        .tus_create(
            idle.admin(),
            MIB as u64,
            &[
                ("product", &product),
                ("version", "1.0.0"),
                ("filename", "e.bin"),
            ],
        )
        .await;
    r.assert_status(201);
    let location = r.header("location").unwrap();
    idle.tus_patch(idle.admin(), &location, 0, &payload(12, 1000), None)
        .await
        .assert_status(204);
    let expires = expires_of(&r);
    while now_s() <= expires {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    idle.tus_head(idle.admin(), &location)
        .await
        .assert_status(410);
    idle.tus_patch(idle.admin(), &location, 1000, b"x", None)
        .await
        .assert_error(410, "upload_expired");
    idle.tus_delete(idle.admin(), &location)
        .await
        .assert_error(410, "upload_expired");
    assert!(idle.tus_list(idle.admin(), "").await.is_empty());
    // Expired, it holds neither its quota nor its version, swept or not.
    assert_eq!(idle.usage(&product).await["bytes"], 0);
    idle.upload_ok(idle.admin(), &product, "1.0.0", b"the version is free")
        .await;

    // Swept every second: parts gone, version free, reservation released.
    let app = TestApp::builder()
        .env("DEPOT_RESUMABLE_TTL_SECONDS", SHORT_TTL_SECONDS)
        .env("DEPOT_JANITOR_INTERVAL_SECONDS", 1)
        .env("DEPOT_JANITOR_GRACE_SECONDS", 1)
        .start()
        .await;
    let product = app.product().await;
    app.set_quota(&product, json!({"max_bytes": 100 * MIB}))
        .await;
    let blobs = app.blob_count().unwrap();
    let body = payload(13, 9 * MIB);
    let r = app
        .tus_create(
            app.admin(),
            12 * MIB as u64,
            &[
                ("product", &product),
                ("version", "1.0.0"),
                ("filename", "e.bin"),
            ],
        )
        .await;
    r.assert_status(201);
    let location = r.header("location").unwrap();
    app.tus_patch(app.admin(), &location, 0, &body, None)
        .await
        .assert_status(204);
    let expires = expires_of(&r);
    while now_s() <= expires {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.wait_blob_count(blobs).await;
    if app.backend == Backend::Production {
        eventually(
            Duration::from_secs(15),
            "no multipart upload left",
            || async {
                let (keys, multipart) = app.s3_listing().await;
                keys.is_empty() && multipart == 0
            },
        )
        .await;
    }
    let r = app
        .tus_patch(app.admin(), &location, 9 * MIB as u64, b"x", None)
        .await;
    match r.status.as_u16() {
        410 => r.assert_error(410, "upload_expired"),
        _ => r.assert_error(404, "upload_not_found"),
    }
    assert!(app.tus_list(app.admin(), "").await.is_empty());
    let u = app.usage(&product).await;
    assert_eq!((&u["bytes"], &u["versions"]), (&json!(0), &json!(0)), "{u}");
    app.upload_ok(app.admin(), &product, "1.0.0", b"the version is free")
        .await;
}

#[tokio::test]
async fn draft_true_adds_the_file_to_the_versions_draft() {
    let app = TestApp::start().await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    put_draft_file(&app, &admin, &product, "1.0.0", "a.bin", b"first asset")
        .await
        .assert_status(201);
    let (file, digest) = payload_file(app.root(), "b.bin", 13, 3 * MIB);
    TusUpload::new(&app, &admin, &file, MIB as u64)
        .target(&product, "1.0.0", "b.bin")
        .meta("draft", "true")
        .meta("checksum", &format!("sha256:{digest}"))
        .run()
        .await
        .assert_ok();
    let listed = listed_version(&app, &admin, &product, "1.0.0").await;
    assert_eq!(listed["state"], "draft", "{listed}");
    assert_eq!(file_names(&listed), ["a.bin", "b.bin"]);
    let r = app
        .get(
            &format!("/product/download/{product}/1.0.0/b.bin"),
            Some(&admin),
        )
        .await;
    r.assert_status(200);
    assert_eq!(sha256_hex(&r.body), digest);

    // Checked at creation: a file the draft has, a published version.
    let create = |version: &'static str, file: &'static str| {
        create_upload(&app, &admin, &product, version, file, 5, true)
    };
    create("1.0.0", "a.bin")
        .await
        .assert_error(409, "file_exists");
    app.upload_ok(&admin, &product, "0.9.0", b"published").await;
    create("0.9.0", "c.bin")
        .await
        .assert_error(409, "version_exists");

    // Two draft uploads of one version are open at once (parallel jobs).
    let c = create("1.0.0", "c.bin").await;
    c.assert_status(201);
    let d = create("1.0.0", "d.bin").await;
    d.assert_status(201);
    for (r, body) in [(&c, b"ccccc"), (&d, b"ddddd")] {
        app.tus_patch(&admin, &r.header("location").unwrap(), 0, body, None)
            .await
            .assert_status(204);
    }
    let listed = listed_version(&app, &admin, &product, "1.0.0").await;
    assert_eq!(file_names(&listed), ["a.bin", "b.bin", "c.bin", "d.bin"]);

    // A draft upload of a new version makes its draft.
    let r = create("2.0.0", "e.bin").await;
    r.assert_status(201);
    app.tus_patch(&admin, &r.header("location").unwrap(), 0, b"eeeee", None)
        .await
        .assert_status(204);
    let listed = listed_version(&app, &admin, &product, "2.0.0").await;
    assert_eq!(listed["state"], "draft");
    assert_eq!(file_names(&listed), ["e.bin"]);

    let r = app
        .send(app.request(
            Method::POST,
            &format!("/product/publish/{product}/1.0.0"),
            Some(&admin),
        ))
        .await;
    r.assert_status(200);
    assert_eq!(r.json()["state"], "published");
    assert_eq!(r.json()["files"].as_array().map(Vec::len), Some(4));
}

#[tokio::test]
async fn a_version_is_pending_while_its_upload_is_open_even_past_the_lease() {
    let app = TestApp::builder()
        .env("DEPOT_UPLOAD_LEASE_SECONDS", LEASE_SECONDS)
        .env("DEPOT_JANITOR_INTERVAL_SECONDS", 1)
        .env("DEPOT_JANITOR_GRACE_SECONDS", 1)
        .start()
        .await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    let bytes = payload(14, 2 * MIB);
    let meta = [
        ("product", product.as_str()),
        ("version", "1.0.0"),
        ("filename", "pending.bin"),
    ];
    let location = app.tus_create_ok(&admin, bytes.len() as u64, &meta).await;
    app.tus_patch(&admin, &location, 0, &bytes[..MIB], None)
        .await
        .assert_status(204);
    let assert_pending = || async {
        app.upload(&admin, &product, "1.0.0", b"other")
            .await
            .assert_error(409, "version_pending");
        app.tus_create(&admin, 10, &meta)
            .await
            .assert_error(409, "version_pending");
        app.upload_url(
            &admin,
            &json!({"product": product, "version": "1.0.0", "file": "x.bin", "size": 5,
                    "checksum": format!("sha256:{}", sha256_hex(b"other")), "draft": false}),
        )
        .await
        .assert_error(409, "version_pending");
    };
    assert_pending().await;
    // Leases lapse and the janitor sweeps: the open upload keeps its version.
    tokio::time::sleep(Duration::from_secs(2 * LEASE_SECONDS + 2)).await;
    assert_pending().await;
    assert_eq!(app.tus_offset(&admin, &location).await, MIB as u64);
    app.tus_patch(&admin, &location, MIB as u64, &bytes[MIB..], None)
        .await
        .assert_status(204);
    assert_download(&app, &admin, &product, "1.0.0", &sha256_hex(&bytes)).await;
    app.upload(&admin, &product, "1.0.0", b"other")
        .await
        .assert_error(409, "version_exists");
    app.tus_create(&admin, 10, &meta)
        .await
        .assert_error(409, "version_exists");
}

#[tokio::test]
async fn get_uploads_lists_ones_own_unfinished_uploads() {
    let app = TestApp::start().await;
    let p1 = app.product().await;
    let p2 = app.product().await;
    let alice = app.token_with(&p1, Perms::UPLOAD).await;
    app.grant(&p2, &alice, Perms::UPLOAD).await;
    let bob = app.token_with(&p1, Perms::UPLOAD).await;
    let idle = app.token_with(&p1, Perms::DOWNLOAD).await;
    let bytes = payload(15, 2 * MIB);
    let digest = sha256_hex(&bytes);
    let before = now_s();
    let a1 = app
        .tus_create(
            &alice,
            bytes.len() as u64,
            &[
                ("product", &p1),
                ("version", "1.0.0"),
                ("filename", "x.bin"),
                ("checksum", &format!("sha256:{digest}")),
            ],
        )
        .await;
    a1.assert_status(201);
    let a1_location = a1.header("location").unwrap();
    app.tus_patch(&alice, &a1_location, 0, &bytes[..MIB], None)
        .await
        .assert_status(204);
    let a2_location = app
        .tus_create_ok(
            &alice,
            10,
            &[
                ("product", &p2),
                ("version", "2.0.0"),
                ("filename", "y.bin"),
                ("draft", "true"),
            ],
        )
        .await;
    let b1_location = app
        .tus_create_ok(
            &bob,
            10,
            &[
                ("product", &p1),
                ("version", "3.0.0"),
                ("filename", "z.bin"),
            ],
        )
        .await;

    let mine = app.tus_list(&alice, "").await;
    assert_eq!(
        ids(&mine),
        [tus_id(&a1_location), tus_id(&a2_location)]
            .into_iter()
            .collect()
    );
    let one = mine
        .iter()
        .find(|u| u["id"] == tus_id(&a1_location))
        .unwrap();
    assert_eq!(one["location"], a1_location.as_str(), "{one}");
    assert_eq!(one["product"], p1.as_str());
    assert_eq!(one["version"], "1.0.0");
    assert_eq!(one["filename"], "x.bin");
    assert_eq!(one["length"], bytes.len());
    assert_eq!(one["offset"], MIB);
    assert_eq!(one["draft"], false);
    assert_eq!(one["checksum"], format!("sha256:{digest}"));
    let created = rfc3339_secs(&one["created_at"]);
    assert!(created >= before - 1 && created <= now_s() + 1, "{one}");
    assert!(
        (rfc3339_secs(&one["expires_at"]) - expires_of(&a1)).abs() <= 1,
        "{one}"
    );
    let two = mine
        .iter()
        .find(|u| u["id"] == tus_id(&a2_location))
        .unwrap();
    assert_eq!(two["draft"], true, "{two}");
    assert_eq!(two["checksum"], Value::Null, "{two}");
    assert_eq!(two["offset"], 0, "{two}");

    assert_eq!(
        ids(&app.tus_list(&bob, "").await),
        [tus_id(&b1_location)].into_iter().collect()
    );
    assert!(app.tus_list(&idle, "").await.is_empty());
    assert_eq!(app.tus_list(app.admin(), "").await.len(), 3);
    assert_eq!(
        ids(&app.tus_list(app.admin(), &format!("?product={p1}")).await),
        [tus_id(&a1_location), tus_id(&b1_location)]
            .into_iter()
            .collect()
    );
    assert_eq!(
        ids(&app.tus_list(&alice, &format!("?product={p1}")).await),
        [tus_id(&a1_location)].into_iter().collect()
    );
    assert_eq!(
        ids(&app
            .tus_list(&alice, &format!("?product={p1}&version=1.0.0"))
            .await),
        [tus_id(&a1_location)].into_iter().collect()
    );
    assert!(
        app.tus_list(&alice, &format!("?product={p1}&version=9.9.9"))
            .await
            .is_empty()
    );

    // Finished and terminated uploads are no longer listed.
    app.tus_patch(&alice, &a1_location, MIB as u64, &bytes[MIB..], None)
        .await
        .assert_status(204);
    assert_eq!(
        ids(&app.tus_list(&alice, "").await),
        [tus_id(&a2_location)].into_iter().collect()
    );
    app.tus_delete(&alice, &a2_location)
        .await
        .assert_status(204);
    assert!(app.tus_list(&alice, "").await.is_empty());
    // Without a token: 401.
    app.get("/uploads", None)
        .await
        .assert_error(401, "missing_token");
}

#[tokio::test]
async fn cors_lets_a_configured_origin_use_tus_and_exposes_its_headers() {
    let origin = "https://ci.example.com";
    let app = TestApp::builder()
        .env("DEPOT_CORS_ORIGINS", origin)
        .start()
        .await;
    let preflight = |o: &'static str| {
        app.send(
            app.request(Method::OPTIONS, "/uploads", None)
                .header("Origin", o)
                .header("Access-Control-Request-Method", "POST")
                .header(
                    "Access-Control-Request-Headers",
                    "tus-resumable,upload-length,upload-metadata,x-api-token",
                ),
        )
    };
    let r = preflight(origin).await;
    assert!(
        r.status.is_success(),
        "preflight: {} {}",
        r.status,
        r.text()
    );
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(origin)
    );
    let allowed = r
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for h in ["tus-resumable", "upload-length", "upload-metadata"] {
        assert!(
            allowed.contains(h) || allowed == "*",
            "{h} not allowed: {allowed}"
        );
    }
    let other = preflight("https://evil.example.com").await;
    assert!(
        other.header("access-control-allow-origin").is_none(),
        "another origin gets no CORS grant: {:?}",
        other.headers
    );

    let product = app.product().await;
    let r = app
        .send(
            app.request(Method::POST, "/uploads", Some(app.admin()))
                .header("Origin", origin)
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Length", "3")
                .header(
                    "Upload-Metadata",
                    tus_metadata(&[
                        ("product", &product),
                        ("version", "1.0.0"),
                        ("filename", "a.bin"),
                    ]),
                ),
        )
        .await;
    r.assert_status(201);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(origin)
    );
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for h in [
        "location",
        "upload-offset",
        "upload-length",
        "upload-expires",
        "tus-resumable",
    ] {
        assert!(exposed.contains(h), "{h} not exposed: {exposed:?}");
    }

    // Without DEPOT_CORS_ORIGINS: no CORS headers at all.
    let plain = TestApp::start().await;
    let r = plain
        .send(
            plain
                .request(Method::OPTIONS, "/uploads", None)
                .header("Origin", origin)
                .header("Access-Control-Request-Method", "POST"),
        )
        .await;
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "{:?}",
        r.headers
    );
}

#[tokio::test]
async fn a_patch_running_when_its_upload_expires_is_answered_410_and_leaves_nothing() {
    let app = TestApp::builder()
        .env("DEPOT_RESUMABLE_TTL_SECONDS", SHORT_TTL_SECONDS)
        .env("DEPOT_JANITOR_INTERVAL_SECONDS", 1)
        .env("DEPOT_JANITOR_GRACE_SECONDS", 1)
        .start()
        .await;
    let product = app.product().await;
    app.set_quota(&product, json!({"max_bytes": 100 * MIB}))
        .await;
    let blobs = app.blob_count().unwrap();
    let len = 20 * MIB;
    let bytes = payload(16, len);
    let r = app
        .tus_create(
            app.admin(),
            len as u64,
            &[
                ("product", &product),
                ("version", "1.0.0"),
                ("filename", "x.bin"),
            ],
        )
        .await;
    r.assert_status(201);
    let location = r.header("location").unwrap();
    let expires = expires_of(&r);
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nX-Api-Token: {}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: {len}",
        app.admin()
    );
    let mut patch = common::streaming::StreamingRequest::open(&app, &head).await;
    // A part's worth at once, then a trickle until the upload expired and was swept.
    assert!(patch.send(&bytes[..9 * MIB]).await);
    let mut sent = 9 * MIB;
    while now_s() <= expires + 3 && !patch.answered() {
        let step = 16 * 1024;
        if !patch.send(&bytes[sent..sent + step]).await {
            break;
        }
        sent += step;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !patch.answered() {
        patch.send(&bytes[sent..]).await;
    }
    let answer = patch
        .response(Duration::from_secs(30))
        .await
        .expect("an answer to the PATCH");
    // Whatever the PATCH wrote after the sweep is swept too.
    eventually(
        Duration::from_secs(20),
        "nothing of the upload is left",
        || async { app.blob_count() == Some(blobs) },
    )
    .await;
    if app.backend == Backend::Production {
        let (keys, multipart) = app.s3_listing().await;
        assert!(keys.is_empty() && multipart == 0, "{keys:?}, {multipart}");
    }
    let u = app.usage(&product).await;
    assert_eq!((&u["bytes"], &u["versions"]), (&json!(0), &json!(0)), "{u}");
    app.upload_ok(app.admin(), &product, "1.0.0", b"the version is free")
        .await;
    // The PATCH is told its upload expired (not a conflict, not an outage to retry).
    answer.assert_error(410, "upload_expired");
}
