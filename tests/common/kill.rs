//! Crashing the server on purpose: SIGKILL, then a start on the same data dir and port.

use super::TestApp;

impl TestApp {
    /// SIGKILL: the process dies at once, as in a crash; nothing runs its cleanup.
    pub async fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        child.start_kill().expect("SIGKILL depot");
        let _ = child.wait().await;
    }

    /// Starts the server again after `kill`, on the same data dir, port and backends.
    pub async fn start_again(&mut self) {
        let port = self.port;
        self.launch(Some(port)).await;
    }
}
