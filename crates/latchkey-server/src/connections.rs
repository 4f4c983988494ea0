//! Serving HTTP/1.1 connections with limits, for `latchkey serve`, `gate` and `sidecar`, plain
//! or TLS. Every resource a peer can hold has a bound and a deadline:
//!
//! - at most [`ConnectionLimits::max_connections`] connections (TLS handshakes included); at
//!   the cap, a new connection closes an idle one, else one still sending its head, else a
//!   request still waiting for its body (oldest first), or waits until one closes when every
//!   one is serving a request;
//! - a new connection's first request head (and its TLS handshake) must arrive within the
//!   header-read timeout; on a kept-alive connection, the next request may wait for the idle
//!   timeout, and once its first byte arrives its head must be complete within the header-read
//!   timeout;
//! - a request head may not exceed [`ConnectionLimits::max_header_bytes`] (431 beyond);
//! - a request body must be read completely within the body timeout of the request's start;
//! - a response write that makes no progress for the idle timeout closes the connection;
//! - on shutdown, the listener closes, idle connections close at once, a request head still
//!   arriving gets a second to complete, in-flight requests finish, and whatever is left after
//!   the shutdown timeout is cut.
//!
//! The read deadlines live in [`DeadlineIo`], which wraps the socket and knows, from the
//! connection's [`Phase`], which deadline applies; the service marks a request's start and its
//! response body's end.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::Request;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower::Service as _;

use crate::tls::TlsPeer;

/// What a peer may hold, and for how long. Every field has a flag on `serve`, `gate` and
/// `sidecar`; the defaults are [`ConnectionLimits::DEFAULT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A new connection's TLS handshake and first request head, or a request head once its
    /// first byte has arrived, must be complete within this.
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no request in progress is closed after this.
    pub idle_timeout: Duration,
    /// A request's body must be read completely within this of the request's start.
    pub body_timeout: Duration,
    /// The largest request head (request line and headers) read; larger heads get 431.
    pub max_header_bytes: usize,
    /// Connections open at once; at the cap, a new one closes the oldest one not serving a
    /// request, or waits.
    pub max_connections: usize,
    /// After shutdown begins, in-flight requests get this long to finish.
    pub shutdown_timeout: Duration,
}

impl ConnectionLimits {
    /// The defaults: a 10 s header-read timeout, 60 s idle, a 30 s body deadline, 32 KiB
    /// request heads, 10,000 connections (lowered to fit the open-file limit), 30 s to drain.
    pub const DEFAULT: ConnectionLimits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        body_timeout: Duration::from_secs(30),
        max_header_bytes: 32 * 1024,
        max_connections: 10_000,
        shutdown_timeout: Duration::from_secs(30),
    };

    /// hyper reads at least this much at once, so heads may not be limited to less.
    pub const MIN_HEADER_BYTES: usize = 8 * 1024;

    /// Refuses limits that cannot work: zero durations or connections, tiny header buffers.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_header_bytes < Self::MIN_HEADER_BYTES {
            return Err(format!(
                "the request head limit must be at least {} bytes",
                Self::MIN_HEADER_BYTES
            ));
        }
        if self.max_connections == 0 {
            return Err("the connection limit must be at least 1".into());
        }
        let durations = [
            ("header-read", self.header_read_timeout),
            ("idle", self.idle_timeout),
            ("body", self.body_timeout),
        ];
        match durations.iter().find(|(_, d)| d.is_zero()) {
            Some((name, _)) => Err(format!("the {name} timeout must be more than zero")),
            None => Ok(()),
        }
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How many of the oldest connections the first eviction pass looks at for an idle one.
const EVICTION_SCAN: usize = 64;

/// Once shutdown begins, a request head that is still arriving gets this long to complete.
const SHUTDOWN_HEAD_GRACE: Duration = Duration::from_secs(1);

/// Open files kept for the database, logs and outbound connections when the connection cap is
/// fitted to the open-file limit.
const RESERVED_FILES: u64 = 64;

/// The connection cap to use: `wanted`, lowered so that connections cannot exhaust the
/// process's open-file limit (read from `/proc/self/limits` where there is one), so that an
/// accept never fails for lack of a file descriptor while the server still needs one.
pub fn fit_to_file_limit(wanted: usize) -> usize {
    let Some(soft) = open_file_limit() else {
        return wanted;
    };
    let room = usize::try_from(soft.saturating_sub(RESERVED_FILES).max(1)).unwrap_or(usize::MAX);
    if room < wanted {
        tracing::warn!(
            wanted,
            open_file_limit = soft,
            using = room,
            "the connection limit is lowered to fit the open-file limit; raise `ulimit -n` to \
             serve more connections at once"
        );
    }
    wanted.min(room)
}

fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// How connections are secured.
#[derive(Clone)]
pub enum Transport {
    /// Plain HTTP; handlers find the peer in `ConnectInfo<SocketAddr>`.
    Plain,
    /// TLS; handlers also find the peer's certificate chain in `ConnectInfo<TlsPeer>`.
    Tls(TlsAcceptor),
}

/// Serves `router` on `listener` until `shutdown` completes, then drains (see the module
/// documentation). Returns when every connection has closed or the shutdown timeout passed.
pub async fn serve(
    listener: TcpListener,
    transport: Transport,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let max_connections = fit_to_file_limit(limits.max_connections);
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut open = OpenConnections::new(max_connections);
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener, &slots, &mut open) => accepted,
        };
        let Some((tcp, addr, slot)) = accepted else {
            continue;
        };
        let phase = Arc::new(PhaseCell::new());
        open.push(&phase);
        let connection = Connection {
            transport: transport.clone(),
            router: router.clone(),
            limits,
            stopping: stopping.clone(),
        };
        connections.spawn(async move {
            connection.run(tcp, addr, phase).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let open = connections.len();
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open,
            left = connections.len(),
            timeout = ?limits.shutdown_timeout,
            "shutdown timeout: closing the connections still open"
        );
        connections.abort_all();
    }
}

/// Waits for a connection, then for a free slot: at the cap, a connection not serving a
/// request is closed to make room (looked for again every 50 ms while every connection is
/// serving one). `None`, after a pause, when accepting failed (out of file descriptors and
/// the like). At most one connection beyond the cap is held, here.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    open: &mut OpenConnections,
) -> Option<(TcpStream, SocketAddr, tokio::sync::OwnedSemaphorePermit)> {
    let (tcp, addr) = match listener.accept().await {
        Ok(accepted) => accepted,
        Err(error) => {
            tracing::warn!(%error, "accepting a connection failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            return None;
        }
    };
    // Responses are written whole; never let Nagle's algorithm hold one back.
    let _ = tcp.set_nodelay(true);
    let slot = loop {
        if let Ok(slot) = Arc::clone(slots).try_acquire_owned() {
            break slot;
        }
        // An evicted connection gives its slot back at once; only if it has not within a
        // second is another chosen, so one new connection does not close several.
        let wait = if open.close_one_waiting() {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(50)
        };
        if let Ok(slot) = tokio::time::timeout(wait, Arc::clone(slots).acquire_owned()).await {
            break slot.ok()?;
        }
    };
    Some((tcp, addr, slot))
}

/// Every open connection's phase, oldest first, so that at the cap the oldest one not
/// serving a request can be closed. Only the accept loop touches it.
struct OpenConnections {
    cells: std::collections::VecDeque<std::sync::Weak<PhaseCell>>,
    max: usize,
}

impl OpenConnections {
    fn new(max: usize) -> Self {
        OpenConnections {
            cells: std::collections::VecDeque::new(),
            max,
        }
    }

    /// Adds a new connection; entries of closed ones are dropped once they are as many as
    /// the cap, so the list stays within twice the cap (amortised O(1) per connection).
    fn push(&mut self, cell: &Arc<PhaseCell>) {
        if self.cells.len() >= 2 * self.max {
            self.cells.retain(|c| c.strong_count() > 0);
        }
        self.cells.push_back(Arc::downgrade(cell));
    }

    /// Chooses a connection to close, to make room for a new one, in this order: the oldest
    /// idle one (it was served and can come back); else the oldest one still sending a head
    /// (so under a flood every connection gets the same time, the cap over the arrival rate,
    /// to send its request); else the oldest request still waiting for its body. A request
    /// being served is never cut. The first pass looks at the oldest [`EVICTION_SCAN`]
    /// entries only (an idle connection further back may lose to an older half-sent one),
    /// the others at all. Whether one was chosen.
    fn close_one_waiting(&mut self) -> bool {
        use Phase::{Body, Head, Idle, New};
        while self.cells.front().is_some_and(|c| c.strong_count() == 0) {
            self.cells.pop_front();
        }
        let n = self.cells.len();
        self.evict_where(0..n.min(EVICTION_SCAN), &[Idle])
            || self.evict_where(0..n, &[Idle, New, Head])
            || self.evict_where(0..n, &[Body])
    }

    /// Evicts the first connection at `indices` in one of `phases`.
    fn evict_where(&mut self, indices: impl Iterator<Item = usize>, phases: &[Phase]) -> bool {
        for i in indices {
            let Some(cell) = self.cells.get(i).and_then(std::sync::Weak::upgrade) else {
                continue;
            };
            if cell.try_evict(phases) {
                self.cells.remove(i);
                return true;
            }
        }
        false
    }
}

struct Connection {
    transport: Transport,
    router: Router,
    limits: ConnectionLimits,
    stopping: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, tcp: TcpStream, addr: SocketAddr, phase: Arc<PhaseCell>) {
        match self.transport.clone() {
            Transport::Plain => {
                let io = DeadlineIo::new(tcp, Arc::clone(&phase), self.limits);
                self.http(io, phase, addr, None).await;
            }
            Transport::Tls(acceptor) => {
                let handshake = tokio::select! {
                    handshake = tokio::time::timeout(
                        self.limits.header_read_timeout,
                        acceptor.accept(tcp),
                    ) => handshake,
                    () = phase.evicted.notified() => return,
                    _ = self.stopping.wait_for(|stop| *stop) => return,
                };
                let Ok(Ok(stream)) = handshake else {
                    tracing::debug!(%addr, "TLS handshake failed or timed out");
                    return;
                };
                let certificates = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .filter(|chain| !chain.is_empty())
                    .map(|chain| Arc::new(chain.to_vec()));
                let peer = TlsPeer { addr, certificates };
                let io = DeadlineIo::new(stream, Arc::clone(&phase), self.limits);
                self.http(io, phase, addr, Some(peer)).await;
            }
        }
    }

    async fn http<I>(
        mut self,
        io: DeadlineIo<I>,
        phase: Arc<PhaseCell>,
        addr: SocketAddr,
        tls: Option<TlsPeer>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limits = self.limits;
        let router = self.router.clone();
        let service_phase = Arc::clone(&phase);
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            // A connection chosen to make room at the cap serves nothing more.
            let admitted = service_phase.begin_request();
            let extensions = request.extensions_mut();
            extensions.insert(ConnectInfo(addr));
            if let Some(peer) = &tls {
                extensions.insert(ConnectInfo(peer.clone()));
            }
            let deadline = Instant::now() + limits.body_timeout;
            let phase = Arc::clone(&service_phase);
            let request = request.map(|body| DeadlineBody::new(body, deadline, phase));
            let response = admitted.then(|| router.clone().call(request));
            let done = ResponseDone(Arc::clone(&service_phase));
            async move {
                let response = match response {
                    Some(response) => response.await?,
                    None => evicted_response(),
                };
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| TrackedBody { body, _done: done }),
                )
            }
        });
        let connection = http1::Builder::new()
            .max_buf_size(limits.max_header_bytes)
            .header_read_timeout(None)
            .keep_alive(true)
            .serve_connection(TokioIo::new(io), service);
        let mut connection = std::pin::pin!(connection);
        loop {
            tokio::select! {
                // The connection first: bytes already received are read before shutdown is
                // seen, so a request that arrived just before it is served, not dropped.
                biased;
                _ = connection.as_mut() => return,
                // Chosen to make room at the cap (a request that began at the same moment was
                // answered 503 and the connection closes after it).
                () = phase.evicted.notified() => {
                    if phase.get().0 == Phase::Evicting {
                        return;
                    }
                }
                _ = self.stopping.wait_for(|stop| *stop) => break,
            }
        }
        // Shutdown: no further request on this connection; a request in flight finishes; a
        // head still arriving gets a moment to complete.
        phase.close();
        connection.as_mut().graceful_shutdown();
        let _ = connection.await;
    }
}

/// Where a connection is between requests, which decides its read deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Accepted, nothing read yet: the header-read timeout runs.
    New = 0,
    /// Between requests, nothing of the next one read yet: the idle timeout runs.
    Idle = 1,
    /// Part of a request head read: the header-read timeout runs from its first byte.
    Head = 2,
    /// A request is being served: no read deadline here (the body has its own).
    InFlight = 3,
    /// A request waits for more of its body (which has its own deadline).
    Body = 4,
    /// Chosen to make room at the cap: it closes, and a request arriving now is refused.
    Evicting = 5,
}

/// A connection's phase and when it began, shared by its socket wrapper, its service, its
/// request body (which the gate polls from another task) and the accept loop (which takes
/// it to `Evicting` from its own task). Every change that another party may race with is a
/// compare-and-swap ([`PhaseCell::shift`]).
struct PhaseCell {
    phase: AtomicU8,
    /// Milliseconds from `base` to the start of shutdown; `u64::MAX` while serving.
    closing_at: AtomicU64,
    /// Told to close, to make room for a new connection at the cap.
    evicted: tokio::sync::Notify,
    /// Milliseconds from `base` to the start of the phase.
    since: AtomicU64,
    base: Instant,
}

impl PhaseCell {
    fn new() -> Self {
        PhaseCell {
            phase: AtomicU8::new(Phase::New as u8),
            closing_at: AtomicU64::new(u64::MAX),
            evicted: tokio::sync::Notify::new(),
            since: AtomicU64::new(0),
            base: Instant::now(),
        }
    }

    fn get(&self) -> (Phase, Instant) {
        let phase = match self.phase.load(Ordering::Acquire) {
            0 => Phase::New,
            1 => Phase::Idle,
            2 => Phase::Head,
            3 => Phase::InFlight,
            4 => Phase::Body,
            _ => Phase::Evicting,
        };
        let since = self.base + Duration::from_millis(self.since.load(Ordering::Acquire));
        (phase, since)
    }

    /// Moves from one of `from` to `to`, unless the phase is another; whether it moved. The
    /// accept loop (evicting) and the connection (serving) race through this.
    fn shift(&self, from: &[Phase], to: Phase) -> bool {
        let mut current = self.phase.load(Ordering::Acquire);
        loop {
            if !from.iter().any(|&p| p as u8 == current) {
                return false;
            }
            match self.phase.compare_exchange(
                current,
                to as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.since.store(self.elapsed_ms(), Ordering::Release);
                    return true;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// A request head is complete: serve it, unless the connection is being evicted.
    fn begin_request(&self) -> bool {
        self.shift(&[Phase::New, Phase::Idle, Phase::Head], Phase::InFlight)
    }

    /// Chooses this connection to make room, if it is in one of `phases`; it is told to close.
    fn try_evict(&self, phases: &[Phase]) -> bool {
        let evicted = self.shift(phases, Phase::Evicting);
        if evicted {
            self.evicted.notify_one();
        }
        evicted
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Shutdown began: a request head not complete within [`SHUTDOWN_HEAD_GRACE`] is not
    /// waited for.
    fn close(&self) {
        self.closing_at.store(self.elapsed_ms(), Ordering::Release);
    }

    fn closing_at(&self) -> Option<Instant> {
        match self.closing_at.load(Ordering::Acquire) {
            u64::MAX => None,
            ms => Some(self.base + Duration::from_millis(ms)),
        }
    }
}

/// Marks the end of a response (its body finished or dropped): the connection is idle again.
struct ResponseDone(Arc<PhaseCell>);

impl Drop for ResponseDone {
    fn drop(&mut self) {
        self.0.shift(&[Phase::InFlight, Phase::Body], Phase::Idle);
    }
}

/// The answer to a request that arrived on a connection just chosen to make room at the cap:
/// 503, try again, on a new connection.
fn evicted_response() -> http::Response<Body> {
    let mut response = http::Response::new(Body::from("the server is at its connection limit\n"));
    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

/// A response body that marks the connection idle when it is done.
struct TrackedBody {
    body: Body,
    /// Dropped with the body: that is the signal.
    _done: ResponseDone,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that fails once its deadline passes. The timer is only made when the body
/// is not already there (a small body usually arrives with the head).
struct DeadlineBody {
    body: Incoming,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    /// Marked `Body` while waiting for more of the body, so that at the cap such a request
    /// can be closed after every idle or half-sent connection.
    phase: Arc<PhaseCell>,
}

impl DeadlineBody {
    fn new(body: Incoming, deadline: Instant, phase: Arc<PhaseCell>) -> Self {
        DeadlineBody {
            body,
            deadline,
            timer: None,
            phase,
        }
    }
}

/// The body did not arrive within the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body timeout")]
pub struct BodyTimeout;

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            if self.timer.is_some() {
                self.phase.shift(&[Phase::Body], Phase::InFlight);
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        self.phase.shift(&[Phase::InFlight], Phase::Body);
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyTimeout))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, with the read deadline of the connection's phase and a stall limit on writes.
struct DeadlineIo<I> {
    io: I,
    phase: Arc<PhaseCell>,
    limits: ConnectionLimits,
    read_timer: Pin<Box<Sleep>>,
    read_deadline: Option<Instant>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<I> DeadlineIo<I> {
    fn new(io: I, phase: Arc<PhaseCell>, limits: ConnectionLimits) -> Self {
        let first = Instant::now() + limits.header_read_timeout;
        DeadlineIo {
            io,
            phase,
            limits,
            read_timer: Box::pin(tokio::time::sleep_until(first)),
            read_deadline: Some(first),
            write_timer: None,
        }
    }

    /// The read deadline now, `None` while a request is in flight.
    fn deadline(&self) -> Option<Instant> {
        let (phase, since) = self.phase.get();
        let deadline = match phase {
            Phase::New | Phase::Head => since + self.limits.header_read_timeout,
            Phase::Idle => since + self.limits.idle_timeout,
            Phase::InFlight | Phase::Body => return None,
            // Chosen to make room: no more reading.
            Phase::Evicting => since,
        };
        Some(match self.phase.closing_at() {
            Some(closing) => deadline.min(closing + SHUTDOWN_HEAD_GRACE),
            None => deadline,
        })
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

impl<I: AsyncRead + Unpin> AsyncRead for DeadlineIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    // A compare-and-swap: an eviction may have taken the phase meanwhile.
                    this.phase.shift(&[Phase::Idle], Phase::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.poll_deadline(cx) {
                Poll::Ready(()) => Poll::Ready(Err(timed_out("no complete request head in time"))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<I> DeadlineIo<I> {
    /// Ready when the read deadline of the connection's phase has passed. While a request is
    /// served there is none, but the next (idle) one is at least the idle timeout away, so
    /// the timer is set that far to look again then. The timer only ever moves to an earlier
    /// time: on a busy keep-alive connection the deadline moves later with every request,
    /// and letting the timer fire early once per period costs less than resetting it each
    /// time.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let deadline = self
                .deadline()
                .unwrap_or_else(|| Instant::now() + self.limits.idle_timeout);
            if self.read_deadline.is_none_or(|armed| armed > deadline) {
                self.read_timer.as_mut().reset(deadline);
                self.read_deadline = Some(deadline);
            }
            ready!(self.read_timer.as_mut().poll(cx));
            match self.deadline() {
                Some(deadline) if Instant::now() >= deadline => return Poll::Ready(()),
                // Fired for a deadline since moved on: set it for the real one.
                _ => self.read_deadline = None,
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> DeadlineIo<I> {
    /// A write that makes no progress for the idle timeout fails.
    fn stalled<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.write_timer = None;
            return poll;
        }
        let idle = self.limits.idle_timeout;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(timed_out("the peer stopped reading")))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.stalled(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.stalled(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.stalled(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // TLS sends close_notify here: a peer that never reads must not hold it forever.
        let poll = Pin::new(&mut self.io).poll_shutdown(cx);
        self.stalled(cx, poll)
    }
}
