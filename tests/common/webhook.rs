//! A webhook receiver for the tests: a real HTTP server on loopback that records every
//! request and answers with scripted statuses (then 200), as a deploy system would.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// What the receiver answered.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the delivery body is JSON")
    }

    /// Whether `X-Depot-Signature-256` is `sha256=<hex HMAC-SHA256(secret, body)>`.
    pub fn signed_with(&self, secret: &str) -> bool {
        let Some(hex_mac) = self
            .header("x-depot-signature-256")
            .strip_prefix("sha256=")
            .map(str::to_string)
        else {
            return false;
        };
        let Ok(given) = hex::decode(hex_mac) else {
            return false;
        };
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&self.body);
        mac.verify_slice(&given).is_ok()
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<u16>>,
    /// Answer every request with this status once the script is used up.
    fallback: Mutex<Option<u16>>,
}

pub struct Receiver {
    pub port: u16,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

async fn record(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let status = shared
        .script
        .lock()
        .unwrap()
        .pop_front()
        .or(*shared.fallback.lock().unwrap())
        .unwrap_or(200);
    shared.received.lock().unwrap().push(Received {
        headers,
        body: body.to_vec(),
        status,
    });
    StatusCode::from_u16(status).unwrap()
}

impl Receiver {
    pub async fn start() -> Receiver {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .fallback(axum::routing::post(record))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { port, shared, task }
    }

    pub fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/hooks/depot?key=receiver-side-key",
            self.port
        )
    }

    /// The next requests get these statuses, in order; later ones 200 (or the fallback).
    pub fn respond_with(&self, statuses: &[u16]) {
        self.shared.script.lock().unwrap().extend(statuses);
    }

    /// Every request past the script gets `status` (`None`: 200 again).
    pub fn always(&self, status: Option<u16>) {
        *self.shared.fallback.lock().unwrap() = status;
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what was received, or panics after `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {what}; received: {:#?}",
                received
                    .iter()
                    .map(|r| (
                        r.header("x-depot-event"),
                        r.header("x-depot-delivery"),
                        r.status
                    ))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl super::TestApp {
    /// Sets (or overrides) an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }
}
