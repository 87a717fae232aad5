//! Building download responses: one place for Content-Length, Range, ETag, digest
//! headers, 304 and HEAD, whatever store the bytes come from.

use crate::blob::ByteRange;
pub use crate::domain::names::content_disposition;
use crate::error::{ApiError, ApiResult};
use crate::meta::VersionRecord;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine;

#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No Range header, or one we answer with the whole body (multiple ranges).
    Full,
    Partial(ByteRange),
    Unsatisfiable,
}

/// Parses a single `bytes=` range against a body of `size` bytes (RFC 9110 §14.1.2).
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        // Suffix range: the last N bytes.
        match last.parse::<u64>() {
            Ok(0) | Err(_) => return RangeRequest::Unsatisfiable,
            Ok(_) if size == 0 => return RangeRequest::Unsatisfiable,
            Ok(n) => ByteRange {
                start: size.saturating_sub(n),
                end: size - 1,
            },
        }
    } else {
        let Ok(start) = first.parse::<u64>() else {
            return RangeRequest::Full;
        };
        if start >= size {
            return RangeRequest::Unsatisfiable;
        }
        let end = if last.is_empty() {
            size - 1
        } else {
            match last.parse::<u64>() {
                Ok(end) if end >= start => end.min(size - 1),
                _ => return RangeRequest::Full,
            }
        };
        ByteRange { start, end }
    };
    RangeRequest::Partial(range)
}

pub fn etag(record: &VersionRecord) -> String {
    format!("\"sha256-{}\"", record.checksum)
}

fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.trim() == "*"
        || if_none_match
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == etag)
}

/// Headers every download answer carries (also on 304 and HEAD).
fn common_headers(record: &VersionRecord) -> ApiResult<HeaderMap> {
    let mut h = HeaderMap::new();
    let digest = hex::decode(&record.checksum).map_err(ApiError::internal)?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
    let value = |s: String| HeaderValue::from_str(&s).map_err(ApiError::internal);
    h.insert(header::ETAG, value(etag(record))?);
    h.insert("x-checksum-sha256", value(record.checksum.clone())?);
    h.insert("repr-digest", value(format!("sha-256=:{b64}:"))?);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Published versions are immutable: caches may keep them (private: auth is checked
    // each time). A draft's file may be removed and uploaded again under its name.
    let cache = if record.state == crate::meta::VersionState::Draft {
        "private, no-cache"
    } else {
        "private, max-age=31536000, immutable"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    Ok(h)
}

/// What the handler must do after looking at the request's conditional/range headers.
pub enum Plan {
    /// Respond now (304, 416, HEAD).
    Done(Response),
    /// Stream this range (or all) with these headers and status.
    Stream {
        status: StatusCode,
        headers: HeaderMap,
        range: Option<ByteRange>,
    },
}

pub fn plan(method: &Method, req_headers: &HeaderMap, record: &VersionRecord) -> ApiResult<Plan> {
    let mut headers = common_headers(record)?;
    if let Some(inm) = req_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && etag_matches(inm, &etag(record))
    {
        return Ok(Plan::Done(build(
            StatusCode::NOT_MODIFIED,
            headers,
            Body::empty(),
        )));
    }
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&content_disposition(&record.file_name))
            .map_err(ApiError::internal)?,
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    // If-Range: only honour Range when the validator still matches.
    let range_header = req_headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let if_range_ok = req_headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == etag(record));
    let range = if if_range_ok {
        parse_range(range_header, record.size)
    } else {
        RangeRequest::Full
    };
    let (status, range) = match range {
        RangeRequest::Full => (StatusCode::OK, None),
        RangeRequest::Partial(r) => {
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {}-{}/{}", r.start, r.end, record.size))
                    .map_err(ApiError::internal)?,
            );
            (StatusCode::PARTIAL_CONTENT, Some(r))
        }
        RangeRequest::Unsatisfiable => {
            let mut err = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the artifact has {} bytes", record.size),
            )
            .with_artifact_headers(headers);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", record.size)) {
                err.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(Plan::Done(err));
        }
    };
    let length = range.map_or(record.size, |r| r.len());
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if method == Method::HEAD {
        return Ok(Plan::Done(build(status, headers, Body::empty())));
    }
    Ok(Plan::Stream {
        status,
        headers,
        range,
    })
}

pub fn build(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_single_range_forms() {
        let r = |s: u64, e: u64| RangeRequest::Partial(ByteRange { start: s, end: e });
        assert_eq!(parse_range(Some("bytes=0-9"), 100), r(0, 9));
        assert_eq!(parse_range(Some("bytes=90-"), 100), r(90, 99));
        assert_eq!(parse_range(Some("bytes=-10"), 100), r(90, 99));
        assert_eq!(parse_range(Some("bytes=-500"), 100), r(0, 99));
        assert_eq!(parse_range(Some("bytes=50-500"), 100), r(50, 99));
        assert_eq!(
            parse_range(Some("bytes=100-"), 100),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=-0"), 100),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), RangeRequest::Full);
        assert_eq!(parse_range(Some("items=0-1"), 100), RangeRequest::Full);
        assert_eq!(parse_range(None, 100), RangeRequest::Full);
        assert_eq!(
            parse_range(Some("bytes=0-"), 0),
            RangeRequest::Unsatisfiable
        );
    }

    #[test]
    fn etag_comparison_accepts_lists_and_star() {
        assert!(etag_matches("\"a\", \"b\"", "\"b\""));
        assert!(etag_matches("*", "\"b\""));
        assert!(etag_matches("W/\"b\"", "\"b\""));
        assert!(!etag_matches("\"c\"", "\"b\""));
    }

    #[test]
    fn content_disposition_quotes_and_encodes() {
        assert_eq!(
            content_disposition("app v1.tar.gz"),
            "attachment; filename=\"app v1.tar.gz\"; filename*=UTF-8''app%20v1.tar.gz"
        );
        assert!(content_disposition("é.bin").starts_with("attachment; filename=\"_.bin\""));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn partial_within(parsed: &RangeRequest, size: u64) -> bool {
            match parsed {
                RangeRequest::Partial(r) => r.start <= r.end && r.end < size,
                _ => true,
            }
        }

        proptest! {
            #[test]
            fn any_header_parses_without_panic_to_a_range_inside_the_body(
                header in any::<String>(),
                size in any::<u64>(),
            ) {
                let parsed = parse_range(Some(&header), size);
                prop_assert!(partial_within(&parsed, size), "{parsed:?}");
            }

            #[test]
            fn range_like_headers_parse_without_panic_to_a_range_inside_the_body(
                header in "bytes=[ ]?[0-9]{0,21}[ ]?-?[ ]?[0-9]{0,21}(,[0-9]{0,3}-[0-9]{0,3})?",
                size in prop_oneof![0..3u64, any::<u64>()],
            ) {
                let parsed = parse_range(Some(&header), size);
                prop_assert!(partial_within(&parsed, size), "{parsed:?}");
            }

            #[test]
            fn a_satisfiable_first_last_range_round_trips(
                size in 1..u64::MAX,
                a in any::<u64>(),
                b in any::<u64>(),
            ) {
                let start = a % size;
                let end = start.saturating_add(b % (size - start).max(1));
                let parsed = parse_range(Some(&format!("bytes={start}-{end}")), size);
                let expected = ByteRange { start, end: end.min(size - 1) };
                prop_assert_eq!(parsed, RangeRequest::Partial(expected));
                let open = parse_range(Some(&format!("bytes={start}-")), size);
                prop_assert_eq!(open, RangeRequest::Partial(ByteRange { start, end: size - 1 }));
            }

            #[test]
            fn a_suffix_range_is_the_last_n_bytes(size in 1..u64::MAX, n in 1..u64::MAX) {
                let parsed = parse_range(Some(&format!("bytes=-{n}")), size);
                let expected = ByteRange { start: size.saturating_sub(n), end: size - 1 };
                prop_assert_eq!(parsed, RangeRequest::Partial(expected));
            }

            #[test]
            fn a_start_at_or_past_the_end_is_unsatisfiable(size in 0..u64::MAX, past in 0..1000u64) {
                let start = size.saturating_add(past);
                let parsed = parse_range(Some(&format!("bytes={start}-")), size);
                prop_assert_eq!(parsed, RangeRequest::Unsatisfiable);
            }
        }
    }
}
