//! Events: the record every change leaves. Pure shapes and rules; ids and clocks are
//! supplied by the caller (`ops`), stores keep events with the change they describe.
//!
//! An event never holds a raw token, a token hash or a secret: tokens appear by their
//! public id only.

use crate::domain::permissions::Grant;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Prefix of event ids: `evt_` + 12 hex digits of Unix milliseconds + 12 hex digits that
/// order events of the same millisecond, so ids sort in time order.
pub const EVENT_ID_PREFIX: &str = "evt_";

/// The stable type strings clients filter and subscribe on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "token.created")]
    TokenCreated,
    #[serde(rename = "token.pruned")]
    TokenPruned,
    #[serde(rename = "product.created")]
    ProductCreated,
    #[serde(rename = "product.deleted")]
    ProductDeleted,
    #[serde(rename = "grant.set")]
    GrantSet,
    #[serde(rename = "grant.removed")]
    GrantRemoved,
    #[serde(rename = "version.published")]
    VersionPublished,
    #[serde(rename = "version.deleted")]
    VersionDeleted,
    /// The janitor removed what a dead upload left (its reservation, partial bytes).
    #[serde(rename = "upload.abandoned")]
    UploadAbandoned,
    #[serde(rename = "webhook.created")]
    WebhookCreated,
    #[serde(rename = "webhook.deleted")]
    WebhookDeleted,
    /// The first file of a new draft version arrived.
    #[serde(rename = "draft.created")]
    DraftCreated,
    /// A file was added to a draft.
    #[serde(rename = "file.uploaded")]
    FileUploaded,
    /// A file was removed from a draft.
    #[serde(rename = "file.deleted")]
    FileDeleted,
    /// A version's labels changed.
    #[serde(rename = "version.labeled")]
    VersionLabeled,
    /// A product's retention or quota settings changed (details: old and new).
    #[serde(rename = "settings.changed")]
    SettingsChanged,
    /// Retention deleted a published version (details: the reason).
    #[serde(rename = "version.expired")]
    VersionExpired,
    /// A trust policy for trusted publishing was added to a product.
    #[serde(rename = "trust.created")]
    TrustCreated,
    /// A trust policy was removed.
    #[serde(rename = "trust.deleted")]
    TrustDeleted,
    /// A CI job's OIDC token was exchanged for a short-lived Depot token (details: the
    /// identity's claims and the token's id, never the OIDC token itself).
    #[serde(rename = "token.exchanged")]
    TokenExchanged,
}

impl EventType {
    pub const ALL: &'static [EventType] = &[
        EventType::TokenCreated,
        EventType::TokenPruned,
        EventType::ProductCreated,
        EventType::ProductDeleted,
        EventType::GrantSet,
        EventType::GrantRemoved,
        EventType::VersionPublished,
        EventType::VersionDeleted,
        EventType::UploadAbandoned,
        EventType::WebhookCreated,
        EventType::WebhookDeleted,
        EventType::DraftCreated,
        EventType::FileUploaded,
        EventType::FileDeleted,
        EventType::VersionLabeled,
        EventType::SettingsChanged,
        EventType::VersionExpired,
        EventType::TrustCreated,
        EventType::TrustDeleted,
        EventType::TokenExchanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::TokenCreated => "token.created",
            EventType::TokenPruned => "token.pruned",
            EventType::ProductCreated => "product.created",
            EventType::ProductDeleted => "product.deleted",
            EventType::GrantSet => "grant.set",
            EventType::GrantRemoved => "grant.removed",
            EventType::VersionPublished => "version.published",
            EventType::VersionDeleted => "version.deleted",
            EventType::UploadAbandoned => "upload.abandoned",
            EventType::WebhookCreated => "webhook.created",
            EventType::WebhookDeleted => "webhook.deleted",
            EventType::DraftCreated => "draft.created",
            EventType::FileUploaded => "file.uploaded",
            EventType::FileDeleted => "file.deleted",
            EventType::VersionLabeled => "version.labeled",
            EventType::SettingsChanged => "settings.changed",
            EventType::VersionExpired => "version.expired",
            EventType::TrustCreated => "trust.created",
            EventType::TrustDeleted => "trust.deleted",
            EventType::TokenExchanged => "token.exchanged",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.iter().copied().find(|t| t.as_str() == s)
    }
}

/// Changes made by Depot itself, not by a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemActor {
    Janitor,
    Retention,
    Bootstrap,
    Cli,
    /// Trusted publishing: the exchange of a CI job's OIDC token.
    Oidc,
}

/// Who made a change: a token (by public id) or a part of Depot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Actor {
    Token {
        token_id: String,
        name: Option<String>,
        admin: bool,
    },
    System {
        system: SystemActor,
    },
}

impl Actor {
    /// The token id, or `system:<name>`: what `GET /audit?actor=` matches.
    pub fn key(&self) -> String {
        match self {
            Actor::Token { token_id, .. } => token_id.clone(),
            Actor::System { system } => format!(
                "system:{}",
                serde_json::to_value(system)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    /// RFC 3339, UTC, millisecond precision.
    pub time: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub actor: Actor,
    pub product: Option<String>,
    pub version: Option<String>,
    pub request_id: Option<String>,
    pub details: Value,
}

impl Event {
    /// Unix milliseconds of the event, read back from its id.
    pub fn time_ms(&self) -> i64 {
        id_time_ms(&self.id).unwrap_or(0)
    }
}

/// `evt_<ms><seq>` for Unix milliseconds `ms` and a per-millisecond tie-breaker `seq`
/// (random high bits, counter low bits: unique across replicas, ordered within one).
pub fn event_id(ms: i64, seq: u64) -> String {
    format!(
        "{EVENT_ID_PREFIX}{:012x}{:012x}",
        ms.max(0) as u64 & 0xffff_ffff_ffff,
        seq & 0xffff_ffff_ffff
    )
}

/// The milliseconds encoded in an event id, or `None` when it is not one.
pub fn id_time_ms(id: &str) -> Option<i64> {
    let hex = id.strip_prefix(EVENT_ID_PREFIX)?;
    if hex.len() != 24 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    i64::from_str_radix(&hex[..12], 16).ok()
}

/// True for a string of event-id shape (a cursor, a redelivery target).
pub fn is_event_id(s: &str) -> bool {
    id_time_ms(s).is_some()
        && s[EVENT_ID_PREFIX.len()..]
            .bytes()
            .all(|b| !b.is_ascii_uppercase())
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds: an event's `time`.
pub fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `details` of `token.created`: never the raw token or its hash.
pub fn token_created_details(
    token_id: &str,
    name: Option<&str>,
    admin: bool,
    parent: Option<&str>,
    expires_at: Option<&str>,
    grants: &[(String, Grant)],
) -> Value {
    let grants: BTreeMap<&str, &Grant> = grants.iter().map(|(p, g)| (p.as_str(), g)).collect();
    serde_json::json!({
        "token_id": token_id,
        "name": name,
        "admin": admin,
        "parent": parent,
        "expires_at": expires_at,
        "grants": grants,
    })
}

/// What `GET /audit` selects. All filters are optional and combine with AND.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    pub product: Option<String>,
    pub kind: Option<EventType>,
    /// [`Actor::key`]: a token id or `system:<name>`.
    pub actor: Option<String>,
    /// Inclusive lower bound, Unix milliseconds.
    pub since_ms: Option<i64>,
    /// Exclusive upper bound, Unix milliseconds.
    pub until_ms: Option<i64>,
    /// Only events with an id below this one (the previous page's last id).
    pub before_id: Option<String>,
}

impl EventFilter {
    pub fn matches(&self, e: &Event) -> bool {
        let ms = e.time_ms();
        self.product
            .as_ref()
            .is_none_or(|p| e.product.as_deref() == Some(p.as_str()))
            && self.kind.is_none_or(|k| e.kind == k)
            && self.actor.as_ref().is_none_or(|a| e.actor.key() == *a)
            && self.since_ms.is_none_or(|s| ms >= s)
            && self.until_ms.is_none_or(|u| ms < u)
            && self.before_id.as_ref().is_none_or(|b| e.id < *b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_sort_in_time_order_and_carry_their_time() {
        let a = event_id(1_700_000_000_000, 0xffff_ffff_ffff);
        let b = event_id(1_700_000_000_001, 0);
        assert!(a < b);
        assert_eq!(id_time_ms(&b), Some(1_700_000_000_001));
        assert!(is_event_id(&a));
        assert!(!is_event_id("evt_xyz"));
        assert!(!is_event_id("tok_0123456789abcdef"));
    }

    #[test]
    fn event_types_round_trip_through_their_stable_strings() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(*t));
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                Value::String(t.as_str().into())
            );
        }
        assert_eq!(EventType::parse("version.Published"), None);
    }

    #[test]
    fn actors_serialize_as_the_documented_shapes() {
        let token = Actor::Token {
            token_id: "tok_1".into(),
            name: None,
            admin: true,
        };
        assert_eq!(
            serde_json::to_value(&token).unwrap(),
            serde_json::json!({"token_id": "tok_1", "name": null, "admin": true})
        );
        let system = Actor::System {
            system: SystemActor::Janitor,
        };
        assert_eq!(
            serde_json::to_value(&system).unwrap(),
            serde_json::json!({"system": "janitor"})
        );
        assert_eq!(system.key(), "system:janitor");
        let back: Actor = serde_json::from_value(serde_json::json!({"system": "cli"})).unwrap();
        assert_eq!(back.key(), "system:cli");
    }
}
