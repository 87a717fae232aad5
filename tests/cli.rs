//! The `depot` binary as a client: push, pull (verify, resume, latest), ls, token and
//! product commands, run as child processes against a real server, with the server and
//! token in DEPOT_URL / DEPOT_TOKEN (or --url / --token). Checks the exit codes, the
//! files written, what the server stored, and that no raw token reaches the output.

mod common;

use common::*;
use serde_json::json;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

/// One finished run of the client.
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
}

/// Runs the client binary against one server, in a working directory of its own.
struct Cli {
    url: String,
    token: Option<String>,
    dir: tempfile::TempDir,
    /// Raw tokens this test handled: none may appear in any client output.
    secrets: Mutex<Vec<String>>,
}

impl Cli {
    fn new(app: &TestApp, token: Option<&str>) -> Cli {
        Cli::with_url(app.url(""), token)
    }

    fn with_url(url: String, token: Option<&str>) -> Cli {
        let dir = tempfile::Builder::new()
            .prefix("depot-cli-")
            .tempdir()
            .expect("temp dir");
        Cli {
            url,
            token: token.map(str::to_string),
            dir,
            secrets: Mutex::new(token.map(str::to_string).into_iter().collect()),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn remember(&self, raw: &str) {
        self.secrets.lock().unwrap().push(raw.to_string());
    }

    /// `depot <args>` with DEPOT_URL and DEPOT_TOKEN (when set) in the environment.
    async fn run(&self, args: &[&str]) -> Run {
        let mut env = vec![("DEPOT_URL".to_string(), self.url.clone())];
        if let Some(t) = &self.token {
            env.push(("DEPOT_TOKEN".to_string(), t.clone()));
        }
        self.run_with_env(args, &env).await
    }

    /// `depot <args>` with exactly `env` as its DEPOT_* environment.
    async fn run_with_env(&self, args: &[&str], env: &[(String, String)]) -> Run {
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
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn the depot client");
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("depot {args:?} did not finish within 120 s"))
            .expect("wait for the depot client");
        let run = Run {
            code: out
                .status
                .code()
                .expect("the client exited (not by a signal)"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        self.assert_no_secrets(args, &run);
        run
    }

    fn assert_no_secrets(&self, args: &[&str], run: &Run) {
        for secret in self.secrets.lock().unwrap().iter() {
            assert!(
                !run.stdout.contains(secret.as_str()),
                "a raw token appears in the stdout of depot {args:?}:\n{}",
                run.stdout
            );
            assert!(
                !run.stderr.contains(secret.as_str()),
                "a raw token appears in the stderr of depot {args:?}:\n{}",
                run.stderr
            );
        }
    }

    /// Writes `bytes` to `name` in the working directory; returns its path as a string.
    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.path(name);
        std::fs::write(&path, bytes).expect("write test file");
        path.display().to_string()
    }

    /// The names of the files in the working directory.
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("read working dir")
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
}

/// A port on which nothing listens.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

/// The value of `depot_http_requests_total` for one route, method and status (0 when absent).
async fn request_count(app: &TestApp, route: &str, method: &str, status: u16) -> u64 {
    let r = app.get("/metrics", None).await;
    r.assert_status(200);
    let labels = [
        format!("route=\"{route}\""),
        format!("method=\"{method}\""),
        format!("status=\"{status}\""),
    ];
    r.text()
        .lines()
        .filter(|l| l.starts_with("depot_http_requests_total{"))
        .filter(|l| labels.iter().all(|label| l.contains(label.as_str())))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|n| n.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("bad metrics line: {l}")) as u64
        })
        .sum()
}

const DOWNLOAD_ROUTE: &str = "/product/download/{product}/{version}";

/// A progress bar would draw with carriage returns or terminal escapes.
#[track_caller]
fn assert_no_progress_bar(run: &Run) {
    for (name, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        assert!(
            !text.contains('\r') && !text.contains('\x1b'),
            "{name} has terminal control characters (a progress bar?): {text:?}"
        );
    }
}

// ---- push ---------------------------------------------------------------------------

#[tokio::test]
async fn push_streams_the_file_and_the_server_stores_its_sha256() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let cli = Cli::new(&app, Some(app.admin()));
    // Several read buffers' worth, and not a multiple of any of them.
    let bytes = payload(1, 3 * 1024 * 1024 + 12_345);
    let file = cli.file("app.tar.gz", &bytes);
    let run = cli.run(&["push", &product, "1.0.0", &file]).await;
    run.assert_ok();
    let digest = sha256_hex(&bytes);
    assert_eq!(
        run.stdout,
        format!(
            "pushed {product} 1.0.0: {} bytes, sha256:{digest}\n",
            bytes.len()
        )
    );

    let stored = &app.fetch_product(&product).await["versions"]["1.0.0"];
    assert_eq!(stored["checksum"], format!("sha256:{digest}"));
    assert_eq!(stored["size"], bytes.len() as u64);
    assert_eq!(stored["file_name"], "app.tar.gz");
    let r = app.download(app.admin(), &product, "1.0.0").await;
    r.assert_status(200);
    assert_eq!(
        r.header("x-checksum-sha256").as_deref(),
        Some(digest.as_str())
    );
    assert!(
        r.body == bytes,
        "downloaded bytes differ from the pushed file"
    );
}

#[tokio::test]
async fn push_with_the_right_checksum_flag_is_accepted_in_both_forms() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let cli = Cli::new(&app, Some(app.admin()));
    let bytes = payload(2, 10_000);
    let file = cli.file("a.bin", &bytes);
    let digest = sha256_hex(&bytes);
    cli.run(&[
        "push",
        &product,
        "1.0.0",
        &file,
        "--checksum",
        &format!("sha256:{digest}"),
    ])
    .await
    .assert_ok();
    cli.run(&["push", &product, "1.0.1", &file, "--checksum", &digest])
        .await
        .assert_ok();
    let mut versions = app.versions(&product).await;
    versions.sort();
    assert_eq!(versions, ["1.0.0", "1.0.1"]);
}

#[tokio::test]
async fn push_with_a_wrong_checksum_exits_6_and_stores_nothing() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let cli = Cli::new(&app, Some(app.admin()));
    let bytes = payload(3, 200_000);
    let file = cli.file("a.bin", &bytes);
    let wrong = sha256_hex(b"something else");
    let run = cli
        .run(&[
            "push",
            &product,
            "1.0.0",
            &file,
            "--checksum",
            &format!("sha256:{wrong}"),
        ])
        .await;
    run.assert_code(6);
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
    assert!(
        run.stderr.contains("checksum_mismatch") && run.stderr.contains("hint:"),
        "the message names the failure and what to do: {}",
        run.stderr
    );
    assert!(app.versions(&product).await.is_empty());
    app.download(app.admin(), &product, "1.0.0")
        .await
        .assert_error(404, "version_not_found");
    app.wait_blob_count(0).await;
}

#[tokio::test]
async fn push_of_an_existing_version_exits_5_and_keeps_the_first_bytes() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let cli = Cli::new(&app, Some(app.admin()));
    let first = cli.file("first.bin", b"first");
    let second = cli.file("second.bin", b"second");
    cli.run(&["push", &product, "1.0.0", &first])
        .await
        .assert_ok();
    let run = cli.run(&["push", &product, "1.0.0", &second]).await;
    run.assert_code(5);
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    assert!(run.stderr.contains("hint:"), "{}", run.stderr);
    assert_eq!(
        app.download(app.admin(), &product, "1.0.0").await.body,
        b"first"
    );
    app.assert_blob_count(1);
}

#[tokio::test]
async fn push_of_an_existing_version_by_an_upload_only_token_exits_5() {
    // The client's HEAD probe gets 403 without download rights; the server's 409 decides.
    let app = TestApp::start().await;
    let product = app.product().await;
    let uploader = app.token_with(&product, Perms::UPLOAD).await;
    let cli = Cli::new(&app, Some(&uploader));
    let file = cli.file("a.bin", b"abc");
    cli.run(&["push", &product, "1.0.0", &file])
        .await
        .assert_ok();
    cli.run(&["push", &product, "1.0.0", &file])
        .await
        .assert_code(5);
    app.assert_blob_count(1);
}

// ---- pull ---------------------------------------------------------------------------

#[tokio::test]
async fn pull_writes_the_verified_file_under_its_uploaded_name_and_leaves_no_part_file() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let bytes = payload(4, 1024 * 1024 + 7);
    app.upload_form(
        Some(app.admin()),
        Form::upload(&product, "2.1.0", "tool-2.1.0.tgz", &bytes),
    )
    .await
    .assert_status(201);

    let cli = Cli::new(&app, Some(app.admin()));
    let run = cli.run(&["pull", &product, "2.1.0"]).await;
    run.assert_ok();
    assert_eq!(cli.files(), ["tool-2.1.0.tgz"]);
    assert!(std::fs::read(cli.path("tool-2.1.0.tgz")).unwrap() == bytes);
    assert_eq!(
        run.stdout,
        format!("pulled {product} 2.1.0 to tool-2.1.0.tgz (sha256 verified)\n")
    );
}

#[tokio::test]
async fn pull_with_output_writes_to_that_path() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let bytes = payload(5, 50_000);
    app.upload_ok(app.admin(), &product, "1.0.0", &bytes).await;
    let cli = Cli::new(&app, Some(app.admin()));
    std::fs::create_dir(cli.path("out")).unwrap();
    let target = cli.path("out").join("renamed.bin");
    cli.run(&[
        "pull",
        &product,
        "1.0.0",
        "-o",
        &target.display().to_string(),
    ])
    .await
    .assert_ok();
    assert!(std::fs::read(&target).unwrap() == bytes);
    let mut left: Vec<_> = std::fs::read_dir(cli.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["renamed.bin"], "no .part or .part.etag left behind");
}

#[tokio::test]
async fn pull_latest_gets_the_highest_release_and_with_prerelease_the_highest_version() {
    let app = TestApp::start().await;
    let product = app.product().await;
    for v in ["1.0.0", "1.10.0", "1.9.0", "2.0.0-rc.1", "nightly"] {
        app.upload_ok(app.admin(), &product, v, v.as_bytes()).await;
    }
    let cli = Cli::new(&app, Some(app.admin()));
    cli.run(&["pull", &product, "latest", "-o", "stable"])
        .await
        .assert_ok();
    assert_eq!(std::fs::read(cli.path("stable")).unwrap(), b"1.10.0");
    cli.run(&["pull", &product, "latest", "--prerelease", "-o", "edge"])
        .await
        .assert_ok();
    assert_eq!(std::fs::read(cli.path("edge")).unwrap(), b"2.0.0-rc.1");
    assert_eq!(cli.files(), ["edge", "stable"]);
}

/// Prepares `<out>.part` with `prefix` and `<out>.part.etag` with `etag`, as an interrupted
/// pull leaves them.
fn interrupted_pull(cli: &Cli, out: &str, prefix: &[u8], etag: &str) {
    std::fs::write(cli.path(&format!("{out}.part")), prefix).unwrap();
    std::fs::write(cli.path(&format!("{out}.part.etag")), etag).unwrap();
}

#[tokio::test]
async fn pull_resumes_a_partial_download_with_a_range_request() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let bytes = payload(6, 2 * 1024 * 1024 + 333);
    app.upload_ok(app.admin(), &product, "1.0.0", &bytes).await;
    let etag = app
        .download(app.admin(), &product, "1.0.0")
        .await
        .header("etag")
        .expect("etag");
    let before_206 = request_count(&app, DOWNLOAD_ROUTE, "GET", 206).await;
    let before_200 = request_count(&app, DOWNLOAD_ROUTE, "GET", 200).await;

    let cli = Cli::new(&app, Some(app.admin()));
    let have = 700_001;
    interrupted_pull(&cli, "artifact.bin", &bytes[..have], &etag);
    cli.run(&["pull", &product, "1.0.0", "-o", "artifact.bin"])
        .await
        .assert_ok();
    assert!(
        std::fs::read(cli.path("artifact.bin")).unwrap() == bytes,
        "the resumed file differs from the artifact"
    );
    assert_eq!(cli.files(), ["artifact.bin"]);
    assert_eq!(
        request_count(&app, DOWNLOAD_ROUTE, "GET", 206).await,
        before_206 + 1,
        "the rest was fetched with one range request"
    );
    assert_eq!(
        request_count(&app, DOWNLOAD_ROUTE, "GET", 200).await,
        before_200,
        "no full download"
    );
}

#[tokio::test]
async fn pull_of_a_complete_part_file_renames_it_without_downloading() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let bytes = payload(7, 100_000);
    app.upload_ok(app.admin(), &product, "1.0.0", &bytes).await;
    let etag = app
        .download(app.admin(), &product, "1.0.0")
        .await
        .header("etag")
        .unwrap();
    let gets_before = request_count(&app, DOWNLOAD_ROUTE, "GET", 200).await
        + request_count(&app, DOWNLOAD_ROUTE, "GET", 206).await;
    let cli = Cli::new(&app, Some(app.admin()));
    interrupted_pull(&cli, "a.bin", &bytes, &etag);
    cli.run(&["pull", &product, "1.0.0", "-o", "a.bin"])
        .await
        .assert_ok();
    assert!(std::fs::read(cli.path("a.bin")).unwrap() == bytes);
    assert_eq!(cli.files(), ["a.bin"]);
    let gets_after = request_count(&app, DOWNLOAD_ROUTE, "GET", 200).await
        + request_count(&app, DOWNLOAD_ROUTE, "GET", 206).await;
    assert_eq!(gets_after, gets_before, "nothing left to download");
}

#[tokio::test]
async fn pull_with_a_part_file_of_another_artifact_downloads_it_whole() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let bytes = payload(8, 300_000);
    app.upload_ok(app.admin(), &product, "1.0.0", &bytes).await;
    let cli = Cli::new(&app, Some(app.admin()));
    // A stale partial file of some other artifact: its ETag does not match.
    let stale_etag = format!("\"sha256-{}\"", sha256_hex(b"other"));
    interrupted_pull(&cli, "a.bin", &payload(9, 1000), &stale_etag);
    let before_200 = request_count(&app, DOWNLOAD_ROUTE, "GET", 200).await;
    cli.run(&["pull", &product, "1.0.0", "-o", "a.bin"])
        .await
        .assert_ok();
    assert!(std::fs::read(cli.path("a.bin")).unwrap() == bytes);
    assert_eq!(cli.files(), ["a.bin"]);
    assert_eq!(
        request_count(&app, DOWNLOAD_ROUTE, "GET", 200).await,
        before_200 + 1
    );
}

#[tokio::test]
async fn pull_detects_a_corrupted_part_file_exits_6_and_writes_no_file() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let bytes = payload(10, 500_000);
    app.upload_ok(app.admin(), &product, "1.0.0", &bytes).await;
    let etag = app
        .download(app.admin(), &product, "1.0.0")
        .await
        .header("etag")
        .unwrap();
    let cli = Cli::new(&app, Some(app.admin()));
    // The right ETag, but the bytes on disk were damaged.
    let mut damaged = bytes[..200_000].to_vec();
    damaged[1234] ^= 0xff;
    interrupted_pull(&cli, "a.bin", &damaged, &etag);
    let run = cli.run(&["pull", &product, "1.0.0", "-o", "a.bin"]).await;
    run.assert_code(6);
    assert!(run.stderr.contains("checksum mismatch"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
    assert!(
        !cli.path("a.bin").exists(),
        "no final file after a mismatch"
    );
    // The client drops the damaged partial file, so the next pull starts clean.
    assert!(cli.files().is_empty(), "left: {:?}", cli.files());
    cli.run(&["pull", &product, "1.0.0", "-o", "a.bin"])
        .await
        .assert_ok();
    assert!(std::fs::read(cli.path("a.bin")).unwrap() == bytes);
}

// ---- exit codes ---------------------------------------------------------------------

#[tokio::test]
async fn an_unknown_token_exits_3_on_every_command() {
    let app = TestApp::start().await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"x").await;
    let bogus = format!("depot_{}", random_string(43));
    let cli = Cli::new(&app, Some(&bogus));
    let file = cli.file("a.bin", b"abc");
    for args in [
        vec!["ls"],
        vec!["ls", product.as_str()],
        vec!["pull", product.as_str(), "1.0.0"],
        vec!["push", product.as_str(), "2.0.0", file.as_str()],
        vec!["product", "create", "newprod"],
        vec!["token", "register"],
    ] {
        let run = cli.run(&args).await;
        run.assert_code(3);
        assert!(
            run.stderr.contains("DEPOT_TOKEN"),
            "the message says what to check ({args:?}): {}",
            run.stderr
        );
    }
    assert!(cli.files() == ["a.bin"], "left: {:?}", cli.files());
    assert_eq!(app.versions(&product).await, ["1.0.0"]);
}

#[tokio::test]
async fn a_missing_token_exits_3() {
    let app = TestApp::start().await;
    let cli = Cli::new(&app, None);
    let run = cli.run(&["ls"]).await;
    run.assert_code(3);
    assert!(run.stderr.contains("DEPOT_TOKEN"), "{}", run.stderr);
}

#[tokio::test]
async fn a_forbidden_operation_exits_3() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let reader = app.token_with(&product, Perms::DOWNLOAD).await;
    let cli = Cli::new(&app, Some(&reader));
    let file = cli.file("a.bin", b"abc");
    let run = cli.run(&["push", &product, "1.0.0", &file]).await;
    run.assert_code(3);
    assert!(run.stderr.contains("403"), "{}", run.stderr);
    assert!(app.versions(&product).await.is_empty());
}

#[tokio::test]
async fn an_unknown_version_or_product_exits_4() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let cli = Cli::new(&app, Some(app.admin()));
    let run = cli.run(&["pull", &product, "9.9.9"]).await;
    run.assert_code(4);
    assert!(run.stderr.contains("version_not_found"), "{}", run.stderr);
    // No version at all: `latest` has nothing to resolve to.
    cli.run(&["pull", &product, "latest"]).await.assert_code(4);
    let run = cli.run(&["ls", "no-such-product"]).await;
    run.assert_code(4);
    assert!(run.stderr.contains("product_not_found"), "{}", run.stderr);
    cli.run(&["product", "delete", "no-such-product"])
        .await
        .assert_code(4);
    assert!(cli.files().is_empty(), "left: {:?}", cli.files());
}

#[tokio::test]
async fn nothing_listening_exits_7_and_says_what_to_check() {
    let cli = Cli::with_url(
        format!("http://127.0.0.1:{}", closed_port()),
        Some(&format!("depot_{}", random_string(43))),
    );
    let file = cli.file("a.bin", b"abc");
    for args in [
        vec!["ls"],
        vec!["pull", "p", "1.0.0"],
        vec!["push", "p", "1.0.0", file.as_str()],
        vec!["product", "create", "p"],
    ] {
        let run = cli.run(&args).await;
        run.assert_code(7);
        assert!(
            run.stderr.contains("DEPOT_URL"),
            "the message says what to check ({args:?}): {}",
            run.stderr
        );
    }
}

#[tokio::test]
async fn network_errors_do_not_echo_a_raw_token_from_the_url() {
    // `token fetch` and `token prune` put their argument in the request path.
    let cli = Cli::with_url(
        format!("http://127.0.0.1:{}", closed_port()),
        Some(&format!("depot_{}", random_string(43))),
    );
    let target = format!("depot_{}", random_string(43));
    cli.remember(&target);
    cli.run(&["token", "fetch", &target]).await.assert_code(7);
    cli.run(&["token", "prune", &target]).await.assert_code(7);
}

// ---- ls -----------------------------------------------------------------------------

#[tokio::test]
async fn ls_lists_the_callers_products_and_a_products_versions() {
    let app = TestApp::start().await;
    let mut products = vec![app.product().await, app.product().await];
    products.sort();
    let other = app.product().await;
    let reader = app.register(false).await;
    for p in &products {
        app.grant(p, &reader, Perms::DOWNLOAD).await;
    }
    let p = &products[0];
    let mut expected = Vec::new();
    for (i, v) in ["1.2.0", "v1.10.0", "0.9.0", "1.10.0-rc.1"]
        .iter()
        .enumerate()
    {
        let bytes = payload(20 + i as u64, 100 + i);
        app.upload_form(
            Some(app.admin()),
            Form::upload(p, v, &format!("f{i}.bin"), &bytes),
        )
        .await
        .assert_status(201);
        expected.push((v.to_string(), bytes.len(), sha256_hex(&bytes), i));
    }

    let cli = Cli::new(&app, Some(&reader));
    let run = cli.run(&["ls"]).await;
    run.assert_ok();
    let listed: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        listed, products,
        "only the products the token has grants on"
    );
    assert!(!run.stdout.contains(&other));

    let admin = Cli::new(&app, Some(app.admin()));
    let run = admin.run(&["ls"]).await;
    run.assert_ok();
    let mut all = products.clone();
    all.push(other.clone());
    all.sort();
    assert_eq!(run.stdout.lines().collect::<Vec<_>>(), all);

    let run = cli.run(&["ls", p]).await;
    run.assert_ok();
    let rows: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split('\t').collect())
        .collect();
    let order: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(order, ["v1.10.0", "1.10.0-rc.1", "1.2.0", "0.9.0"]);
    for row in &rows {
        let (_, size, digest, i) = expected.iter().find(|e| e.0 == row[0]).unwrap();
        assert_eq!(
            row.len(),
            8,
            "version, size, checksum, uploaded_at, file, state, files, labels: {row:?}"
        );
        assert_eq!(row[1], size.to_string());
        assert_eq!(row[2], format!("sha256:{digest}"));
        assert!(row[3].contains('T') && row[3].ends_with('Z'), "{row:?}");
        assert_eq!(row[4], format!("f{i}.bin"));
        assert_eq!(&row[5..], ["published", "1", ""]);
    }
}

#[tokio::test]
async fn ls_of_a_product_follows_the_cursor_past_one_page() {
    let app = TestApp::start().await;
    let product = app.product().await;
    // More than the client's page size of 1000.
    let versions: Vec<String> = (0..1005).map(|i| format!("1.0.{i}")).collect();
    futures::future::join_all(versions.chunks(16).map(|chunk| {
        let app = &app;
        let product = &product;
        async move {
            for v in chunk {
                app.upload_ok(app.admin(), product, v, b"x").await;
            }
        }
    }))
    .await;
    let cli = Cli::new(&app, Some(app.admin()));
    let run = cli.run(&["ls", &product]).await;
    run.assert_ok();
    let listed: Vec<&str> = run
        .stdout
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    let expected: Vec<String> = (0..1005).rev().map(|i| format!("1.0.{i}")).collect();
    assert_eq!(listed, expected);
}

// ---- release assets: several files, drafts, publish, labels --------------------------

/// The version as the server lists it, for the admin (drafts included).
async fn listed_version(app: &TestApp, product: &str, version: &str) -> serde_json::Value {
    let r = app
        .get(&format!("/product/versions/{product}"), Some(app.admin()))
        .await;
    r.assert_status(200);
    r.json()["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == version)
        .cloned()
        .unwrap_or_else(|| panic!("{version} is not listed"))
}

fn file_names(version: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = version["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn push_of_several_files_publishes_one_version_that_pull_all_and_sha256sum_verify() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let cli = Cli::new(&app, Some(app.admin()));
    let contents: Vec<(&str, Vec<u8>)> = vec![
        ("tool-linux-amd64.tar.gz", payload(1, 300_000)),
        ("tool-darwin-arm64.tar.gz", payload(2, 200_000)),
        ("tool src.zip", payload(3, 1000)),
        ("notes.txt", b"release notes\n".to_vec()),
    ];
    let paths: Vec<String> = contents.iter().map(|(n, b)| cli.file(n, b)).collect();
    let mut args = vec!["push", &product, "1.0.0"];
    args.extend(paths.iter().map(String::as_str));
    args.extend(["--jobs", "3", "--label", "channel=beta"]);
    let run = cli.run(&args).await;
    run.assert_ok();
    assert_no_progress_bar(&run);
    for (name, bytes) in &contents {
        assert!(
            run.stdout.contains(&format!(
                "uploaded {name}: {} bytes, sha256:{}",
                bytes.len(),
                sha256_hex(bytes)
            )),
            "{}",
            run.stdout
        );
    }
    assert!(
        run.stdout
            .contains(&format!("published {product} 1.0.0: 4 files")),
        "{}",
        run.stdout
    );

    let listed = listed_version(&app, &product, "1.0.0").await;
    assert_eq!(listed["state"], "published");
    assert_eq!(listed["labels"], json!({"channel": "beta"}));
    let mut expected: Vec<String> = contents.iter().map(|(n, _)| n.to_string()).collect();
    expected.sort();
    assert_eq!(file_names(&listed), expected);

    let reader = app.register(false).await;
    app.grant(&product, &reader, Perms::DOWNLOAD).await;
    let consumer = Cli::new(&app, Some(&reader));
    let run = consumer
        .run(&["pull", &product, "latest", "--all", "-o", "release"])
        .await;
    run.assert_ok();
    assert!(
        run.stdout
            .contains(&format!("pulled {product} 1.0.0: 4 files")),
        "{}",
        run.stdout
    );
    let dir = consumer.path("release");
    for (name, bytes) in &contents {
        assert_eq!(&std::fs::read(dir.join(name)).unwrap(), bytes, "{name}");
    }
    let check = std::process::Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(&dir)
        .output()
        .expect("run sha256sum");
    assert!(
        check.status.success(),
        "sha256sum -c: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&check.stdout)
            .matches(": OK")
            .count(),
        4
    );
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut want = expected.clone();
    want.push("SHA256SUMS".to_string());
    want.sort();
    assert_eq!(left, want, "no .part or .etag file is left");

    // Again without --force: refused before a byte is written.
    let again = consumer
        .run(&["pull", &product, "1.0.0", "--all", "-o", "release"])
        .await;
    again.assert_code(5);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);

    let one = consumer
        .run(&["pull", &product, "1.0.0", "--file", "tool src.zip"])
        .await;
    one.assert_ok();
    assert_eq!(
        std::fs::read(consumer.path("tool src.zip")).unwrap(),
        contents[2].1
    );
}

#[tokio::test]
async fn push_run_again_after_a_failure_resumes_the_draft_and_skips_what_it_holds() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let cli = Cli::new(&app, Some(app.admin()));
    let a = cli.file("a.bin", &payload(10, 50_000));
    let b = cli.file("b.bin", &payload(11, 60_000));
    let c = cli.file("c.bin", &payload(12, 70_000));
    let run = cli
        .run(&["push", &product, "2.0.0", &a, &b, "--draft"])
        .await;
    run.assert_ok();
    assert!(run.stdout.contains("depot publish"), "{}", run.stdout);
    let draft = listed_version(&app, &product, "2.0.0").await;
    assert_eq!(draft["state"], "draft");

    // A consumer does not see the draft.
    let reader = app.register(false).await;
    app.grant(&product, &reader, Perms::DOWNLOAD).await;
    Cli::new(&app, Some(&reader))
        .run(&["pull", &product, "2.0.0", "--file", "a.bin"])
        .await
        .assert_code(4);

    let run = cli.run(&["push", &product, "2.0.0", &a, &b, &c]).await;
    run.assert_ok();
    assert!(
        run.stdout.contains("kept a.bin: already uploaded"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("kept b.bin: already uploaded"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("uploaded c.bin: 70000 bytes"),
        "{}",
        run.stdout
    );
    let published = listed_version(&app, &product, "2.0.0").await;
    assert_eq!(published["state"], "published");
    assert_eq!(file_names(&published), ["a.bin", "b.bin", "c.bin"]);
    // One PUT each for a, b and c: the second run sent no byte of a or b again.
    assert_eq!(
        request_count(
            &app,
            "/product/upload/{product}/{version}/{file}",
            "PUT",
            201
        )
        .await,
        3
    );
}

#[tokio::test]
async fn push_refuses_a_different_file_under_a_name_the_draft_holds_and_publishes_nothing() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let cli = Cli::new(&app, Some(app.admin()));
    let first = cli.file("app.bin", b"first build");
    cli.run(&["push", &product, "3.0.0", &first, "--draft"])
        .await
        .assert_ok();
    std::fs::create_dir(cli.path("rebuilt")).unwrap();
    let second = cli.path("rebuilt/app.bin");
    std::fs::write(&second, b"another build").unwrap();
    let other = cli.file("other.bin", b"other");
    let run = cli
        .run(&["push", &product, "3.0.0", second.to_str().unwrap(), &other])
        .await;
    run.assert_code(5);
    assert!(
        run.stderr.contains("already holds a different app.bin"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("run the same push again"),
        "{}",
        run.stderr
    );
    let draft = listed_version(&app, &product, "3.0.0").await;
    assert_eq!(draft["state"], "draft", "nothing was published");
    let got = app
        .get(
            &format!("/product/download/{product}/3.0.0/app.bin?redirect=false"),
            Some(app.admin()),
        )
        .await;
    assert_eq!(got.text(), "first build");

    // Two files with one base name: refused before anything is sent.
    let run = cli
        .run(&["push", &product, "3.0.1", &first, second.to_str().unwrap()])
        .await;
    run.assert_code(1);
    assert!(
        run.stderr.contains("two of the files are named app.bin"),
        "{}",
        run.stderr
    );
    app.get(
        &format!("/product/download/{product}/3.0.1"),
        Some(app.admin()),
    )
    .await
    .assert_status(404);
}

#[tokio::test]
async fn publish_labels_ls_and_pull_by_label_promote_a_version() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let cli = Cli::new(&app, Some(app.admin()));
    let one = cli.file("one.bin", b"version one");
    cli.run(&["push", &product, "1.0.0", &one, "--label", "channel=stable"])
        .await
        .assert_ok();
    let two = cli.file("two.bin", b"version two");
    cli.run(&["push", &product, "1.1.0", &two, "--draft"])
        .await
        .assert_ok();
    // Publishing with a file list that is not the draft's: refused, still a draft.
    cli.run(&["publish", &product, "1.1.0", "--file", "one.bin"])
        .await
        .assert_code(5);
    let run = cli
        .run(&[
            "publish",
            &product,
            "1.1.0",
            "--file",
            "two.bin",
            "--label",
            "channel=beta",
        ])
        .await;
    run.assert_ok();
    assert!(run.stdout.contains("1 files"), "{}", run.stdout);

    let run = cli
        .run(&["ls", &product, "--label", "channel=stable"])
        .await;
    run.assert_ok();
    let rows: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(rows.len(), 1, "{}", run.stdout);
    assert!(rows[0].starts_with("1.0.0\t"), "{}", rows[0]);
    assert!(
        rows[0].ends_with("\tpublished\t1\tchannel=stable"),
        "{}",
        rows[0]
    );

    // Latest stable is 1.0.0 until 1.1.0 is promoted.
    let run = cli
        .run(&[
            "pull",
            &product,
            "latest",
            "--label",
            "channel=stable",
            "-o",
            "stable-1",
        ])
        .await;
    run.assert_ok();
    assert!(
        run.stdout.contains(&format!("pulled {product} 1.0.0")),
        "{}",
        run.stdout
    );
    assert_eq!(std::fs::read(cli.path("stable-1")).unwrap(), b"version one");

    let run = cli
        .run(&["labels", &product, "1.1.0", "channel=stable", "tested=yes"])
        .await;
    run.assert_ok();
    assert_eq!(run.stdout, "channel=stable\ntested=yes\n");
    let run = cli
        .run(&["labels", &product, "1.1.0", "--remove", "tested"])
        .await;
    run.assert_ok();
    assert_eq!(run.stdout, "channel=stable\n");
    let run = cli
        .run(&[
            "pull",
            &product,
            "latest",
            "--label",
            "channel=stable",
            "-o",
            "stable-2",
        ])
        .await;
    run.assert_ok();
    assert!(
        run.stdout.contains(&format!("pulled {product} 1.1.0")),
        "{}",
        run.stdout
    );
    assert_eq!(std::fs::read(cli.path("stable-2")).unwrap(), b"version two");

    // A label key the server would refuse is a usage error, before any request.
    cli.run(&["labels", &product, "1.1.0", "Bad Key=x"])
        .await
        .assert_code(2);
    // Labels need maintainer: an upload-only token is refused.
    let uploader = app.register(false).await;
    app.grant(&product, &uploader, Perms::UPLOAD).await;
    Cli::new(&app, Some(&uploader))
        .run(&["labels", &product, "1.1.0", "channel=old"])
        .await
        .assert_code(3);
}

#[tokio::test]
async fn rm_removes_a_file_from_a_draft_but_not_from_a_published_version() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let cli = Cli::new(&app, Some(app.admin()));
    let a = cli.file("a.txt", b"a");
    let b = cli.file("b.txt", b"b");
    cli.run(&["push", &product, "0.1.0", &a, &b, "--draft"])
        .await
        .assert_ok();
    cli.run(&["rm", &product, "0.1.0", "b.txt"])
        .await
        .assert_ok();
    cli.run(&["publish", &product, "0.1.0"]).await.assert_ok();
    let listed = listed_version(&app, &product, "0.1.0").await;
    assert_eq!(file_names(&listed), ["a.txt"]);
    let run = cli.run(&["rm", &product, "0.1.0", "a.txt"]).await;
    run.assert_code(5);
    assert!(run.stderr.contains("version_published"), "{}", run.stderr);
    cli.run(&["rm", &product, "0.1.0"]).await.assert_ok();
    app.get(
        &format!("/product/download/{product}/0.1.0"),
        Some(app.admin()),
    )
    .await
    .assert_status(404);
}

// ---- retention --------------------------------------------------------------------

#[tokio::test]
async fn product_settings_and_retention_preview_and_run_from_the_cli() {
    let app = TestApp::start().await;
    let product = app.product().await;
    for v in ["1.0.0", "1.0.1", "1.0.2", "1.0.3"] {
        app.upload_ok(app.admin(), &product, v, v.as_bytes()).await;
    }
    let cli = Cli::new(&app, Some(app.admin()));
    let run = cli.run(&["product", "settings", &product]).await;
    run.assert_ok();
    let shown: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON settings");
    assert_eq!(shown["retention"]["keep_last"], serde_json::Value::Null);

    let run = cli
        .run(&[
            "product",
            "settings",
            &product,
            "--keep-last",
            "2",
            "--max-age-days",
            "30",
            "--protect-label",
            "keep",
        ])
        .await;
    run.assert_ok();
    let shown: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON settings");
    assert_eq!(shown["retention"]["keep_last"], 2);
    assert_eq!(shown["retention"]["max_age_days"], 30);
    assert_eq!(shown["retention"]["protect_labels"], json!(["keep"]));
    // `off` turns one rule off and keeps the others.
    let run = cli
        .run(&["product", "settings", &product, "--max-age-days", "off"])
        .await;
    run.assert_ok();
    let shown: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON settings");
    assert_eq!(shown["retention"]["max_age_days"], serde_json::Value::Null);
    assert_eq!(shown["retention"]["keep_last"], 2);
    cli.run(&["product", "settings", &product, "--keep-last", "0"])
        .await
        .assert_code(1);
    cli.run(&["product", "settings", &product, "--keep-last", "many"])
        .await
        .assert_code(2);

    let run = cli.run(&["retention", "preview", &product]).await;
    run.assert_ok();
    let rows: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split('\t').collect())
        .collect();
    let deletes: Vec<&str> = rows
        .iter()
        .filter(|r| r[0] == "delete")
        .map(|r| r[1])
        .collect();
    assert_eq!(deletes, ["1.0.1", "1.0.0"], "{}", run.stdout);
    assert!(
        rows.contains(&vec!["keep", "1.0.3", "keep_last,latest"]),
        "{}",
        run.stdout
    );

    let run = cli.run(&["retention", "run", &product]).await;
    run.assert_ok();
    let deleted: Vec<&str> = run
        .stdout
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap())
        .collect();
    assert_eq!(deleted, ["1.0.1", "1.0.0"]);
    assert!(
        run.stderr
            .contains("2 versions deleted, 10 bytes reclaimed"),
        "{}",
        run.stderr
    );

    // Without maintainer: exit 3.
    let uploader = app.register(false).await;
    app.grant(&product, &uploader, Perms::UPLOAD).await;
    Cli::new(&app, Some(&uploader))
        .run(&["retention", "run", &product])
        .await
        .assert_code(3);
}

#[tokio::test]
async fn quota_settings_and_usage_from_the_cli_and_a_push_past_the_quota_says_why() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let other = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", &payload(1, 3000))
        .await;
    app.upload_ok(app.admin(), &other, "1.0.0", &payload(2, 10))
        .await;
    let cli = Cli::new(&app, Some(app.admin()));
    let run = cli
        .run(&[
            "product",
            "settings",
            &product,
            "--max-bytes",
            "4KiB",
            "--max-versions",
            "10",
        ])
        .await;
    run.assert_ok();
    let shown: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON settings");
    assert_eq!(
        shown["quota"],
        json!({"max_bytes": 4096, "max_versions": 10})
    );
    cli.run(&["product", "settings", &product, "--max-bytes", "4 parsecs"])
        .await
        .assert_code(2);

    // A push past the quota fails with the server's figures and a hint.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, payload(3, 2000)).unwrap();
    let run = cli
        .run(&["push", &product, "2.0.0", file.to_str().unwrap()])
        .await;
    run.assert_code(1);
    assert!(run.stderr.contains("max_bytes"), "{}", run.stderr);
    assert!(run.stderr.contains("depot usage"), "{}", run.stderr);

    let run = cli.run(&["usage", &product]).await;
    run.assert_ok();
    let rows: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(rows[0][0], "product");
    assert_eq!(
        rows[1],
        vec![product.as_str(), "3000", "1", "1", "0", "0", "4096", "10"]
    );

    // Every product, largest first (admin); `off` lifts the limit.
    let run = cli.run(&["usage"]).await;
    run.assert_ok();
    let order: Vec<&str> = run
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap())
        .filter(|p| *p == product || *p == other)
        .collect();
    assert_eq!(order, [product.as_str(), other.as_str()]);
    cli.run(&["product", "settings", &product, "--max-bytes", "off"])
        .await
        .assert_ok();
    cli.run(&["push", &product, "2.0.0", file.to_str().unwrap()])
        .await
        .assert_ok();
    // A token with a grant reads its product's usage, not the list of all.
    let reader = app.token_with(&product, Perms::DOWNLOAD).await;
    Cli::new(&app, Some(&reader))
        .run(&["usage", &product])
        .await
        .assert_ok();
    Cli::new(&app, Some(&reader))
        .run(&["usage"])
        .await
        .assert_code(3);
}

// ---- trusted publishing ------------------------------------------------------------

#[tokio::test]
async fn trust_policies_from_the_cli_and_a_push_in_github_actions_needs_no_stored_token() {
    use common::oidc::TestIssuer;
    let issuer = TestIssuer::start().await;
    let app = TestApp::builder()
        .env("DEPOT_OIDC_ISSUERS", issuer.url())
        .env("DEPOT_OIDC_ALLOW_HTTP", "true")
        .start()
        .await;
    let product = app.product().await;
    let cli = Cli::new(&app, Some(app.admin()));
    let run = cli
        .run(&[
            "trust",
            "add",
            &product,
            "--issuer",
            issuer.url(),
            "--claim",
            "repository=org/repo",
            "--claim",
            "ref=refs/tags/v*",
            "--claim",
            "workflow_ref=org/repo/.github/workflows/release.yml@*",
            "--upload",
            "--download",
            "--ttl",
            "300",
        ])
        .await;
    run.assert_ok();
    let policy: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON policy");
    let id = policy["id"].as_str().unwrap().to_string();
    let run = cli.run(&["trust", "ls", &product]).await;
    run.assert_ok();
    let row: Vec<&str> = run.stdout.lines().next().unwrap().split('\t').collect();
    assert_eq!(row[0], id);
    assert_eq!(row[2], "upload,download");
    assert_eq!(row[3], "300");
    assert!(row[4].contains("repository=org/repo"), "{row:?}");
    // A policy that trusts a whole issuer is refused with the server's reason.
    let run = cli
        .run(&[
            "trust",
            "add",
            &product,
            "--issuer",
            issuer.url(),
            "--claim",
            "ref=x",
            "--upload",
        ])
        .await;
    run.assert_code(1);
    assert!(run.stderr.contains("pin the repository"), "{}", run.stderr);

    // In a GitHub Actions job: no DEPOT_TOKEN, an ID token from the runner's endpoint.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.tar.gz");
    std::fs::write(&file, b"release bytes").unwrap();
    let (request_url, request_token) = issuer.actions_endpoint();
    let ci = Cli::new(&app, None);
    ci.remember(&request_token);
    let env = vec![
        ("DEPOT_URL".to_string(), app.url("")),
        (
            "ACTIONS_ID_TOKEN_REQUEST_URL".to_string(),
            request_url.clone(),
        ),
        (
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN".to_string(),
            request_token.clone(),
        ),
    ];
    let run = ci
        .run_with_env(&["push", &product, "1.0.0", file.to_str().unwrap()], &env)
        .await;
    run.assert_ok();
    assert!(
        run.stderr.contains("exchanged this job's OIDC identity"),
        "{}",
        run.stderr
    );
    assert_eq!(issuer.actions_tokens_issued(), 1);
    app.download(app.admin(), &product, "1.0.0")
        .await
        .assert_status(200);
    // The request token is a secret: the runner's endpoint refuses another.
    let env_bad = vec![
        ("DEPOT_URL".to_string(), app.url("")),
        ("ACTIONS_ID_TOKEN_REQUEST_URL".to_string(), request_url),
        (
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN".to_string(),
            "wrong".to_string(),
        ),
    ];
    ci.run_with_env(
        &["push", &product, "1.0.1", file.to_str().unwrap()],
        &env_bad,
    )
    .await
    .assert_code(3);

    // Elsewhere (GitLab's id_tokens): DEPOT_OIDC_TOKEN.
    let jwt = issuer.sign(&issuer.claims(), common::oidc::Key::Ec1);
    ci.remember(&jwt);
    let env = vec![
        ("DEPOT_URL".to_string(), app.url("")),
        ("DEPOT_OIDC_TOKEN".to_string(), jwt.clone()),
    ];
    ci.run_with_env(&["pull", &product, "1.0.0", "-o", "out.bin"], &env)
        .await
        .assert_ok();
    assert_eq!(std::fs::read(ci.path("out.bin")).unwrap(), b"release bytes");
    // Used once: the same token again is refused (exit 3, the server's reason).
    let run = ci
        .run_with_env(&["pull", &product, "1.0.0", "-o", "again.bin"], &env)
        .await;
    run.assert_code(3);
    assert!(run.stderr.contains("already exchanged"), "{}", run.stderr);

    cli.run(&["trust", "rm", &product, &id]).await.assert_ok();
    assert_eq!(cli.run(&["trust", "ls", &product]).await.stdout, "");
    app.assert_no_secrets_logged();
}

// ---- tokens and products ------------------------------------------------------------

#[tokio::test]
async fn token_register_prints_exactly_the_new_token_on_stdout() {
    let app = TestApp::start().await;
    let cli = Cli::new(&app, Some(app.admin()));
    let run = cli
        .run(&[
            "token",
            "register",
            "--name",
            "ci-reader",
            "--expires-in",
            "3600",
        ])
        .await;
    run.assert_ok();
    let raw = run
        .stdout
        .strip_suffix('\n')
        .expect("one line on stdout")
        .to_string();
    app.remember_secret(&raw);
    cli.remember(&raw);
    assert!(raw.starts_with("depot_") && !raw.contains(char::is_whitespace));
    assert!(run.stderr.is_empty(), "stderr: {}", run.stderr);
    let info = app.get(&format!("/fetch/{raw}"), Some(&raw)).await;
    info.assert_status(200);
    let info = info.json();
    assert_eq!(info["name"], "ci-reader");
    assert_eq!(info["admin"], false);
    assert!(info["expires_at"].is_string(), "{info}");

    let run = cli.run(&["token", "register", "--admin"]).await;
    run.assert_ok();
    let raw_admin = run.stdout.trim_end().to_string();
    app.remember_secret(&raw_admin);
    assert_eq!(
        app.get(&format!("/fetch/{raw_admin}"), Some(&raw_admin))
            .await
            .json()["admin"],
        true
    );
}

#[tokio::test]
async fn a_ci_token_mints_a_narrower_download_token_with_token_register() {
    let app = TestApp::start().await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"payload")
        .await;
    let ci = app.token_with(&product, Perms::ALL).await;
    let cli = Cli::new(&app, Some(&ci));
    let run = cli
        .run(&[
            "token",
            "register",
            "--name",
            "consumer",
            "--expires-in",
            "600",
            "--grant",
            &format!("{product}=download"),
        ])
        .await;
    run.assert_ok();
    let minted = run.stdout.trim_end().to_string();
    assert_eq!(run.stdout, format!("{minted}\n"));
    app.remember_secret(&minted);
    cli.remember(&minted);
    let consumer = Cli::new(&app, Some(&minted));
    consumer
        .run(&["pull", &product, "1.0.0", "-o", "got"])
        .await
        .assert_ok();
    let file = consumer.file("a.bin", b"x");
    consumer
        .run(&["push", &product, "2.0.0", &file])
        .await
        .assert_code(3);
    let info = app
        .get(&format!("/fetch/{minted}"), Some(app.admin()))
        .await
        .json();
    assert_eq!(info["name"], "consumer");
    assert!(info["expires_at"].is_string());

    // Without a grant, or with more than its own, the server refuses: exit 3.
    let reader = app.token_with(&product, Perms::DOWNLOAD).await;
    let as_reader = Cli::new(&app, Some(&reader));
    as_reader.run(&["token", "register"]).await.assert_code(3);
    as_reader
        .run(&[
            "token",
            "register",
            "--grant",
            &format!("{product}=download,upload"),
        ])
        .await
        .assert_code(3);
    as_reader
        .run(&["token", "register", "--grant", "no-such-product=download"])
        .await
        .assert_code(4);
    // A malformed grant is a usage error.
    as_reader
        .run(&[
            "token",
            "register",
            "--grant",
            &format!("{product}=everything"),
        ])
        .await
        .assert_code(2);
}

#[tokio::test]
async fn an_expired_token_exits_3_and_says_so() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let r = app
        .put_json(
            "/register",
            Some(app.admin()),
            &json!({ "expires_in": 1, "products": { &product: { "download": true } } }),
        )
        .await;
    r.assert_status(201);
    let raw = r.text();
    app.remember_secret(&raw);
    eventually(Duration::from_secs(15), "the token to expire", || async {
        app.get("/product/access", Some(&raw)).await.status.as_u16() == 401
    })
    .await;
    let cli = Cli::new(&app, Some(&raw));
    let run = cli.run(&["ls", &product]).await;
    run.assert_code(3);
    assert!(run.stderr.contains("token_expired"), "{}", run.stderr);
    assert!(run.stderr.contains("expired"), "{}", run.stderr);
}

#[tokio::test]
async fn token_fetch_and_prune_accept_a_raw_token_without_echoing_it() {
    let app = TestApp::start().await;
    let cli = Cli::new(&app, Some(app.admin()));
    let target = app.register(false).await;
    cli.remember(&target);
    let id = app.token_id(&target).await;

    let run = cli.run(&["token", "fetch", &target]).await;
    run.assert_ok();
    let info: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    assert_eq!(info["id"], id);
    let run = cli.run(&["token", "fetch", &id]).await;
    run.assert_ok();
    assert!(run.stdout.contains(&id));

    let run = cli.run(&["token", "prune", &target]).await;
    run.assert_ok();
    app.get("/product/access", Some(&target))
        .await
        .assert_error(401, "invalid_token");
    cli.run(&["token", "prune", &target]).await.assert_code(4);
    cli.run(&["token", "fetch", &id]).await.assert_code(4);
}

#[tokio::test]
async fn product_create_grant_revoke_and_delete_work_from_the_cli() {
    let app = TestApp::start().await;
    let cli = Cli::new(&app, Some(app.admin()));
    let product = unique("cli-prod");
    let run = cli.run(&["product", "create", &product]).await;
    run.assert_ok();
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
    cli.run(&["product", "create", &product])
        .await
        .assert_code(5);
    app.upload_ok(app.admin(), &product, "1.0.0", b"payload")
        .await;

    let user = app.register(false).await;
    cli.remember(&user);
    cli.run(&["product", "grant", &product, &user, "--download"])
        .await
        .assert_ok();
    let id = app.token_id(&user).await;
    let grants = &app.fetch_product(&product).await["tokens"][&id];
    assert_eq!(
        *grants,
        json!({"maintainer": false, "download": true, "upload": false, "delete": false})
    );
    let as_user = Cli::new(&app, Some(&user));
    as_user
        .run(&["pull", &product, "1.0.0", "-o", "got"])
        .await
        .assert_ok();
    assert_eq!(std::fs::read(as_user.path("got")).unwrap(), b"payload");
    // Upload was not granted.
    let file = as_user.file("a.bin", b"x");
    as_user
        .run(&["push", &product, "2.0.0", &file])
        .await
        .assert_code(3);

    cli.run(&["product", "revoke", &product, &id])
        .await
        .assert_ok();
    as_user
        .run(&["pull", &product, "1.0.0", "-o", "again"])
        .await
        .assert_code(4);

    cli.run(&["product", "delete", &product]).await.assert_ok();
    app.get(&format!("/product/fetch/{product}"), Some(app.admin()))
        .await
        .assert_error(404, "product_not_found");
    app.wait_blob_count(0).await;
}

#[tokio::test]
async fn url_and_token_flags_work_without_the_environment() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let cli = Cli::new(&app, None);
    cli.remember(app.admin());
    let url = app.url("");
    let run = cli
        .run_with_env(&["ls", "--url", &url, "--token", app.admin()], &[])
        .await;
    run.assert_ok();
    assert_eq!(run.stdout.lines().collect::<Vec<_>>(), [product.as_str()]);
    // Flags win over the environment.
    let env = [
        (
            "DEPOT_URL".to_string(),
            format!("http://127.0.0.1:{}", closed_port()),
        ),
        ("DEPOT_TOKEN".to_string(), "depot_wrong".to_string()),
    ];
    cli.run_with_env(&["ls", "--url", &url, "--token", app.admin()], &env)
        .await
        .assert_ok();
}

#[tokio::test]
async fn output_is_quiet_lines_without_progress_bars_when_stderr_is_not_a_terminal() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let cli = Cli::new(&app, Some(app.admin()));
    let file = cli.file("big.bin", &payload(30, 4 * 1024 * 1024));
    let push = cli.run(&["push", &product, "1.0.0", &file]).await;
    push.assert_ok();
    assert_no_progress_bar(&push);
    assert!(push.stderr.is_empty(), "stderr: {:?}", push.stderr);
    assert_eq!(push.stdout.lines().count(), 1, "{:?}", push.stdout);

    let pull = cli
        .run(&["pull", &product, "1.0.0", "-o", "copy.bin"])
        .await;
    pull.assert_ok();
    assert_no_progress_bar(&pull);
    assert!(pull.stderr.is_empty(), "stderr: {:?}", pull.stderr);
    assert_eq!(pull.stdout.lines().count(), 1, "{:?}", pull.stdout);

    let failed = cli.run(&["pull", &product, "9.9.9"]).await;
    failed.assert_code(4);
    assert_no_progress_bar(&failed);
}

#[tokio::test]
async fn the_server_log_never_shows_tokens_the_cli_sent() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let cli = Cli::new(&app, Some(app.admin()));
    let user = app.token_with(&product, Perms::DOWNLOAD).await;
    cli.remember(&user);
    cli.run(&["token", "fetch", &user]).await.assert_ok();
    cli.run(&["token", "prune", &user]).await.assert_ok();
    // TestApp's drop checks the server's stderr and stdout for every remembered token.
    app.assert_no_secrets_logged();
}

#[test]
fn serve_help_lists_every_route_the_server_answers() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_depot"))
        .args(["serve", "--help"])
        .output()
        .expect("run depot serve --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (method, path) in depot::api::ROUTES {
        assert!(
            help.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == [*method, *path]),
            "`depot serve --help` does not list {method} {path}"
        );
    }
}

// ---- resumable (tus) and direct pushes (issue 14) ----------------------------------------

const MIB: usize = 1024 * 1024;

/// PATCHes of tus uploads the server answered with 204 (from /metrics).
async fn tus_patches(app: &TestApp) -> u64 {
    let r = app.get("/metrics", None).await;
    r.assert_status(200);
    r.text()
        .lines()
        .filter(|l| l.starts_with("depot_http_requests_total{"))
        .filter(|l| {
            l.contains("method=\"PATCH\"")
                && l.contains("status=\"204\"")
                && l.contains("route=\"/uploads/")
        })
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|n| n.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("bad metrics line: {l}")) as u64
        })
        .sum()
}

/// A token that may upload and download `product` (not an admin: it sees only its own uploads).
async fn uploader(app: &TestApp, product: &str) -> String {
    app.token_with(
        product,
        Perms {
            download: true,
            ..Perms::UPLOAD
        },
    )
    .await
}

#[tokio::test]
async fn push_above_the_chunk_size_goes_up_resumable_in_pieces_and_downloads_intact() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = uploader(&app, &product).await;
    let cli = Cli::new(&app, Some(&token));
    let bytes = payload(41, 5 * MIB + 4321);
    let file = cli.file("big.bin", &bytes);
    let digest = sha256_hex(&bytes);

    let before = tus_patches(&app).await;
    let run = cli
        .run(&["push", &product, "1.0.0", &file, "--chunk-size", "1MiB"])
        .await;
    run.assert_ok();
    assert_no_progress_bar(&run);
    assert_eq!(
        run.stdout,
        format!(
            "pushed {product} 1.0.0: {} bytes, sha256:{digest}\n",
            bytes.len()
        )
    );
    // Six pieces: five of 1 MiB and the rest.
    assert_eq!(tus_patches(&app).await - before, 6);
    assert!(
        app.tus_list(&token, &format!("?product={product}"))
            .await
            .is_empty(),
        "an unfinished upload remains"
    );
    let stored = &app.fetch_product(&product).await["versions"]["1.0.0"];
    assert_eq!(stored["file_name"], "big.bin");
    assert_eq!(stored["checksum"], format!("sha256:{digest}"));
    let r = app.download(&token, &product, "1.0.0").await;
    r.assert_status(200);
    assert_eq!(
        r.header("x-checksum-sha256").as_deref(),
        Some(digest.as_str())
    );
    assert!(
        r.body == bytes,
        "downloaded bytes differ from the pushed file"
    );

    // With a label: the version appears with it.
    let run = cli
        .run(&[
            "push",
            &product,
            "1.1.0",
            &file,
            "--chunk-size",
            "1MiB",
            "--label",
            "channel=beta",
        ])
        .await;
    run.assert_ok();
    assert_eq!(
        run.stdout,
        format!(
            "pushed {product} 1.1.0: {} bytes, sha256:{digest}\n",
            bytes.len()
        )
    );
    let listed = listed_version(&app, &product, "1.1.0").await;
    assert_eq!(listed["labels"], json!({"channel": "beta"}));
    assert_eq!(listed["state"], "published");

    // At or below the chunk size: one request, as before (no PATCH).
    let before = tus_patches(&app).await;
    cli.run(&["push", &product, "1.2.0", &file, "--chunk-size", "6MiB"])
        .await
        .assert_ok();
    assert_eq!(tus_patches(&app).await, before);

    // An existing version is refused before any byte (exit 5); a tiny chunk is a usage error.
    let run = cli
        .run(&["push", &product, "1.0.0", &file, "--chunk-size", "1MiB"])
        .await;
    run.assert_code(5);
    assert_eq!(tus_patches(&app).await, before);
    let run = cli
        .run(&["push", &product, "2.0.0", &file, "--chunk-size", "100KiB"])
        .await;
    run.assert_code(2);
    assert!(run.stderr.contains("256KiB"), "{}", run.stderr);
    assert!(
        app.tus_list(&token, &format!("?product={product}"))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn push_run_again_resumes_the_unfinished_upload_it_finds_on_the_server() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = uploader(&app, &product).await;
    let cli = Cli::new(&app, Some(&token));
    let bytes = payload(42, 3 * MIB + 777);
    let file = cli.file("tool.tgz", &bytes);
    let digest = sha256_hex(&bytes);
    let checksum = format!("sha256:{digest}");

    // What a push that died after its first piece leaves behind.
    let location = app
        .tus_create_ok(
            &token,
            bytes.len() as u64,
            &[
                ("product", &product),
                ("version", "1.0.0"),
                ("filename", "tool.tgz"),
                ("checksum", &checksum),
            ],
        )
        .await;
    app.tus_patch(&token, &location, 0, &bytes[..MIB], None)
        .await
        .assert_status(204);

    let before = tus_patches(&app).await;
    let run = cli
        .run(&["push", &product, "1.0.0", &file, "--chunk-size", "1MiB"])
        .await;
    run.assert_ok();
    assert!(
        run.stderr.contains(&format!(
            "resuming the upload of tool.tgz: {MIB} of {} bytes",
            bytes.len()
        )),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stdout,
        format!(
            "pushed {product} 1.0.0: {} bytes, {checksum}\n",
            bytes.len()
        )
    );
    // The rest only (1 MiB, 1 MiB, 777 bytes), into the same upload, which is now complete.
    assert_eq!(tus_patches(&app).await - before, 3);
    assert_eq!(app.tus_offset(&token, &location).await, bytes.len() as u64);
    assert!(
        app.tus_list(&token, &format!("?product={product}"))
            .await
            .is_empty()
    );
    let r = app.download(&token, &product, "1.0.0").await;
    r.assert_status(200);
    assert!(
        r.body == bytes,
        "downloaded bytes differ from the pushed file"
    );

    // An unfinished upload of another file holds a version: the push says which.
    let other = app
        .tus_create_ok(
            &token,
            5000,
            &[
                ("product", &product),
                ("version", "2.0.0"),
                ("filename", "other.bin"),
            ],
        )
        .await;
    let run = cli
        .run(&["push", &product, "2.0.0", &file, "--chunk-size", "1MiB"])
        .await;
    run.assert_code(5);
    assert!(run.stderr.contains("version_pending"), "{}", run.stderr);
    assert!(
        run.stderr.contains("other.bin") && run.stderr.contains(&tus_id(&other)),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn push_of_several_files_sends_the_large_ones_resumable_into_the_draft() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = uploader(&app, &product).await;
    let cli = Cli::new(&app, Some(&token));
    let big = payload(43, 2 * MIB + 99);
    let small = payload(44, 1000);
    let big_file = cli.file("big.bin", &big);
    let small_file = cli.file("notes.txt", &small);

    let before = tus_patches(&app).await;
    let run = cli
        .run(&[
            "push",
            &product,
            "1.0.0",
            &big_file,
            &small_file,
            "--chunk-size",
            "1MiB",
        ])
        .await;
    run.assert_ok();
    assert!(
        run.stdout
            .contains(&format!("published {product} 1.0.0: 2 files")),
        "{}",
        run.stdout
    );
    assert_eq!(tus_patches(&app).await - before, 3);
    let listed = listed_version(&app, &product, "1.0.0").await;
    assert_eq!(file_names(&listed), ["big.bin", "notes.txt"]);
    let r = app
        .get(
            &format!("/product/download/{product}/1.0.0/big.bin"),
            Some(&token),
        )
        .await;
    r.assert_status(200);
    assert!(
        r.body == big,
        "downloaded bytes differ from the pushed file"
    );
    assert!(
        app.tus_list(&token, &format!("?product={product}"))
            .await
            .is_empty()
    );

    // --draft: the large file resumable into a draft that stays one.
    let run = cli
        .run(&[
            "push",
            &product,
            "2.0.0",
            &big_file,
            "--draft",
            "--chunk-size",
            "1MiB",
        ])
        .await;
    run.assert_ok();
    assert_eq!(
        listed_version(&app, &product, "2.0.0").await["state"],
        "draft"
    );
}

#[tokio::test]
async fn push_direct_sends_the_file_to_the_signed_url_and_commits_it() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = uploader(&app, &product).await;
    let cli = Cli::new(&app, Some(&token));
    let bytes = payload(45, 2 * MIB + 5);
    let file = cli.file("direct.bin", &bytes);
    let digest = sha256_hex(&bytes);

    let run = cli
        .run(&["push", &product, "1.0.0", &file, "--direct"])
        .await;
    run.assert_ok();
    assert_no_progress_bar(&run);
    assert_eq!(
        run.stdout,
        format!(
            "pushed {product} 1.0.0: {} bytes, sha256:{digest}\n",
            bytes.len()
        )
    );
    let r = app.download(&token, &product, "1.0.0").await;
    r.assert_status(200);
    assert_eq!(
        r.header("x-checksum-sha256").as_deref(),
        Some(digest.as_str())
    );
    assert!(
        r.body == bytes,
        "downloaded bytes differ from the pushed file"
    );

    // Several files, each direct into the draft, published together; and with a label.
    let small = cli.file("notes.txt", &payload(46, 300));
    let run = cli
        .run(&["push", &product, "2.0.0", &file, &small, "--direct"])
        .await;
    run.assert_ok();
    assert!(
        run.stdout
            .contains(&format!("published {product} 2.0.0: 2 files")),
        "{}",
        run.stdout
    );
    let listed = listed_version(&app, &product, "2.0.0").await;
    assert_eq!(file_names(&listed), ["direct.bin", "notes.txt"]);
    cli.run(&[
        "push",
        &product,
        "3.0.0",
        &file,
        "--direct",
        "--label",
        "channel=stable",
    ])
    .await
    .assert_ok();
    assert_eq!(
        listed_version(&app, &product, "3.0.0").await["labels"],
        json!({"channel": "stable"})
    );

    // An existing version is refused (exit 5); --direct and --chunk-size exclude each other.
    let run = cli
        .run(&["push", &product, "1.0.0", &file, "--direct"])
        .await;
    run.assert_code(5);
    assert!(run.stderr.contains("version_exists"), "{}", run.stderr);
    cli.run(&[
        "push",
        &product,
        "4.0.0",
        &file,
        "--direct",
        "--chunk-size",
        "1MiB",
    ])
    .await
    .assert_code(2);
    // A wrong --checksum: the server refuses at completion, nothing is published.
    let run = cli
        .run(&[
            "push",
            &product,
            "5.0.0",
            &file,
            "--direct",
            "--checksum",
            &"ab".repeat(32),
        ])
        .await;
    run.assert_code(6);
    assert!(!app.versions(&product).await.contains(&"5.0.0".to_string()));
}

#[tokio::test]
async fn a_resumable_push_past_the_quota_is_refused_before_any_byte_with_the_hint() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let cli = Cli::new(&app, Some(app.admin()));
    cli.run(&["product", "settings", &product, "--max-bytes", "1MiB"])
        .await
        .assert_ok();
    let file = cli.file("big.bin", &payload(47, 2 * MIB));
    let before = tus_patches(&app).await;
    for extra in [&["--chunk-size", "1MiB"][..], &["--direct"][..]] {
        let mut args = vec!["push", product.as_str(), "1.0.0", file.as_str()];
        args.extend_from_slice(extra);
        let run = cli.run(&args).await;
        run.assert_code(1);
        assert!(run.stderr.contains("quota_exceeded"), "{}", run.stderr);
        assert!(run.stderr.contains("depot usage"), "{}", run.stderr);
    }
    assert_eq!(tus_patches(&app).await, before);
    assert!(app.versions(&product).await.is_empty());
}

/// A TCP proxy to 127.0.0.1:`target` that cuts off the connection once, when the bytes
/// clients sent through it pass `cut_after`: a flaky proxy in the middle of a body.
async fn flaky_proxy(target: u16, cut_after: u64) -> u16 {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let port = listener.local_addr().expect("proxy address").port();
    let sent = Arc::new(AtomicU64::new(0));
    let cut = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (sent, cut) = (sent.clone(), cut.clone());
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match client_read.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let before = sent.fetch_add(n as u64, Ordering::SeqCst);
                        if before + n as u64 > cut_after && !cut.swap(true, Ordering::SeqCst) {
                            let keep = (cut_after.saturating_sub(before) as usize).min(n);
                            let _ = server_write.write_all(&buf[..keep]).await;
                            let _ = server_write.flush().await;
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            return;
                        }
                        if server_write.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let down = async {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                };
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn a_resumable_push_survives_a_proxy_that_cuts_a_piece_off_midway() {
    let app = TestApp::start().await;
    let product = app.product().await;
    let token = uploader(&app, &product).await;
    let proxy = flaky_proxy(app.port(), 3 * MIB as u64 / 2).await;
    let cli = Cli::with_url(format!("http://127.0.0.1:{proxy}"), Some(&token));
    let bytes = payload(48, 4 * MIB + 10);
    let file = cli.file("flaky.bin", &bytes);
    let digest = sha256_hex(&bytes);

    let run = cli
        .run(&["push", &product, "1.0.0", &file, "--chunk-size", "1MiB"])
        .await;
    run.assert_ok();
    assert!(run.stderr.contains("retrying in"), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        format!(
            "pushed {product} 1.0.0: {} bytes, sha256:{digest}\n",
            bytes.len()
        )
    );
    let r = app.download(&token, &product, "1.0.0").await;
    r.assert_status(200);
    assert!(
        r.body == bytes,
        "downloaded bytes differ from the pushed file"
    );
    assert!(
        app.tus_list(&token, &format!("?product={product}"))
            .await
            .is_empty()
    );
}
