//! Browser clients of the resumable uploads (issue 14): a page served from another origin
//! (a static server of this test on its own port) uploads a Blob to Depot's `/uploads`
//! with the real `tus-js-client` from npm in a real browser (Debian's `chromium`,
//! headless), in several cross-origin PATCHes, then downloads it back; the stored file's
//! SHA-256 is the Blob's. The same page on an origin Depot was not configured for is
//! refused by the browser's CORS check and nothing is stored. Without a browser: the
//! preflight of a PATCH, tus discovery with and without CORS, the exposed tus headers on
//! answers (errors included), `*`, and no `access-control-*` header at all without
//! `DEPOT_CORS_ORIGINS`. Both backend sets.
//!
//! `scripts/browser-deps.sh` installs chromium and tus-js-client on a fresh machine; when
//! it cannot, these tests fail, they never skip.

mod common;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::routing::{get, post};
use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const MIB: usize = 1 << 20;
/// How long a page may take to upload and report.
const PAGE_TIMEOUT: Duration = Duration::from_secs(40);

/// What `scripts/browser-deps.sh` installed.
struct BrowserDeps {
    chromium: PathBuf,
    tus_js: PathBuf,
}

/// Runs `scripts/browser-deps.sh` once per test binary (it installs under a lock, so
/// parallel binaries are fine). Panics when it fails: the tests fail, never skip.
fn browser_deps() -> &'static BrowserDeps {
    static DEPS: OnceLock<BrowserDeps> = OnceLock::new();
    DEPS.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/browser-deps.sh");
        let out = std::process::Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{} failed ({}): chromium and tus-js-client are needed by these tests\n{stderr}",
            script.display(),
            out.status,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path_of = |key: &str| -> PathBuf {
            let path = stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .map(PathBuf::from)
                .unwrap_or_else(|| panic!("browser-deps.sh printed no {key}=: {stdout}"));
            assert!(path.is_file(), "browser-deps.sh: {key}={path:?} is no file");
            path
        };
        BrowserDeps {
            chromium: path_of("chromium"),
            tus_js: path_of("tus_js"),
        }
    })
}

/// The page's bytes: xorshift32 from `seed`, the same generator as tests/browser/upload.js.
fn page_bytes(seed: u32, len: usize) -> Vec<u8> {
    let mut x = if seed == 0 { 1 } else { seed };
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

#[derive(Clone)]
struct PageState {
    config_js: String,
    tus_js: PathBuf,
    results: mpsc::Sender<Value>,
}

/// The other origin: a listener on its own port, bound before Depot starts so that Depot
/// can be told (or not told) its origin.
struct PageOrigin {
    listener: TcpListener,
}

/// What a page run brought back.
struct PageRun {
    /// The JSON the page reported (see tests/browser/upload.js).
    result: Value,
    /// Chromium's stderr, console messages included.
    log: String,
}

impl PageOrigin {
    async fn bind() -> PageOrigin {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the page's port");
        PageOrigin { listener }
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().expect("local addr").port()
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// Serves tests/browser/upload.html with `config` as `window.DEPOT_TEST`, opens it in
    /// headless chromium and waits for the page's report (POSTed to its own origin).
    async fn run(self, config: Value) -> PageRun {
        let deps = browser_deps();
        let port = self.port();
        let (tx, mut rx) = mpsc::channel(1);
        let state = PageState {
            config_js: format!("window.DEPOT_TEST = {config};\n"),
            tus_js: deps.tus_js.clone(),
            results: tx,
        };
        let js = |body: String| ([(CONTENT_TYPE, "text/javascript; charset=utf-8")], body);
        let router = Router::new()
            .route(
                "/page.html",
                get(|| async {
                    (
                        [(CONTENT_TYPE, "text/html; charset=utf-8")],
                        include_str!("browser/upload.html"),
                    )
                }),
            )
            .route(
                "/upload.js",
                get(move || async move { js(include_str!("browser/upload.js").to_string()) }),
            )
            .route(
                "/config.js",
                get(move |State(s): State<PageState>| async move { js(s.config_js) }),
            )
            .route(
                "/tus.min.js",
                get(move |State(s): State<PageState>| async move {
                    js(std::fs::read_to_string(&s.tus_js).expect("read tus.min.js"))
                }),
            )
            .route(
                "/result",
                post(|State(s): State<PageState>, body: String| async move {
                    let value: Value = serde_json::from_str(&body)
                        .unwrap_or_else(|e| json!({ "unparsable": body, "why": e.to_string() }));
                    let _ = s.results.try_send(value);
                    "thanks"
                }),
            )
            .with_state(state);
        let server = tokio::spawn(async move {
            axum::serve(self.listener, router)
                .await
                .expect("page server");
        });

        let profile = tempfile::Builder::new()
            .prefix("depot-chromium-")
            .tempdir()
            .expect("profile dir");
        let log_path = profile.path().join("chromium.log");
        let log_file = std::fs::File::create(&log_path).expect("chromium log");
        let url = format!("http://127.0.0.1:{port}/page.html");
        let mut chromium = tokio::process::Command::new(&deps.chromium)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                // Nothing leaves the machine: no host name resolves (IP literals only), and
                // what is not for loopback goes to the page's own server as its proxy,
                // which refuses it (Chromium still asks Google's update and accounts
                // services now and then, whatever the flags below say).
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-domain-reliability",
                "--disable-client-side-phishing-detection",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-extensions",
                "--no-pings",
                "--disable-features=Translate,OptimizationHints,MediaRouter,\
                 AutofillServerCommunication,CertificateTransparencyComponentUpdater,\
                 NetworkTimeServiceQuerying",
                "--metrics-recording-only",
                "--password-store=basic",
                "--use-mock-keychain",
                // Console messages (the browser's CORS errors) go to stderr.
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--proxy-server=http://127.0.0.1:{port}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(&url)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone().expect("log fd")))
            .stderr(Stdio::from(log_file))
            // Its own process group: the browser and its helpers end together.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", deps.chromium.display()));

        let started = Instant::now();
        let outcome = tokio::select! {
            r = rx.recv() => Ok(r.expect("a result")),
            status = chromium.wait() => Err(format!("chromium exited early: {status:?}")),
            _ = tokio::time::sleep(PAGE_TIMEOUT) => {
                Err(format!("no report from the page within {PAGE_TIMEOUT:?}"))
            }
        };
        if let Some(pid) = chromium.id() {
            // SAFETY: kill(2) on the process group this test started; no memory involved.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
        let _ = chromium.start_kill();
        let _ = chromium.wait().await;
        server.abort();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        match outcome {
            Ok(result) => {
                eprintln!("page {url} reported in {:?}: {result}", started.elapsed());
                PageRun { result, log }
            }
            Err(why) => panic!("{why} ({url})\n--- chromium ---\n{log}"),
        }
    }
}

/// The page's configuration: upload `size` bytes of `seed` as product/version/filename.
fn page_config(app: &TestApp, token: &str, product: &str, size: usize, seed: u32) -> Value {
    json!({
        "endpoint": app.url("/uploads"),
        "token": token,
        "product": product,
        "version": "1.0.0",
        "filename": "from-the-browser.bin",
        "size": size,
        "seed": seed,
        "chunkSize": MIB,
    })
}

// Small tus helpers of this file's own (tests/common has its own in the making).

/// `Upload-Metadata` in tus format: `key base64(value)` pairs, comma-separated.
fn metadata(pairs: &[(&str, &str)]) -> String {
    use base64::Engine;
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k} {}",
                base64::engine::general_purpose::STANDARD.encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `POST /uploads` of `length` bytes as `token` (asserts 201); the relative `Location`.
async fn create_upload(app: &TestApp, token: &str, length: u64, meta: &[(&str, &str)]) -> String {
    let r = app
        .send(
            app.request(Method::POST, "/uploads", Some(token))
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Length", length.to_string())
                .header("Upload-Metadata", metadata(meta)),
        )
        .await;
    r.assert_status(201);
    let location = r.header("location").expect("Location");
    assert!(location.starts_with("/uploads/"), "{location}");
    location
}

/// `GET /uploads{query}` (asserts 200): the unfinished uploads `token` sees.
async fn unfinished(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let r = app.get(&format!("/uploads{query}"), Some(token)).await;
    r.assert_status(200);
    r.json()["uploads"]
        .as_array()
        .unwrap_or_else(|| panic!("no uploads array: {}", r.text()))
        .clone()
}

async fn upload_token(app: &TestApp, product: &str) -> String {
    app.token_with(
        product,
        Perms {
            upload: true,
            download: true,
            ..Perms::default()
        },
    )
    .await
}

#[tokio::test]
async fn a_page_on_a_configured_origin_uploads_with_tus_js_client_in_chromium() {
    browser_deps();
    let page = PageOrigin::bind().await;
    // A list (with a blank after the comma) in which the page's origin is the second.
    let app = TestApp::builder()
        .env(
            "DEPOT_CORS_ORIGINS",
            format!("https://ci.example.com, {}", page.origin()),
        )
        .start()
        .await;
    let product = app.product().await;
    let token = upload_token(&app, &product).await;
    // A few MiB in 1 MiB chunks: a POST and four cross-origin PATCHes, the last one short.
    let size = 3 * MIB + 12_345;
    let seed = 0x5eed_b10b;
    let bytes = page_bytes(seed, size);
    let digest = sha256_hex(&bytes);

    let run = page
        .run(page_config(&app, &token, &product, size, seed))
        .await;
    let r = &run.result;
    assert_eq!(
        r["ok"], true,
        "the page's upload failed: {r}\n--- chromium ---\n{}",
        run.log
    );
    assert_eq!(r["size"], size, "{r}");
    assert_eq!(
        r["sha256"], digest,
        "the page's Blob is not the test's bytes: {r}"
    );
    let url = r["url"].as_str().expect("the upload's URL");
    assert!(
        url.starts_with(&app.url("/uploads/")),
        "tus-js-client resolved the relative Location against the endpoint: {url}"
    );
    assert_eq!(r["patches"], size.div_ceil(MIB), "one PATCH a chunk: {r}");
    // Every offset Depot answered was readable across origins (an exposed header).
    let offsets: Vec<String> = (1..=size.div_ceil(MIB))
        .map(|i| (i * MIB).min(size).to_string())
        .collect();
    assert_eq!(r["offsets"], json!(offsets), "{r}");
    // The browser downloaded it back across origins too.
    assert_eq!(r["download_size"], size, "{r}");
    assert_eq!(r["download_sha256"], digest, "{r}");

    // On the server: the version is published with exactly the Blob's bytes.
    assert_eq!(app.versions(&product).await, vec!["1.0.0".to_string()]);
    let d = app.download(&token, &product, "1.0.0").await;
    d.assert_status(200);
    assert_eq!(sha256_hex(&d.body), digest);
    assert_eq!(
        d.header("x-checksum-sha256").as_deref(),
        Some(digest.as_str())
    );
    let p = app.fetch_product(&product).await;
    assert!(
        p.to_string().contains("from-the-browser.bin"),
        "the file keeps the page's filename: {p}"
    );
    assert!(
        unfinished(&app, &token, "").await.is_empty(),
        "nothing left unfinished"
    );
    app.assert_no_secrets_logged();
}

#[tokio::test]
async fn a_page_on_another_origin_is_refused_by_the_browser_and_nothing_is_stored() {
    browser_deps();
    let page = PageOrigin::bind().await;
    let elsewhere = PageOrigin::bind().await;
    // Origins close to the page's, none of them the page's: same host on another port,
    // and the same port under another host name.
    let app = TestApp::builder()
        .env(
            "DEPOT_CORS_ORIGINS",
            format!("{},http://localhost:{}", elsewhere.origin(), page.port()),
        )
        .start()
        .await;
    let product = app.product().await;
    let token = upload_token(&app, &product).await;

    let run = page
        .run(page_config(&app, &token, &product, 2 * MIB, 7))
        .await;
    let r = &run.result;
    assert_eq!(r["ok"], false, "the upload went through: {r}");
    assert_eq!(r["stage"], "upload", "{r}");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("failed to create upload") && error.contains("response code: n/a"),
        "tus-js-client could not create the upload nor read an answer: {r}"
    );
    for line in run.log.lines().filter(|l| l.contains("CORS")) {
        eprintln!("chromium: {line}");
    }
    let blocked = format!("Access to XMLHttpRequest at '{}'", app.url("/uploads"));
    assert!(
        run.log.contains(&blocked) && run.log.contains("blocked by CORS policy"),
        "the browser's CORS check refused it\n--- chromium ---\n{}",
        run.log
    );
    assert!(r["offsets"].as_array().is_some_and(|o| o.is_empty()), "{r}");

    // Nothing stored: no version, no upload (the token's own list and the admin's).
    assert!(app.versions(&product).await.is_empty());
    assert!(unfinished(&app, &token, "").await.is_empty());
    assert!(
        unfinished(&app, app.admin(), &format!("?product={product}"))
            .await
            .is_empty()
    );
    app.download(&token, &product, "1.0.0")
        .await
        .assert_status(404);
}

/// The names in a comma-separated header, lower-cased.
fn names(r: &Reply, header: &str) -> BTreeSet<String> {
    r.header(header)
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

#[track_caller]
fn assert_lists(r: &Reply, header: &str, wanted: &[&str]) {
    let listed = names(r, header);
    for w in wanted {
        assert!(
            listed.contains(*w) || listed.contains("*"),
            "{header} lacks {w}: {listed:?} ({} {:?})",
            r.status,
            r.headers
        );
    }
}

fn access_control_headers(r: &Reply) -> Vec<String> {
    r.headers
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

#[track_caller]
fn assert_discovery(r: &Reply) {
    assert_eq!(r.header("tus-version").as_deref(), Some("1.0.0"), "{r:?}");
    assert_lists(
        r,
        "tus-extension",
        &[
            "creation",
            "creation-with-upload",
            "termination",
            "expiration",
            "checksum",
        ],
    );
    let max: u64 = r
        .header("tus-max-size")
        .unwrap_or_else(|| panic!("no Tus-Max-Size: {r:?}"))
        .parse()
        .expect("numeric Tus-Max-Size");
    assert!(max > 0);
}

/// The tus headers a browser client must read.
const EXPOSED: &[&str] = &[
    "location",
    "upload-offset",
    "upload-length",
    "upload-expires",
];

#[tokio::test]
async fn preflights_and_exposed_tus_headers_without_a_browser() {
    let origin = "http://127.0.0.1:9";
    let app = TestApp::builder()
        .env("DEPOT_CORS_ORIGINS", origin)
        .start()
        .await;
    let product = app.product().await;
    let meta = [
        ("product", product.as_str()),
        ("version", "1.0.0"),
        ("filename", "a.bin"),
    ];
    let location = create_upload(&app, app.admin(), 10, &meta).await;

    // The preflight of a PATCH to the upload, as Chromium sends it.
    let preflight = |path: String, from: &'static str, method: &'static str| {
        let req = app
            .request(Method::OPTIONS, &path, None)
            .header("Origin", from)
            .header("Access-Control-Request-Method", method)
            .header(
                "Access-Control-Request-Headers",
                "content-type,tus-resumable,upload-offset,x-api-token",
            );
        app.send(req)
    };
    let r = preflight(location.clone(), origin, "PATCH").await;
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
    assert_lists(
        &r,
        "access-control-allow-methods",
        &["patch", "head", "post"],
    );
    assert_lists(
        &r,
        "access-control-allow-headers",
        &[
            "content-type",
            "tus-resumable",
            "upload-offset",
            "x-api-token",
        ],
    );
    assert!(
        r.header("access-control-allow-credentials").is_none(),
        "the token is a header, never a cookie: {:?}",
        r.headers
    );
    assert_lists(&r, "vary", &["origin"]);
    // The preflight of the creation: allowed, with tus discovery on it too.
    let r = preflight("/uploads".to_string(), origin, "POST").await;
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(origin)
    );
    assert_discovery(&r);
    // Another origin's preflight: no grant.
    let r = preflight(location.clone(), "http://127.0.0.1:10", "PATCH").await;
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "{:?}",
        r.headers
    );

    // Plain tus discovery (no Origin): the tus headers, no CORS grant.
    let r = app
        .send(app.request(Method::OPTIONS, "/uploads", None))
        .await;
    assert!(r.status.is_success(), "{} {}", r.status, r.text());
    assert_discovery(&r);
    assert!(r.header("access-control-allow-origin").is_none());

    // Answers to the allowed origin expose the tus headers: creation, HEAD, PATCH, and
    // errors (a browser client reads their status only when they carry the grant too).
    let cors = |method: Method, path: &str| {
        app.request(method, path, Some(app.admin()))
            .header("Origin", origin)
            .header("Tus-Resumable", "1.0.0")
    };
    let created = app
        .send(
            cors(Method::POST, "/uploads")
                .header("Upload-Length", "10")
                .header(
                    "Upload-Metadata",
                    metadata(&[
                        ("product", &product),
                        ("version", "2.0.0"),
                        ("filename", "b.bin"),
                    ]),
                ),
        )
        .await;
    created.assert_status(201);
    let second = created.header("location").expect("Location");
    let head = app.send(cors(Method::HEAD, &second)).await;
    head.assert_status(200);
    let patch = app
        .send(
            cors(Method::PATCH, &second)
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Offset", "0")
                .body(vec![1u8; 4]),
        )
        .await;
    patch.assert_status(204);
    let mismatch = app
        .send(
            cors(Method::PATCH, &second)
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Offset", "0")
                .body(vec![1u8; 4]),
        )
        .await;
    mismatch.assert_error(409, "offset_mismatch");
    let unknown = app
        .send(cors(
            Method::HEAD,
            "/uploads/00000000000000000000000000000000",
        ))
        .await;
    assert_eq!(unknown.status.as_u16(), 404, "{:?}", unknown.headers);
    for r in [&created, &head, &patch, &mismatch, &unknown] {
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some(origin),
            "{} {:?}",
            r.status,
            r.headers
        );
        assert_lists(r, "access-control-expose-headers", EXPOSED);
        assert_lists(r, "vary", &["origin"]);
    }

    // `*`: any origin, still no credentials.
    let any = TestApp::builder()
        .env("DEPOT_CORS_ORIGINS", "*")
        .start()
        .await;
    let r = any
        .send(
            any.request(Method::OPTIONS, "/uploads", None)
                .header("Origin", "http://anywhere.example")
                .header("Access-Control-Request-Method", "POST")
                .header(
                    "Access-Control-Request-Headers",
                    "tus-resumable,upload-length,upload-metadata,x-api-token",
                ),
        )
        .await;
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert!(r.header("access-control-allow-credentials").is_none());
    assert_discovery(&r);

    // Without DEPOT_CORS_ORIGINS: no access-control-* header at all, on a preflight or
    // on an answer, and discovery still works.
    let plain = TestApp::start().await;
    let preflight = plain
        .send(
            plain
                .request(Method::OPTIONS, "/uploads", None)
                .header("Origin", origin)
                .header("Access-Control-Request-Method", "POST")
                .header(
                    "Access-Control-Request-Headers",
                    "tus-resumable,x-api-token",
                ),
        )
        .await;
    assert_discovery(&preflight);
    let product = plain.product().await;
    let created = plain
        .send(
            plain
                .request(Method::POST, "/uploads", Some(plain.admin()))
                .header("Origin", origin)
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Length", "10")
                .header(
                    "Upload-Metadata",
                    metadata(&[
                        ("product", &product),
                        ("version", "1.0.0"),
                        ("filename", "a.bin"),
                    ]),
                ),
        )
        .await;
    created.assert_status(201);
    let head = plain
        .send(
            plain
                .request(
                    Method::HEAD,
                    &created.header("location").expect("Location"),
                    Some(plain.admin()),
                )
                .header("Origin", origin)
                .header("Tus-Resumable", "1.0.0"),
        )
        .await;
    head.assert_status(200);
    for r in [&preflight, &created, &head] {
        assert!(
            access_control_headers(r).is_empty(),
            "no CORS without DEPOT_CORS_ORIGINS: {} {:?}",
            r.status,
            r.headers
        );
    }
}
