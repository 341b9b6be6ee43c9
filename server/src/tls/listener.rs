//! The HTTPS listener: TCP accept, TLS handshake, then the stream goes to axum.
//!
//! A handshake costs bounded time and memory, and one client cannot hold up another:
//! - handshakes run in their own tasks, never in the accept loop;
//! - each has a deadline (`--tls-handshake-timeout-ms`): a client that connects and sends
//!   nothing, or sends half a ClientHello, is dropped when it passes;
//! - at most `--max-tls-handshakes` are in flight (a semaphore permit is taken before `accept`,
//!   so further connections wait in the kernel's listen queue, costing the server nothing), and
//!   a permit is held until the stream is handed to axum;
//! - failures and timeouts are counted (`noom_tls_handshake_failures_total{reason}`), never
//!   logged above debug (a port scan must not flood the log).
//!
//! Handshakes do not touch the websocket limits: those are taken at the upgrade, as over HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::AbortOnDropHandle;

use super::{HandshakeLimits, TlsServer, ACME_TLS_ALPN};
use crate::metrics::{HandshakeFailure, Metrics};

/// Completed handshakes waiting for axum to take them. Small: axum takes each at once.
const READY_QUEUE: usize = 32;

/// How long a TLS-ALPN-01 validation connection gets to receive our close_notify.
const CHALLENGE_CLOSE: Duration = Duration::from_secs(1);

/// An `axum::serve::Listener` that yields TLS streams with the client's address. Dropping it
/// stops the accept loop (the port is released) and the certificate's background task.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    _accept: AbortOnDropHandle<()>,
    _tls: TlsServer,
}

impl TlsListener {
    /// Starts accepting on `tcp` with `tls`'s certificate, within `limits`.
    pub fn new(
        tcp: TcpListener,
        tls: TlsServer,
        limits: HandshakeLimits,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor = TlsAcceptor::from(tls.rustls_config());
        let accept = tokio::spawn(accept_loop(tcp, acceptor, limits, metrics, tx));
        Ok(Self {
            ready,
            local_addr,
            _accept: AbortOnDropHandle::new(accept),
            _tls: tls,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends when this listener is dropped (or the runtime stops),
            // so there is nothing more to hand out: wait forever, as a listener without
            // connections does.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    limits: HandshakeLimits,
    metrics: Arc<Metrics>,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_in_flight));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return, // never closed
            },
            () = ready.closed() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_error(err).await;
                    continue;
                }
            },
            () = ready.closed() => return,
        };
        // As for plain HTTP: small signaling writes must not wait for Nagle's algorithm.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY");
        }
        tokio::spawn(handshake(
            stream,
            peer,
            acceptor.clone(),
            limits.timeout,
            Arc::clone(&metrics),
            ready.clone(),
            permit,
        ));
    }
}

/// Like axum's own accept loop: errors about one connection are skipped; running out of file
/// descriptors (or another resource) is logged and waited out.
async fn accept_error(err: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%err, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Keeps `noom_tls_handshakes_in_flight` right even if the task is cancelled.
struct InFlight(Arc<Metrics>);

impl InFlight {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.tls_handshakes_in_flight.inc();
        Self(metrics)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.tls_handshakes_in_flight.dec();
    }
}

async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    timeout: Duration,
    metrics: Arc<Metrics>,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    permit: OwnedSemaphorePermit,
) {
    let in_flight = InFlight::new(Arc::clone(&metrics));
    let mut tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            metrics.tls_handshake_failed(HandshakeFailure::Error);
            tracing::debug!(%peer, %err, "TLS handshake failed");
            return;
        }
        Err(_) => {
            metrics.tls_handshake_failed(HandshakeFailure::Timeout);
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    if tls.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) {
        // A TLS-ALPN-01 validation: the CA has seen the challenge certificate in the
        // handshake; there is nothing to serve on this connection.
        metrics.tls_acme_challenges.inc();
        tracing::debug!(%peer, "answered an ACME TLS-ALPN-01 validation");
        let _ = tokio::time::timeout(
            CHALLENGE_CLOSE,
            tokio::io::AsyncWriteExt::shutdown(&mut tls),
        )
        .await;
        return;
    }
    metrics.tls_handshakes.inc();
    // Hold the permit (and the in-flight count) until axum has the stream, so the number of
    // connections between accept and axum stays bounded even if axum stops taking them.
    let _ = ready.send((tls, peer)).await;
    drop(in_flight);
    drop(permit);
}
