//! Tests that only make sense on the production backends (MongoDB + Redis + S3): two
//! replicas sharing them, outages of each backend, multipart uploads checked in the
//! bucket itself, redirect downloads, the janitor. They need the real servers that
//! `scripts/services.sh` starts, so they are `#[ignore]`d in a plain `cargo test`;
//! `scripts/test.sh` runs them with `--ignored` and `DEPOT_TEST_BACKEND=production`.

mod common;

use common::*;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn require_production() {
    assert_eq!(
        Backend::from_env(),
        Backend::Production,
        "these tests need DEPOT_TEST_BACKEND=production and the services of scripts/services.sh"
    );
}

#[derive(Clone, Copy)]
struct Ports {
    redis: u16,
    mongo: u16,
    s3: u16,
}

/// A private set of backend servers (own state dir and ports) that a test may stop and
/// restart without disturbing the shared ones. Dropping it stops them.
struct PrivateServices {
    dir: tempfile::TempDir,
    ports: Ports,
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A base port with `base..base+5` and SeaweedFS's gRPC ports `base+10000..` free.
fn free_port_block(avoid: &[u16]) -> u16 {
    for attempt in 0..500u32 {
        let seed = sha256_hex(format!("{}{attempt}", random_string(8)).as_bytes());
        let n = u16::from_str_radix(&seed[..4], 16).unwrap_or(0);
        let base = 20_000 + (n % 900) * 10;
        let clear = |p: &u16| (*p as i32 - base as i32).abs() > 20;
        if avoid.iter().all(clear)
            && (0..5).all(|i| port_free(base + i) && port_free(base + 10_000 + i))
        {
            return base;
        }
    }
    panic!("no free port block found");
}

fn run_services(dir: &Path, ports: Ports, action: &str, service: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/services.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(action)
        .arg(service)
        .env("DEPOT_SERVICES_DIR", dir)
        .env("DEPOT_REDIS_PORT", ports.redis.to_string())
        .env("DEPOT_MONGO_PORT", ports.mongo.to_string())
        .env("DEPOT_S3_PORT", ports.s3.to_string())
        .status()
        .expect("run scripts/services.sh");
    assert!(
        status.success(),
        "scripts/services.sh {action} {service} failed"
    );
}

impl PrivateServices {
    fn new() -> Self {
        let redis = free_port_block(&[]);
        let mongo = free_port_block(&[redis]);
        let s3 = free_port_block(&[redis, mongo]);
        PrivateServices {
            dir: tempfile::Builder::new()
                .prefix("depot-svc-")
                .tempdir()
                .expect("temp dir"),
            ports: Ports { redis, mongo, s3 },
        }
    }

    async fn act(&self, action: &'static str, service: &'static str) {
        let (dir, ports) = (self.dir.path().to_path_buf(), self.ports);
        tokio::task::spawn_blocking(move || run_services(&dir, ports, action, service))
            .await
            .expect("services script task");
    }

    async fn start(&self, service: &'static str) {
        self.act("start", service).await
    }

    async fn stop(&self, service: &'static str) {
        self.act("stop", service).await
    }

    fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.ports.redis)
    }
    fn mongo_url(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.ports.mongo)
    }
    fn s3_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.s3)
    }
}

impl Drop for PrivateServices {
    fn drop(&mut self) {
        run_services(self.dir.path(), self.ports, "stop", "all");
    }
}

async fn metric(app: &TestApp, name_and_labels: &str) -> f64 {
    let body = app.get("/metrics", None).await.text();
    body.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
#[ignore = "needs MongoDB, Redis and S3 from scripts/services.sh (run by scripts/test.sh)"]
async fn revocation_on_one_replica_is_refused_on_the_other_at_once() {
    require_production();
    let a = TestApp::start().await;
    let b = TestApp::builder().share_backends_with(&a).start().await;
    let product = a.product().await;
    let token = a.register(false).await;
    b.remember_secret(&token);
    a.grant(
        &product,
        &token,
        Perms {
            download: true,
            ..Perms::default()
        },
    )
    .await;
    // Warm replica B's view of the token through the shared cache.
    for _ in 0..3 {
        b.get("/product/access", Some(&token))
            .await
            .assert_status(200);
    }
    assert!(metric(&b, "depot_token_cache_lookups_total{result=\"hit\"}").await >= 1.0);

    // A grant change on A is seen by B on the very next request.
    a.delete_json(
        "/product/modify/deleteToken",
        Some(a.admin()),
        &json!({"product": product, "token": token}),
    )
    .await
    .assert_status(204);
    let access = b.get("/product/access", Some(&token)).await;
    access.assert_status(200);
    assert_eq!(access.json(), json!([]));

    a.prune(&token).await;
    b.get("/product/access", Some(&token))
        .await
        .assert_error(401, "invalid_token");
    a.assert_no_secrets_logged();
    b.assert_no_secrets_logged();
}

#[tokio::test]
#[ignore = "needs MongoDB, Redis and S3 from scripts/services.sh (run by scripts/test.sh)"]
async fn redis_outage_degrades_health_but_requests_succeed_and_it_is_used_again_when_back() {
    require_production();
    let services = PrivateServices::new();
    services.start("redis").await;
    let app = TestApp::builder()
        .env("DEPOT_REDIS_URL", services.redis_url())
        .start()
        .await;
    let product = app.product().await;
    let token = app.register(false).await;
    app.grant(
        &product,
        &token,
        Perms {
            download: true,
            ..Perms::default()
        },
    )
    .await;
    let health = app.get("/health", None).await;
    health.assert_status(200);
    assert_eq!(health.json()["status"], "ok");

    services.stop("redis").await;
    let health = app.get("/health", None).await;
    health.assert_status(200);
    assert_eq!(health.json()["status"], "degraded");
    assert_eq!(health.json()["redis"], "Redis is down");
    // Requests are served from MongoDB meanwhile, and revocation still works.
    let fetched = app
        .get(&format!("/product/fetch/{product}"), Some(&token))
        .await;
    fetched.assert_status(200);
    let doomed = app.register(false).await;
    app.get("/product/access", Some(&doomed))
        .await
        .assert_status(200);
    app.prune(&doomed).await;
    app.get("/product/access", Some(&doomed))
        .await
        .assert_error(401, "invalid_token");

    services.start("redis").await;
    eventually(Duration::from_secs(20), "health back to ok", || async {
        app.get("/health", None).await.json()["status"] == "ok"
    })
    .await;
    let hits_before = metric(&app, "depot_token_cache_lookups_total{result=\"hit\"}").await;
    for _ in 0..3 {
        app.get("/product/access", Some(&token))
            .await
            .assert_status(200);
    }
    let hits_after = metric(&app, "depot_token_cache_lookups_total{result=\"hit\"}").await;
    assert!(
        hits_after > hits_before,
        "the cache is used again: {hits_before} -> {hits_after}"
    );
    app.get("/product/access", Some(&doomed))
        .await
        .assert_error(401, "invalid_token");
}

#[tokio::test]
#[ignore = "needs MongoDB, Redis and S3 from scripts/services.sh (run by scripts/test.sh)"]
async fn s3_outage_mid_upload_is_5xx_and_the_janitor_leaves_nothing_behind() {
    require_production();
    let services = PrivateServices::new();
    services.start("s3").await;
    let app = TestApp::builder()
        .env("DEPOT_S3_ENDPOINT", services.s3_endpoint())
        .env("DEPOT_S3_PART_SIZE", 5 * 1024 * 1024)
        .env("DEPOT_JANITOR_INTERVAL_SECONDS", 1)
        .env("DEPOT_JANITOR_GRACE_SECONDS", 2)
        .start()
        .await;
    let product = app.product().await;

    // A slow upload: the first parts reach S3, then S3 goes away mid-body.
    let total: usize = 40 * 1024 * 1024;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let boundary = "outage-boundary";
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"product\"\r\n\r\n{product}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\nv1.0.0\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\r\n"
    )
    .into_bytes();
    let tail = format!("\r\n--{boundary}--\r\n").into_bytes();
    let body_stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let request = app
        .request(reqwest::Method::POST, "/product/upload", Some(app.admin()))
        .header("content-type", content_type)
        .body(reqwest::Body::wrap_stream(body_stream));
    let sender = tokio::spawn(async move {
        let _ = tx.send(Ok(head)).await;
        let chunk = vec![7u8; 1024 * 1024];
        for i in 0..total / chunk.len() {
            if i == 16 {
                // Enough for a few parts to be in the bucket; now pull the plug.
                services.stop("s3").await;
            }
            if tx.send(Ok(chunk.clone())).await.is_err() {
                return services;
            }
        }
        let _ = tx.send(Ok(tail)).await;
        services
    });
    let reply = app.send(request).await;
    let services = sender.await.expect("sender task");
    assert!(
        reply.status.as_u16() >= 500,
        "expected a 5xx, got {} {}",
        reply.status,
        reply.text()
    );
    assert_eq!(
        reply.code().as_deref(),
        Some("storage_unavailable"),
        "{}",
        reply.text()
    );
    assert!(
        app.versions(&product).await.is_empty(),
        "no version record survives"
    );

    services.start("s3").await;
    eventually(
        Duration::from_secs(30),
        "the janitor cleans the bucket",
        || async { app.s3_listing().await == (Vec::new(), 0) },
    )
    .await;
    // The version can be uploaded afterwards: nothing left behind claims it. The first
    // write to a restarted SeaweedFS can outlast this test's 2 s janitor grace, which
    // then expires the attempt (503 upload_expired); a retry must get through.
    eventually(
        Duration::from_secs(30),
        "an upload of the same version after the outage",
        || async {
            let reply = app
                .upload(app.admin(), &product, "v1.0.0", b"after the outage")
                .await;
            assert_ne!(
                reply.code().as_deref(),
                Some("version_exists"),
                "{}",
                reply.text()
            );
            reply.status.as_u16() == 201
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs MongoDB, Redis and S3 from scripts/services.sh (run by scripts/test.sh)"]
async fn mongo_outage_is_503_with_a_clear_error_and_nothing_half_written() {
    require_production();
    let services = PrivateServices::new();
    services.start("mongo").await;
    let app = TestApp::builder()
        .env("DEPOT_MONGO_URL", services.mongo_url())
        .start()
        .await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "v1", b"before").await;
    let (objects_before, _) = app.s3_listing().await;

    services.stop("mongo").await;
    let health = app.get("/health", None).await;
    health.assert_status(503);
    assert_eq!(health.json()["mongo"], "Mongo is down");
    assert_eq!(health.json()["status"], "down");
    // The admin token is cached in Redis, so the request gets as far as the upload.
    let reply = app
        .upload(app.admin(), &product, "v2", &payload(3, 2 * 1024 * 1024))
        .await;
    reply.assert_error(503, "metadata_unavailable");
    assert!(
        !reply.text().to_lowercase().contains("server selection"),
        "no driver text: {}",
        reply.text()
    );
    let unknown = app
        .get("/product/access", Some("depot_notarealtoken"))
        .await;
    unknown.assert_error(503, "metadata_unavailable");

    let (objects_after, uploads) = app.s3_listing().await;
    assert_eq!(objects_after, objects_before, "no new object in the bucket");
    assert_eq!(uploads, 0, "no multipart upload left");
}

#[tokio::test]
#[ignore = "needs MongoDB, Redis and S3 from scripts/services.sh (run by scripts/test.sh)"]
async fn a_200_mib_multipart_upload_matches_its_checksum_downloaded_from_the_bucket() {
    require_production();
    let app = TestApp::start().await;
    let product = app.product().await;
    let size = 200 * 1024 * 1024;
    let data = payload(42, size);
    let digest = sha256_hex(&data);
    let reply = app
        .upload_form(
            Some(app.admin()),
            Form::upload(&product, "v2.0.0", "big.bin", &data)
                .text("checksum", &format!("sha256:{digest}")),
        )
        .await;
    reply.assert_status(201);
    assert_eq!(reply.json()["checksum"], format!("sha256:{digest}"));
    drop(data);

    // Straight from the bucket, by presigned URL, with a client that has no token.
    let presign = app
        .get(
            &format!("/product/presign/{product}/v2.0.0"),
            Some(app.admin()),
        )
        .await;
    presign.assert_status(200);
    let url = presign.json()["url"].as_str().expect("url").to_string();
    assert!(
        url.starts_with(&app.setting("DEPOT_S3_ENDPOINT").expect("endpoint")),
        "{url}"
    );
    let mut resp = reqwest::get(&url).await.expect("GET presigned");
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str().expect("etag").to_string();
    assert!(
        etag.contains('-'),
        "a multipart object has a composite ETag: {etag}"
    );
    let mut hasher = Sha256::new();
    let mut received = 0usize;
    while let Some(chunk) = resp.chunk().await.expect("body chunk") {
        received += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(received, size);
    assert_eq!(hex::encode(hasher.finalize()), digest);
}

#[tokio::test]
#[ignore = "needs MongoDB, Redis and S3 from scripts/services.sh (run by scripts/test.sh)"]
async fn redirect_mode_sends_a_plain_client_to_the_bucket_with_the_file_name() {
    require_production();
    let app = TestApp::builder()
        .env("DEPOT_DOWNLOAD_MODE", "redirect")
        .env(
            "DEPOT_S3_PUBLIC_ENDPOINT",
            format!("http://localhost:{}", s3_port()),
        )
        .start()
        .await;
    let product = app.product().await;
    let data = payload(9, 3 * 1024 * 1024 + 17);
    app.upload_ok(app.admin(), &product, "v1.0.0", &data).await;

    let reply = app.download(app.admin(), &product, "v1.0.0").await;
    reply.assert_status(302);
    let location = reply.header("location").expect("location");
    assert!(
        location.starts_with(&format!("http://localhost:{}/", s3_port())),
        "signed for the public endpoint: {location}"
    );
    let follower = reqwest::Client::new();
    let resp = app
        .send(
            follower
                .get(app.url(&format!("/product/download/{product}/v1.0.0")))
                .header("X-Api-Token", app.admin()),
        )
        .await;
    resp.assert_status(200);
    assert_eq!(resp.body, data);
    assert!(
        resp.header("content-disposition")
            .unwrap_or_default()
            .contains("bin"),
        "file name kept"
    );

    // A tampered URL is refused by the store itself.
    let tampered = location.replacen("X-Amz-Signature=", "X-Amz-Signature=00", 1);
    assert_eq!(reqwest::get(&tampered).await.expect("GET").status(), 403);

    // ?redirect=false streams through Depot instead.
    let proxied = app
        .get(
            &format!("/product/download/{product}/v1.0.0?redirect=false"),
            Some(app.admin()),
        )
        .await;
    proxied.assert_status(200);
    assert_eq!(proxied.body, data);
    assert_eq!(
        proxied.header("x-checksum-sha256").as_deref(),
        Some(sha256_hex(&data).as_str())
    );
}

#[tokio::test]
#[ignore = "needs MongoDB, Redis and S3 from scripts/services.sh (run by scripts/test.sh)"]
async fn the_janitor_removes_orphan_objects_and_stale_multipart_uploads() {
    require_production();
    let app = TestApp::builder()
        .env("DEPOT_JANITOR_INTERVAL_SECONDS", 1)
        .env("DEPOT_JANITOR_GRACE_SECONDS", 2)
        .start()
        .await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "v1", b"keep me").await;
    let client = s3_client(&app.setting("DEPOT_S3_ENDPOINT").expect("endpoint"));
    let bucket = app.setting("DEPOT_S3_BUCKET").expect("bucket");
    let prefix = app.setting("DEPOT_S3_PREFIX").expect("prefix");
    client
        .put_object()
        .bucket(&bucket)
        // Keys of Depot's own shape (`<product>/<version>/<32 hex>`): the janitor leaves
        // anything else alone (tests/janitor_scope.rs).
        .key(format!("{prefix}/{product}/v9/{}", "0a".repeat(16)))
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"orphan"))
        .send()
        .await
        .expect("put orphan");
    client
        .create_multipart_upload()
        .bucket(&bucket)
        .key(format!("{prefix}/{product}/v9/{}", "0b".repeat(16)))
        .send()
        .await
        .expect("create multipart");
    eventually(Duration::from_secs(30), "orphans removed", || async {
        let (keys, uploads) = app.s3_listing().await;
        keys.len() == 1 && uploads == 0
    })
    .await;
    let r = app.download(app.admin(), &product, "v1").await;
    r.assert_status(200);
    assert_eq!(r.body, b"keep me");
}

fn s3_port() -> u16 {
    let endpoint = std::env::var("DEPOT_TEST_S3_ENDPOINT").expect("DEPOT_TEST_S3_ENDPOINT");
    endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("port in endpoint")
}

#[tokio::test]
#[ignore = "needs MongoDB, Redis and S3 from scripts/services.sh (run by scripts/test.sh)"]
async fn clients_that_hang_up_mid_request_do_not_stall_the_next_requests() {
    require_production();
    let app = TestApp::start().await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"payload")
        .await;
    let url = app.url(&format!("/product/fetch/{product}"));
    // Like a load test ending: 64 busy clients, all cut off with requests in flight.
    let mut clients = Vec::new();
    for _ in 0..64 {
        let (client, url, token) = (app.client().clone(), url.clone(), app.admin().to_string());
        clients.push(tokio::spawn(async move {
            loop {
                let _ = client.get(&url).header("X-Api-Token", &token).send().await;
            }
        }));
    }
    cut_off_after(clients, Duration::from_secs(3)).await;
    // Before requests ran to completion, the MongoDB driver lost the abandoned
    // operations' connections and these waited 50-80 s; a generous bound tells a stall
    // from a slow machine.
    let patient = patient_client();
    for path in [
        "/product/access".to_string(),
        format!("/product/fetch/{product}"),
    ] {
        let resp = patient
            .get(app.url(&path))
            .header("X-Api-Token", app.admin())
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} after the hang-ups: {e}"));
        assert_eq!(resp.status(), 200, "GET {path}");
    }
    app.assert_no_secrets_logged();
}

#[tokio::test]
#[ignore = "needs MongoDB, Redis and S3 from scripts/services.sh (run by scripts/test.sh)"]
async fn uploaders_that_hang_up_leave_no_stall_and_no_committed_version_without_its_bytes() {
    require_production();
    let app = TestApp::start().await;
    let product = app.product().await;
    // Small uploads of fresh versions, all cut off with requests in flight: some at the
    // reservation, some at the commit, most in between.
    let mut clients = Vec::new();
    for client_no in 0..16 {
        let (client, url, token) = (
            app.client().clone(),
            app.url("/product/upload"),
            app.admin().to_string(),
        );
        let product = product.clone();
        clients.push(tokio::spawn(async move {
            for n in 0.. {
                let version = format!("1.{client_no}.{n}");
                let (content_type, body) =
                    Form::upload(&product, &version, "a.bin", version.as_bytes()).finish();
                let _ = client
                    .post(&url)
                    .header("X-Api-Token", &token)
                    .header("Content-Type", content_type)
                    .body(body)
                    .send()
                    .await;
            }
        }));
    }
    cut_off_after(clients, Duration::from_secs(3)).await;
    let patient = patient_client();
    let (content_type, body) = Form::upload(&product, "2.0.0", "a.bin", b"after").finish();
    let resp = patient
        .post(app.url("/product/upload"))
        .header("X-Api-Token", app.admin())
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .expect("an upload after the hang-ups");
    assert_eq!(resp.status(), 201);
    // Every version that was committed kept its bytes: no cleanup raced a commit.
    let versions = app.versions(&product).await;
    assert!(
        versions.len() > 1,
        "some uploads went through: {versions:?}"
    );
    for version in versions {
        let reply = app.download(app.admin(), &product, &version).await;
        assert_eq!(
            reply.status,
            200,
            "GET {version}; server log:\n{}",
            app.log()
        );
        let expected: &[u8] = if version == "2.0.0" {
            b"after"
        } else {
            version.as_bytes()
        };
        assert_eq!(reply.body, expected, "bytes of {version}");
    }
}

/// Lets busy clients run for `after`, then cuts them all off with requests in flight,
/// as a load test ends.
async fn cut_off_after(clients: Vec<tokio::task::JoinHandle<()>>, after: Duration) {
    tokio::time::sleep(after).await;
    for client in &clients {
        client.abort();
    }
    for client in clients {
        let _ = client.await;
    }
}

/// A client whose generous timeout tells a stalled metadata store from a slow machine.
fn patient_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test]
#[ignore = "needs MongoDB, Redis and S3 from scripts/services.sh (run by scripts/test.sh)"]
async fn stalled_uploads_holding_every_s3_part_buffer_make_others_503_instead_of_freezing_them() {
    require_production();
    // 64 MiB parts: the 128 MiB buffer budget is 3 buffers (parts in flight + 1).
    let app = TestApp::builder()
        .env("DEPOT_S3_PART_SIZE", 64 * 1024 * 1024)
        .env("DEPOT_S3_PARTS_IN_FLIGHT", 2)
        .env("DEPOT_S3_BUFFER_WAIT_SECONDS", 2)
        .start()
        .await;
    let product = app.product().await;
    let file = common::payload(11, 4 * 1024 * 1024);
    let mut held = Vec::new();
    for i in 0..3 {
        let (content_type, body) =
            Form::upload(&product, &format!("1.0.{i}"), "a.bin", &file).finish();
        let mut request = common::streaming::StreamingRequest::upload(
            &app,
            app.admin(),
            &content_type,
            body.len() as u64,
        )
        .await;
        // Past the first staging block, so the upload holds a part buffer; then it stalls.
        request.send(&body[..2 * 1024 * 1024]).await;
        held.push((request, body));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reply = app.upload(app.admin(), &product, "2.0.0", &file).await;
    reply.assert_error(503, "too_busy");
    assert!(reply.header("retry-after").is_some());
    // The stalled ones still complete, and then the buffers serve the next upload.
    for (mut request, body) in held {
        request.send(&body[2 * 1024 * 1024..]).await;
        let done = request
            .response(Duration::from_secs(60))
            .await
            .expect("an answer");
        assert_eq!(done.status, 201, "{}", String::from_utf8_lossy(&done.body));
    }
    app.upload_ok(app.admin(), &product, "2.0.0", &file).await;
}
