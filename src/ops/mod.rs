//! The service layer: every change to the stores goes through a function here. Handlers
//! parse and authorize, call one function, and map its result; the janitor, start-up and
//! the CLI call the same functions with a system actor.
//!
//! A change takes a [`Ctx`] (who acts, for which request) and hands the store the events
//! that describe it, to be stored in the same transaction; it returns them in
//! [`Changed`]. There is no way to make a change without its events.

use crate::auth::Caller;
use crate::domain::events::{Actor, Event, EventType, SystemActor, event_id};
use serde_json::Value;
use std::sync::Mutex;

pub mod grants;
pub mod products;
pub mod tokens;
pub mod versions;
pub mod webhooks;

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

    #[test]
    fn event_ids_made_in_a_row_are_strictly_increasing() {
        let ids: Vec<String> = (0..1000).map(|_| next_event_id().1).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
        }
    }
}
