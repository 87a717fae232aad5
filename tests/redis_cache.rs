//! Redis as an untrusted cache (issue 10, finding 6). Each test starts a private
//! `redis-server` of its own (on a free port, with a password), so it may write into it
//! behind Depot's back, pause it or stop it, on either backend set: on the production set
//! the test's Redis replaces the shared one, MongoDB and S3 stay the shared ones.

mod common;

use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A `redis-server` child process on a free loopback port; killed when dropped.
struct PrivateRedis {
    child: std::process::Child,
    port: u16,
    password: Option<String>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

impl PrivateRedis {
    fn start(password: Option<&str>) -> PrivateRedis {
        let redis = Self::start_on(free_port(), password, &[]);
        redis.wait_ready();
        redis
    }

    /// Plain on `port`, or, with `tls` arguments, TLS on `port` and no plain port.
    fn start_on(port: u16, password: Option<&str>, tls: &[String]) -> PrivateRedis {
        let dir = tempfile::Builder::new()
            .prefix("depot-redis-")
            .tempdir()
            .expect("temp dir");
        let mut cmd = std::process::Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--dir"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if tls.is_empty() {
            cmd.args(["--port", &port.to_string()]);
        } else {
            cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                .args(tls);
        }
        if let Some(pw) = password {
            cmd.args(["--requirepass", pw]);
        }
        let child = cmd
            .spawn()
            .expect("start redis-server (installed by scripts/services.sh)");
        PrivateRedis {
            child,
            port,
            password: password.map(str::to_string),
            _dir: dir,
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]) != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Runs one command with redis-cli and returns its raw output, trimmed.
    fn cli(&self, args: &[&str]) -> String {
        let mut cmd = std::process::Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--raw"])
            .args(args)
            .stdin(Stdio::null());
        if let Some(pw) = &self.password {
            cmd.env("REDISCLI_AUTH", pw);
        }
        let out = cmd.output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} redis-server");
    }

    /// Redis stops answering (SIGSTOP) but keeps its data, as on a network partition.
    fn pause(&self) {
        self.signal("STOP");
    }

    fn resume(&self) {
        self.signal("CONT");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.signal_quietly();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PrivateRedis {
    fn signal_quietly(&self) -> std::io::Result<std::process::ExitStatus> {
        std::process::Command::new("kill")
            .arg("-CONT")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status()
    }
}

fn redis_key(raw: &str) -> String {
    format!("depot:token:{}", sha256_hex(raw.as_bytes()))
}

/// A Depot using `redis` (whatever backend set the run uses otherwise).
async fn depot_on(redis: &PrivateRedis) -> TestApp {
    TestApp::builder()
        .env("DEPOT_REDIS_URL", redis.url())
        .env("DEPOT_SIGNING_KEY", random_string(64))
        .start()
        .await
}

async fn metric(app: &TestApp, name_and_labels: &str) -> f64 {
    let body = app.get("/metrics", None).await.text();
    body.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

const HITS: &str = "depot_token_cache_lookups_total{result=\"hit\"}";

/// What a token document looked like in Redis before entries were authenticated.
fn forged_admin_doc(raw: &str) -> String {
    json!({
        "token": {
            "id": "tok_00000000deadbeef",
            "hash": sha256_hex(raw.as_bytes()),
            "admin": true,
            "created_at": 0,
            "name": null,
            "expires_at": null
        },
        "grants": []
    })
    .to_string()
}

#[tokio::test]
async fn a_forged_admin_document_written_into_redis_neither_authenticates_its_token_nor_mints_an_admin()
 {
    let redis = PrivateRedis::start(Some(&random_string(24)));
    let app = depot_on(&redis).await;
    let forged_raw = format!("depot_{}", random_string(43));
    let doc = forged_admin_doc(&forged_raw);
    // The plain document, and the same with a made-up MAC in the new entry format.
    let expires = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 3_600_000)
        .to_string();
    let fake_mac = sha256_hex(doc.as_bytes());
    for value in [doc.clone(), format!("v1.{expires}.{fake_mac}.{doc}")] {
        assert_eq!(redis.cli(&["SET", &redis_key(&forged_raw), &value]), "OK");
        app.get("/product/access", Some(&forged_raw))
            .await
            .assert_error(401, "invalid_token");
        app.get("/tokens", Some(&forged_raw))
            .await
            .assert_error(401, "invalid_token");
        let minted = app
            .put_json("/register", Some(&forged_raw), &json!({"admin": true}))
            .await;
        minted.assert_error(401, "invalid_token");
    }
    assert!(metric(&app, "depot_token_cache_rejected_total").await >= 1.0);
    app.assert_no_secrets_logged();
}

#[tokio::test]
async fn an_admin_entry_copied_under_another_tokens_key_does_not_make_that_token_admin() {
    let redis = PrivateRedis::start(Some(&random_string(24)));
    let app = depot_on(&redis).await;
    // The admin's document is cached by its first lookups.
    let hits_before = metric(&app, HITS).await;
    for _ in 0..2 {
        app.get("/product/access", Some(app.admin()))
            .await
            .assert_status(200);
    }
    assert!(
        metric(&app, HITS).await > hits_before,
        "the cache is in use"
    );
    let admin_entry = redis.cli(&["GET", &redis_key(app.admin())]);
    assert!(!admin_entry.is_empty(), "the admin's entry is in Redis");

    // Someone with write access to Redis copies it under a token of their own choosing.
    let attacker = format!("depot_{}", random_string(43));
    assert_eq!(
        redis.cli(&["SET", &redis_key(&attacker), &admin_entry]),
        "OK"
    );
    app.get("/product/access", Some(&attacker))
        .await
        .assert_error(401, "invalid_token");
    app.put_json("/register", Some(&attacker), &json!({"admin": true}))
        .await
        .assert_error(401, "invalid_token");
    // The genuine entry still serves its own token.
    let hits = metric(&app, HITS).await;
    app.get("/product/access", Some(app.admin()))
        .await
        .assert_status(200);
    assert!(metric(&app, HITS).await > hits);
}

#[tokio::test]
async fn a_password_protected_redis_is_used_with_the_password_from_the_url() {
    let password = random_string(24);
    let redis = PrivateRedis::start(Some(&password));
    // Both URL forms: the password alone, and the ACL user `default` with it.
    for url in [
        redis.url(),
        format!("redis://default:{password}@127.0.0.1:{}", redis.port),
    ] {
        let app = TestApp::builder()
            .env("DEPOT_REDIS_URL", url)
            .env("DEPOT_SIGNING_KEY", random_string(64))
            .start()
            .await;
        let health = app.get("/health", None).await;
        health.assert_status(200);
        assert_eq!(health.json()["redis"], "Redis is fine", "{}", health.text());
        let token = app.register(false).await;
        for _ in 0..3 {
            app.get("/product/access", Some(&token))
                .await
                .assert_status(200);
        }
        assert!(metric(&app, HITS).await >= 1.0, "served from Redis");
        assert!(
            redis.cli(&["EXISTS", &redis_key(&token)]) == "1",
            "the token's document is cached in the password-protected Redis"
        );
        assert!(!app.log().contains(&password), "no password in the log");
    }
}

/// Runs `depot serve` expecting it to refuse to start; returns its exit status and output.
async fn failed_start(env: &[(&str, String)]) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_depot"));
    cmd.arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("DEPOT_") && key != "DEPOT_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.env("DEPOT_DATA_DIR", dir.path().join("data"))
        .env("DEPOT_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("depot gives up within 30 s")
        .expect("run depot");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

#[tokio::test]
async fn a_wrong_redis_password_refuses_to_start_with_a_clear_message_that_holds_no_password() {
    let password = random_string(24);
    let redis = PrivateRedis::start(Some(&password));
    let wrong = random_string(24);
    let cases = [
        (
            format!("redis://:{wrong}@127.0.0.1:{}", redis.port),
            "WRONGPASS",
        ),
        (format!("redis://127.0.0.1:{}", redis.port), "NOAUTH"),
    ];
    for (url, expected) in cases {
        let (status, output) = failed_start(&[
            ("DEPOT_REDIS_URL", url),
            ("DEPOT_SIGNING_KEY", random_string(64)),
        ])
        .await;
        assert!(!status.success(), "depot must not start: {output}");
        assert!(
            output.contains("DEPOT_REDIS_URL") && output.contains(expected),
            "a clear message naming the setting and the cause: {output}"
        );
        assert!(
            !output.contains(&wrong) && !output.contains(&password),
            "{output}"
        );
    }
}

#[tokio::test]
async fn redis_without_a_signing_key_refuses_to_start_and_says_why() {
    let redis = PrivateRedis::start(None);
    let (status, output) = failed_start(&[("DEPOT_REDIS_URL", redis.url())]).await;
    assert!(!status.success(), "depot must not start: {output}");
    assert!(
        output.contains("DEPOT_REDIS_URL needs DEPOT_SIGNING_KEY"),
        "{output}"
    );
}

#[tokio::test]
async fn a_token_revoked_while_redis_is_unreachable_stays_refused_when_redis_comes_back() {
    let redis = PrivateRedis::start(Some(&random_string(24)));
    let app = depot_on(&redis).await;
    let doomed = app.register(false).await;
    let kept = app.register(false).await;
    for token in [&doomed, &kept] {
        for _ in 0..2 {
            app.get("/product/access", Some(token))
                .await
                .assert_status(200);
        }
    }
    let stale = redis.cli(&["GET", &redis_key(&doomed)]);
    assert!(!stale.is_empty(), "cached before the outage");

    // Redis stops answering but keeps the doomed token's document.
    redis.pause();
    app.get("/product/access", Some(&kept))
        .await
        .assert_status(200);
    app.prune(&doomed).await;
    app.get("/product/access", Some(&doomed))
        .await
        .assert_error(401, "invalid_token");
    for _ in 0..5 {
        app.get("/product/access", Some(&kept))
            .await
            .assert_status(200);
    }
    let health = app.get("/health", None).await;
    assert_eq!(health.json()["status"], "degraded", "{}", health.text());
    assert!(
        metric(&app, "depot_redis_breaker_opened_total").await >= 1.0,
        "the breaker opened"
    );

    // Back: the stale document is still in Redis until the replayed tombstone lands,
    // and is never served meanwhile.
    redis.resume();
    for _ in 0..20 {
        app.get("/product/access", Some(&doomed))
            .await
            .assert_error(401, "invalid_token");
    }
    eventually(
        Duration::from_secs(20),
        "the invalidation is replayed",
        || async { redis.cli(&["GET", &redis_key(&doomed)]) != stale },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the cache is used again",
        || async {
            let hits = metric(&app, HITS).await;
            app.get("/product/access", Some(&kept))
                .await
                .assert_status(200);
            metric(&app, HITS).await > hits
        },
    )
    .await;
    app.get("/product/access", Some(&doomed))
        .await
        .assert_error(401, "invalid_token");
    app.assert_no_secrets_logged();
}

#[tokio::test]
async fn with_redis_stopped_requests_are_served_and_revocation_is_immediate() {
    let redis = PrivateRedis::start(Some(&random_string(24)));
    let app = depot_on(&redis).await;
    let token = app.register(false).await;
    app.get("/product/access", Some(&token))
        .await
        .assert_status(200);
    let port = redis.port;
    let password = redis.password.clone();
    drop(redis);
    for _ in 0..10 {
        app.get("/product/access", Some(&token))
            .await
            .assert_status(200);
    }
    let doomed = app.register(false).await;
    app.get("/product/access", Some(&doomed))
        .await
        .assert_status(200);
    app.prune(&doomed).await;
    app.get("/product/access", Some(&doomed))
        .await
        .assert_error(401, "invalid_token");

    // A new Redis on the same port: Depot reconnects and uses it again.
    let back = PrivateRedis::start_on(port, password.as_deref(), &[]);
    back.wait_ready();
    eventually(
        Duration::from_secs(20),
        "the cache is used again",
        || async {
            let hits = metric(&app, HITS).await;
            app.get("/product/access", Some(&token))
                .await
                .assert_status(200);
            metric(&app, HITS).await > hits
        },
    )
    .await;
    app.get("/product/access", Some(&doomed))
        .await
        .assert_error(401, "invalid_token");
}

const OUTAGE_HITS: &str = "depot_token_cache_lookups_total{result=\"outage_hit\"}";

#[tokio::test]
async fn with_redis_stopped_repeated_requests_are_answered_from_the_outage_cache() {
    let redis = PrivateRedis::start(Some(&random_string(24)));
    let app = depot_on(&redis).await;
    let token = app.register(false).await;
    app.get("/product/access", Some(&token))
        .await
        .assert_status(200);
    redis.pause();
    for _ in 0..20 {
        app.get("/product/access", Some(&token))
            .await
            .assert_status(200);
    }
    assert!(
        metric(&app, OUTAGE_HITS).await >= 10.0,
        "most lookups during the outage come from the outage cache"
    );
    // Its own revocation applies at once, whatever is cached.
    app.prune(&token).await;
    app.get("/product/access", Some(&token))
        .await
        .assert_error(401, "invalid_token");
    redis.resume();
}

/// Two replicas sharing the production store and the test's Redis.
async fn two_replicas_on(redis: &PrivateRedis, outage_seconds: u64) -> (TestApp, TestApp) {
    let a = TestApp::builder()
        .env("DEPOT_REDIS_URL", redis.url())
        .env("DEPOT_SIGNING_KEY", random_string(64))
        .env("DEPOT_REDIS_OUTAGE_CACHE_SECONDS", outage_seconds)
        .start()
        .await;
    let b = TestApp::builder()
        .share_backends_with(&a)
        .env("DEPOT_REDIS_URL", redis.url())
        .env("DEPOT_REDIS_OUTAGE_CACHE_SECONDS", outage_seconds)
        .start()
        .await;
    (a, b)
}

#[tokio::test]
async fn during_an_outage_another_replicas_revocation_applies_within_the_outage_cache_time() {
    if Backend::from_env() != Backend::Production {
        return; // two replicas need a shared store
    }
    let redis = PrivateRedis::start(Some(&random_string(24)));
    let (a, b) = two_replicas_on(&redis, 2).await;
    let token = a.register(false).await;
    b.remember_secret(&token);
    redis.pause();
    for _ in 0..3 {
        b.get("/product/access", Some(&token))
            .await
            .assert_status(200);
    }
    assert!(
        metric(&b, OUTAGE_HITS).await >= 1.0,
        "the other replica answers from its outage cache"
    );
    let revoked = Instant::now();
    a.prune(&token).await;
    a.get("/product/access", Some(&token))
        .await
        .assert_error(401, "invalid_token");
    // The other replica may answer from its outage copy, but only for its lifetime.
    loop {
        let status = b.get("/product/access", Some(&token)).await.status.as_u16();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            revoked.elapsed() < Duration::from_secs(2) + Duration::from_millis(1500),
            "the revoked token still worked on the other replica after its outage copy expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        b.get("/product/access", Some(&token))
            .await
            .assert_error(401, "invalid_token");
    }
    redis.resume();
}

#[tokio::test]
async fn with_the_outage_cache_off_another_replicas_revocation_applies_at_once() {
    if Backend::from_env() != Backend::Production {
        return; // two replicas need a shared store
    }
    let redis = PrivateRedis::start(Some(&random_string(24)));
    let (a, b) = two_replicas_on(&redis, 0).await;
    let token = a.register(false).await;
    b.remember_secret(&token);
    redis.pause();
    for _ in 0..3 {
        b.get("/product/access", Some(&token))
            .await
            .assert_status(200);
    }
    a.prune(&token).await;
    b.get("/product/access", Some(&token))
        .await
        .assert_error(401, "invalid_token");
    assert_eq!(metric(&b, OUTAGE_HITS).await, 0.0);
    redis.resume();
}

// ---- TLS ------------------------------------------------------------------------------

fn openssl(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl {args:?}");
}

/// A private CA and a server certificate for 127.0.0.1 signed by it; returns the CA file.
fn make_certs(dir: &Path) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=depot test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write ext.cnf");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
    );
    dir.join("ca.crt")
}

#[tokio::test]
async fn a_rediss_url_talks_tls_to_redis_and_verifies_its_certificate() {
    let certs = tempfile::tempdir().expect("temp dir");
    let ca = make_certs(certs.path());
    let port = free_port();
    let password = random_string(24);
    let p = |name: &str| certs.path().join(name).display().to_string();
    let args: Vec<String> = [
        "--tls-cert-file",
        &p("server.crt"),
        "--tls-key-file",
        &p("server.key"),
        "--tls-ca-cert-file",
        &p("ca.crt"),
        "--tls-auth-clients",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let redis = PrivateRedis::start_on(port, Some(&password), &args);
    // redis-cli has no TLS here without extra flags: wait for the port instead.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server (TLS) did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("rediss://:{password}@127.0.0.1:{port}");

    // A certificate Depot cannot verify is refused.
    let (status, output) = failed_start(&[
        ("DEPOT_REDIS_URL", url.clone()),
        ("DEPOT_SIGNING_KEY", random_string(64)),
    ])
    .await;
    assert!(
        !status.success(),
        "untrusted certificate accepted: {output}"
    );
    assert!(
        output.to_lowercase().contains("certificate"),
        "says the certificate is the problem: {output}"
    );
    assert!(!output.contains(&password), "{output}");

    // Trusting the CA (SSL_CERT_FILE), it connects, authenticates and caches.
    let app = TestApp::builder()
        .env("DEPOT_REDIS_URL", url)
        .env("DEPOT_SIGNING_KEY", random_string(64))
        .env("SSL_CERT_FILE", ca.display())
        .start()
        .await;
    let health = app.get("/health", None).await;
    assert_eq!(health.json()["redis"], "Redis is fine", "{}", health.text());
    for _ in 0..3 {
        app.get("/product/access", Some(app.admin()))
            .await
            .assert_status(200);
    }
    assert!(
        metric(&app, HITS).await >= 1.0,
        "served from Redis over TLS"
    );
    drop(redis);
}
