use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use server::{AppState, Config};
use tokio::net::{TcpListener, TcpSocket};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let state = match AppState::new(&config) {
        Ok(state) => state,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    // --- TLS: resolved before binding, so a contradictory command line binds nothing ---
    let tls_mode = match config.tls_mode() {
        Ok(mode) => mode,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    // --- end TLS ---
    let listener = match listen(config.addr, config.listen_backlog) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on {}: {err}", config.addr);
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };

    // --- TLS ---
    if tls_mode.is_on() {
        return serve_tls(&config, &tls_mode, listener, addr, state).await;
    }
    // --- end TLS ---

    // On stdout, one line, so scripts and tests can find the port when started with port 0.
    println!("Noom is listening on http://{addr}");
    let _ = std::io::stdout().flush();
    tracing::info!(%addr, room_capacity = config.room_capacity, "listening");

    match server::run(listener, state, shutdown_signal(), config.shutdown_grace()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

// --- TLS ---
/// Serves HTTPS on `listener` (and the HTTP redirect, if asked). Prints, on stdout, first
/// `Noom is listening on https://ADDR` (the line scripts and tests parse), then the URLs a
/// person can open and the certificate's fingerprints (see `TlsServer::banner`).
async fn serve_tls(
    config: &Config,
    mode: &server::tls::TlsMode,
    listener: TcpListener,
    addr: std::net::SocketAddr,
    state: std::sync::Arc<server::AppState>,
) -> ExitCode {
    let metrics = std::sync::Arc::clone(&state.metrics);
    let tls = match server::tls::TlsServer::start(mode, &config.data_dir(), addr, metrics.clone())
        .await
    {
        Ok(tls) => tls,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let redirect = match config.http_redirect {
        Some(redirect_addr) => match listen(redirect_addr, config.listen_backlog) {
            Ok(listener) => Some(listener),
            Err(err) => {
                eprintln!("error: cannot listen on {redirect_addr} (--http-redirect): {err}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Noom is listening on https://{addr}");
    for line in tls.banner() {
        let _ = writeln!(out, "{line}");
    }
    if let Some(redirect) = &redirect {
        if let Ok(redirect_addr) = redirect.local_addr() {
            let _ = writeln!(out, "Redirecting http://{redirect_addr} to HTTPS");
        }
    }
    let _ = out.flush();
    drop(out);
    tracing::info!(%addr, room_capacity = config.room_capacity, "listening (HTTPS)");

    if let Some(redirect) = redirect {
        let shutdown = state.shutdown.clone();
        let port = addr.port();
        tokio::spawn(async move {
            if let Err(err) = server::tls::redirect::serve(redirect, port, shutdown).await {
                tracing::error!(%err, "the HTTP redirect listener stopped");
            }
        });
    }
    let listener = match server::tls::TlsListener::new(
        listener,
        tls,
        config.tls_handshake_limits(),
        metrics,
    ) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    match server::run_tls(listener, state, shutdown_signal(), config.shutdown_grace()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
// --- end TLS ---

/// Binds like `TcpListener::bind`, but with our own accept backlog (see `--listen-backlog`).
fn listen(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As std and tokio do: a restarted server can bind while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Ctrl-C, or SIGTERM (what systemd and `kill` send).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
