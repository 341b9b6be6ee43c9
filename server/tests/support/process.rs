//! Child processes that die with their guard: the real server binary, on loopback or inside a
//! network namespace, and anything else a test starts (coturn, say).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::netns::Namespace;

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A child process, killed (SIGKILL, by PID through its `Child`) and reaped when dropped.
pub struct Process {
    child: Child,
}

impl Process {
    /// Spawns `cmd`. For a process inside a namespace, build `cmd` with [`Namespace::command`].
    pub fn spawn(cmd: &mut Command) -> Self {
        let shown = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        Process { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server binary, killed when dropped. Its stdout is read line by line on a thread of its
/// own: the first line (`Noom is listening on URL`) gives [`ServerProcess::url`], and later lines
/// (a TLS fingerprint, say) come from [`ServerProcess::next_line`].
pub struct ServerProcess {
    process: Process,
    pub url: String,
    lines: mpsc::Receiver<String>,
    /// The server's `--data-dir` (secrets, certificates), a fresh temporary directory unless
    /// the test passed its own `--data-dir` (to keep one across a restart, say).
    data_dir: Option<tempfile::TempDir>,
}

impl ServerProcess {
    /// On 127.0.0.1, a port the OS picks, no ICE servers, serving the release bundle.
    pub fn start(extra: &[&str]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_server"));
        cmd.args(["--addr", "127.0.0.1:0"]);
        Self::spawn(cmd, extra, "http://127.0.0.1:")
    }

    /// Inside namespace `ns`, listening on `addr`, no ICE servers, serving the release bundle.
    /// The first line must name a URL on `addr`'s IP (http or https).
    pub fn start_in(ns: &Namespace, addr: SocketAddr, extra: &[&str]) -> Self {
        let mut cmd = ns.command(env!("CARGO_BIN_EXE_server"));
        cmd.arg("--addr").arg(addr.to_string());
        let ip = addr.ip().to_string();
        let server = Self::spawn(cmd, extra, "");
        let host = server
            .url
            .split_once("://")
            .map(|(_, rest)| rest.split(['/', ':']).next().unwrap_or(""));
        assert_eq!(
            host,
            Some(ip.as_str()),
            "the server in {} announced {} instead of a URL on {ip}",
            ns.name(),
            server.url
        );
        server
    }

    fn spawn(mut cmd: Command, extra: &[&str], prefix: &str) -> Self {
        let dist = workspace_root().join("dist");
        assert!(
            dist.join("index.html").is_file(),
            "no release bundle at {}: run `trunk build --release` first (scripts/test.sh does)",
            dist.display()
        );
        cmd.args(["--ice-server", "none", "--dist"]).arg(&dist);
        // Never the default `noom-data` beside the working directory (the package's directory
        // under cargo test): each server gets its own, unless the test chose one.
        let data_dir = if extra
            .iter()
            .any(|a| *a == "--data-dir" || a.starts_with("--data-dir="))
        {
            None
        } else {
            let dir = tempfile::tempdir().expect("the server's data directory");
            cmd.arg("--data-dir").arg(dir.path());
            Some(dir)
        };
        cmd.args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut process = Process::spawn(&mut cmd);
        let stdout = process.child_mut().stdout.take().expect("server stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = ServerProcess {
            process,
            url: String::new(),
            lines,
            data_dir,
        };
        let line = server
            .next_line(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("the server printed nothing (did it exit?)"));
        server.url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|url| {
                url.starts_with(prefix)
                    && (url.starts_with("http://") || url.starts_with("https://"))
            })
            .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"))
            .to_string();
        server
    }

    /// The server's next stdout line, or None if it printed nothing more within `timeout` (or
    /// exited).
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Reads the server's stdout lines (waiting at most `timeout` for each) until one starts
    /// with `prefix`, and returns the rest of that line, trimmed; None if no such line came
    /// (the lines read on the way are gone). For the banner: `Certificate public key SHA-256
    /// (SPKI, base64): `, say.
    pub fn line_after(&self, prefix: &str, timeout: Duration) -> Option<String> {
        while let Some(line) = self.next_line(timeout) {
            if let Some(value) = line.strip_prefix(prefix) {
                return Some(value.trim().to_string());
            }
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The temporary `--data-dir` the harness gave the server (None if the test passed one).
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.data_dir.as_ref().map(|d| d.path())
    }
}

/// Debian's coturn (`turnserver`) inside a namespace, with TURN REST credentials
/// (`use-auth-secret` + `static-auth-secret`, as the issue asks), UDP and TCP on `ip:3478`,
/// relaying from `ip` on ports 49152–49200, no TLS, no CLI, no config file, logging into a
/// temporary directory. Killed when dropped.
pub struct Coturn {
    process: Process,
    /// `turn:IP:3478`; add `?transport=udp` or `?transport=tcp` as needed.
    pub url: String,
    /// Holds its log (`turnserver.log`, read it with [`Coturn::log`]) and pid file.
    dir: tempfile::TempDir,
}

pub const COTURN_PORT: u16 = 3478;

impl Coturn {
    pub fn start_in(ns: &Namespace, ip: std::net::Ipv4Addr, secret: &str, realm: &str) -> Self {
        let ip_s = ip.to_string();
        let dir = tempfile::tempdir().expect("coturn's directory");
        let mut cmd = ns.command("turnserver");
        cmd.args([
            "-n", // no configuration file
            "--listening-ip",
            &ip_s,
            "--relay-ip",
            &ip_s,
            "--listening-port",
            &COTURN_PORT.to_string(),
            "--min-port",
            "49152",
            "--max-port",
            "49200",
            "--use-auth-secret",
            "--static-auth-secret",
            secret,
            "--realm",
            realm,
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--no-stdout-log",
            "--simple-log",
        ])
        .arg("--log-file")
        .arg(dir.path().join("turnserver.log"))
        .arg("--pidfile")
        .arg(dir.path().join("turnserver.pid"))
        .args([
            // Test peers use 198.18.0.0/15; coturn would otherwise refuse nothing there, but
            // say so explicitly so the range stays relayable whatever its defaults become.
            "--allowed-peer-ip",
            "198.18.0.0-198.19.255.255",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut process = Process::spawn(&mut cmd);
        // Ready when its UDP and TCP sockets are listening (read from inside the namespace).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let port = format!(":{COTURN_PORT}");
        loop {
            let udp = ns.exec("ss", &["-Hlnu"]);
            let tcp = ns.exec("ss", &["-Hlnt"]);
            if udp.contains(&port) && tcp.contains(&port) {
                break;
            }
            assert!(
                process.is_running(),
                "turnserver exited at start in {}",
                ns.name()
            );
            assert!(
                std::time::Instant::now() < deadline,
                "turnserver not listening on {ip}{port} after 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Coturn {
            process,
            url: format!("turn:{ip}:{COTURN_PORT}"),
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// TURN REST credentials for `name`, valid for `ttl`, as coturn's `use-auth-secret` checks
    /// them: username `expiry:name` (expiry in Unix seconds), password
    /// base64(HMAC-SHA1(secret, username)).
    pub fn credentials(secret: &str, name: &str, ttl: Duration) -> (String, String) {
        use base64::Engine;
        let expiry = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
            + ttl.as_secs();
        let username = format!("{expiry}:{name}");
        let key =
            ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
        let tag = ring::hmac::sign(&key, username.as_bytes());
        let password = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        (username, password)
    }

    /// Its log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("turnserver.log")).unwrap_or_default()
    }
}
