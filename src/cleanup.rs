//! Cleanup work spawned from `Drop` (aborting a blob, removing a pending record), and
//! request handlers that run on after their client left, are tracked here, so shutdown
//! can wait for them instead of killing them half-way.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;
use tokio_util::task::TaskTracker;

fn tracker() -> &'static TaskTracker {
    static TRACKER: OnceLock<TaskTracker> = OnceLock::new();
    TRACKER.get_or_init(TaskTracker::new)
}

/// Spawns `task` on the current runtime, if there is one.
pub fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    if tokio::runtime::Handle::try_current().is_ok() {
        tracker().spawn(task);
    }
}

/// Spawns `task` on the current runtime as tracked work and returns its handle.
pub fn spawn_tracked<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tracker().spawn(task)
}

/// Waits (bounded) for every cleanup task spawned so far.
pub async fn drain(limit: Duration) {
    let tracker = tracker();
    tracker.close();
    if tokio::time::timeout(limit, tracker.wait()).await.is_err() {
        tracing::warn!(
            "cleanup tasks still running at exit; the janitor finishes them at next start"
        );
    }
}
