//! Noom's server: it serves the built browser app and relays signaling (offers, answers, ICE
//! candidates) between the people in a room over `/ws`. Media goes peer to peer, or through the
//! built-in TURN relay ([`turn`]) when no direct path works.
//!
//! Layout:
//! - [`config`]: flags and environment variables ([`Config`]).
//! - [`bundle`]: the web app's files: the bundle built into the binary (precompressed, with
//!   ETags and cache headers), a `--dist` directory, or a page saying there is none.
//! - [`registry`]: who is in which room, seat states, room locks and chat history; pure
//!   bookkeeping, knows nothing of sockets.
//! - [`hub`]: the signaling state machine: registry + one byte-bounded outbound queue per
//!   connection + seats kept for dropped connections. [`hub::Session`] is one connection's
//!   handle; no transport, no timer inside (time from a [`clock::Clock`]), tested directly.
//! - [`resume`]: resume tokens (HMAC-SHA256); [`passcode`]: room passcode hashes (PBKDF2) and
//!   attempt limits; [`clock`]: injected time.
//! - `ws`: the websocket transport, one task per connection, frames in and queue out; message
//!   size and rate limits, bad-message limit, keep-alive pings.
//! - [`limits`]: connection limits (total, per IP) and the per-connection token bucket.
//! - [`origin`]: the `Origin` check against cross-site websocket hijacking.
//! - [`metrics`]: Prometheus counters, served at `/metrics`.
//! - [`tls`]: HTTPS (self-signed, certificate files, ACME), the bounded-handshake listener and
//!   the HTTP→HTTPS redirect.
//! - [`turn`]: the built-in TURN server (webrtc-rs `turn` plus our gate, relay policy and TCP);
//!   [`ice`]: the ICE servers handed out in `joined`, with TURN credentials minted per peer.
//! - [`app`] builds the axum router (tests call it directly); [`run`] serves it over plain
//!   HTTP and [`run_tls`] over HTTPS, until shutdown.
//!
//! Rules kept everywhere: the server never parses SDP, always stamps `from` itself, and never
//! holds a std `Mutex` across an `.await`.

pub mod bundle;
pub mod clock;
pub mod config;
pub mod datadir;
pub mod hub;
pub mod ice;
pub mod limits;
pub mod metrics;
pub mod origin;
pub mod passcode;
pub mod registry;
pub mod resume;
pub mod tls;
pub mod turn;
mod ws;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderName};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use bundle::StaticFiles;
pub use config::Config;
pub use ws::{close_code, READ_BUFFER_BYTES};

/// Everything request handlers share.
pub struct AppState {
    pub hub: Arc<hub::Hub>,
    pub metrics: Arc<metrics::Metrics>,
    pub limiter: Arc<limits::ConnectionLimiter>,
    /// Where the web app comes from (built in, `--dist`, or nowhere).
    pub static_files: StaticFiles,
    pub max_message_bytes: usize,
    origins: origin::AllowedOrigins,
    client_ip_header: Option<HeaderName>,
    ws: ws::WsSettings,
    /// Passcode key stretching running at once (each is tens of milliseconds of CPU on a
    /// blocking thread); more wait their turn.
    stretching: tokio::sync::Semaphore,
    /// Cancelled when the server starts shutting down; every websocket then closes with 1001.
    pub shutdown: CancellationToken,
    /// Open websockets: each connection's task holds a receiver until it has finished (close
    /// frame sent, session dropped). [`run`] waits for all of them to be dropped, because
    /// axum's graceful shutdown stops tracking a connection once it is upgraded.
    connections: tokio::sync::watch::Sender<()>,
}

impl AppState {
    /// The state for `config`, serving the web app as `--dist` says ([`StaticFiles::from_config`]).
    pub fn new(config: &Config) -> Result<Arc<Self>, config::ConfigError> {
        Self::with_turn(config, Arc::new(metrics::Metrics::new()), None)
    }

    /// With the built-in TURN server `turn` (started by the caller, counting into `metrics`)
    /// handed to browsers.
    pub fn with_turn(
        config: &Config,
        metrics: Arc<metrics::Metrics>,
        turn: Option<ice::BuiltinTurn>,
    ) -> Result<Arc<Self>, config::ConfigError> {
        let static_files = StaticFiles::from_config(config.dist.as_deref());
        Self::build(config, metrics, turn, static_files)
    }

    /// The state for `config`, serving the web app from `static_files` (tests serve a bundle
    /// packed at run time with [`bundle::Bundle::from_dir`]).
    pub fn with_static_files(
        config: &Config,
        static_files: StaticFiles,
    ) -> Result<Arc<Self>, config::ConfigError> {
        Self::build(
            config,
            Arc::new(metrics::Metrics::new()),
            None,
            static_files,
        )
    }

    fn build(
        config: &Config,
        metrics: Arc<metrics::Metrics>,
        turn: Option<ice::BuiltinTurn>,
        static_files: StaticFiles,
    ) -> Result<Arc<Self>, config::ConfigError> {
        Ok(Arc::new(Self {
            hub: hub::Hub::with_clock(
                config.hub_config(turn)?,
                Arc::clone(&metrics),
                Arc::new(clock::SystemClock::new()),
            ),
            metrics,
            limiter: limits::ConnectionLimiter::new(
                config.max_connections,
                config.max_connections_per_ip,
            ),
            static_files,
            max_message_bytes: config.max_message_bytes,
            origins: origin::AllowedOrigins::new(config.allowed_origins()?),
            client_ip_header: config.client_ip_header()?,
            ws: ws::WsSettings {
                max_message_bytes: config.max_message_bytes,
                rate_burst: config.rate_burst,
                rate_per_sec: config.rate_per_sec,
                max_bad_messages: config.max_bad_messages,
                ping_interval: config.ping_interval(),
                ping_timeout: config.ping_timeout(),
                write_timeout: config.write_timeout(),
            },
            stretching: tokio::sync::Semaphore::new(ws::MAX_STRETCHING),
            shutdown: CancellationToken::new(),
            connections: tokio::sync::watch::Sender::new(()),
        }))
    }
}

/// The whole HTTP surface: `/ws`, `/healthz`, `/metrics`, and the static app with `/r/<room>`
/// deep links. Serve it with `into_make_service_with_connect_info::<SocketAddr>()` (as [`run`]
/// does) for the per-IP connection limit to see client addresses.
pub fn app(state: Arc<AppState>) -> Router {
    // The app's own files (see `bundle`): `/r/<room>` deep links serve index.html, unknown
    // paths get a real 404 rather than index.html, so a missing asset is visible.
    let static_files = state.static_files.router();
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(static_files)
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.encode(),
    )
}

/// Serves `app` on `listener` until `shutdown` completes, then closes every websocket (1001,
/// "server shutting down") and returns once connections have finished or `grace` has passed.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: std::time::Duration,
) -> std::io::Result<()> {
    state.static_files.announce();
    let token = state.shutdown.clone();
    let connections = state.connections.clone();
    let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
    // Signaling is small messages that must go out now: without TCP_NODELAY, Nagle's algorithm
    // holds a small write until the previous one is acknowledged, and with the peer's delayed
    // ACKs that is up to 40 ms for a relayed ICE candidate.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY");
        }
    });
    let serve = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown_then_cancel(shutdown, token.clone()))
        .into_future();
    drain(serve, token, connections, grace).await
}

/// [`run`] over HTTPS: the same router, behind a [`tls::TlsListener`] (handshakes in their own
/// tasks, bounded in time and number). Client addresses reach `ConnectInfo<SocketAddr>` as over
/// plain HTTP, so the per-IP limits work the same.
pub async fn run_tls(
    listener: tls::TlsListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: std::time::Duration,
) -> std::io::Result<()> {
    state.static_files.announce();
    let token = state.shutdown.clone();
    let connections = state.connections.clone();
    let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
    // axum gives `ConnectInfo<SocketAddr>` for any listener wrapped by `tap_io` whose address
    // is a `SocketAddr` (TCP_NODELAY is already set before the handshake).
    let listener = listener.tap_io(|_| {});
    let serve = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown_then_cancel(shutdown, token.clone()))
        .into_future();
    drain(serve, token, connections, grace).await
}

/// Waits for `shutdown`, then cancels `token`, which closes every websocket with 1001.
async fn shutdown_then_cancel(
    shutdown: impl Future<Output = ()> + Send + 'static,
    token: CancellationToken,
) {
    shutdown.await;
    tracing::info!("shutting down: closing connections");
    token.cancel();
}

/// Runs `serve` until it has returned and every websocket has finished, or until `grace` has
/// passed since shutdown began.
async fn drain(
    serve: impl Future<Output = std::io::Result<()>>,
    token: CancellationToken,
    connections: tokio::sync::watch::Sender<()>,
    grace: std::time::Duration,
) -> std::io::Result<()> {
    let deadline = async move {
        token.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    let drained = async move {
        serve.await?;
        // `serve` has returned once the plain HTTP connections are done, but upgraded ones
        // (websockets) are no longer axum's: wait until their tasks have sent the 1001 close
        // and left their rooms. Without this the binary could exit, dropping those tasks,
        // before the close frames went out.
        connections.closed().await;
        Ok(())
    };
    tokio::select! {
        result = drained => result,
        () = deadline => {
            tracing::warn!("connections still open after the grace period; exiting anyway");
            Ok(())
        }
    }
}
