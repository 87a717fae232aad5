//! Uploads past proxy limits and past the gateway: tus 1.0 at `/uploads` (creation,
//! creation-with-upload, termination, expiration, checksum), and direct-to-bucket uploads
//! (`/product/upload-url`, with `/direct/{id}` standing in for the bucket on the
//! filesystem store). The protocol work is in `ops::upload::{resumable, direct, session}`.

use crate::app::AppState;
use crate::auth::Caller;
use crate::dto::UploadResult;
use crate::error::{ApiError, ApiResult};
use crate::meta::{UploadKind, UploadSession};
use crate::ops::upload::resumable::{self, Patch, parse_chunk_checksum};
use crate::ops::upload::session::{self, NewUpload};
use crate::ops::upload::{direct, parse_expected_digest};
use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{ApiJson, ApiPath, ApiQuery};

pub const TUS_VERSION: &str = "1.0.0";
const TUS_EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration,checksum";
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// The longest `Upload-Metadata` header accepted, and its most keys.
const MAX_METADATA_BYTES: usize = 4096;
const MAX_METADATA_KEYS: usize = 16;

/// Every `/uploads` response carries `Tus-Resumable` (tus 1.0: all but `OPTIONS`, where
/// it does no harm), and is never cached.
pub async fn tus_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn tus_error(err: ApiError) -> Response {
    let version = err.status == StatusCode::PRECONDITION_FAILED;
    let mut response = err.into_response();
    if version {
        response
            .headers_mut()
            .insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    }
    response
}

fn require_tus(headers: &HeaderMap) -> ApiResult<()> {
    match headers.get("tus-resumable").map(HeaderValue::as_bytes) {
        Some(b"1.0.0") => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "unsupported_tus_version",
            "send Tus-Resumable: 1.0.0 (the only tus version this server speaks)",
        )),
    }
}

fn header_u64(headers: &HeaderMap, name: &str, code: &'static str) -> ApiResult<Option<u64>> {
    let Some(raw) = headers.get(name) else {
        return Ok(None);
    };
    if headers.get_all(name).iter().count() > 1 {
        return Err(ApiError::bad_request(
            code,
            format!("{name} must be sent once"),
        ));
    }
    raw.to_str()
        .ok()
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(code, format!("{name} must be a non-negative integer"))
        })
}

/// `Upload-Metadata`: `key base64,key base64,...` (a key may come without a value).
pub fn parse_metadata(raw: &str) -> ApiResult<Vec<(String, String)>> {
    let invalid =
        |why: &str| ApiError::bad_request("invalid_metadata", format!("Upload-Metadata: {why}"));
    if raw.len() > MAX_METADATA_BYTES {
        return Err(invalid("too long"));
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    for item in raw.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (key, value) = item.split_once(' ').unwrap_or((item, ""));
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("keys are printable ASCII without spaces or commas"));
        }
        let value = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| invalid("values are base64"))?;
        let value = String::from_utf8(value).map_err(|_| invalid("values are UTF-8 text"))?;
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(invalid(&format!("key '{key}' given twice")));
        }
        pairs.push((key.to_string(), value));
        if pairs.len() > MAX_METADATA_KEYS {
            return Err(invalid("too many keys"));
        }
    }
    Ok(pairs)
}

fn encode_metadata(session: &UploadSession) -> String {
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let mut items = vec![
        format!("product {}", b64(&session.product)),
        format!("version {}", b64(&session.version)),
        format!("filename {}", b64(&session.file_name)),
        format!(
            "draft {}",
            b64(if session.draft { "true" } else { "false" })
        ),
    ];
    if let Some(c) = &session.checksum {
        items.push(format!("checksum {}", b64(&format!("sha256:{c}"))));
    }
    items.join(",")
}

fn parse_draft(value: Option<&str>) -> ApiResult<bool> {
    match value {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::bad_request(
            "invalid_metadata",
            "Upload-Metadata: draft is 'true' or 'false'",
        )),
    }
}

/// An HTTP date (tus `Upload-Expires`).
fn http_date(ms: i64) -> HeaderValue {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    HeaderValue::from_str(&httpdate::fmt_http_date(time))
        .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

fn number(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}

/// `OPTIONS /uploads`: what this tus server supports.
pub async fn options(State(app): State<AppState>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    discovery_headers(response.headers_mut(), app.settings.max_upload_bytes);
    response
}

/// The headers of tus discovery (`OPTIONS /uploads`); also added to a CORS preflight's
/// answer there, which the CORS layer gives before the route is reached.
pub fn discovery_headers(h: &mut HeaderMap, max_upload_bytes: u64) {
    h.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    h.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    h.insert("tus-extension", HeaderValue::from_static(TUS_EXTENSIONS));
    h.insert("tus-max-size", number(max_upload_bytes));
    h.insert(
        "tus-checksum-algorithm",
        HeaderValue::from_static("sha1,sha256"),
    );
}

fn is_offset_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(OFFSET_OCTET_STREAM))
}

fn patch_of(headers: &HeaderMap) -> ApiResult<Patch> {
    let offset = header_u64(headers, "upload-offset", "invalid_upload_offset")?;
    let checksum = headers
        .get("upload-checksum")
        .map(|v| {
            v.to_str()
                .map_err(|_| {
                    ApiError::bad_request("invalid_checksum", "Upload-Checksum is not ASCII")
                })
                .and_then(parse_chunk_checksum)
        })
        .transpose()?;
    Ok(Patch {
        offset: offset.unwrap_or(0),
        checksum,
    })
}

/// `POST /uploads`: creates an upload after every check; with a body
/// (creation-with-upload), stores its first bytes too.
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match create_inner(&app, &caller, &headers, body).await {
        Ok(response) => response,
        Err(err) => tus_error(err),
    }
}

async fn create_inner(
    app: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require_tus(headers)?;
    if headers.contains_key("upload-defer-length") {
        return Err(ApiError::bad_request(
            "invalid_upload_length",
            "Upload-Defer-Length is not supported: send Upload-Length",
        ));
    }
    if headers.contains_key("upload-concat") {
        return Err(ApiError::bad_request(
            "unsupported_extension",
            "the concatenation extension is not supported",
        ));
    }
    let length =
        header_u64(headers, "upload-length", "invalid_upload_length")?.ok_or_else(|| {
            ApiError::bad_request("invalid_upload_length", "Upload-Length is required")
        })?;
    let metadata = match headers.get("upload-metadata") {
        Some(raw) => parse_metadata(raw.to_str().map_err(|_| {
            ApiError::bad_request("invalid_metadata", "Upload-Metadata is not ASCII")
        })?)?,
        None => Vec::new(),
    };
    let get = |key: &str| {
        metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let required = |key: &str| {
        get(key)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "missing_metadata",
                    format!(
                        "Upload-Metadata needs '{key}' (product, version and filename are required)"
                    ),
                )
            })
    };
    let new = NewUpload {
        kind: UploadKind::Resumable,
        product: required("product")?,
        version: required("version")?,
        file_name: required("filename")?,
        length,
        checksum: get("checksum").map(parse_expected_digest).transpose()?,
        draft: parse_draft(get("draft"))?,
    };
    let first_bytes = is_offset_stream(headers);
    let patch = if first_bytes {
        Some(patch_of(headers)?)
    } else {
        None
    };
    let created = session::open(app, caller, new, app.settings.resumable_ttl_seconds).await?;
    let mut current = created.clone();
    if let Some(patch) = patch {
        let patch = Patch { offset: 0, ..patch };
        match resumable::patch(app, caller, &created.id, patch, body).await {
            Ok(patched) => current = patched.session,
            Err(err) => {
                // No Location reached the client: nothing of the upload may linger.
                if let Ok(Some(now)) = app.meta.upload_session(&created.id).await
                    && !now.completed
                {
                    session::end_in_background(app, &now);
                }
                return Err(err);
            }
        }
    }
    let mut response = StatusCode::CREATED.into_response();
    let h = response.headers_mut();
    let location = format!("/uploads/{}", created.id);
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(ApiError::internal)?,
    );
    h.insert("upload-expires", http_date(current.expires_at));
    h.insert("upload-offset", number(current.offset));
    Ok(response)
}

/// `HEAD /uploads/{id}`: where the upload stands.
pub async fn head(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Response {
    let found = async {
        require_tus(&headers)?;
        session::find(&app, &caller, &id)
            .await
            .and_then(|s| match s.kind {
                UploadKind::Resumable => Ok(s),
                UploadKind::Direct => Err(session::not_found()),
            })
    };
    match found.await {
        Ok(session) => {
            let mut response = StatusCode::OK.into_response();
            let h = response.headers_mut();
            h.insert("upload-offset", number(session.offset));
            h.insert("upload-length", number(session.length));
            h.insert("upload-expires", http_date(session.expires_at));
            if let Ok(meta) = HeaderValue::from_str(&encode_metadata(&session)) {
                h.insert("upload-metadata", meta);
            }
            response
        }
        // A HEAD answer has no body; the status says it.
        Err(err) => tus_error(err),
    }
}

/// `PATCH /uploads/{id}`: appends the body at `Upload-Offset`.
pub async fn patch(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    body: Body,
) -> Response {
    let _transfer = app.shutdown.transfers.token();
    let patched = async {
        require_tus(&headers)?;
        if !is_offset_stream(&headers) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "a PATCH body must be sent as Content-Type: application/offset+octet-stream",
            ));
        }
        if !headers.contains_key("upload-offset") {
            return Err(ApiError::bad_request(
                "invalid_upload_offset",
                "Upload-Offset is required",
            ));
        }
        let patch = patch_of(&headers)?;
        resumable::patch(&app, &caller, &id, patch, body).await
    };
    let outcome = tokio::select! {
        outcome = patched => outcome,
        _ = app.shutdown.abort.cancelled() => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down; what was stored is kept, resume from HEAD's Upload-Offset",
        )),
    };
    match outcome {
        Ok(patched) => {
            if let Some(result) = &patched.committed {
                metrics::counter!("depot_uploaded_bytes_total").increment(result.size);
                metrics::counter!("depot_uploads_total").increment(1);
            }
            let mut response = StatusCode::NO_CONTENT.into_response();
            let h = response.headers_mut();
            h.insert("upload-offset", number(patched.session.offset));
            h.insert("upload-expires", http_date(patched.session.expires_at));
            response
        }
        Err(err) => {
            metrics::counter!("depot_upload_failures_total", "reason" => err.code).increment(1);
            tus_error(err)
        }
    }
}

/// `DELETE /uploads/{id}`: terminates an unfinished upload, removing all it stored.
pub async fn terminate(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Response {
    let done = async {
        require_tus(&headers)?;
        let found = session::find(&app, &caller, &id).await?;
        if found.kind != UploadKind::Resumable {
            return Err(session::not_found());
        }
        if found.completed {
            // Its file is committed: only the record of the upload goes.
            return session::forget_completed(&app, &found).await;
        }
        session::SessionLock::holding(&app, &id, async {
            let found = session::find(&app, &caller, &id).await?;
            session::end(&app, &found).await
        })
        .await
    };
    match done.await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => tus_error(err),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    product: Option<String>,
    version: Option<String>,
}

/// One unfinished upload in `GET /uploads`.
#[derive(Debug, Serialize)]
pub struct ListedUpload {
    id: String,
    location: String,
    product: String,
    version: String,
    filename: String,
    length: u64,
    offset: u64,
    draft: bool,
    checksum: Option<String>,
    created_at: String,
    expires_at: String,
}

#[derive(Debug, Serialize)]
pub struct UploadList {
    uploads: Vec<ListedUpload>,
}

/// `GET /uploads`: the caller's unfinished tus uploads (every one, for an admin), so a
/// client can resume one it lost track of.
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<UploadList>> {
    let by = (!caller.is_admin()).then_some(caller.token.id.as_str());
    let now = crate::meta::now_ms();
    let uploads = app
        .meta
        .upload_sessions(by, usize::MAX)
        .await?
        .into_iter()
        .filter(|s| s.kind == UploadKind::Resumable && !s.completed && s.expires_at >= now)
        .filter(|s| query.product.as_ref().is_none_or(|p| *p == s.product))
        .filter(|s| query.version.as_ref().is_none_or(|v| *v == s.version))
        .take(session::MAX_OPEN_PER_TOKEN)
        .map(|s| ListedUpload {
            location: format!("/uploads/{}", s.id),
            id: s.id,
            product: s.product,
            version: s.version,
            filename: s.file_name,
            length: s.length,
            offset: s.offset,
            draft: s.draft,
            checksum: s.checksum.map(|c| format!("sha256:{c}")),
            created_at: super::rfc3339(s.created_at),
            expires_at: super::rfc3339(s.expires_at),
        })
        .collect();
    Ok(Json(UploadList { uploads }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadUrlRequest {
    product: String,
    version: String,
    file: String,
    size: u64,
    /// Required; optional here so that its absence is `invalid_checksum`.
    checksum: Option<String>,
    #[serde(default)]
    draft: bool,
}

#[derive(Debug, Serialize)]
pub struct UploadUrlResponse {
    upload_id: String,
    method: &'static str,
    url: String,
    headers: std::collections::BTreeMap<String, String>,
    expires_at: String,
}

/// `POST /product/upload-url`: a URL to `PUT` one file to, after every check.
pub async fn upload_url(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<UploadUrlRequest>,
) -> ApiResult<(StatusCode, Json<UploadUrlResponse>)> {
    let checksum = request.checksum.as_deref().ok_or_else(|| {
        ApiError::bad_request(
            "invalid_checksum",
            "a direct upload needs the file's checksum (sha256:<hex>)",
        )
    })?;
    let checksum = parse_expected_digest(checksum)?;
    let new = NewUpload {
        kind: UploadKind::Direct,
        product: request.product,
        version: request.version,
        file_name: request.file,
        length: request.size,
        checksum: Some(checksum),
        draft: request.draft,
    };
    // Depot's own URL needs its public base: checked before anything is stored.
    let base = super::artifacts::public_base(&app, &headers);
    let created = direct::create(&app, &caller, new).await?;
    let session = &created.session;
    let (url, headers) = match created.url {
        Some(url) => (url.url, url.headers.into_iter().collect()),
        None => {
            let base = match base {
                Ok(base) => base,
                Err(err) => {
                    session::end_in_background(&app, session);
                    return Err(err);
                }
            };
            let expires = session.expires_at / 1000;
            let signature = app.signer.sign(&direct::signed_target(session, expires));
            let url = format!(
                "{base}/direct/{}?expires={expires}&signature={signature}",
                session.id
            );
            let headers = [(
                "content-type".to_string(),
                "application/octet-stream".to_string(),
            )]
            .into_iter()
            .collect();
            (url, headers)
        }
    };
    Ok((
        StatusCode::CREATED,
        Json(UploadUrlResponse {
            upload_id: session.id.clone(),
            method: "PUT",
            url,
            headers,
            expires_at: super::rfc3339(session.expires_at),
        }),
    ))
}

/// `POST /product/upload-url/{upload_id}/complete`: verifies and commits the object.
pub async fn complete(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<UploadResult>)> {
    match direct::complete(&app, &caller, &id).await {
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

/// `DELETE /product/upload-url/{upload_id}`: gives up a direct upload not completed yet:
/// its object (if it was put), pending version and quota reservation go at once.
pub async fn cancel_direct(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    direct::cancel(&app, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct SignedPutQuery {
    expires: i64,
    signature: String,
}

#[derive(Debug, Serialize)]
pub struct Stored {
    upload_id: String,
    size: u64,
}

/// `PUT /direct/{upload_id}`: the filesystem store's stand-in for a presigned bucket URL.
pub async fn direct_put(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<SignedPutQuery>,
    body: Body,
) -> ApiResult<Json<Stored>> {
    let _transfer = app.shutdown.transfers.token();
    direct::receive(&app, &id, (query.expires, &query.signature), body).await?;
    let size = app
        .meta
        .upload_session(&id)
        .await?
        .map(|s| s.length)
        .unwrap_or(0);
    Ok(Json(Stored {
        upload_id: id,
        size,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_parses_tus_pairs_and_refuses_malformed_ones() {
        let parsed =
            parse_metadata("product ZGVtbw==,version djE=, flag,filename YS5iaW4=").expect("valid");
        assert_eq!(
            parsed,
            vec![
                ("product".into(), "demo".into()),
                ("version".into(), "v1".into()),
                ("flag".into(), String::new()),
                ("filename".into(), "a.bin".into()),
            ]
        );
        for bad in [
            "product !!!",
            "product ZGVtbw==,product ZGVtbw==",
            "pro\u{7f}duct ZGVtbw==",
            &"k ZGVtbw==,".repeat(600),
        ] {
            assert!(parse_metadata(bad).is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..20).map(|i| format!("k{i} eA==")).collect();
        assert!(parse_metadata(&many.join(",")).is_err());
    }
}
