//! The two apps' servers as child processes, each killed by its PID (and reaped) when its
//! guard drops, also on panic or early return.
//!
//! - Noom: the release `server` binary with NO `--dist`, from an empty temporary working
//!   directory: the web app built into it, as deployed. `--ice-server none` (host candidates
//!   only, like the tutorial's default).
//! - The tutorial: `node server.js` with `PORT` and `HOST=127.0.0.1`, from a prepared copy of
//!   `../shared/bench/tutorial-app` (`npm ci` done by scripts/bench.sh, outside the namespace).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::Error;

/// A running server: where to open the app, and the process behind it.
pub struct Server {
    pub url: String,
    child: Child,
    _cwd: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Spawns `command` with stdout piped and hands its lines over a channel (read on a thread for
/// as long as the process lives, so it never blocks on a full pipe).
fn spawn(mut command: Command, what: &str) -> Result<(Child, mpsc::Receiver<String>), Error> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command.spawn().map_err(|source| Error::Io {
        what: format!("starting {what}"),
        source,
    })?;
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    Ok((child, rx))
}

/// Waits for a stdout line that `matches` accepts.
fn wait_line<T>(
    lines: &mpsc::Receiver<String>,
    child: &mut Child,
    what: &str,
    mut matches: impl FnMut(&str) -> Option<T>,
) -> Result<T, Error> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout {
                after: START_TIMEOUT,
                what: format!("{what} to say it is listening"),
            });
        }
        match lines.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) => {
                if let Some(found) = matches(&line) {
                    return Ok(found);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(Error::Setup(format!("{what} exited at start ({status})")));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::Setup(format!("{what} closed its output at start")))
            }
        }
    }
}

/// Starts Noom's server binary as deployed: no `--dist`, nothing beside it.
pub fn start_noom(bin: &Path) -> Result<Server, Error> {
    let cwd = tempfile::tempdir().map_err(|source| Error::Io {
        what: "creating a working directory".into(),
        source,
    })?;
    let mut command = Command::new(bin);
    command
        .args(["--addr", "127.0.0.1:0", "--ice-server", "none"])
        .current_dir(cwd.path())
        .env_remove("NOOM_DIST")
        .env("RUST_LOG", "warn");
    let (mut child, lines) = spawn(command, "the Noom server")?;
    let url = wait_line(&lines, &mut child, "the Noom server", |line| {
        line.strip_prefix("Noom is listening on ")
            .map(str::to_string)
    });
    let mut server = Server {
        url: String::new(),
        child,
        _cwd: Some(cwd),
    };
    server.url = url?;
    // A server built without the app says so right after the listening line.
    if let Ok(line) = lines.recv_timeout(Duration::from_millis(300)) {
        if line.contains("without the web app") {
            return Err(Error::Setup(format!(
                "{} has no web app built in ({line}); build it with scripts/bench.sh",
                bin.display()
            )));
        }
    }
    Ok(server)
}

/// Starts the tutorial app (already `npm ci`-ed in `dir`) on a free loopback port.
pub fn start_tutorial(dir: &Path) -> Result<Server, Error> {
    if !dir.join("node_modules/socket.io").is_dir() {
        return Err(Error::Setup(format!(
            "no prepared tutorial app in {} (server.js and node_modules/ expected); \
             scripts/bench.sh copies ../shared/bench/tutorial-app there and runs npm ci",
            dir.display()
        )));
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|source| Error::Io {
            what: "finding a free port".into(),
            source,
        })?
        .port();
    let mut command = Command::new("node");
    command
        .arg("server.js")
        .current_dir(dir)
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1");
    let (mut child, lines) = spawn(command, "the tutorial app (node)")?;
    let found = wait_line(&lines, &mut child, "the tutorial app", |line| {
        line.contains("Listening on").then_some(())
    });
    let server = Server {
        url: format!("http://127.0.0.1:{port}"),
        child,
        _cwd: None,
    };
    found?;
    Ok(server)
}

/// The `server` binary beside this one (both built by `cargo build --release -p server -p bench`).
pub fn default_server_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("server")))
        .unwrap_or_else(|| PathBuf::from("server"))
}
