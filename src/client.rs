//! `depot` as a client of a Depot server: push, pull, ls, token and product commands.
//!
//! Push streams the file in a hand-built multipart body (known length, no whole-file
//! read) and appends the SHA-256 it computed on the way as the `checksum` field, so the
//! server verifies what it received. Pull writes to `<file>.part`, resumes it with a
//! `Range` + `If-Range` request, verifies the SHA-256 against the server's
//! `X-Checksum-Sha256`, and renames only when it matches.

use bytes::Bytes;
use clap::{Args, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Exit codes, so scripts can react to the kind of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Other = 1,
    Auth = 3,
    NotFound = 4,
    Conflict = 5,
    Checksum = 6,
    Network = 7,
    Server = 8,
}

#[derive(Debug)]
pub struct ClientError {
    pub kind: Failure,
    pub message: String,
}

type ClientResult<T> = Result<T, ClientError>;

fn fail(kind: Failure, message: impl Into<String>) -> ClientError {
    ClientError {
        kind,
        message: message.into(),
    }
}

impl ClientError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.kind as u8)
    }
}

#[derive(Debug, Args)]
pub struct Connection {
    /// Depot server URL
    #[arg(
        long,
        env = "DEPOT_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// API token (prefer the DEPOT_TOKEN environment variable: flags show up in `ps`)
    #[arg(long, env = "DEPOT_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Upload a file as a new version (streams it; the server verifies its SHA-256)
    Push {
        #[command(flatten)]
        connection: Connection,
        product: String,
        version: String,
        file: PathBuf,
        /// Expected digest (sha256:<hex> or <hex>); the server refuses the upload if it differs
        #[arg(long)]
        checksum: Option<String>,
    },
    /// Download a version (or `latest`), verify its SHA-256, resume interrupted downloads
    Pull {
        #[command(flatten)]
        connection: Connection,
        product: String,
        /// A version name or `latest`
        version: String,
        /// Output path [default: the uploaded file name, in the current directory]
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// With `latest`: consider pre-releases too
        #[arg(long)]
        prerelease: bool,
    },
    /// List your products, or the versions of one product
    Ls {
        #[command(flatten)]
        connection: Connection,
        product: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RemoteTokenCommand {
    /// Register a new token on the server (admin; or a restricted token from your own grants)
    Register {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        name: Option<String>,
        /// Lifetime in seconds
        #[arg(long, conflicts_with = "expires_at")]
        expires_in: Option<u64>,
        /// Expiry as an RFC 3339 date-time (e.g. 2030-01-31T00:00:00Z)
        #[arg(long)]
        expires_at: Option<String>,
        /// A grant for the new token: PRODUCT=FLAGS, FLAGS a comma list of download,
        /// upload, delete, maintainer (repeatable; a non-admin token may hand out only
        /// rights it has, and must give at least one grant)
        #[arg(long = "grant", value_name = "PRODUCT=FLAGS", value_parser = parse_grant)]
        grants: Vec<(String, Value)>,
    },
    /// Show a token's public metadata (raw token or tok_ id)
    Fetch {
        #[command(flatten)]
        connection: Connection,
        #[arg(value_name = "TOKEN")]
        target: String,
    },
    /// Revoke a token (raw token or tok_ id)
    Prune {
        #[command(flatten)]
        connection: Connection,
        #[arg(value_name = "TOKEN")]
        target: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProductCommand {
    /// Create a product (you get all rights on it)
    Create { name: String },
    /// Delete a product with all its versions
    Delete { name: String },
    /// Grant a token rights on a product
    Grant {
        product: String,
        /// Raw token or tok_ id
        #[arg(value_name = "TOKEN")]
        target: String,
        #[arg(long)]
        maintainer: bool,
        #[arg(long)]
        download: bool,
        #[arg(long)]
        upload: bool,
        #[arg(long)]
        delete: bool,
    },
    /// Remove a token's grant on a product
    Revoke {
        product: String,
        #[arg(value_name = "TOKEN")]
        target: String,
    },
}

impl ClientCommand {
    pub fn connection(&self) -> &Connection {
        match self {
            ClientCommand::Push { connection, .. }
            | ClientCommand::Pull { connection, .. }
            | ClientCommand::Ls { connection, .. } => connection,
        }
    }
}

impl RemoteTokenCommand {
    pub fn connection(&self) -> &Connection {
        match self {
            RemoteTokenCommand::Register { connection, .. }
            | RemoteTokenCommand::Fetch { connection, .. }
            | RemoteTokenCommand::Prune { connection, .. } => connection,
        }
    }
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    interactive: bool,
}

impl Client {
    pub fn new(conn: &Connection) -> ClientResult<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| fail(Failure::Other, format!("cannot build HTTP client: {e}")))?;
        Ok(Client {
            http,
            base: conn.url.trim_end_matches('/').to_string(),
            token: conn.token.clone().filter(|t| !t.is_empty()),
            interactive: std::io::stderr().is_terminal(),
        })
    }

    fn request(&self, method: Method, path: &str) -> ClientResult<reqwest::RequestBuilder> {
        let token = self
            .token
            .as_deref()
            .ok_or_else(|| fail(Failure::Auth, "no token: set DEPOT_TOKEN or pass --token"))?;
        Ok(self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-Api-Token", token))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> ClientResult<reqwest::Response> {
        let resp = req.send().await.map_err(network)?;
        if resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(resp);
        }
        Err(server_error(resp).await)
    }

    async fn json(&self, req: reqwest::RequestBuilder) -> ClientResult<Value> {
        let resp = self.send(req).await?;
        resp.json().await.map_err(network)
    }

    fn progress(&self, len: u64, what: &str) -> ProgressBar {
        if !self.interactive {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what.to_string());
        bar
    }

    pub async fn push(
        &self,
        product: &str,
        version: &str,
        file: &Path,
        checksum: Option<&str>,
    ) -> ClientResult<Value> {
        let meta = tokio::fs::metadata(file).await.map_err(|e| {
            fail(
                Failure::Other,
                format!("cannot read {}: {e}", file.display()),
            )
        })?;
        let file_name = file
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| fail(Failure::Other, "the file name is not valid UTF-8"))?
            .replace('"', "_");
        // The server refuses a duplicate before reading the body and closes the
        // connection, which a streaming client sees as a broken pipe: ask first.
        let probe = self.request(
            Method::HEAD,
            &format!("/product/download/{product}/{version}?redirect=false"),
        )?;
        if probe.send().await.map_err(network)?.status() == StatusCode::OK {
            return Err(fail(
                Failure::Conflict,
                format!(
                    "{product} {version} already exists\nhint: versions are immutable: push under a new version name"
                ),
            ));
        }
        let boundary = format!("depot-{}", uuid::Uuid::new_v4().simple());
        let head = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"product\"\r\n\r\n{product}\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n{version}\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n",
            b = boundary
        );
        // The digest field follows the file: its length is fixed, its value known at the end.
        let tail_len = format!(
            "\r\n--{b}\r\nContent-Disposition: form-data; name=\"checksum\"\r\n\r\nsha256:{h}\r\n--{b}--\r\n",
            b = boundary,
            h = "0".repeat(64)
        )
        .len() as u64;
        let total = head.len() as u64 + meta.len() + tail_len;
        let handle = tokio::fs::File::open(file).await.map_err(|e| {
            fail(
                Failure::Other,
                format!("cannot open {}: {e}", file.display()),
            )
        })?;
        let bar = self.progress(meta.len(), &format!("push {product} {version}"));
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let reader = tokio_util::io::ReaderStream::with_capacity(handle, 256 * 1024);
        let body = push_body(head, reader, boundary, bar.clone());
        let mut req = self
            .request(Method::POST, "/product/upload")?
            .header("content-type", content_type)
            .header("content-length", total)
            .body(reqwest::Body::wrap_stream(body));
        if let Some(c) = checksum {
            req = req.header("X-Checksum-Sha256", c);
        }
        let result = self.json(req).await;
        bar.finish_and_clear();
        result
    }

    pub async fn pull(
        &self,
        product: &str,
        version: &str,
        output: Option<&Path>,
        prerelease: bool,
    ) -> ClientResult<PathBuf> {
        // Always through Depot (never a redirect): the token must not follow a 302 to
        // another host, and HEAD, Range and If-Range need Depot's own headers.
        let path =
            format!("/product/download/{product}/{version}?redirect=false&prerelease={prerelease}");
        // HEAD first: the final name, size and digest, before touching the disk.
        let head = self
            .request(Method::HEAD, &path)?
            .send()
            .await
            .map_err(network)?;
        if !head.status().is_success() {
            // HEAD answers carry no body: ask again with GET for the JSON error.
            return Err(match self.send(self.request(Method::GET, &path)?).await {
                Err(e) => e,
                Ok(_) => fail(
                    Failure::Server,
                    format!("HEAD {path} answered {}", head.status()),
                ),
            });
        }
        let expected = header(&head, "x-checksum-sha256")
            .ok_or_else(|| fail(Failure::Server, "the server sent no X-Checksum-Sha256"))?;
        let etag = header(&head, "etag").unwrap_or_default();
        // The header itself: reqwest's `content_length()` is the size of the body it got,
        // which for a HEAD answer is 0, and that would rule out every resume.
        let size = header(&head, "content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let target = match output {
            Some(p) => p.to_path_buf(),
            None => PathBuf::from(
                header(&head, "content-disposition")
                    .and_then(|cd| file_name_from_disposition(&cd))
                    .unwrap_or_else(|| format!("{product}-{version}")),
            ),
        };
        let part = PathBuf::from(format!("{}.part", target.display()));
        let tag_file = PathBuf::from(format!("{}.part.etag", target.display()));
        let mut hasher = Sha256::new();
        let mut have: u64 = 0;
        // Resume only a partial download of the very same artifact.
        let same_artifact = tokio::fs::read_to_string(&tag_file)
            .await
            .is_ok_and(|t| t == etag);
        if same_artifact && let Ok(mut existing) = tokio::fs::File::open(&part).await {
            let mut buf = vec![0u8; 1024 * 1024];
            loop {
                let n = existing.read(&mut buf).await.map_err(io_fail)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                have += n as u64;
            }
        }
        if have > size {
            have = 0;
            hasher = Sha256::new();
        }
        tokio::fs::write(&tag_file, &etag).await.map_err(io_fail)?;
        let mut req = self.request(Method::GET, &path)?;
        if have > 0 {
            req = req
                .header("Range", format!("bytes={have}-"))
                .header("If-Range", &etag);
        }
        let resp = if have > 0 && have == size {
            None
        } else {
            Some(self.send(req).await?)
        };
        let mut out = match &resp {
            Some(r) if r.status() == StatusCode::PARTIAL_CONTENT => tokio::fs::OpenOptions::new()
                .append(true)
                .open(&part)
                .await
                .map_err(io_fail)?,
            Some(_) => {
                have = 0;
                hasher = Sha256::new();
                tokio::fs::File::create(&part).await.map_err(io_fail)?
            }
            None => tokio::fs::OpenOptions::new()
                .append(true)
                .open(&part)
                .await
                .map_err(io_fail)?,
        };
        if let Some(resp) = resp {
            let bar = self.progress(size, &format!("pull {product} {version}"));
            bar.set_position(have);
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(network)?;
                hasher.update(&chunk);
                out.write_all(&chunk).await.map_err(io_fail)?;
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
        }
        out.flush().await.map_err(io_fail)?;
        out.sync_all().await.map_err(io_fail)?;
        drop(out);
        let actual = hex::encode(hasher.finalize());
        if actual != expected {
            let _ = tokio::fs::remove_file(&part).await;
            let _ = tokio::fs::remove_file(&tag_file).await;
            return Err(fail(
                Failure::Checksum,
                format!(
                    "checksum mismatch: got sha256:{actual}, the server says sha256:{expected}; the partial file was removed, run pull again"
                ),
            ));
        }
        tokio::fs::rename(&part, &target).await.map_err(io_fail)?;
        let _ = tokio::fs::remove_file(&tag_file).await;
        Ok(target)
    }

    pub async fn run(&self, command: ClientCommand) -> ClientResult<()> {
        match command {
            ClientCommand::Push {
                product,
                version,
                file,
                checksum,
                ..
            } => {
                let out = self
                    .push(&product, &version, &file, checksum.as_deref())
                    .await?;
                println!(
                    "pushed {product} {version}: {} bytes, {}",
                    out["size"],
                    out["checksum"].as_str().unwrap_or("")
                );
            }
            ClientCommand::Pull {
                product,
                version,
                output,
                prerelease,
                ..
            } => {
                let path = self
                    .pull(&product, &version, output.as_deref(), prerelease)
                    .await?;
                println!(
                    "pulled {product} {version} to {} (sha256 verified)",
                    path.display()
                );
            }
            ClientCommand::Ls { product: None, .. } => {
                let names = self
                    .json(self.request(Method::GET, "/product/access")?)
                    .await?;
                for name in names.as_array().into_iter().flatten() {
                    println!("{}", name.as_str().unwrap_or_default());
                }
            }
            ClientCommand::Ls {
                product: Some(product),
                ..
            } => {
                let mut cursor: Option<String> = None;
                loop {
                    let mut path = format!("/product/versions/{product}?limit=1000");
                    if let Some(c) = &cursor {
                        path.push_str(&format!("&cursor={c}"));
                    }
                    let page = self.json(self.request(Method::GET, &path)?).await?;
                    for v in page["versions"].as_array().into_iter().flatten() {
                        println!(
                            "{}\t{}\t{}\t{}\t{}",
                            v["version"].as_str().unwrap_or_default(),
                            v["size"],
                            v["checksum"].as_str().unwrap_or_default(),
                            v["uploaded_at"].as_str().unwrap_or_default(),
                            v["file_name"].as_str().unwrap_or_default()
                        );
                    }
                    match page["next_cursor"].as_str() {
                        Some(next) => cursor = Some(next.to_string()),
                        None => break,
                    }
                }
            }
        }
        Ok(())
    }

    pub async fn token(&self, command: RemoteTokenCommand) -> ClientResult<()> {
        match command {
            RemoteTokenCommand::Register {
                admin,
                name,
                expires_in,
                expires_at,
                grants,
                ..
            } => {
                let mut body = json!({ "admin": admin, "name": name, "expires_in": expires_in });
                if let Some(at) = expires_at {
                    body["expires_at"] = json!(at);
                }
                if !grants.is_empty() {
                    body["products"] = Value::Object(grants.into_iter().collect());
                }
                let resp = self
                    .send(self.request(Method::PUT, "/register")?.json(&body))
                    .await?;
                // The new token is the command's output: printed once, on stdout only.
                println!("{}", resp.text().await.map_err(network)?);
            }
            RemoteTokenCommand::Fetch { target: token, .. } => {
                let info = self
                    .json(self.request(Method::GET, &format!("/fetch/{token}"))?)
                    .await?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&info).unwrap_or_default()
                );
            }
            RemoteTokenCommand::Prune { target: token, .. } => {
                self.send(self.request(Method::DELETE, &format!("/prune/{token}"))?)
                    .await?;
                eprintln!("token revoked");
            }
        }
        Ok(())
    }

    pub async fn product(&self, command: ProductCommand) -> ClientResult<()> {
        match command {
            ProductCommand::Create { name } => {
                self.send(
                    self.request(Method::PUT, "/product/create")?
                        .json(&json!({ "name": name })),
                )
                .await?;
                eprintln!("product {name} created");
            }
            ProductCommand::Delete { name } => {
                self.send(self.request(Method::DELETE, &format!("/product/delete/{name}"))?)
                    .await?;
                eprintln!("product {name} deleted");
            }
            ProductCommand::Grant {
                product,
                target: token,
                maintainer,
                download,
                upload,
                delete,
            } => {
                let body = json!({
                    "product": product, "token": token,
                    "permissions": { "maintainer": maintainer, "download": download, "upload": upload, "delete": delete },
                });
                self.send(
                    self.request(Method::PUT, "/product/modify/addToken")?
                        .json(&body),
                )
                .await?;
                eprintln!("granted");
            }
            ProductCommand::Revoke {
                product,
                target: token,
            } => {
                let body = json!({ "product": product, "token": token });
                self.send(
                    self.request(Method::DELETE, "/product/modify/deleteToken")?
                        .json(&body),
                )
                .await?;
                eprintln!("revoked");
            }
        }
        Ok(())
    }
}

/// The multipart body of a push: head, the file (hashed on the way), the checksum field.
fn push_body(
    head: String,
    reader: tokio_util::io::ReaderStream<tokio::fs::File>,
    boundary: String,
    bar: ProgressBar,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    enum Stage {
        Head(String, tokio_util::io::ReaderStream<tokio::fs::File>),
        File(tokio_util::io::ReaderStream<tokio::fs::File>, Sha256),
        Done,
    }
    futures::stream::unfold(Stage::Head(head, reader), move |stage| {
        let boundary = boundary.clone();
        let bar = bar.clone();
        async move {
            match stage {
                Stage::Head(head, reader) => {
                    Some((Ok(Bytes::from(head)), Stage::File(reader, Sha256::new())))
                }
                Stage::File(mut reader, mut hasher) => match reader.next().await {
                    Some(Ok(chunk)) => {
                        hasher.update(&chunk);
                        bar.inc(chunk.len() as u64);
                        Some((Ok(chunk), Stage::File(reader, hasher)))
                    }
                    Some(Err(e)) => Some((Err(e), Stage::Done)),
                    None => {
                        let tail = format!(
                            "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"checksum\"\r\n\r\nsha256:{}\r\n--{boundary}--\r\n",
                            hex::encode(hasher.finalize())
                        );
                        Some((Ok(Bytes::from(tail)), Stage::Done))
                    }
                },
                Stage::Done => None,
            }
        }
    })
}

/// `PRODUCT=download,upload` into the product name and its grant object.
fn parse_grant(spec: &str) -> Result<(String, Value), String> {
    let (product, flags) = spec
        .split_once('=')
        .ok_or_else(|| format!("expected PRODUCT=FLAGS, got '{spec}'"))?;
    if product.is_empty() {
        return Err("the product name is empty".to_string());
    }
    let mut grant =
        json!({ "maintainer": false, "download": false, "upload": false, "delete": false });
    for flag in flags.split(',').map(str::trim) {
        match flag {
            "maintainer" | "download" | "upload" | "delete" => grant[flag] = json!(true),
            other => {
                return Err(format!(
                    "unknown right '{other}': use download, upload, delete or maintainer"
                ));
            }
        }
    }
    Ok((product.to_string(), grant))
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn file_name_from_disposition(cd: &str) -> Option<String> {
    let start = cd.find("filename=\"")? + "filename=\"".len();
    let name = &cd[start..];
    let name = &name[..name.find('"')?];
    // Never let a server pick a path: keep the base name only.
    crate::domain::names::sanitize_file_name(name)
}

fn network(err: reqwest::Error) -> ClientError {
    // Never the URL: `token fetch|prune` carry a raw token in the path.
    let err = err.without_url();
    let mut detail = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        detail.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    fail(
        Failure::Network,
        format!(
            "cannot reach the Depot server ({detail}); check --url / DEPOT_URL and your network"
        ),
    )
}

fn io_fail(err: std::io::Error) -> ClientError {
    fail(Failure::Other, format!("local file error: {err}"))
}

async fn server_error(resp: reqwest::Response) -> ClientError {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let message = body["error"].as_str().unwrap_or("").to_string();
    let code = body["code"].as_str().unwrap_or("").to_string();
    let (kind, hint) = match status {
        StatusCode::UNAUTHORIZED => (
            Failure::Auth,
            "check DEPOT_TOKEN: it is missing, unknown, revoked or expired",
        ),
        StatusCode::FORBIDDEN => (
            Failure::Auth,
            "your token lacks the right for this; ask a maintainer for a grant",
        ),
        StatusCode::NOT_FOUND => (
            Failure::NotFound,
            "check the product and version names (and that your token has a grant)",
        ),
        StatusCode::CONFLICT => (
            Failure::Conflict,
            "versions are immutable: push under a new version name",
        ),
        s if s.is_server_error() => (
            Failure::Server,
            "the server or its storage is having trouble; retry later",
        ),
        _ if code == "checksum_mismatch" => (
            Failure::Checksum,
            "the file changed or was corrupted in transit; push again",
        ),
        _ => (Failure::Other, "see the message above"),
    };
    let kind = if code == "checksum_mismatch" {
        Failure::Checksum
    } else {
        kind
    };
    fail(kind, format!("{status}: {message} [{code}]\nhint: {hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_specs_parse_into_grant_objects() {
        assert_eq!(
            parse_grant("app=download,upload").unwrap(),
            (
                "app".to_string(),
                json!({ "maintainer": false, "download": true, "upload": true, "delete": false })
            )
        );
        assert!(parse_grant("app").is_err());
        assert!(parse_grant("=download").is_err());
        assert!(parse_grant("app=").is_err());
        assert!(parse_grant("app=admin").is_err());
    }

    #[test]
    fn file_names_from_content_disposition_are_sanitised() {
        assert_eq!(
            file_name_from_disposition(
                "attachment; filename=\"app.tgz\"; filename*=UTF-8''app.tgz"
            )
            .as_deref(),
            Some("app.tgz")
        );
        assert_eq!(
            file_name_from_disposition("attachment; filename=\"../../x\""),
            None
        );
        assert_eq!(file_name_from_disposition("inline"), None);
    }
}
