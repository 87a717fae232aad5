//! Version listing (`GET /product/versions/{product}`: order, pagination, permissions,
//! 10,000 versions) and the reserved version name `latest` (download, presign, product
//! fetch; pre-releases; the fallback when nothing is semver).

mod common;

use common::*;
use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;
use std::collections::HashSet;
use std::time::{Duration, Instant};

async fn list(app: &TestApp, token: Option<&str>, product: &str, query: &str) -> Reply {
    app.get(&format!("/product/versions/{product}{query}"), token)
        .await
}

/// Every listed entry, page by page with `limit`, checking the page sizes on the way.
async fn list_all(app: &TestApp, product: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit={limit}&cursor={c}"),
            None => format!("?limit={limit}"),
        };
        let r = list(app, Some(app.admin()), product, &query).await;
        r.assert_status(200);
        let page = r.json();
        let versions = page["versions"].as_array().expect("versions array").clone();
        assert!(versions.len() <= limit, "page longer than the limit");
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(versions.len(), limit, "only the last page may be short");
                cursor = Some(next.to_string());
                out.extend(versions);
            }
            None => {
                assert!(page["next_cursor"].is_null(), "{page}");
                out.extend(versions);
                return out;
            }
        }
    }
}

fn names(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|v| v["version"].as_str().expect("version name").to_string())
        .collect()
}

/// Uploads one version after another, a few milliseconds apart so upload times differ.
async fn upload_in_order(app: &TestApp, product: &str, versions: &[&str]) {
    for v in versions {
        app.upload_ok(app.admin(), product, v, v.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---- order --------------------------------------------------------------------------

#[tokio::test]
async fn versions_are_listed_by_descending_semver_with_a_v_prefix_allowed() {
    let app = TestApp::start().await;
    let product = app.product().await;
    upload_in_order(
        &app,
        &product,
        &[
            "1.0.0",
            "v1.2.0",
            "0.9.0",
            "1.10.0",
            "2.0.0-rc.1",
            "2.0.0",
            "1.2.0-beta",
            "v10.0.0",
            "2.0.0-rc.2",
            "2.0.0-alpha",
        ],
    )
    .await;
    let r = list(&app, Some(app.admin()), &product, "").await;
    r.assert_status(200);
    let page = r.json();
    assert!(page["next_cursor"].is_null(), "{page}");
    assert_eq!(
        names(page["versions"].as_array().unwrap()),
        [
            "v10.0.0",
            "2.0.0",
            "2.0.0-rc.2",
            "2.0.0-rc.1",
            "2.0.0-alpha",
            "1.10.0",
            "v1.2.0",
            "1.2.0-beta",
            "1.0.0",
            "0.9.0",
        ]
    );
}

#[tokio::test]
async fn listed_versions_carry_file_name_size_checksum_upload_time_and_uploader() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let uploader = app.token_with(&product, Perms::UPLOAD).await;
    let uploader_id = app.token_id(&uploader).await;
    let bytes = payload(1, 4321);
    app.upload_form(
        Some(&uploader),
        Form::upload(&product, "3.1.4", "pi.tar.gz", &bytes),
    )
    .await
    .assert_status(201);
    let r = list(&app, Some(app.admin()), &product, "").await;
    r.assert_status(200);
    let v = &r.json()["versions"][0];
    assert_eq!(v["version"], "3.1.4");
    assert_eq!(v["file_name"], "pi.tar.gz");
    assert_eq!(v["size"], 4321);
    assert_eq!(v["checksum"], format!("sha256:{}", sha256_hex(&bytes)));
    assert_eq!(v["uploaded_by"], uploader_id);
    let at = v["uploaded_at"].as_str().expect("uploaded_at");
    assert!(
        chrono::DateTime::parse_from_rfc3339(at).is_ok(),
        "RFC 3339: {at}"
    );
    assert_eq!(v["path"], format!("/product/download/{product}/3.1.4"));
}

#[tokio::test]
async fn non_semver_versions_follow_the_semver_ones_newest_upload_first() {
    let app = TestApp::start().await;
    let product = app.product().await;
    upload_in_order(
        &app,
        &product,
        &[
            "nightly-a",
            "1.0.0",
            "zeta",
            "build-7",
            "0.1.0",
            "1.0",
            "alpha",
            "2.0.0-rc.1",
        ],
    )
    .await;
    let r = list(&app, Some(app.admin()), &product, "").await;
    r.assert_status(200);
    assert_eq!(
        names(r.json()["versions"].as_array().unwrap()),
        [
            "2.0.0-rc.1",
            "1.0.0",
            "0.1.0",
            // Not semver: newest upload first, whatever the name.
            "alpha",
            "1.0",
            "build-7",
            "zeta",
            "nightly-a",
        ]
    );
}

#[tokio::test]
async fn an_empty_product_lists_no_versions() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let r = list(&app, Some(app.admin()), &product, "").await;
    r.assert_status(200);
    assert_eq!(r.json()["versions"], serde_json::json!([]));
    assert!(r.json()["next_cursor"].is_null());
}

#[tokio::test]
async fn deleted_versions_leave_the_listing() {
    let app = TestApp::start().await;
    let product = app.product().await;
    upload_in_order(&app, &product, &["1.0.0", "1.1.0", "1.2.0"]).await;
    app.delete(
        &format!("/product/delete/{product}/1.1.0"),
        Some(app.admin()),
    )
    .await
    .assert_status(204);
    assert_eq!(
        names(&list_all(&app, &product, 100).await),
        ["1.2.0", "1.0.0"]
    );
}

// ---- pagination ---------------------------------------------------------------------

#[tokio::test]
async fn pagination_with_limit_and_cursor_covers_every_version_exactly_once() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let mut versions: Vec<String> = Vec::new();
    for i in 0..23 {
        versions.push(match i % 4 {
            0 => format!("build-{i}"),
            1 => format!("1.{i}.0-rc.1"),
            2 => format!("v{i}.0.0"),
            _ => format!("0.0.{i}"),
        });
    }
    let refs: Vec<&str> = versions.iter().map(String::as_str).collect();
    upload_in_order(&app, &product, &refs).await;

    let whole = names(&list_all(&app, &product, 1000).await);
    assert_eq!(whole.len(), 23);
    let distinct: HashSet<&String> = whole.iter().collect();
    assert_eq!(distinct.len(), 23);
    let uploaded: HashSet<&String> = versions.iter().collect();
    assert_eq!(distinct, uploaded);
    for limit in [1, 2, 5, 22, 23, 24] {
        assert_eq!(
            names(&list_all(&app, &product, limit).await),
            whole,
            "pages of {limit}"
        );
    }
    // The default page size is enough here: one page, no cursor.
    let r = list(&app, Some(app.admin()), &product, "").await;
    assert_eq!(names(r.json()["versions"].as_array().unwrap()), whole);
    assert!(r.json()["next_cursor"].is_null());
}

#[tokio::test]
async fn a_cursor_stays_valid_when_versions_are_added_between_pages() {
    let app = TestApp::start().await;
    let product = app.product().await;
    upload_in_order(&app, &product, &["1.0.0", "2.0.0", "3.0.0", "4.0.0"]).await;
    let first = list(&app, Some(app.admin()), &product, "?limit=2")
        .await
        .json();
    assert_eq!(
        names(first["versions"].as_array().unwrap()),
        ["4.0.0", "3.0.0"]
    );
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    // A higher and a lower version arrive between the pages.
    upload_in_order(&app, &product, &["9.0.0", "0.5.0"]).await;
    let rest = list(
        &app,
        Some(app.admin()),
        &product,
        &format!("?limit=10&cursor={cursor}"),
    )
    .await
    .json();
    assert_eq!(
        names(rest["versions"].as_array().unwrap()),
        ["2.0.0", "1.0.0", "0.5.0"],
        "keyset pagination: continues after the last listed version"
    );
}

#[tokio::test]
async fn invalid_limit_or_cursor_is_400_invalid_query() {
    let app = TestApp::start().await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"x").await;
    let garbage_prefix = base64_url(b"x:abc");
    let not_utf8 = base64_url(&[0xff, 0xfe, 0x00]);
    for query in [
        "?limit=0".to_string(),
        "?limit=1001".to_string(),
        "?limit=-1".to_string(),
        "?limit=ten".to_string(),
        "?limit=".to_string(),
        "?limit=99999999999999999999999".to_string(),
        "?cursor=***".to_string(),
        "?cursor=%00".to_string(),
        format!("?cursor={garbage_prefix}"),
        format!("?cursor={not_utf8}"),
        "?limit=5&cursor=not-a-cursor!".to_string(),
    ] {
        let r = list(&app, Some(app.admin()), &product, &query).await;
        assert_eq!(r.status.as_u16(), 400, "{query}: {}", r.text());
        assert_eq!(r.error_code(), "invalid_query", "{query}");
    }
    // The bounds themselves are fine.
    for query in ["?limit=1", "?limit=1000"] {
        list(&app, Some(app.admin()), &product, query)
            .await
            .assert_status(200);
    }
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

// ---- permissions --------------------------------------------------------------------

#[tokio::test]
async fn listing_needs_download_permission() {
    let app = TestApp::start().await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"x").await;
    let other = app.product().await;

    let reader = app.token_with(&product, Perms::DOWNLOAD).await;
    let r = list(&app, Some(&reader), &product, "").await;
    r.assert_status(200);
    assert_eq!(names(r.json()["versions"].as_array().unwrap()), ["1.0.0"]);

    for perms in [Perms::UPLOAD, Perms::MAINTAINER, Perms::DELETE] {
        let token = app.token_with(&product, perms).await;
        list(&app, Some(&token), &product, "")
            .await
            .assert_error(403, "forbidden");
    }
    // No grant at all: the product is as good as missing.
    list(&app, Some(&reader), &other, "")
        .await
        .assert_error(404, "product_not_found");
    list(&app, Some(&reader), "no-such-product", "")
        .await
        .assert_error(404, "product_not_found");
    list(&app, Some(app.admin()), "no-such-product", "")
        .await
        .assert_error(404, "product_not_found");
    list(&app, None, &product, "")
        .await
        .assert_error(401, "missing_token");
}

// ---- latest -------------------------------------------------------------------------

async fn presigned_version(app: &TestApp, token: &str, product: &str, query: &str) -> Reply {
    app.get(
        &format!("/product/presign/{product}/latest{query}"),
        Some(token),
    )
    .await
}

async fn fetched_latest(app: &TestApp, token: &str, product: &str, query: &str) -> Value {
    let r = app
        .get(&format!("/product/fetch/{product}{query}"), Some(token))
        .await;
    r.assert_status(200);
    r.json()["latest"].clone()
}

#[tokio::test]
async fn latest_resolves_in_download_presign_and_fetch() {
    let app = TestApp::start().await;
    let product = app.product().await;
    upload_in_order(
        &app,
        &product,
        &["1.2.0", "v1.10.0", "1.9.3", "nightly", "2.0.0-rc.1"],
    )
    .await;
    let reader = app.token_with(&product, Perms::DOWNLOAD).await;

    let r = app.download(&reader, &product, "latest").await;
    r.assert_status(200);
    assert_eq!(r.body, b"v1.10.0");
    let head = app
        .send(app.request(
            Method::HEAD,
            &format!("/product/download/{product}/latest"),
            Some(&reader),
        ))
        .await;
    head.assert_status(200);
    assert_eq!(
        head.header("x-checksum-sha256").as_deref(),
        Some(sha256_hex(b"v1.10.0").as_str())
    );

    let presign = presigned_version(&app, &reader, &product, "").await;
    presign.assert_status(200);
    assert_eq!(presign.json()["version"], "v1.10.0");
    // The URL names the resolved version, not `latest`: it keeps its meaning.
    let url = presign.json()["url"].as_str().unwrap().to_string();
    assert!(!url.contains("/latest"), "{url}");
    let fetched = app.client().get(&url).send().await.expect("presigned GET");
    assert_eq!(fetched.status().as_u16(), 200);
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), b"v1.10.0");

    assert_eq!(fetched_latest(&app, &reader, &product, "").await, "v1.10.0");
}

#[tokio::test]
async fn latest_includes_pre_releases_only_with_prerelease_true() {
    let app = TestApp::start().await;
    let product = app.product().await;
    upload_in_order(
        &app,
        &product,
        &["1.0.0", "2.0.0-rc.1", "1.5.0", "2.0.0-beta"],
    )
    .await;
    let admin = app.admin();
    assert_eq!(app.download(admin, &product, "latest").await.body, b"1.5.0");
    let r = app
        .get(
            &format!("/product/download/{product}/latest?prerelease=true"),
            Some(admin),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.body, b"2.0.0-rc.1");
    let r = app
        .get(
            &format!("/product/download/{product}/latest?prerelease=false"),
            Some(admin),
        )
        .await;
    assert_eq!(r.body, b"1.5.0");
    assert_eq!(
        presigned_version(&app, admin, &product, "?prerelease=true")
            .await
            .json()["version"],
        "2.0.0-rc.1"
    );
    assert_eq!(
        fetched_latest(&app, admin, &product, "?prerelease=true").await,
        "2.0.0-rc.1"
    );
    assert_eq!(fetched_latest(&app, admin, &product, "").await, "1.5.0");

    // A release above every pre-release wins in both modes.
    app.upload_ok(admin, &product, "2.0.0", b"2.0.0").await;
    for query in ["", "?prerelease=true"] {
        let r = app
            .get(
                &format!("/product/download/{product}/latest{query}"),
                Some(admin),
            )
            .await;
        assert_eq!(r.body, b"2.0.0", "{query}");
    }
}

#[tokio::test]
async fn latest_with_only_pre_releases_needs_prerelease_true() {
    let app = TestApp::start().await;
    let product = app.product().await;
    upload_in_order(&app, &product, &["1.0.0-rc.1", "1.0.0-rc.2", "snapshot"]).await;
    app.download(app.admin(), &product, "latest")
        .await
        .assert_error(404, "version_not_found");
    let r = app
        .get(
            &format!("/product/download/{product}/latest?prerelease=true"),
            Some(app.admin()),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.body, b"1.0.0-rc.2");
    assert!(
        fetched_latest(&app, app.admin(), &product, "")
            .await
            .is_null()
    );
}

#[tokio::test]
async fn latest_falls_back_to_the_newest_upload_when_no_version_is_semver() {
    let app = TestApp::start().await;
    let product = app.product().await;
    upload_in_order(&app, &product, &["zzz", "nightly-2", "aaa", "build-1"]).await;
    for query in ["", "?prerelease=true"] {
        let r = app
            .get(
                &format!("/product/download/{product}/latest{query}"),
                Some(app.admin()),
            )
            .await;
        r.assert_status(200);
        assert_eq!(r.body, b"build-1", "{query}");
        assert_eq!(
            presigned_version(&app, app.admin(), &product, query)
                .await
                .json()["version"],
            "build-1"
        );
        assert_eq!(
            fetched_latest(&app, app.admin(), &product, query).await,
            "build-1"
        );
    }
    // One semver release takes over from every newer non-semver upload.
    app.upload_ok(app.admin(), &product, "0.0.1", b"0.0.1")
        .await;
    app.upload_ok(app.admin(), &product, "newest", b"newest")
        .await;
    assert_eq!(
        app.download(app.admin(), &product, "latest").await.body,
        b"0.0.1"
    );
    assert_eq!(
        fetched_latest(&app, app.admin(), &product, "").await,
        "0.0.1"
    );
}

#[tokio::test]
async fn latest_of_a_product_without_versions_is_404_and_null_in_fetch() {
    let app = TestApp::start().await;
    let product = app.product().await;
    app.download(app.admin(), &product, "latest")
        .await
        .assert_error(404, "version_not_found");
    presigned_version(&app, app.admin(), &product, "")
        .await
        .assert_error(404, "version_not_found");
    assert!(
        fetched_latest(&app, app.admin(), &product, "")
            .await
            .is_null()
    );
}

#[tokio::test]
async fn latest_needs_download_permission() {
    let app = TestApp::start().await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"x").await;
    let uploader = app.token_with(&product, Perms::UPLOAD).await;
    app.download(&uploader, &product, "latest")
        .await
        .assert_error(403, "forbidden");
    presigned_version(&app, &uploader, &product, "")
        .await
        .assert_error(403, "forbidden");
    let stranger = app.register(false).await;
    app.download(&stranger, &product, "latest")
        .await
        .assert_error(404, "product_not_found");
}

#[tokio::test]
async fn uploading_version_latest_is_400_reserved_name_and_stores_nothing() {
    let app = TestApp::start().await;
    let product = app.product().await;
    app.upload(app.admin(), &product, "latest", b"x")
        .await
        .assert_error(400, "reserved_name");
    // The field order does not matter: version after the file is refused just the same.
    let form = Form::new()
        .text("product", &product)
        .file("file", Some("a.bin"), b"x")
        .text("version", "latest");
    app.upload_form(Some(app.admin()), form)
        .await
        .assert_error(400, "reserved_name");
    assert!(app.versions(&product).await.is_empty());
    app.wait_blob_count(0).await;
    // Other names containing it are ordinary.
    app.upload_ok(app.admin(), &product, "latest-1", b"y").await;
    app.upload_ok(app.admin(), &product, "Latest", b"z").await;
}

// ---- 10,000 versions ----------------------------------------------------------------

/// The version name for index `i`: major.minor.patch is unique per index, decorated
/// with a `v` prefix, a pre-release or build metadata; every 20th is not semver.
fn bulk_version(i: usize) -> String {
    let core = format!("{}.{}.{}", i / 100, (i / 10) % 10, i % 10);
    match i % 20 {
        0 => format!("nightly-{i}"),
        1 => format!("{core}-rc.{}", i % 3),
        2 => format!("v{core}"),
        3 => format!("{core}+build.{i}"),
        4 => format!("{core}-alpha"),
        _ => core,
    }
}

/// The end of the server's stderr, for a failure where the server went away.
fn server_log_tail(app: &TestApp) -> String {
    let log = app.log();
    let start = (log.len().saturating_sub(3000)..log.len())
        .find(|i| log.is_char_boundary(*i))
        .unwrap_or(log.len());
    format!("--- server stderr (tail) ---\n{}", &log[start..])
}

fn semver_of(name: &str) -> Option<semver::Version> {
    semver::Version::parse(name.strip_prefix('v').unwrap_or(name)).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_versions_page_completely_and_in_order() {
    let app = TestApp::start().await;
    // 10,000 on the embedded default. The test MongoDB server (SecantusDB, in Python)
    // takes many minutes just to accept 10,000 uploads, so the production pass seeds
    // 2,000 and pages through them with the same indexed range query.
    let count: usize = match app.backend {
        Backend::Embedded => 10_000,
        Backend::Production => 2_000,
    };
    let product = app.product().await;
    // A pooled client of its own: the harness's opens a connection per request.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(32)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    // Uploaded in a scrambled order, so the listing order is the server's doing.
    let mut order: Vec<usize> = (0..count).collect();
    order.sort_by_key(|i| (i * 7919) % count);
    let started = Instant::now();
    let mut uploads = futures::stream::iter(order)
        .map(|i| {
            let (client, app, product) = (&client, &app, &product);
            async move {
                let version = bulk_version(i);
                let (ct, body) = Form::upload(product, &version, "a.bin", &[i as u8]).finish();
                let resp = client
                    .post(app.url("/product/upload"))
                    .header("X-Api-Token", app.admin())
                    .header("Content-Type", ct)
                    .body(body)
                    .send()
                    .await
                    .unwrap_or_else(|err| {
                        panic!("upload of {version}: {err}\n{}", server_log_tail(app))
                    });
                let status = resp.status();
                assert_eq!(
                    status.as_u16(),
                    201,
                    "upload of {version}: {}",
                    resp.text().await.unwrap_or_default()
                );
            }
        })
        .buffer_unordered(16);
    let mut done = 0;
    while uploads.next().await.is_some() {
        done += 1;
        if done % 1000 == 0 {
            eprintln!("{done} uploads in {:.1?}", started.elapsed());
        }
    }
    let upload_time = started.elapsed();

    let started = Instant::now();
    let mut listed: Vec<Value> = Vec::with_capacity(count);
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    let mut slowest_page = Duration::ZERO;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=1000&cursor={c}"),
            None => "?limit=1000".to_string(),
        };
        let page_started = Instant::now();
        let r = list(&app, Some(app.admin()), &product, &query).await;
        slowest_page = slowest_page.max(page_started.elapsed());
        r.assert_status(200);
        let page = r.json();
        pages += 1;
        listed.extend(page["versions"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let list_time = started.elapsed();
    // Small pages from deep inside the listing.
    let started = Instant::now();
    let mut small = 0;
    let mut cursor: Option<String> = None;
    while small < 50 {
        let query = match &cursor {
            Some(c) => format!("?limit=10&cursor={c}"),
            None => "?limit=10".to_string(),
        };
        let page = list(&app, Some(app.admin()), &product, &query).await.json();
        cursor = page["next_cursor"].as_str().map(str::to_string);
        small += 1;
    }
    let small_time = started.elapsed();
    eprintln!(
        "{count} versions ({:?} backend): uploads {upload_time:.2?} at concurrency 16; \
         full listing in {pages} pages of 1000: {list_time:.2?} (slowest page {slowest_page:.2?}); \
         50 pages of 10: {small_time:.2?}",
        app.backend
    );

    assert_eq!(pages, count / 1000);
    let got = names(&listed);
    assert_eq!(got.len(), count);
    let distinct: HashSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), count, "every version exactly once");
    let split = got
        .iter()
        .position(|n| semver_of(n).is_none())
        .expect("non-semver versions are listed");
    let (semvers, others) = got.split_at(split);
    assert_eq!(semvers.len(), count - count / 20);
    assert!(
        others.iter().all(|n| semver_of(n).is_none()),
        "non-semver names come after all semver ones"
    );
    for pair in semvers.windows(2) {
        let (a, b) = (semver_of(&pair[0]).unwrap(), semver_of(&pair[1]).unwrap());
        assert!(
            a.cmp_precedence(&b).is_gt(),
            "{} must be listed before {}",
            pair[0],
            pair[1]
        );
    }
    // Upload times of the concurrent uploads may share a millisecond, and the listing
    // shows seconds: newest first means never older than the next one.
    let times: Vec<&str> = listed[split..]
        .iter()
        .map(|v| v["uploaded_at"].as_str().unwrap())
        .collect();
    for pair in times.windows(2) {
        assert!(pair[0] >= pair[1], "newest upload first: {pair:?}");
    }
    let expected_top = (0..count)
        .map(bulk_version)
        .filter(|n| semver_of(n).is_some_and(|v| v.pre.is_empty()))
        .max_by(|a, b| semver_of(a).unwrap().cmp_precedence(&semver_of(b).unwrap()))
        .unwrap();
    let r = app.download(app.admin(), &product, "latest").await;
    r.assert_status(200);
    let expected_index = (0..count)
        .find(|i| bulk_version(*i) == expected_top)
        .unwrap();
    assert_eq!(r.body, [expected_index as u8], "latest is {expected_top}");
}
