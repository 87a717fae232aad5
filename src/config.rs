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
    /// If set, this exact token exists as an admin token after start-up
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
    /// HMAC key for Depot-signed download URLs and for the token documents cached in Redis; share it between replicas; required with DEPOT_REDIS_URL [default: generated and kept in the data dir]
    #[arg(long, env = "DEPOT_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
    /// Base URL clients use to reach Depot, for signed URLs [default: from the request's Host header]
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
    pub s3: Option<S3Settings>,
    pub download_mode: DownloadMode,
    pub presign_ttl_seconds: u64,
    pub signing_key: Option<String>,
    pub public_url: Option<String>,
    pub janitor_interval_seconds: u64,
    pub janitor_grace_seconds: u64,
    pub log_format: LogFormat,
    pub shutdown_grace_seconds: u64,
}

const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
const MAX_PARTS: u64 = 10_000;
const DEFAULT_MAX_UPLOAD: u64 = 5 * 1024 * 1024 * 1024;

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
            shutdown_grace_seconds
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
                let max_upload = raw.max_upload_bytes.unwrap_or(DEFAULT_MAX_UPLOAD);
                anyhow::ensure!(
                    max_upload.div_ceil(part_size) <= MAX_PARTS,
                    "DEPOT_MAX_UPLOAD_BYTES needs more than {MAX_PARTS} parts of DEPOT_S3_PART_SIZE; raise the part size"
                );
                let parts_in_flight = raw.s3_parts_in_flight.unwrap_or(2);
                anyhow::ensure!(
                    (1..=64).contains(&parts_in_flight),
                    "DEPOT_S3_PARTS_IN_FLIGHT must be between 1 and 64"
                );
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
                })
            }
            _ => None,
        };
        let max_upload_bytes = raw.max_upload_bytes.unwrap_or(DEFAULT_MAX_UPLOAD);
        anyhow::ensure!(
            max_upload_bytes > 0,
            "DEPOT_MAX_UPLOAD_BYTES must be positive"
        );
        if let Some(token) = &raw.admin_token {
            anyhow::ensure!(
                token.len() >= 16,
                "DEPOT_ADMIN_TOKEN must be at least 16 characters long"
            );
        }
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
            listen: raw.listen.unwrap_or_else(|| ([127, 0, 0, 1], 8080).into()),
            data_dir: raw
                .data_dir
                .unwrap_or_else(|| PathBuf::from("./depot-data")),
            admin_token: raw.admin_token,
            max_upload_bytes,
            mongo_url: raw.mongo_url.filter(|u| !u.is_empty()),
            mongo_db: raw.mongo_db.unwrap_or_else(|| "depot".to_string()),
            redis_url,
            cache_ttl_seconds: raw.cache_ttl_seconds.unwrap_or(60).max(1),
            s3,
            download_mode: raw.download_mode.unwrap_or(DownloadMode::Proxy),
            presign_ttl_seconds: raw
                .presign_ttl_seconds
                .unwrap_or(300)
                .clamp(1, 7 * 24 * 3600),
            signing_key: raw.signing_key,
            public_url: raw.public_url.map(|u| u.trim_end_matches('/').to_string()),
            janitor_interval_seconds: raw.janitor_interval_seconds.unwrap_or(300).max(1),
            janitor_grace_seconds: raw.janitor_grace_seconds.unwrap_or(86_400),
            log_format: raw.log_format.unwrap_or(LogFormat::Pretty),
            shutdown_grace_seconds: raw.shutdown_grace_seconds.unwrap_or(30),
        })
    }
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
}
