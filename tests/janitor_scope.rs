//! The janitor's scope: it removes Depot's own leftovers (orphan blobs, unfinished writes)
//! and nothing else, even when other tools share the bucket, the prefix or the data
//! directory. Every test runs sweeps with a 1 s grace, every second.

mod common;

use common::*;
use std::time::Duration;

/// A 32-hex-digit id like the ones Depot's blob keys end in.
fn depot_id() -> String {
    let id = random_string(32).to_lowercase();
    id.bytes()
        .map(|b| match b {
            b'0'..=b'9' | b'a'..=b'f' => b as char,
            other => (b'a' + other % 6) as char,
        })
        .collect()
}

/// Keys another tool might use, some of them almost like Depot's.
fn foreign_keys() -> Vec<String> {
    let id = depot_id();
    vec![
        "backup.tar".to_string(),
        "other-tool/data.bin".to_string(),
        format!("unsorted/{id}.bak"),
        format!("unsorted/{}", id.to_uppercase()),
        format!("team/prod/1.0.0/{id}"),
        format!("prod/1.0.0/{id}-copy"),
        format!("prod/1.0.0/{}", &id[..30]),
    ]
}

async fn start_sweeping(builder: TestAppBuilder) -> TestApp {
    builder
        .env("DEPOT_JANITOR_INTERVAL_SECONDS", 1)
        .env("DEPOT_JANITOR_GRACE_SECONDS", 1)
        .start()
        .await
}

/// Lets a few sweeps run over everything older than the grace.
async fn let_sweeps_run() {
    tokio::time::sleep(Duration::from_millis(3500)).await;
}

#[tokio::test]
async fn the_janitor_removes_its_orphans_but_no_foreign_file_in_the_data_directory() {
    if Backend::from_env() != Backend::Embedded {
        return;
    }
    let app = start_sweeping(TestApp::builder()).await;
    let product = app.product().await;
    let kept = payload(1, 5000);
    app.upload_ok(app.admin(), &product, "1.0.0", &kept).await;

    let blobs = app.data_dir().join("blobs");
    let mut foreign: Vec<_> = foreign_keys().iter().map(|k| blobs.join(k)).collect();
    foreign.extend([
        blobs.join("notes.partial"),
        blobs.join("other-tool/upload.partial"),
        blobs.join(format!("unsorted/{}.partial.old", depot_id())),
        app.data_dir().join("backup.tar"),
    ]);
    let orphan = blobs.join(format!("{product}/2.0.0/{}", depot_id()));
    let partial = blobs.join(format!("unsorted/{}.partial", depot_id()));
    for path in foreign.iter().chain([&orphan, &partial]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"not Depot's to delete").unwrap();
    }

    eventually(
        Duration::from_secs(15),
        "the janitor removes Depot's orphan blob and partial file",
        || async { !orphan.exists() && !partial.exists() },
    )
    .await;
    let_sweeps_run().await;
    for path in &foreign {
        assert!(
            path.exists(),
            "the janitor removed a foreign file: {path:?}"
        );
    }
    assert_eq!(
        app.download(app.admin(), &product, "1.0.0").await.body,
        kept,
        "a committed version's blob stays"
    );
}

/// Puts an object and starts a multipart upload (left unfinished) under `key`.
async fn plant(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> String {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"not Depot's to delete",
        ))
        .send()
        .await
        .expect("put a foreign object");
    let upload = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("start a foreign multipart upload");
    upload.upload_id().expect("upload id").to_string()
}

/// The object keys and the (key, upload id) of the unfinished multipart uploads in
/// `bucket` under `prefix`.
async fn bucket_listing(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> (Vec<String>, Vec<(String, String)>) {
    let objects = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .expect("list objects");
    let uploads = client
        .list_multipart_uploads()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .expect("list multipart uploads");
    (
        objects
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect(),
        uploads
            .uploads()
            .iter()
            .filter_map(|u| Some((u.key()?.to_string(), u.upload_id()?.to_string())))
            .collect(),
    )
}

/// Plants foreign objects and uploads next to a Depot orphan object and a Depot
/// multipart upload under `prefix` of `bucket`, lets sweeps run, and checks that only
/// Depot's two leftovers went.
async fn assert_sweeps_spare_foreign_keys(app: &TestApp, bucket: &str, prefix: &str) {
    let client = s3_client(&app.setting("DEPOT_S3_ENDPOINT").expect("S3 endpoint"));
    let product = app.product().await;
    let kept = payload(2, 5000);
    app.upload_ok(app.admin(), &product, "1.0.0", &kept).await;

    let mut foreign = Vec::new();
    for key in foreign_keys() {
        let key = format!("{prefix}{key}");
        let id = plant(&client, bucket, &key).await;
        foreign.push((key, id));
    }
    let orphan = format!("{prefix}{product}/2.0.0/{}", depot_id());
    let unfinished = format!("{prefix}unsorted/{}", depot_id());
    plant(&client, bucket, &orphan).await;
    let unfinished_id = plant(&client, bucket, &unfinished).await;
    client
        .delete_object()
        .bucket(bucket)
        .key(&unfinished)
        .send()
        .await
        .expect("keep only the upload");

    eventually(
        Duration::from_secs(20),
        "the janitor removes Depot's orphan object and its unfinished multipart uploads",
        || async {
            let (keys, uploads) = bucket_listing(&client, bucket, prefix).await;
            !keys.contains(&orphan)
                && !uploads
                    .iter()
                    .any(|(k, id)| k == &orphan || *id == unfinished_id)
        },
    )
    .await;
    let_sweeps_run().await;
    let (keys, uploads) = bucket_listing(&client, bucket, prefix).await;
    for (key, id) in &foreign {
        assert!(
            keys.contains(key),
            "the janitor deleted a foreign object: {key}"
        );
        assert!(
            uploads.iter().any(|(k, i)| k == key && i == id),
            "the janitor aborted a foreign multipart upload: {key}"
        );
    }
    assert_eq!(
        app.download(app.admin(), &product, "1.0.0").await.body,
        kept,
        "a committed version's object stays"
    );
    for (key, id) in &foreign {
        let _ = client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .send()
            .await;
        let _ = client.delete_object().bucket(bucket).key(key).send().await;
    }
}

#[tokio::test]
async fn the_janitor_spares_foreign_objects_and_multipart_uploads_under_its_own_prefix() {
    if Backend::from_env() != Backend::Production {
        return;
    }
    let app = start_sweeping(TestApp::builder()).await;
    let bucket = app.setting("DEPOT_S3_BUCKET").expect("bucket");
    let prefix = format!("{}/", app.setting("DEPOT_S3_PREFIX").expect("prefix"));
    assert_sweeps_spare_foreign_keys(&app, &bucket, &prefix).await;
}

#[tokio::test]
async fn with_the_default_empty_prefix_the_janitor_spares_the_rest_of_the_bucket() {
    if Backend::from_env() != Backend::Production {
        return;
    }
    // A bucket of its own: with no prefix, this janitor sees the whole bucket, and the
    // shared test bucket holds other runs' data.
    let bucket = format!("depot-scope-{}", random_string(10).to_lowercase());
    let app = start_sweeping(
        TestApp::builder()
            .env("DEPOT_S3_BUCKET", &bucket)
            .env("DEPOT_S3_PREFIX", ""),
    )
    .await;
    assert_sweeps_spare_foreign_keys(&app, &bucket, "").await;
    // Leave no bucket behind.
    let client = s3_client(&app.setting("DEPOT_S3_ENDPOINT").expect("S3 endpoint"));
    let (keys, uploads) = bucket_listing(&client, &bucket, "").await;
    for (key, id) in uploads {
        let _ = client
            .abort_multipart_upload()
            .bucket(&bucket)
            .key(key)
            .upload_id(id)
            .send()
            .await;
    }
    for key in keys {
        let _ = client.delete_object().bucket(&bucket).key(key).send().await;
    }
    let _ = client.delete_bucket().bucket(&bucket).send().await;
}
