//! Attacks on connections, labels and settings (issue 10, findings 2, 7 and 12), through
//! real sockets: slow and idle clients, connection floods, unbounded metric labels,
//! hostile request ids, settings that overflow.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(("127.0.0.1", app.port()))
        .await
        .expect("connect to depot")
}

/// Reads until the server closes the connection (EOF or reset); the bytes it sent.
/// Panics when it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration, what: &str) -> Vec<u8> {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "{what}: still open after {within:?}");
    seen
}

/// Reads one response whose body has a Content-Length, leaving the connection open.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().expect("content-length"))
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return String::from_utf8_lossy(&data).into_owned();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
            .await
            .expect("response within 20 s")
            .expect("read response");
        assert!(n > 0, "connection closed before a full response");
        data.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn half_sent_headers_are_closed_within_the_header_timeout_even_when_dribbled() {
    let app = TestApp::builder()
        .env("DEPOT_HEADER_TIMEOUT_SECONDS", 2)
        .env("DEPOT_KEEPALIVE_TIMEOUT_SECONDS", 30)
        .start()
        .await;
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut stream = connect(&app).await;
        stream
            .write_all(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .expect("write half a request");
        held.push(stream);
    }
    // One client keeps sending a header byte now and then (slowloris): the timeout
    // counts from the first byte, not from the last.
    let mut dribbler = connect(&app).await;
    dribbler
        .write_all(b"GET /livez HTTP/1.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let dribbling = async {
        for _ in 0..40 {
            if dribbler.write_all(b"X").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        false
    };
    let cut_off = tokio::time::timeout(Duration::from_secs(15), dribbling).await;
    assert!(
        matches!(cut_off, Ok(true)),
        "a client dribbling header bytes was not cut off (after {:?})",
        started.elapsed()
    );
    for (i, stream) in held.iter_mut().enumerate() {
        let sent = closed_within(stream, Duration::from_secs(15), "half-sent headers").await;
        let text = String::from_utf8_lossy(&sent);
        assert!(
            !text.contains(" 200 "),
            "connection {i} got an answer to half a request: {text}"
        );
    }
    let live = app.get("/livez", None).await;
    live.assert_status(200);
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout() {
    let app = TestApp::builder()
        .env("DEPOT_HEADER_TIMEOUT_SECONDS", 60)
        .env("DEPOT_KEEPALIVE_TIMEOUT_SECONDS", 1)
        .start()
        .await;
    let mut stream = connect(&app).await;
    for _ in 0..2 {
        stream
            .write_all(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .expect("write request");
        let response = read_response(&mut stream).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    // Now idle between requests: closed long before the 60 s header timeout.
    let rest = closed_within(&mut stream, Duration::from_secs(15), "idle keep-alive").await;
    assert!(rest.is_empty(), "unexpected bytes on an idle connection");
}

#[tokio::test]
async fn connections_over_the_limit_wait_and_livez_answers_once_held_ones_time_out() {
    let app = TestApp::builder()
        .env("DEPOT_MAX_CONNECTIONS", 4)
        .env("DEPOT_HEADER_TIMEOUT_SECONDS", 2)
        .env("DEPOT_KEEPALIVE_TIMEOUT_SECONDS", 2)
        .start()
        .await;
    // Far more idle connections than the limit; the first four take every slot.
    let mut held = Vec::new();
    for _ in 0..24 {
        let mut stream = connect(&app).await;
        let _ = stream.write_all(b"GET /livez HTTP/1.1\r\n").await;
        held.push(stream);
    }
    let mut probe = connect(&app).await;
    probe
        .write_all(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("write probe");
    let mut first = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(1000), probe.read(&mut first)).await;
    assert!(
        early.is_err(),
        "a connection over DEPOT_MAX_CONNECTIONS was served while the limit was taken"
    );
    // Once the held connections time out (in batches of four), everyone gets served.
    let answer = tokio::time::timeout(Duration::from_secs(60), async {
        let mut rest = Vec::new();
        probe.read_to_end(&mut rest).await.map(|_| rest)
    })
    .await
    .expect("probe answered within 60 s")
    .expect("read probe");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    drop(held);
    let live = app.get("/livez", None).await;
    live.assert_status(200);
    assert!(
        !app.log().contains("accept failed"),
        "accept failed:\n{}",
        app.log()
    );
}

#[tokio::test]
async fn two_thousand_random_200_char_methods_leave_metrics_small() {
    let app = TestApp::start().await;
    let before = app.get("/metrics", None).await;
    before.assert_status(200);
    let mut sent = 0;
    while sent < 2000 {
        let batch: Vec<_> = (0..50)
            .map(|i| {
                let method = random_string(200).to_uppercase();
                let path = if i % 2 == 0 {
                    "/product/access".to_string()
                } else {
                    format!("/{}", random_string(40))
                };
                let app = &app;
                async move {
                    app.raw_request(&format!("{method} {path} HTTP/1.1"), b"")
                        .await
                }
            })
            .collect();
        for reply in futures::future::join_all(batch).await {
            assert!(reply.status >= 400, "odd method answered {}", reply.status);
        }
        sent += 50;
    }
    let after = app.get("/metrics", None).await;
    after.assert_status(200);
    let grown = after.body.len() as i64 - before.body.len() as i64;
    assert!(
        grown < 10 * 1024,
        "/metrics grew by {grown} bytes (from {} to {})",
        before.body.len(),
        after.body.len()
    );
    let text = after.text();
    assert!(text.contains("method=\"other\""), "no 'other' method label");
}

#[tokio::test]
async fn a_hostile_request_id_is_replaced_and_never_logged_or_echoed() {
    let app = TestApp::start().await;
    let long = "zq".repeat(50 * 1024);
    let hostile = [
        "has spaces in it".to_string(),
        "user=admin role=root".to_string(),
        long.clone(),
        "x".repeat(65),
    ];
    for id in &hostile {
        let reply = app
            .send(
                app.request(reqwest::Method::GET, "/livez", None)
                    .header("X-Request-Id", id.as_str()),
            )
            .await;
        reply.assert_status(200);
        let echoed = reply.header("x-request-id").expect("a request id");
        assert_ne!(&echoed, id, "hostile request id echoed");
        assert!(
            (1..=64).contains(&echoed.len())
                && echoed
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "replacement id {echoed:?} is not of the safe form"
        );
    }
    // A well-formed id is kept, end to end.
    let good = "build-42.step_7";
    let reply = app
        .send(
            app.request(reqwest::Method::GET, "/livez", None)
                .header("X-Request-Id", good),
        )
        .await;
    assert_eq!(reply.header("x-request-id").as_deref(), Some(good));
    // Let the access-log lines reach the file.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = app.log();
    assert!(log.contains(good), "the valid request id is not in the log");
    for needle in [
        "has spaces in it",
        "user=admin",
        "zqzqzqzqzqzqzqzq",
        &"x".repeat(65),
    ] {
        assert!(
            !log.contains(needle),
            "hostile request id {needle:?} logged"
        );
    }
}

#[tokio::test]
async fn a_janitor_grace_that_overflows_stops_the_binary_with_a_message_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_depot"));
    cmd.arg("serve").kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("DEPOT_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("DEPOT_DATA_DIR", dir.path())
        .env("DEPOT_LISTEN", "127.0.0.1:0")
        .env("DEPOT_JANITOR_GRACE_SECONDS", "18446744073709551615")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("spawn depot");
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("depot refuses to start within 20 s instead of running")
        .expect("wait for depot");
    assert!(
        !output.status.success(),
        "depot started with an overflowing grace"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("DEPOT_JANITOR_GRACE_SECONDS"),
        "the message does not name the variable: {stderr}"
    );
}

/// Starts the binary with a hard open-file limit of `nofile` (below what the connection
/// flood needs), outside the harness, on the embedded backend.
async fn start_with_fd_limit(
    dir: &std::path::Path,
    port: u16,
    nofile: u64,
    env: &[(&str, &str)],
) -> tokio::process::Child {
    let log = std::fs::File::create(dir.join("depot.log")).expect("log file");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_depot"));
    cmd.arg("serve").kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("DEPOT_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("DEPOT_DATA_DIR", dir.join("data"))
        .env("DEPOT_LISTEN", format!("127.0.0.1:{port}"))
        .env("DEPOT_ADMIN_TOKEN", common::secrets::depot_token())
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn depot");
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
            let _ = s
                .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
            if out.starts_with(b"HTTP/1.1 200") {
                return child;
            }
        }
        assert!(
            Instant::now() < deadline,
            "depot did not start: {}",
            std::fs::read_to_string(dir.join("depot.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_idle_connection_flood_beyond_the_fd_limit_never_makes_accept_fail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    // 512 descriptors: the default connection limit shrinks to (512 - 256) / 2 = 128.
    let _child = start_with_fd_limit(
        dir.path(),
        port,
        512,
        &[
            ("DEPOT_HEADER_TIMEOUT_SECONDS", "2"),
            ("DEPOT_KEEPALIVE_TIMEOUT_SECONDS", "2"),
        ],
    )
    .await;
    // More idle connections than the server has descriptors.
    let mut held = Vec::new();
    for _ in 0..600 {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(stream) => held.push(stream),
            Err(err) => panic!("connect failed after {} connections: {err}", held.len()),
        }
    }
    let live = tokio::time::timeout(Duration::from_secs(90), async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.map(|_| out)
    })
    .await;
    let log = std::fs::read_to_string(dir.path().join("depot.log")).unwrap_or_default();
    let live = live
        .unwrap_or_else(|_| panic!("/livez unanswered within 90 s of the flood\n{log}"))
        .expect("read /livez");
    assert!(
        live.starts_with(b"HTTP/1.1 200"),
        "/livez: {}",
        String::from_utf8_lossy(&live)
    );
    assert!(
        !log.contains("accept failed"),
        "accept failed during the flood:\n{log}"
    );
    drop(held);
}
