//! Test harness: spawns the real `depot` binary against a fresh data directory and
//! talks to it over HTTP.
//!
//! Backends: embedded (redb + filesystem) by default. With `DEPOT_TEST_BACKEND=production`
//! the server also gets MongoDB, Redis and S3 settings from `DEPOT_TEST_MONGO_URL`,
//! `DEPOT_TEST_REDIS_URL` and `DEPOT_TEST_S3_ENDPOINT` (AWS credentials are inherited),
//! each run in its own database and key prefix.
#![allow(dead_code)]

pub mod kill;
pub mod streaming;

use rand::Rng;
use rand::distr::Alphanumeric;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub mod oidc;
pub mod secrets;
pub mod webhook;

pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

pub fn random_string(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A name unique within the test process (and random across runs).
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{n}-{}", random_string(6).to_lowercase())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Deterministic pseudo-random bytes, distinct per seed.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Production,
}

impl Backend {
    pub fn from_env() -> Backend {
        match std::env::var("DEPOT_TEST_BACKEND").as_deref() {
            Ok("production") => Backend::Production,
            Ok("") | Ok("embedded") | Err(_) => Backend::Embedded,
            Ok(other) => {
                panic!("DEPOT_TEST_BACKEND={other:?}: expected 'production' or 'embedded'")
            }
        }
    }
}

fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "DEPOT_TEST_BACKEND=production needs {name}: set DEPOT_TEST_MONGO_URL, \
             DEPOT_TEST_REDIS_URL and DEPOT_TEST_S3_ENDPOINT (AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY are passed on from the environment)"
        ),
    }
}

/// Flags of a grant; `Perms::default()` is a grant with no flag set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Perms {
    pub maintainer: bool,
    pub download: bool,
    pub upload: bool,
    pub delete: bool,
}

impl Perms {
    pub const ALL: Perms = Perms {
        maintainer: true,
        download: true,
        upload: true,
        delete: true,
    };
    pub const MAINTAINER: Perms = Perms {
        maintainer: true,
        download: false,
        upload: false,
        delete: false,
    };
    pub const DOWNLOAD: Perms = Perms {
        maintainer: false,
        download: true,
        upload: false,
        delete: false,
    };
    pub const UPLOAD: Perms = Perms {
        maintainer: false,
        download: false,
        upload: true,
        delete: false,
    };
    pub const DELETE: Perms = Perms {
        maintainer: false,
        download: false,
        upload: false,
        delete: true,
    };

    pub fn json(&self) -> Value {
        json!({
            "maintainer": self.maintainer,
            "download": self.download,
            "upload": self.upload,
            "delete": self.delete,
        })
    }
}

/// A multipart/form-data body built by hand, so tests control field order and framing.
pub struct Form {
    boundary: String,
    body: Vec<u8>,
}

impl Default for Form {
    fn default() -> Self {
        Self::new()
    }
}

impl Form {
    pub fn new() -> Form {
        Form {
            boundary: format!("depot-test-{}", random_string(24)),
            body: Vec::new(),
        }
    }

    pub fn text(mut self, name: &str, value: &str) -> Form {
        self.body.extend_from_slice(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n",
                self.boundary
            )
            .as_bytes(),
        );
        self
    }

    /// A file part; `file_name` goes into the Content-Disposition verbatim.
    pub fn file(mut self, name: &str, file_name: Option<&str>, bytes: &[u8]) -> Form {
        let disposition = match file_name {
            Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\""),
            None => format!("form-data; name=\"{name}\""),
        };
        self.body.extend_from_slice(
            format!(
                "--{}\r\nContent-Disposition: {disposition}\r\nContent-Type: application/octet-stream\r\n\r\n",
                self.boundary
            )
            .as_bytes(),
        );
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The parts so far, without the closing delimiter (for truncated uploads).
    pub fn unterminated(&self) -> Vec<u8> {
        self.body.clone()
    }

    pub fn finish(mut self) -> (String, Vec<u8>) {
        self.body
            .extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        (self.content_type(), self.body)
    }

    /// The usual upload form: product, version, file.
    pub fn upload(product: &str, version: &str, file_name: &str, bytes: &[u8]) -> Form {
        Form::new()
            .text("product", product)
            .text("version", version)
            .file("file", Some(file_name), bytes)
    }
}

/// A response read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub async fn read(resp: Response) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.expect("read response body").to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response ({}) is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_string())
    }

    /// The `code` of a JSON error body; `None` for non-errors.
    pub fn code(&self) -> Option<String> {
        if self.status.is_success() || self.status.is_redirection() {
            return None;
        }
        Some(self.error_code())
    }

    /// Asserts the body is a JSON error `{"error": "...", "code": "..."}` and returns the code.
    pub fn error_code(&self) -> String {
        let ct = self.header("content-type").unwrap_or_default();
        assert!(
            ct.starts_with("application/json"),
            "error response ({}) is not JSON (content-type {ct:?}): {}",
            self.status,
            self.text()
        );
        let v = self.json();
        assert!(
            v["error"].is_string(),
            "error body has no 'error' string: {v}"
        );
        v["code"]
            .as_str()
            .unwrap_or_else(|| panic!("error body has no 'code' string: {v}"))
            .to_string()
    }

    /// Asserts status and error code together, with the body in the message.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text()
        );
        assert_eq!(
            self.error_code(),
            code,
            "unexpected error code; body: {}",
            self.text()
        );
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text()
        );
    }
}

/// A raw HTTP/1.1 exchange, for requests a URL library would normalise (`..`, `%2e%2e`).
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawReply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "raw response ({}) is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "unexpected status; response:\n{}\n{}",
            self.head,
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.json()["code"],
            code,
            "unexpected code; body: {}",
            String::from_utf8_lossy(&self.body)
        );
    }
}

pub struct TestAppBuilder {
    env: Vec<(String, String)>,
}

impl TestAppBuilder {
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Runs against the same MongoDB database, S3 prefix and admin token as `other`: a
    /// second replica of the same deployment.
    pub fn share_backends_with(mut self, other: &TestApp) -> Self {
        for key in [
            "DEPOT_MONGO_DB",
            "DEPOT_S3_PREFIX",
            "DEPOT_ADMIN_TOKEN",
            "DEPOT_SIGNING_KEY",
        ] {
            if let Some(value) = other.setting(key) {
                self.env.push((key.to_string(), value));
            }
        }
        self
    }

    pub fn max_upload_bytes(self, bytes: u64) -> Self {
        self.env("DEPOT_MAX_UPLOAD_BYTES", bytes)
    }

    pub async fn start(self) -> TestApp {
        let backend = Backend::from_env();
        let root = tempfile::Builder::new()
            .prefix("depot-test-")
            .tempdir()
            .expect("temp dir");
        // Nested, so anything escaping the data dir by a few `..` still lands in `root`.
        let data_dir = root.path().join("srv").join("depot").join("data");
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        // A replica sharing another app's backends also shares its admin token.
        let admin = self
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "DEPOT_ADMIN_TOKEN")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| format!("depot_{}", random_string(43)));
        let mut env = vec![
            ("DEPOT_DATA_DIR".to_string(), data_dir.display().to_string()),
            ("DEPOT_ADMIN_TOKEN".to_string(), admin.clone()),
            ("DEPOT_SHUTDOWN_GRACE_SECONDS".to_string(), "5".to_string()),
            ("NO_COLOR".to_string(), "1".to_string()),
        ];
        if backend == Backend::Production {
            let run = random_string(10).to_lowercase();
            env.extend([
                (
                    "DEPOT_MONGO_URL".to_string(),
                    required_env("DEPOT_TEST_MONGO_URL"),
                ),
                ("DEPOT_MONGO_DB".to_string(), format!("t_{run}")),
                (
                    "DEPOT_REDIS_URL".to_string(),
                    required_env("DEPOT_TEST_REDIS_URL"),
                ),
                ("DEPOT_S3_BUCKET".to_string(), "depot-test".to_string()),
                (
                    "DEPOT_S3_ENDPOINT".to_string(),
                    required_env("DEPOT_TEST_S3_ENDPOINT"),
                ),
                ("DEPOT_S3_CREATE_BUCKET".to_string(), "true".to_string()),
                ("DEPOT_S3_PREFIX".to_string(), format!("t_{run}")),
                ("DEPOT_S3_REGION".to_string(), "us-east-1".to_string()),
                // Required with Redis: it keys the MAC of the cached token documents.
                ("DEPOT_SIGNING_KEY".to_string(), random_string(64)),
            ]);
        }
        env.extend(self.env);
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            // Every request on a fresh connection: nothing stale survives a restart.
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("reqwest client");
        let mut app = TestApp {
            child: None,
            port: 0,
            root,
            data_dir,
            admin: admin.clone(),
            env,
            backend,
            client,
            secrets: Mutex::new(vec![admin]),
        };
        app.launch(None).await;
        app
    }
}

pub struct TestApp {
    child: Option<Child>,
    port: u16,
    root: tempfile::TempDir,
    data_dir: PathBuf,
    admin: String,
    env: Vec<(String, String)>,
    pub backend: Backend,
    client: reqwest::Client,
    /// Every raw token this test saw; none may appear in the server's log.
    secrets: Mutex<Vec<String>>,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder { env: Vec::new() }
    }

    pub async fn start() -> TestApp {
        TestApp::builder().start().await
    }

    /// The value of a `DEPOT_*` setting this server was started with (last one wins).
    pub fn setting(&self, key: &str) -> Option<String> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin(&self) -> &str {
        &self.admin
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(|c| c.id())
            .expect("the server is running")
    }

    /// The server's peak resident memory so far (`VmHWM` in /proc), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The temp directory holding the data dir (nested a few levels down) and the logs.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.root.path().join("depot.stderr.log")
    }

    pub fn stdout_path(&self) -> PathBuf {
        self.root.path().join("depot.stdout.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let start = log.len().saturating_sub(4000);
        let start = (start..log.len())
            .find(|i| log.is_char_boundary(*i))
            .unwrap_or(log.len());
        let stdout = std::fs::read_to_string(self.stdout_path()).unwrap_or_default();
        format!(
            "--- stderr (tail) ---\n{}\n--- stdout ---\n{stdout}",
            &log[start..]
        )
    }

    /// Starts the server; `port` None picks a free one (retrying if another process takes it).
    async fn launch(&mut self, port: Option<u16>) {
        let attempts = if port.is_some() { 1 } else { 3 };
        for attempt in 1..=attempts {
            self.port = port.unwrap_or_else(free_port);
            let open = |path: PathBuf| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("open log file")
            };
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_depot"));
            cmd.arg("serve")
                .stdin(Stdio::null())
                .stdout(Stdio::from(open(self.stdout_path())))
                .stderr(Stdio::from(open(self.stderr_path())))
                .kill_on_drop(true);
            // Only the settings this harness chooses: nothing leaks in from the caller's shell.
            for (key, _) in std::env::vars() {
                if key.starts_with("DEPOT_")
                    && key != "DEPOT_LOG"
                    && !key.starts_with("DEPOT_TEST_")
                {
                    cmd.env_remove(key);
                }
            }
            cmd.env("DEPOT_LISTEN", format!("127.0.0.1:{}", self.port));
            for (k, v) in &self.env {
                cmd.env(k, v);
            }
            self.child = Some(cmd.spawn().expect("spawn the depot binary"));
            match self.wait_ready().await {
                Ok(()) => return,
                Err(exited)
                    if exited && attempt < attempts && self.log().contains("cannot listen") =>
                {
                    continue;
                }
                Err(true) => panic!("depot exited during start-up\n{}", self.log_tail()),
                Err(false) => panic!(
                    "depot did not become ready within {STARTUP_TIMEOUT:?}\n{}",
                    self.log_tail()
                ),
            }
        }
    }

    /// Polls /livez, then proves it is our server by fetching our admin token (a server
    /// that does not know it is someone else's, and ours then fails to bind).
    /// Err(true) when the child exited.
    async fn wait_ready(&mut self) -> Result<(), bool> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return Err(true);
            }
            if Instant::now() > deadline {
                return Err(false);
            }
            let live = self
                .client
                .get(self.url("/livez"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if matches!(&live, Ok(r) if r.status() == StatusCode::OK) {
                let me = self
                    .client
                    .get(self.url(&format!("/fetch/{}", self.admin)))
                    .header("X-Api-Token", &self.admin)
                    .send()
                    .await;
                if matches!(&me, Ok(r) if r.status() == StatusCode::OK) {
                    return Ok(());
                }
                // Another test's server took the port between `free_port` and our bind:
                // ours exits with "cannot listen" and `launch` retries on another port.
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then wait for the process to exit.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let status = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -TERM {pid} failed");
        }
        match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
            Ok(status) => {
                let status = status.expect("wait for depot");
                assert!(
                    status.success(),
                    "depot exited with {status} after SIGTERM\n{}",
                    self.log_tail()
                );
            }
            Err(_) => panic!(
                "depot did not exit within 20 s of SIGTERM\n{}",
                self.log_tail()
            ),
        }
    }

    /// Stops the server and starts it again on the same data dir, port and backends.
    pub async fn restart(&mut self) {
        self.stop().await;
        let port = self.port;
        self.launch(Some(port)).await;
    }

    /// Remembers a raw secret so the log check looks for it.
    pub fn remember_secret(&self, raw: &str) {
        self.secrets.lock().unwrap().push(raw.to_string());
    }

    /// No raw token the test saw (nor its SHA-256) appears in the server's stderr or stdout.
    pub fn assert_no_secrets_logged(&self) {
        let log = self.log();
        let stdout = std::fs::read_to_string(self.stdout_path()).unwrap_or_default();
        for secret in self.secrets.lock().unwrap().iter() {
            assert!(
                !log.contains(secret.as_str()),
                "a raw token appears in the server's stderr log: {secret}"
            );
            assert!(
                !stdout.contains(secret.as_str()),
                "a raw token appears in the server's stdout: {secret}"
            );
            let hash = sha256_hex(secret.as_bytes());
            assert!(
                !log.contains(&hash),
                "a token hash appears in the server's stderr log"
            );
        }
    }

    /// Number of stored blobs, partial ones included: files under `<data_dir>/blobs` on
    /// the embedded backend; objects plus incomplete multipart uploads under this
    /// server's prefix on S3.
    pub fn blob_count(&self) -> Option<usize> {
        match self.backend {
            Backend::Embedded => Some(count_files(&self.data_dir.join("blobs"))),
            Backend::Production => Some(self.s3_count()),
        }
    }

    /// Object keys and the number of incomplete multipart uploads under this server's
    /// S3 prefix, looked up behind Depot's back.
    pub async fn s3_listing(&self) -> (Vec<String>, usize) {
        let client = s3_client(&self.setting("DEPOT_S3_ENDPOINT").expect("S3 endpoint"));
        let bucket = self.setting("DEPOT_S3_BUCKET").expect("S3 bucket");
        let prefix = format!("{}/", self.setting("DEPOT_S3_PREFIX").expect("S3 prefix"));
        let objects = client
            .list_objects_v2()
            .bucket(&bucket)
            .prefix(&prefix)
            .send()
            .await
            .expect("list objects");
        let keys = objects
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect();
        let uploads = client
            .list_multipart_uploads()
            .bucket(&bucket)
            .prefix(&prefix)
            .send()
            .await
            .expect("list multipart uploads");
        (keys, uploads.uploads().len())
    }

    /// `s3_listing` as a count, from synchronous code: on a thread of its own, since the
    /// caller may be inside a single-threaded test runtime.
    fn s3_count(&self) -> usize {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    let (keys, uploads) = runtime.block_on(self.s3_listing());
                    keys.len() + uploads
                })
                .join()
                .expect("S3 listing thread")
        })
    }

    /// Polls until `blob_count()` is `expected` (or is `None`); panics after 10 s.
    pub async fn wait_blob_count(&self, expected: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.blob_count() {
                None => return,
                Some(n) if n == expected => return,
                Some(n) if Instant::now() > deadline => {
                    panic!(
                        "expected {expected} blob files, found {n}: {:?}",
                        list_files(&self.data_dir.join("blobs"))
                    )
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    #[track_caller]
    pub fn assert_blob_count(&self, expected: usize) {
        if let Some(n) = self.blob_count() {
            assert_eq!(
                n,
                expected,
                "blob files: {:?}",
                list_files(&self.data_dir.join("blobs"))
            );
        }
    }

    // ---- requests -------------------------------------------------------------------

    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.header("X-Api-Token", t);
        }
        req
    }

    pub async fn send(&self, req: RequestBuilder) -> Reply {
        Reply::read(req.send().await.expect("send request")).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(self.request(Method::GET, path, token)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(self.request(Method::DELETE, path, token)).await
    }

    pub async fn put_json(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send(self.request(Method::PUT, path, token).json(body))
            .await
    }

    pub async fn delete_json(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send(self.request(Method::DELETE, path, token).json(body))
            .await
    }

    /// `PUT /register` as admin; returns the raw token.
    pub async fn register(&self, admin: bool) -> String {
        let r = self
            .put_json("/register", Some(&self.admin), &json!({ "admin": admin }))
            .await;
        r.assert_status(201);
        let raw = r.text();
        self.remember_secret(&raw);
        raw
    }

    /// The public id (`tok_...`) of a raw token.
    pub async fn token_id(&self, raw: &str) -> String {
        let r = self.get(&format!("/fetch/{raw}"), Some(&self.admin)).await;
        r.assert_status(200);
        r.json()["id"].as_str().expect("token id").to_string()
    }

    pub async fn prune(&self, raw_or_id: &str) {
        self.delete(&format!("/prune/{raw_or_id}"), Some(&self.admin))
            .await
            .assert_status(204);
    }

    pub async fn create_product(&self, token: &str, name: &str) {
        let r = self
            .put_json("/product/create", Some(token), &json!({ "name": name }))
            .await;
        r.assert_status(201);
    }

    /// Creates a product as admin.
    pub async fn product(&self) -> String {
        let name = unique("prod");
        self.create_product(&self.admin, &name).await;
        name
    }

    /// Grants `perms` on `product` to `token` (raw or id), as admin.
    pub async fn grant(&self, product: &str, token: &str, perms: Perms) {
        let body = json!({ "product": product, "token": token, "permissions": perms.json() });
        self.put_json("/product/modify/addToken", Some(&self.admin), &body)
            .await
            .assert_status(201);
    }

    /// A fresh token with `perms` on `product`.
    pub async fn token_with(&self, product: &str, perms: Perms) -> String {
        let raw = self.register(false).await;
        self.grant(product, &raw, perms).await;
        raw
    }

    pub async fn upload_form(&self, token: Option<&str>, form: Form) -> Reply {
        let (ct, body) = form.finish();
        let req = self
            .request(Method::POST, "/product/upload", token)
            .header("Content-Type", ct)
            .body(body);
        self.send(req).await
    }

    pub async fn upload(&self, token: &str, product: &str, version: &str, bytes: &[u8]) -> Reply {
        self.upload_form(
            Some(token),
            Form::upload(product, version, "artifact.bin", bytes),
        )
        .await
    }

    /// Uploads and asserts 201; returns the response JSON.
    pub async fn upload_ok(
        &self,
        token: &str,
        product: &str,
        version: &str,
        bytes: &[u8],
    ) -> Value {
        let r = self.upload(token, product, version, bytes).await;
        r.assert_status(201);
        r.json()
    }

    pub async fn download(&self, token: &str, product: &str, version: &str) -> Reply {
        self.get(
            &format!("/product/download/{product}/{version}"),
            Some(token),
        )
        .await
    }

    /// Product metadata as admin (asserts 200).
    pub async fn fetch_product(&self, product: &str) -> Value {
        let r = self
            .get(&format!("/product/fetch/{product}"), Some(&self.admin))
            .await;
        r.assert_status(200);
        r.json()
    }

    /// Version names of a product, as admin.
    pub async fn versions(&self, product: &str) -> Vec<String> {
        let p = self.fetch_product(product).await;
        p["versions"]
            .as_object()
            .expect("versions object")
            .keys()
            .cloned()
            .collect()
    }

    /// Sends `head` (request line and headers, CRLF-separated, without the final blank
    /// line; `Host` and `Connection: close` are added) and `body` over a fresh
    /// connection and reads the whole response.
    pub async fn raw_request(&self, head: &str, body: &[u8]) -> RawReply {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to depot");
        let mut request = format!(
            "{head}\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        )
        .into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).await.expect("write request");
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
            .await
            .expect("response within 30 s")
            .expect("read response");
        parse_raw_response(&response)
    }
}

pub fn parse_raw_response(bytes: &[u8]) -> RawReply {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no header end in response: {}",
                String::from_utf8_lossy(bytes)
            )
        });
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let mut body = bytes[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    RawReply { status, head, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if !std::thread::panicking() {
            self.assert_no_secrets_logged();
        }
    }
}

pub fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(_) => out.push(path),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

pub fn count_files(dir: &Path) -> usize {
    list_files(dir).len()
}

/// Polls `check` until it returns true; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A direct S3 client on a test store, to look into the bucket behind Depot's back.
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{
        BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
        ResponseChecksumValidation,
    };
    let key = std::env::var("AWS_ACCESS_KEY_ID").expect("AWS_ACCESS_KEY_ID");
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").expect("AWS_SECRET_ACCESS_KEY");
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(key, secret, None, None, "test"))
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

// ---- resumable (tus 1.0) and direct-to-bucket uploads (issue 14) -----------------------

/// The python of the venv with the real tus client (`tuspy`) that `scripts/tus-venv.sh`
/// makes, once per test binary. Panics when the venv cannot be made: the tests that need
/// it fail, they never skip.
pub fn tus_python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tus-venv.sh");
            let out = std::process::Command::new(&script)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
            assert!(
                out.status.success(),
                "{} failed ({}): the tuspy venv is needed by these tests\n{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            let python = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            assert!(
                python.is_file(),
                "scripts/tus-venv.sh printed {python:?}, which is not a file"
            );
            python
        })
        .clone()
}

/// `Upload-Metadata` in tus format: `key base64(value)` pairs, comma-separated.
pub fn tus_metadata(pairs: &[(&str, &str)]) -> String {
    use base64::Engine;
    pairs
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.to_string()
            } else {
                format!(
                    "{k} {}",
                    base64::engine::general_purpose::STANDARD.encode(v.as_bytes())
                )
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The id in a tus `Location` (`/uploads/{id}`).
pub fn tus_id(location: &str) -> String {
    location
        .rsplit('/')
        .next()
        .expect("an id after the last '/'")
        .to_string()
}

/// `base64` of `bytes` (standard alphabet, padded): `Upload-Checksum` values.
pub fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// SHA-256 of a file by the real `sha256sum` binary (the reference for a download).
pub fn sha256sum_file(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {} failed", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest from sha256sum")
        .to_string()
}

/// What `tests/tus/upload.py` (tuspy) reported.
#[derive(Debug)]
pub struct TusRun {
    /// The upload went as far as asked.
    pub ok: bool,
    /// The script's JSON report (see tests/tus/upload.py).
    pub report: Value,
    pub stderr: String,
}

impl TusRun {
    /// The absolute URL of the upload.
    pub fn url(&self) -> String {
        self.report["url"]
            .as_str()
            .unwrap_or_else(|| panic!("no upload URL in {}", self.report))
            .to_string()
    }

    pub fn offset(&self) -> u64 {
        self.report["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("no offset in {}", self.report))
    }

    /// Status of the refused request (tuspy failed).
    pub fn status(&self) -> Option<u16> {
        self.report["status"].as_u64().map(|s| s as u16)
    }

    /// The JSON error code of the refusal's body.
    pub fn code(&self) -> Option<String> {
        let body: Value = serde_json::from_str(self.report["body"].as_str()?).ok()?;
        body["code"].as_str().map(str::to_string)
    }

    #[track_caller]
    pub fn assert_ok(&self) {
        assert!(
            self.ok,
            "tuspy failed: {}\n--- stderr ---\n{}",
            self.report, self.stderr
        );
    }

    /// Asserts tuspy stopped on a refusal with this status and JSON error code.
    #[track_caller]
    pub fn assert_refused(&self, status: u16, code: &str) {
        assert!(
            !self.ok,
            "tuspy succeeded, expected {status} {code}: {}",
            self.report
        );
        assert_eq!(
            self.status(),
            Some(status),
            "tuspy's refusal: {}\n{}",
            self.report,
            self.stderr
        );
        assert_eq!(
            self.code().as_deref(),
            Some(code),
            "tuspy's refusal: {}",
            self.report
        );
    }
}

/// One run of the real tus client (tuspy, through `tests/tus/upload.py`) against a server.
pub struct TusUpload {
    endpoint: String,
    token: String,
    file: PathBuf,
    chunk_size: u64,
    meta: Vec<(String, String)>,
    url: Option<String>,
    stop_at: Option<u64>,
    checksum: Option<String>,
    bearer: bool,
}

impl TusUpload {
    /// Uploads `file` to `app`'s `/uploads` as `token`, `chunk_size` bytes per PATCH.
    pub fn new(app: &TestApp, token: &str, file: &Path, chunk_size: u64) -> TusUpload {
        TusUpload {
            endpoint: app.url("/uploads"),
            token: token.to_string(),
            file: file.to_path_buf(),
            chunk_size,
            meta: Vec::new(),
            url: None,
            stop_at: None,
            checksum: None,
            bearer: false,
        }
    }

    /// An `Upload-Metadata` entry.
    pub fn meta(mut self, key: &str, value: &str) -> Self {
        self.meta.push((key.to_string(), value.to_string()));
        self
    }

    /// The usual `product`, `version` and `filename`.
    pub fn target(self, product: &str, version: &str, filename: &str) -> Self {
        self.meta("product", product)
            .meta("version", version)
            .meta("filename", filename)
    }

    /// Resumes the upload at `url` (absolute): tuspy asks its offset with HEAD first.
    pub fn resume(mut self, url: &str) -> Self {
        self.url = Some(url.to_string());
        self
    }

    /// Stops once the offset reaches `offset`.
    pub fn stop_at(mut self, offset: u64) -> Self {
        self.stop_at = Some(offset);
        self
    }

    /// Sends `Upload-Checksum` with every chunk: `sha1`, `sha256` or `sha256-wrong`.
    pub fn checksum(mut self, algorithm: &str) -> Self {
        self.checksum = Some(algorithm.to_string());
        self
    }

    /// Authenticates with `Authorization: Bearer` instead of `X-Api-Token`.
    pub fn bearer(mut self) -> Self {
        self.bearer = true;
        self
    }

    pub async fn run(self) -> TusRun {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tus/upload.py");
        let python = tokio::task::spawn_blocking(tus_python)
            .await
            .expect("tus venv thread");
        let mut cmd = Command::new(python);
        cmd.arg(&script)
            .arg("--endpoint")
            .arg(&self.endpoint)
            .arg("--token")
            .arg(&self.token)
            .arg("--file")
            .arg(&self.file)
            .arg("--chunk-size")
            .arg(self.chunk_size.to_string());
        for (k, v) in &self.meta {
            cmd.arg("--meta").arg(format!("{k}={v}"));
        }
        if let Some(url) = &self.url {
            cmd.arg("--url").arg(url);
        }
        if let Some(n) = self.stop_at {
            cmd.arg("--stop-at").arg(n.to_string());
        }
        if let Some(c) = &self.checksum {
            cmd.arg("--checksum").arg(c);
        }
        if self.bearer {
            cmd.arg("--auth").arg("bearer");
        }
        // Loopback only, whatever proxy the caller's shell names.
        cmd.env("NO_PROXY", "*")
            .env("no_proxy", "*")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(600), cmd.output())
            .await
            .expect("tuspy finishes within 10 min")
            .expect("run tests/tus/upload.py");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out.status.code();
        assert!(
            code == Some(0) || code == Some(2),
            "tests/tus/upload.py crashed ({}):\n{stdout}\n--- stderr ---\n{stderr}",
            out.status
        );
        let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!("tests/tus/upload.py printed no JSON ({e}): {stdout}\n{stderr}")
        });
        TusRun {
            ok: code == Some(0) && report["ok"] == true,
            report,
            stderr,
        }
    }
}

/// A file of `len` deterministic bytes (`payload(seed, len)`) in `dir`; returns its path
/// and the SHA-256 the real `sha256sum` gives.
pub fn payload_file(dir: &Path, name: &str, seed: u64, len: usize) -> (PathBuf, String) {
    let path = dir.join(name);
    std::fs::write(&path, payload(seed, len)).expect("write the payload file");
    let digest = sha256sum_file(&path);
    (path, digest)
}

impl TestApp {
    /// `POST /uploads` (tus creation) of `length` bytes with `meta` as `Upload-Metadata`.
    pub async fn tus_create(&self, token: &str, length: u64, meta: &[(&str, &str)]) -> Reply {
        let req = self
            .request(Method::POST, "/uploads", Some(token))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", length.to_string())
            .header("Upload-Metadata", tus_metadata(meta));
        self.send(req).await
    }

    /// `tus_create`, asserting 201 and the tus headers; returns the `Location`.
    pub async fn tus_create_ok(&self, token: &str, length: u64, meta: &[(&str, &str)]) -> String {
        let r = self.tus_create(token, length, meta).await;
        r.assert_status(201);
        assert_eq!(r.header("tus-resumable").as_deref(), Some("1.0.0"));
        assert_eq!(
            r.header("upload-offset").as_deref(),
            Some("0"),
            "{:?}",
            r.headers
        );
        assert!(r.header("upload-expires").is_some(), "{:?}", r.headers);
        let location = r.header("location").expect("Location");
        assert!(
            location.starts_with("/uploads/"),
            "a relative /uploads/{{id}} Location: {location}"
        );
        let id = tus_id(&location);
        assert!(
            id.len() == 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "upload id is 32 lowercase hex digits: {id}"
        );
        location
    }

    /// `HEAD` of a tus upload (`location` as in `Location`).
    pub async fn tus_head(&self, token: &str, location: &str) -> Reply {
        let req = self
            .request(Method::HEAD, location, Some(token))
            .header("Tus-Resumable", "1.0.0");
        self.send(req).await
    }

    /// The `Upload-Offset` of a tus upload (asserts 200).
    pub async fn tus_offset(&self, token: &str, location: &str) -> u64 {
        let r = self.tus_head(token, location).await;
        r.assert_status(200);
        r.header("upload-offset")
            .expect("Upload-Offset")
            .parse()
            .expect("numeric Upload-Offset")
    }

    /// `PATCH` of `body` at `offset`, with an optional `Upload-Checksum`.
    pub async fn tus_patch(
        &self,
        token: &str,
        location: &str,
        offset: u64,
        body: &[u8],
        checksum: Option<&str>,
    ) -> Reply {
        let mut req = self
            .request(Method::PATCH, location, Some(token))
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset.to_string())
            .body(body.to_vec());
        if let Some(c) = checksum {
            req = req.header("Upload-Checksum", c);
        }
        self.send(req).await
    }

    pub async fn tus_delete(&self, token: &str, location: &str) -> Reply {
        let req = self
            .request(Method::DELETE, location, Some(token))
            .header("Tus-Resumable", "1.0.0");
        self.send(req).await
    }

    /// `GET /uploads{query}` (asserts 200): the listed uploads.
    pub async fn tus_list(&self, token: &str, query: &str) -> Vec<Value> {
        let r = self.get(&format!("/uploads{query}"), Some(token)).await;
        r.assert_status(200);
        r.json()["uploads"]
            .as_array()
            .unwrap_or_else(|| panic!("no uploads array: {}", r.text()))
            .clone()
    }

    /// A PATCH cut off midway: declares `declared` body bytes at `offset`, sends `sent`,
    /// then closes the connection without reading an answer.
    pub async fn tus_cut_patch(
        &self,
        token: &str,
        location: &str,
        offset: u64,
        declared: u64,
        sent: &[u8],
    ) {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to depot");
        let head = format!(
            "PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Api-Token: {token}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\nContent-Length: {declared}\r\n\r\n",
            self.port
        );
        stream.write_all(head.as_bytes()).await.expect("send head");
        stream.write_all(sent).await.expect("send part of the body");
        stream.flush().await.expect("flush");
        // Give the server the bytes before the connection goes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(stream);
    }

    /// `POST /product/upload-url` with `body`.
    pub async fn upload_url(&self, token: &str, body: &Value) -> Reply {
        self.send(
            self.request(Method::POST, "/product/upload-url", Some(token))
                .json(body),
        )
        .await
    }

    /// `POST /product/upload-url/{id}/complete`.
    pub async fn complete_direct(&self, token: &str, upload_id: &str) -> Reply {
        self.send(self.request(
            Method::POST,
            &format!("/product/upload-url/{upload_id}/complete"),
            Some(token),
        ))
        .await
    }

    /// PUTs `bytes` to a direct-upload grant's URL with exactly its method and headers;
    /// `Content-Length` is always the body's own (a granted one is the declared size: an
    /// honest client sending other bytes says how many).
    ///
    /// Over a raw socket, the answer read while the body is still being written: a store
    /// that refuses a request from its headers (a signature that does not match) answers
    /// without reading the body, and a client that only reads once it has written it all
    /// would wait forever.
    pub async fn put_direct(&self, grant: &Value, bytes: &[u8]) -> Reply {
        let method = grant["method"].as_str().expect("method");
        let url = url::Url::parse(grant["url"].as_str().expect("url")).expect("a URL");
        assert_eq!(url.scheme(), "http", "test stores are plain HTTP: {url}");
        let host = url.host_str().expect("a host").to_string();
        let port = url.port_or_known_default().expect("a port");
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\n");
        for (k, v) in grant["headers"].as_object().expect("headers object") {
            if k.eq_ignore_ascii_case("content-length") {
                continue;
            }
            let v = v.as_str().expect("header values are strings");
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            bytes.len()
        ));
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .unwrap_or_else(|e| panic!("connect to {host}:{port}: {e}"));
        let (mut read, mut write) = stream.into_split();
        let mut request = head.into_bytes();
        request.extend_from_slice(bytes);
        let writer = tokio::spawn(async move {
            // The server may answer and close before it has it all.
            let _ = write.write_all(&request).await;
            write
        });
        let mut response = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let read_all = async {
            loop {
                if raw_response_complete(&response) {
                    break;
                }
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => response.extend_from_slice(&buf[..n]),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read_all)
            .await
            .unwrap_or_else(|_| panic!("no answer to the direct PUT within 60 s ({url})"));
        writer.abort();
        assert!(!response.is_empty(), "the direct PUT got no answer ({url})");
        let raw = parse_raw_response(&response);
        let mut headers = reqwest::header::HeaderMap::new();
        for line in raw.head.lines().skip(1) {
            if let Some((k, v)) = line.split_once(':')
                && let (Ok(k), Ok(v)) = (
                    reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()),
                    reqwest::header::HeaderValue::from_str(v.trim()),
                )
            {
                headers.append(k, v);
            }
        }
        Reply {
            status: StatusCode::from_u16(raw.status).expect("a status"),
            headers,
            body: raw.body,
        }
    }
}

/// Whether `bytes` hold a whole HTTP/1.1 response: its head, and its body by
/// `Content-Length` or to the last chunk (otherwise it ends when the connection closes).
fn raw_response_complete(bytes: &[u8]) -> bool {
    let Some(split) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&bytes[..split]).to_ascii_lowercase();
    let body = &bytes[split + 4..];
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| body.len() >= len)
}

/// Now, in unix seconds.
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs() as i64
}

/// An RFC 3339 time from a JSON body, in unix seconds.
pub fn rfc3339_secs(v: &Value) -> i64 {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("not an RFC 3339 string: {v}"));
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
        .timestamp()
}

/// A 413 `quota_exceeded` naming `quota`, with the usage the upload would reach and the limit.
pub fn assert_quota_refusal(r: &Reply, quota: &str, usage: u64, limit: u64) {
    r.assert_error(413, "quota_exceeded");
    let body = r.json();
    assert_eq!(body["quota"], quota, "{body}");
    assert_eq!(body["usage"], usage, "{body}");
    assert_eq!(body["limit"], limit, "{body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains(quota),
        "the message names the quota: {body}"
    );
}

impl TestApp {
    /// Sets a product's quota (`PUT /product/settings/{product}` as the admin).
    pub async fn set_quota(&self, product: &str, quota: Value) {
        self.put_json(
            &format!("/product/settings/{product}"),
            Some(self.admin()),
            &json!({ "quota": quota }),
        )
        .await
        .assert_status(200);
    }

    /// `GET /product/usage/{product}` as the admin.
    pub async fn usage(&self, product: &str) -> Value {
        let r = self
            .get(&format!("/product/usage/{product}"), Some(self.admin()))
            .await;
        r.assert_status(200);
        r.json()
    }
}
