//! The websocket transport: one task per connection that decodes frames into [`Session::handle`]
//! and writes the session's queue back out. All signaling rules live in [`crate::hub`]; this
//! module owns what is about the connection itself: who may connect (origin, connection limits),
//! how big and how fast messages may be, keep-alive pings, and how a connection ends.
//!
//! Memory: an idle connection is one task, small tungstenite buffers ([`READ_BUFFER_BYTES`]),
//! one hub queue and one timer. Nothing grows unless the client sends or receives.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{Extensions, HeaderMap};
use axum::response::Response;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use shared::{ClientMessage, ErrorCode, RoomName};
use tokio::time::Instant;
use tracing::Instrument;

use crate::hub::{Closed, Ending, Frame, Handled, Session, Stretch};
use crate::limits::{client_ip, Permit, TokenBucket, UpgradeRefused};
use crate::metrics::{Rejection, SlowReason};
use crate::AppState;

/// Close codes (RFC 6455 section 7.4.1) this server uses.
pub mod close_code {
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke a rule badly enough to be dropped: it stopped reading, kept sending bad
    /// messages, or stopped answering keep-alive pings.
    pub const POLICY: u16 = 1008;
    /// A message was over `--max-message-bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// Another connection took this one's seat with the seat's resume token (the person
    /// reconnected before the server noticed this connection had died). A client must not
    /// reconnect on this code: the seat is in use elsewhere.
    pub const REPLACED: u16 = 4001;
}

/// Initial read buffer of each websocket. axum's default (128 KiB) becomes resident after the
/// first read and would dominate an idle connection's memory; signaling messages are a few
/// hundred bytes (ICE) to a few KiB (SDP), and a bigger one simply grows the buffer.
pub const READ_BUFFER_BYTES: usize = 512;

/// Outgoing frames are collected up to this size before a write: several queued messages then go
/// out in one syscall. Every batch is flushed, so nothing waits for the buffer to fill.
const WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// Most queued messages written in one batch before the task looks at its socket again.
const MAX_BATCH: usize = 32;

/// A batch stops growing at this many bytes (plus one message): the unit of progress that
/// `--write-timeout-ms` measures.
const BATCH_BYTES: usize = 64 * 1024;

/// Passcode key stretching jobs (PBKDF2, tens of milliseconds each) running at once; the others
/// wait their turn, so that a crowd of joiners cannot take every core.
pub const MAX_STRETCHING: usize = 2;

/// Added to a grace period before expiring seats, so that the hub's millisecond clock has
/// certainly passed the deadline when the timer fires.
const EXPIRY_SLACK: Duration = Duration::from_millis(20);

/// How long a connection that the server closes is given to answer the close frame, so that its
/// unread input does not turn the close into a TCP reset that could discard the close frame.
const LINGER: Duration = Duration::from_secs(1);

/// Per-connection rules, from the flags.
#[derive(Clone, Debug)]
pub struct WsSettings {
    pub max_message_bytes: usize,
    pub rate_burst: u32,
    pub rate_per_sec: u32,
    pub max_bad_messages: u32,
    pub ping_interval: Option<Duration>,
    pub ping_timeout: Duration,
    /// A write that makes no progress for this long drops the connection (a stalled reader).
    pub write_timeout: Duration,
}

impl WsSettings {
    /// What tungstenite itself refuses (and then the connection cannot be read any further).
    /// Above our own limit, so that a message a little too big is read whole and answered with
    /// a clean 1009 close; only a much bigger one hits this hard stop.
    fn hard_limit(&self) -> usize {
        self.max_message_bytes.saturating_mul(2).max(4096)
    }
}

pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    extensions: Extensions,
    ws: WebSocketUpgrade,
) -> Result<Response, UpgradeRefused> {
    let refuse = |refused: UpgradeRefused| {
        state.metrics.rejected(refused.reason());
        tracing::debug!(%refused, "websocket upgrade refused");
        refused
    };
    if !state.origins.allows(&headers) {
        return Err(refuse(UpgradeRefused::Origin));
    }
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let ip = client_ip(&headers, state.client_ip_header.as_ref(), peer);
    let permit = state.limiter.acquire(ip).map_err(refuse)?;
    state.metrics.connections.inc();
    // Taken here, while axum still tracks this connection, and held until the task ends, so that
    // `run` can wait for the websocket to finish closing (see `AppState::connections`).
    let open = state.connections.subscribe();
    let hard_limit = state.ws.hard_limit();
    // The host the browser used, for the TURN URLs in its `joined` (see `ice.rs`).
    let host: Option<Box<str>> = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(Box::from);
    Ok(ws
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        // Only reached when writes fail; one batch plus the biggest possible frame.
        .max_write_buffer_size(WRITE_BUFFER_BYTES + 2 * hard_limit)
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| {
            // Split here, outside the task's future: an `async` block or fn keeps every argument
            // it was given for its whole life, and a `WebSocket` is ~370 bytes, which would sit
            // unused in every idle connection's task. The halves are a pointer and a slot.
            let (sink, stream) = socket.split();
            Connection::new(state, ip, host.as_deref(), permit, open).run(sink, stream)
        }))
}

/// How a connection ends.
#[derive(Debug)]
enum End {
    /// The client sent a close frame; tungstenite has queued the reply.
    ClosedByClient,
    /// The connection is gone (end of stream, I/O error, write timeout): nothing more to send.
    Gone,
    /// The server closes it with this code and reason.
    Close {
        code: u16,
        reason: &'static str,
        /// Write what is already queued first (e.g. the last error reply) and wait briefly for
        /// the client's answering close frame; otherwise send only the close frame, briefly.
        polite: bool,
        /// What becomes of the seat: kept for a resume, or released.
        seat: Ending,
    },
}

impl End {
    /// The client broke a rule: the close is written after its last replies, and its seat is
    /// released.
    fn expel(code: u16, reason: &'static str) -> Self {
        End::Close {
            code,
            reason,
            polite: true,
            seat: Ending::Expelled,
        }
    }

    /// The connection cannot be used any more (or the server is going away): a close frame if
    /// it can still be written, and the seat is kept for a resume.
    fn drop_connection(code: u16, reason: &'static str) -> Self {
        End::Close {
            code,
            reason,
            polite: false,
            seat: Ending::Dropped,
        }
    }

    fn seat(&self) -> Ending {
        match self {
            End::ClosedByClient | End::Gone => Ending::Dropped,
            End::Close { seat, .. } => *seat,
        }
    }
}

/// What to do after a frame.
enum Step {
    Continue,
    End(End),
    /// Run key stretching, then go on with the request.
    Stretch(Stretch),
}

/// One websocket's state, besides the socket halves. Dropping it leaves the room, gives back the
/// connection's place (`Permit`), and uncounts it from `connections_open`.
struct Connection {
    session: Session,
    state: Arc<AppState>,
    bucket: TokenBucket,
    bad_messages: u32,
    span: tracing::Span,
    /// The room of a `join` being handled, for the span once it succeeds.
    joining: Option<RoomName>,
    _permit: Permit,
    /// See `AppState::connections`: held until the close frame is out.
    _open: tokio::sync::watch::Receiver<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.state.metrics.connections_open.dec();
    }
}

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

impl Connection {
    fn new(
        state: Arc<AppState>,
        ip: Option<IpAddr>,
        host: Option<&str>,
        permit: Permit,
        open: tokio::sync::watch::Receiver<()>,
    ) -> Self {
        state.metrics.connections_open.inc();
        let session = state.hub.connect_from(ip, host);
        let span = tracing::info_span!(
            "conn",
            ip = ip.map(tracing::field::display),
            peer = tracing::field::Empty,
            room = tracing::field::Empty,
        );
        Self {
            bucket: TokenBucket::new(state.ws.rate_burst, state.ws.rate_per_sec, Instant::now()),
            bad_messages: 0,
            joining: None,
            session,
            state,
            span,
            _permit: permit,
            _open: open,
        }
    }

    /// The connection's whole life, in its span: the task's future. Not an `async fn`, whose
    /// arguments would be stored once more beside the block's; the ending is boxed, so that
    /// only what an idle connection needs is in the task (see [`READ_BUFFER_BYTES`]).
    fn run(self, sink: Sink, stream: Stream) -> impl Future<Output = ()> + Send + 'static {
        let span = self.span.clone();
        let mut this = self;
        let (mut sink, mut stream) = (sink, stream);
        async move {
            let end = this.serve(&mut sink, &mut stream).await;
            Box::pin(this.finish(end, sink, stream)).await;
        }
        .instrument(span)
    }

    async fn serve(&mut self, sink: &mut Sink, stream: &mut Stream) -> End {
        tracing::debug!("connected");
        let ping_interval = self.state.ws.ping_interval;
        let ping_timeout = self.state.ws.ping_timeout;
        let write_timeout = self.state.ws.write_timeout;
        // One timer per connection. Idle: fires when the next ping is due. After a ping: fires
        // when the answer is overdue. Any frame from the client counts as an answer.
        let ping = tokio::time::sleep(ping_interval.unwrap_or(Duration::MAX / 4));
        tokio::pin!(ping);
        let mut ping_sent: Option<Instant> = None;
        loop {
            tokio::select! {
                frame = stream.next() => {
                    if let (Some(sent), Some(interval)) = (ping_sent.take(), ping_interval) {
                        ping.as_mut().reset(sent + interval);
                    }
                    match frame {
                        Some(Ok(message)) => match self.on_frame(message) {
                            Step::Continue => {}
                            Step::End(end) => return end,
                            // Boxed: only a join with a passcode gets here, and an idle
                            // connection's task should not carry this future's space.
                            Step::Stretch(stretch) => {
                                if let Some(end) = Box::pin(self.stretch(stretch)).await {
                                    return end;
                                }
                            }
                        },
                        Some(Err(err)) => return self.on_read_error(err),
                        None => return End::Gone,
                    }
                }
                outgoing = self.session.recv() => match outgoing {
                    Ok(first) => match Box::pin(write_batch(sink, first, &self.session, write_timeout)).await {
                        Written::Ok => {}
                        Written::Failed => {
                            tracing::debug!("write failed");
                            return End::Gone;
                        }
                        Written::Stalled => {
                            tracing::info!(?write_timeout, "a write made no progress; dropping the stalled reader");
                            self.state.metrics.slow_reader(SlowReason::Stalled);
                            return End::drop_connection(close_code::POLICY, "too slow: writes made no progress");
                        }
                    },
                    // The hub dropped this connection: its queue went over the byte bound (its
                    // seat is already released).
                    Err(Closed::SlowReader) => return End::drop_connection(close_code::POLICY, "too slow: messages were not being read"),
                    // The person resumed their seat on another connection.
                    Err(Closed::Replaced) => return End::drop_connection(close_code::REPLACED, "replaced by a newer connection"),
                },
                () = &mut ping, if ping_interval.is_some() => {
                    if ping_sent.is_some() {
                        tracing::info!("no answer to a keep-alive ping; dropping the connection");
                        self.state.metrics.keepalive_timeouts.inc();
                        return End::drop_connection(close_code::POLICY, "no answer to keep-alive pings");
                    }
                    let now = Instant::now();
                    if !Box::pin(write(sink, Message::Ping(Default::default()), write_timeout)).await {
                        return End::Gone;
                    }
                    ping_sent = Some(now);
                    ping.as_mut().reset(now + ping_timeout);
                }
                () = self.state.shutdown.cancelled() => {
                    return End::drop_connection(close_code::GOING_AWAY, "server shutting down");
                }
            }
        }
    }

    /// Handles one frame.
    fn on_frame(&mut self, message: Message) -> Step {
        if let Message::Close(_) = message {
            return Step::End(End::ClosedByClient);
        }
        // Every frame costs a token, pings and pongs included: a flood of any kind is refused.
        if !self.bucket.try_take(Instant::now()) {
            self.state.metrics.rejected(Rejection::Rate);
            self.session.reply_error(
                ErrorCode::RateLimited,
                "You are sending messages too fast; this one was dropped.",
            );
            return self.refused(ErrorCode::RateLimited);
        }
        match message {
            Message::Text(text) => self.on_text(&text),
            Message::Binary(_) => {
                self.state.metrics.received_invalid();
                self.session.reply_error(
                    ErrorCode::Malformed,
                    "Binary frames are not part of this protocol; send JSON text.",
                );
                self.refused(ErrorCode::Malformed)
            }
            // Pings are answered by the websocket layer itself; pongs only prove liveness.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => Step::Continue,
        }
    }

    fn on_text(&mut self, text: &str) -> Step {
        if text.len() > self.state.ws.max_message_bytes {
            return Step::End(self.too_big());
        }
        match ClientMessage::decode(text) {
            Ok(message) => {
                self.state.metrics.received(message.kind());
                if let ClientMessage::Join { room, .. } = &message {
                    self.joining = Some(room.clone());
                }
                let handled = self.session.handle(message);
                self.after(handled)
            }
            Err(err) => {
                tracing::debug!(%err, "refused a message");
                self.state.metrics.received_invalid();
                self.session.reply_error(err.code(), err.to_string());
                self.refused(err.code())
            }
        }
    }

    /// What follows a request the hub has handled.
    fn after(&mut self, handled: Handled) -> Step {
        match handled {
            Handled::Done => {
                if let Some(room) = self.joining.take() {
                    if let Some(seat) = self.session.seat() {
                        self.span.record("peer", tracing::field::display(seat));
                        self.span.record("room", tracing::field::display(&room));
                    }
                }
                Step::Continue
            }
            Handled::Refused(code) => {
                self.joining = None;
                self.refused(code)
            }
            Handled::Stretch(stretch) => Step::Stretch(stretch),
        }
    }

    /// Runs key stretching on a blocking thread (a few at a time, server-wide) and goes on with
    /// the request; `Some` ends the connection. This connection reads nothing meanwhile, so its
    /// requests stay in order.
    async fn stretch(&mut self, mut stretch: Stretch) -> Option<End> {
        loop {
            let permit = self.state.stretching.acquire().await;
            let done = tokio::task::spawn_blocking(move || stretch.run()).await;
            drop(permit);
            let handled = match done {
                Ok(done) => self.session.finish(done),
                Err(err) => {
                    tracing::error!(%err, "passcode work failed");
                    self.session.reply_error(
                        ErrorCode::ServerFull,
                        "The server could not check the passcode. Try again.",
                    );
                    Handled::Refused(ErrorCode::ServerFull)
                }
            };
            match self.after(handled) {
                Step::Continue => return None,
                Step::End(end) => return Some(end),
                Step::Stretch(next) => stretch = next,
            }
        }
    }

    /// Counts a refused message (its error reply is already queued); ends the connection once
    /// the client has sent too many bad ones.
    fn refused(&mut self, code: ErrorCode) -> Step {
        self.state.metrics.error(code);
        if !counts_as_bad(code) {
            return Step::Continue;
        }
        self.bad_messages += 1;
        let max = self.state.ws.max_bad_messages;
        if max != 0 && self.bad_messages >= max {
            tracing::info!(
                bad_messages = self.bad_messages,
                "too many bad messages; closing"
            );
            self.state.metrics.bad_message_closes.inc();
            return Step::End(End::expel(close_code::POLICY, "too many bad messages"));
        }
        Step::Continue
    }

    fn too_big(&self) -> End {
        tracing::info!(
            max = self.state.ws.max_message_bytes,
            "message too big; closing"
        );
        self.state.metrics.oversize_closes.inc();
        End::expel(close_code::TOO_BIG, "message too big")
    }

    fn on_read_error(&self, err: axum::Error) -> End {
        // A frame over the hard limit: tungstenite stopped reading it, but a close frame can
        // still be written.
        let inner = err.into_inner();
        if let Some(tungstenite::Error::Capacity(_)) = inner.downcast_ref::<tungstenite::Error>() {
            return self.too_big();
        }
        tracing::debug!(err = %inner, "websocket read failed");
        End::Gone
    }

    async fn finish(mut self, end: End, mut sink: Sink, mut stream: Stream) {
        let timeout = self.state.ws.write_timeout;
        tracing::debug!(?end, "closing");
        let seat = end.seat();
        match end {
            End::Gone => {}
            // Sends tungstenite's reply to the client's close frame.
            End::ClosedByClient => {
                let _ = tokio::time::timeout(timeout, sink.flush()).await;
            }
            End::Close {
                code,
                reason,
                polite,
                ..
            } => {
                if polite {
                    while let Some(frame) = self.session.try_recv() {
                        if !write(&mut sink, text_frame(&frame), timeout).await {
                            break;
                        }
                    }
                }
                let frame = Message::Close(Some(CloseFrame {
                    code,
                    reason: Utf8Bytes::from_static(reason),
                }));
                let wait = if polite { timeout } else { LINGER };
                if write(&mut sink, frame, wait).await && polite {
                    // Read (and ignore) whatever the client still sends until its close frame.
                    let _ = tokio::time::timeout(LINGER, async {
                        while let Some(Ok(_)) = stream.next().await {}
                    })
                    .await;
                }
            }
        }
        // The seat is kept or released (the others hear `peerReconnecting` or `peerLeft`)
        // before the socket is dropped. A kept seat is released by `Hub::expire` once its grace
        // has passed, unless its person came back.
        if let Some(grace) = self.session.end(seat) {
            let hub = Arc::clone(&self.state.hub);
            tokio::spawn(async move {
                tokio::time::sleep(grace + EXPIRY_SLACK).await;
                hub.expire();
            });
        }
        drop(self);
        tracing::debug!("disconnected");
    }
}

/// Whether a refusal counts toward `--max-bad-messages`: only what a correct client never sends.
/// `unknown-peer` can happen to a correct client (a candidate for a peer that just left); a full,
/// locked or closed room, a wrong passcode (people mistype) and a refused resume token (the server
/// restarted with another secret) are not the client's doing either.
fn counts_as_bad(code: ErrorCode) -> bool {
    match code {
        ErrorCode::Malformed
        | ErrorCode::UnknownType
        | ErrorCode::InvalidRoom
        | ErrorCode::InvalidName
        | ErrorCode::InvalidChat
        | ErrorCode::UnsupportedVersion
        | ErrorCode::NotInRoom
        | ErrorCode::AlreadyJoined
        | ErrorCode::RateLimited
        | ErrorCode::TooManyAttempts => true,
        ErrorCode::UnknownPeer
        | ErrorCode::RoomFull
        | ErrorCode::ServerFull
        | ErrorCode::ResumeRefused
        | ErrorCode::PasscodeRequired
        | ErrorCode::WrongPasscode
        | ErrorCode::RoomClosed => false,
    }
}

fn text_frame(frame: &Frame) -> Message {
    Message::Text(frame.text().clone())
}

/// Sends one frame within `timeout`; false if the connection is unusable.
async fn write(sink: &mut Sink, frame: Message, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, sink.send(frame)).await,
        Ok(Ok(()))
    )
}

/// How a batch write went.
enum Written {
    Ok,
    /// The connection failed.
    Failed,
    /// The batch did not go out within the write timeout: the client is not reading.
    Stalled,
}

/// Writes `first` and whatever else is already queued (up to [`MAX_BATCH`] messages and about
/// [`BATCH_BYTES`]), then flushes once: a burst of messages for one client costs one write
/// syscall instead of one each. The batch must go out within `timeout` (a write that makes no
/// progress for that long means a stalled reader).
async fn write_batch(
    sink: &mut Sink,
    first: Frame,
    session: &Session,
    timeout: Duration,
) -> Written {
    let batch = async {
        let mut bytes = first.len();
        sink.feed(text_frame(&first)).await?;
        for _ in 1..MAX_BATCH {
            if bytes >= BATCH_BYTES {
                break;
            }
            let Some(frame) = session.try_recv() else {
                break;
            };
            bytes += frame.len();
            sink.feed(text_frame(&frame)).await?;
        }
        sink.flush().await
    };
    match tokio::time::timeout(timeout, batch).await {
        Ok(Ok(())) => Written::Ok,
        Ok(Err(_)) => Written::Failed,
        Err(_) => Written::Stalled,
    }
}
