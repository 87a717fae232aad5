//! The accept loop. HTTP/1.1 connections are served by hyper with a timer, so that no
//! client holds a connection (and its file descriptor) for as long as it likes:
//!
//! - a request's headers must arrive within `DEPOT_HEADER_TIMEOUT_SECONDS` (hyper also
//!   times the wait for the next request on a kept-alive connection with it);
//! - a kept-alive connection with no request for `DEPOT_KEEPALIVE_TIMEOUT_SECONDS` is closed;
//! - at most `DEPOT_MAX_CONNECTIONS` connections are served at once; further clients wait
//!   in the listen queue until one ends. The soft open-file limit is raised to the hard one
//!   at start, and the connection limit must leave room below it for files and backend
//!   sockets, so `accept` never fails for want of a descriptor.
//!
//! Shutdown: once `stop` turns true no connection is accepted, every open one finishes its
//! running request and closes (hyper's graceful shutdown), and [`serve`] returns when all
//! are gone.

use crate::config::Settings;
use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

/// Default of `DEPOT_MAX_CONNECTIONS` when the open-file limit allows it.
const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Descriptors never given to connections: listener, logs, the embedded database, the
/// backends' connection pools.
const FD_HEADROOM: u64 = 256;

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub keepalive: Duration,
    pub max_connections: usize,
    /// The soft open-file limit in effect after raising it.
    pub open_files: u64,
}

impl ConnectionLimits {
    /// Raises the soft open-file limit to the hard one and fits the connection limit below
    /// it: each connection may hold a second descriptor (an upload's blob file), and
    /// [`FD_HEADROOM`] stay free. An explicit `DEPOT_MAX_CONNECTIONS` that does not fit is
    /// an error; the default shrinks to fit.
    pub fn fit(settings: &Settings) -> anyhow::Result<ConnectionLimits> {
        let nofile = raise_open_file_limit();
        let budget = usize::try_from(nofile.saturating_sub(FD_HEADROOM) / 2).unwrap_or(usize::MAX);
        let max_connections = match settings.max_connections {
            Some(n) => {
                anyhow::ensure!(
                    n <= budget,
                    "DEPOT_MAX_CONNECTIONS={n} does not fit the open-file limit of {nofile}: \
                     at most {budget} (half of the limit minus {FD_HEADROOM}); raise the hard \
                     limit (ulimit -Hn, LimitNOFILE=) or lower DEPOT_MAX_CONNECTIONS"
                );
                n
            }
            None => {
                anyhow::ensure!(
                    budget >= 1,
                    "the open-file limit of {nofile} leaves no room for connections; raise it \
                     (ulimit -Hn, LimitNOFILE=) above {}",
                    FD_HEADROOM + 2
                );
                DEFAULT_MAX_CONNECTIONS.min(budget)
            }
        };
        Ok(ConnectionLimits {
            header_timeout: Duration::from_secs(settings.header_timeout_seconds),
            keepalive: Duration::from_secs(settings.keepalive_timeout_seconds),
            max_connections,
            open_files: nofile,
        })
    }
}

/// Sets the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit in effect.
fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            tracing::warn!("getrlimit(RLIMIT_NOFILE) failed; assuming 1024 open files");
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            } else {
                tracing::warn!(
                    soft = limit.rlim_cur,
                    hard = limit.rlim_max,
                    "cannot raise the open-file limit"
                );
            }
        }
    }
    limit.rlim_cur
}

/// Resolves once `stop` is true (never, if its sender is gone without saying so).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Accepts and serves connections until `stop` turns true, then waits for the open ones
/// to finish (see the module documentation).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = tokio_util::task::TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        // A permit first: over the limit, clients wait in the listen queue.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = stopping(&mut stop) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(err) => {
                    if !is_connection_error(&err) {
                        // EMFILE/ENFILE and the like: wait for descriptors to free up.
                        tracing::error!(error = %err, "accept failed");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(100)) => {}
                            () = stopping(&mut stop) => break,
                        }
                    }
                    continue;
                }
            },
            () = stopping(&mut stop) => break,
        };
        connections.spawn(serve_connection(
            http.clone(),
            stream,
            app.clone(),
            limits.keepalive,
            stop.clone(),
            permit,
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Errors of one connection that was never really there (the client gave up first).
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn serve_connection(
    http: hyper::server::conn::http1::Builder,
    stream: TcpStream,
    app: Router,
    keepalive: Duration,
    mut stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        // Called once the request's headers are in: the connection is busy until the
        // response body has been sent (or dropped).
        let busy = requests.begin();
        let app = app.clone();
        async move {
            let response = app.oneshot(req.map(Body::new)).await;
            response.map(|r| r.map(|body| Tracked { body, _busy: busy }))
        }
    });
    let conn = http.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection closed with an error");
                }
                break;
            }
            () = stopping(&mut stop), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = activity.idle_for(keepalive), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What a connection is doing, for the keep-alive timeout.
struct Activity {
    /// Requests whose response is not fully sent yet.
    in_flight: AtomicUsize,
    /// Bytes arrived since the connection last went idle: the next request's headers are
    /// on their way, and the header timeout governs.
    reading: AtomicBool,
    idle_since: Mutex<Instant>,
    changed: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            reading: AtomicBool::new(false),
            idle_since: Mutex::new(Instant::now()),
            changed: Notify::new(),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    fn idle_since(&self) -> Instant {
        match self.idle_since.lock() {
            Ok(since) => *since,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// Resolves once the connection has been idle (no request running, no byte of a new
    /// one received) for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let changed = self.changed.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 && !self.reading.load(Ordering::SeqCst) {
                let deadline = self.idle_since() + limit;
                if Instant::now() >= deadline {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(deadline.into()) => {}
                    () = changed => {}
                }
            } else {
                changed.await;
            }
        }
    }
}

/// One running request; dropping it (the response sent) may leave the connection idle.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            match activity.idle_since.lock() {
                Ok(mut since) => *since = Instant::now(),
                Err(poisoned) => *poisoned.into_inner() = Instant::now(),
            }
            activity.reading.store(false, Ordering::SeqCst);
            activity.changed.notify_one();
        }
    }
}

/// A response body that keeps its request counted as running until it is sent.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The TCP stream, noting when bytes arrive on an idle connection.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && this.activity.in_flight.load(Ordering::SeqCst) == 0
        {
            this.activity.reading.store(true, Ordering::SeqCst);
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
