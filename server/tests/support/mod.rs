//! Shared by the tests that run the real server binary and real browsers: on loopback
//! (`browser.rs`) or across network namespaces (`netns*.rs`).
//!
//! - [`process`]: the server binary (and coturn, and any child process) killed on drop.
//! - [`browser`]: headless Chromium on a thread of its own, optionally inside a namespace, and
//!   the page helpers (eval, wait_until, frames, getStats' selected candidate pair, …).
//! - [`netns`]: namespaces, veth pairs, addresses, routes, forwarding, link up/down, and the
//!   server/two-clients [`netns::Topology`].
//!
//! (`common/` is the other helper module, for in-process websocket tests.)

#![allow(dead_code)] // each test binary uses a different subset

pub mod browser;
pub mod netns;
pub mod process;

/// Prints how long a test took when it ends (also on failure): `let _t = Timing::start("name");`.
pub struct Timing(&'static str, std::time::Instant);

impl Timing {
    pub fn start(name: &'static str) -> Self {
        Timing(name, std::time::Instant::now())
    }
}

impl Drop for Timing {
    fn drop(&mut self) {
        let outcome = if std::thread::panicking() {
            "failed"
        } else {
            "passed"
        };
        println!(
            "timing: {} {outcome} in {:.1} s",
            self.0,
            self.1.elapsed().as_secs_f64()
        );
    }
}

/// Tests that start browsers run one at a time within a test binary: each starts two or three
/// Chromium processes, and several tests at once on a 2-core machine starve WebRTC of CPU
/// (missed deadlines, stalled ICE). Cargo runs test binaries one after another, so a
/// per-binary lock is enough.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Refuses to run where Chromium could send test traffic off this machine.
pub fn require_loopback_only_network() {
    // /proc/net/dev lists the interfaces of the reader's own network namespace
    // (/sys/class/net would show the host's unless sysfs is remounted).
    let table = std::fs::read_to_string("/proc/net/dev").expect("read /proc/net/dev");
    let interfaces: Vec<String> = table
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(|name| name.trim().to_string())
        .collect();
    let others: Vec<&String> = interfaces.iter().filter(|name| *name != "lo").collect();
    assert!(
        others.is_empty(),
        "browser tests must run in a network namespace with only `lo` (found {others:?}); \
         run them with scripts/test.sh, which uses `unshare -n`"
    );
}
