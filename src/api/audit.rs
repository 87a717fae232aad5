//! `GET /audit`: the events every change left, newest first, as JSON pages or as an
//! NDJSON export.

use super::ApiQuery;
use crate::app::AppState;
use crate::auth::Caller;
use crate::domain::events::{Event, EventFilter, EventType, is_event_id};
use crate::domain::names::validate_product;
use crate::domain::permissions::ProductOp;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;
/// Events per store read while an NDJSON export streams.
const EXPORT_PAGE: usize = 500;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    product: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    actor: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    format: Option<String>,
}

#[derive(Serialize)]
struct AuditPage {
    events: Vec<Event>,
    next_cursor: Option<String>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_query", message)
}

fn instant(name: &str, value: &str) -> ApiResult<i64> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|_| invalid(format!("{name} must be an RFC 3339 date-time")))
}

/// Turns the query into a filter, checking every value's shape.
fn filter_of(query: &AuditQuery) -> ApiResult<EventFilter> {
    if let Some(product) = &query.product {
        validate_product(product)?;
    }
    let kind = match &query.kind {
        None => None,
        Some(t) => Some(EventType::parse(t).ok_or_else(|| {
            let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            invalid(format!(
                "unknown event type; known types: {}",
                known.join(", ")
            ))
        })?),
    };
    if let Some(actor) = &query.actor
        && !(crate::auth::looks_like_token_id(actor)
            || [
                "system:janitor",
                "system:retention",
                "system:bootstrap",
                "system:cli",
                "system:oidc",
            ]
            .contains(&actor.as_str()))
    {
        return Err(invalid(
            "actor must be a token id (tok_...) or system:janitor, system:retention, system:bootstrap, system:cli, system:oidc",
        ));
    }
    let before_id = match &query.cursor {
        Some(c) if is_event_id(c) => Some(c.clone()),
        Some(_) => return Err(invalid("cursor is not one this API returned")),
        None => None,
    };
    Ok(EventFilter {
        product: query.product.clone(),
        kind,
        actor: query.actor.clone(),
        since_ms: query
            .since
            .as_deref()
            .map(|s| instant("since", s))
            .transpose()?,
        until_ms: query
            .until
            .as_deref()
            .map(|u| instant("until", u))
            .transpose()?,
        before_id,
    })
}

/// Admin: every event. A maintainer: one product's, asked for with `product=`. Everyone
/// else: 403 (404 for a product the caller has no grant on, as elsewhere).
fn authorize(caller: &Caller, filter: &EventFilter) -> ApiResult<()> {
    if caller.is_admin() {
        return Ok(());
    }
    match &filter.product {
        Some(product) => caller.authorize(product, ProductOp::ReadAudit),
        None => Err(ApiError::forbidden(
            "only admins may read the whole audit log; a product's maintainer may read its events with ?product=<name>",
        )),
    }
}

pub async fn audit(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Response> {
    let filter = filter_of(&query)?;
    authorize(&caller, &filter)?;
    let ndjson = match query.format.as_deref() {
        None | Some("json") => false,
        Some("ndjson") => true,
        Some(_) => return Err(invalid("format must be json or ndjson")),
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(invalid(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    if ndjson {
        // The export: every matching event (or `limit` when given), a page at a time.
        let cap = query.limit;
        return Ok(export(app, filter, cap).into_response());
    }
    let page = app.meta.events_page(&filter, limit).await?;
    Ok(Json(AuditPage {
        events: page.events,
        next_cursor: page.next_before,
    })
    .into_response())
}

/// Streams events as NDJSON, reading the store a page at a time: memory stays bounded
/// whatever the history's length. A store error ends the stream (the client sees a
/// truncated body, never a half line).
fn export(app: AppState, filter: EventFilter, cap: Option<usize>) -> Response {
    let stream = futures::stream::unfold((Some(filter), 0usize), move |(filter, sent)| {
        let app = app.clone();
        async move {
            let mut filter = filter?;
            let want = match cap {
                Some(cap) if sent >= cap => return None,
                Some(cap) => (cap - sent).min(EXPORT_PAGE),
                None => EXPORT_PAGE,
            };
            match app.meta.events_page(&filter, want).await {
                Ok(page) => {
                    let mut chunk = Vec::new();
                    for event in &page.events {
                        if serde_json::to_writer(&mut chunk, event).is_ok() {
                            chunk.push(b'\n');
                        }
                    }
                    let sent = sent + page.events.len();
                    let next = page.next_before.map(|before| {
                        filter.before_id = Some(before);
                        filter
                    });
                    Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), (next, sent)))
                }
                Err(err) => {
                    tracing::warn!(error = %err, "audit export stopped: store error");
                    Some((Err(std::io::Error::other("store error")), (None, sent)))
                }
            }
        }
    });
    (
        [(http::header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_checked_before_any_store_read() {
        let q = |kind: Option<&str>, cursor: Option<&str>, since: Option<&str>| AuditQuery {
            kind: kind.map(str::to_string),
            cursor: cursor.map(str::to_string),
            since: since.map(str::to_string),
            ..AuditQuery::default()
        };
        assert!(filter_of(&q(Some("version.published"), None, None)).is_ok());
        assert!(filter_of(&q(Some("version.nope"), None, None)).is_err());
        assert!(filter_of(&q(None, Some("tok_0123456789abcdef"), None)).is_err());
        assert!(filter_of(&q(None, None, Some("yesterday"))).is_err());
        let f = filter_of(&q(None, None, Some("2026-01-01T00:00:00Z"))).unwrap();
        assert_eq!(f.since_ms, Some(1_767_225_600_000));
    }
}
