//! Artifacts: upload, download (stream or redirect), presign, list, delete.

use super::{ApiPath, ApiQuery, rfc3339};
use crate::app::AppState;
use crate::auth::Caller;
use crate::config::DownloadMode;
use crate::domain::assets::{
    CHECKSUMS_FILE, Label, MAX_FILES, MAX_LABELS, check_file_name, checksums_file, labels_map,
    new_labels, parse_label_filter,
};
use crate::domain::names::{validate_product, validate_version};
use crate::domain::permissions::{Decision, ProductOp, decide};
use crate::download::{Plan, build, plan};
use crate::dto::{
    LabelsResult, ListedVersion, PublishRequest, UploadResult, VersionInfo, VersionPage, file_info,
};
use crate::error::AssetRefusal;
use crate::error::{ApiError, ApiResult};
use crate::meta::metered::observe;
use crate::meta::{VersionRecord, VersionState, now_ms};
use crate::ops::upload::{receive, receive_draft_file};
use crate::signing::SignedTarget;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use futures::StreamExt;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// What a listing shows of a version record: the primary file's fields (the seed's
/// shape; a draft's first file), its state, labels and every file.
pub fn version_info(v: &VersionRecord) -> VersionInfo {
    let files = v.all_files();
    let primary = files.first();
    VersionInfo {
        path: format!("/product/download/{}/{}", v.product, v.version),
        file_name: primary.map(|f| f.name.clone()).unwrap_or_default(),
        size: primary.map_or(0, |f| f.size),
        checksum: primary
            .map(|f| format!("sha256:{}", f.checksum))
            .unwrap_or_default(),
        uploaded_at: rfc3339(v.uploaded_at),
        uploaded_by: v.uploaded_by.clone(),
        state: state_name(v.state).into(),
        labels: labels_map(&v.labels),
        files: files.iter().map(file_info).collect(),
        last_downloaded_at: v.last_download_at.map(rfc3339),
    }
}

fn state_name(state: VersionState) -> &'static str {
    match state {
        VersionState::Draft => "draft",
        VersionState::Pending => "pending",
        VersionState::Committed => "published",
    }
}

/// Runs an upload as a counted transfer: after the shutdown grace period it is aborted,
/// which drops it and so runs its cleanup before the process exits. Counts the outcome.
async fn run_upload(
    app: &AppState,
    upload: impl Future<Output = ApiResult<UploadResult>>,
) -> ApiResult<(StatusCode, Json<UploadResult>)> {
    let _transfer = app.shutdown.transfers.token();
    let outcome = tokio::select! {
        outcome = upload => outcome,
        _ = app.shutdown.abort.cancelled() => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down; nothing was stored, retry the upload",
        )),
    };
    match outcome {
        Ok(result) => {
            let bytes = if result.files.is_empty() {
                result.size
            } else {
                result.files.iter().map(|f| f.size).sum()
            };
            metrics::counter!("depot_uploaded_bytes_total").increment(bytes);
            metrics::counter!("depot_uploads_total").increment(1);
            Ok((StatusCode::CREATED, Json(result)))
        }
        Err(err) => {
            metrics::counter!("depot_upload_failures_total", "reason" => err.code).increment(1);
            Err(err)
        }
    }
}

/// `POST /product/upload`.
pub async fn upload(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<UploadResult>)> {
    run_upload(&app, receive(&app, &caller, &headers, body)).await
}

/// `PUT /product/upload/{product}/{version}/{file}`: one file into a draft.
pub async fn upload_file(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((product, version, file)): ApiPath<(String, String, String)>,
    body: Body,
) -> ApiResult<(StatusCode, Json<UploadResult>)> {
    let target = (product.as_str(), version.as_str(), file.as_str());
    run_upload(
        &app,
        receive_draft_file(&app, &caller, target, &headers, body),
    )
    .await
}

/// `POST /product/publish/{product}/{version}`: seals a draft, optionally checking its
/// file list and setting labels.
pub async fn publish(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath((product, version)): ApiPath<(String, String)>,
    super::ApiBytes(body): super::ApiBytes,
) -> ApiResult<Json<ListedVersion>> {
    validate_product(&product)?;
    validate_version(&version)?;
    caller.authorize(&product, ProductOp::Upload)?;
    let request: PublishRequest = if super::is_blank_json(&body) {
        PublishRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request("invalid_body", format!("invalid publish body: {e}"))
        })?
    };
    if request.files.as_ref().is_some_and(|f| f.len() > MAX_FILES) {
        return Err(AssetRefusal::FilesMismatch.into());
    }
    let labels = new_labels(&request.labels)?;
    let ctx = crate::ops::Ctx::of(&caller);
    let published = crate::ops::versions::publish(
        &app,
        &ctx,
        &product,
        &version,
        request.files.as_deref(),
        &labels,
    )
    .await
    .map_err(|err| match err.code {
        "conflict" => ApiError::conflict(
            "version_exists",
            format!("version '{version}' of '{product}' is published already"),
        ),
        "not_found" => ApiError::not_found(
            "version_not_found",
            format!("product '{product}' has no draft '{version}'"),
        ),
        _ => err,
    })?;
    let record = published.value;
    tracing::info!(product = %product, version = %version, files = record.files.len(), by = %caller.token.id, "version published");
    Ok(Json(ListedVersion {
        version: record.version.clone(),
        info: version_info(&record),
    }))
}

/// `PUT /product/labels/{product}/{version}`: key -> value (`null` removes).
pub async fn set_labels(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath((product, version)): ApiPath<(String, String)>,
    super::ApiJson(changes): super::ApiJson<BTreeMap<String, Option<String>>>,
) -> ApiResult<Json<LabelsResult>> {
    validate_product(&product)?;
    validate_version(&version)?;
    caller.authorize(&product, ProductOp::Label)?;
    if changes.len() > 2 * MAX_LABELS {
        return Err(ApiError::bad_request(
            "invalid_label",
            format!("a version carries at most {MAX_LABELS} labels"),
        ));
    }
    let ctx = crate::ops::Ctx::of(&caller);
    let labels = crate::ops::versions::set_labels(&app, &ctx, &product, &version, &changes)
        .await
        .map_err(|err| match err.code {
            "not_found" => ApiError::version_not_found(&product, &version),
            _ => err,
        })?;
    Ok(Json(LabelsResult {
        product,
        version,
        labels: labels_map(&labels),
    }))
}

/// `DELETE /product/delete/{product}/{version}/{file}`: a file out of a draft.
pub async fn delete_file(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath((product, version, file)): ApiPath<(String, String, String)>,
) -> ApiResult<StatusCode> {
    validate_product(&product)?;
    validate_version(&version)?;
    check_file_name(&file)?;
    if caller.authorize(&product, ProductOp::Upload).is_err() {
        caller.authorize(&product, ProductOp::DeleteVersion)?;
    }
    // A delete-only token does not see drafts: it may neither change one nor learn
    // from the answer that one exists.
    if !caller.sees_drafts(&product)
        && let Some(draft) = app.meta.version(&product, &version).await?
        && draft.state == VersionState::Draft
    {
        return Err(version_missing(&app, &product, &version).await);
    }
    let ctx = crate::ops::Ctx::of(&caller);
    crate::ops::versions::remove_file(&app, &ctx, &product, &version, &file)
        .await
        .map_err(|err| match err.code {
            "not_found" => ApiError::not_found(
                "version_not_found",
                format!("product '{product}' has no draft '{version}'"),
            ),
            _ => err,
        })?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
pub struct DownloadQuery {
    redirect: Option<bool>,
    #[serde(default)]
    prerelease: bool,
    /// `key=value`: `latest` among the versions carrying this label.
    label: Option<String>,
}

impl DownloadQuery {
    fn label(&self) -> ApiResult<Option<Label>> {
        Ok(self.label.as_deref().map(parse_label_filter).transpose()?)
    }
}

/// Finds a published version, or a draft the caller may see; `latest` resolves to the
/// highest release (carrying `label`, when given).
async fn resolve_version(
    app: &AppState,
    caller: &Caller,
    product: &str,
    version: &str,
    prerelease: bool,
    label: Option<&Label>,
) -> ApiResult<VersionRecord> {
    validate_version(version)?;
    if version == "latest" {
        return match crate::ops::versions::latest(app, product, prerelease, label).await? {
            Some(record) => Ok(record),
            None => Err(version_missing(app, product, version).await),
        };
    }
    match app.meta.version(product, version).await? {
        Some(record) if record.state == VersionState::Committed || caller.sees_drafts(product) => {
            Ok(record)
        }
        _ => Err(version_missing(app, product, version).await),
    }
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
    query: &DownloadQuery,
) -> ApiResult<VersionRecord> {
    validate_product(product)?;
    caller.authorize(product, ProductOp::Download)?;
    let label = query.label()?;
    resolve_version(
        app,
        caller,
        product,
        version,
        query.prerelease,
        label.as_ref(),
    )
    .await
}

/// The version's file `name` (`None`: its primary file), as a record whose primary
/// fields describe that file, which is what the download path serves.
fn served_file(record: VersionRecord, name: Option<&str>) -> ApiResult<VersionRecord> {
    let file = match name {
        Some(name) => record.file(name),
        None => record.primary(),
    };
    match file {
        Some(file) => Ok(record.with_primary(&file)),
        None => Err(AssetRefusal::FileNotFound.into()),
    }
}

/// A name as one URL path segment: a file may be called `a?b` or `x%41`.
fn path_segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, crate::domain::names::PATH_SEGMENT).to_string()
}

/// Which concrete version (and file) a download served: a client that asked for
/// `latest` learns what it got.
fn served_headers(resp: &mut Response, record: &VersionRecord, file: Option<&str>) {
    let mut location = format!(
        "/product/download/{}/{}",
        path_segment(&record.product),
        path_segment(&record.version)
    );
    if let Some(file) = file {
        location.push('/');
        location.push_str(&path_segment(file));
    }
    if let Ok(v) = HeaderValue::from_str(&record.version) {
        resp.headers_mut().insert("x-depot-version", v);
    }
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
}

/// A URL that downloads the version without a token: presigned by the blob store when
/// it can, otherwise signed by Depot (bound to this upload and to `caller`'s token) and
/// served by `GET /signed/...`.
async fn direct_url(
    app: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    record: &VersionRecord,
    file: Option<&str>,
) -> ApiResult<(String, i64)> {
    let ttl = app.settings.presign_ttl_seconds;
    let expires = now_ms() / 1000 + ttl as i64;
    // The bytes will come from the bucket, out of Depot's sight: the link counts.
    crate::ops::retention::note_download(app, record);
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
    let file = file
        .map(|f| format!("/{}", path_segment(f)))
        .unwrap_or_default();
    Ok((
        format!(
            "{base}/signed/{}/{}{file}?expires={expires}&token_id={token_id}&signature={signature}",
            path_segment(&record.product),
            path_segment(&record.version)
        ),
        expires,
    ))
}

/// Where clients reach Depot: `DEPOT_PUBLIC_URL`, else `http://` + the request's `Host`,
/// which must then be exactly `host[:port]` (400 `invalid_host` otherwise), so nothing a
/// client sends can add a path, query or user info to a `Location`.
pub(crate) fn public_base(app: &AppState, headers: &HeaderMap) -> ApiResult<String> {
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
            crate::ops::retention::note_download(app, record);
            let counted = stream.inspect(|chunk| {
                if let Ok(bytes) = chunk {
                    metrics::counter!("depot_downloaded_bytes_total").increment(bytes.len() as u64);
                }
            });
            Ok(build(status, headers, Body::from_stream(counted)))
        }
    }
}

/// `GET|HEAD /product/download/{product}/{version}`: the version's primary file.
pub async fn download(
    State(app): State<AppState>,
    caller: Caller,
    method: Method,
    headers: HeaderMap,
    ApiPath((product, version)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<DownloadQuery>,
) -> ApiResult<Response> {
    download_one(
        &app,
        &caller,
        &method,
        &headers,
        (&product, &version, None),
        &query,
    )
    .await
}

/// `GET|HEAD /product/download/{product}/{version}/{file}`: one file, or the generated
/// `SHA256SUMS` of every file.
pub async fn download_file(
    State(app): State<AppState>,
    caller: Caller,
    method: Method,
    headers: HeaderMap,
    ApiPath((product, version, file)): ApiPath<(String, String, String)>,
    ApiQuery(query): ApiQuery<DownloadQuery>,
) -> ApiResult<Response> {
    if file == CHECKSUMS_FILE {
        let record = downloadable(&app, &caller, &product, &version, &query).await?;
        let files = record.all_files();
        let body = checksums_file(files.iter().map(|f| (f.name.as_str(), f.checksum.as_str())));
        let mut resp = Response::new(if method == Method::HEAD {
            Body::empty()
        } else {
            Body::from(body.clone())
        });
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        served_headers(&mut resp, &record, Some(CHECKSUMS_FILE));
        return Ok(resp);
    }
    check_file_name(&file)?;
    let target = (product.as_str(), version.as_str(), Some(file.as_str()));
    download_one(&app, &caller, &method, &headers, target, &query).await
}

async fn download_one(
    app: &AppState,
    caller: &Caller,
    method: &Method,
    headers: &HeaderMap,
    (product, version, file): (&str, &str, Option<&str>),
    query: &DownloadQuery,
) -> ApiResult<Response> {
    let record = downloadable(app, caller, product, version, query).await?;
    let record = served_file(record, file)?;
    let redirect = query
        .redirect
        .unwrap_or(app.settings.download_mode == DownloadMode::Redirect);
    let mut resp = if redirect {
        let (url, _) = direct_url(app, caller, headers, &record, file).await?;
        let mut resp = build(StatusCode::FOUND, HeaderMap::new(), Body::empty());
        resp.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(&url).map_err(ApiError::internal)?,
        );
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    } else {
        serve(app, method, headers, &record).await?
    };
    served_headers(&mut resp, &record, file);
    Ok(resp)
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
    signed_one(&app, &method, &headers, (&product, &version, None), &query).await
}

/// `GET /signed/{product}/{version}/{file}`: one file of a version, as above.
pub async fn signed_file_download(
    State(app): State<AppState>,
    method: Method,
    headers: HeaderMap,
    ApiPath((product, version, file)): ApiPath<(String, String, String)>,
    ApiQuery(query): ApiQuery<SignedQuery>,
) -> ApiResult<Response> {
    signed_one(
        &app,
        &method,
        &headers,
        (&product, &version, Some(&file)),
        &query,
    )
    .await
}

async fn signed_one(
    app: &AppState,
    method: &Method,
    headers: &HeaderMap,
    (product, version, file): (&str, &str, Option<&str>),
    query: &SignedQuery,
) -> ApiResult<Response> {
    let invalid = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_signature",
            "the download link is invalid or has expired",
        )
    };
    let record = if validate_product(product).is_ok()
        && validate_version(version).is_ok()
        && file.is_none_or(|f| check_file_name(f).is_ok())
    {
        app.meta
            .version(product, version)
            .await?
            .and_then(|r| served_file(r, file).ok())
    } else {
        None
    };
    // The MAC is checked whether or not the version exists (constant time either way).
    let valid = app.signer.verify(
        &SignedTarget {
            product,
            version,
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
    let sees_drafts = token.admin || grant.is_some_and(|g| g.upload || g.maintainer);
    if record.state != VersionState::Committed && !sees_drafts {
        return Err(invalid());
    }
    let mut resp = serve(app, method, headers, &record).await?;
    served_headers(&mut resp, &record, file);
    Ok(resp)
}

/// `GET /product/presign/{product}/{version}`: a URL for consumers that fetch later.
pub async fn presign(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((product, version)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<DownloadQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    presign_one(&app, &caller, &headers, (&product, &version, None), &query).await
}

/// `GET /product/presign/{product}/{version}/{file}`: the same for one file.
pub async fn presign_file(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((product, version, file)): ApiPath<(String, String, String)>,
    ApiQuery(query): ApiQuery<DownloadQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    check_file_name(&file)?;
    presign_one(
        &app,
        &caller,
        &headers,
        (&product, &version, Some(&file)),
        &query,
    )
    .await
}

async fn presign_one(
    app: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    (product, version, file): (&str, &str, Option<&str>),
    query: &DownloadQuery,
) -> ApiResult<Json<serde_json::Value>> {
    let record = downloadable(app, caller, product, version, query).await?;
    let record = served_file(record, file)?;
    let (url, expires) = direct_url(app, caller, headers, &record, file).await?;
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
    if let Some(draft) = app.meta.version(product, version).await?
        && draft.state == VersionState::Draft
        && !caller.sees_drafts(product)
    {
        return Err(version_missing(app, product, version).await);
    }
    if crate::ops::versions::delete(app, &ctx, product, version, None, None)
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
    /// `key=value`: only versions carrying this label.
    label: Option<String>,
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
    let label = query.label.as_deref().map(parse_label_filter).transpose()?;
    if app.meta.product(&product).await?.is_none() {
        return Err(ApiError::product_not_found(&product));
    }
    // One more than asked tells whether another page follows.
    let mut versions = app
        .meta
        .versions_page(
            &product,
            after.as_deref(),
            limit + 1,
            caller.sees_drafts(&product),
            label.as_ref(),
        )
        .await?;
    let mut more = versions.len() > limit;
    versions.truncate(limit);
    // A page holds every file of its versions: at most MAX_LISTED_FILES of them (but
    // always one version), the rest on the next page.
    let mut files = 0;
    if let Some(cut) = versions.iter().position(|v| {
        files += v.all_files().len();
        files > MAX_LISTED_FILES
    }) {
        more = true;
        versions.truncate(cut.max(1));
    }
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

/// Most files described in one page of the version listing (each version lists all of
/// its files, up to `MAX_FILES`).
const MAX_LISTED_FILES: usize = 10_000;

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
