use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use server::metrics::Metrics;
use server::turn::TurnServer;
use server::{AppState, Config};
use tokio::net::{TcpListener, TcpSocket};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            // The `turn` crate logs every refused or stray client packet as an error; our own
            // TURN module logs what matters. `RUST_LOG=info,turn=debug` shows the crate's view.
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,turn=off")),
        )
        .with_writer(std::io::stderr)
        .init();

    let metrics = Arc::new(Metrics::new());

    // --- TLS: resolved before binding anything, so a contradictory command line binds nothing ---
    let tls_mode = match config.tls_mode() {
        Ok(mode) => mode,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    // --- end TLS ---

    // ---- TURN: `--turn auto` is on exactly when the server serves HTTPS ----
    let turn = match config.turn_listen(tls_mode.is_on()) {
        None => None,
        Some(listen) => {
            let settings = match config.turn_settings(listen) {
                Ok(settings) => settings,
                Err(err) => {
                    eprintln!("error: {err}");
                    return ExitCode::from(2);
                }
            };
            match TurnServer::start(settings, Arc::clone(&metrics)).await {
                Ok(turn) => Some(turn),
                Err(err) => {
                    eprintln!("error: {err}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    if turn.is_some() || !config.turn_urls.is_empty() {
        match &config.turn_secret {
            Some(_) => tracing::info!("TURN credentials are signed with --turn-secret"),
            None => tracing::info!(
                file = %config.data_dir.join(server::config::TURN_SECRET_FILE).display(),
                "TURN credentials are signed with the secret in this file (give an external TURN server the same)"
            ),
        }
    }
    // ---- end TURN ----

    let state = match AppState::with_turn(&config, metrics, turn.as_ref().map(TurnServer::builtin))
    {
        Ok(state) => state,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
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
        return serve_tls(&config, &tls_mode, listener, addr, state, turn).await;
    }
    // --- end TLS ---

    // On stdout, one line, so scripts and tests can find the port when started with port 0.
    println!("Noom is listening on http://{addr}");
    if let Some(turn) = &turn {
        println!("TURN is listening on {}", turn.describe());
    }
    let _ = std::io::stdout().flush();
    tracing::info!(%addr, room_capacity = config.room_capacity, "listening");

    let served = server::run(listener, state, shutdown_signal(), config.shutdown_grace()).await;
    if let Some(turn) = turn {
        turn.close().await;
    }
    match served {
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
    turn: Option<TurnServer>,
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
    if let Some(turn) = &turn {
        let _ = writeln!(out, "TURN is listening on {}", turn.describe());
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
    let served = server::run_tls(listener, state, shutdown_signal(), config.shutdown_grace()).await;
    if let Some(turn) = turn {
        turn.close().await;
    }
    match served {
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
