//! Webhook delivery: a background task on every replica POSTs stored events to the
//! webhooks that want them, in event order per webhook, at least once.
//!
//! The events table is the outbox: each webhook has a cursor (the last event queued for
//! it), and a replica that holds the webhook's lease (in the store) queues the events after
//! the cursor as pending deliveries and sends the oldest pending one. One replica at a
//! time per webhook, so an event is delivered once however many replicas run; a replica
//! that dies mid-delivery leaves its lease to lapse and another takes over (the event may
//! then arrive twice: at least once). A failure is retried with exponential backoff (1 s,
//! doubling, at most 1 h) until 24 h after the first attempt, then marked `failed`, and
//! the next event goes. Nothing here runs on a request's path: a change never waits for
//! a webhook, and a slow receiver holds one connection and one event at a time.
//!
//! Targets are checked again at delivery: the URL's literal address, and every address
//! its host resolves to (through the client's resolver, so the checked address is the one
//! connected to), must be public unless `DEPOT_WEBHOOK_ALLOW_PRIVATE=true`. Redirects
//! are not followed.

use crate::app::AppState;
use crate::domain::events::Event;
use crate::domain::webhooks::{
    RETRY_WINDOW_MS, backoff_ms, check_ip, check_target, signature, wants,
};
use crate::meta::{DeliveryRecord, DeliveryState, WebhookRecord, now_ms};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// How often each replica looks for work.
const POLL: Duration = Duration::from_millis(500);
/// A delivery that takes longer has failed.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// A replica's hold on a webhook, renewed before every delivery (which takes at most
/// `DELIVERY_TIMEOUT`): a replica that died hands its webhooks over after this long.
const LEASE_MS: i64 = 20_000;
/// Webhooks delivered to at the same time by one replica.
const MAX_PARALLEL: usize = 16;
/// Events read from the store per queuing step.
const QUEUE_BATCH: usize = 100;
/// Deliveries one run makes before it yields to the next poll.
const RUN_BUDGET: usize = 50;
/// At most this much of a receiver's error body is kept (the rest is not read).
const MAX_ERROR_TEXT: usize = 200;

/// Resolves with the system resolver and drops addresses a webhook must not reach; fails
/// when none is left.
struct PublicOnly {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| check_ip(a.ip(), allow_private).is_ok())
                .collect();
            if allowed.is_empty() {
                let refused = addrs
                    .first()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_else(|| "no address".into());
                return Err(format!(
                    "{host} resolves to {refused}: a loopback, private, link-local or metadata address"
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client deliveries use: bounded time, no redirects, checked addresses.
pub fn client(allow_private: bool) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(DELIVERY_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(PublicOnly { allow_private })
        .user_agent(concat!("Depot-Webhook/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Starts the delivery loop of this replica.
pub fn spawn(app: AppState) -> anyhow::Result<()> {
    let allow_private = app.settings.webhook_allow_private;
    let client = client(allow_private)?;
    let owner = format!("replica-{}", hex::encode(rand::random::<[u8; 8]>()));
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let permits = Arc::new(Semaphore::new(MAX_PARALLEL));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(POLL).await;
            let hooks = match app.meta.list_webhooks().await {
                Ok(hooks) => hooks,
                Err(err) => {
                    tracing::warn!(error = %err, "webhook poll failed");
                    continue;
                }
            };
            for hook in hooks {
                if !running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(hook.id.clone())
                {
                    continue;
                }
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&hook.id);
                    break;
                };
                let (app, client, owner, running) =
                    (app.clone(), client.clone(), owner.clone(), running.clone());
                tokio::spawn(async move {
                    let id = hook.id.clone();
                    if let Err(err) = run(&app, &client, &owner, &id, allow_private).await {
                        tracing::warn!(webhook = %id, error = %err, "webhook delivery run failed");
                    }
                    running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                    drop(permit);
                });
            }
        }
    });
    Ok(())
}

/// Delivers what is due for one webhook, while this replica holds its lease.
async fn run(
    app: &AppState,
    client: &reqwest::Client,
    owner: &str,
    id: &str,
    allow_private: bool,
) -> anyhow::Result<()> {
    for _ in 0..RUN_BUDGET {
        let now = now_ms();
        if !app
            .meta
            .lease_webhook(id, owner, now, now + LEASE_MS)
            .await?
        {
            return Ok(());
        }
        let Some(hook) = app.meta.webhook(id).await? else {
            return Ok(());
        };
        let Some(mut delivery) = app.meta.next_delivery(id).await? else {
            if !queue_next(app, &hook, owner).await? {
                return Ok(());
            }
            continue;
        };
        if delivery.next_attempt_at > now {
            return Ok(());
        }
        match app.meta.event(&delivery.event_id).await? {
            Some(event) => attempt(client, &hook, &event, &mut delivery, allow_private).await,
            None => {
                delivery.state = DeliveryState::Failed;
                delivery.last_error =
                    Some("the event is no longer stored (audit retention)".into());
            }
        }
        if app.meta.save_delivery(&delivery).await.is_err() {
            return Ok(()); // the webhook was deleted meanwhile
        }
        if delivery.state == DeliveryState::Pending {
            return Ok(()); // in order: the next event waits for this one's retry
        }
    }
    Ok(())
}

/// Queues the events after the webhook's cursor that it wants; false when there are none.
async fn queue_next(app: &AppState, hook: &WebhookRecord, owner: &str) -> anyhow::Result<bool> {
    let events = app.meta.events_after(&hook.cursor, QUEUE_BATCH).await?;
    let Some(last) = events.last() else {
        return Ok(false);
    };
    let now = now_ms();
    let deliveries: Vec<DeliveryRecord> = events
        .iter()
        .filter(|e| wants(&hook.events, hook.product.as_deref(), e))
        .map(|e| DeliveryRecord {
            webhook_id: hook.id.clone(),
            event_id: e.id.clone(),
            event_type: e.kind.as_str().to_string(),
            state: DeliveryState::Pending,
            attempts: 0,
            last_status: None,
            last_error: None,
            first_attempt_at: None,
            last_attempt_at: None,
            next_attempt_at: now,
        })
        .collect();
    Ok(app
        .meta
        .queue_deliveries(&hook.id, owner, &deliveries, &last.id)
        .await?)
}

/// One POST of `event`; records the outcome in `delivery`.
async fn attempt(
    client: &reqwest::Client,
    hook: &WebhookRecord,
    event: &Event,
    delivery: &mut DeliveryRecord,
    allow_private: bool,
) {
    let now = now_ms();
    delivery.attempts += 1;
    delivery.last_attempt_at = Some(now);
    let first = *delivery.first_attempt_at.get_or_insert(now);
    let outcome = send(client, hook, event, allow_private).await;
    match outcome {
        Ok(status) if (200..300).contains(&status) => {
            delivery.state = DeliveryState::Delivered;
            delivery.last_status = Some(status);
            delivery.last_error = None;
        }
        other => {
            let (status, error) = match other {
                Ok(status) => (Some(status), format!("the receiver answered {status}")),
                Err(error) => (None, error),
            };
            delivery.last_status = status;
            delivery.last_error = Some(error);
            let next = now + backoff_ms(delivery.attempts);
            if next - first > RETRY_WINDOW_MS {
                delivery.state = DeliveryState::Failed;
            } else {
                delivery.next_attempt_at = next;
            }
        }
    }
}

/// POSTs the event; the receiver's status, or why there was none.
async fn send(
    client: &reqwest::Client,
    hook: &WebhookRecord,
    event: &Event,
    allow_private: bool,
) -> Result<u16, String> {
    // The target may have been stored before a stricter setting: check it again.
    check_target(&hook.url, allow_private).map_err(|e| e.to_string())?;
    let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
    let response = client
        .post(&hook.url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("X-Depot-Event", event.kind.as_str())
        .header("X-Depot-Delivery", &event.id)
        .header("X-Depot-Signature-256", signature(&hook.secret, &body))
        .body(body)
        .send()
        .await
        .map_err(|e| describe(&e))?;
    Ok(response.status().as_u16())
}

/// A delivery error for the deliveries listing: its cause chain, short, without the URL
/// (whose query may hold a receiver's key).
fn describe(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "timed out".to_string()
    } else if err.is_connect() {
        "could not connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(MAX_ERROR_TEXT).collect()
}
