//! Webhooks (issue 11): signed POSTs of events to a receiver in the harness, retries with
//! backoff, order per webhook, at least once across restarts, once with two replicas,
//! private targets refused, permissions, and no secret anywhere.

mod common;

use common::webhook::{Received, Receiver};
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const SECRET: &str = "a-webhook-secret-of-some-length";
const WAIT: Duration = Duration::from_secs(30);

async fn app_allowing_private() -> TestApp {
    TestApp::builder()
        .env("DEPOT_WEBHOOK_ALLOW_PRIVATE", "true")
        .start()
        .await
}

async fn create_webhook(app: &TestApp, token: &str, body: Value) -> String {
    let r = app.put_json("/webhooks", Some(token), &body).await;
    r.assert_status(201);
    let id = r.json()["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("wh_"), "{id}");
    id
}

fn published(received: &[Received]) -> Vec<&Received> {
    received
        .iter()
        .filter(|r| r.header("x-depot-event") == "version.published")
        .collect()
}

#[tokio::test]
async fn a_published_version_is_posted_to_its_webhook_signed_with_its_secret() {
    let app = app_allowing_private().await;
    let receiver = Receiver::start().await;
    let product = app.product().await;
    create_webhook(
        &app,
        app.admin(),
        json!({ "url": receiver.url(), "events": ["version.published"], "secret": SECRET }),
    )
    .await;
    app.create_product(app.admin(), &unique("quiet")).await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"hello")
        .await;
    let got = receiver
        .wait_until(WAIT, "one delivery", |r| !r.is_empty())
        .await;
    let delivery = &got[0];
    assert_eq!(delivery.header("x-depot-event"), "version.published");
    assert_eq!(delivery.header("content-type"), "application/json");
    assert!(delivery.signed_with(SECRET), "the signature verifies");
    assert!(!delivery.signed_with("another-secret-entirely"));
    let event = delivery.json();
    assert_eq!(event["type"], "version.published");
    assert_eq!(event["product"], product.as_str());
    assert_eq!(event["version"], "1.0.0");
    assert_eq!(
        delivery.header("x-depot-delivery"),
        event["id"].as_str().unwrap()
    );
    // Only the subscribed type arrives (the product creation did not).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn a_failing_receiver_sees_retries_until_it_answers_2xx() {
    let app = app_allowing_private().await;
    let receiver = Receiver::start().await;
    receiver.respond_with(&[500, 503]);
    let product = app.product().await;
    let hook = create_webhook(
        &app,
        app.admin(),
        json!({ "url": receiver.url(), "events": ["version.published"], "product": product, "secret": SECRET }),
    )
    .await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"x").await;
    let got = receiver
        .wait_until(WAIT, "three attempts", |r| r.len() >= 3)
        .await;
    let ids: Vec<String> = got.iter().map(|r| r.header("x-depot-delivery")).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "the same event each time: {ids:?}"
    );
    assert_eq!(
        got.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 503, 200]
    );
    let deliveries = app
        .get(&format!("/webhooks/{hook}/deliveries"), Some(app.admin()))
        .await;
    deliveries.assert_status(200);
    let d = &deliveries.json()[0];
    assert_eq!(d["event_id"], ids[0].as_str());
    assert_eq!(d["state"], "delivered");
    assert_eq!(d["attempts"], 3);
    assert_eq!(d["last_status"], 200);
    assert_eq!(d["next_attempt_at"], Value::Null);
}

#[tokio::test]
async fn deliveries_go_out_in_event_order_even_when_the_first_one_is_retried() {
    let app = app_allowing_private().await;
    let receiver = Receiver::start().await;
    receiver.respond_with(&[500]);
    let product = app.product().await;
    create_webhook(
        &app,
        app.admin(),
        json!({ "url": receiver.url(), "events": ["version.published"], "secret": SECRET }),
    )
    .await;
    for v in 0..5 {
        app.upload_ok(app.admin(), &product, &format!("1.0.{v}"), b"x")
            .await;
    }
    let got = receiver
        .wait_until(WAIT, "five delivered", |r| {
            r.iter().filter(|d| d.status == 200).count() >= 5
        })
        .await;
    let versions: Vec<String> = got
        .iter()
        .map(|r| r.json()["version"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        versions,
        ["1.0.0", "1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4"]
    );
}

#[tokio::test]
async fn an_event_retried_across_a_restart_is_delivered_once_it_is_answered() {
    let mut app = app_allowing_private().await;
    let receiver = Receiver::start().await;
    receiver.always(Some(500));
    let product = app.product().await;
    create_webhook(
        &app,
        app.admin(),
        json!({ "url": receiver.url(), "events": ["version.published"], "secret": SECRET }),
    )
    .await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"x").await;
    receiver
        .wait_until(WAIT, "a failed attempt", |r| !r.is_empty())
        .await;
    app.kill().await;
    receiver.always(None);
    app.start_again().await;
    // The killed process's lease on the webhook (20 s) lapses first.
    let got = receiver
        .wait_until(Duration::from_secs(60), "a delivery answered 200", |r| {
            r.iter().any(|d| d.status == 200)
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answered: Vec<Received> = receiver
        .received()
        .into_iter()
        .filter(|d| d.status == 200)
        .collect();
    assert_eq!(answered.len(), 1, "delivered once: {got:#?}");
    assert_eq!(answered[0].json()["version"], "1.0.0");
}

#[tokio::test]
async fn two_replicas_deliver_each_event_once() {
    if Backend::from_env() != Backend::Production {
        return; // two replicas need a shared store
    }
    let a = app_allowing_private().await;
    let b = TestApp::builder()
        .share_backends_with(&a)
        .env("DEPOT_WEBHOOK_ALLOW_PRIVATE", "true")
        .start()
        .await;
    let receiver = Receiver::start().await;
    let product = a.product().await;
    create_webhook(
        &a,
        a.admin(),
        json!({ "url": receiver.url(), "events": ["version.published"], "secret": SECRET }),
    )
    .await;
    for v in 0..6 {
        let app = if v % 2 == 0 { &a } else { &b };
        app.upload_ok(app.admin(), &product, &format!("2.0.{v}"), b"x")
            .await;
    }
    receiver
        .wait_until(WAIT, "six deliveries", |r| published(r).len() >= 6)
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut ids: Vec<String> = published(&receiver.received())
        .iter()
        .map(|r| r.header("x-depot-delivery"))
        .collect();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!((total, ids.len()), (6, 6), "each event once");
}

#[tokio::test]
async fn a_delivered_event_can_be_redelivered() {
    let app = app_allowing_private().await;
    let receiver = Receiver::start().await;
    let product = app.product().await;
    let hook = create_webhook(
        &app,
        app.admin(),
        json!({ "url": receiver.url(), "events": ["version.published"], "secret": SECRET }),
    )
    .await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"x").await;
    let first = receiver
        .wait_until(WAIT, "a delivery", |r| !r.is_empty())
        .await;
    let event_id = first[0].header("x-depot-delivery");
    let r = app
        .send(app.request(
            reqwest::Method::POST,
            &format!("/webhooks/{hook}/deliveries/{event_id}/redeliver"),
            Some(app.admin()),
        ))
        .await;
    r.assert_status(202);
    let again = receiver
        .wait_until(WAIT, "the redelivery", |r| r.len() >= 2)
        .await;
    assert_eq!(again[1].header("x-depot-delivery"), event_id);
    let missing = app
        .send(app.request(
            reqwest::Method::POST,
            &format!("/webhooks/{hook}/deliveries/evt_000000000000000000000000/redeliver"),
            Some(app.admin()),
        ))
        .await;
    missing.assert_error(404, "delivery_not_found");
}

#[tokio::test]
async fn private_and_metadata_targets_are_refused_without_the_setting() {
    let app = TestApp::start().await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "http://192.168.0.10/hook",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ] {
        let r = app
            .put_json(
                "/webhooks",
                Some(app.admin()),
                &json!({ "url": url, "events": ["*"], "secret": SECRET }),
            )
            .await;
        r.assert_error(400, "invalid_webhook_url");
    }
    for url in [
        "ftp://example.com/",
        "file:///etc/passwd",
        "https://u:p@example.com/",
    ] {
        app.put_json(
            "/webhooks",
            Some(app.admin()),
            &json!({ "url": url, "events": ["*"], "secret": SECRET }),
        )
        .await
        .assert_error(400, "invalid_webhook_url");
    }
    let hooks = app.get("/webhooks", Some(app.admin())).await.json();
    assert_eq!(hooks, json!([]));
}

#[tokio::test]
async fn a_target_that_became_private_is_refused_at_delivery() {
    // Created while private targets were allowed; delivered by a server that refuses them.
    let mut app = app_allowing_private().await;
    let receiver = Receiver::start().await;
    let product = app.product().await;
    let hook = create_webhook(
        &app,
        app.admin(),
        json!({ "url": receiver.url(), "events": ["version.published"], "secret": SECRET }),
    )
    .await;
    app.stop().await;
    app.set_env("DEPOT_WEBHOOK_ALLOW_PRIVATE", "false");
    app.start_again().await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"x").await;
    eventually(WAIT, "a refused attempt", || async {
        let d = app
            .get(&format!("/webhooks/{hook}/deliveries"), Some(app.admin()))
            .await
            .json();
        d[0]["attempts"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let d = app
        .get(&format!("/webhooks/{hook}/deliveries"), Some(app.admin()))
        .await
        .json();
    assert_eq!(d[0]["state"], "pending");
    assert!(
        d[0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("private"),
        "{d}"
    );
    assert!(
        receiver.received().is_empty(),
        "nothing reached the private address"
    );
}

#[tokio::test]
async fn webhook_permissions_follow_the_product_grants() {
    let app = app_allowing_private().await;
    let receiver = Receiver::start().await;
    let product = app.product().await;
    let other = app.product().await;
    let maintainer = app.token_with(&product, Perms::MAINTAINER).await;
    let uploader = app.token_with(&product, Perms::UPLOAD).await;
    let body = |p: Option<&str>| {
        let mut b = json!({ "url": receiver.url(), "events": ["*"], "secret": SECRET });
        if let Some(p) = p {
            b["product"] = json!(p);
        }
        b
    };
    let mine = create_webhook(&app, &maintainer, body(Some(&product))).await;
    app.put_json("/webhooks", Some(&maintainer), &body(None))
        .await
        .assert_error(403, "forbidden");
    app.put_json("/webhooks", Some(&maintainer), &body(Some(&other)))
        .await
        .assert_error(404, "product_not_found");
    app.put_json("/webhooks", Some(&uploader), &body(Some(&product)))
        .await
        .assert_error(403, "forbidden");
    let global = create_webhook(&app, app.admin(), body(None)).await;

    let listed = app.get("/webhooks", Some(&maintainer)).await.json();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mine.as_str()]);
    app.delete(&format!("/webhooks/{global}"), Some(&maintainer))
        .await
        .assert_error(404, "webhook_not_found");
    app.get(&format!("/webhooks/{global}/deliveries"), Some(&uploader))
        .await
        .assert_error(404, "webhook_not_found");
    app.delete(&format!("/webhooks/{mine}"), Some(&maintainer))
        .await
        .assert_status(204);
    app.delete(&format!("/webhooks/{mine}"), Some(&maintainer))
        .await
        .assert_error(404, "webhook_not_found");
}

#[tokio::test]
async fn the_secret_is_never_returned_logged_or_put_in_an_event() {
    let app = app_allowing_private().await;
    let receiver = Receiver::start().await;
    app.remember_secret(SECRET);
    let hook = create_webhook(
        &app,
        app.admin(),
        json!({ "url": receiver.url(), "events": ["*"], "secret": SECRET }),
    )
    .await;
    let product = app.product().await;
    app.upload_ok(app.admin(), &product, "1.0.0", b"x").await;
    receiver
        .wait_until(WAIT, "deliveries", |r| published(r).len() == 1)
        .await;
    for path in [
        "/webhooks".to_string(),
        format!("/webhooks/{hook}/deliveries"),
        "/audit?format=ndjson".to_string(),
    ] {
        let text = app.get(&path, Some(app.admin())).await.text();
        assert!(!text.contains(SECRET), "{path} shows the secret");
    }
    let audit = app
        .get("/audit?type=webhook.created", Some(app.admin()))
        .await
        .json();
    let created = &audit["events"][0];
    assert_eq!(created["details"]["webhook_id"], hook.as_str());
    let target = created["details"]["target"].as_str().unwrap();
    assert!(
        !target.contains("receiver-side-key"),
        "the URL's query is not in events: {target}"
    );
    for r in receiver.received() {
        assert!(!String::from_utf8_lossy(&r.body).contains(SECRET));
    }
    app.assert_no_secrets_logged();
}

#[tokio::test]
async fn bad_webhook_bodies_are_400_with_their_codes() {
    let app = app_allowing_private().await;
    let url = "http://127.0.0.1:9/hook";
    for (body, code) in [
        (
            json!({ "url": url, "events": ["version.nope"], "secret": SECRET }),
            "invalid_events",
        ),
        (
            json!({ "url": url, "events": [], "secret": SECRET }),
            "invalid_events",
        ),
        (
            json!({ "url": url, "events": ["*", "version.published"], "secret": SECRET }),
            "invalid_events",
        ),
        (
            json!({ "url": url, "events": ["*"], "secret": "short" }),
            "invalid_secret",
        ),
        (
            json!({ "url": url, "events": ["*"], "secret": "has spaces in it, quite long" }),
            "invalid_secret",
        ),
        (
            json!({ "url": "not a url", "events": ["*"], "secret": SECRET }),
            "invalid_webhook_url",
        ),
        (
            json!({ "url": url, "events": ["*"], "secret": SECRET, "extra": 1 }),
            "invalid_body",
        ),
        (
            json!({ "url": url, "events": ["*"], "secret": SECRET, "product": "../x" }),
            "invalid_name",
        ),
    ] {
        let r = app.put_json("/webhooks", Some(app.admin()), &body).await;
        r.assert_error(400, code);
    }
    app.get("/webhooks/not-an-id/deliveries", Some(app.admin()))
        .await
        .assert_error(404, "webhook_not_found");
    app.get("/webhooks", None)
        .await
        .assert_error(401, "missing_token");
}

#[tokio::test]
async fn a_hanging_receiver_never_slows_or_fails_the_change_that_caused_the_event() {
    let app = app_allowing_private().await;
    // A receiver that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let product = app.product().await;
    let hook = create_webhook(
        &app,
        app.admin(),
        json!({ "url": format!("http://127.0.0.1:{port}/"), "events": ["*"], "secret": SECRET }),
    )
    .await;
    for v in 0..5 {
        app.upload_ok(app.admin(), &product, &format!("1.0.{v}"), b"x")
            .await;
    }
    eventually(Duration::from_secs(40), "a timed-out attempt", || async {
        let d = app
            .get(&format!("/webhooks/{hook}/deliveries"), Some(app.admin()))
            .await
            .json();
        d.as_array()
            .is_some_and(|all| all.iter().any(|d| d["attempts"].as_u64().unwrap_or(0) >= 1))
    })
    .await;
    let d = app
        .get(
            &format!("/webhooks/{hook}/deliveries?limit=1000"),
            Some(app.admin()),
        )
        .await
        .json();
    let first = d.as_array().unwrap().last().unwrap();
    assert!(
        first["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out"),
        "{first}"
    );
    holder.abort();
}
