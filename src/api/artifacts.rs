//! Artifacts: upload, download (stream or redirect), presign, list, delete.

use super::{ApiPath, ApiQuery, rfc3339};
use crate::app::AppState;
use crate::auth::Caller;
use crate::config::DownloadMode;
use crate::domain::names::{validate_product, validate_version};
use crate::domain::permissions::{Decision, ProductOp, decide};
use crate::domain::version::VersionKind;
use crate::download::{Plan, build, plan};
use crate::dto::{ListedVersion, UploadResult, VersionInfo, VersionPage};
use crate::error::{ApiError, ApiResult};
use crate::meta::metered::observe;
use crate::meta::{VersionRecord, now_ms};
use crate::ops::upload::receive;
use crate::signing::SignedTarget;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use futures::StreamExt;
use serde::Deserialize;
use std::time::Duration;

/// What a listing shows of a version record.
pub fn version_info(v: &VersionRecord) -> VersionInfo {
    VersionInfo {
        path: format!("/product/download/{}/{}", v.product, v.version),
        file_name: v.file_name.clone(),
        size: v.size,
        checksum: format!("sha256:{}", v.checksum),
        uploaded_at: rfc3339(v.uploaded_at),
        uploaded_by: v.uploaded_by.clone(),
        state: "published".into(),
        labels: Default::default(),
        files: Vec::new(),
    }
}

/// `POST /product/upload`.
pub async fn upload(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<UploadResult>)> {
    // Counted as a running transfer; after the shutdown grace period it is aborted,
    // which drops `receive` and so runs its cleanup before the process exits.
    let _transfer = app.shutdown.transfers.token();
    let outcome = tokio::select! {
        outcome = receive(&app, &caller, &headers, body) => outcome,
        _ = app.shutdown.abort.cancelled() => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down; nothing was stored, retry the upload",
        )),
    };
    match outcome {
        Ok(result) => {
            metrics::counter!("depot_uploaded_bytes_total").increment(result.size);
            metrics::counter!("depot_uploads_total").increment(1);
            Ok((StatusCode::CREATED, Json(result)))
        }
        Err(err) => {
            metrics::counter!("depot_upload_failures_total", "reason" => err.code).increment(1);
            Err(err)
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct DownloadQuery {
    redirect: Option<bool>,
    #[serde(default)]
    prerelease: bool,
}

/// Finds a committed version; `latest` resolves to the highest release.
async fn resolve_version(
    app: &AppState,
    product: &str,
    version: &str,
    prerelease: bool,
) -> ApiResult<VersionRecord> {
    validate_version(version)?;
    if version == "latest" {
        return match latest(app, product, prerelease).await? {
            Some(record) => Ok(record),
            None => Err(version_missing(app, product, version).await),
        };
    }
    match app.meta.version(product, version).await? {
        Some(record) => Ok(record),
        None => Err(version_missing(app, product, version).await),
    }
}

/// The highest semver release (pre-releases too when asked); the newest upload when no
/// version is semver at all; nothing when only pre-releases exist and they were not asked for.
pub(crate) async fn latest(
    app: &AppState,
    product: &str,
    prerelease: bool,
) -> ApiResult<Option<VersionRecord>> {
    let wanted: &[VersionKind] = if prerelease {
        &[VersionKind::Release, VersionKind::PreRelease]
    } else {
        &[VersionKind::Release]
    };
    if let Some(found) = app.meta.first_version_of_kind(product, wanted).await? {
        return Ok(Some(found));
    }
    if !prerelease
        && app
            .meta
            .first_version_of_kind(product, &[VersionKind::PreRelease])
            .await?
            .is_some()
    {
        return Ok(None);
    }
    Ok(app
        .meta
        .first_version_of_kind(product, &[VersionKind::Other])
        .await?)
}

/// `version_not_found`, or `product_not_found` when the product itself does not exist
/// (admins pass the grant check, so they get here for missing products too).
async fn version_missing(app: &AppState, product: &str, version: &str) -> ApiError {
    match app.meta.product(product).await {
        Ok(Some(_)) => ApiError::version_not_found(product, version),
        Ok(None) => ApiError::product_not_found(product),
        Err(err) => err.into(),
    }
}

/// Checks the caller may download, and resolves the version.
async fn downloadable(
    app: &AppState,
    caller: &Caller,
    product: &str,
    version: &str,
    prerelease: bool,
) -> ApiResult<VersionRecord> {
    validate_product(product)?;
    caller.authorize(product, ProductOp::Download)?;
    let record = resolve_version(app, product, version, prerelease).await?;
    Ok(record)
}

/// A URL that downloads the version without a token: presigned by the blob store when
/// it can, otherwise signed by Depot (bound to this upload and to `caller`'s token) and
/// served by `GET /signed/...`.
async fn direct_url(
    app: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    record: &VersionRecord,
) -> ApiResult<(String, i64)> {
    let ttl = app.settings.presign_ttl_seconds;
    let expires = now_ms() / 1000 + ttl as i64;
    if let Some(url) = app
        .blobs
        .presign(
            &record.blob_key,
            &record.file_name,
            Duration::from_secs(ttl),
        )
        .await?
    {
        return Ok((url, expires));
    }
    let base = public_base(app, headers)?;
    let token_id = caller.token.id.as_str();
    let signature = app.signer.sign(&SignedTarget {
        product: &record.product,
        version: &record.version,
        blob_key: &record.blob_key,
        token_id,
        expires,
    });
    Ok((
        format!(
            "{base}/signed/{}/{}?expires={expires}&token_id={token_id}&signature={signature}",
            record.product, record.version
        ),
        expires,
    ))
}

/// Where clients reach Depot: `DEPOT_PUBLIC_URL`, else `http://` + the request's `Host`,
/// which must then be exactly `host[:port]` (400 `invalid_host` otherwise), so nothing a
/// client sends can add a path, query or user info to a `Location`.
fn public_base(app: &AppState, headers: &HeaderMap) -> ApiResult<String> {
    if let Some(base) = &app.settings.public_url {
        return Ok(base.clone());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| is_host_and_port(h))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_host",
                "the Host header must be host[:port] (a hostname or an IP address, optionally a numeric port); or set DEPOT_PUBLIC_URL",
            )
        })?;
    Ok(format!("http://{host}"))
}

/// `host[:port]`: a DNS name (letters, digits, `-`, `.`, `_`), an IPv4 address or a
/// bracketed IPv6 address, then optionally `:` and a port number.
pub(crate) fn is_host_and_port(value: &str) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match value.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty()
            || port.len() > 5
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u32>().map_or(true, |p| p > 65_535))
    {
        return false;
    }
    if value.starts_with('[') {
        return true;
    }
    // A fully qualified name may end in one dot (`example.com.`).
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Streams (or answers 304/416/HEAD for) a committed version.
async fn serve(
    app: &AppState,
    method: &Method,
    headers: &HeaderMap,
    record: &VersionRecord,
) -> ApiResult<Response> {
    match plan(method, headers, record)? {
        Plan::Done(resp) => Ok(resp),
        Plan::Stream {
            status,
            headers,
            range,
        } => {
            let stream = observe(
                "storage",
                "read",
                app.blobs.read(&record.blob_key, range),
                |e| matches!(e, crate::error::BlobError::Unavailable(_)),
            )
            .await?;
            let counted = stream.inspect(|chunk| {
                if let Ok(bytes) = chunk {
                    metrics::counter!("depot_downloaded_bytes_total").increment(bytes.len() as u64);
                }
            });
            Ok(build(status, headers, Body::from_stream(counted)))
        }
    }
}

/// `GET|HEAD /product/download/{product}/{version}`.
pub async fn download(
    State(app): State<AppState>,
    caller: Caller,
    method: Method,
    headers: HeaderMap,
    ApiPath((product, version)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<DownloadQuery>,
) -> ApiResult<Response> {
    let record = downloadable(&app, &caller, &product, &version, query.prerelease).await?;
    let redirect = query
        .redirect
        .unwrap_or(app.settings.download_mode == DownloadMode::Redirect);
    if redirect {
        let (url, _) = direct_url(&app, &caller, &headers, &record).await?;
        let mut resp = build(StatusCode::FOUND, HeaderMap::new(), Body::empty());
        resp.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(&url).map_err(ApiError::internal)?,
        );
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok(resp);
    }
    serve(&app, &method, &headers, &record).await
}

#[derive(Debug, Deserialize)]
pub struct SignedQuery {
    expires: i64,
    #[serde(default)]
    token_id: String,
    signature: String,
}

/// `GET /signed/{product}/{version}`: no token, an HMAC signature with an expiry instead.
/// The link works only while the version still holds the upload it was made for and the
/// token that asked for it still exists, has not expired and may still download.
pub async fn signed_download(
    State(app): State<AppState>,
    method: Method,
    headers: HeaderMap,
    ApiPath((product, version)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<SignedQuery>,
) -> ApiResult<Response> {
    let invalid = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_signature",
            "the download link is invalid or has expired",
        )
    };
    let record = if validate_product(&product).is_ok() && validate_version(&version).is_ok() {
        app.meta.version(&product, &version).await?
    } else {
        None
    };
    // The MAC is checked whether or not the version exists (constant time either way).
    let valid = app.signer.verify(
        &SignedTarget {
            product: &product,
            version: &version,
            blob_key: record.as_ref().map_or("", |r| r.blob_key.as_str()),
            token_id: &query.token_id,
            expires: query.expires,
        },
        &query.signature,
        now_ms() / 1000,
    );
    let Some(record) = record.filter(|_| valid) else {
        return Err(invalid());
    };
    let Some(token) = app.meta.token_by_id(&query.token_id).await? else {
        return Err(invalid());
    };
    if token.is_expired(now_ms()) {
        return Err(invalid());
    }
    let grants = app.meta.grants_of_token(&token.id).await?;
    let grant = grants.iter().find(|(p, _)| *p == product).map(|(_, g)| g);
    if decide(token.admin, grant, ProductOp::Download) != Decision::Allow {
        return Err(invalid());
    }
    serve(&app, &method, &headers, &record).await
}

/// `GET /product/presign/{product}/{version}`: a URL for consumers that fetch later.
pub async fn presign(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((product, version)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<DownloadQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let record = downloadable(&app, &caller, &product, &version, query.prerelease).await?;
    let (url, expires) = direct_url(&app, &caller, &headers, &record).await?;
    Ok(Json(serde_json::json!({
        "url": url,
        "expires_at": rfc3339(expires * 1000),
        "version": record.version,
    })))
}

/// Deletes a committed version: record first (so nothing lists a missing file), then blob.
pub async fn remove_version(
    app: &AppState,
    caller: &Caller,
    product: &str,
    version: &str,
) -> ApiResult<()> {
    validate_product(product)?;
    validate_version(version)?;
    caller.authorize(product, ProductOp::DeleteVersion)?;
    let ctx = crate::ops::Ctx::of(caller);
    if crate::ops::versions::delete(app, &ctx, product, version)
        .await?
        .is_none()
    {
        return Err(version_missing(app, product, version).await);
    }
    tracing::info!(product = %product, version = %version, by = %caller.token.id, "version deleted");
    Ok(())
}

/// `DELETE /product/delete/{product}/{version}`.
pub async fn delete_version(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath((product, version)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    remove_version(&app, &caller, &product, &version).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /product/versions/{product}`: newest first (semver, then by upload time), paginated.
pub async fn list_versions(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(product): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<VersionPage>> {
    validate_product(&product)?;
    caller.authorize(&product, ProductOp::Download)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 1000",
        ));
    }
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    if app.meta.product(&product).await?.is_none() {
        return Err(ApiError::product_not_found(&product));
    }
    // One more than asked tells whether another page follows.
    let mut versions = app
        .meta
        .versions_page(&product, after.as_deref(), limit + 1)
        .await?;
    let more = versions.len() > limit;
    versions.truncate(limit);
    let next_cursor = more
        .then(|| versions.last().map(|v| encode_cursor(&v.sort_key)))
        .flatten();
    let page: Vec<ListedVersion> = versions
        .iter()
        .map(|v| ListedVersion {
            version: v.version.clone(),
            info: version_info(v),
        })
        .collect();
    Ok(Json(VersionPage {
        versions: page,
        next_cursor,
    }))
}

/// The cursor is the last listed sort key, opaque to clients.
fn encode_cursor(sort_key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("k:{sort_key}"))
}

fn decode_cursor(cursor: &str) -> ApiResult<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("k:").map(str::to_string))
        .ok_or_else(|| ApiError::bad_request("invalid_query", "invalid cursor"))
}

#[cfg(test)]
mod tests {
    use super::is_host_and_port;

    #[test]
    fn host_header_must_be_host_and_optional_port() {
        for ok in [
            "localhost",
            "localhost:8080",
            "depot.example.com",
            "depot.example.com.",
            "127.0.0.1:65535",
            "[::1]",
            "[2001:db8::1]:443",
            "my_host-1.internal",
        ] {
            assert!(is_host_and_port(ok), "{ok}");
        }
        for bad in [
            "",
            "attacker.test/x?",
            "a?b",
            "a#b",
            "user@host",
            "host:",
            "host:65536",
            "host:80:80",
            "host:8o",
            "a b",
            "a..b",
            ".",
            "[::1",
            "[::1]x",
            "[nope]:80",
            "h\u{e9}te",
        ] {
            assert!(!is_host_and_port(bad), "{bad}");
        }
    }
}
