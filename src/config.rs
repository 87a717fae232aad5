//! All configuration in one struct. Sources, strongest first: command-line flags,
//! `DEPOT_*` environment variables, the TOML file named by `--config`, built-in defaults.

use clap::{Args, ValueEnum};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DownloadMode {
    /// Stream the artifact through Depot.
    Proxy,
    /// Answer 302 to a presigned (or Depot-signed) URL.
    Redirect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Settings as given on the command line, in the environment or in the TOML file.
/// Every field is optional here; `Settings::resolve` applies the defaults.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "DEPOT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the embedded database and filesystem blobs [default: ./depot-data]
    #[arg(long, env = "DEPOT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// If set, this exact token exists as an admin token after start-up; it must be in Depot's token format (`depot_` + 43 letters and digits: `depot token generate` prints one). When it changes, the next start revokes the previous one [default: unset]
    #[arg(long, env = "DEPOT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Largest accepted artifact, in bytes [default: 5368709120 = 5 GiB]
    #[arg(long, env = "DEPOT_MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<u64>,
    /// MongoDB connection string; switches metadata from the embedded store to MongoDB
    #[arg(long, env = "DEPOT_MONGO_URL", hide_env_values = true)]
    pub mongo_url: Option<String>,
    /// MongoDB database name [default: depot]
    #[arg(long, env = "DEPOT_MONGO_DB")]
    pub mongo_db: Option<String>,
    /// Redis URL; adds the Redis token cache: redis://[user:password@]host:port, or rediss://... for TLS; needs DEPOT_SIGNING_KEY (the cached documents are authenticated with a key derived from it) [default: none]
    #[arg(long, env = "DEPOT_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Lifetime of cached token documents, in seconds [default: 60]
    #[arg(long, env = "DEPOT_CACHE_TTL_SECONDS")]
    pub cache_ttl_seconds: Option<u64>,
    /// While Redis is unreachable, how long each replica keeps the token documents it read, in seconds (0 = off: every request reads the store); another replica's revocation reaches this one within that time [default: 1]
    #[arg(long, env = "DEPOT_REDIS_OUTAGE_CACHE_SECONDS")]
    pub redis_outage_cache_seconds: Option<u64>,
    /// S3 bucket; switches blob storage from the filesystem to S3 (credentials: standard AWS chain)
    #[arg(long, env = "DEPOT_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3 endpoint URL for S3-compatible stores (MinIO, SeaweedFS, Garage) [default: AWS]
    #[arg(long, env = "DEPOT_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: us-east-1, or the AWS chain's region]
    #[arg(long, env = "DEPOT_S3_REGION")]
    pub s3_region: Option<String>,
    /// Endpoint that clients use to reach S3; presigned URLs are signed for it [default: DEPOT_S3_ENDPOINT]
    #[arg(long, env = "DEPOT_S3_PUBLIC_ENDPOINT")]
    pub s3_public_endpoint: Option<String>,
    /// Use path-style S3 URLs (needed by most S3-compatible stores) [default: true when DEPOT_S3_ENDPOINT is set]
    #[arg(long, env = "DEPOT_S3_FORCE_PATH_STYLE")]
    pub s3_force_path_style: Option<bool>,
    /// Key prefix for every object Depot writes [default: none]
    #[arg(long, env = "DEPOT_S3_PREFIX")]
    pub s3_prefix: Option<String>,
    /// Create the bucket at start-up when it does not exist [default: false]
    #[arg(long, env = "DEPOT_S3_CREATE_BUCKET")]
    pub s3_create_bucket: Option<bool>,
    /// Multipart upload part size in bytes, at least 5 MiB [default: 8388608 = 8 MiB]
    #[arg(long, env = "DEPOT_S3_PART_SIZE")]
    pub s3_part_size: Option<u64>,
    /// Multipart parts uploaded concurrently per upload [default: 2]
    #[arg(long, env = "DEPOT_S3_PARTS_IN_FLIGHT")]
    pub s3_parts_in_flight: Option<usize>,
    /// How downloads are served: proxy (stream through Depot) or redirect (302) [default: proxy]
    #[arg(long, env = "DEPOT_DOWNLOAD_MODE", value_enum)]
    pub download_mode: Option<DownloadMode>,
    /// Lifetime of presigned and Depot-signed download URLs, in seconds [default: 300]
    #[arg(long, env = "DEPOT_PRESIGN_TTL_SECONDS")]
    pub presign_ttl_seconds: Option<u64>,
    /// HMAC key for Depot-signed download URLs, at least 32 bytes (an empty value is refused); share it between replicas; it also keys the authentication of Redis cache entries and is required with DEPOT_REDIS_URL [default: generated and kept in the data dir]
    #[arg(long, env = "DEPOT_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
    /// Base URL clients use to reach Depot, for signed URLs and redirects: absolute http(s), no query or fragment [default: http:// + the request's Host header, which must then be host[:port]]
    #[arg(long, env = "DEPOT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Seconds between janitor sweeps [default: 300]
    #[arg(long, env = "DEPOT_JANITOR_INTERVAL_SECONDS")]
    pub janitor_interval_seconds: Option<u64>,
    /// Age after which pending uploads, orphan objects and incomplete multipart uploads are removed, in seconds; an upload still running by then fails with 503 upload_expired [default: 86400]
    #[arg(long, env = "DEPOT_JANITOR_GRACE_SECONDS")]
    pub janitor_grace_seconds: Option<u64>,
    /// Log format: pretty or json [default: pretty]
    #[arg(long, env = "DEPOT_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// On SIGTERM, seconds running transfers may take to finish [default: 30]
    #[arg(long, env = "DEPOT_SHUTDOWN_GRACE_SECONDS")]
    pub shutdown_grace_seconds: Option<u64>,
    /// Seconds an upload may go without receiving a byte before it is aborted with 408 upload_timeout [default: 60, range 1..=3600]
    #[arg(long, env = "DEPOT_UPLOAD_IDLE_TIMEOUT_SECONDS")]
    pub upload_idle_timeout_seconds: Option<u64>,
    /// Uploads running at once; more are refused with 503 too_busy and Retry-After [default: 64, range 1..=10000]
    #[arg(long, env = "DEPOT_MAX_CONCURRENT_UPLOADS")]
    pub max_concurrent_uploads: Option<usize>,
    /// Uploads per token at once whose file comes before its product/version fields (429 too_many_uploads beyond) [default: 2, range 1..=64]
    #[arg(long, env = "DEPOT_MAX_EARLY_FILE_UPLOADS_PER_TOKEN")]
    pub max_early_file_uploads_per_token: Option<usize>,
    /// Seconds an S3 upload waits for one of the shared part buffers before it fails with 503 too_busy [default: 30, range 1..=600]
    #[arg(long, env = "DEPOT_S3_BUFFER_WAIT_SECONDS")]
    pub s3_buffer_wait_seconds: Option<u64>,
    /// Lease of an upload's pending reservation, in seconds, renewed while bytes arrive; once an upload stops (its process died, or no byte came for this long) its version is free again for a new upload and the janitor removes what it left [default: 60, range: 5..=3600]
    #[arg(long, env = "DEPOT_UPLOAD_LEASE_SECONDS")]
    pub upload_lease_seconds: Option<u64>,
    /// Let webhooks target loopback, private, link-local and metadata addresses (tests, private networks) [default: false]
    #[arg(long, env = "DEPOT_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: Option<bool>,
    /// Trusted publishing: OIDC issuers whose tokens `POST /oidc/token` exchanges for short-lived Depot tokens, comma-separated (e.g. https://token.actions.githubusercontent.com,https://gitlab.com) [default: none, the feature is off]
    #[arg(long, env = "DEPOT_OIDC_ISSUERS")]
    pub oidc_issuers: Option<String>,
    /// Trusted publishing: the audience (`aud`) an exchanged OIDC token must name [default: depot]
    #[arg(long, env = "DEPOT_OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,
    /// Trusted publishing: the longest lifetime of an exchanged token, in seconds (a policy's ttl_seconds is at most this) [default: 900, range 60-86400]
    #[arg(long, env = "DEPOT_OIDC_MAX_TTL_SECONDS")]
    pub oidc_max_ttl_seconds: Option<u64>,
    /// Trusted publishing: accept http:// issuers on loopback addresses (tests only) [default: false]
    #[arg(long, env = "DEPOT_OIDC_ALLOW_HTTP")]
    pub oidc_allow_http: Option<bool>,
    /// Seconds a resumable (tus) upload may take from its creation; past it the upload is refused with 410 upload_expired and the janitor removes what it stored [default: 86400, range 1-2592000]
    #[arg(long, env = "DEPOT_RESUMABLE_TTL_SECONDS")]
    pub resumable_ttl_seconds: Option<u64>,
    /// Seconds a direct-to-bucket upload URL (POST /product/upload-url) stays valid; an upload not completed by then is removed by the janitor [default: 3600, range 1-604800]
    #[arg(long, env = "DEPOT_UPLOAD_URL_TTL_SECONDS")]
    pub upload_url_ttl_seconds: Option<u64>,
    /// Origins (comma-separated, or *) whose browser pages may call the API with CORS (tus uploads at /uploads, direct uploads, every other route; the token goes in a header, no cookies); the tus headers are allowed and exposed [default: none, no CORS headers]
    #[arg(long, env = "DEPOT_CORS_ORIGINS")]
    pub cors_origins: Option<String>,
    /// Days the audit log keeps an event; older ones are removed by the janitor [default: 365]
    #[arg(long, env = "DEPOT_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: Option<u64>,
    /// Seconds a draft version may stay untouched (no file added or removed) before the janitor deletes it [default: 604800 (7 days), range 1-31536000]
    #[arg(long, env = "DEPOT_DRAFT_TTL_SECONDS")]
    pub draft_ttl_seconds: Option<u64>,
    /// Seconds between retention runs over every product whose retention policy (its own, or the server default of the config file's [retention] table) has a rule set [default: 3600, range 1-86400]
    #[arg(long, env = "DEPOT_RETENTION_INTERVAL_SECONDS")]
    pub retention_interval_seconds: Option<u64>,
    /// Config file only: the `[retention]` table, the policy of products without settings of their own
    #[arg(skip)]
    #[serde(default)]
    pub retention: Option<crate::domain::retention::RetentionPolicy>,
    /// Config file only: the `[quota]` table, the quota of products without settings of their own
    #[arg(skip)]
    #[serde(default)]
    pub quota: Option<crate::domain::retention::QuotaPolicy>,
    /// Seconds a client may take to send a request's complete headers (also the longest wait for the next request on a kept-alive connection); the connection is then closed [default: 15, range 1-3600]
    #[arg(long, env = "DEPOT_HEADER_TIMEOUT_SECONDS")]
    pub header_timeout_seconds: Option<u64>,
    /// Seconds an idle kept-alive connection stays open between requests (at most the header timeout takes effect) [default: 10, range 1-3600]
    #[arg(long, env = "DEPOT_KEEPALIVE_TIMEOUT_SECONDS")]
    pub keepalive_timeout_seconds: Option<u64>,
    /// Most client connections served at once; more wait in the listen queue. Must stay below the open-file limit with headroom [default: 4096, lowered to fit the open-file limit; range 1-1000000]
    #[arg(long, env = "DEPOT_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds every request but uploads and downloads may take before it is answered 503 timeout [default: 30, range 1-3600]
    #[arg(long, env = "DEPOT_REQUEST_TIMEOUT_SECONDS")]
    pub request_timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub public_endpoint: Option<String>,
    pub force_path_style: bool,
    pub prefix: String,
    pub create_bucket: bool,
    pub part_size: u64,
    pub parts_in_flight: usize,
    pub buffer_wait_seconds: u64,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub admin_token: Option<String>,
    pub max_upload_bytes: u64,
    pub mongo_url: Option<String>,
    pub mongo_db: String,
    pub redis_url: Option<String>,
    pub cache_ttl_seconds: u64,
    pub redis_outage_cache_seconds: u64,
    pub s3: Option<S3Settings>,
    pub download_mode: DownloadMode,
    pub presign_ttl_seconds: u64,
    pub signing_key: Option<String>,
    pub public_url: Option<String>,
    pub janitor_interval_seconds: u64,
    pub janitor_grace_seconds: u64,
    pub log_format: LogFormat,
    pub shutdown_grace_seconds: u64,
    pub upload_idle_timeout_seconds: u64,
    pub max_concurrent_uploads: usize,
    pub max_early_file_uploads_per_token: usize,
    pub upload_lease_seconds: u64,
    pub resumable_ttl_seconds: u64,
    pub upload_url_ttl_seconds: u64,
    /// Browser origins allowed on the upload routes; `["*"]` for any; empty: no CORS.
    pub cors_origins: Vec<String>,
    pub audit_retention_days: u64,
    pub draft_ttl_seconds: u64,
    pub retention_interval_seconds: u64,
    /// What products without settings of their own follow (the config file's tables).
    pub default_product_settings: crate::domain::retention::ProductSettings,
    pub webhook_allow_private: bool,
    /// Trusted publishing: the issuers trusted (empty: the feature is off).
    pub oidc_issuers: Vec<String>,
    pub oidc_audience: String,
    pub oidc_max_ttl_seconds: u64,
    pub oidc_allow_http: bool,
    pub header_timeout_seconds: u64,
    pub keepalive_timeout_seconds: u64,
    /// `None`: the default, fitted to the open-file limit at start-up.
    pub max_connections: Option<usize>,
    pub request_timeout_seconds: u64,
}

const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
const MAX_PARTS: u64 = 10_000;
const DEFAULT_MAX_UPLOAD: u64 = 5 * 1024 * 1024 * 1024;
const DEFAULT_UPLOAD_LEASE: u64 = 60;
const UPLOAD_LEASE_RANGE: std::ops::RangeInclusive<u64> = 5..=3600;
/// S3's largest object and largest part.
const MAX_UPLOAD: u64 = 5 * 1024 * 1024 * 1024 * 1024;
const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
const DAY: u64 = 24 * 3600;
/// Ten years: the longest duration any setting takes (longer ones overflow time arithmetic).
const TEN_YEARS: u64 = 3653 * DAY;
/// S3 presigned URLs live at most 7 days.
const MAX_PRESIGN_TTL: u64 = 7 * DAY;
pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

/// `value` (or `default` when unset) if it lies in `min..=max`; otherwise an error naming
/// the variable, the range and the value given.
fn ranged(name: &str, value: Option<u64>, default: u64, min: u64, max: u64) -> anyhow::Result<u64> {
    let value = value.unwrap_or(default);
    anyhow::ensure!(
        (min..=max).contains(&value),
        "{name} must be between {min} and {max} (got {value})"
    );
    Ok(value)
}

/// Shortest accepted `DEPOT_SIGNING_KEY`, in bytes.
pub const MIN_SIGNING_KEY_BYTES: usize = 32;

/// `DEPOT_PUBLIC_URL`: an absolute http(s) URL with a host and without query, fragment or
/// credentials; returned without its trailing `/`.
fn validate_public_url(raw: &str) -> anyhow::Result<String> {
    let bad = |why: &str| {
        anyhow::anyhow!(
            "DEPOT_PUBLIC_URL must be an absolute http:// or https:// URL without query, fragment or user info, e.g. https://depot.example.com ({why})"
        )
    };
    let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme is not http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() || raw.contains(['?', '#']) {
        return Err(bad("it has a query or a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("it has user info"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

macro_rules! merge_fields {
    ($strong:expr, $weak:expr, $($field:ident),*) => {
        RawSettings { $($field: $strong.$field.or($weak.$field),)* }
    };
}

impl RawSettings {
    /// `self` wins over `other` field by field.
    pub fn or(self, other: RawSettings) -> RawSettings {
        merge_fields!(
            self,
            other,
            listen,
            data_dir,
            admin_token,
            max_upload_bytes,
            mongo_url,
            mongo_db,
            redis_url,
            cache_ttl_seconds,
            redis_outage_cache_seconds,
            s3_bucket,
            s3_endpoint,
            s3_region,
            s3_public_endpoint,
            s3_force_path_style,
            s3_prefix,
            s3_create_bucket,
            s3_part_size,
            s3_parts_in_flight,
            download_mode,
            presign_ttl_seconds,
            signing_key,
            public_url,
            janitor_interval_seconds,
            janitor_grace_seconds,
            log_format,
            shutdown_grace_seconds,
            upload_idle_timeout_seconds,
            max_concurrent_uploads,
            max_early_file_uploads_per_token,
            s3_buffer_wait_seconds,
            upload_lease_seconds,
            resumable_ttl_seconds,
            upload_url_ttl_seconds,
            cors_origins,
            audit_retention_days,
            draft_ttl_seconds,
            retention_interval_seconds,
            retention,
            quota,
            webhook_allow_private,
            oidc_issuers,
            oidc_audience,
            oidc_max_ttl_seconds,
            oidc_allow_http,
            header_timeout_seconds,
            keepalive_timeout_seconds,
            max_connections,
            request_timeout_seconds
        )
    }
}

impl Settings {
    /// Merges flags/environment with the optional TOML file and validates the result.
    pub fn load(
        cli: RawSettings,
        config_file: Option<&std::path::Path>,
    ) -> anyhow::Result<Settings> {
        let file = match config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read config file {}: {e}", path.display())
                })?;
                toml::from_str::<RawSettings>(&text)
                    .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))?
            }
            None => RawSettings::default(),
        };
        Settings::resolve(cli.or(file))
    }

    pub fn resolve(raw: RawSettings) -> anyhow::Result<Settings> {
        let s3 = match raw.s3_bucket {
            Some(bucket) if !bucket.is_empty() => {
                let part_size = raw.s3_part_size.unwrap_or(8 * 1024 * 1024);
                anyhow::ensure!(
                    part_size >= MIN_PART_SIZE,
                    "DEPOT_S3_PART_SIZE must be at least {MIN_PART_SIZE} bytes (S3's minimum part size)"
                );
                anyhow::ensure!(
                    part_size <= MAX_PART_SIZE,
                    "DEPOT_S3_PART_SIZE must be at most {MAX_PART_SIZE} bytes (S3's maximum part size, got {part_size})"
                );
                let max_upload = raw.max_upload_bytes.unwrap_or(DEFAULT_MAX_UPLOAD);
                anyhow::ensure!(
                    max_upload.div_ceil(part_size) <= MAX_PARTS,
                    "DEPOT_MAX_UPLOAD_BYTES needs more than {MAX_PARTS} parts of DEPOT_S3_PART_SIZE; raise the part size"
                );
                let parts_in_flight = raw.s3_parts_in_flight.unwrap_or(2);
                anyhow::ensure!(
                    (1..=64).contains(&parts_in_flight),
                    "DEPOT_S3_PARTS_IN_FLIGHT must be between 1 and 64 (got {parts_in_flight})"
                );
                let buffer_wait_seconds = ranged(
                    "DEPOT_S3_BUFFER_WAIT_SECONDS",
                    raw.s3_buffer_wait_seconds,
                    30,
                    1,
                    600,
                )?;
                let prefix = raw.s3_prefix.unwrap_or_default();
                let prefix = prefix.trim_matches('/');
                Some(S3Settings {
                    force_path_style: raw.s3_force_path_style.unwrap_or(raw.s3_endpoint.is_some()),
                    bucket,
                    endpoint: raw.s3_endpoint,
                    region: raw.s3_region,
                    public_endpoint: raw.s3_public_endpoint,
                    prefix: if prefix.is_empty() {
                        String::new()
                    } else {
                        format!("{prefix}/")
                    },
                    create_bucket: raw.s3_create_bucket.unwrap_or(false),
                    part_size,
                    parts_in_flight,
                    buffer_wait_seconds,
                })
            }
            _ => None,
        };
        let max_upload_bytes = raw.max_upload_bytes.unwrap_or(DEFAULT_MAX_UPLOAD);
        anyhow::ensure!(
            (1..=MAX_UPLOAD).contains(&max_upload_bytes),
            "DEPOT_MAX_UPLOAD_BYTES must be between 1 and {MAX_UPLOAD} (5 TiB, got {max_upload_bytes})"
        );
        let cache_ttl_seconds =
            ranged("DEPOT_CACHE_TTL_SECONDS", raw.cache_ttl_seconds, 60, 1, DAY)?;
        let redis_outage_cache_seconds = ranged(
            "DEPOT_REDIS_OUTAGE_CACHE_SECONDS",
            raw.redis_outage_cache_seconds,
            1,
            0,
            60,
        )?;
        let presign_ttl_seconds = ranged(
            "DEPOT_PRESIGN_TTL_SECONDS",
            raw.presign_ttl_seconds,
            300,
            1,
            MAX_PRESIGN_TTL,
        )?;
        let janitor_interval_seconds = ranged(
            "DEPOT_JANITOR_INTERVAL_SECONDS",
            raw.janitor_interval_seconds,
            300,
            1,
            TEN_YEARS,
        )?;
        let janitor_grace_seconds = ranged(
            "DEPOT_JANITOR_GRACE_SECONDS",
            raw.janitor_grace_seconds,
            86_400,
            1,
            TEN_YEARS,
        )?;
        let shutdown_grace_seconds = ranged(
            "DEPOT_SHUTDOWN_GRACE_SECONDS",
            raw.shutdown_grace_seconds,
            30,
            0,
            DAY,
        )?;
        let header_timeout_seconds = ranged(
            "DEPOT_HEADER_TIMEOUT_SECONDS",
            raw.header_timeout_seconds,
            15,
            1,
            3600,
        )?;
        let keepalive_timeout_seconds = ranged(
            "DEPOT_KEEPALIVE_TIMEOUT_SECONDS",
            raw.keepalive_timeout_seconds,
            10,
            1,
            3600,
        )?;
        let request_timeout_seconds = ranged(
            "DEPOT_REQUEST_TIMEOUT_SECONDS",
            raw.request_timeout_seconds,
            30,
            1,
            3600,
        )?;
        let retention_interval_seconds = ranged(
            "DEPOT_RETENTION_INTERVAL_SECONDS",
            raw.retention_interval_seconds,
            3600,
            1,
            86_400,
        )?;
        let oidc_allow_http = raw.oidc_allow_http.unwrap_or(false);
        let oidc_issuers = parse_oidc_issuers(raw.oidc_issuers.as_deref(), oidc_allow_http)?;
        let oidc_audience = raw.oidc_audience.clone().unwrap_or_else(|| "depot".into());
        anyhow::ensure!(
            !oidc_audience.is_empty()
                && oidc_audience.len() <= 256
                && !oidc_audience.chars().any(char::is_control),
            "DEPOT_OIDC_AUDIENCE must be 1-256 characters without control characters"
        );
        let oidc_max_ttl_seconds = ranged(
            "DEPOT_OIDC_MAX_TTL_SECONDS",
            raw.oidc_max_ttl_seconds,
            900,
            60,
            86_400,
        )?;
        let default_product_settings = crate::domain::retention::ProductSettings {
            retention: raw.retention.clone().unwrap_or_default(),
            quota: raw.quota.clone().unwrap_or_default(),
        };
        default_product_settings
            .validate()
            .map_err(|e| anyhow::anyhow!("the config file's [retention] or [quota] table: {e}"))?;
        if let Some(n) = raw.max_connections {
            anyhow::ensure!(
                (1..=MAX_CONNECTIONS_LIMIT).contains(&n),
                "DEPOT_MAX_CONNECTIONS must be between 1 and {MAX_CONNECTIONS_LIMIT} (got {n})"
            );
        }
        if let Some(token) = &raw.admin_token {
            anyhow::ensure!(
                crate::auth::is_token_format(token),
                "DEPOT_ADMIN_TOKEN must be a Depot token: `depot_` followed by 43 letters and digits \
                 (256 random bits; an empty value is refused too). Generate one with `depot token generate`, \
                 or: echo \"depot_$(openssl rand -base64 64 | tr -dc 'A-Za-z0-9' | head -c 43)\""
            );
        }
        let upload_idle_timeout_seconds = ranged(
            "DEPOT_UPLOAD_IDLE_TIMEOUT_SECONDS",
            raw.upload_idle_timeout_seconds,
            60,
            1,
            3600,
        )?;
        let max_concurrent_uploads = raw.max_concurrent_uploads.unwrap_or(64);
        anyhow::ensure!(
            (1..=10_000).contains(&max_concurrent_uploads),
            "DEPOT_MAX_CONCURRENT_UPLOADS must be between 1 and 10000"
        );
        let max_early_file_uploads_per_token = raw.max_early_file_uploads_per_token.unwrap_or(2);
        anyhow::ensure!(
            (1..=64).contains(&max_early_file_uploads_per_token),
            "DEPOT_MAX_EARLY_FILE_UPLOADS_PER_TOKEN must be between 1 and 64"
        );
        let audit_retention_days = ranged(
            "DEPOT_AUDIT_RETENTION_DAYS",
            raw.audit_retention_days,
            365,
            1,
            36_500,
        )?;
        let draft_ttl_seconds = ranged(
            "DEPOT_DRAFT_TTL_SECONDS",
            raw.draft_ttl_seconds,
            7 * 86_400,
            1,
            365 * 86_400,
        )?;
        let upload_lease_seconds = ranged(
            "DEPOT_UPLOAD_LEASE_SECONDS",
            raw.upload_lease_seconds,
            DEFAULT_UPLOAD_LEASE,
            *UPLOAD_LEASE_RANGE.start(),
            *UPLOAD_LEASE_RANGE.end(),
        )?;
        let resumable_ttl_seconds = ranged(
            "DEPOT_RESUMABLE_TTL_SECONDS",
            raw.resumable_ttl_seconds,
            86_400,
            1,
            30 * 86_400,
        )?;
        let upload_url_ttl_seconds = ranged(
            "DEPOT_UPLOAD_URL_TTL_SECONDS",
            raw.upload_url_ttl_seconds,
            3600,
            1,
            7 * 86_400,
        )?;
        let cors_origins = parse_cors_origins(raw.cors_origins.as_deref())?;
        if let Some(key) = &raw.signing_key {
            anyhow::ensure!(
                key.len() >= MIN_SIGNING_KEY_BYTES,
                "DEPOT_SIGNING_KEY must be at least {MIN_SIGNING_KEY_BYTES} bytes long (it is {} bytes; \
                 an empty value, as an unset compose ${{VAR}} gives, is refused too: leave the variable \
                 out to have Depot generate a key). Generate one with: openssl rand -hex 32",
                key.len()
            );
        }
        let public_url = match raw.public_url {
            Some(u) if !u.is_empty() => Some(validate_public_url(&u)?),
            _ => None,
        };
        let redis_url = raw.redis_url.filter(|u| !u.is_empty());
        if let Some(url) = &redis_url {
            check_redis_url(url)?;
            anyhow::ensure!(
                raw.signing_key.as_deref().is_some_and(|k| !k.is_empty()),
                "DEPOT_REDIS_URL needs DEPOT_SIGNING_KEY: the token documents cached in Redis are \
                 authenticated with a key derived from it, and every replica must share it"
            );
        }
        Ok(Settings {
            upload_idle_timeout_seconds,
            max_concurrent_uploads,
            max_early_file_uploads_per_token,
            listen: raw.listen.unwrap_or_else(|| ([127, 0, 0, 1], 8080).into()),
            data_dir: raw
                .data_dir
                .unwrap_or_else(|| PathBuf::from("./depot-data")),
            admin_token: raw.admin_token,
            max_upload_bytes,
            mongo_url: raw.mongo_url.filter(|u| !u.is_empty()),
            mongo_db: raw.mongo_db.unwrap_or_else(|| "depot".to_string()),
            redis_url,
            cache_ttl_seconds,
            redis_outage_cache_seconds,
            s3,
            download_mode: raw.download_mode.unwrap_or(DownloadMode::Proxy),
            presign_ttl_seconds,
            signing_key: raw.signing_key,
            public_url,
            janitor_interval_seconds,
            janitor_grace_seconds,
            log_format: raw.log_format.unwrap_or(LogFormat::Pretty),
            upload_lease_seconds,
            resumable_ttl_seconds,
            upload_url_ttl_seconds,
            cors_origins,
            audit_retention_days,
            draft_ttl_seconds,
            retention_interval_seconds,
            default_product_settings,
            webhook_allow_private: raw.webhook_allow_private.unwrap_or(false),
            oidc_issuers,
            oidc_audience,
            oidc_max_ttl_seconds,
            oidc_allow_http,
            shutdown_grace_seconds,
            header_timeout_seconds,
            keepalive_timeout_seconds,
            max_connections: raw.max_connections,
            request_timeout_seconds,
        })
    }
}

/// `DEPOT_CORS_ORIGINS`: `*`, or origins (`scheme://host[:port]`, no path), comma-separated.
fn parse_cors_origins(raw: Option<&str>) -> anyhow::Result<Vec<String>> {
    let mut origins = Vec::new();
    for origin in raw.unwrap_or_default().split(',').map(str::trim) {
        if origin.is_empty() {
            continue;
        }
        if origin == "*" {
            origins.push(origin.to_string());
            continue;
        }
        let url = url::Url::parse(origin)
            .map_err(|e| anyhow::anyhow!("DEPOT_CORS_ORIGINS: {origin:?} is not an origin: {e}"))?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some()
                && url.path() == "/"
                && !origin.ends_with('/')
                && url.query().is_none()
                && url.username().is_empty(),
            "DEPOT_CORS_ORIGINS: {origin:?} is not an origin (scheme://host[:port], nothing after it)"
        );
        // As a browser sends it: lowercase host, no default port.
        origins.push(url.origin().ascii_serialization());
    }
    Ok(origins)
}

/// The trusted OIDC issuers: https URLs (http only with `allow_http`, and only on a
/// loopback host), each exactly as its tokens' `iss` claim names it.
fn parse_oidc_issuers(raw: Option<&str>, allow_http: bool) -> anyhow::Result<Vec<String>> {
    let mut issuers = Vec::new();
    for issuer in raw.unwrap_or_default().split(',').map(str::trim) {
        if issuer.is_empty() {
            continue;
        }
        let url = url::Url::parse(issuer)
            .map_err(|e| anyhow::anyhow!("DEPOT_OIDC_ISSUERS: '{issuer}' is not a URL: {e}"))?;
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        let scheme_ok =
            url.scheme() == "https" || (allow_http && url.scheme() == "http" && loopback);
        anyhow::ensure!(
            scheme_ok,
            "DEPOT_OIDC_ISSUERS: '{issuer}' must be an https URL (http only on a loopback address with DEPOT_OIDC_ALLOW_HTTP=true)"
        );
        anyhow::ensure!(
            url.username().is_empty()
                && url.password().is_none()
                && url.query().is_none()
                && url.fragment().is_none(),
            "DEPOT_OIDC_ISSUERS: '{issuer}' must not carry credentials, a query or a fragment"
        );
        if !issuers.iter().any(|i| i == issuer) {
            issuers.push(issuer.to_string());
        }
    }
    Ok(issuers)
}

/// `redis://` or `rediss://` (TLS), with optional `user:password@`. The error never
/// repeats the URL, since it may hold a password.
fn check_redis_url(url: &str) -> anyhow::Result<()> {
    let parsed = url::Url::parse(url).map_err(|e| {
        anyhow::anyhow!(
            "DEPOT_REDIS_URL is not a valid URL ({e}); expected redis://[user:password@]host:port \
             or rediss://... for TLS"
        )
    })?;
    anyhow::ensure!(
        matches!(parsed.scheme(), "redis" | "rediss"),
        "DEPOT_REDIS_URL must start with redis:// or rediss:// (TLS), not {}://",
        parsed.scheme()
    );
    anyhow::ensure!(
        parsed.host_str().is_some_and(|h| !h.is_empty()),
        "DEPOT_REDIS_URL has no host; expected redis://[user:password@]host:port"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins_are_kept_as_browsers_send_them_and_anything_else_is_refused() {
        assert_eq!(
            parse_cors_origins(Some(
                " https://CI.example.com, http://host:80,*,http://[::1]:8080 "
            ))
            .unwrap(),
            vec![
                "https://ci.example.com",
                "http://host",
                "*",
                "http://[::1]:8080"
            ]
        );
        assert!(parse_cors_origins(None).unwrap().is_empty());
        for bad in [
            "https://ci.example.com/",
            "https://ci.example.com/app",
            "https://ci.example.com?x=1",
            "ftp://ci.example.com",
            "https://user@ci.example.com",
            "ci.example.com",
        ] {
            assert!(parse_cors_origins(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let cli = RawSettings {
            mongo_db: Some("cli".into()),
            ..Default::default()
        };
        let file: RawSettings =
            toml::from_str("mongo_db = \"file\"\ncache_ttl_seconds = 5").unwrap();
        let s = Settings::resolve(cli.or(file)).unwrap();
        assert_eq!(s.mongo_db, "cli");
        assert_eq!(s.cache_ttl_seconds, 5);
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert!(s.s3.is_none());
    }

    #[test]
    fn rejects_part_sizes_below_the_s3_minimum() {
        let raw = RawSettings {
            s3_bucket: Some("b".into()),
            s3_part_size: Some(1024),
            ..Default::default()
        };
        assert!(Settings::resolve(raw).is_err());
    }

    #[test]
    fn upload_lease_defaults_to_a_minute_and_is_range_checked() {
        assert_eq!(
            Settings::resolve(RawSettings::default())
                .unwrap()
                .upload_lease_seconds,
            60
        );
        for (value, ok) in [(4, false), (5, true), (3600, true), (3601, false)] {
            let raw = RawSettings {
                upload_lease_seconds: Some(value),
                ..Default::default()
            };
            assert_eq!(Settings::resolve(raw).is_ok(), ok, "{value}");
        }
    }

    #[test]
    fn refuses_short_or_empty_signing_keys_and_badly_formed_admin_tokens() {
        for key in ["", "short"] {
            let raw = RawSettings {
                signing_key: Some(key.into()),
                ..Default::default()
            };
            assert!(Settings::resolve(raw).is_err(), "{key:?}");
        }
        let raw = RawSettings {
            signing_key: Some("k".repeat(32)),
            admin_token: Some(crate::auth::generate_token()),
            ..Default::default()
        };
        assert!(Settings::resolve(raw).is_ok());
        for token in ["", "aaaaaaaaaaaaaaaa", "depot_short"] {
            let raw = RawSettings {
                admin_token: Some(token.into()),
                ..Default::default()
            };
            assert!(Settings::resolve(raw).is_err(), "{token:?}");
        }
    }

    #[test]
    fn public_url_must_be_absolute_http_without_query() {
        for bad in [
            "depot.example.com",
            "ftp://x",
            "https://x/?a",
            "https://x/#f",
            "https://u:p@x",
            "",
        ] {
            assert!(validate_public_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            validate_public_url("https://depot.example.com/base/").unwrap(),
            "https://depot.example.com/base"
        );
    }

    #[test]
    fn redis_needs_a_signing_key_and_a_redis_url() {
        let with = |url: &str, key: Option<&str>| {
            Settings::resolve(RawSettings {
                redis_url: Some(url.into()),
                signing_key: key.map(str::to_string),
                ..Default::default()
            })
        };
        let key = Some("k".repeat(64));
        let err = with("redis://127.0.0.1:6379", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("DEPOT_SIGNING_KEY"), "{err}");
        assert!(with("redis://127.0.0.1:6379", Some("")).is_err());
        assert!(with("redis://:pw@127.0.0.1:6379", key.as_deref()).is_ok());
        assert!(with("rediss://user:pw@redis.example:6380/0", key.as_deref()).is_ok());
        let err = with("http://:hunter2@127.0.0.1:6379", key.as_deref())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("redis://") && !err.contains("hunter2"),
            "{err}"
        );
        let err = with("not a url hunter2", key.as_deref())
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        assert!(toml::from_str::<RawSettings>("listn = \"x\"").is_err());
    }

    fn refused(raw: RawSettings, variable: &str) {
        let err = Settings::resolve(raw).expect_err("out of range value accepted");
        assert!(
            err.to_string().contains(variable),
            "message does not name {variable}: {err}"
        );
    }

    #[test]
    fn the_janitor_grace_is_refused_above_ten_years() {
        refused(
            RawSettings {
                janitor_grace_seconds: Some(u64::MAX),
                ..Default::default()
            },
            "DEPOT_JANITOR_GRACE_SECONDS",
        );
        refused(
            RawSettings {
                janitor_grace_seconds: Some(0),
                ..Default::default()
            },
            "DEPOT_JANITOR_GRACE_SECONDS",
        );
        let ok = RawSettings {
            janitor_grace_seconds: Some(TEN_YEARS),
            ..Default::default()
        };
        assert_eq!(
            Settings::resolve(ok).unwrap().janitor_grace_seconds,
            TEN_YEARS
        );
    }

    #[test]
    fn the_janitor_interval_must_be_at_least_a_second_and_at_most_ten_years() {
        for bad in [0, TEN_YEARS + 1, u64::MAX] {
            refused(
                RawSettings {
                    janitor_interval_seconds: Some(bad),
                    ..Default::default()
                },
                "DEPOT_JANITOR_INTERVAL_SECONDS",
            );
        }
    }

    #[test]
    fn the_cache_ttl_is_refused_at_zero_and_above_a_day() {
        for bad in [0, DAY + 1] {
            refused(
                RawSettings {
                    cache_ttl_seconds: Some(bad),
                    ..Default::default()
                },
                "DEPOT_CACHE_TTL_SECONDS",
            );
        }
    }

    #[test]
    fn the_presign_ttl_is_refused_outside_one_second_to_seven_days_instead_of_clamped() {
        for bad in [0, MAX_PRESIGN_TTL + 1] {
            refused(
                RawSettings {
                    presign_ttl_seconds: Some(bad),
                    ..Default::default()
                },
                "DEPOT_PRESIGN_TTL_SECONDS",
            );
        }
        let ok = RawSettings {
            presign_ttl_seconds: Some(MAX_PRESIGN_TTL),
            ..Default::default()
        };
        assert_eq!(
            Settings::resolve(ok).unwrap().presign_ttl_seconds,
            MAX_PRESIGN_TTL
        );
    }

    #[test]
    fn the_shutdown_grace_may_be_zero_but_not_above_a_day() {
        let zero = RawSettings {
            shutdown_grace_seconds: Some(0),
            ..Default::default()
        };
        assert_eq!(Settings::resolve(zero).unwrap().shutdown_grace_seconds, 0);
        refused(
            RawSettings {
                shutdown_grace_seconds: Some(DAY + 1),
                ..Default::default()
            },
            "DEPOT_SHUTDOWN_GRACE_SECONDS",
        );
    }

    #[test]
    fn connection_timeouts_are_refused_at_zero_and_above_an_hour() {
        for bad in [0, 3601] {
            refused(
                RawSettings {
                    header_timeout_seconds: Some(bad),
                    ..Default::default()
                },
                "DEPOT_HEADER_TIMEOUT_SECONDS",
            );
            refused(
                RawSettings {
                    keepalive_timeout_seconds: Some(bad),
                    ..Default::default()
                },
                "DEPOT_KEEPALIVE_TIMEOUT_SECONDS",
            );
            refused(
                RawSettings {
                    request_timeout_seconds: Some(bad),
                    ..Default::default()
                },
                "DEPOT_REQUEST_TIMEOUT_SECONDS",
            );
        }
        let defaults = Settings::resolve(RawSettings::default()).unwrap();
        assert!(defaults.header_timeout_seconds <= 30);
        assert_eq!(defaults.request_timeout_seconds, 30);
    }

    #[test]
    fn the_connection_limit_is_refused_at_zero_and_above_a_million() {
        for bad in [0, MAX_CONNECTIONS_LIMIT + 1] {
            refused(
                RawSettings {
                    max_connections: Some(bad),
                    ..Default::default()
                },
                "DEPOT_MAX_CONNECTIONS",
            );
        }
    }

    #[test]
    fn upload_and_part_sizes_are_refused_beyond_what_s3_takes() {
        refused(
            RawSettings {
                max_upload_bytes: Some(0),
                ..Default::default()
            },
            "DEPOT_MAX_UPLOAD_BYTES",
        );
        refused(
            RawSettings {
                max_upload_bytes: Some(MAX_UPLOAD + 1),
                ..Default::default()
            },
            "DEPOT_MAX_UPLOAD_BYTES",
        );
        refused(
            RawSettings {
                s3_bucket: Some("b".into()),
                s3_part_size: Some(MAX_PART_SIZE + 1),
                ..Default::default()
            },
            "DEPOT_S3_PART_SIZE",
        );
        refused(
            RawSettings {
                s3_bucket: Some("b".into()),
                s3_parts_in_flight: Some(0),
                ..Default::default()
            },
            "DEPOT_S3_PARTS_IN_FLIGHT",
        );
    }
}
