//! A request whose body the test sends piece by piece over a raw socket, reading the
//! response concurrently: for slow, stalled and endless bodies.

use super::{RawReply, TestApp, parse_raw_response};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::task::JoinHandle;

pub struct StreamingRequest {
    writer: Option<OwnedWriteHalf>,
    reader: JoinHandle<Vec<u8>>,
    pub sent: u64,
}

impl StreamingRequest {
    /// Sends the request line and headers (`head`, CRLF-separated, without the blank
    /// line; `Host` and `Connection: close` are added) and starts reading the response.
    pub async fn open(app: &TestApp, head: &str) -> StreamingRequest {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port()))
            .await
            .expect("connect to depot");
        let (mut read, mut write) = stream.into_split();
        let head = format!(
            "{head}\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            app.port()
        );
        write.write_all(head.as_bytes()).await.expect("send head");
        let reader = tokio::spawn(async move {
            let mut response = Vec::new();
            let _ = read.read_to_end(&mut response).await;
            response
        });
        StreamingRequest {
            writer: Some(write),
            reader,
            sent: 0,
        }
    }

    /// A multipart upload with a declared `Content-Length`, sent as `token`.
    pub async fn upload(
        app: &TestApp,
        token: &str,
        content_type: &str,
        content_length: u64,
    ) -> StreamingRequest {
        let head = format!(
            "POST /product/upload HTTP/1.1\r\nX-Api-Token: {token}\r\nContent-Type: {content_type}\r\nContent-Length: {content_length}"
        );
        StreamingRequest::open(app, &head).await
    }

    /// Sends `bytes`; false once the server no longer takes them (it answered and closed).
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        let Some(writer) = self.writer.as_mut() else {
            return false;
        };
        if self.reader.is_finished() {
            return false;
        }
        match tokio::time::timeout(Duration::from_secs(10), writer.write_all(bytes)).await {
            Ok(Ok(())) => {
                self.sent += bytes.len() as u64;
                true
            }
            _ => {
                self.writer = None;
                false
            }
        }
    }

    /// Sends `chunk` again and again until `limit` bytes went out or the server stops
    /// taking them; returns the bytes sent.
    pub async fn send_repeatedly(&mut self, chunk: &[u8], limit: u64) -> u64 {
        while self.sent < limit && self.send(chunk).await {}
        self.sent
    }

    /// Whether the server has finished its response (and closed the connection).
    pub fn answered(&self) -> bool {
        self.reader.is_finished()
    }

    /// The server's response, waiting up to `timeout` for it (the connection stays open
    /// meanwhile, nothing more is sent); `None` if it sent nothing.
    pub async fn response(mut self, timeout: Duration) -> Option<RawReply> {
        let bytes = tokio::time::timeout(timeout, &mut self.reader)
            .await
            .expect("the server answers in time")
            .expect("reader task");
        (!bytes.is_empty()).then(|| parse_raw_response(&bytes))
    }
}
