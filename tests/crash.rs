//! Dead and stalled uploads: a pending reservation carries a lease its upload renews
//! while bytes arrive. A version held by a running upload is `409 version_pending`; once
//! the lease lapses (the uploader stalled, or its server was SIGKILLed) the version is
//! free again, and the janitor removes what the dead upload left.

mod common;

use common::*;
use reqwest::Method;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LEASE_SECONDS: u64 = 5;

/// A server with a short lease and a lease sweep every second.
async fn start_with_short_lease() -> TestApp {
    TestApp::builder()
        .env("DEPOT_UPLOAD_LEASE_SECONDS", LEASE_SECONDS)
        .env("DEPOT_JANITOR_INTERVAL_SECONDS", 1)
        .start()
        .await
}

/// An upload sent by hand over one connection, so the test decides when bytes flow.
struct SlowUpload {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl SlowUpload {
    /// Sends the headers, the product and version fields, the file part's header and
    /// the first `sent` bytes of `bytes`.
    async fn begin(app: &TestApp, product: &str, version: &str, bytes: &[u8], sent: usize) -> Self {
        let form = Form::upload(product, version, "slow.bin", bytes);
        let content_type = form.content_type();
        let (_, body) = form.finish();
        let head = format!(
            "POST /product/upload HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Api-Token: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            app.port(),
            app.admin(),
            body.len(),
        );
        let mut stream = TcpStream::connect(("127.0.0.1", app.port())).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let file_start = body.len() - bytes.len() - b"\r\n".len() - form_tail_len(&body);
        let first = file_start + sent;
        stream.write_all(&body[..first]).await.unwrap();
        stream.flush().await.unwrap();
        SlowUpload {
            stream,
            rest: body[first..].to_vec(),
        }
    }

    /// Sends the next `n` bytes of the body.
    async fn send(&mut self, n: usize) {
        let n = n.min(self.rest.len());
        let chunk: Vec<u8> = self.rest.drain(..n).collect();
        self.stream.write_all(&chunk).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Sends the rest of the body and reads the response: (status, body).
    async fn finish(mut self) -> (u16, String) {
        let rest = std::mem::take(&mut self.rest);
        self.stream.write_all(&rest).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            self.stream.read_to_end(&mut response),
        )
        .await
        .expect("a response within 30 s")
        .expect("read the response");
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad response: {text}"));
        (status, text)
    }
}

/// Length of the closing delimiter line `--boundary--\r\n` at the end of a finished form.
fn form_tail_len(body: &[u8]) -> usize {
    let without_crlf = &body[..body.len() - 2];
    let start = without_crlf
        .windows(2)
        .rposition(|w| w == b"\r\n")
        .map_or(0, |i| i + 2);
    body.len() - start
}

/// Whether an upload of `version` now meets another upload's live reservation. The
/// probe carries a wrong checksum, so should the version be free it stores nothing.
async fn held_by_an_upload(app: &TestApp, product: &str, version: &str) -> bool {
    let (ct, body) = Form::upload(product, version, "probe.bin", b"probe").finish();
    let req = app
        .request(Method::POST, "/product/upload", Some(app.admin()))
        .header("Content-Type", ct)
        .header("X-Checksum-Sha256", "0".repeat(64))
        .body(body);
    let r = app.send(req).await;
    match r.status.as_u16() {
        409 => {
            r.assert_error(409, "version_pending");
            true
        }
        _ => {
            r.assert_error(400, "checksum_mismatch");
            false
        }
    }
}

/// Uploads `bytes` as `version` and returns the reply's status and error code.
async fn try_upload(
    app: &TestApp,
    product: &str,
    version: &str,
    bytes: &[u8],
) -> (u16, Option<String>) {
    let r = app.upload(app.admin(), product, version, bytes).await;
    (r.status.as_u16(), r.code())
}

#[tokio::test]
async fn a_version_held_by_an_upload_in_progress_is_409_version_pending_not_version_exists() {
    let app = start_with_short_lease().await;
    let product = app.product().await;
    let bytes = payload(1, 200_000);
    let mut slow = SlowUpload::begin(&app, &product, "1.0.0", &bytes, 1000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    eventually(
        Duration::from_secs(10),
        "a second upload meets the running one's reservation",
        || held_by_an_upload(&app, &product, "1.0.0"),
    )
    .await;
    slow.send(1000).await;
    let (status, text) = slow.finish().await;
    assert_eq!(status, 201, "{text}");
    // Once committed, the same version is immutable.
    app.upload(app.admin(), &product, "1.0.0", b"other")
        .await
        .assert_error(409, "version_exists");
    assert_eq!(
        app.download(app.admin(), &product, "1.0.0").await.body,
        bytes
    );
}

#[tokio::test]
async fn an_upload_that_keeps_sending_keeps_its_version_past_the_lease() {
    let app = start_with_short_lease().await;
    let product = app.product().await;
    let bytes = payload(2, 400_000);
    let mut slow = SlowUpload::begin(&app, &product, "1.0.0", &bytes, 1000).await;
    // Three lease periods of slow but steady bytes.
    let until = Instant::now() + Duration::from_secs(3 * LEASE_SECONDS);
    let mut checks = 0;
    while Instant::now() < until {
        slow.send(4096).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        checks += 1;
        if checks % 4 == 0 {
            app.upload(app.admin(), &product, "1.0.0", b"intruder")
                .await
                .assert_error(409, "version_pending");
        }
    }
    let (status, text) = slow.finish().await;
    assert_eq!(status, 201, "{text}");
    assert_eq!(
        app.download(app.admin(), &product, "1.0.0").await.body,
        bytes
    );
    app.wait_blob_count(1).await;
}

#[tokio::test]
async fn a_stalled_upload_loses_its_version_and_cannot_harm_the_upload_that_took_it_over() {
    let app = start_with_short_lease().await;
    let product = app.product().await;
    let stalled_bytes = payload(3, 300_000);
    let slow = SlowUpload::begin(&app, &product, "1.0.0", &stalled_bytes, 100_000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    eventually(
        Duration::from_secs(10),
        "the stalled upload holds its version",
        || held_by_an_upload(&app, &product, "1.0.0"),
    )
    .await;

    // No byte for longer than the lease: the version is free within lease + sweep.
    let fresh = payload(4, 50_000);
    let started = Instant::now();
    eventually(
        Duration::from_secs(LEASE_SECONDS + 15),
        "a fresh upload takes the stalled upload's version",
        || async {
            match try_upload(&app, &product, "1.0.0", &fresh).await {
                (201, _) => true,
                (409, Some(code)) if code == "version_pending" => false,
                other => panic!("unexpected reply while waiting for the lease: {other:?}"),
            }
        },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(LEASE_SECONDS - 2),
        "the version was freed before its lease could lapse"
    );

    // The stalled client wakes up and sends the rest: its upload is refused, and the
    // version stays the new owner's.
    let (status, text) = slow.finish().await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("upload_expired"), "{text}");
    let dl = app.download(app.admin(), &product, "1.0.0").await;
    dl.assert_status(200);
    assert!(dl.body == fresh, "the version holds the new upload's bytes");
    app.wait_blob_count(1).await;
}

/// One upload attempt of the load test.
struct Attempt {
    bytes: Vec<u8>,
    acked: bool,
}

/// What every uploader of the load test shares.
struct Load {
    client: reqwest::Client,
    url: String,
    token: String,
    product: String,
    /// Size of every third upload: more than one S3 part.
    big: usize,
    stop: AtomicBool,
}

/// Uploads fresh versions one after another until the server goes away or `stop` is set;
/// returns every attempt by version.
async fn keep_uploading(load: Arc<Load>, uploader: usize, round: usize) -> Vec<(String, Attempt)> {
    let Load {
        client,
        url,
        token,
        product,
        big,
        stop,
    } = &*load;
    let big = *big;
    let mut attempts = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let version = format!("{round}.{uploader}.{n}");
        let seed = (round * 1000 + uploader * 100 + n) as u64;
        // Mostly small files, every third one bigger than an S3 part (several parts).
        let len = if n % 3 == 2 {
            big
        } else {
            1000 + (seed as usize * 7919) % 200_000
        };
        let bytes = payload(seed, len);
        let (ct, body) = Form::upload(product, &version, "load.bin", &bytes).finish();
        let sent = client
            .post(url)
            .header("X-Api-Token", token)
            .header("Content-Type", ct)
            .body(body)
            .send()
            .await;
        let status = match sent {
            Ok(r) => {
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                Some(status)
            }
            Err(_) => None,
        };
        let acked = status == Some(201);
        assert!(
            matches!(status, None | Some(201) | Some(500..=599)),
            "upload of fresh version {version}: status {status:?}"
        );
        attempts.push((version, Attempt { bytes, acked }));
        if status.is_none() {
            break; // the server is gone
        }
    }
    attempts
}

#[tokio::test]
async fn sigkill_under_load_loses_nothing_acknowledged_leaves_nothing_half_there_and_blocks_no_version()
 {
    const UPLOADERS: usize = 6;
    const KILLS: usize = 3;
    let mut app = TestApp::builder()
        .env("DEPOT_UPLOAD_LEASE_SECONDS", LEASE_SECONDS)
        .env("DEPOT_JANITOR_INTERVAL_SECONDS", 1)
        .env("DEPOT_S3_PART_SIZE", 5 * 1024 * 1024)
        .start()
        .await;
    let product = app.product().await;
    let big = 5 * 1024 * 1024 + 300_000;
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut attempts: BTreeMap<String, Attempt> = BTreeMap::new();
    for round in 0..KILLS {
        let load = Arc::new(Load {
            client: client.clone(),
            url: app.url("/product/upload"),
            token: app.admin().to_string(),
            product: product.clone(),
            big,
            stop: AtomicBool::new(false),
        });
        let tasks: Vec<_> = (0..UPLOADERS)
            .map(|uploader| tokio::spawn(keep_uploading(load.clone(), uploader, round)))
            .collect();
        tokio::time::sleep(Duration::from_millis(2500 + 700 * round as u64)).await;
        app.kill().await;
        load.stop.store(true, Ordering::Relaxed);
        for task in tasks {
            attempts.extend(task.await.unwrap());
        }
        app.start_again().await;
    }
    let acked = attempts.values().filter(|a| a.acked).count();
    let cut_off = attempts.len() - acked;
    assert!(
        acked >= UPLOADERS,
        "the load ran ({acked} acknowledged uploads)"
    );
    assert!(cut_off >= KILLS, "the kills cut uploads off ({cut_off})");
    eprintln!("{acked} uploads acknowledged, {cut_off} cut off by {KILLS} SIGKILLs");

    // Acknowledged: byte-identical. Cut off: all there (the ack was lost) or absent.
    let mut committed = 0;
    let mut absent = Vec::new();
    for (version, attempt) in &attempts {
        let dl = app.download(app.admin(), &product, version).await;
        match dl.status.as_u16() {
            200 => {
                assert!(
                    dl.body == attempt.bytes,
                    "{version}: downloaded bytes differ"
                );
                assert_eq!(
                    dl.header("x-checksum-sha256").as_deref(),
                    Some(sha256_hex(&attempt.bytes).as_str()),
                    "{version}"
                );
                committed += 1;
            }
            404 if !attempt.acked => {
                dl.assert_error(404, "version_not_found");
                absent.push(version.clone());
            }
            other => panic!(
                "{version} (acknowledged: {}): {other} {}",
                attempt.acked,
                dl.text()
            ),
        }
    }

    // No version blocked: each cut-off one takes a fresh upload within lease + sweep.
    let deadline = Duration::from_secs(LEASE_SECONDS + 20);
    for version in &absent {
        let bytes = payload(7, 1000);
        eventually(
            deadline,
            &format!("a fresh upload of {version}"),
            || async {
                match try_upload(&app, &product, version, &bytes).await {
                    (201, _) => true,
                    (409, Some(code)) if code == "version_pending" => false,
                    other => panic!("fresh upload of cut-off {version}: {other:?}"),
                }
            },
        )
        .await;
        committed += 1;
    }

    // No orphan: once the janitor has swept, one blob per committed version.
    if app.blob_count().is_some() {
        eventually(
            Duration::from_secs(LEASE_SECONDS + 20),
            &format!("one blob per committed version ({committed})"),
            || async { app.blob_count() == Some(committed) },
        )
        .await;
    }
    assert_eq!(app.versions(&product).await.len(), committed);
}
