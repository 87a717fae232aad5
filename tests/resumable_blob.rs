//! The blob stores' resumable writes, below HTTP: the same assertions on the filesystem
//! store and on S3 (SeaweedFS, when `DEPOT_TEST_S3_ENDPOINT` is set; required with
//! `DEPOT_TEST_BACKEND=production`). A durable step reported by the writer must survive
//! the writer being dropped; a resume continues from exactly there; bytes written after
//! the last recorded step are gone; the finished object is the whole file.

use bytes::Bytes;
use depot::blob::fs::FsBlobStore;
use depot::blob::s3::S3BlobStore;
use depot::blob::{BlobStore, ResumePoint, new_blob_key};
use depot::config::S3Settings;
use futures::StreamExt;
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

async fn fs_store() -> (Box<dyn BlobStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Box::new(FsBlobStore::open(dir.path()).await.unwrap()), dir)
}

async fn s3_store() -> Option<Box<dyn BlobStore>> {
    let Ok(endpoint) = std::env::var("DEPOT_TEST_S3_ENDPOINT") else {
        assert!(
            std::env::var("DEPOT_TEST_BACKEND").as_deref() != Ok("production"),
            "DEPOT_TEST_BACKEND=production needs DEPOT_TEST_S3_ENDPOINT"
        );
        return None;
    };
    let settings = S3Settings {
        // The suite's one bucket (each new bucket costs SeaweedFS volumes), under a prefix
        // of this test's own.
        bucket: "depot-test".into(),
        endpoint: Some(endpoint),
        region: None,
        public_endpoint: None,
        force_path_style: true,
        prefix: format!("resumable_blob_{}/", uuid::Uuid::new_v4().simple()),
        create_bucket: true,
        part_size: 5 * MIB as u64,
        parts_in_flight: 2,
        buffer_wait_seconds: 5,
    };
    Some(Box::new(S3BlobStore::connect(&settings).await.unwrap()))
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

async fn read_all(store: &dyn BlobStore, key: &str) -> Vec<u8> {
    let mut stream = store.read(key, None).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

/// Writes `data[from..to]` in 256 KiB pieces cut at the writer's steps; returns the last
/// durable step reported (offset, point), if any.
async fn write_range(
    writer: &mut dyn depot::blob::ResumableWriter,
    data: &[u8],
    from: usize,
    to: usize,
) -> Option<(u64, ResumePoint)> {
    let mut at = from;
    let mut last = None;
    while at < to {
        let take = (256 * 1024).min(to - at).min(writer.room() as usize);
        writer
            .write(Bytes::copy_from_slice(&data[at..at + take]))
            .await
            .unwrap();
        at += take;
        if let Some(step) = writer.durable().await.unwrap().pop() {
            last = Some(step);
        }
    }
    last
}

async fn a_dropped_write_resumes_from_its_last_durable_step_and_finishes_whole(
    store: &dyn BlobStore,
) {
    let data = pattern(23 * MIB + 12345);
    let key = new_blob_key(Some("p"), Some("v1"));

    // First request: 13 MiB, then the connection "breaks" (the writer is dropped without
    // a checkpoint). Only the durable steps it reported count.
    let mut writer = store
        .resume(&key, &ResumePoint::default(), 0)
        .await
        .unwrap();
    let mut step = write_range(writer.as_mut(), &data, 0, 13 * MIB).await;
    // Steps still in flight when the last write returned: wait for one to land.
    for _ in 0..100 {
        if let Some(later) = writer.durable().await.unwrap().pop() {
            step = Some(later);
        }
        if step.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(writer);
    let (offset, point) = step.expect("13 MiB passes at least one durable step");
    assert!(offset > 0 && offset <= 13 * MIB as u64, "{offset}");

    // Second request resumes there and ends with a checkpoint that is not on a step.
    let mut writer = store.resume(&key, &point, offset).await.unwrap();
    write_range(writer.as_mut(), &data, offset as usize, 17 * MIB + 7).await;
    let (offset, point) = writer.checkpoint().await.unwrap();
    assert_eq!(offset, 17 * MIB as u64 + 7);
    drop(writer);

    // Third request: the rest, then finish.
    let mut writer = store.resume(&key, &point, offset).await.unwrap();
    write_range(writer.as_mut(), &data, offset as usize, data.len()).await;
    let digest = hex::encode(Sha256::digest(&data));
    writer.finish(&digest).await.unwrap();
    assert_eq!(read_all(store, &key).await, data);
    store.delete(&key).await.unwrap();
}

async fn a_small_file_written_over_several_checkpoints_is_one_object(store: &dyn BlobStore) {
    let data = pattern(3 * MIB + 1);
    let key = new_blob_key(Some("p"), Some("v2"));
    let (mut offset, mut point) = (0u64, ResumePoint::default());
    for end in [1, MIB, 2 * MIB + 3, data.len()] {
        let mut writer = store.resume(&key, &point, offset).await.unwrap();
        write_range(writer.as_mut(), &data, offset as usize, end).await;
        if end == data.len() {
            writer
                .finish(&hex::encode(Sha256::digest(&data)))
                .await
                .unwrap();
            break;
        }
        (offset, point) = writer.checkpoint().await.unwrap();
        assert_eq!(offset, end as u64);
    }
    assert_eq!(read_all(store, &key).await, data);
    store.delete(&key).await.unwrap();
}

async fn a_discarded_write_leaves_nothing(store: &dyn BlobStore) {
    let data = pattern(12 * MIB);
    let key = new_blob_key(Some("p"), Some("v3"));
    let mut writer = store
        .resume(&key, &ResumePoint::default(), 0)
        .await
        .unwrap();
    write_range(writer.as_mut(), &data, 0, data.len()).await;
    let (offset, point) = writer.checkpoint().await.unwrap();
    assert_eq!(offset, data.len() as u64);
    drop(writer);
    store.discard_resumable(&key, &point).await.unwrap();
    assert!(store.read(&key, None).await.is_err(), "no object left");
}

macro_rules! on_both {
    ($($case:ident),* $(,)?) => {
        mod on_filesystem {
            $(
                #[tokio::test]
                async fn $case() {
                    let (store, _dir) = super::fs_store().await;
                    super::$case(store.as_ref()).await;
                }
            )*
        }
        mod on_s3 {
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(store) = super::s3_store().await {
                        super::$case(store.as_ref()).await;
                    }
                }
            )*
        }
    };
}

on_both!(
    a_dropped_write_resumes_from_its_last_durable_step_and_finishes_whole,
    a_small_file_written_over_several_checkpoints_is_one_object,
    a_discarded_write_leaves_nothing,
);
