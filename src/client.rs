//! `depot` as a client of a Depot server: push, pull, ls, token and product commands.
//!
//! Push streams the file in a hand-built multipart body (known length, no whole-file
//! read) and appends the SHA-256 it computed on the way as the `checksum` field, so the
//! server verifies what it received. Pull writes to `<file>.part`, resumes it with a
//! `Range` + `If-Range` request, verifies the SHA-256 against the server's
//! `X-Checksum-Sha256`, and renames only when it matches.
//!
//! The client is careful with what a server (or another local user) could make it do:
//! the token goes in `Authorization: Bearer` and only to the origin of `--url` (a
//! redirect elsewhere is refused), a server-chosen file name is used only when it is a
//! plain visible base name, the `.part` file is never opened through a symlink, and no
//! existing file is replaced without `--force`.

use base64::Engine;
use bytes::Bytes;
use clap::{Args, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

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
    /// Upload files as a new version (streamed; the server verifies every SHA-256)
    ///
    /// One file makes the version in one request (a large one: see --chunk-size). Several
    /// files (or --draft) go into a draft, --jobs at a time, each with its SHA-256, and
    /// the draft is then published with exactly these files, so consumers never see a
    /// half-filled version. Run the same push again after a failure: files the draft
    /// already holds with the same SHA-256 are skipped.
    ///
    /// A file larger than --chunk-size goes up in resumable pieces (tus 1.0), and the same
    /// push run again continues an interrupted upload; --direct sends the files straight
    /// to the storage bucket instead.
    Push {
        #[command(flatten)]
        connection: Connection,
        product: String,
        version: String,
        /// The files (their base names become the file names in the version)
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Expected digest of the one file (sha256:<hex> or <hex>); the server refuses the upload if it differs
        #[arg(long)]
        checksum: Option<String>,
        /// A label for the version (repeatable)
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Leave the version a draft (other jobs may add files; `depot publish` seals it)
        #[arg(long)]
        draft: bool,
        /// Files uploaded at once
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
        jobs: u16,
        /// Files larger than this go up in resumable pieces of this size (tus 1.0)
        ///
        /// Each piece is one request, so set it below the body limit of a proxy in front
        /// of Depot (e.g. 50MB behind a 100 MB cap) or small enough to finish within its
        /// timeout. A piece cut off is retried from what the server stored (a few times,
        /// with growing pauses), and the same push run again after a crash or Ctrl-C
        /// resumes the upload where it stopped (the server keeps an unfinished upload for
        /// a day by default). Files of at most this size go in one request. At least
        /// 256KiB: smaller pieces spend more time on round trips than on data.
        #[arg(
            long,
            value_name = "SIZE",
            default_value = "64MiB",
            value_parser = parse_chunk_size,
            conflicts_with = "direct"
        )]
        chunk_size: u64,
        /// Send each file straight to the storage bucket, bypassing the gateway
        ///
        /// Depot hands out a signed URL (an S3 presigned PUT, or on the filesystem store
        /// a URL Depot serves itself), the file goes there in one request, and Depot then
        /// verifies its size and SHA-256 and commits it. Use it when the bucket is
        /// reachable from here and the gateway is the bottleneck (CPU, bandwidth). Your
        /// token goes only to Depot, never with the file. One request per file, up to
        /// 5 GiB, not resumable (a failed transfer is retried a few times): behind a proxy
        /// with a body limit, or for larger files, push without --direct.
        #[arg(long)]
        direct: bool,
    },
    /// Publish a draft: it becomes an immutable version that consumers see
    Publish {
        #[command(flatten)]
        connection: Connection,
        product: String,
        version: String,
        /// A label for the version (repeatable)
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Publish only if the draft holds exactly these files (repeatable)
        #[arg(long = "file", value_name = "NAME")]
        files: Vec<String>,
    },
    /// Set or remove labels of a version (maintainer), e.g. `channel=stable`
    Labels {
        #[command(flatten)]
        connection: Connection,
        product: String,
        version: String,
        /// Labels to set
        #[arg(value_name = "KEY=VALUE", value_parser = parse_label)]
        set: Vec<(String, String)>,
        /// Label keys to remove (repeatable)
        #[arg(long = "remove", value_name = "KEY")]
        remove: Vec<String>,
    },
    /// Delete a version, or one file of a draft
    Rm {
        #[command(flatten)]
        connection: Connection,
        product: String,
        version: String,
        /// A file of a draft (published versions are immutable: delete the whole version)
        file: Option<String>,
    },
    /// Download a version (or `latest`), verify its SHA-256, resume interrupted downloads
    ///
    /// Writes `<output>.part` (never through a symlink; a `.part` that is not a regular
    /// file of yours is refused) and renames it to the output only once the digest matches,
    /// never over an existing file unless --force.
    Pull {
        #[command(flatten)]
        connection: Connection,
        product: String,
        /// A version name or `latest`
        version: String,
        /// Output path [default: the uploaded file name, in the current directory; a
        /// server-chosen name is used only if it is a plain visible base name (no `/` or
        /// `\`, no leading dot, no control or format characters), else pull refuses:
        /// pass -o]
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// With `latest`: consider pre-releases too
        #[arg(long)]
        prerelease: bool,
        /// With `latest`: only versions carrying this label (KEY=VALUE)
        #[arg(long, value_name = "KEY=VALUE")]
        label: Option<String>,
        /// One file of the version [default: its primary file]
        #[arg(long, value_name = "NAME", conflicts_with = "all")]
        file: Option<String>,
        /// Every file of the version and its SHA256SUMS, into the directory given by -o
        /// [default: the current directory]
        #[arg(long)]
        all: bool,
        /// Replace the output file if it exists (without it, pull refuses with exit code 5)
        #[arg(long)]
        force: bool,
    },
    /// List your products, or the versions of one product (with drafts, if you may upload)
    ///
    /// Version rows: version, primary file size, its checksum, upload time, its name,
    /// state (published or draft), number of files, labels (key=value,...).
    Ls {
        #[command(flatten)]
        connection: Connection,
        product: Option<String>,
        /// Only versions carrying this label (KEY=VALUE)
        #[arg(long, value_name = "KEY=VALUE", requires = "product")]
        label: Option<String>,
    },
    /// Retention: what a run would delete (preview), or run it now (maintainer)
    Retention {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        action: RetentionAction,
    },
    /// What a product holds against its quota (any grant), or every product (admin)
    ///
    /// Rows: product, bytes (exact), versions, files, drafts, bytes of uploads in flight,
    /// the quota (max_bytes/max_versions, `-` for none).
    Usage {
        #[command(flatten)]
        connection: Connection,
        product: Option<String>,
        /// Order of the products, largest first (without a product)
        #[arg(long, value_parser = ["bytes", "versions", "name"], default_value = "bytes", conflicts_with = "product")]
        sort: String,
    },
    /// Trusted publishing: which CI identities may exchange their OIDC token for a
    /// short-lived token on a product (maintainer)
    Trust {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        action: TrustAction,
    },
    /// Read the audit log, newest first (admin; a maintainer with --product)
    Audit {
        #[command(flatten)]
        connection: Connection,
        /// Only this product's events
        #[arg(long)]
        product: Option<String>,
        /// Only events of this type (e.g. version.published)
        #[arg(long = "type")]
        kind: Option<String>,
        /// Only events by this token id, or system:janitor|retention|bootstrap|cli
        #[arg(long)]
        actor: Option<String>,
        /// Only events at or after this RFC 3339 time
        #[arg(long)]
        since: Option<String>,
        /// Only events before this RFC 3339 time
        #[arg(long)]
        until: Option<String>,
        /// At most this many events
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line instead of a table
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TrustAction {
    /// Trust an issuer's tokens whose claims match; prints the new policy
    ///
    /// Example (GitHub Actions): depot trust add my-lib
    ///   --issuer https://token.actions.githubusercontent.com --claim repository=org/repo
    ///   --claim 'ref=refs/tags/v*' --claim 'workflow_ref=org/repo/.github/workflows/release.yml@*'
    ///   --upload --download
    Add {
        product: String,
        /// The issuer URL, exactly as the server's DEPOT_OIDC_ISSUERS lists it
        #[arg(long)]
        issuer: String,
        /// A claim the token must have (repeatable; `*` in VALUE matches any run of
        /// characters); one of repository, project_path, sub is required
        #[arg(long = "claim", value_name = "NAME=VALUE", required = true, value_parser = parse_claim)]
        claims: Vec<(String, String)>,
        #[arg(long)]
        upload: bool,
        #[arg(long)]
        download: bool,
        #[arg(long)]
        delete: bool,
        /// Lifetime of an exchanged token in seconds [default: the server's maximum]
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u64>,
    },
    /// List a product's trust policies: id, issuer, rights, ttl, claims
    Ls { product: String },
    /// Remove a trust policy
    Rm { product: String, id: String },
}

#[derive(Debug, Subcommand)]
pub enum RetentionAction {
    /// Print one line per version: delete or keep, the version, the reason or the rules
    Preview { product: String },
    /// Apply the product's policy now; print what was deleted
    Run { product: String },
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
    /// Show a product's retention and quota settings, or change them (maintainer)
    ///
    /// Without flags: prints the settings the product follows (its own, else the
    /// server's). Each flag changes one rule and keeps the others; `off` turns it off.
    Settings {
        product: String,
        /// Keep the N newest versions
        #[arg(long, value_name = "N|off", value_parser = parse_limit)]
        keep_last: Option<Limit>,
        /// Keep versions younger than N days
        #[arg(long, value_name = "N|off", value_parser = parse_limit)]
        max_age_days: Option<Limit>,
        /// Keep pre-releases younger than N days (default: --max-age-days)
        #[arg(long, value_name = "N|off", value_parser = parse_limit)]
        prerelease_max_age_days: Option<Limit>,
        /// Keep versions downloaded within N days
        #[arg(long, value_name = "N|off", value_parser = parse_limit)]
        not_downloaded_days: Option<Limit>,
        /// Never delete versions carrying a label with this key (repeatable; replaces the list)
        #[arg(long = "protect-label", value_name = "KEY")]
        protect_labels: Vec<String>,
        /// Empty the list of protected label keys
        #[arg(long, conflicts_with = "protect_labels")]
        no_protect_labels: bool,
        /// Quota: the most bytes the product may hold (e.g. 10GiB, 500MB, 1048576)
        #[arg(long, value_name = "SIZE|off", value_parser = parse_size_limit)]
        max_bytes: Option<Limit>,
        /// Quota: the most versions the product may hold (drafts included)
        #[arg(long, value_name = "N|off", value_parser = parse_limit)]
        max_versions: Option<Limit>,
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
            | ClientCommand::Publish { connection, .. }
            | ClientCommand::Labels { connection, .. }
            | ClientCommand::Rm { connection, .. }
            | ClientCommand::Pull { connection, .. }
            | ClientCommand::Ls { connection, .. }
            | ClientCommand::Retention { connection, .. }
            | ClientCommand::Usage { connection, .. }
            | ClientCommand::Trust { connection, .. }
            | ClientCommand::Audit { connection, .. } => connection,
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
            .redirect(redirect_policy())
            // A Referer would carry the previous path, which may hold a raw token.
            .referer(false)
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
        // `bearer_auth` marks the header sensitive (kept out of reqwest's debug output).
        Ok(self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token))
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

    /// A JSON answer read into one of the types the server writes it from (`crate::dto`).
    async fn typed<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> ClientResult<T> {
        let value = self.json(req).await?;
        serde_json::from_value(value).map_err(|e| {
            fail(
                Failure::Server,
                format!("unexpected answer from the server: {e}"),
            )
        })
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
        labels: &[(String, String)],
    ) -> ClientResult<crate::dto::UploadResult> {
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
            &format!(
                "/product/download/{}/{}?redirect=false",
                segment(product),
                segment(version)
            ),
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
        let mut head = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"product\"\r\n\r\n{product}\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n{version}\r\n",
            b = boundary
        );
        // Label values hold no control characters (`parse_label`): no line breaks here.
        for (key, value) in labels {
            head.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"label.{key}\"\r\n\r\n{value}\r\n"
            ));
        }
        head.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        ));
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
        let result = self.typed(req).await;
        bar.finish_and_clear();
        result
    }

    /// Downloads one file (the version's primary file unless `source.file` names one),
    /// verified against the server's SHA-256, resuming an interrupted `.part`.
    pub async fn pull(
        &self,
        source: &PullSource<'_>,
        output: Option<&Path>,
        force: bool,
    ) -> ClientResult<Pulled> {
        let (product, version) = (source.product, source.version);
        // Always through Depot (never a redirect): HEAD, Range and If-Range need Depot's
        // own headers (and the token never goes to another origin anyway).
        let path = source.path(source.file);
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
        let served = header(&head, "x-depot-version").unwrap_or_else(|| version.to_string());
        // The header itself: reqwest's `content_length()` is the size of the body it got,
        // which for a HEAD answer is 0, and that would rule out every resume.
        let size = header(&head, "content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let target = match output {
            Some(p) => p.to_path_buf(),
            None => {
                let name = header(&head, "content-disposition")
                    .and_then(|cd| file_name_from_disposition(&cd))
                    .or_else(|| source.file.map(str::to_string))
                    .unwrap_or_else(|| format!("{product}-{version}"));
                PathBuf::from(plain_file_name(&name)?)
            }
        };
        if !force && tokio::fs::symlink_metadata(&target).await.is_ok() {
            return Err(exists_error(&target));
        }
        let part = PathBuf::from(format!("{}.part", target.display()));
        let tag_file = PathBuf::from(format!("{}.part.etag", target.display()));
        let mut hasher = Sha256::new();
        let mut have: u64 = 0;
        // A `.part` left by an earlier pull: opened without following a symlink, and used
        // only if it is a regular file of ours (see `open_existing_part`).
        let mut existing = open_existing_part(&part).await?;
        // Resume only a partial download of the very same artifact.
        let same_artifact = read_tag(&tag_file).await.is_some_and(|t| t == etag);
        if same_artifact && let Some(file) = existing.as_mut() {
            let mut buf = vec![0u8; 1024 * 1024];
            loop {
                let n = file.read(&mut buf).await.map_err(io_fail)?;
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
        write_tag(&tag_file, &etag).await?;
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
        let resumed = have > 0
            && resp
                .as_ref()
                .is_none_or(|r| r.status() == StatusCode::PARTIAL_CONTENT);
        let mut out = match existing {
            // Opened for append: what comes next goes after the bytes already hashed.
            Some(file) if resumed => file,
            Some(file) => {
                have = 0;
                hasher = Sha256::new();
                file.set_len(0).await.map_err(io_fail)?;
                file
            }
            None => {
                have = 0;
                hasher = Sha256::new();
                create_part(&part).await?
            }
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
        finish_part(&part, &target, force).await?;
        let _ = tokio::fs::remove_file(&tag_file).await;
        Ok(Pulled {
            path: target,
            checksum: actual,
            version: served,
        })
    }

    /// Every file of a version into `dir`, each verified, and its `SHA256SUMS` beside
    /// them (so `sha256sum -c SHA256SUMS` checks the directory later). `latest` is
    /// resolved once: every file comes from the same version.
    pub async fn pull_all(
        &self,
        source: &PullSource<'_>,
        dir: &Path,
        force: bool,
    ) -> ClientResult<(String, usize)> {
        let resp = self
            .send(self.request(Method::GET, &source.path(Some(CHECKSUMS_FILE)))?)
            .await?;
        let version = header(&resp, "x-depot-version").unwrap_or_else(|| source.version.into());
        let too_large = || fail(Failure::Server, "the server's SHA256SUMS is too large");
        if resp.content_length().unwrap_or(0) > MAX_CHECKSUMS_BYTES {
            return Err(too_large());
        }
        // Read with a cap whatever the server declared (a chunked answer declares nothing).
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk.map_err(network)?);
            if body.len() as u64 > MAX_CHECKSUMS_BYTES {
                return Err(too_large());
            }
        }
        let sums = String::from_utf8(body)
            .map_err(|_| fail(Failure::Server, "the server's SHA256SUMS is not UTF-8"))?;
        let listed = parse_checksums(&sums)?;
        tokio::fs::create_dir_all(dir).await.map_err(io_fail)?;
        // Refuse before downloading anything, not after half the files.
        if !force {
            for name in listed
                .iter()
                .map(|(_, n)| n.as_str())
                .chain([CHECKSUMS_FILE])
            {
                let target = dir.join(name);
                if tokio::fs::symlink_metadata(&target).await.is_ok() {
                    return Err(exists_error(&target));
                }
            }
        }
        let concrete = PullSource {
            version: &version,
            prerelease: false,
            label: None,
            ..*source
        };
        for (digest, name) in &listed {
            let pulled = self
                .pull(
                    &PullSource {
                        file: Some(name),
                        ..concrete
                    },
                    Some(&dir.join(name)),
                    force,
                )
                .await?;
            if &pulled.checksum != digest {
                return Err(fail(
                    Failure::Checksum,
                    format!(
                        "{name}: got sha256:{}, SHA256SUMS says sha256:{digest}",
                        pulled.checksum
                    ),
                ));
            }
        }
        let part = dir.join(format!("{CHECKSUMS_FILE}.part"));
        let _ = tokio::fs::remove_file(&part).await;
        let mut file = create_part(&part).await?;
        file.write_all(sums.as_bytes()).await.map_err(io_fail)?;
        file.sync_all().await.map_err(io_fail)?;
        drop(file);
        finish_part(&part, &dir.join(CHECKSUMS_FILE), force).await?;
        Ok((version, listed.len()))
    }

    /// Several files (or one with `--draft`) into a draft, `jobs` at a time, then
    /// published with exactly these files unless `draft`.
    #[allow(clippy::too_many_arguments)]
    pub async fn push_files(
        &self,
        product: &str,
        version: &str,
        files: &[PathBuf],
        checksum: Option<&str>,
        labels: &[(String, String)],
        draft: bool,
        jobs: usize,
        transfer: Transfer,
    ) -> ClientResult<()> {
        let mut names = std::collections::BTreeSet::new();
        let mut plan = Vec::with_capacity(files.len());
        for path in files {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| {
                    fail(
                        Failure::Other,
                        format!("{}: the file name is not valid UTF-8", path.display()),
                    )
                })?
                .to_string();
            if !names.insert(name.clone()) {
                return Err(fail(
                    Failure::Other,
                    format!("two of the files are named {name}: a version holds each name once"),
                ));
            }
            let len = tokio::fs::metadata(path)
                .await
                .map_err(|e| {
                    fail(
                        Failure::Other,
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?
                .len();
            plan.push((path.as_path(), name, len));
        }
        let expected = checksum.map(normalize_checksum).transpose()?;
        let bar = self.progress(
            plan.iter().map(|(_, _, len)| len).sum(),
            &format!("push {product} {version}"),
        );
        let mut uploads = futures::stream::iter(plan.iter().map(|(path, name, len)| {
            self.push_draft_file(
                product,
                version,
                path,
                name,
                *len,
                expected.clone(),
                transfer,
                &bar,
            )
        }))
        .buffer_unordered(jobs);
        while let Some(outcome) = uploads.next().await {
            let line = match outcome {
                Ok(line) => line,
                Err(mut err) => {
                    bar.finish_and_clear();
                    err.message.push_str(&format!(
                        "\nnote: the draft {product} {version} keeps the files that were uploaded; run the same push again to resume"
                    ));
                    return Err(err);
                }
            };
            bar.suspend(|| println!("{line}"));
        }
        drop(uploads);
        bar.finish_and_clear();
        if draft {
            println!(
                "draft {product} {version}: {} files; publish it with: depot publish {product} {version}",
                plan.len()
            );
            return Ok(());
        }
        let published = self
            .publish(
                product,
                version,
                labels,
                &names.into_iter().collect::<Vec<_>>(),
            )
            .await?;
        println!(
            "published {product} {version}: {} files",
            published.info.files.len()
        );
        Ok(())
    }

    /// One file into the draft: skipped when the draft holds it with the same SHA-256
    /// (a push run again after a failure), refused when it holds another.
    #[allow(clippy::too_many_arguments)]
    async fn push_draft_file(
        &self,
        product: &str,
        version: &str,
        path: &Path,
        name: &str,
        len: u64,
        expected: Option<String>,
        transfer: Transfer,
        bar: &ProgressBar,
    ) -> ClientResult<String> {
        let digest = match expected {
            Some(digest) => digest,
            None => sha256_of(path).await?,
        };
        let file_path = format!(
            "{}/{}/{}",
            segment(product),
            segment(version),
            segment(name)
        );
        let probe = self
            .request(
                Method::HEAD,
                &format!("/product/download/{file_path}?redirect=false"),
            )?
            .send()
            .await
            .map_err(network)?;
        if probe.status() == StatusCode::OK {
            if header(&probe, "x-checksum-sha256").as_deref() == Some(digest.as_str()) {
                bar.inc(len);
                return Ok(format!(
                    "kept {name}: already uploaded, same sha256:{digest}"
                ));
            }
            return Err(fail(
                Failure::Conflict,
                format!(
                    "{product} {version} already holds a different {name}\nhint: a draft's file is removed with `depot rm {product} {version} {name}`; a published version is immutable"
                ),
            ));
        }
        let upload = FileUpload {
            product,
            version,
            name,
            path,
            len,
            digest: &digest,
            draft: true,
        };
        match transfer.mode(len) {
            Mode::Single => {}
            Mode::Resumable(chunk) => {
                self.push_resumable(&upload, chunk, bar).await?;
                return Ok(format!("uploaded {name}: {len} bytes, sha256:{digest}"));
            }
            Mode::Direct => {
                let out = self.push_direct(&upload, bar).await?;
                return Ok(format!(
                    "uploaded {name}: {} bytes, {}",
                    out.size, out.checksum
                ));
            }
        }
        let handle = tokio::fs::File::open(path).await.map_err(|e| {
            fail(
                Failure::Other,
                format!("cannot open {}: {e}", path.display()),
            )
        })?;
        let progress = bar.clone();
        let body =
            tokio_util::io::ReaderStream::with_capacity(handle, 256 * 1024).inspect(move |chunk| {
                if let Ok(chunk) = chunk {
                    progress.inc(chunk.len() as u64);
                }
            });
        let req = self
            .request(Method::PUT, &format!("/product/upload/{file_path}"))?
            .header("content-length", len)
            .header("X-Checksum-Sha256", format!("sha256:{digest}"))
            .body(reqwest::Body::wrap_stream(body));
        let out: crate::dto::UploadResult = self.typed(req).await?;
        Ok(format!(
            "uploaded {name}: {} bytes, {}",
            out.size, out.checksum
        ))
    }

    /// One file as a new version. At most --chunk-size (and not --direct): one request,
    /// as `push`. Larger: resumable (tus); with --direct: straight to the bucket. With
    /// labels, such a file goes into a draft that is then published with them, so the
    /// version appears with its labels. Returns the size and `sha256:<hex>`.
    pub async fn push_one(
        &self,
        product: &str,
        version: &str,
        file: &Path,
        checksum: Option<&str>,
        labels: &[(String, String)],
        transfer: Transfer,
    ) -> ClientResult<(u64, String)> {
        let len = tokio::fs::metadata(file)
            .await
            .map_err(|e| {
                fail(
                    Failure::Other,
                    format!("cannot read {}: {e}", file.display()),
                )
            })?
            .len();
        let mode = transfer.mode(len);
        if mode == Mode::Single {
            let out = self.push(product, version, file, checksum, labels).await?;
            return Ok((out.size, out.checksum));
        }
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| fail(Failure::Other, "the file name is not valid UTF-8"))?
            .to_string();
        let expected = checksum.map(normalize_checksum).transpose()?;
        let bar = self.progress(len, &format!("push {product} {version}"));
        if !labels.is_empty() {
            let uploaded = self
                .push_draft_file(product, version, file, &name, len, expected, transfer, &bar)
                .await;
            bar.finish_and_clear();
            uploaded.map_err(|mut err| {
                err.message.push_str(&format!(
                    "\nnote: the draft {product} {version} keeps what was uploaded; run the same push again to resume"
                ));
                err
            })?;
            let published = self
                .publish(product, version, labels, std::slice::from_ref(&name))
                .await?;
            return Ok((published.info.size, published.info.checksum));
        }
        let digest = match expected {
            Some(digest) => digest,
            None => sha256_of(file).await?,
        };
        let upload = FileUpload {
            product,
            version,
            name: &name,
            path: file,
            len,
            digest: &digest,
            draft: false,
        };
        let result = match mode {
            Mode::Direct => self
                .push_direct(&upload, &bar)
                .await
                .map(|out| (out.size, out.checksum)),
            _ => {
                let chunk = transfer.chunk_size;
                self.push_resumable(&upload, chunk, &bar)
                    .await
                    .map(|()| (len, format!("sha256:{digest}")))
            }
        };
        bar.finish_and_clear();
        result
    }

    /// Sends a file with tus 1.0 in pieces of `chunk` bytes, each streamed from the file
    /// (never more than a read buffer in memory). An unfinished upload of the same file
    /// (name, length, SHA-256, draft or not) that the server still holds is continued;
    /// else one is created. Every piece continues from the offset the server reports
    /// (which counts only what it stored durably); a piece that fails in transit, or that
    /// the server refuses for the moment (locked, offset moved, 5xx), is retried from the
    /// server's offset after a pause, up to `RETRIES` times in a row.
    async fn push_resumable(
        &self,
        up: &FileUpload<'_>,
        chunk: u64,
        bar: &ProgressBar,
    ) -> ClientResult<()> {
        let checksum = format!("sha256:{}", up.digest);
        let (id, mut offset) = match self.find_upload(up, &checksum).await? {
            (Some(found), _) => {
                if found.1 > 0 {
                    bar.suspend(|| {
                        eprintln!(
                            "depot: resuming the upload of {}: {} of {} bytes are on the server",
                            up.name, found.1, up.len
                        )
                    });
                }
                found
            }
            (None, others) => self.create_upload(up, &checksum, &others).await?,
        };
        bar.inc(offset);
        let mut failures = 0u32;
        let mut resync = false;
        loop {
            let attempt = if resync {
                self.upload_offset(&id, up).await
            } else if offset >= up.len {
                break;
            } else {
                let size = chunk.min(up.len - offset);
                match self.patch_chunk(&id, up, offset, size, bar).await {
                    Ok(next) if next > offset && next <= offset + size => Ok(next),
                    Ok(next) if next == offset => Err(Attempt::Retry(format!(
                        "the server stored none of the {size} bytes sent at offset {offset}"
                    ))),
                    Ok(next) => Err(Attempt::Fatal(fail(
                        Failure::Server,
                        format!(
                            "the server reported offset {next} after {size} bytes sent at offset {offset}"
                        ),
                    ))),
                    Err(e) => Err(e),
                }
            };
            match attempt {
                Ok(next) => {
                    if next >= offset {
                        bar.inc(next - offset);
                    } else {
                        bar.dec(offset - next);
                    }
                    if !resync {
                        failures = 0;
                    }
                    offset = next;
                    resync = false;
                }
                Err(Attempt::Fatal(err)) => return Err(err),
                Err(Attempt::Retry(reason)) => {
                    failures += 1;
                    if failures > RETRIES {
                        return Err(fail(
                            Failure::Network,
                            format!(
                                "{}: giving up after {RETRIES} retries: {reason}\nnote: the server keeps the unfinished upload ({offset} of {} bytes); run the same push again to resume it",
                                up.name, up.len
                            ),
                        ));
                    }
                    let pause = retry_pause(failures);
                    bar.suspend(|| {
                        eprintln!(
                            "depot: {}: {reason}; retrying in {} s ({failures}/{RETRIES})",
                            up.name,
                            pause.as_secs()
                        )
                    });
                    tokio::time::sleep(pause).await;
                    resync = true;
                }
            }
        }
        Ok(())
    }

    /// `GET /uploads` for the version: the caller's unfinished upload of this very file
    /// (the one furthest along, checked with HEAD) if there is one, and the other
    /// unfinished uploads of the version (to explain a refusal).
    async fn find_upload(
        &self,
        up: &FileUpload<'_>,
        checksum: &str,
    ) -> ClientResult<(Option<(String, u64)>, Vec<ListedUpload>)> {
        let path = format!(
            "/uploads?product={}&version={}",
            segment(up.product),
            segment(up.version)
        );
        let listed: UploadList = self
            .typed(
                self.request(Method::GET, &path)?
                    .header("Tus-Resumable", TUS_VERSION),
            )
            .await?;
        let (mut same, others): (Vec<ListedUpload>, Vec<ListedUpload>) = listed
            .uploads
            .into_iter()
            .filter(|u| u.product == up.product && u.version == up.version)
            .partition(|u| {
                u.filename == up.name
                    && u.length == up.len
                    && u.draft == up.draft
                    && u.checksum
                        .as_deref()
                        .is_some_and(|c| c.eq_ignore_ascii_case(checksum))
                    && is_upload_id(&u.id)
            });
        same.sort_by_key(|u| std::cmp::Reverse(u.offset));
        for candidate in same {
            match self.upload_offset(&candidate.id, up).await {
                Ok(offset) => return Ok((Some((candidate.id, offset)), others)),
                // Gone or expired since the listing: look further, else start afresh.
                Err(Attempt::Fatal(err)) if err.kind == Failure::NotFound => continue,
                Err(Attempt::Fatal(err)) => return Err(err),
                Err(Attempt::Retry(reason)) => {
                    return Err(fail(
                        Failure::Network,
                        format!(
                            "cannot check the unfinished upload of {}: {reason}",
                            up.name
                        ),
                    ));
                }
            }
        }
        Ok((None, others))
    }

    /// `POST /uploads`: a new tus upload of the file (every check happens here, before
    /// any byte). Returns its id and the offset the server reports (0).
    async fn create_upload(
        &self,
        up: &FileUpload<'_>,
        checksum: &str,
        others: &[ListedUpload],
    ) -> ClientResult<(String, u64)> {
        let draft = if up.draft { "true" } else { "false" };
        let metadata = [
            ("product", up.product),
            ("version", up.version),
            ("filename", up.name),
            ("checksum", checksum),
            ("draft", draft),
        ]
        .iter()
        .map(|(key, value)| format!("{key} {}", BASE64.encode(value)))
        .collect::<Vec<_>>()
        .join(",");
        let req = self
            .request(Method::POST, "/uploads")?
            .header("Tus-Resumable", TUS_VERSION)
            .header("Upload-Length", up.len)
            .header("Upload-Metadata", metadata)
            .body(Vec::new());
        let resp = req.send().await.map_err(network)?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let mut err = error_from(status, &body);
            if body["code"] == "version_pending" && !others.is_empty() {
                let safe = crate::domain::names::terminal_safe;
                for u in others {
                    err.message.push_str(&format!(
                        "\nnote: an unfinished upload holds {} {}: {}, {} of {} bytes, {}, expires {} (id {}); it is not this file (another name, length or checksum)",
                        up.product,
                        up.version,
                        safe(&u.filename),
                        u.offset,
                        u.length,
                        u.checksum.as_deref().map(safe).unwrap_or_else(|| "no checksum".into()),
                        safe(u.expires_at.as_deref().unwrap_or("?")),
                        safe(&u.id),
                    ));
                }
                err.message.push_str(
                    "\nhint: push that file again to finish it, wait until it expires, or remove it with DELETE /uploads/<id>",
                );
            }
            return Err(err);
        }
        let id = header(&resp, "location")
            .as_deref()
            .and_then(upload_id_from_location)
            .ok_or_else(|| {
                fail(
                    Failure::Server,
                    "the server created an upload but sent no usable Location",
                )
            })?;
        let offset = header(&resp, "upload-offset")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        Ok((id, offset))
    }

    /// `HEAD /uploads/{id}`: the bytes the server holds durably. A network failure or a
    /// 5xx can be retried; a missing or expired upload, or one of another length, cannot.
    async fn upload_offset(&self, id: &str, up: &FileUpload<'_>) -> Result<u64, Attempt> {
        let req = self
            .request(Method::HEAD, &format!("/uploads/{id}"))
            .map_err(Attempt::Fatal)?
            .header("Tus-Resumable", TUS_VERSION);
        let resp = req.send().await.map_err(transit_failure)?;
        let status = resp.status();
        if status.is_server_error() {
            return Err(Attempt::Retry(format!(
                "HEAD of the upload answered {status}"
            )));
        }
        match status {
            StatusCode::NOT_FOUND | StatusCode::GONE => {
                return Err(Attempt::Fatal(fail(
                    Failure::NotFound,
                    format!(
                        "the upload of {} is no longer on the server ({status}: it expired, was removed, or was refused when it was complete)\nhint: run the same push again to start over",
                        up.name
                    ),
                )));
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                // HEAD answers have no body: ask again with GET for the message.
                let listed = self
                    .request(Method::GET, "/uploads")
                    .map_err(Attempt::Fatal)?;
                return Err(Attempt::Fatal(match self.send(listed).await {
                    Err(e) => e,
                    Ok(_) => fail(
                        Failure::Auth,
                        format!("the server refused to show the upload ({status})"),
                    ),
                }));
            }
            s if !s.is_success() => {
                return Err(Attempt::Fatal(fail(
                    Failure::Other,
                    format!("HEAD of the upload of {} answered {status}", up.name),
                )));
            }
            _ => {}
        }
        let number = |name: &str| header(&resp, name).and_then(|v| v.trim().parse::<u64>().ok());
        if number("upload-length").is_some_and(|length| length != up.len) {
            return Err(Attempt::Fatal(fail(
                Failure::Server,
                format!(
                    "the server's upload of {} has another length than the file",
                    up.name
                ),
            )));
        }
        match number("upload-offset") {
            Some(offset) if offset <= up.len => Ok(offset),
            _ => Err(Attempt::Fatal(fail(
                Failure::Server,
                "the server sent no valid Upload-Offset",
            ))),
        }
    }

    /// `PATCH /uploads/{id}`: `size` bytes of the file from `offset`, streamed. Returns the
    /// server's new offset. The bar moves with the bytes sent and is moved back once the
    /// answer is in (the caller advances it by what the server stored).
    async fn patch_chunk(
        &self,
        id: &str,
        up: &FileUpload<'_>,
        offset: u64,
        size: u64,
        bar: &ProgressBar,
    ) -> Result<u64, Attempt> {
        let mut file = tokio::fs::File::open(up.path).await.map_err(|e| {
            Attempt::Fatal(fail(
                Failure::Other,
                format!("cannot open {}: {e}", up.path.display()),
            ))
        })?;
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| Attempt::Fatal(io_fail(e)))?;
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (counter, progress) = (sent.clone(), bar.clone());
        let body = tokio_util::io::ReaderStream::with_capacity(file.take(size), 256 * 1024)
            .inspect(move |piece| {
                if let Ok(piece) = piece {
                    let n = piece.len() as u64;
                    counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    progress.inc(n);
                }
            });
        let req = self
            .request(Method::PATCH, &format!("/uploads/{id}"))
            .map_err(Attempt::Fatal)?
            .header("Tus-Resumable", TUS_VERSION)
            .header("content-type", "application/offset+octet-stream")
            .header("Upload-Offset", offset)
            .header("content-length", size)
            .body(reqwest::Body::wrap_stream(body));
        let sent_back = |bar: &ProgressBar| {
            bar.dec(sent.load(std::sync::atomic::Ordering::Relaxed));
        };
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => {
                sent_back(bar);
                return Err(transit_failure(e));
            }
        };
        sent_back(bar);
        let status = resp.status();
        if status.is_success() {
            return header(&resp, "upload-offset")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Attempt::Fatal(fail(
                        Failure::Server,
                        "the server answered a PATCH without Upload-Offset",
                    ))
                });
        }
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let code = body["code"].as_str().unwrap_or_default();
        let passing = matches!(
            code,
            "offset_mismatch" | "upload_locked" | "chunk_checksum_mismatch"
        ) || status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS;
        if passing {
            let message = body["error"].as_str().unwrap_or_default();
            return Err(Attempt::Retry(crate::domain::names::terminal_safe(
                &format!("{status}: {message} [{code}]"),
            )));
        }
        Err(Attempt::Fatal(error_from(status, &body)))
    }

    /// Direct to the bucket: `POST /product/upload-url`, the file streamed in one PUT to
    /// the URL it returns with exactly its headers (and no token: it may be another
    /// origin), then `POST /product/upload-url/{id}/complete`, which verifies and commits.
    async fn push_direct(
        &self,
        up: &FileUpload<'_>,
        bar: &ProgressBar,
    ) -> ClientResult<crate::dto::UploadResult> {
        let request = json!({
            "product": up.product,
            "version": up.version,
            "file": up.name,
            "size": up.len,
            "checksum": format!("sha256:{}", up.digest),
            "draft": up.draft,
        });
        let grant: DirectGrant = self
            .typed(
                self.request(Method::POST, "/product/upload-url")?
                    .json(&request),
            )
            .await?;
        if !is_upload_id(&grant.upload_id) {
            return Err(fail(
                Failure::Server,
                "the server sent an invalid upload_id",
            ));
        }
        if !grant.method.eq_ignore_ascii_case("PUT") {
            return Err(fail(
                Failure::Server,
                format!(
                    "the server asked for an upload with {}; this client sends PUT",
                    crate::domain::names::terminal_safe(&grant.method)
                ),
            ));
        }
        let target = url::Url::parse(&self.base)
            .and_then(|base| base.join(&grant.url))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| fail(Failure::Server, "the server sent an invalid upload URL"))?;
        let origin = target.origin().ascii_serialization();
        let mut failures = 0u32;
        let sent = loop {
            match self.put_direct(&target, &grant, up, bar).await {
                Ok(()) => break Ok(()),
                Err(Attempt::Fatal(err)) => break Err(err),
                Err(Attempt::Retry(reason)) => {
                    failures += 1;
                    if failures > DIRECT_RETRIES {
                        break Err(fail(
                            Failure::Network,
                            format!(
                                "the upload of {} to {origin} failed {} times, last: {reason}",
                                up.name, failures,
                            ),
                        ));
                    }
                    let pause = retry_pause(failures);
                    bar.suspend(|| {
                        eprintln!(
                            "depot: {}: {reason}; retrying in {} s ({failures}/{DIRECT_RETRIES})",
                            up.name,
                            pause.as_secs()
                        )
                    });
                    tokio::time::sleep(pause).await;
                }
            }
        };
        if let Err(err) = sent {
            // Given up: the version (or the draft's file name) is free again at once.
            let cancel = format!("/product/upload-url/{}", grant.upload_id);
            if let Ok(req) = self.request(Method::DELETE, &cancel) {
                let _ = req.send().await;
            }
            return Err(err);
        }
        let path = format!("/product/upload-url/{}/complete", grant.upload_id);
        self.typed(self.request(Method::POST, &path)?.body(Vec::new()))
            .await
    }

    /// One PUT of the whole file to the direct-upload URL.
    async fn put_direct(
        &self,
        target: &url::Url,
        grant: &DirectGrant,
        up: &FileUpload<'_>,
        bar: &ProgressBar,
    ) -> Result<(), Attempt> {
        let handle = tokio::fs::File::open(up.path).await.map_err(|e| {
            Attempt::Fatal(fail(
                Failure::Other,
                format!("cannot open {}: {e}", up.path.display()),
            ))
        })?;
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (counter, progress) = (sent.clone(), bar.clone());
        let body = tokio_util::io::ReaderStream::with_capacity(handle.take(up.len), 256 * 1024)
            .inspect(move |piece| {
                if let Ok(piece) = piece {
                    let n = piece.len() as u64;
                    counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    progress.inc(n);
                }
            });
        // No token here: the URL is signed, and may point at the bucket.
        let mut req = self.http.request(Method::PUT, target.clone());
        let mut has_length = false;
        for (name, value) in &grant.headers {
            has_length |= name.eq_ignore_ascii_case("content-length");
            req = req.header(name.as_str(), value.as_str());
        }
        if !has_length {
            req = req.header("content-length", up.len);
        }
        let outcome = req.body(reqwest::Body::wrap_stream(body)).send().await;
        let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
        let resp = match outcome {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => resp,
            Err(e) => {
                bar.dec(sent);
                return Err(transit_failure(e));
            }
        };
        bar.dec(sent);
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            return Err(Attempt::Retry(format!("the upload URL answered {status}")));
        }
        Err(Attempt::Fatal(storage_error(status, &text)))
    }

    /// `POST /product/publish/...`: `files` empty means whatever the draft holds.
    pub async fn publish(
        &self,
        product: &str,
        version: &str,
        labels: &[(String, String)],
        files: &[String],
    ) -> ClientResult<crate::dto::ListedVersion> {
        let body = crate::dto::PublishRequest {
            files: (!files.is_empty()).then(|| files.to_vec()),
            labels: labels.iter().cloned().collect(),
        };
        let path = format!("/product/publish/{}/{}", segment(product), segment(version));
        self.typed(self.request(Method::POST, &path)?.json(&body))
            .await
    }

    pub async fn run(&self, command: ClientCommand) -> ClientResult<()> {
        match command {
            ClientCommand::Push {
                product,
                version,
                files,
                checksum,
                labels,
                draft,
                jobs,
                chunk_size,
                direct,
                ..
            } => {
                let transfer = Transfer { chunk_size, direct };
                if checksum.is_some() && files.len() > 1 {
                    return Err(fail(
                        Failure::Other,
                        "--checksum names the digest of one file: push several files without it (each is hashed and verified)",
                    ));
                }
                if draft && !labels.is_empty() {
                    return Err(fail(
                        Failure::Other,
                        "a draft gets its labels when it is published: pass --label to depot publish",
                    ));
                }
                match files.as_slice() {
                    [file] if !draft => {
                        let (size, digest) = self
                            .push_one(
                                &product,
                                &version,
                                file,
                                checksum.as_deref(),
                                &labels,
                                transfer,
                            )
                            .await?;
                        println!("pushed {product} {version}: {size} bytes, {digest}");
                    }
                    _ => {
                        self.push_files(
                            &product,
                            &version,
                            &files,
                            checksum.as_deref(),
                            &labels,
                            draft,
                            usize::from(jobs),
                            transfer,
                        )
                        .await?
                    }
                }
            }
            ClientCommand::Publish {
                product,
                version,
                labels,
                files,
                ..
            } => {
                let out = self.publish(&product, &version, &labels, &files).await?;
                println!(
                    "published {product} {version}: {} files",
                    out.info.files.len()
                );
            }
            ClientCommand::Labels {
                product,
                version,
                set,
                remove,
                ..
            } => {
                let mut changes = serde_json::Map::new();
                for key in remove {
                    changes.insert(key, Value::Null);
                }
                for (key, value) in set {
                    changes.insert(key, Value::String(value));
                }
                if changes.is_empty() {
                    return Err(fail(
                        Failure::Other,
                        "nothing to change: give KEY=VALUE labels to set or --remove KEY",
                    ));
                }
                let path = format!(
                    "/product/labels/{}/{}",
                    segment(&product),
                    segment(&version)
                );
                let out: crate::dto::LabelsResult = self
                    .typed(self.request(Method::PUT, &path)?.json(&changes))
                    .await?;
                for (key, value) in &out.labels {
                    println!("{key}={}", crate::domain::names::terminal_safe(value));
                }
            }
            ClientCommand::Rm {
                product,
                version,
                file,
                ..
            } => {
                let mut path = format!(
                    "/product/delete/{}/{}",
                    segment(&product),
                    segment(&version)
                );
                if let Some(file) = &file {
                    path.push_str(&format!("/{}", segment(file)));
                }
                self.send(self.request(Method::DELETE, &path)?).await?;
                match file {
                    Some(file) => eprintln!("removed {file} from {product} {version}"),
                    None => eprintln!("deleted {product} {version}"),
                }
            }
            ClientCommand::Pull {
                product,
                version,
                output,
                prerelease,
                label,
                file,
                all,
                force,
                ..
            } => {
                let source = PullSource {
                    product: &product,
                    version: &version,
                    file: file.as_deref(),
                    prerelease,
                    label: label.as_deref(),
                };
                if all {
                    let dir = output.unwrap_or_else(|| PathBuf::from("."));
                    let (served, count) = self.pull_all(&source, &dir, force).await?;
                    println!(
                        "pulled {product} {served}: {count} files to {} (sha256 verified, SHA256SUMS written)",
                        dir.display()
                    );
                } else {
                    let pulled = self.pull(&source, output.as_deref(), force).await?;
                    println!(
                        "pulled {product} {} to {} (sha256 verified)",
                        pulled.version,
                        pulled.path.display()
                    );
                }
            }
            ClientCommand::Ls { product: None, .. } => {
                let names = self
                    .json(self.request(Method::GET, "/product/access")?)
                    .await?;
                for name in names.as_array().into_iter().flatten() {
                    println!("{}", name.as_str().unwrap_or_default());
                }
            }
            ClientCommand::Retention { action, .. } => {
                let (product, run) = match &action {
                    RetentionAction::Preview { product } => (product, false),
                    RetentionAction::Run { product } => (product, true),
                };
                let path = format!("/product/retention/{}", segment(product));
                let safe = crate::domain::names::terminal_safe;
                if run {
                    let report = self
                        .json(self.request(Method::POST, &format!("{path}/run"))?)
                        .await?;
                    let deleted = report["deleted"].as_array().cloned().unwrap_or_default();
                    for d in &deleted {
                        println!(
                            "deleted\t{}\t{}",
                            safe(d["version"].as_str().unwrap_or_default()),
                            safe(d["reason"].as_str().unwrap_or_default())
                        );
                    }
                    eprintln!(
                        "{} versions deleted, {} bytes reclaimed",
                        deleted.len(),
                        report["bytes_reclaimed"].as_u64().unwrap_or(0)
                    );
                } else {
                    let plan = self.json(self.request(Method::GET, &path)?).await?;
                    for d in plan["delete"].as_array().into_iter().flatten() {
                        println!(
                            "delete\t{}\t{}",
                            safe(d["version"].as_str().unwrap_or_default()),
                            safe(d["reason"].as_str().unwrap_or_default())
                        );
                    }
                    for k in plan["keep"].as_array().into_iter().flatten() {
                        let rules: Vec<&str> = k["rules"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect();
                        println!(
                            "keep\t{}\t{}",
                            safe(k["version"].as_str().unwrap_or_default()),
                            rules.join(",")
                        );
                    }
                }
            }
            ClientCommand::Usage { product, sort, .. } => {
                let reports = match product {
                    Some(product) => vec![
                        self.json(self.request(
                            Method::GET,
                            &format!("/product/usage/{}", segment(&product)),
                        )?)
                        .await?,
                    ],
                    None => {
                        let all = self
                            .json(self.request(Method::GET, &format!("/usage?sort={sort}"))?)
                            .await?;
                        all["products"].as_array().cloned().unwrap_or_default()
                    }
                };
                println!(
                    "product\tbytes\tversions\tfiles\tdrafts\tin_flight_bytes\tmax_bytes\tmax_versions"
                );
                for r in &reports {
                    let number = |v: &Value| v.as_u64().map_or("-".to_string(), |n| n.to_string());
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        crate::domain::names::terminal_safe(
                            r["product"].as_str().unwrap_or_default()
                        ),
                        number(&r["bytes"]),
                        number(&r["versions"]),
                        number(&r["files"]),
                        number(&r["drafts"]),
                        number(&r["in_flight_bytes"]),
                        number(&r["quota"]["max_bytes"]),
                        number(&r["quota"]["max_versions"]),
                    );
                }
            }
            ClientCommand::Trust { action, .. } => self.trust(action).await?,
            ClientCommand::Audit {
                product,
                kind,
                actor,
                since,
                until,
                limit,
                json,
                ..
            } => {
                let mut query: Vec<(&str, String)> = Vec::new();
                for (key, value) in [
                    ("product", product),
                    ("type", kind),
                    ("actor", actor),
                    ("since", since),
                    ("until", until),
                ] {
                    if let Some(value) = value {
                        query.push((key, value));
                    }
                }
                let mut cursor: Option<String> = None;
                let mut shown = 0;
                while shown < limit {
                    let mut page_query = query.clone();
                    page_query.push(("limit", (limit - shown).min(1000).to_string()));
                    if let Some(c) = &cursor {
                        page_query.push(("cursor", c.clone()));
                    }
                    let mut encoded = url::form_urlencoded::Serializer::new(String::new());
                    for (key, value) in &page_query {
                        encoded.append_pair(key, value);
                    }
                    let path = format!("/audit?{}", encoded.finish());
                    let page: AuditPage = self.typed(self.request(Method::GET, &path)?).await?;
                    for event in &page.events {
                        if json {
                            println!("{}", serde_json::to_string(event).unwrap_or_default());
                        } else {
                            println!("{}", audit_line(event));
                        }
                    }
                    shown += page.events.len();
                    match page.next_cursor {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
            }
            ClientCommand::Ls {
                product: Some(product),
                label,
                ..
            } => {
                let mut cursor: Option<String> = None;
                loop {
                    let mut path = format!("/product/versions/{}?limit=1000", segment(&product));
                    if let Some(label) = &label {
                        path.push_str(&format!("&label={}", segment(label)));
                    }
                    if let Some(c) = &cursor {
                        path.push_str(&format!("&cursor={}", segment(c)));
                    }
                    let page: crate::dto::VersionPage =
                        self.typed(self.request(Method::GET, &path)?).await?;
                    for v in &page.versions {
                        let labels: Vec<String> = v
                            .info
                            .labels
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect();
                        let fields = [
                            v.version.clone(),
                            v.info.size.to_string(),
                            v.info.checksum.clone(),
                            v.info.uploaded_at.clone(),
                            v.info.file_name.clone(),
                            v.info.state.clone(),
                            v.info.files.len().to_string(),
                            labels.join(","),
                        ];
                        let row: Vec<String> = fields
                            .iter()
                            .map(|f| crate::domain::names::terminal_safe(f))
                            .collect();
                        println!("{}", row.join("\t"));
                    }
                    match page.next_cursor {
                        Some(next) => cursor = Some(next),
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

    async fn trust(&self, action: TrustAction) -> ClientResult<()> {
        let safe = crate::domain::names::terminal_safe;
        match action {
            TrustAction::Add {
                product,
                issuer,
                claims,
                upload,
                download,
                delete,
                ttl,
            } => {
                let body = json!({
                    "issuer": issuer,
                    "claims": claims.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                    "permissions": { "upload": upload, "download": download, "delete": delete },
                    "ttl_seconds": ttl,
                });
                let path = format!("/product/trust/{}", segment(&product));
                let policy = self
                    .json(self.request(Method::PUT, &path)?.json(&body))
                    .await?;
                eprintln!(
                    "trust policy {} added to {product}",
                    safe(policy["id"].as_str().unwrap_or_default())
                );
                println!(
                    "{}",
                    serde_json::to_string_pretty(&policy).unwrap_or_default()
                );
            }
            TrustAction::Ls { product } => {
                let path = format!("/product/trust/{}", segment(&product));
                let listed = self.json(self.request(Method::GET, &path)?).await?;
                for p in listed["policies"].as_array().into_iter().flatten() {
                    let rights: Vec<&str> = ["upload", "download", "delete"]
                        .into_iter()
                        .filter(|r| p["permissions"][r].as_bool() == Some(true))
                        .collect();
                    let claims: Vec<String> = p["claims"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect();
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        safe(p["id"].as_str().unwrap_or_default()),
                        safe(p["issuer"].as_str().unwrap_or_default()),
                        rights.join(","),
                        p["ttl_seconds"].as_u64().unwrap_or(0),
                        safe(&claims.join(","))
                    );
                }
            }
            TrustAction::Rm { product, id } => {
                let path = format!("/product/trust/{}/{}", segment(&product), segment(&id));
                self.send(self.request(Method::DELETE, &path)?).await?;
                eprintln!("trust policy {} removed from {product}", safe(&id));
            }
        }
        Ok(())
    }

    /// Without a token, in a CI job that has an OIDC identity, exchanges it for a
    /// short-lived token (trusted publishing): in GitHub Actions, an ID token requested
    /// from ACTIONS_ID_TOKEN_REQUEST_URL (for the audience DEPOT_OIDC_AUDIENCE, default
    /// `depot`); elsewhere DEPOT_OIDC_TOKEN (GitLab's `id_tokens:`). Neither: unchanged.
    pub async fn with_ci_identity(mut self) -> ClientResult<Self> {
        if self.token.is_some() {
            return Ok(self);
        }
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let audience = env("DEPOT_OIDC_AUDIENCE").unwrap_or_else(|| "depot".into());
        let jwt = match (
            env("ACTIONS_ID_TOKEN_REQUEST_URL"),
            env("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
        ) {
            (Some(url), Some(request_token)) => Some(
                self.github_id_token(&url, &request_token, &audience)
                    .await?,
            ),
            _ => env("DEPOT_OIDC_TOKEN"),
        };
        let Some(jwt) = jwt else {
            return Ok(self);
        };
        let resp = self
            .send(
                self.http
                    .post(format!("{}/oidc/token", self.base))
                    .json(&json!({ "token": jwt })),
            )
            .await?;
        let issued: Value = resp.json().await.map_err(network)?;
        let token = issued["token"]
            .as_str()
            .filter(|t| crate::auth::is_token_format(t))
            .ok_or_else(|| fail(Failure::Server, "the server's token exchange gave no token"))?;
        eprintln!(
            "depot: exchanged this job's OIDC identity for a token valid until {}",
            crate::domain::names::terminal_safe(issued["expires_at"].as_str().unwrap_or("?"))
        );
        self.token = Some(token.to_string());
        Ok(self)
    }

    /// GitHub Actions' ID token for `audience` (the job needs `permissions: id-token: write`).
    async fn github_id_token(
        &self,
        url: &str,
        request_token: &str,
        audience: &str,
    ) -> ClientResult<String> {
        let mut endpoint = url::Url::parse(url)
            .map_err(|_| fail(Failure::Other, "ACTIONS_ID_TOKEN_REQUEST_URL is not a URL"))?;
        endpoint.query_pairs_mut().append_pair("audience", audience);
        let resp = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| fail(Failure::Other, format!("cannot build HTTP client: {e}")))?
            .get(endpoint)
            .bearer_auth(request_token)
            .send()
            .await
            .map_err(|e| {
                fail(
                    Failure::Network,
                    format!(
                        "cannot get the job's OIDC token from GitHub Actions: {}",
                        e.without_url()
                    ),
                )
            })?;
        if !resp.status().is_success() {
            return Err(fail(
                Failure::Auth,
                format!(
                    "GitHub Actions refused an OIDC token ({}); the job needs `permissions: id-token: write`",
                    resp.status().as_u16()
                ),
            ));
        }
        let body: Value = resp.json().await.map_err(network)?;
        body["value"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| fail(Failure::Auth, "GitHub Actions gave no OIDC token"))
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
            ProductCommand::Settings {
                product,
                keep_last,
                max_age_days,
                prerelease_max_age_days,
                not_downloaded_days,
                protect_labels,
                no_protect_labels,
                max_bytes,
                max_versions,
            } => {
                let path = format!("/product/settings/{}", segment(&product));
                let mut settings: crate::domain::retention::ProductSettings =
                    self.typed(self.request(Method::GET, &path)?).await?;
                let (policy, quota) = (&mut settings.retention, &mut settings.quota);
                let mut changed = false;
                for (field, change) in [
                    (&mut policy.keep_last, keep_last),
                    (&mut policy.max_age_days, max_age_days),
                    (&mut policy.prerelease_max_age_days, prerelease_max_age_days),
                    (&mut policy.not_downloaded_days, not_downloaded_days),
                    (&mut quota.max_bytes, max_bytes),
                    (&mut quota.max_versions, max_versions),
                ] {
                    if let Some(Limit(value)) = change {
                        *field = value;
                        changed = true;
                    }
                }
                if !protect_labels.is_empty() || no_protect_labels {
                    policy.protect_labels = protect_labels;
                    changed = true;
                }
                if changed {
                    settings = self
                        .typed(self.request(Method::PUT, &path)?.json(&settings))
                        .await?;
                    eprintln!("settings of {product} saved");
                }
                println!(
                    "{}",
                    serde_json::to_string_pretty(&settings).unwrap_or_default()
                );
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

/// How `push` sends files: resumable above `chunk_size`, or direct to the bucket.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    pub chunk_size: u64,
    pub direct: bool,
}

impl Transfer {
    fn mode(self, len: u64) -> Mode {
        if self.direct {
            Mode::Direct
        } else if len > self.chunk_size {
            Mode::Resumable(self.chunk_size)
        } else {
            Mode::Single
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One request through Depot (`POST /product/upload` or the draft's `PUT`).
    Single,
    /// tus 1.0 in pieces of this many bytes.
    Resumable(u64),
    /// A signed URL, one PUT, then complete.
    Direct,
}

/// A file going up as a tus or direct upload, with its SHA-256 (hex).
struct FileUpload<'a> {
    product: &'a str,
    version: &'a str,
    name: &'a str,
    path: &'a Path,
    len: u64,
    digest: &'a str,
    draft: bool,
}

/// How one request of a resumable or direct upload ended, when not well.
enum Attempt {
    /// Worth another try after a pause (network, lock, 5xx): why.
    Retry(String),
    Fatal(ClientError),
}

/// `GET /uploads`'s body.
#[derive(serde::Deserialize)]
struct UploadList {
    uploads: Vec<ListedUpload>,
}

#[derive(serde::Deserialize)]
struct ListedUpload {
    id: String,
    product: String,
    version: String,
    filename: String,
    length: u64,
    offset: u64,
    #[serde(default)]
    draft: bool,
    checksum: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

/// `POST /product/upload-url`'s answer.
#[derive(serde::Deserialize)]
struct DirectGrant {
    upload_id: String,
    method: String,
    url: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

const TUS_VERSION: &str = "1.0.0";

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The smallest --chunk-size: below it, round trips cost more than the data.
const MIN_CHUNK_SIZE: u64 = 256 * 1024;

/// Failed requests in a row before a resumable push gives up (the pauses add up to
/// about 90 s: longer than the server's default lease on an upload a dead push held).
const RETRIES: u32 = 7;

/// Failed PUTs of a direct upload before the push gives up.
const DIRECT_RETRIES: u32 = 3;

/// The pause before retry `n` (1-based): 1, 2, 4, 8, 16, then 30 s.
fn retry_pause(n: u32) -> Duration {
    Duration::from_secs((1u64 << n.saturating_sub(1).min(5)).min(30))
}

/// `--chunk-size`: a size (see `parse_size`) of at least `MIN_CHUNK_SIZE`.
fn parse_chunk_size(text: &str) -> Result<u64, String> {
    let size = parse_size(text)?;
    if size < MIN_CHUNK_SIZE {
        return Err(format!("'{text}' is too small: a chunk is at least 256KiB"));
    }
    Ok(size)
}

/// An upload id the server handed out, safe to put in a path.
fn is_upload_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The id from a `Location: /uploads/{id}` (relative or absolute).
fn upload_id_from_location(location: &str) -> Option<String> {
    let path = location.split(['?', '#']).next()?;
    let id = path.rsplit('/').next()?;
    is_upload_id(id).then(|| id.to_string())
}

/// A refusal from the direct-upload URL: Depot's JSON error, or a bucket's XML one
/// (`<Code>`, `<Message>`).
fn storage_error(status: StatusCode, text: &str) -> ClientError {
    if let Ok(body) = serde_json::from_str::<Value>(text)
        && body["code"].is_string()
    {
        return error_from(status, &body);
    }
    let element = |name: &str| {
        let start = text.find(&format!("<{name}>"))? + name.len() + 2;
        let end = start + text[start..].find(&format!("</{name}>"))?;
        Some(text[start..end].to_string())
    };
    let code = element("Code").unwrap_or_default();
    let message = element("Message").unwrap_or_default();
    let kind = if code.contains("Digest") || code.contains("Checksum") {
        Failure::Checksum
    } else if status == StatusCode::FORBIDDEN {
        Failure::Auth
    } else {
        Failure::Other
    };
    let shown: String =
        crate::domain::names::terminal_safe(&format!("{status}: {message} [{code}]"))
            .chars()
            .take(400)
            .collect();
    fail(
        kind,
        format!(
            "the storage refused the upload: {shown}\nhint: an expired URL or changed bytes are refused; run the same push again"
        ),
    )
}

/// What `pull` fetches: a version (or `latest`, narrowed by pre-release and label) and
/// one of its files (`None`: the primary file).
#[derive(Debug, Clone, Copy)]
pub struct PullSource<'a> {
    pub product: &'a str,
    pub version: &'a str,
    pub file: Option<&'a str>,
    pub prerelease: bool,
    pub label: Option<&'a str>,
}

impl PullSource<'_> {
    /// The download path of `file` (`None`: the primary file), never redirected.
    fn path(&self, file: Option<&str>) -> String {
        let mut path = format!(
            "/product/download/{}/{}",
            segment(self.product),
            segment(self.version)
        );
        if let Some(file) = file {
            path.push_str(&format!("/{}", segment(file)));
        }
        path.push_str(&format!("?redirect=false&prerelease={}", self.prerelease));
        if let Some(label) = self.label {
            path.push_str(&format!("&label={}", segment(label)));
        }
        path
    }
}

/// A finished pull: where, the verified SHA-256 (hex), the version served.
#[derive(Debug)]
pub struct Pulled {
    pub path: PathBuf,
    pub checksum: String,
    pub version: String,
}

const CHECKSUMS_FILE: &str = crate::domain::assets::CHECKSUMS_FILE;

/// 1000 files with 255-byte names and their digests fit with room to spare.
const MAX_CHECKSUMS_BYTES: u64 = 1024 * 1024;

/// `text` percent-encoded but for unreserved characters: names go into paths and query
/// strings as data, never as `/`, `?`, `#` or `&`.
fn segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, crate::domain::names::PATH_SEGMENT).to_string()
}

/// `<hex>  <name>` lines into (hex, name), every name a plain base name.
fn parse_checksums(text: &str) -> ClientResult<Vec<(String, String)>> {
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (digest, name) = line.split_once("  ").ok_or_else(|| {
                fail(
                    Failure::Server,
                    "the server's SHA256SUMS has a malformed line",
                )
            })?;
            let hex_ok = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex_ok {
                return Err(fail(
                    Failure::Server,
                    "the server's SHA256SUMS has a malformed digest",
                ));
            }
            Ok((digest.to_ascii_lowercase(), plain_file_name(name)?))
        })
        .collect()
}

/// `sha256:<hex>` or `<hex>` into lowercase hex.
fn normalize_checksum(text: &str) -> ClientResult<String> {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(fail(
            Failure::Other,
            "--checksum must be sha256:<64 hex digits> or <64 hex digits>",
        ))
    }
}

/// The SHA-256 (hex) of a local file, read on a blocking thread.
async fn sha256_of(path: &Path) -> ClientResult<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path).map_err(|e| {
            fail(
                Failure::Other,
                format!("cannot open {}: {e}", path.display()),
            )
        })?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(io_fail)?;
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(|e| fail(Failure::Other, format!("hashing failed: {e}")))?
}

/// A retention limit given on the command line: a number, or `off` (`None`).
#[derive(Debug, Clone, Copy)]
pub struct Limit(Option<u64>);

fn parse_limit(text: &str) -> Result<Limit, String> {
    if text == "off" {
        return Ok(Limit(None));
    }
    text.parse::<u64>()
        .map(|n| Limit(Some(n)))
        .map_err(|_| format!("expected a number or 'off', got '{text}'"))
}

/// A byte quota given on the command line: bytes, a size with a unit (`10GiB`, `500MB`,
/// `1.5TiB`), or `off`.
fn parse_size_limit(text: &str) -> Result<Limit, String> {
    if text == "off" {
        return Ok(Limit(None));
    }
    parse_size(text).map(|n| Limit(Some(n)))
}

/// `1048576`, `512KiB`, `10GiB`, `500MB`, `1.5TB`: KB/MB/GB/TB are powers of 1000,
/// KiB/MiB/GiB/TiB powers of 1024 (case-insensitive; a `B` alone means bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000u64.pow(2),
        "gb" => 1000u64.pow(3),
        "tb" => 1000u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "unknown size unit in '{text}': use B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"
            ));
        }
    };
    let invalid = || format!("expected a size such as 10GiB, 500MB or 1048576, got '{text}'");
    let bytes = match number.split_once('.') {
        None => number
            .parse::<u64>()
            .map_err(|_| invalid())?
            .checked_mul(factor),
        Some((whole, fraction)) => {
            if fraction.is_empty() || fraction.len() > 9 || factor == 1 {
                return Err(invalid());
            }
            let whole = if whole.is_empty() {
                0
            } else {
                whole.parse::<u64>().map_err(|_| invalid())?
            };
            let digits: u64 = fraction.parse().map_err(|_| invalid())?;
            let scale = 10u64.pow(fraction.len() as u32);
            // Whole units, plus the fraction of a unit rounded down to a byte.
            whole.checked_mul(factor).and_then(|w| {
                let part = (u128::from(factor) * u128::from(digits) / u128::from(scale)) as u64;
                w.checked_add(part)
            })
        }
    };
    bytes.ok_or_else(|| format!("'{text}' is too large"))
}

/// `NAME=VALUE` for a trust policy's claim.
fn parse_claim(spec: &str) -> Result<(String, String), String> {
    spec.split_once('=')
        .filter(|(name, value)| !name.is_empty() && !value.is_empty())
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got '{spec}'"))
}

/// `KEY=VALUE` for a label: the server's key rule, a value without control characters.
fn parse_label(spec: &str) -> Result<(String, String), String> {
    let (key, value) = spec
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got '{spec}'"))?;
    if !crate::domain::assets::is_label_key(key) {
        return Err(format!(
            "invalid label key '{key}': 1-64 characters from a-z 0-9 _ . -, starting with a letter or digit"
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("the value of label '{key}' has control characters"));
    }
    Ok((key.to_string(), value.to_string()))
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

/// The quoted `filename` of a Content-Disposition, as the server sent it: `pull` uses it
/// only if `plain_file_name` accepts it.
fn file_name_from_disposition(cd: &str) -> Option<String> {
    let start = cd.find("filename=\"")? + "filename=\"".len();
    let name = &cd[start..];
    Some(name[..name.find('"')?].to_string())
}

/// At most this many redirects, all on the origin of `--url`.
const MAX_REDIRECTS: usize = 5;

/// Redirects within the origin of the first request (same scheme, host and port) are
/// followed, with the token, up to `MAX_REDIRECTS`; a redirect to any other origin is
/// refused before it is followed, so no credential (nor anything else) reaches it.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let next = attempt.url().origin();
        let first = match attempt.previous().first() {
            Some(url) => url.origin(),
            None => return attempt.error(RedirectRefused("a redirect without origin".into())),
        };
        if next != first {
            let message = format!(
                "the server at {} redirected to another origin, {}",
                first.ascii_serialization(),
                next.ascii_serialization()
            );
            return attempt.error(RedirectRefused(message));
        }
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(RedirectRefused(format!(
                "more than {MAX_REDIRECTS} redirects"
            )));
        }
        attempt.follow()
    })
}

/// Why a redirect was not followed (origins only: a path may hold a raw token).
#[derive(Debug)]
struct RedirectRefused(String);

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedirectRefused {}

/// `name` if it is a plain, visible base name to create in the current directory: no
/// path separator, no leading dot (no `.bashrc`, `.`, `..`), no control or format
/// character, not blank, at most 255 bytes. A server-chosen name that is not is refused
/// (not rewritten): the user picks one with `-o`.
fn plain_file_name(name: &str) -> ClientResult<String> {
    let plain = !name.trim().is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\'])
        && !name
            .chars()
            .any(|c| c.is_control() || crate::domain::names::is_format_character(c));
    if plain {
        return Ok(name.to_string());
    }
    let shown: String = name
        .chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect();
    Err(fail(
        Failure::Other,
        format!(
            "the server suggested the file name \"{shown}\", which is not a plain visible file name (a dot-file, a path, or control characters); nothing was written\nhint: choose the output path with -o"
        ),
    ))
}

fn exists_error(target: &Path) -> ClientError {
    fail(
        Failure::Conflict,
        format!(
            "{} already exists; nothing was written\nhint: pass --force to replace it, or choose another path with -o",
            target.display()
        ),
    )
}

/// Flags for every open of a `.part` or `.part.etag` file: never through a symlink, and
/// never blocking on a FIFO planted in its place.
const NO_FOLLOW: i32 = libc::O_NOFOLLOW | libc::O_NONBLOCK;

/// `GET /audit`'s answer, typed with the server's own event type.
#[derive(serde::Deserialize)]
struct AuditPage {
    events: Vec<crate::domain::events::Event>,
    next_cursor: Option<String>,
}

/// One event as a table row: time, type, product[/version], actor, details.
fn audit_line(event: &crate::domain::events::Event) -> String {
    use crate::domain::events::Actor;
    let target = match (&event.product, &event.version) {
        (Some(p), Some(v)) => format!("{p}/{v}"),
        (Some(p), None) => p.clone(),
        _ => "-".to_string(),
    };
    let actor = match &event.actor {
        Actor::Token {
            token_id,
            name: Some(name),
            ..
        } => format!("{token_id} ({name})"),
        other => other.key(),
    };
    let shown: String = crate::domain::names::terminal_safe(&event.details.to_string());
    format!(
        "{}\t{}\t{}\t{}\t{}",
        event.time,
        event.kind.as_str(),
        crate::domain::names::terminal_safe(&target),
        crate::domain::names::terminal_safe(&actor),
        shown
    )
}

/// The `.part` of an earlier pull, opened for reading and appending without following a
/// symlink; `None` if there is none. Anything but a regular file with one link, owned by
/// this user, is refused: writing through it would change some other file, or leave the
/// download writable by whoever planted it.
async fn open_existing_part(part: &Path) -> ClientResult<Option<tokio::fs::File>> {
    let opened = tokio::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .custom_flags(NO_FOLLOW)
        .open(part)
        .await;
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(not_ours(part, "a symlink")),
        Err(e) => return Err(io_fail(e)),
    };
    let meta = file.metadata().await.map_err(io_fail)?;
    if !meta.is_file() {
        return Err(not_ours(part, "not a regular file"));
    }
    if meta.nlink() != 1 {
        return Err(not_ours(part, "a file with other hard links"));
    }
    if meta.uid() != effective_uid() {
        return Err(not_ours(part, "owned by another user"));
    }
    Ok(Some(file))
}

fn not_ours(part: &Path, what: &str) -> ClientError {
    fail(
        Failure::Other,
        format!(
            "{} is {what}: not written to, nothing was downloaded\nhint: remove it and pull again",
            part.display()
        ),
    )
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A fresh `.part`: created exclusively (O_EXCL: an existing file or symlink in its
/// place, even one planted since `open_existing_part`, is an error).
async fn create_part(part: &Path) -> ClientResult<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .append(true)
        .create_new(true)
        .custom_flags(NO_FOLLOW)
        .open(part)
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                not_ours(part, "in the way (it appeared during the pull)")
            } else {
                io_fail(e)
            }
        })
}

/// The ETag an interrupted pull recorded, if its file is a regular file (not a symlink).
async fn read_tag(tag_file: &Path) -> Option<String> {
    let mut file = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(NO_FOLLOW)
        .open(tag_file)
        .await
        .ok()?;
    if !file.metadata().await.ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    (&mut file)
        .take(4096)
        .read_to_string(&mut text)
        .await
        .ok()?;
    Some(text)
}

/// Records the ETag next to the `.part`: whatever is at that path is unlinked (a symlink
/// itself, never its target) and the file created afresh, exclusively.
async fn write_tag(tag_file: &Path, etag: &str) -> ClientResult<()> {
    match tokio::fs::remove_file(tag_file).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_fail(e)),
        _ => {}
    }
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(NO_FOLLOW)
        .open(tag_file)
        .await
        .map_err(io_fail)?;
    file.write_all(etag.as_bytes()).await.map_err(io_fail)?;
    file.flush().await.map_err(io_fail)
}

/// Moves the verified `.part` to `target`. With `force`, a plain rename (it replaces a
/// file or a symlink at `target`, never writing through it). Without, a hard link that
/// fails if anything exists at `target` (even a file that appeared during the download),
/// then the `.part` is unlinked; on a file system without hard links, a checked rename.
async fn finish_part(part: &Path, target: &Path, force: bool) -> ClientResult<()> {
    if force {
        return tokio::fs::rename(part, target).await.map_err(io_fail);
    }
    match tokio::fs::hard_link(part, target).await {
        Ok(()) => tokio::fs::remove_file(part).await.map_err(io_fail),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(fail(
            Failure::Conflict,
            format!(
                "{} appeared during the download and was not replaced; the verified download is in {}\nhint: pass --force to replace it",
                target.display(),
                part.display()
            ),
        )),
        Err(_) => {
            if tokio::fs::symlink_metadata(target).await.is_ok() {
                return Err(exists_error(target));
            }
            tokio::fs::rename(part, target).await.map_err(io_fail)
        }
    }
}

fn network(err: reqwest::Error) -> ClientError {
    // Never the URL: `token fetch|prune` carry a raw token in the path.
    let err = err.without_url();
    if err.is_redirect() {
        let reason = std::error::Error::source(&err)
            .map(|cause| cause.to_string())
            .unwrap_or_else(|| err.to_string());
        return fail(
            Failure::Network,
            format!(
                "redirect not followed: {reason}; depot sends its token only to the origin of --url / DEPOT_URL\nhint: if that is the server's real address, set DEPOT_URL to it"
            ),
        );
    }
    let detail = error_chain(&err);
    fail(
        Failure::Network,
        format!(
            "cannot reach the Depot server ({detail}); check --url / DEPOT_URL and your network"
        ),
    )
}

/// An error and its causes, `: `-separated (never the URL).
fn error_chain(err: &reqwest::Error) -> String {
    let mut detail = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        detail.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    detail
}

/// Why a request of a resumable or direct upload failed in transit, to retry it.
fn transit_failure(err: reqwest::Error) -> Attempt {
    if err.is_redirect() {
        return Attempt::Fatal(network(err));
    }
    Attempt::Retry(format!(
        "the request failed in transit ({})",
        error_chain(&err.without_url())
    ))
}

fn io_fail(err: std::io::Error) -> ClientError {
    fail(Failure::Other, format!("local file error: {err}"))
}

async fn server_error(resp: reqwest::Response) -> ClientError {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    error_from(status, &body)
}

/// The server's JSON error (`{"error": message, "code": code}`) as a client error with
/// an exit code and a hint.
fn error_from(status: StatusCode, body: &Value) -> ClientError {
    let message = body["error"].as_str().unwrap_or("").to_string();
    let code = body["code"].as_str().unwrap_or("").to_string();
    let (kind, hint) = match status {
        _ if code == "version_pending" => (
            Failure::Conflict,
            "another upload of this version is under way (or an unfinished resumable one holds it): run the same push again to resume your own, or wait until it finishes or expires",
        ),
        _ if code == "upload_locked" => (
            Failure::Conflict,
            "another request is writing this upload; one cut off holds it until the server's upload lease lapses (about a minute): run the same push again then",
        ),
        _ if code == "use_resumable_upload" => (
            Failure::Other,
            "push it without --direct: files larger than --chunk-size go up in resumable pieces",
        ),
        _ if code == "upload_not_received" => (
            Failure::Conflict,
            "the storage has no object for this upload yet: run the same push again",
        ),
        _ if code == "upload_expired" || code == "upload_not_found" => (
            Failure::NotFound,
            "the upload is gone (expired or removed): run the same push again to start over",
        ),
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
        _ if code == "quota_exceeded" => (
            Failure::Other,
            "the product is at its quota: see `depot usage PRODUCT`; delete old versions (depot rm, depot retention run) or have a maintainer raise it (depot product settings --max-bytes / --max-versions)",
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
    fn sizes_parse_with_decimal_and_binary_units() {
        for (text, bytes) in [
            ("0", 0),
            ("1048576", 1 << 20),
            ("7B", 7),
            ("512KiB", 512 << 10),
            ("10GiB", 10 << 30),
            ("10gib", 10 << 30),
            ("500MB", 500_000_000),
            ("1.5TiB", 3 << 39),
            ("0.5KB", 500),
            ("2 TB", 2_000_000_000_000),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in [
            "",
            "GiB",
            "10XB",
            "1.5",
            "1.",
            "-1",
            "1e9",
            "1.0000000001GiB",
            "99999999999TiB",
            "1..5GB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad} parsed");
        }
        assert!(matches!(parse_size_limit("off"), Ok(Limit(None))));
        assert!(matches!(parse_size_limit("1KiB"), Ok(Limit(Some(1024)))));
    }

    #[test]
    fn chunk_sizes_have_a_floor_and_uploads_pick_their_transfer() {
        assert_eq!(parse_chunk_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_chunk_size("256KiB"), Ok(256 << 10));
        assert!(parse_chunk_size("100KiB").unwrap_err().contains("256KiB"));
        assert!(parse_chunk_size("lots").is_err());
        let chunked = Transfer {
            chunk_size: 1 << 20,
            direct: false,
        };
        assert_eq!(chunked.mode(1 << 20), Mode::Single);
        assert_eq!(chunked.mode((1 << 20) + 1), Mode::Resumable(1 << 20));
        let direct = Transfer {
            direct: true,
            ..chunked
        };
        assert_eq!(direct.mode(1), Mode::Direct);
        let pauses: Vec<u64> = (1..=RETRIES).map(|n| retry_pause(n).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn upload_ids_come_from_a_location_only_when_safe_in_a_path() {
        let id = "0123456789abcdef0123456789abcdef";
        for location in [
            format!("/uploads/{id}"),
            format!("/api/uploads/{id}"),
            format!("https://depot.example/uploads/{id}?x=1"),
        ] {
            assert_eq!(upload_id_from_location(&location).as_deref(), Some(id));
        }
        for bad in ["/uploads/", "/uploads/..", "/uploads/a%2Fb", "/uploads/a b"] {
            assert_eq!(upload_id_from_location(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_buckets_xml_refusal_and_depots_json_one_become_client_errors() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>BadDigest</Code><Message>The sha256 you specified did not match</Message></Error>";
        let err = storage_error(StatusCode::BAD_REQUEST, xml);
        assert_eq!(err.kind, Failure::Checksum);
        assert!(err.message.contains("BadDigest"), "{}", err.message);
        let err = storage_error(
            StatusCode::FORBIDDEN,
            "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
        );
        assert_eq!(err.kind, Failure::Auth);
        let json = r#"{"error":"the size differs","code":"size_mismatch"}"#;
        let err = storage_error(StatusCode::BAD_REQUEST, json);
        assert!(err.message.contains("[size_mismatch]"), "{}", err.message);
        let shown = storage_error(StatusCode::BAD_REQUEST, "<Code>x\u{1b}[2J</Code>").message;
        assert!(!shown.contains('\u{1b}'), "{shown:?}");
    }

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
    fn checksum_lines_parse_and_unsafe_names_or_digests_are_refused() {
        let hex = "ab".repeat(32);
        let parsed = parse_checksums(&format!("{hex}  a.tar.gz\n{hex}  b c.zip\n")).unwrap();
        assert_eq!(
            parsed,
            [
                (hex.clone(), "a.tar.gz".to_string()),
                (hex.clone(), "b c.zip".to_string())
            ]
        );
        for bad in [
            format!("{hex}  ../../etc/passwd"),
            format!("{hex}  .bashrc"),
            format!("{hex} one-space"),
            "xyz  a.bin".to_string(),
            format!("{hex}  dir/a.bin"),
        ] {
            assert!(parse_checksums(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_specs_follow_the_server_rules() {
        assert_eq!(
            parse_label("channel=stable").unwrap(),
            ("channel".to_string(), "stable".to_string())
        );
        assert_eq!(parse_label("k=").unwrap().1, "");
        assert_eq!(parse_label("k=a=b").unwrap().1, "a=b");
        for bad in ["nokey", "=v", "Upper=x", "k=line\r\nbreak", "-k=v"] {
            assert!(parse_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_percent_encoded_as_one_path_segment() {
        assert_eq!(segment("a b/c?d#e&f"), "a%20b%2Fc%3Fd%23e%26f");
        assert_eq!(segment("1.0.0-rc.1_x~"), "1.0.0-rc.1_x~");
        assert_eq!(segment("channel=stable"), "channel%3Dstable");
        assert_eq!(
            normalize_checksum(&format!("sha256:{}", "AB".repeat(32))).unwrap(),
            "ab".repeat(32)
        );
        assert!(normalize_checksum("sha256:12").is_err());
    }

    #[test]
    fn file_names_come_from_the_quoted_filename_of_content_disposition() {
        assert_eq!(
            file_name_from_disposition(
                "attachment; filename=\"app.tgz\"; filename*=UTF-8''app.tgz"
            )
            .as_deref(),
            Some("app.tgz")
        );
        assert_eq!(file_name_from_disposition("inline"), None);
        assert_eq!(file_name_from_disposition("attachment; filename=\"x"), None);
    }

    #[test]
    fn only_plain_visible_base_names_are_accepted_from_a_server() {
        for ok in [
            "app.tgz",
            "tool-2.1.0.tgz",
            "app v1.tar.gz",
            "é.bin",
            "a..b",
        ] {
            assert_eq!(plain_file_name(ok).ok().as_deref(), Some(ok), "{ok:?}");
        }
        for bad in [
            "",
            " ",
            ".",
            "..",
            ".bashrc",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "sub/x",
            "..\\x",
            "a\\b",
            "a\tb",
            "a\nb",
            "a\u{1b}[2Jb",
            "evil\u{202E}gpj.exe",
            "zero\u{200B}width",
            "\u{FEFF}bom",
        ] {
            assert!(plain_file_name(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(plain_file_name(&"a".repeat(256)).is_err());
        let err = plain_file_name("\u{1b}]0;pwned\u{7}").unwrap_err();
        assert!(!err.message.contains('\u{1b}'), "{}", err.message);
    }
}
