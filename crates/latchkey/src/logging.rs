//! Log lines of `serve`, `gate` and `sidecar`: formatted on the request's thread, written to
//! stdout by a thread of their own.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;

use latchkey_server::{Clock as _, SystemClock};
use tracing_subscriber::EnvFilter;

/// Log lines waiting for the writer thread. When the writer falls this far behind, logging
/// waits for it rather than drop a line.
const LOG_BUFFER_LINES: usize = 64 * 1024;

/// How long the writer thread lets lines gather once one is waiting, so that a busy server
/// writes many lines per system call and wakes the writer a few hundred times a second at
/// most, rather than once per line.
const LOG_GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// How long, when the process ends, the writer thread is given to write out what is left
/// (stdout may be a pipe nobody reads).
const LOG_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Logs to stdout, filtered by RUST_LOG (default `info`), from a thread of its own: a request
/// appends its access-log line to a shared buffer and goes on; the thread writes whatever has
/// gathered every few milliseconds (see [`LogQueue`]). Keep the guard until the process ends:
/// it writes out what is still buffered when dropped.
pub fn init_logging() -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = LogQueue::start(std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .event_format(LineFormat::default())
        .with_writer(writer)
        .init();
    guard
}

/// The log line format: tracing-subscriber's default (`Full`, without the target), except
/// that access-log lines (one per OAuth request) are written by [`write_access_line`], which
/// gives the same bytes for a quarter of the work: the general formatter converts the time
/// with `core::fmt` padding and writes every field through `core::fmt` (issue 15, item 7; the
/// tests below compare the two).
struct LineFormat {
    full: tracing_subscriber::fmt::format::Format<
        tracing_subscriber::fmt::format::Full,
        tracing_subscriber::fmt::time::SystemTime,
    >,
}

impl Default for LineFormat {
    fn default() -> Self {
        LineFormat {
            full: tracing_subscriber::fmt::format().with_target(false),
        }
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for LineFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        // The fast path covers what the access log emits: no colours, no enclosing span, no
        // field that `DefaultVisitor` writes in a way of its own.
        let metadata = event.metadata();
        if metadata.target() == latchkey_server::http::access_log::TARGET
            && !writer.has_ansi_escapes()
            && ctx.event_scope().is_none()
            && metadata.fields().iter().all(|field| {
                let name = field.name();
                name != "message" && !name.starts_with("r#") && !name.starts_with("log.")
            })
            && let Some(written) = write_access_line(&mut writer, SystemClock.now(), event)
        {
            return written;
        }
        self.full.format_event(ctx, writer, event)
    }
}

/// `2026-12-07T02:02:19.804521Z  INFO path=/oauth2/token client_id="…" outcome="issued"
/// status=200 latency_us=124`: what `Format<Full>` writes without a target or ANSI colours,
/// for an event whose fields are plain values (see [`FastFields`]). The line is put together
/// in a buffer on the stack and handed over with one call; `None` when it does not fit there
/// (then nothing was written).
fn write_access_line(
    writer: &mut tracing_subscriber::fmt::format::Writer<'_>,
    now: std::time::SystemTime,
    event: &tracing::Event<'_>,
) -> Option<std::fmt::Result> {
    let mut line = LineBuf::default();
    // RFC 3339 in UTC with microseconds, as tracing-subscriber's `SystemTime` timer writes it;
    // an error after the year 9999 (the general formatter then writes the line).
    write!(line, "{}", humantime::format_rfc3339_micros(now)).ok()?;
    line.push(match *event.metadata().level() {
        tracing::Level::TRACE => b" TRACE ",
        tracing::Level::DEBUG => b" DEBUG ",
        tracing::Level::INFO => b"  INFO ",
        tracing::Level::WARN => b"  WARN ",
        tracing::Level::ERROR => b" ERROR ",
    });
    let mut fields = FastFields {
        line: &mut line,
        first: true,
    };
    event.record(&mut fields);
    line.push(b"\n");
    Some(writer.write_str(line.as_str()?))
}

/// A line being put together: up to [`LineBuf::CAPACITY`] bytes, else it overflows.
struct LineBuf {
    bytes: [u8; LineBuf::CAPACITY],
    len: usize,
    overflowed: bool,
}

impl Default for LineBuf {
    fn default() -> Self {
        LineBuf {
            bytes: [0; LineBuf::CAPACITY],
            len: 0,
            overflowed: false,
        }
    }
}

impl LineBuf {
    /// An access-log line is about 130 bytes, under 400 with the longest client id (255
    /// characters); a longer one takes the general path.
    const CAPACITY: usize = 512;

    fn push(&mut self, bytes: &[u8]) {
        match self.bytes.get_mut(self.len..self.len + bytes.len()) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            None => self.overflowed = true,
        }
    }

    /// `value` in decimal.
    fn push_decimal(&mut self, mut value: u64) {
        let mut digits = [0; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        self.push(&digits[start..]);
    }

    /// The line, unless it overflowed. Only whole `str`s, digits and ASCII were pushed, so
    /// this is UTF-8.
    fn as_str(&self) -> Option<&str> {
        if self.overflowed {
            return None;
        }
        std::str::from_utf8(&self.bytes[..self.len]).ok()
    }
}

impl std::fmt::Write for LineBuf {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.push(text.as_bytes());
        Ok(())
    }
}

/// Writes fields as tracing-subscriber's `DefaultVisitor` does (`name=value`, separated by
/// spaces; strings quoted and escaped as `Debug` does; other values by their `Debug`), with
/// strings and integers copied in directly rather than through `core::fmt`. Fields named
/// `message`, `r#…` or `log.…` never come here (see [`LineFormat`]); nor do error values
/// (`record_error`), which the access log does not have.
struct FastFields<'a> {
    line: &'a mut LineBuf,
    first: bool,
}

impl FastFields<'_> {
    fn name(&mut self, field: &tracing::field::Field) {
        if !std::mem::take(&mut self.first) {
            self.line.push(b" ");
        }
        self.line.push(field.name().as_bytes());
        self.line.push(b"=");
    }
}

impl tracing::field::Visit for FastFields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.name(field);
        // `Debug` leaves printable ASCII other than `"` and `\` as it is.
        if value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
        {
            self.line.push(b"\"");
            self.line.push(value.as_bytes());
            self.line.push(b"\"");
        } else {
            // Writing to a LineBuf cannot fail.
            let _ = write!(self.line, "{value:?}");
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.name(field);
        self.line.push_decimal(value);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.name(field);
        let _ = write!(self.line, "{value:?}");
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`: how long the timestamp at the start of a line is.
#[cfg(test)]
const TIMESTAMP_LEN: usize = 27;

/// Formatted log lines on their way to stdout: loggers append to one buffer under a mutex,
/// and a writer thread takes the whole buffer at once and writes it with one system call.
///
/// This replaces tracing-appender's non-blocking writer, which sent each line (copied into a
/// `Vec` of its own) through a channel whose receiving thread spun and yielded while waiting
/// for the next line: under load that thread used a fifth of the server's CPU (issue 15,
/// item 7). Here the writer sleeps until a line arrives, then lets lines gather for
/// [`LOG_GATHER`]; loggers wake it only when it is waiting, so at most once per gathering.
/// Bounded and never lossy, as before: with [`LOG_BUFFER_LINES`] lines waiting, a logger
/// waits for the writer.
pub struct LogQueue {
    state: std::sync::Mutex<Pending>,
    /// The writer waits here for a first line.
    line_arrived: std::sync::Condvar,
    /// Loggers wait here while the buffer is full.
    room: std::sync::Condvar,
}

struct Pending {
    bytes: Vec<u8>,
    lines: usize,
    /// The writer is waiting on `line_arrived`.
    writer_waiting: bool,
    /// Loggers waiting on `room`.
    loggers_waiting: usize,
    /// The guard was dropped: the writer writes what is left and ends; later lines are
    /// written by their loggers.
    closed: bool,
}

impl LogQueue {
    /// Starts the writer thread for `out` (stdout but in tests): the `MakeWriter` loggers use,
    /// and the guard.
    fn start<W: std::io::Write + Send + 'static>(out: W) -> (LogWriter, LogGuard) {
        let queue = Arc::new(LogQueue {
            state: std::sync::Mutex::new(Pending {
                bytes: Vec::with_capacity(64 * 1024),
                lines: 0,
                writer_waiting: false,
                loggers_waiting: 0,
                closed: false,
            }),
            line_arrived: std::sync::Condvar::new(),
            room: std::sync::Condvar::new(),
        });
        let (finished, writer_done) = std::sync::mpsc::channel::<()>();
        let writer_queue = Arc::clone(&queue);
        let spawned = std::thread::Builder::new()
            .name("latchkey-log".into())
            .spawn(move || {
                writer_queue.write_out(out);
                drop(finished);
            });
        if spawned.is_err() {
            // No thread: loggers write their own lines (see `push`).
            queue.lock().closed = true;
        }
        (
            LogWriter(Arc::clone(&queue)),
            LogGuard { queue, writer_done },
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues one formatted line (one event), waiting while the buffer is full. Once the
    /// writer thread is gone, writes it to stdout (where `init_logging` sends lines) itself.
    fn push(&self, line: &[u8]) {
        let mut pending = self.lock();
        while pending.lines >= LOG_BUFFER_LINES && !pending.closed {
            pending.loggers_waiting += 1;
            pending = self
                .room
                .wait(pending)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            pending.loggers_waiting -= 1;
        }
        if pending.closed {
            // The writer is gone (the process is ending): write it here, in order.
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line);
            let _ = out.flush();
            return;
        }
        pending.bytes.extend_from_slice(line);
        pending.lines += 1;
        if pending.writer_waiting {
            pending.writer_waiting = false;
            self.line_arrived.notify_one();
        }
    }

    /// The writer thread: waits for a line, lets more gather, takes them all and writes them.
    /// Returns once closed and empty. Write errors lose those lines, as a full disk or a
    /// closed stdout would anyway; they never stop the loggers.
    fn write_out(&self, mut out: impl std::io::Write) {
        let mut batch = Vec::with_capacity(64 * 1024);
        loop {
            let mut pending = self.lock();
            while pending.lines == 0 && !pending.closed {
                pending.writer_waiting = true;
                pending = self
                    .line_arrived
                    .wait(pending)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            pending.writer_waiting = false;
            if pending.lines == 0 {
                return;
            }
            // Unless closing or already far behind, let lines gather for one system call.
            if !pending.closed && pending.lines < LOG_BUFFER_LINES / 2 {
                drop(pending);
                std::thread::sleep(LOG_GATHER);
                pending = self.lock();
            }
            std::mem::swap(&mut pending.bytes, &mut batch);
            pending.lines = 0;
            if pending.loggers_waiting > 0 {
                self.room.notify_all();
            }
            drop(pending);
            let _ = out.write_all(&batch);
            let _ = out.flush();
            batch.clear();
            // After a burst, do not keep a large buffer around.
            batch.shrink_to(1024 * 1024);
        }
    }
}

/// What the fmt layer writes each formatted event to: the [`LogQueue`].
#[derive(Clone)]
pub struct LogWriter(Arc<LogQueue>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = &'a LogQueue;

    fn make_writer(&'a self) -> Self::Writer {
        &self.0
    }
}

/// The fmt layer writes each event with one `write_all`, so each `write` is one line.
impl std::io::Write for &LogQueue {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes out the lines still queued when dropped (waiting at most [`LOG_DRAIN_TIMEOUT`]).
pub struct LogGuard {
    queue: Arc<LogQueue>,
    writer_done: std::sync::mpsc::Receiver<()>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let mut pending = self.queue.lock();
        pending.closed = true;
        if pending.writer_waiting {
            pending.writer_waiting = false;
            self.queue.line_arrived.notify_one();
        }
        if pending.loggers_waiting > 0 {
            self.queue.room.notify_all();
        }
        drop(pending);
        // The writer drops its end when it returns.
        let _ = self.writer_done.recv_timeout(LOG_DRAIN_TIMEOUT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_server::http::access_log::log_line;
    use std::sync::Mutex;

    /// A `MakeWriter` collecting everything written into one buffer.
    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Collect {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Collect {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    /// The lines `emit` logs through latchkey's format and through tracing-subscriber's
    /// default one, without ANSI colours.
    fn both_formats(emit: impl Fn()) -> (Vec<String>, Vec<String>) {
        let (ours, default) = (Collect::default(), Collect::default());
        let writer = ours.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(LineFormat::default())
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, &emit);
        let writer = default.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_target(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, &emit);
        (ours.lines(), default.lines())
    }

    #[test]
    fn access_lines_are_what_the_default_format_writes() {
        let emit = || {
            log_line("/oauth2/token", "Qx3_-e9.~Z", "issued", 200, 0);
            log_line(
                "/auth/oauth2/revoke",
                "-",
                "invalid_request",
                400,
                1_234_567,
            );
            log_line(
                "/oauth2/token",
                "unknown:6382b3cc881412b7",
                "invalid_client",
                401,
                53,
            );
            // Nothing the server logs, but the same bytes all the same.
            log_line("/p q", "a\"b\\c", "x\u{1b}[31my", 503, u64::MAX);
            log_line("/é", "naïve ∑ 🦀\n\t", "\u{7f}\u{0}", 0, 10);
            tracing::info!(target: latchkey_server::http::access_log::TARGET, path = %"/x", bool_field = true, signed = -5_i64);
            // Longer than the fast path's buffer, inside a span, and other events: the general
            // formatter.
            log_line("/oauth2/token", &"x".repeat(600), "issued", 200, 1);
            let span = tracing::info_span!("outer", id = 7);
            let _entered = span.enter();
            log_line("/oauth2/token", "in-span", "issued", 200, 9);
            tracing::warn!(answer = 42, "not an access line");
        };
        let (ours, default) = both_formats(emit);
        assert_eq!(ours.len(), 9, "{ours:?}");
        assert_eq!(ours.len(), default.len());
        for (ours, default) in ours.iter().zip(&default) {
            // The clock moved between the two; the rest is the same.
            assert_eq!(ours[TIMESTAMP_LEN..], default[TIMESTAMP_LEN..]);
            for line in [ours, default] {
                let stamp = line.as_bytes();
                assert!(
                    stamp[4] == b'-' && stamp[10] == b'T' && stamp[19] == b'.' && stamp[26] == b'Z',
                    "{line}"
                );
            }
        }
        assert!(ours[0].ends_with(
            r#" INFO path=/oauth2/token client_id="Qx3_-e9.~Z" outcome="issued" status=200 latency_us=0"#
        ));

        // Which lines took the fast path: a general formatter showing targets tells them apart.
        let lines = Collect::default();
        let writer = lines.clone();
        let format = LineFormat {
            full: tracing_subscriber::fmt::format().with_target(true),
        };
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(format)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let general: Vec<bool> = lines
            .lines()
            .iter()
            .map(|line| line.contains(": "))
            .collect();
        assert_eq!(
            general,
            [false, false, false, false, false, false, true, true, true]
        );
    }

    /// A writer that holds every write until `open` is set.
    #[derive(Clone, Default)]
    struct Gate {
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
        out: Collect,
    }

    impl std::io::Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (open, opened) = &*self.open;
            let mut open = open.lock().unwrap();
            while !*open {
                open = opened.wait(open).unwrap();
            }
            self.out.write(buf)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_log_queue_keeps_every_line_in_order_and_waits_when_full() {
        let gate = Gate::default();
        let (writer, guard) = LogQueue::start(gate.clone());
        let loggers: Vec<_> = (0..4)
            .map(|thread| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..LOG_BUFFER_LINES * 3 / 4 {
                        let mut queue = tracing_subscriber::fmt::MakeWriter::make_writer(&writer);
                        queue
                            .write_all(format!("{thread} {i}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        // The writer is stuck with its first batch, so the loggers fill the buffer (more than
        // twice its size is logged) and then wait for room.
        while writer.0.lock().loggers_waiting == 0 {
            std::thread::yield_now();
        }
        let (open, opened) = &*gate.open;
        *open.lock().unwrap() = true;
        opened.notify_all();
        for logger in loggers {
            logger.join().unwrap();
        }
        drop(guard);
        let lines = gate.out.lines();
        assert_eq!(lines.len(), 3 * LOG_BUFFER_LINES);
        let mut next = [0; 4];
        for line in lines {
            let (thread, i) = line.split_once(' ').unwrap();
            let thread: usize = thread.parse().unwrap();
            assert_eq!(i.parse::<usize>().unwrap(), next[thread], "in order");
            next[thread] += 1;
        }
    }
}
