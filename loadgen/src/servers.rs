//! Starting the relays under test, each as a child process that is killed by its PID when its
//! guard is dropped (also on panic), and that dies with the benchmark if the benchmark itself is
//! killed (PR_SET_PDEATHSIG).
//!
//! - Noom: the `server` binary with `--addr 127.0.0.1:0 --ice-server none`, generous values for
//!   every limit flag it has (limits stay on, just above what a shape needs), and any
//!   `--server-arg`s. The port is read from its `Noom is listening on http://ADDR` line.
//! - socket.io: `../shared/bench/sio-relay` (read-only) is copied into a work directory,
//!   `npm ci` runs there once, then `node server.js` with `PORT` set.

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::sys;
use crate::wire::Dialect;

/// A relay to measure: where it listens and which process to watch.
pub struct Target {
    pub dialect: Dialect,
    pub addr: SocketAddr,
    /// The process whose RSS and CPU are measured.
    pub pid: u32,
    _process: Option<ProcessGuard>,
}

impl Target {
    /// A relay that runs elsewhere (e.g. in this very process, in tests).
    pub fn external(dialect: Dialect, addr: SocketAddr, pid: u32) -> Self {
        Self {
            dialect,
            addr,
            pid,
            _process: None,
        }
    }
}

/// Kills its child by PID (SIGKILL) and reaps it when dropped.
pub struct ProcessGuard {
    child: Child,
    name: String,
}

impl ProcessGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = &self.name;
    }
}

fn spawn(
    mut command: Command,
    name: &str,
    log: &Path,
) -> io::Result<(ProcessGuard, mpsc::Receiver<String>)> {
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir)?;
    }
    let log_file = fs::File::create(log)?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file));
    // SAFETY: the closure only calls prctl, which is async-signal-safe.
    unsafe {
        command.pre_exec(sys::die_with_parent);
    }
    let mut child = command
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {name}: {e}")))?;
    let stdout = child.stdout.take();
    let guard = ProcessGuard {
        child,
        name: name.to_string(),
    };
    // Read stdout on a thread for as long as the process lives (so it can never block on a
    // full pipe); the first lines are handed over to find the listening address.
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = stdout {
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
    }
    Ok((guard, rx))
}

fn wait_for_line<T>(
    lines: &mpsc::Receiver<String>,
    guard: &mut ProcessGuard,
    timeout: Duration,
    mut matches: impl FnMut(&str) -> Option<T>,
) -> io::Result<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::Error::other(format!(
                "{} did not say it was listening within {timeout:?}",
                guard.name
            )));
        }
        match lines.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) => {
                if let Some(found) = matches(&line) {
                    return Ok(found);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(status)) = guard.child.try_wait() {
                    return Err(io::Error::other(format!(
                        "{} exited before listening ({status})",
                        guard.name
                    )));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(io::Error::other(format!(
                    "{} closed its output before listening",
                    guard.name
                )))
            }
        }
    }
}

/// Signs the resume tokens of a server under test (nothing resumes in a benchmark; given so that
/// the server writes no data directory).
const RESUME_SECRET: &str = "loadgen: a benchmark's resume secret";

/// Starts our server binary on a free loopback port.
pub fn start_noom(bin: &Path, args: &[String], log: &Path) -> io::Result<Target> {
    let mut command = Command::new(bin);
    command
        .args(["--addr", "127.0.0.1:0", "--ice-server", "none"])
        .args(["--resume-secret", RESUME_SECRET])
        .args(args);
    let (mut guard, lines) = spawn(command, "the Noom server", log)?;
    let addr = wait_for_line(&lines, &mut guard, Duration::from_secs(20), |line| {
        line.split("Noom is listening on http://")
            .nth(1)
            .and_then(|rest| rest.trim().parse::<SocketAddr>().ok())
    })?;
    Ok(Target {
        dialect: Dialect::Noom,
        addr,
        pid: guard.pid(),
        _process: Some(guard),
    })
}

/// A port that was free a moment ago (for node, which takes its port from the environment).
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts the socket.io relay (prepared by [`prepare_sio`]) on a free loopback port.
pub fn start_sio(dir: &Path, log: &Path) -> io::Result<Target> {
    let port = free_port()?;
    let mut command = Command::new("node");
    command
        .arg("server.js")
        .current_dir(dir)
        .env("PORT", port.to_string());
    let (mut guard, lines) = spawn(command, "the socket.io relay", log)?;
    wait_for_line(&lines, &mut guard, Duration::from_secs(20), |line| {
        line.contains("listening").then_some(())
    })?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| io::Error::other(format!("socket.io relay not reachable on {addr}: {e}")))?;
    Ok(Target {
        dialect: Dialect::SocketIo,
        addr,
        pid: guard.pid(),
        _process: Some(guard),
    })
}

/// Versions of what the baseline runs on, for the report.
#[derive(Clone, Debug, Default)]
pub struct SioVersions {
    pub node: String,
    pub socket_io: String,
    pub express: String,
}

/// Copies the read-only relay into `work/sio-relay` and installs its locked dependencies there
/// (once: again only when package-lock.json changes). Returns the directory to run it from.
pub fn prepare_sio(source: &Path, work: &Path) -> io::Result<(PathBuf, SioVersions)> {
    if !source.join("server.js").is_file() {
        return Err(io::Error::other(format!(
            "no socket.io relay at {} (expected server.js, package.json, package-lock.json); \
             pass --sio-dir, or --no-baseline to measure only Noom",
            source.display()
        )));
    }
    let dir = work.join("sio-relay");
    fs::create_dir_all(&dir)?;
    let lock = fs::read(source.join("package-lock.json"))?;
    let installed_lock = fs::read(dir.join(".installed-lock")).unwrap_or_default();
    for file in ["package.json", "package-lock.json", "server.js"] {
        fs::copy(source.join(file), dir.join(file))?;
    }
    if installed_lock != lock || !dir.join("node_modules/socket.io").is_dir() {
        eprintln!("loadgen: npm ci in {} (once)", dir.display());
        let mut npm = Command::new("npm");
        npm.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .stdin(Stdio::null());
        let status = status_within(npm, "npm ci", Duration::from_secs(600))?;
        if !status.success() {
            return Err(io::Error::other(format!("npm ci failed ({status})")));
        }
        fs::write(dir.join(".installed-lock"), &lock)?;
    }
    let versions = SioVersions {
        node: command_output("node", &["--version"]),
        socket_io: package_version(&dir, "socket.io"),
        express: package_version(&dir, "express"),
    };
    Ok((dir, versions))
}

/// Runs `command` to completion, killing it (by PID, through its guard) if it takes longer
/// than `limit`.
fn status_within(
    mut command: Command,
    name: &str,
    limit: Duration,
) -> io::Result<std::process::ExitStatus> {
    let child = command
        .spawn()
        .map_err(|e| io::Error::other(format!("cannot run {name}: {e}")))?;
    let mut guard = ProcessGuard {
        child,
        name: name.to_string(),
    };
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = guard.child.try_wait()? {
            return Ok(status);
        }
        if std::time::Instant::now() >= deadline {
            return Err(io::Error::other(format!(
                "{name} took longer than {limit:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn package_version(dir: &Path, package: &str) -> String {
    fs::read_to_string(dir.join("node_modules").join(package).join("package.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v.get("version").and_then(|v| v.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The trimmed stdout of a short command, or "?".
pub fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

/// Generous values for the server's limit flags: each limit stays switched on (0 would turn
/// some of them off), set above what the largest shape needs: 19,000 connections (4,750 per
/// source address by default, all of them from one address with `--sources 1`), 9,500 rooms,
/// and S3's per-client message rate (several hundred per second). Applied only for flags that
/// the server's `--help` lists and the caller did not set; names are matched exactly, so a
/// renamed flag is reported, not guessed.
pub const GENEROUS_LIMITS: &[(&str, &str)] = &[
    ("--max-rooms", "40000"),
    ("--max-connections", "40000"),
    ("--max-connections-per-ip", "40000"),
    ("--rate-per-sec", "100000"),
    ("--rate-burst", "100000"),
];

/// Limit flags that no shape comes near at their defaults: they stay as the server sets them.
pub const DEFAULT_LIMITS: &[&str] = &[
    "--max-message-bytes",
    "--max-queue-bytes",
    "--write-timeout-ms",
    "--passcode-attempts-per-ip",
    "--passcode-attempts-per-room",
    "--max-bad-messages",
    "--ping-interval-ms",
    "--ping-timeout-ms",
];

/// Long flags (`--name`) that a `--help` text lists.
pub fn help_flags(help: &str) -> Vec<String> {
    let mut flags = Vec::new();
    for line in help.lines() {
        for word in line.split(|c: char| c.is_whitespace() || c == ',' || c == '=') {
            if let Some(name) = word.strip_prefix("--") {
                let name: String = name
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                if !name.is_empty() && !flags.iter().any(|f: &String| f[2..] == name) {
                    flags.push(format!("--{name}"));
                }
            }
        }
    }
    flags
}

/// The extra arguments for a server that has `flags`, given the caller's own `user_args`:
/// generous limits for known limit flags, and warnings for flags that look like limits but
/// are not known (they keep the server's default, which may be too small for a shape).
pub fn limit_args(flags: &[String], user_args: &[String]) -> (Vec<String>, Vec<String>) {
    let user_sets = |flag: &str| {
        user_args
            .iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    let mut args = Vec::new();
    let mut warnings = Vec::new();
    for flag in flags {
        if user_sets(flag) {
            continue;
        }
        if let Some((_, value)) = GENEROUS_LIMITS.iter().find(|(f, _)| f == flag) {
            args.push(flag.clone());
            args.push((*value).to_string());
        } else if ["max", "limit", "rate", "per-ip", "burst"]
            .iter()
            .any(|w| flag.contains(w))
            && !DEFAULT_LIMITS.contains(&flag.as_str())
        {
            warnings.push(format!(
                "server flag {flag} looks like a limit that loadgen does not know: left at its default \
                 (raise it with --server-arg if a shape needs more)"
            ));
        }
    }
    (args, warnings)
}

/// Runs `bin --help` (for at most 10 s: a binary that ignores `--help` and starts serving is
/// killed, and then has no flags to raise).
pub fn server_help(bin: &Path) -> io::Result<String> {
    let mut command = Command::new(bin);
    command
        .arg("--help")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let name = format!("{} --help", bin.display());
    let mut child = command
        .spawn()
        .map_err(|e| io::Error::other(format!("cannot run {name}: {e}")))?;
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut stdout) = stdout {
            let _ = io::Read::read_to_string(&mut stdout, &mut text);
        }
        text
    });
    let mut guard = ProcessGuard { child, name };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while guard.child.try_wait()?.is_none() {
        if std::time::Instant::now() >= deadline {
            eprintln!(
                "warning: {} did not exit within 10 s; no limit flags passed",
                guard.name
            );
            drop(guard); // kills it, which ends the reader
            let _ = reader.join();
            return Ok(String::new());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(reader.join().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_flags_from_help() {
        let help = "Options:\n      --addr <ADDR>\n      --max-rooms <MAX_ROOMS>\n      \
                    --max-connections-per-ip <N>\n      --max-message-bytes <B>\n      \
                    --ping-secs <S>\n      --max-weird <W>\n  -h, --help\n";
        let flags = help_flags(help);
        assert!(flags.contains(&"--max-rooms".to_string()));
        let (args, warnings) = limit_args(&flags, &["--max-rooms".into(), "5".into()]);
        assert_eq!(args, ["--max-connections-per-ip", "40000"]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("--max-weird"));
    }
}
