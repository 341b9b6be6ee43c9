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

    // ---- TURN ----
    // Until the server serves HTTPS itself, "TLS on" (what `--turn auto` follows) means reachable
    // from other machines: an --addr that is not loopback.
    let tls = !config.addr.ip().is_loopback();
    let turn = match config.turn_listen(tls) {
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
    // On stdout, one line, so scripts and tests can find the port when started with port 0.
    println!("Noom is listening on http://{addr}");
    if let Some(turn) = &turn {
        println!("TURN is listening on {}", turn.describe());
    }
    let _ = std::io::stdout().flush();
    tracing::info!(%addr, dist = %config.dist.display(), room_capacity = config.room_capacity, "listening");

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
