//! The service layer: every change to the stores goes through a function here. Handlers
//! parse and authorize, call one function, and map its result; the janitor, start-up and
//! the CLI call the same functions with a system actor.
//!
//! A change takes a [`Ctx`] (who acts, for which request) and hands the store the events
//! that describe it, to be stored in the same transaction; it returns them in
//! [`Changed`]. There is no way to make a change without its events.
//!
//! Nothing outside `ops` (and the stores themselves) calls a store's writing methods; a
//! test below holds the rest of the source to that. Besides the changes by area (tokens,
//! products, grants, versions, webhooks) this holds the three that run on their own: the
//! upload (`upload/`: admission, reservation and its lease, streaming, commit), the janitor
//! and webhook delivery (`delivery`).

use crate::auth::Caller;
use crate::domain::events::{Actor, Event, EventType, SystemActor, event_id};
use serde_json::Value;
use std::sync::Mutex;

pub mod delivery;
pub mod grants;
pub mod janitor;
pub mod products;
pub mod quota;
pub mod retention;
pub mod tokens;
pub mod trust;
pub mod upload;
pub mod versions;
pub mod webhooks;

/// Waits for this process's turn at `key` (one holder at a time per key): writes that
/// would all meet in one MongoDB document take turns here instead of retrying on write
/// conflicts until some give up. Other replicas still conflict; the store retries those.
pub async fn take_turn(key: String) -> tokio::sync::OwnedMutexGuard<()> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, Weak};
    static LOCKS: Mutex<Option<HashMap<String, Weak<tokio::sync::Mutex<()>>>>> = Mutex::new(None);
    let lock = {
        let mut guard = LOCKS.lock().unwrap_or_else(|p| p.into_inner());
        let map = guard.get_or_insert_with(HashMap::new);
        match map.get(&key).and_then(Weak::upgrade) {
            Some(lock) => lock,
            None => {
                // Entries of keys nobody holds now are dropped as the map grows.
                if map.len() >= 1024 {
                    map.retain(|_, weak| weak.strong_count() > 0);
                }
                let lock = Arc::new(tokio::sync::Mutex::new(()));
                map.insert(key, Arc::downgrade(&lock));
                lock
            }
        }
    };
    lock.lock_owned().await
}

/// Who acts, and for which request.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub actor: Actor,
    pub request_id: Option<String>,
}

impl Ctx {
    pub fn of(caller: &Caller) -> Ctx {
        Ctx {
            actor: Actor::Token {
                token_id: caller.token.id.clone(),
                name: caller.token.name.clone(),
                admin: caller.token.admin,
            },
            request_id: caller.request_id.clone(),
        }
    }

    pub fn system(system: SystemActor) -> Ctx {
        Ctx {
            actor: Actor::System { system },
            request_id: None,
        }
    }

    /// A new event by this actor, stamped with a fresh id and the current time.
    pub fn event(
        &self,
        kind: EventType,
        product: Option<&str>,
        version: Option<&str>,
        details: Value,
    ) -> Event {
        let (ms, id) = next_event_id();
        Event {
            id,
            time: crate::domain::events::rfc3339_ms(ms),
            kind,
            actor: self.actor.clone(),
            product: product.map(str::to_string),
            version: version.map(str::to_string),
            request_id: self.request_id.clone(),
            details,
        }
    }
}

/// What a change produced, and the events stored with it.
#[derive(Debug)]
pub struct Changed<T> {
    pub value: T,
    pub events: Vec<Event>,
}

impl<T> Changed<T> {
    pub fn new(value: T, events: Vec<Event>) -> Self {
        Changed { value, events }
    }
}

/// Milliseconds never go backwards within this process, and the sequence number grows
/// within a millisecond from a random start (so two replicas do not collide).
fn next_event_id() -> (i64, String) {
    static LAST: Mutex<(i64, u64)> = Mutex::new((0, 0));
    let now = crate::meta::now_ms();
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let (ms, seq) = if now > last.0 {
        // Random start in the lower half leaves room to count up within the millisecond.
        (now, rand::random::<u64>() & 0x7fff_ffff_ffff)
    } else {
        (last.0, last.1 + 1)
    };
    *last = (ms, seq);
    (ms, event_id(ms, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `MetaStore` methods that write.
    const WRITES: &[&str] = &[
        "insert_token(",
        "delete_token(",
        "set_token_bootstrap(",
        "set_grant(",
        "remove_grant(",
        "create_product(",
        "delete_product(",
        "reserve_version(",
        "commit_version(",
        "add_draft_file(",
        "remove_draft_file(",
        "publish_draft(",
        "set_labels(",
        "remove_pending_version(",
        "delete_version(",
        "renew_lease(",
        "remove_lapsed_version(",
        "insert_webhook(",
        "delete_webhook(",
        "lease_webhook(",
        "queue_deliveries(",
        "save_delivery(",
        "prune_events(",
        "expire_version(",
        "set_product_settings(",
        "note_download(",
        "take_lease(",
        "release_lease(",
        "insert_upload_session(",
        "save_upload_session(",
        "delete_upload_session(",
        "reserve_quota(",
        "renew_quota_reservation(",
        "release_quota_reservation(",
        "prune_quota_reservations(",
        "insert_trust_policy(",
        "delete_trust_policy(",
        "use_token_once(",
        "prune_used_tokens(",
    ];

    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn nothing_outside_ops_and_the_stores_writes_to_the_metadata_store() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut offenders = Vec::new();
        for file in files {
            let rel = file
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .to_string();
            if rel.starts_with("ops/") || rel.starts_with("meta/") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                for write in WRITES {
                    if line.contains(&format!(".{write}")) {
                        offenders.push(format!("src/{rel}:{}: {}", n + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "store writes outside ops/: {offenders:#?}"
        );
    }

    #[test]
    fn event_ids_made_in_a_row_are_strictly_increasing() {
        let ids: Vec<String> = (0..1000).map(|_| next_event_id().1).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
        }
    }
}
