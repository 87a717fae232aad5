//! The store contract: the same assertions against the embedded store (redb) and MongoDB
//! (kellnr's style of one test body run on two databases). Each case runs on redb always,
//! and on MongoDB when `DEPOT_TEST_MONGO_URL` is set (scripts/test.sh sets it; with
//! `DEPOT_TEST_BACKEND=production` it is required).

use depot::domain::assets::Label;
use depot::domain::events::{Actor, Event, EventFilter, EventType, event_id, rfc3339_ms};
use depot::domain::permissions::Grant;
use depot::domain::version::VersionKind;
use depot::domain::version::{kind_of, sort_key};
use depot::error::{AssetRefusal, MetaError};
use depot::meta::embedded::EmbeddedMetaStore;
use depot::meta::mongo::MongoMetaStore;
use depot::meta::{
    DeliveryRecord, DeliveryState, FileRecord, MetaStore, ProductRecord, ProductUsage,
    QuotaReservation, TokenRecord, UploadKind, UploadSession, VersionRecord, VersionState,
    WebhookRecord, now_ms,
};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};

/// A store to test, and what keeps it alive (the redb file's directory).
struct Store {
    meta: Box<dyn MetaStore>,
    _dir: Option<tempfile::TempDir>,
}

fn embedded() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let meta = EmbeddedMetaStore::open(&dir.path().join("depot.redb")).unwrap();
    Store {
        meta: Box::new(meta),
        _dir: Some(dir),
    }
}

async fn mongo() -> Option<Store> {
    let url = match std::env::var("DEPOT_TEST_MONGO_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            assert_ne!(
                std::env::var("DEPOT_TEST_BACKEND").as_deref(),
                Ok("production"),
                "DEPOT_TEST_BACKEND=production needs DEPOT_TEST_MONGO_URL"
            );
            eprintln!("DEPOT_TEST_MONGO_URL is not set: the MongoDB half of this case did not run");
            return None;
        }
    };
    let db = format!("contract_{}", hex::encode(rand::random::<[u8; 6]>()));
    let meta = MongoMetaStore::connect(&url, &db).await.unwrap();
    Some(Store {
        meta: Box::new(meta),
        _dir: None,
    })
}

/// One test per case and store: `<case>_on_embedded`, `<case>_on_mongo`.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod on_embedded {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::embedded().meta.as_ref()).await;
                }
            )*
        }
        mod on_mongo {
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(store) = super::mongo().await {
                        super::$case(store.meta.as_ref()).await;
                    }
                }
            )*
        }
    };
}

contract!(
    a_second_reservation_of_a_version_is_pending_and_after_commit_a_conflict,
    reserving_under_a_missing_product_is_not_found,
    a_commit_repeated_with_the_same_blob_key_succeeds_once_and_records_one_event,
    a_commit_with_another_blob_key_is_not_found,
    missing_things_are_not_found_and_record_no_event,
    a_grant_needs_its_product_and_its_token,
    each_change_stores_its_events_and_a_refused_change_none,
    deletions_fill_in_their_event_details_from_what_they_removed,
    audit_pages_are_newest_first_filtered_and_continue_at_their_cursor,
    old_events_are_pruned,
    a_webhook_lease_is_held_by_one_owner_until_it_lapses,
    deliveries_are_queued_once_by_the_lease_holder_and_come_out_in_event_order,
    the_first_file_creates_the_draft_once_and_each_file_records_its_events,
    a_draft_refuses_a_taken_name_and_a_published_version_any_file,
    publishing_checks_the_file_list_and_seals_the_draft_with_its_labels,
    a_file_leaves_a_draft_but_never_a_published_version,
    labels_change_with_one_event_and_an_unchanged_set_records_none,
    only_drafts_idle_past_the_cutoff_expire_and_drafts_are_never_latest,
    a_one_request_upload_of_several_files_publishes_them_all_with_the_first_as_primary,
    retention_expires_only_the_judged_upload_with_its_event,
    settings_changes_return_and_record_the_old_settings,
    a_download_is_noted_only_when_the_last_note_is_stale,
    a_named_lease_is_held_by_one_owner_until_it_lapses_or_its_owner_releases_it,
    usage_counts_files_of_published_versions_and_drafts_and_live_uploads,
    a_reservation_past_a_quota_is_refused_and_writes_nothing,
    a_reservation_grows_by_its_id_and_stops_counting_once_committed_or_lapsed,
    max_versions_counts_a_version_once_whatever_holds_it,
    trust_policies_are_kept_per_product_found_by_issuer_and_go_with_their_product,
    an_oidc_token_id_is_used_once_until_it_is_pruned,
    an_upload_session_is_stored_once_and_saved_only_from_its_current_offset,
    upload_sessions_are_listed_per_token_and_found_when_expired,
);

static SEQ: AtomicU64 = AtomicU64::new(1);

fn event(kind: EventType, product: Option<&str>, version: Option<&str>) -> Event {
    let ms = now_ms();
    Event {
        id: event_id(ms, SEQ.fetch_add(1, Ordering::SeqCst)),
        time: rfc3339_ms(ms),
        kind,
        actor: Actor::Token {
            token_id: "tok_00000000000000aa".into(),
            name: None,
            admin: true,
        },
        product: product.map(str::to_string),
        version: version.map(str::to_string),
        request_id: None,
        details: json!({}),
    }
}

fn token(id: &str) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        hash: format!("hash-of-{id}"),
        admin: false,
        created_at: now_ms(),
        name: None,
        expires_at: None,
        parent: None,
        bootstrap: false,
        exchanged: false,
    }
}

fn pending(product: &str, version: &str, blob_key: &str) -> VersionRecord {
    let now = now_ms();
    VersionRecord {
        product: product.into(),
        version: version.into(),
        file_name: "a.bin".into(),
        size: 0,
        checksum: String::new(),
        blob_key: blob_key.into(),
        state: VersionState::Pending,
        uploaded_at: now,
        uploaded_by: "tok_00000000000000aa".into(),
        sort_key: sort_key(version, now),
        kind: kind_of(version),
        lease_until: Some(now + 60_000),
        last_download_at: None,
        files: Vec::new(),
        labels: Vec::new(),
        updated_at: now,
    }
}

fn file(name: &str, blob_key: &str, size: u64, checksum: &str) -> FileRecord {
    FileRecord {
        name: name.into(),
        size,
        checksum: checksum.into(),
        blob_key: blob_key.into(),
        uploaded_at: now_ms(),
        uploaded_by: "tok_00000000000000aa".into(),
    }
}

fn one_file(blob_key: &str, size: u64, checksum: &str) -> Vec<FileRecord> {
    vec![file("a.bin", blob_key, size, checksum)]
}

fn draft(product: &str, version: &str) -> VersionRecord {
    VersionRecord {
        state: VersionState::Draft,
        lease_until: None,
        blob_key: String::new(),
        ..pending(product, version, "")
    }
}

async fn product(meta: &dyn MetaStore, name: &str) {
    let record = ProductRecord {
        name: name.into(),
        created_at: now_ms(),
        settings: None,
    };
    meta.insert_token(&token("tok_00000000000000aa"), &[], &[])
        .await
        .or_else(|e| {
            if matches!(e, MetaError::Conflict) {
                Ok(())
            } else {
                Err(e)
            }
        })
        .unwrap();
    meta.create_product(&record, "tok_00000000000000aa", &[])
        .await
        .unwrap();
}

async fn all_events(meta: &dyn MetaStore) -> Vec<Event> {
    meta.events_page(&EventFilter::default(), 1000)
        .await
        .unwrap()
        .events
}

async fn a_second_reservation_of_a_version_is_pending_and_after_commit_a_conflict(
    meta: &dyn MetaStore,
) {
    product(meta, "p").await;
    assert_eq!(
        meta.reserve_version(&pending("p", "1.0.0", "k1"))
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        meta.reserve_version(&pending("p", "1.0.0", "k2")).await,
        Err(MetaError::Pending)
    ));
    meta.commit_version("p", "1.0.0", "k1", &one_file("k1", 3, "abc"), &[], &[])
        .await
        .unwrap();
    assert!(matches!(
        meta.reserve_version(&pending("p", "1.0.0", "k3")).await,
        Err(MetaError::Conflict)
    ));
    let v = meta.version("p", "1.0.0").await.unwrap().unwrap();
    assert_eq!(
        (v.size, v.checksum.as_str(), v.blob_key.as_str()),
        (3, "abc", "k1")
    );
}

async fn reserving_under_a_missing_product_is_not_found(meta: &dyn MetaStore) {
    assert!(matches!(
        meta.reserve_version(&pending("nope", "1.0.0", "k")).await,
        Err(MetaError::NotFound)
    ));
    assert!(!meta.blob_key_in_use("k").await.unwrap());
}

async fn a_commit_repeated_with_the_same_blob_key_succeeds_once_and_records_one_event(
    meta: &dyn MetaStore,
) {
    product(meta, "p").await;
    meta.reserve_version(&pending("p", "1.0.0", "k1"))
        .await
        .unwrap();
    let published = event(EventType::VersionPublished, Some("p"), Some("1.0.0"));
    meta.commit_version(
        "p",
        "1.0.0",
        "k1",
        &one_file("k1", 3, "abc"),
        &[],
        std::slice::from_ref(&published),
    )
    .await
    .unwrap();
    // What a driver retry of the same commit does.
    meta.commit_version(
        "p",
        "1.0.0",
        "k1",
        &one_file("k1", 3, "abc"),
        &[],
        std::slice::from_ref(&published),
    )
    .await
    .unwrap();
    let events = all_events(meta).await;
    assert_eq!(events, vec![published]);
}

async fn a_commit_with_another_blob_key_is_not_found(meta: &dyn MetaStore) {
    product(meta, "p").await;
    meta.reserve_version(&pending("p", "1.0.0", "k1"))
        .await
        .unwrap();
    let e = event(EventType::VersionPublished, Some("p"), Some("1.0.0"));
    assert!(matches!(
        meta.commit_version(
            "p",
            "1.0.0",
            "other",
            &one_file("other", 3, "abc"),
            &[],
            std::slice::from_ref(&e)
        )
        .await,
        Err(MetaError::NotFound)
    ));
    assert!(matches!(
        meta.commit_version("p", "2.0.0", "k1", &one_file("k1", 3, "abc"), &[], &[])
            .await,
        Err(MetaError::NotFound)
    ));
    assert!(
        meta.version("p", "1.0.0").await.unwrap().is_none(),
        "still pending"
    );
    assert!(all_events(meta).await.is_empty());
}

async fn missing_things_are_not_found_and_record_no_event(meta: &dyn MetaStore) {
    product(meta, "p").await;
    let e = || event(EventType::VersionDeleted, Some("p"), Some("9.9.9"));
    assert_eq!(
        meta.delete_version("p", "9.9.9", None, e()).await.unwrap(),
        None
    );
    assert!(meta.delete_product("nope", e()).await.unwrap().is_none());
    assert!(
        !meta
            .remove_grant("p", "tok_0000000000000bad", &[e()])
            .await
            .unwrap()
    );
    assert!(
        !meta
            .delete_token("tok_0000000000000bad", &[e()])
            .await
            .unwrap()
    );
    assert!(
        !meta
            .delete_webhook("wh_0000000000000bad", &[e()])
            .await
            .unwrap()
    );
    assert!(
        meta.token_by_id("tok_0000000000000bad")
            .await
            .unwrap()
            .is_none()
    );
    assert!(meta.product("nope").await.unwrap().is_none());
    assert!(meta.version("p", "9.9.9").await.unwrap().is_none());
    assert!(meta.webhook("wh_0000000000000bad").await.unwrap().is_none());
    assert!(
        meta.event("evt_000000000000000000000000")
            .await
            .unwrap()
            .is_none()
    );
    assert!(all_events(meta).await.is_empty());
}

async fn a_grant_needs_its_product_and_its_token(meta: &dyn MetaStore) {
    product(meta, "p").await;
    meta.insert_token(&token("tok_00000000000000bb"), &[], &[])
        .await
        .unwrap();
    let e = event(EventType::GrantSet, Some("p"), None);
    assert!(matches!(
        meta.set_grant(
            "nope",
            "tok_00000000000000bb",
            Grant::ALL,
            std::slice::from_ref(&e)
        )
        .await,
        Err(MetaError::NotFound)
    ));
    assert!(matches!(
        meta.set_grant(
            "p",
            "tok_0000000000000bad",
            Grant::ALL,
            std::slice::from_ref(&e)
        )
        .await,
        Err(MetaError::NotFound)
    ));
    let with_missing_product = [("nope".to_string(), Grant::ALL)];
    assert!(matches!(
        meta.insert_token(
            &token("tok_00000000000000cc"),
            &with_missing_product,
            std::slice::from_ref(&e)
        )
        .await,
        Err(MetaError::NotFound)
    ));
    assert!(
        meta.token_by_id("tok_00000000000000cc")
            .await
            .unwrap()
            .is_none()
    );
    assert!(all_events(meta).await.is_empty());
    meta.set_grant(
        "p",
        "tok_00000000000000bb",
        Grant::ALL,
        std::slice::from_ref(&e),
    )
    .await
    .unwrap();
    assert_eq!(
        meta.grants_of_token("tok_00000000000000bb").await.unwrap(),
        vec![("p".to_string(), Grant::ALL)]
    );
    assert_eq!(all_events(meta).await, vec![e]);
}

async fn each_change_stores_its_events_and_a_refused_change_none(meta: &dyn MetaStore) {
    let created = event(EventType::ProductCreated, Some("p"), None);
    meta.insert_token(&token("tok_00000000000000aa"), &[], &[])
        .await
        .unwrap();
    let record = ProductRecord {
        name: "p".into(),
        created_at: now_ms(),
        settings: None,
    };
    meta.create_product(
        &record,
        "tok_00000000000000aa",
        std::slice::from_ref(&created),
    )
    .await
    .unwrap();
    let again = event(EventType::ProductCreated, Some("p"), None);
    assert!(matches!(
        meta.create_product(&record, "tok_00000000000000aa", &[again])
            .await,
        Err(MetaError::Conflict)
    ));
    let minted = event(EventType::TokenCreated, None, None);
    meta.insert_token(
        &token("tok_00000000000000dd"),
        &[("p".to_string(), Grant::ALL)],
        std::slice::from_ref(&minted),
    )
    .await
    .unwrap();
    let duplicate = event(EventType::TokenCreated, None, None);
    assert!(matches!(
        meta.insert_token(&token("tok_00000000000000dd"), &[], &[duplicate])
            .await,
        Err(MetaError::Conflict)
    ));
    let pruned = event(EventType::TokenPruned, None, None);
    assert!(
        meta.delete_token("tok_00000000000000dd", std::slice::from_ref(&pruned))
            .await
            .unwrap()
    );
    let events = all_events(meta).await;
    assert_eq!(
        events,
        vec![pruned, minted, created],
        "newest first, refusals absent"
    );
}

async fn deletions_fill_in_their_event_details_from_what_they_removed(meta: &dyn MetaStore) {
    product(meta, "p").await;
    meta.reserve_version(&pending("p", "1.0.0", "k1"))
        .await
        .unwrap();
    meta.commit_version("p", "1.0.0", "k1", &one_file("k1", 5, "abc"), &[], &[])
        .await
        .unwrap();
    meta.reserve_version(&pending("p", "2.0.0", "k2"))
        .await
        .unwrap();
    meta.commit_version("p", "2.0.0", "k2", &one_file("k2", 6, "def"), &[], &[])
        .await
        .unwrap();
    let removed = meta
        .delete_version(
            "p",
            "1.0.0",
            None,
            event(EventType::VersionDeleted, Some("p"), Some("1.0.0")),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(removed.blob_key, "k1");
    let gone = meta
        .delete_product("p", event(EventType::ProductDeleted, Some("p"), None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gone.versions.len(), 1);
    let events = all_events(meta).await;
    assert_eq!(events[0].kind, EventType::ProductDeleted);
    assert_eq!(events[0].details, json!({ "versions": 1, "grants": 1 }));
    assert_eq!(events[1].kind, EventType::VersionDeleted);
    assert_eq!(events[1].details["checksum"], "abc");
    assert_eq!(events[1].details["size"], 5);
}

async fn audit_pages_are_newest_first_filtered_and_continue_at_their_cursor(meta: &dyn MetaStore) {
    product(meta, "p").await;
    product(meta, "q").await;
    let mut written = Vec::new();
    for i in 0..7 {
        let p = if i % 2 == 0 { "p" } else { "q" };
        let e = event(EventType::GrantSet, Some(p), None);
        meta.set_grant(
            p,
            "tok_00000000000000aa",
            Grant::ALL,
            std::slice::from_ref(&e),
        )
        .await
        .unwrap();
        written.push(e);
    }
    let only_p = EventFilter {
        product: Some("p".into()),
        ..EventFilter::default()
    };
    let first = meta.events_page(&only_p, 3).await.unwrap();
    let ids: Vec<&str> = first.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [&written[6].id, &written[4].id, &written[2].id]);
    let next = first.next_before.expect("a cursor after a full page");
    let second = meta
        .events_page(
            &EventFilter {
                before_id: Some(next),
                ..only_p.clone()
            },
            3,
        )
        .await
        .unwrap();
    let ids: Vec<&str> = second.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [written[0].id.as_str()]);
    assert_eq!(second.next_before, None);
    let by_type = EventFilter {
        kind: Some(EventType::TokenCreated),
        ..EventFilter::default()
    };
    assert!(
        meta.events_page(&by_type, 10)
            .await
            .unwrap()
            .events
            .is_empty()
    );
    let after = meta.events_after(&written[4].id, 10).await.unwrap();
    assert_eq!(after, written[5..].to_vec());
    assert_eq!(meta.newest_event_id().await.unwrap(), written[6].id);
    assert_eq!(
        meta.event(&written[3].id).await.unwrap().as_ref(),
        Some(&written[3])
    );
}

async fn old_events_are_pruned(meta: &dyn MetaStore) {
    product(meta, "p").await;
    let mut old = event(EventType::GrantSet, Some("p"), None);
    old.id = event_id(now_ms() - 10 * 86_400_000, 1);
    let new = event(EventType::GrantSet, Some("p"), None);
    for e in [&old, &new] {
        meta.set_grant(
            "p",
            "tok_00000000000000aa",
            Grant::ALL,
            std::slice::from_ref(e),
        )
        .await
        .unwrap();
    }
    assert_eq!(meta.prune_events(now_ms() - 86_400_000).await.unwrap(), 1);
    assert_eq!(all_events(meta).await, vec![new.clone()]);
    let only_p = EventFilter {
        product: Some("p".into()),
        ..EventFilter::default()
    };
    assert_eq!(
        meta.events_page(&only_p, 10).await.unwrap().events,
        vec![new]
    );
}

fn webhook(id: &str) -> WebhookRecord {
    WebhookRecord {
        id: id.into(),
        url: "https://example.com/hook".into(),
        events: vec!["*".into()],
        product: None,
        secret: "s".repeat(20),
        created_at: now_ms(),
        created_by: "tok_00000000000000aa".into(),
        cursor: String::new(),
        lease_owner: None,
        lease_until: 0,
    }
}

async fn a_webhook_lease_is_held_by_one_owner_until_it_lapses(meta: &dyn MetaStore) {
    meta.insert_webhook(&webhook("wh_00000000000000aa"), &[])
        .await
        .unwrap();
    let now = now_ms();
    assert!(
        meta.lease_webhook("wh_00000000000000aa", "a", now, now + 1000)
            .await
            .unwrap()
    );
    assert!(
        !meta
            .lease_webhook("wh_00000000000000aa", "b", now + 10, now + 2000)
            .await
            .unwrap()
    );
    assert!(
        meta.lease_webhook("wh_00000000000000aa", "a", now + 20, now + 3000)
            .await
            .unwrap()
    );
    assert!(
        meta.lease_webhook("wh_00000000000000aa", "b", now + 3001, now + 4000)
            .await
            .unwrap()
    );
    assert!(
        !meta
            .lease_webhook("wh_0000000000000bad", "a", now, now + 1000)
            .await
            .unwrap()
    );
}

fn delivery(hook: &str, event_id: &str) -> DeliveryRecord {
    DeliveryRecord {
        webhook_id: hook.into(),
        event_id: event_id.into(),
        event_type: "grant.set".into(),
        state: DeliveryState::Pending,
        attempts: 0,
        last_status: None,
        last_error: None,
        first_attempt_at: None,
        last_attempt_at: None,
        next_attempt_at: now_ms(),
    }
}

async fn deliveries_are_queued_once_by_the_lease_holder_and_come_out_in_event_order(
    meta: &dyn MetaStore,
) {
    let id = "wh_00000000000000aa";
    meta.insert_webhook(&webhook(id), &[]).await.unwrap();
    let now = now_ms();
    let (e1, e2) = (event_id(now, 1), event_id(now, 2));
    assert!(
        !meta
            .queue_deliveries(id, "a", &[delivery(id, &e1)], &e1)
            .await
            .unwrap(),
        "no lease, no queuing"
    );
    assert!(
        meta.lease_webhook(id, "a", now, now + 10_000)
            .await
            .unwrap()
    );
    assert!(
        meta.queue_deliveries(id, "a", &[delivery(id, &e2), delivery(id, &e1)], &e2)
            .await
            .unwrap()
    );
    assert_eq!(meta.webhook(id).await.unwrap().unwrap().cursor, e2);
    let head = meta.next_delivery(id).await.unwrap().unwrap();
    assert_eq!(head.event_id, e1);
    let mut done = head.clone();
    done.state = DeliveryState::Delivered;
    done.attempts = 1;
    meta.save_delivery(&done).await.unwrap();
    // Queuing the same event again keeps its state; the cursor never goes back.
    assert!(
        meta.queue_deliveries(id, "a", &[delivery(id, &e1)], &e1)
            .await
            .unwrap()
    );
    assert_eq!(meta.webhook(id).await.unwrap().unwrap().cursor, e2);
    assert_eq!(
        meta.delivery(id, &e1).await.unwrap().unwrap().state,
        DeliveryState::Delivered
    );
    assert_eq!(meta.next_delivery(id).await.unwrap().unwrap().event_id, e2);
    let listed: Vec<String> = meta
        .deliveries(id, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.event_id)
        .collect();
    assert_eq!(listed, [e2.clone(), e1.clone()], "newest first");
    assert!(meta.delete_webhook(id, &[]).await.unwrap());
    assert!(meta.deliveries(id, 10).await.unwrap().is_empty());
    assert!(matches!(
        meta.save_delivery(&delivery(id, &e1)).await,
        Err(MetaError::NotFound)
    ));
}

async fn the_first_file_creates_the_draft_once_and_each_file_records_its_events(
    meta: &dyn MetaStore,
) {
    product(meta, "p").await;
    let created = event(EventType::DraftCreated, Some("p"), Some("1.0.0"));
    let up1 = event(EventType::FileUploaded, Some("p"), Some("1.0.0"));
    let up2 = event(EventType::FileUploaded, Some("p"), Some("1.0.0"));
    let never = event(EventType::DraftCreated, Some("p"), Some("1.0.0"));
    assert!(
        meta.add_draft_file(
            &draft("p", "1.0.0"),
            &file("a", "k1", 1, "aa"),
            std::slice::from_ref(&created),
            std::slice::from_ref(&up1)
        )
        .await
        .unwrap()
    );
    assert!(
        !meta
            .add_draft_file(
                &draft("p", "1.0.0"),
                &file("b", "k2", 2, "bb"),
                std::slice::from_ref(&never),
                std::slice::from_ref(&up2)
            )
            .await
            .unwrap()
    );
    assert_eq!(
        all_events(meta).await,
        vec![up2, up1, created],
        "newest first"
    );
    let v = meta.version("p", "1.0.0").await.unwrap().unwrap();
    assert_eq!(v.state, VersionState::Draft);
    let names: Vec<&str> = v.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(meta.blob_key_in_use("k2").await.unwrap());
    assert!(matches!(
        meta.add_draft_file(&draft("nope", "1.0.0"), &file("a", "k9", 1, "aa"), &[], &[])
            .await,
        Err(MetaError::NotFound)
    ));
}

async fn a_draft_refuses_a_taken_name_and_a_published_version_any_file(meta: &dyn MetaStore) {
    product(meta, "p").await;
    meta.add_draft_file(&draft("p", "1.0.0"), &file("a", "k1", 1, "aa"), &[], &[])
        .await
        .unwrap();
    let refused = event(EventType::FileUploaded, Some("p"), Some("1.0.0"));
    assert!(matches!(
        meta.add_draft_file(
            &draft("p", "1.0.0"),
            &file("a", "k2", 1, "aa"),
            &[],
            std::slice::from_ref(&refused)
        )
        .await,
        Err(MetaError::Asset(AssetRefusal::FileExists))
    ));
    meta.reserve_version(&pending("p", "2.0.0", "k3"))
        .await
        .unwrap();
    meta.commit_version("p", "2.0.0", "k3", &one_file("k3", 1, "cc"), &[], &[])
        .await
        .unwrap();
    assert!(matches!(
        meta.add_draft_file(&draft("p", "2.0.0"), &file("b", "k4", 1, "aa"), &[], &[])
            .await,
        Err(MetaError::Conflict)
    ));
    meta.reserve_version(&pending("p", "3.0.0", "k5"))
        .await
        .unwrap();
    assert!(matches!(
        meta.add_draft_file(&draft("p", "3.0.0"), &file("b", "k6", 1, "aa"), &[], &[])
            .await,
        Err(MetaError::Pending)
    ));
    assert!(matches!(
        meta.reserve_version(&pending("p", "1.0.0", "k7")).await,
        Err(MetaError::Conflict)
    ));
    assert!(all_events(meta).await.is_empty());
}

async fn publishing_checks_the_file_list_and_seals_the_draft_with_its_labels(meta: &dyn MetaStore) {
    product(meta, "p").await;
    let e = || event(EventType::VersionPublished, Some("p"), Some("1.0.0"));
    assert!(matches!(
        meta.publish_draft("p", "1.0.0", None, &[], now_ms(), e())
            .await,
        Err(MetaError::NotFound)
    ));
    for (name, key) in [("b", "k1"), ("a", "k2")] {
        meta.add_draft_file(&draft("p", "1.0.0"), &file(name, key, 1, "aa"), &[], &[])
            .await
            .unwrap();
    }
    let wrong = vec!["a".to_string()];
    assert!(matches!(
        meta.publish_draft("p", "1.0.0", Some(&wrong), &[], now_ms(), e())
            .await,
        Err(MetaError::Asset(AssetRefusal::FilesMismatch))
    ));
    assert!(meta.version("p", "1.0.0").await.unwrap().unwrap().state == VersionState::Draft);
    let label = Label {
        key: "channel".into(),
        value: "beta".into(),
    };
    let right = vec!["a".to_string(), "b".to_string()];
    let published = e();
    let record = meta
        .publish_draft(
            "p",
            "1.0.0",
            Some(&right),
            std::slice::from_ref(&label),
            now_ms(),
            published.clone(),
        )
        .await
        .unwrap();
    assert_eq!(record.state, VersionState::Committed);
    assert_eq!(
        record.file_name, "b",
        "the first committed file is the primary"
    );
    assert_eq!(record.labels, vec![label.clone()]);
    let stored = meta.version("p", "1.0.0").await.unwrap().unwrap();
    assert_eq!(stored, record);
    assert_eq!(
        meta.first_version_of_kind("p", &[VersionKind::Release], Some(&label))
            .await
            .unwrap()
            .map(|v| v.version),
        Some("1.0.0".to_string())
    );
    assert!(matches!(
        meta.publish_draft("p", "1.0.0", None, &[], now_ms(), e())
            .await,
        Err(MetaError::Conflict)
    ));
    let events = all_events(meta).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id, published.id);
    assert_eq!(events[0].details["files"].as_array().map(Vec::len), Some(2));
    assert_eq!(events[0].details["labels"]["channel"], "beta");
    // An empty draft cannot be published.
    meta.add_draft_file(&draft("p", "2.0.0"), &file("x", "k3", 1, "aa"), &[], &[])
        .await
        .unwrap();
    meta.remove_draft_file("p", "2.0.0", "x", &[])
        .await
        .unwrap();
    assert!(matches!(
        meta.publish_draft("p", "2.0.0", None, &[], now_ms(), e())
            .await,
        Err(MetaError::Asset(AssetRefusal::EmptyVersion))
    ));
}

async fn a_file_leaves_a_draft_but_never_a_published_version(meta: &dyn MetaStore) {
    product(meta, "p").await;
    meta.add_draft_file(&draft("p", "1.0.0"), &file("a", "k1", 1, "aa"), &[], &[])
        .await
        .unwrap();
    let removed_event = event(EventType::FileDeleted, Some("p"), Some("1.0.0"));
    let removed = meta
        .remove_draft_file("p", "1.0.0", "a", std::slice::from_ref(&removed_event))
        .await
        .unwrap();
    assert_eq!(removed.blob_key, "k1");
    assert!(!meta.blob_key_in_use("k1").await.unwrap());
    assert!(matches!(
        meta.remove_draft_file("p", "1.0.0", "a", &[]).await,
        Err(MetaError::Asset(AssetRefusal::FileNotFound))
    ));
    meta.reserve_version(&pending("p", "2.0.0", "k2"))
        .await
        .unwrap();
    meta.commit_version("p", "2.0.0", "k2", &one_file("k2", 1, "aa"), &[], &[])
        .await
        .unwrap();
    assert!(matches!(
        meta.remove_draft_file("p", "2.0.0", "a.bin", &[]).await,
        Err(MetaError::Asset(AssetRefusal::Published))
    ));
    assert!(matches!(
        meta.remove_draft_file("p", "9.0.0", "a", &[]).await,
        Err(MetaError::NotFound)
    ));
    assert_eq!(all_events(meta).await, vec![removed_event]);
}

async fn labels_change_with_one_event_and_an_unchanged_set_records_none(meta: &dyn MetaStore) {
    product(meta, "p").await;
    meta.reserve_version(&pending("p", "1.0.0", "k1"))
        .await
        .unwrap();
    meta.commit_version("p", "1.0.0", "k1", &one_file("k1", 1, "aa"), &[], &[])
        .await
        .unwrap();
    let changes = std::collections::BTreeMap::from([
        ("channel".to_string(), Some("stable".to_string())),
        ("gone".to_string(), None),
    ]);
    let labeled = event(EventType::VersionLabeled, Some("p"), Some("1.0.0"));
    let labels = meta
        .set_labels("p", "1.0.0", &changes, labeled.clone())
        .await
        .unwrap();
    assert_eq!(
        labels,
        vec![Label {
            key: "channel".into(),
            value: "stable".into()
        }]
    );
    let again = event(EventType::VersionLabeled, Some("p"), Some("1.0.0"));
    meta.set_labels("p", "1.0.0", &changes, again)
        .await
        .unwrap();
    let events = all_events(meta).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].details["set"]["channel"], "stable");
    let bad = std::collections::BTreeMap::from([("Bad Key".to_string(), Some("x".to_string()))]);
    let e = event(EventType::VersionLabeled, Some("p"), Some("1.0.0"));
    assert!(matches!(
        meta.set_labels("p", "1.0.0", &bad, e).await,
        Err(MetaError::Asset(AssetRefusal::InvalidLabel(_)))
    ));
    let e = event(EventType::VersionLabeled, Some("p"), Some("9.0.0"));
    assert!(matches!(
        meta.set_labels("p", "9.0.0", &changes, e).await,
        Err(MetaError::NotFound)
    ));
}

async fn only_drafts_idle_past_the_cutoff_expire_and_drafts_are_never_latest(meta: &dyn MetaStore) {
    product(meta, "p").await;
    meta.add_draft_file(&draft("p", "9.0.0"), &file("a", "k1", 1, "aa"), &[], &[])
        .await
        .unwrap();
    assert_eq!(
        meta.first_version_of_kind("p", &[VersionKind::Release], None)
            .await
            .unwrap(),
        None
    );
    assert!(
        meta.versions_page("p", None, 10, false, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        meta.versions_page("p", None, 10, true, None)
            .await
            .unwrap()
            .len(),
        1
    );
    let long_ago = now_ms() - 60_000;
    assert!(meta.idle_drafts(long_ago).await.unwrap().is_empty());
    let e = || event(EventType::VersionDeleted, Some("p"), Some("9.0.0"));
    assert_eq!(
        meta.delete_version("p", "9.0.0", Some(long_ago), e())
            .await
            .unwrap(),
        None
    );
    let later = now_ms() + 1;
    assert_eq!(meta.idle_drafts(later).await.unwrap().len(), 1);
    let expired = meta
        .delete_version("p", "9.0.0", Some(later), e())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(expired.blob_keys(), vec!["k1".to_string()]);
    assert!(!meta.blob_key_in_use("k1").await.unwrap());
}

async fn a_one_request_upload_of_several_files_publishes_them_all_with_the_first_as_primary(
    meta: &dyn MetaStore,
) {
    product(meta, "p").await;
    meta.reserve_version(&pending("p", "1.0.0", "k1"))
        .await
        .unwrap();
    let files = vec![
        file("x.tar.gz", "k1", 3, "aa"),
        file("x.sig", "k2", 4, "bb"),
    ];
    let label = Label {
        key: "os".into(),
        value: "linux".into(),
    };
    meta.commit_version(
        "p",
        "1.0.0",
        "k1",
        &files,
        std::slice::from_ref(&label),
        &[],
    )
    .await
    .unwrap();
    let v = meta.version("p", "1.0.0").await.unwrap().unwrap();
    assert_eq!(
        (v.file_name.as_str(), v.size, v.blob_key.as_str()),
        ("x.tar.gz", 3, "k1")
    );
    assert_eq!(v.all_files().len(), 2);
    assert_eq!(v.labels, vec![label.clone()]);
    assert!(meta.blob_key_in_use("k2").await.unwrap());
    assert_eq!(
        meta.versions_page("p", None, 10, false, Some(&label))
            .await
            .unwrap()
            .len(),
        1
    );
    let other = Label {
        key: "os".into(),
        value: "mac".into(),
    };
    assert!(
        meta.versions_page("p", None, 10, false, Some(&other))
            .await
            .unwrap()
            .is_empty()
    );
    let e = event(EventType::VersionDeleted, Some("p"), Some("1.0.0"));
    let removed = meta
        .delete_version("p", "1.0.0", None, e)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(removed.blob_keys().len(), 2);
    assert!(!meta.blob_key_in_use("k2").await.unwrap());
}

async fn publish_one(meta: &dyn MetaStore, product: &str, version: &str, key: &str) {
    meta.reserve_version(&pending(product, version, key))
        .await
        .unwrap();
    meta.commit_version(product, version, key, &one_file(key, 3, "abc"), &[], &[])
        .await
        .unwrap();
}

async fn retention_expires_only_the_judged_upload_with_its_event(meta: &dyn MetaStore) {
    product(meta, "p").await;
    publish_one(meta, "p", "1.0.0", "k1").await;
    let expired = event(EventType::VersionExpired, Some("p"), Some("1.0.0"));
    // Another upload of the same name (deleted and pushed again since it was judged).
    assert!(
        meta.expire_version("p", "1.0.0", "k-other", expired.clone())
            .await
            .unwrap()
            .is_none()
    );
    assert!(meta.version("p", "1.0.0").await.unwrap().is_some());
    let gone = meta
        .expire_version("p", "1.0.0", "k1", expired.clone())
        .await
        .unwrap()
        .expect("the judged upload is expired");
    assert_eq!(gone.blob_key, "k1");
    assert!(meta.version("p", "1.0.0").await.unwrap().is_none());
    assert!(!meta.blob_key_in_use("k1").await.unwrap());
    // Once: a second run finds nothing.
    assert!(
        meta.expire_version("p", "1.0.0", "k1", expired.clone())
            .await
            .unwrap()
            .is_none()
    );
    let events = all_events(meta).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventType::VersionExpired);
    assert_eq!(events[0].details["file_name"], "a.bin");
    // A draft is never expired by retention.
    meta.add_draft_file(&draft("p", "2.0.0"), &file("d.bin", "kd", 1, "d"), &[], &[])
        .await
        .unwrap();
    assert!(
        meta.expire_version("p", "2.0.0", "", expired)
            .await
            .unwrap()
            .is_none()
    );
}

async fn settings_changes_return_and_record_the_old_settings(meta: &dyn MetaStore) {
    use depot::domain::retention::ProductSettings;
    product(meta, "p").await;
    let mut first = ProductSettings::default();
    first.retention.keep_last = Some(3);
    let changed = event(EventType::SettingsChanged, Some("p"), None);
    let old = meta
        .set_product_settings("p", Some(&first), changed.clone())
        .await
        .unwrap();
    assert_eq!(old, None);
    let mut second = first.clone();
    second.retention.keep_last = Some(5);
    let old = meta
        .set_product_settings(
            "p",
            Some(&second),
            event(EventType::SettingsChanged, Some("p"), None),
        )
        .await
        .unwrap();
    assert_eq!(old, Some(first.clone()));
    assert_eq!(
        meta.product("p").await.unwrap().unwrap().settings,
        Some(second)
    );
    let events = all_events(meta).await;
    assert_eq!(events.len(), 2);
    assert!(
        events
            .iter()
            .any(|e| e.details["old"]["retention"]["keep_last"] == 3)
    );
    assert!(matches!(
        meta.set_product_settings("missing", Some(&first), changed)
            .await,
        Err(MetaError::NotFound)
    ));
    assert_eq!(all_events(meta).await.len(), 2);
}

async fn a_download_is_noted_only_when_the_last_note_is_stale(meta: &dyn MetaStore) {
    product(meta, "p").await;
    publish_one(meta, "p", "1.0.0", "k1").await;
    meta.note_download("p", "1.0.0", 1_000, 0).await.unwrap();
    assert_eq!(
        meta.version("p", "1.0.0")
            .await
            .unwrap()
            .unwrap()
            .last_download_at,
        Some(1_000)
    );
    // Noted at 1000: not stale before 500, so nothing is written.
    meta.note_download("p", "1.0.0", 2_000, 500).await.unwrap();
    assert_eq!(
        meta.version("p", "1.0.0")
            .await
            .unwrap()
            .unwrap()
            .last_download_at,
        Some(1_000)
    );
    meta.note_download("p", "1.0.0", 3_000, 1_500)
        .await
        .unwrap();
    assert_eq!(
        meta.version("p", "1.0.0")
            .await
            .unwrap()
            .unwrap()
            .last_download_at,
        Some(3_000)
    );
    // Missing versions are no error, and nothing records an event.
    meta.note_download("p", "9.9.9", 3_000, 1_500)
        .await
        .unwrap();
    assert!(all_events(meta).await.is_empty());
}

async fn a_named_lease_is_held_by_one_owner_until_it_lapses_or_its_owner_releases_it(
    meta: &dyn MetaStore,
) {
    let now = now_ms();
    assert!(
        meta.take_lease("retention:p", "a", now, now + 60_000)
            .await
            .unwrap()
    );
    assert!(
        !meta
            .take_lease("retention:p", "b", now, now + 60_000)
            .await
            .unwrap()
    );
    assert!(
        meta.take_lease("retention:p", "a", now, now + 90_000)
            .await
            .unwrap()
    );
    assert!(
        meta.take_lease("retention:q", "b", now, now + 60_000)
            .await
            .unwrap()
    );
    // Lapsed: anyone may take it.
    assert!(
        meta.take_lease("retention:p", "b", now + 100_000, now + 160_000)
            .await
            .unwrap()
    );
    // Released by its owner (a time in the past): free again.
    assert!(
        meta.take_lease("retention:p", "b", now, now - 1)
            .await
            .unwrap()
    );
    assert!(
        meta.take_lease("retention:p", "c", now, now + 60_000)
            .await
            .unwrap()
    );
    // Given back: only by its holder, and free at once.
    meta.release_lease("retention:p", "b").await.unwrap();
    assert!(
        !meta
            .take_lease("retention:p", "b", now, now + 60_000)
            .await
            .unwrap(),
        "a release by another owner leaves the lease held"
    );
    meta.release_lease("retention:p", "c").await.unwrap();
    assert!(
        meta.take_lease("retention:p", "b", now, now + 60_000)
            .await
            .unwrap()
    );
    // Releasing a lease no one holds, or one never taken, is no error.
    meta.release_lease("retention:p", "b").await.unwrap();
    meta.release_lease("retention:p", "b").await.unwrap();
    meta.release_lease("upload:never", "x").await.unwrap();
}

fn reservation(
    id: &str,
    product: &str,
    version: &str,
    blob_key: &str,
    bytes: u64,
) -> QuotaReservation {
    QuotaReservation {
        id: id.into(),
        product: product.into(),
        version: version.into(),
        blob_key: blob_key.into(),
        bytes,
        lease_until: now_ms() + 60_000,
    }
}

fn bytes_quota(max_bytes: u64) -> depot::domain::retention::QuotaPolicy {
    depot::domain::retention::QuotaPolicy {
        max_bytes: Some(max_bytes),
        max_versions: None,
    }
}

async fn usage_of(meta: &dyn MetaStore, product: &str) -> ProductUsage {
    meta.product_usage(product, now_ms())
        .await
        .unwrap()
        .expect("the product exists")
}

async fn usage_counts_files_of_published_versions_and_drafts_and_live_uploads(
    meta: &dyn MetaStore,
) {
    product(meta, "p").await;
    product(meta, "q").await;
    assert_eq!(usage_of(meta, "p").await, ProductUsage::default());
    assert!(
        meta.product_usage("nope", now_ms())
            .await
            .unwrap()
            .is_none()
    );
    // A two-file version, a draft with one file, an upload in flight with 100 reserved.
    meta.reserve_version(&pending("p", "1.0.0", "k1"))
        .await
        .unwrap();
    let files = vec![file("a", "k1", 10, "aa"), file("b", "k2", 20, "bb")];
    meta.commit_version("p", "1.0.0", "k1", &files, &[], &[])
        .await
        .unwrap();
    meta.add_draft_file(&draft("p", "2.0.0"), &file("c", "k3", 40, "cc"), &[], &[])
        .await
        .unwrap();
    meta.reserve_version(&pending("p", "3.0.0", "k4"))
        .await
        .unwrap();
    let held = reservation("qr_1", "p", "3.0.0", "k4", 100);
    meta.reserve_quota(&held, &bytes_quota(1000), now_ms())
        .await
        .unwrap()
        .unwrap();
    // Another product's bytes are its own.
    publish_one(meta, "q", "1.0.0", "kq").await;
    assert_eq!(
        usage_of(meta, "p").await,
        ProductUsage {
            bytes: 170,
            versions: 3,
            files: 3,
            drafts: 1,
            in_flight_bytes: 100,
        }
    );
    // Released, the reservation counts no more; the pending version still does.
    meta.release_quota_reservation("qr_1").await.unwrap();
    let u = usage_of(meta, "p").await;
    assert_eq!((u.bytes, u.versions, u.in_flight_bytes), (70, 3, 0));
    assert_eq!(usage_of(meta, "q").await.bytes, 3);
}

async fn a_reservation_past_a_quota_is_refused_and_writes_nothing(meta: &dyn MetaStore) {
    product(meta, "p").await;
    publish_one(meta, "p", "1.0.0", "k1").await;
    let quota = bytes_quota(100);
    meta.reserve_quota(
        &reservation("qr_1", "p", "2.0.0", "k2", 90),
        &quota,
        now_ms(),
    )
    .await
    .unwrap()
    .unwrap();
    let refused = meta
        .reserve_quota(
            &reservation("qr_2", "p", "3.0.0", "k3", 8),
            &quota,
            now_ms(),
        )
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (refused.quota, refused.usage, refused.limit),
        ("max_bytes", 101, 100)
    );
    // Exactly to the limit is fine; the refused one left nothing behind.
    meta.reserve_quota(
        &reservation("qr_3", "p", "3.0.0", "k3", 7),
        &quota,
        now_ms(),
    )
    .await
    .unwrap()
    .unwrap();
    let u = usage_of(meta, "p").await;
    assert_eq!((u.bytes, u.in_flight_bytes, u.versions), (100, 97, 3));
    assert!(matches!(
        meta.reserve_quota(&reservation("qr_4", "nope", "1", "k", 1), &quota, now_ms())
            .await,
        Err(MetaError::NotFound)
    ));
}

async fn a_reservation_grows_by_its_id_and_stops_counting_once_committed_or_lapsed(
    meta: &dyn MetaStore,
) {
    product(meta, "p").await;
    let quota = bytes_quota(1000);
    meta.reserve_version(&pending("p", "1.0.0", "k1"))
        .await
        .unwrap();
    meta.reserve_quota(
        &reservation("qr_1", "p", "1.0.0", "k1", 100),
        &quota,
        now_ms(),
    )
    .await
    .unwrap()
    .unwrap();
    // Growing by the same id asks for the new total, and only the difference is judged
    // (so it is refused past the quota like any).
    meta.reserve_quota(
        &reservation("qr_1", "p", "1.0.0", "k1", 400),
        &quota,
        now_ms(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(usage_of(meta, "p").await.in_flight_bytes, 400);
    assert!(
        meta.reserve_quota(
            &reservation("qr_1", "p", "1.0.0", "k1", 1001),
            &quota,
            now_ms()
        )
        .await
        .unwrap()
        .is_err()
    );
    // Committed under its blob key: its bytes are the files' (350), not counted twice,
    // even before the upload releases the reservation.
    meta.commit_version("p", "1.0.0", "k1", &one_file("k1", 350, "aa"), &[], &[])
        .await
        .unwrap();
    let u = usage_of(meta, "p").await;
    assert_eq!((u.bytes, u.in_flight_bytes, u.versions), (350, 0, 1));
    // A reservation whose lease lapsed counts nothing, and the prune removes it.
    let mut lapsed = reservation("qr_2", "p", "2.0.0", "k2", 500);
    lapsed.lease_until = now_ms() - 1;
    meta.reserve_quota(&lapsed, &quota, now_ms() - 10)
        .await
        .unwrap()
        .unwrap();
    let u = usage_of(meta, "p").await;
    assert_eq!((u.bytes, u.versions), (350, 1));
    // Growing a lapsed reservation takes all of it again: 350 + 501 > 800.
    let refused = meta
        .reserve_quota(
            &reservation("qr_2", "p", "2.0.0", "k2", 501),
            &bytes_quota(800),
            now_ms(),
        )
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!((refused.usage, refused.limit), (851, 800));
    // So is one that was removed meanwhile (pruned after an outage): its whole total.
    let refused = meta
        .reserve_quota(
            &reservation("qr_gone", "p", "3.0.0", "k3", 700),
            &bytes_quota(1000),
            now_ms(),
        )
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.usage, 1050);
    assert!(
        meta.renew_quota_reservation("qr_1", now_ms() + 60_000)
            .await
            .unwrap()
    );
    assert_eq!(meta.prune_quota_reservations(now_ms()).await.unwrap(), 1);
    assert!(
        !meta
            .renew_quota_reservation("qr_2", now_ms() + 60_000)
            .await
            .unwrap()
    );
    meta.release_quota_reservation("qr_1").await.unwrap();
    meta.release_quota_reservation("qr_1").await.unwrap();
    assert!(
        !meta
            .renew_quota_reservation("qr_1", now_ms() + 60_000)
            .await
            .unwrap()
    );
}

async fn max_versions_counts_a_version_once_whatever_holds_it(meta: &dyn MetaStore) {
    product(meta, "p").await;
    let quota = depot::domain::retention::QuotaPolicy {
        max_bytes: None,
        max_versions: Some(2),
    };
    publish_one(meta, "p", "1.0.0", "k1").await;
    // A new version, held by its reservation and its pending record: one version.
    meta.reserve_quota(
        &reservation("qr_1", "p", "2.0.0", "k2", 5),
        &quota,
        now_ms(),
    )
    .await
    .unwrap()
    .unwrap();
    meta.reserve_version(&pending("p", "2.0.0", "k2"))
        .await
        .unwrap();
    assert_eq!(usage_of(meta, "p").await.versions, 2);
    let refused = meta
        .reserve_quota(
            &reservation("qr_2", "p", "3.0.0", "k3", 5),
            &quota,
            now_ms(),
        )
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (refused.quota, refused.usage, refused.limit),
        ("max_versions", 3, 2)
    );
    // More for a version the product holds is no new version.
    meta.reserve_quota(
        &reservation("qr_3", "p", "1.0.0", "k4", 5),
        &quota,
        now_ms(),
    )
    .await
    .unwrap()
    .unwrap();
    // A pending record whose lease lapsed holds no version.
    meta.release_quota_reservation("qr_1").await.unwrap();
    let mut stale = pending("p", "2.0.0", "k2");
    stale.lease_until = Some(now_ms() - 1);
    meta.remove_pending_version("p", "2.0.0", "k2", &[])
        .await
        .unwrap();
    meta.reserve_version(&stale).await.unwrap();
    assert_eq!(usage_of(meta, "p").await.versions, 1);
}

fn trust_policy(id: &str, product: &str, issuer: &str) -> depot::domain::trust::TrustPolicy {
    depot::domain::trust::TrustPolicy {
        id: id.into(),
        product: product.into(),
        issuer: issuer.into(),
        claims: [("repository".to_string(), "org/repo".to_string())].into(),
        permissions: depot::domain::trust::TrustPermissions {
            upload: true,
            ..Default::default()
        },
        ttl_seconds: 600,
        created_at: now_ms(),
        created_by: "tok_00000000000000aa".into(),
    }
}

async fn trust_policies_are_kept_per_product_found_by_issuer_and_go_with_their_product(
    meta: &dyn MetaStore,
) {
    product(meta, "p").await;
    product(meta, "q").await;
    let created = event(EventType::TrustCreated, Some("p"), None);
    meta.insert_trust_policy(
        &trust_policy("trust_1", "p", "https://a"),
        2,
        std::slice::from_ref(&created),
    )
    .await
    .unwrap();
    meta.insert_trust_policy(&trust_policy("trust_2", "p", "https://b"), 2, &[])
        .await
        .unwrap();
    // The limit is checked with the insert.
    assert!(matches!(
        meta.insert_trust_policy(&trust_policy("trust_9", "p", "https://b"), 2, &[])
            .await,
        Err(MetaError::Conflict)
    ));
    meta.insert_trust_policy(&trust_policy("trust_3", "q", "https://a"), 64, &[])
        .await
        .unwrap();
    assert!(matches!(
        meta.insert_trust_policy(&trust_policy("trust_4", "nope", "https://a"), 64, &[])
            .await,
        Err(MetaError::NotFound)
    ));
    let ids = |policies: Vec<depot::domain::trust::TrustPolicy>| {
        let mut ids: Vec<String> = policies.into_iter().map(|p| p.id).collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(meta.trust_policies("p").await.unwrap()),
        ["trust_1", "trust_2"]
    );
    assert_eq!(
        ids(meta.trust_policies_of_issuer("https://a").await.unwrap()),
        ["trust_1", "trust_3"]
    );
    let stored = meta.trust_policies_of_issuer("https://b").await.unwrap();
    assert_eq!(stored[0].claims["repository"], "org/repo");
    assert_eq!(stored[0].ttl_seconds, 600);
    let deleted = event(EventType::TrustDeleted, Some("p"), None);
    assert!(
        meta.delete_trust_policy("p", "trust_2", std::slice::from_ref(&deleted))
            .await
            .unwrap()
    );
    assert!(
        !meta
            .delete_trust_policy("p", "trust_2", std::slice::from_ref(&deleted))
            .await
            .unwrap()
    );
    // Another product's id is not this product's.
    assert!(!meta.delete_trust_policy("p", "trust_3", &[]).await.unwrap());
    let kinds: Vec<EventType> = all_events(meta).await.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventType::TrustDeleted)
            .count(),
        1
    );
    assert!(kinds.contains(&EventType::TrustCreated));
    // A deleted product takes its policies along.
    meta.delete_product("p", event(EventType::ProductDeleted, Some("p"), None))
        .await
        .unwrap();
    assert!(meta.trust_policies("p").await.unwrap().is_empty());
    assert_eq!(
        ids(meta.trust_policies_of_issuer("https://a").await.unwrap()),
        ["trust_3"]
    );
}

async fn an_oidc_token_id_is_used_once_until_it_is_pruned(meta: &dyn MetaStore) {
    let now = now_ms();
    assert!(
        meta.use_token_once("https://a", "jti-1", now + 60_000)
            .await
            .unwrap()
    );
    assert!(
        !meta
            .use_token_once("https://a", "jti-1", now + 60_000)
            .await
            .unwrap()
    );
    // The same id from another issuer is another token.
    assert!(
        meta.use_token_once("https://b", "jti-1", now - 1)
            .await
            .unwrap()
    );
    assert_eq!(meta.prune_used_tokens(now).await.unwrap(), 1);
    assert!(
        !meta
            .use_token_once("https://a", "jti-1", now + 60_000)
            .await
            .unwrap()
    );
    assert!(
        meta.use_token_once("https://b", "jti-1", now + 60_000)
            .await
            .unwrap()
    );
}

fn upload_session(id: &str, created_by: &str, created_at: i64, expires_at: i64) -> UploadSession {
    UploadSession {
        id: id.to_string(),
        kind: UploadKind::Resumable,
        product: "p".into(),
        version: "v1".into(),
        file_name: "a.bin".into(),
        draft: false,
        length: 20 << 20,
        checksum: Some("ab".repeat(32)),
        blob_key: format!("p/v1/{}", "c".repeat(32)),
        created_by: created_by.into(),
        created_at,
        expires_at,
        quota_reservation: None,
        offset: 0,
        hash_state: depot::digest::ResumableSha256::new().save(),
        stored: Default::default(),
        completed: false,
    }
}

async fn an_upload_session_is_stored_once_and_saved_only_from_its_current_offset(
    meta: &dyn MetaStore,
) {
    let now = now_ms();
    let id = format!("{:032x}", SEQ.fetch_add(1, Ordering::SeqCst) + now as u64);
    let session = upload_session(&id, "tok_a", now, now + 60_000);
    meta.insert_upload_session(&session).await.unwrap();
    assert!(matches!(
        meta.insert_upload_session(&session).await,
        Err(MetaError::Conflict)
    ));
    assert_eq!(
        meta.upload_session(&id).await.unwrap(),
        Some(session.clone())
    );

    // Progress with the parts a store reported.
    let moved = UploadSession {
        offset: 8 << 20,
        hash_state: "x".into(),
        stored: depot::blob::ResumePoint {
            session: "mpu-1".into(),
            parts: vec![depot::blob::StoredPart {
                number: 1,
                size: 8 << 20,
                etag: "\"e1\"".into(),
                crc32c: "AAAAAA==".into(),
            }],
            tail: 0,
        },
        ..session.clone()
    };
    assert!(meta.save_upload_session(&moved, (0, false)).await.unwrap());
    // A stale writer (still at offset 0) cannot roll it back.
    assert!(
        !meta
            .save_upload_session(&session, (0, false))
            .await
            .unwrap()
    );
    assert_eq!(meta.upload_session(&id).await.unwrap(), Some(moved.clone()));
    let done = UploadSession {
        completed: true,
        ..moved.clone()
    };
    assert!(
        !meta
            .save_upload_session(&done, (8 << 20, true))
            .await
            .unwrap()
    );
    assert!(
        meta.save_upload_session(&done, (8 << 20, false))
            .await
            .unwrap()
    );
    assert_eq!(meta.upload_session(&id).await.unwrap(), Some(done));

    assert!(meta.delete_upload_session(&id).await.unwrap());
    assert!(!meta.delete_upload_session(&id).await.unwrap());
    assert_eq!(meta.upload_session(&id).await.unwrap(), None);
    assert!(!meta.save_upload_session(&moved, (0, false)).await.unwrap());
}

async fn upload_sessions_are_listed_per_token_and_found_when_expired(meta: &dyn MetaStore) {
    let now = now_ms();
    let base = SEQ.fetch_add(10, Ordering::SeqCst) + now as u64;
    let token_a = format!("tok_a{base}");
    let token_b = format!("tok_b{base}");
    let sessions = [
        upload_session(&format!("{:032x}", base), &token_a, now - 3000, now - 1000),
        upload_session(
            &format!("{:032x}", base + 1),
            &token_a,
            now - 2000,
            now + 60_000,
        ),
        upload_session(
            &format!("{:032x}", base + 2),
            &token_b,
            now - 1000,
            now + 60_000,
        ),
    ];
    for s in &sessions {
        meta.insert_upload_session(s).await.unwrap();
    }
    let of_a = meta.upload_sessions(Some(&token_a), 10).await.unwrap();
    assert_eq!(
        of_a,
        vec![sessions[0].clone(), sessions[1].clone()],
        "oldest first"
    );
    assert_eq!(
        meta.upload_sessions(Some(&token_a), 1).await.unwrap().len(),
        1
    );
    assert_eq!(
        meta.upload_sessions(Some(&token_b), 10).await.unwrap(),
        vec![sessions[2].clone()]
    );
    let all: Vec<String> = meta
        .upload_sessions(None, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    for s in &sessions {
        assert!(all.contains(&s.id));
    }
    let expired: Vec<String> = meta
        .expired_upload_sessions(now, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert!(expired.contains(&sessions[0].id));
    assert!(!expired.contains(&sessions[1].id));
    assert!(!expired.contains(&sessions[2].id));
    for s in &sessions {
        meta.delete_upload_session(&s.id).await.unwrap();
    }
}
