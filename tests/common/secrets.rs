//! Harness helpers for the token and secret attack tests (`tests/attacks_tokens.rs`).

use super::*;

/// A fresh raw token in Depot's format (`depot_` + 43 base62).
pub fn depot_token() -> String {
    format!("depot_{}", random_string(43))
}

/// Runs `depot serve` on a fresh data dir with `env` and expects it to refuse to start:
/// it must exit non-zero within 20 s. Returns its stderr.
pub async fn refused_start(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_depot"));
    cmd.arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("DEPOT_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("DEPOT_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("DEPOT_DATA_DIR", dir.path().join("data"))
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn the depot binary");
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("depot with {env:?} kept running instead of refusing to start"))
        .expect("wait for depot");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "depot with {env:?} exited successfully; stderr:\n{stderr}"
    );
    stderr
}

impl TestApp {
    /// Restarts on the same data dir and backends with another `DEPOT_ADMIN_TOKEN`.
    pub async fn restart_with_admin(&mut self, admin: &str) {
        self.stop().await;
        self.env
            .push(("DEPOT_ADMIN_TOKEN".to_string(), admin.to_string()));
        self.admin = admin.to_string();
        self.remember_secret(admin);
        let port = self.port;
        self.launch(Some(port)).await;
    }

    /// Sends `head` (request line and headers, without Host) with this exact `Host` value
    /// and no body over a fresh connection; reads the whole response.
    pub async fn raw_request_with_host(&self, head: &str, host: &str) -> RawReply {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to depot");
        let request = format!("{head}\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write request");
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
            .await
            .expect("response within 30 s")
            .expect("read response");
        parse_raw_response(&response)
    }
}
