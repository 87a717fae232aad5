//! Retention (issue 13): product settings, the preview, on-demand and periodic runs, each
//! rule alone and combined, protected labels and `latest` never deleted, blobs gone after a
//! run, the events, many versions in one run, two replicas at once. Both backend sets.
//!
//! Versions older than the test run are seeded straight into the store while the server
//! is stopped (its clock cannot be turned back over HTTP): published records whose files
//! have no blob, which a run deletes like any other.

mod common;

use common::*;
use depot::domain::assets::Label;
use depot::domain::version::{kind_of, sort_key};
use depot::meta::{FileRecord, MetaStore, VersionRecord, VersionState, now_ms};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;

async fn put_settings(app: &TestApp, token: &str, product: &str, body: &Value) -> Reply {
    app.put_json(&format!("/product/settings/{product}"), Some(token), body)
        .await
}

async fn preview(app: &TestApp, product: &str) -> Value {
    let r = app
        .get(&format!("/product/retention/{product}"), Some(app.admin()))
        .await;
    r.assert_status(200);
    r.json()
}

async fn run(app: &TestApp, token: &str, product: &str) -> Reply {
    app.send(app.request(
        Method::POST,
        &format!("/product/retention/{product}/run"),
        Some(token),
    ))
    .await
}

fn versions_of(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|e| e["version"].as_str().unwrap().to_string())
        .collect()
}

async fn listed(app: &TestApp, product: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = app
            .get(
                &format!("/product/versions/{product}?limit=1000{cursor}"),
                Some(app.admin()),
            )
            .await;
        r.assert_status(200);
        let page = r.json();
        out.extend(versions_of(&page["versions"]));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return out,
        }
    }
}

async fn expired_events(app: &TestApp, product: &str) -> Vec<Value> {
    let r = app
        .get(
            &format!("/audit?product={product}&type=version.expired&limit=1000"),
            Some(app.admin()),
        )
        .await;
    r.assert_status(200);
    r.json()["events"].as_array().unwrap().clone()
}

/// The app's metadata store, opened directly (stop the app first: redb is exclusive).
async fn open_store(app: &TestApp) -> Box<dyn MetaStore> {
    match Backend::from_env() {
        Backend::Embedded => Box::new(
            depot::meta::embedded::EmbeddedMetaStore::open(&app.data_dir().join("depot.redb"))
                .expect("open redb"),
        ),
        Backend::Production => Box::new(
            depot::meta::mongo::MongoMetaStore::connect(
                &std::env::var("DEPOT_TEST_MONGO_URL").expect("DEPOT_TEST_MONGO_URL"),
                &app.setting("DEPOT_MONGO_DB").expect("DEPOT_MONGO_DB"),
            )
            .await
            .expect("connect to MongoDB"),
        ),
    }
}

/// Publishes `version`, uploaded `age_ms` ago, with `labels`, straight into the store.
async fn seed(meta: &dyn MetaStore, product: &str, version: &str, age_ms: i64, labels: &[Label]) {
    let at = now_ms() - age_ms;
    let key = format!("seeded/{product}/{version}");
    let record = VersionRecord {
        product: product.into(),
        version: version.into(),
        file_name: "seeded.bin".into(),
        size: 7,
        checksum: String::new(),
        blob_key: key.clone(),
        state: VersionState::Pending,
        uploaded_at: at,
        uploaded_by: "tok_seeded".into(),
        sort_key: sort_key(version, at),
        kind: kind_of(version),
        lease_until: Some(now_ms() + 60_000),
        last_download_at: None,
        files: Vec::new(),
        labels: Vec::new(),
        updated_at: at,
    };
    meta.reserve_version(&record).await.expect("reserve");
    let file = FileRecord {
        name: "seeded.bin".into(),
        size: 7,
        checksum: "0".repeat(64),
        blob_key: key.clone(),
        uploaded_at: at,
        uploaded_by: "tok_seeded".into(),
    };
    meta.commit_version(product, version, &key, &[file], labels, &[])
        .await
        .expect("commit");
}

#[tokio::test]
async fn keep_last_protected_labels_and_latest_survive_and_the_run_deletes_exactly_the_preview() {
    let app = TestApp::start().await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    for v in [
        "1.0.0",
        "1.0.1",
        "1.0.2",
        "1.0.3",
        "1.0.4",
        "1.0.5",
        "2.0.0-rc.1",
    ] {
        app.upload_ok(&admin, &product, v, v.as_bytes()).await;
    }
    app.put_json(
        &format!("/product/labels/{product}/1.0.1"),
        Some(&admin),
        &json!({"keep": "forever"}),
    )
    .await
    .assert_status(200);
    let blobs_before = app.blob_count();
    put_settings(
        &app,
        &admin,
        &product,
        &json!({"retention": {"keep_last": 1, "protect_labels": ["keep"]}}),
    )
    .await
    .assert_status(200);

    let plan = preview(&app, &product).await;
    let mut doomed = versions_of(&plan["delete"]);
    doomed.sort();
    assert_eq!(doomed, ["1.0.0", "1.0.2", "1.0.3", "1.0.4"], "{plan}");
    let keep: Vec<(String, Value)> = plan["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["version"].as_str().unwrap().to_string(),
                k["rules"].clone(),
            )
        })
        .collect();
    assert_eq!(
        keep,
        [
            ("2.0.0-rc.1".to_string(), json!(["keep_last", "latest"])),
            ("1.0.5".to_string(), json!(["latest"])),
            ("1.0.1".to_string(), json!(["protected_label"])),
        ]
    );
    for d in plan["delete"].as_array().unwrap() {
        assert!(d["reason"].as_str().unwrap().contains("newest"), "{d}");
    }

    // A token without maintainer may neither preview nor run.
    let uploader = app.token_with(&product, Perms::UPLOAD).await;
    run(&app, &uploader, &product)
        .await
        .assert_error(403, "forbidden");

    let r = run(&app, &admin, &product).await;
    r.assert_status(200);
    let report = r.json();
    let mut deleted = versions_of(&report["deleted"]);
    deleted.sort();
    assert_eq!(deleted, doomed, "the run did what the preview said");
    assert_eq!(report["bytes_reclaimed"], json!(4 * 5));
    assert_eq!(
        listed(&app, &product).await,
        ["2.0.0-rc.1", "1.0.5", "1.0.1"]
    );
    for v in &doomed {
        app.get(&format!("/product/download/{product}/{v}"), Some(&admin))
            .await
            .assert_error(404, "version_not_found");
    }
    if let Some(before) = blobs_before {
        app.wait_blob_count(before - 4).await;
    }
    let events = expired_events(&app, &product).await;
    assert_eq!(events.len(), 4, "{events:?}");
    for e in &events {
        assert_eq!(e["actor"], json!({"system": "retention"}));
        assert!(e["details"]["reason"].as_str().is_some(), "{e}");
    }
    // Nothing left to do: a second run deletes nothing.
    let again = run(&app, &admin, &product).await;
    again.assert_status(200);
    assert_eq!(again.json()["deleted"], json!([]));
}

#[tokio::test]
async fn a_policy_without_a_rule_deletes_nothing() {
    let app = TestApp::start().await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    for v in ["1.0.0", "1.0.1", "1.0.2"] {
        app.upload_ok(&admin, &product, v, b"x").await;
    }
    put_settings(
        &app,
        &admin,
        &product,
        &json!({"retention": {"protect_labels": ["keep"]}}),
    )
    .await
    .assert_status(200);
    let plan = preview(&app, &product).await;
    assert_eq!(plan["delete"], json!([]));
    assert_eq!(versions_of(&plan["keep"]), ["1.0.2", "1.0.1", "1.0.0"]);
    let r = run(&app, &admin, &product).await;
    r.assert_status(200);
    assert_eq!(r.json()["deleted"], json!([]));
    assert_eq!(listed(&app, &product).await.len(), 3);
}

#[tokio::test]
async fn settings_are_validated_permission_checked_and_every_change_recorded() {
    let app = TestApp::start().await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    let r = app
        .get(&format!("/product/settings/{product}"), Some(&admin))
        .await;
    r.assert_status(200);
    assert_eq!(r.json()["retention"]["keep_last"], Value::Null);

    for (body, code) in [
        (json!({"retention": {"keep_last": 0}}), "invalid_settings"),
        (
            json!({"retention": {"max_age_days": 0}}),
            "invalid_settings",
        ),
        (
            json!({"retention": {"max_age_days": 40000}}),
            "invalid_settings",
        ),
        (
            json!({"retention": {"protect_labels": ["Bad Key"]}}),
            "invalid_settings",
        ),
        (json!({"retention": {"keep_lats": 3}}), "invalid_body"),
        (json!({"retention": {"keep_last": -1}}), "invalid_body"),
        (json!({"extra": 1}), "invalid_body"),
        (json!([null, null]), "invalid_body"),
        (
            json!({"retention": [3, null, null, null, []]}),
            "invalid_body",
        ),
        (json!({"quota": [null, null]}), "invalid_body"),
        (json!({"quota": {"max_bytes": 0}}), "invalid_settings"),
    ] {
        put_settings(&app, &admin, &product, &body)
            .await
            .assert_error(400, code);
    }
    let labels: Vec<String> = (0..33).map(|i| format!("k{i}")).collect();
    put_settings(
        &app,
        &admin,
        &product,
        &json!({"retention": {"protect_labels": labels}}),
    )
    .await
    .assert_error(400, "invalid_settings");

    let maintainer = app.token_with(&product, Perms::MAINTAINER).await;
    let body =
        json!({"retention": {"keep_last": 5, "max_age_days": 90, "protect_labels": ["keep"]}});
    let r = put_settings(&app, &maintainer, &product, &body).await;
    r.assert_status(200);
    let got = app
        .get(&format!("/product/settings/{product}"), Some(&maintainer))
        .await;
    got.assert_status(200);
    assert_eq!(got.json()["retention"]["keep_last"], 5);
    assert_eq!(got.json()["retention"]["max_age_days"], 90);
    // What GET answers, PUT takes back unchanged.
    put_settings(&app, &maintainer, &product, &got.json())
        .await
        .assert_status(200);

    let uploader = app.token_with(&product, Perms::UPLOAD).await;
    put_settings(&app, &uploader, &product, &body)
        .await
        .assert_error(403, "forbidden");
    let stranger = app.register(false).await;
    app.get(&format!("/product/settings/{product}"), Some(&stranger))
        .await
        .assert_status(404);
    put_settings(&app, &admin, "no-such-product", &body)
        .await
        .assert_error(404, "product_not_found");

    let r = app
        .get(
            &format!("/audit?product={product}&type=settings.changed"),
            Some(&admin),
        )
        .await;
    r.assert_status(200);
    let events = r.json()["events"].as_array().unwrap().clone();
    assert_eq!(
        events.len(),
        2,
        "two accepted changes, no refused one: {events:?}"
    );
    let first = events.last().unwrap();
    assert_eq!(first["details"]["old"], Value::Null);
    assert_eq!(first["details"]["new"]["retention"]["keep_last"], 5);
    assert_eq!(events[0]["details"]["old"]["retention"]["keep_last"], 5);
}

#[tokio::test]
async fn age_and_download_rules_delete_old_versions_and_keep_recent_ones() {
    let mut app = TestApp::start().await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    app.stop().await;
    {
        let meta = open_store(&app).await;
        seed(meta.as_ref(), &product, "0.1.0", 100 * DAY_MS, &[]).await;
        seed(meta.as_ref(), &product, "0.2.0-beta.1", 20 * DAY_MS, &[]).await;
        seed(meta.as_ref(), &product, "0.3.0", 40 * DAY_MS, &[]).await;
    }
    app.restart().await;
    app.upload_ok(&admin, &product, "1.0.0", b"fresh").await;

    // Releases older than 30 days go; pre-releases older than 14 go.
    put_settings(
        &app,
        &admin,
        &product,
        &json!({"retention": {"max_age_days": 30, "prerelease_max_age_days": 14}}),
    )
    .await
    .assert_status(200);
    let plan = preview(&app, &product).await;
    let mut doomed = versions_of(&plan["delete"]);
    doomed.sort();
    assert_eq!(doomed, ["0.1.0", "0.2.0-beta.1", "0.3.0"], "{plan}");

    // Combined, kept if any: 50 days keeps the 40-day-old release.
    put_settings(
        &app,
        &admin,
        &product,
        &json!({"retention": {"max_age_days": 50, "keep_last": 1}}),
    )
    .await
    .assert_status(200);
    let plan = preview(&app, &product).await;
    assert_eq!(versions_of(&plan["delete"]), ["0.1.0"], "{plan}");

    // Never downloaded counts from the upload: the fresh one stays, the old ones go.
    put_settings(
        &app,
        &admin,
        &product,
        &json!({"retention": {"not_downloaded_days": 30}}),
    )
    .await
    .assert_status(200);
    let plan = preview(&app, &product).await;
    let mut doomed = versions_of(&plan["delete"]);
    doomed.sort();
    assert_eq!(doomed, ["0.1.0", "0.3.0"], "{plan}");
    let r = run(&app, &admin, &product).await;
    r.assert_status(200);
    let mut deleted = versions_of(&r.json()["deleted"]);
    deleted.sort();
    assert_eq!(deleted, doomed);
    assert_eq!(listed(&app, &product).await, ["1.0.0", "0.2.0-beta.1"]);

    // A download is recorded (in the background, at most hourly) and listed.
    app.get(&format!("/product/download/{product}/1.0.0"), Some(&admin))
        .await
        .assert_status(200);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = app
            .get(&format!("/product/versions/{product}"), Some(&admin))
            .await;
        let page = r.json();
        let fresh = page["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["version"] == "1.0.0")
            .cloned()
            .unwrap();
        if fresh["last_downloaded_at"].is_string() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no download was recorded: {fresh}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn products_without_settings_follow_the_config_files_retention_table() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("depot.toml");
    std::fs::write(&config, "[retention]\nkeep_last = 2\n").unwrap();
    let app = TestApp::builder()
        .env("DEPOT_CONFIG", config.display())
        .start()
        .await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    for v in ["1.0.0", "1.0.1", "1.0.2", "1.0.3"] {
        app.upload_ok(&admin, &product, v, b"x").await;
    }
    let r = app
        .get(&format!("/product/settings/{product}"), Some(&admin))
        .await;
    assert_eq!(r.json()["retention"]["keep_last"], 2);
    let r = run(&app, &admin, &product).await;
    r.assert_status(200);
    let mut deleted = versions_of(&r.json()["deleted"]);
    deleted.sort();
    assert_eq!(deleted, ["1.0.0", "1.0.1"]);
    // Its own settings win over the server's.
    put_settings(&app, &admin, &product, &json!({"retention": {}}))
        .await
        .assert_status(200);
    assert_eq!(preview(&app, &product).await["delete"], json!([]));
}

#[tokio::test]
async fn the_periodic_run_prunes_many_versions_to_keep_last_plus_protected() {
    // 20,000 on the embedded store; 2,000 on the test MongoDB (SecantusDB, a Python
    // server, takes ~10 ms per write).
    let count: usize = match Backend::from_env() {
        Backend::Embedded => 20_000,
        Backend::Production => 2_000,
    };
    let mut app = TestApp::builder()
        .env("DEPOT_RETENTION_INTERVAL_SECONDS", 1)
        .start()
        .await;
    let admin = app.admin().to_string();
    let product = app.product().await;
    app.stop().await;
    {
        let meta = open_store(&app).await;
        let protected = [Label {
            key: "keep".into(),
            value: "yes".into(),
        }];
        for i in 0..count {
            let labels: &[Label] = if i == 7 { &protected } else { &[] };
            seed(meta.as_ref(), &product, &format!("1.0.{i}"), DAY_MS, labels).await;
        }
    }
    app.restart().await;
    put_settings(
        &app,
        &admin,
        &product,
        &json!({"retention": {"keep_last": 10, "protect_labels": ["keep"]}}),
    )
    .await
    .assert_status(200);
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    loop {
        let left = listed(&app, &product).await;
        if left.len() == 11 {
            let mut expected: Vec<String> = ((count - 10)..count)
                .rev()
                .map(|i| format!("1.0.{i}"))
                .collect();
            expected.push("1.0.7".to_string());
            assert_eq!(left, expected);
            break;
        }
        assert!(
            left.len() > 11,
            "more than keep_last + protected were deleted: {}",
            left.len()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "{} versions left after 600 s",
            left.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let r = app
        .get(
            &format!("/audit?product={product}&type=version.expired&limit=1"),
            Some(&admin),
        )
        .await;
    assert_eq!(
        r.json()["events"][0]["actor"],
        json!({"system": "retention"})
    );
}

#[tokio::test]
async fn two_replicas_running_retention_at_once_delete_each_version_once() {
    if Backend::from_env() != Backend::Production {
        return; // two replicas need a shared store
    }
    let a = TestApp::start().await;
    let b = TestApp::builder().share_backends_with(&a).start().await;
    let admin = a.admin().to_string();
    let product = a.product().await;
    for i in 0..12 {
        a.upload_ok(&admin, &product, &format!("1.0.{i}"), b"x")
            .await;
    }
    put_settings(
        &a,
        &admin,
        &product,
        &json!({"retention": {"keep_last": 2}}),
    )
    .await
    .assert_status(200);
    let (ra, rb) = tokio::join!(run(&a, &admin, &product), run(&b, b.admin(), &product));
    let mut deleted = Vec::new();
    for r in [ra, rb] {
        match r.status.as_u16() {
            200 => deleted.extend(versions_of(&r.json()["deleted"])),
            409 => assert_eq!(r.error_code(), "retention_running"),
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    // Whatever the first left (it was refused its lease), a later run finishes.
    let r = run(&b, b.admin(), &product).await;
    r.assert_status(200);
    deleted.extend(versions_of(&r.json()["deleted"]));
    let mut unique = deleted.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        deleted.len(),
        "a version deleted twice: {deleted:?}"
    );
    assert_eq!(deleted.len(), 10);
    assert_eq!(expired_events(&a, &product).await.len(), 10);
}
