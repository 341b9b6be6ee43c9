//! Network namespaces, veth pairs and addresses for tests that need several hosts on one machine.
//!
//! Everything here drives iproute2 (`ip`), as root, and only ever touches namespaces it created
//! itself: names are unique per test run (`noom-<pid>-<random>-<n>-<tag>`), every namespace is
//! deleted when its [`Namespace`] guard drops (also when a test panics), and veth pairs are
//! created directly between two such namespaces (`ip -n X link add … peer … netns Y`), never in
//! the test process's own namespace. Deleting a namespace deletes its interfaces and, with them,
//! the other end of each veth. IPv6 is switched off in every namespace, so the only addresses
//! are the ones a test gives (all from 198.18.0.0/15, the benchmarking range).
//!
//! Works both in `scripts/test.sh`'s `unshare -n -p -f --mount-proc` (the `/run/netns` bind
//! mounts then live in that private mount namespace and vanish with it) and from an ordinary
//! root shell.
//!
//! A process runs inside a namespace through `ip netns exec NAME program …` ([`Namespace::command`],
//! which execs `program` in place, so the child's PID is the program's own; wrap it in
//! [`super::process::Process`] to kill it by PID on drop). Rust code runs inside one on a thread
//! of its own ([`Namespace::run`]): on Linux the network namespace belongs to a thread, and
//! sockets keep the namespace they were created in, so a socket made there can be used anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Runs `ip ARGS…` to completion; panics with its stderr when it fails.
pub fn ip(args: &[&str]) -> String {
    run(Command::new("ip").args(args))
}

fn run(cmd: &mut Command) -> String {
    match try_run(cmd) {
        Ok(stdout) => stdout,
        Err(err) => panic!("{err}"),
    }
}

fn try_run(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e} (is iproute2 installed?)"));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A short random tag for this test process, so two runs with the same PID (each in its own PID
/// namespace, as scripts/test.sh does) never pick the same namespace names.
fn run_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        format!("{:04x}", hasher.finish() & 0xffff)
    })
}

/// A route added through the harness, remembered so that it can be put back when the kernel
/// drops it (taking a link down, or removing the last address on it, deletes its routes).
#[derive(Clone, Debug)]
struct Route {
    /// `default` or a CIDR.
    dest: String,
    via: Ipv4Addr,
    dev: String,
}

/// One network namespace, deleted (`ip netns del`) when dropped. `lo` is up; IPv6 and IP
/// forwarding are off.
pub struct Namespace {
    name: String,
    /// Interfaces the test made in (or moved into) this namespace, besides `lo`.
    interfaces: Mutex<BTreeSet<String>>,
    routes: Mutex<Vec<Route>>,
    /// For each veth end here: the namespace and name of its other end.
    peers: Mutex<BTreeMap<String, (String, String)>>,
}

impl Namespace {
    /// Creates a namespace named `noom-<pid>-<random>-<n>-<tag>`. Needs root.
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "noom-{}-{}-{}-{tag}",
            std::process::id(),
            run_tag(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        if let Err(err) = try_run(Command::new("ip").args(["netns", "add", &name])) {
            panic!(
                "{err}\nnetwork-namespace tests need root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2; \
                 run them as root, for example through scripts/test.sh"
            );
        }
        // From here on the guard exists, so a failure below still deletes the namespace.
        let ns = Namespace {
            name,
            interfaces: Mutex::new(BTreeSet::new()),
            routes: Mutex::new(Vec::new()),
            peers: Mutex::new(BTreeMap::new()),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.exec(
            "sysctl",
            &[
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
                "net.ipv4.ip_forward=0",
            ],
        );
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's handle in the file system (what `setns` opens).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ARGS…`; panics with stderr on failure. Returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs `program` inside this namespace (`ip netns exec NAME program`). `ip`
    /// execs the program in place, so the spawned child's PID is the program's own.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Starts `program ARGS…` inside this namespace, stdout and stderr inherited; killed (by PID)
    /// when the returned guard drops. Use [`Namespace::command`] for more control.
    pub fn spawn(&self, program: &str, args: &[&str]) -> super::process::Process {
        super::process::Process::spawn(self.command(program).args(args))
    }

    /// Runs `program ARGS…` inside this namespace to completion; panics with stderr on failure.
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        run(self.command(program).args(args))
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns its result. Sockets
    /// created inside `f` belong to this namespace and may be used from any thread afterwards.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = self.path();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    enter(&path).unwrap_or_else(|e| panic!("{e}"));
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// The interfaces this namespace should have besides `lo`: the ones made through this guard.
    pub fn expected_interfaces(&self) -> BTreeSet<String> {
        self.interfaces.lock().expect("interfaces").clone()
    }

    /// The interfaces the kernel lists in this namespace (`lo` included), read from inside it.
    pub fn interfaces(&self) -> BTreeSet<String> {
        self.run(|| thread_interfaces().unwrap_or_else(|e| panic!("{e}")))
    }

    /// A dummy interface (it carries no traffic itself; an address on it is simply one of this
    /// host's addresses), up. Kernels built without the `dummy` driver (this CI VM's, for one)
    /// get an `ifb` device instead, which behaves the same for this purpose: NOARP, up, carrier.
    pub fn add_dummy(&self, dev: &str) {
        if let Err(err) = try_run(
            Command::new("ip")
                .args(["-n", &self.name, "link", "add", dev, "type", "dummy"])
                .env("LC_ALL", "C"),
        ) {
            if !err.contains("Unknown device type") {
                panic!("{err}");
            }
            self.ip(&["link", "add", dev, "type", "ifb"]);
        }
        self.interfaces
            .lock()
            .expect("interfaces")
            .insert(dev.to_string());
        self.link_up(dev);
    }

    /// `ip addr add CIDR dev DEV`.
    pub fn add_addr(&self, dev: &str, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", dev]);
    }

    /// `ip addr del CIDR dev DEV`.
    pub fn del_addr(&self, dev: &str, cidr: &str) {
        self.ip(&["addr", "del", cidr, "dev", dev]);
    }

    /// The IPv4 addresses on `dev`, as CIDRs.
    pub fn addrs(&self, dev: &str) -> Vec<String> {
        self.ip(&["-o", "-4", "addr", "show", "dev", dev])
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                words.find(|w| *w == "inet")?;
                words.next().map(str::to_string)
            })
            .collect()
    }

    /// Replaces address `old` on `dev` by `new` (both CIDRs), as when a laptop moves from Wi-Fi to
    /// cable. Works while the link is down too; the routes through `dev` that the kernel dropped
    /// with the old address come back now if the link is up, else when [`Namespace::link_up`]
    /// brings it up.
    pub fn change_addr(&self, dev: &str, old: &str, new: &str) {
        self.del_addr(dev, old);
        self.add_addr(dev, new);
        if self.is_up(dev) {
            self.restore_routes(dev);
        }
    }

    /// A route (`default` or a CIDR) through gateway `via` on `dev`, remembered and put back after
    /// a link flap or an address change.
    pub fn add_route(&self, dest: &str, via: Ipv4Addr, dev: &str) {
        let route = Route {
            dest: dest.to_string(),
            via,
            dev: dev.to_string(),
        };
        self.apply(&route);
        self.routes.lock().expect("routes").push(route);
    }

    fn apply(&self, route: &Route) {
        self.ip(&[
            "route",
            "replace",
            &route.dest,
            "via",
            &route.via.to_string(),
            "dev",
            &route.dev,
        ]);
    }

    fn restore_routes(&self, dev: &str) {
        let routes: Vec<Route> = self.routes.lock().expect("routes").clone();
        for route in routes.iter().filter(|r| r.dev == dev) {
            self.apply(route);
        }
    }

    /// `ip route show` (the main table).
    pub fn routes(&self) -> String {
        self.ip(&["route", "show"])
    }

    /// `ip link set DEV down`. The kernel drops the routes through it.
    pub fn link_down(&self, dev: &str) {
        self.ip(&["link", "set", dev, "down"]);
    }

    /// `ip link set DEV up`, then puts back the routes through `dev` added by
    /// [`Namespace::add_route`] (as a network manager would). Returns once the link really
    /// carries packets: the kernel attaches a device's queue only when its deferred link-state
    /// work runs (up to about a second after carrier comes on), and until then drops what is
    /// sent. So this waits (blocking, at most 5 s) until `dev`, and a veth's other end if that
    /// one is up, report the operational state UP.
    pub fn link_up(&self, dev: &str) {
        self.ip(&["link", "set", dev, "up"]);
        self.restore_routes(dev);
        let peer = self.peers.lock().expect("peers").get(dev).cloned();
        let peer_up = peer.as_ref().is_some_and(|(ns, peer_dev)| {
            link_flags_up(&ip(&["-n", ns, "-o", "link", "show", "dev", peer_dev]))
        });
        if peer.is_some() && !peer_up {
            return; // no carrier until the other end comes up
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let here = operstate(&self.ip(&["-o", "link", "show", "dev", dev]));
            let there = match &peer {
                Some((ns, peer_dev)) => {
                    operstate(&ip(&["-n", ns, "-o", "link", "show", "dev", peer_dev]))
                }
                None => "UP".to_string(),
            };
            let ready = |state: &str| state == "UP" || state == "UNKNOWN";
            if ready(&here) && ready(&there) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{dev} in {} not operational 5 s after `ip link set up` (state {here}, other end {there})",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether `dev` is administratively up.
    pub fn is_up(&self, dev: &str) -> bool {
        link_flags_up(&self.ip(&["-o", "link", "show", "dev", dev]))
    }

    /// IPv4 forwarding (`net.ipv4.ip_forward`) in this namespace.
    pub fn set_forwarding(&self, on: bool) {
        let setting = format!("net.ipv4.ip_forward={}", u8::from(on));
        self.exec("sysctl", &["-qw", &setting]);
    }

    pub fn forwarding(&self) -> bool {
        self.exec("sysctl", &["-n", "net.ipv4.ip_forward"]).trim() == "1"
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Err(err) = try_run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("warning: {err}");
        }
    }
}

/// A veth pair: `a_dev` in `a`, `b_dev` in `b`, both up. Interface names need only be unique
/// inside their own namespace (at most 15 bytes).
pub fn veth(a: &Namespace, a_dev: &str, b: &Namespace, b_dev: &str) {
    a.ip(&[
        "link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", &b.name,
    ]);
    for (ns, dev, other, other_dev) in [(a, a_dev, b, b_dev), (b, b_dev, a, a_dev)] {
        ns.interfaces
            .lock()
            .expect("interfaces")
            .insert(dev.to_string());
        ns.peers
            .lock()
            .expect("peers")
            .insert(dev.to_string(), (other.name.clone(), other_dev.to_string()));
    }
    a.ip(&["link", "set", a_dev, "up"]);
    b.link_up(b_dev);
}

/// Whether a line of `ip -o link show` has the UP flag (administratively up).
fn link_flags_up(line: &str) -> bool {
    line.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .is_some_and(|(flags, _)| flags.split(',').any(|f| f == "UP"))
}

/// The operational state in a line of `ip -o link show` (`UP`, `DOWN`, `LOWERLAYERDOWN`,
/// `UNKNOWN` for devices without carrier reporting such as lo, dummy or ifb).
fn operstate(line: &str) -> String {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "state");
    words.next().unwrap_or("UNKNOWN").to_string()
}

/// Moves the calling thread into the network namespace at `path` (a /run/netns entry). Threads
/// and processes started from this thread afterwards start in it too.
pub fn enter(path: &std::path::Path) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    // SAFETY: setns takes a valid open file descriptor (kept open by `file` for the call) and a
    // namespace type; it changes only the calling thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "setns({}, CLONE_NEWNET): {}",
            path.display(),
            std::io::Error::last_os_error()
        ))
    }
}

/// The interfaces of the calling thread's network namespace. (/proc/net, that is
/// /proc/self/net, shows the main thread's namespace; /proc/thread-self/net is this thread's.)
pub fn thread_interfaces() -> Result<BTreeSet<String>, String> {
    let table = std::fs::read_to_string("/proc/thread-self/net/dev")
        .map_err(|e| format!("read /proc/thread-self/net/dev: {e}"))?;
    Ok(table
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(|name| name.trim().to_string())
        .collect())
}

/// Checks, from inside a namespace, that it holds `lo` and exactly the `expected` interfaces:
/// a browser started there can then only reach what the test built.
pub fn check_thread_interfaces(expected: &BTreeSet<String>) -> Result<(), String> {
    let found = thread_interfaces()?;
    let mut wanted = expected.clone();
    wanted.insert("lo".to_string());
    if found == wanted {
        Ok(())
    } else {
        Err(format!(
            "the namespace has interfaces {found:?}, expected exactly {wanted:?}: \
             refusing to start a browser where it could reach other networks"
        ))
    }
}

/// Addresses of the server/two-clients layout ([`Topology`]), all in 198.18.0.0/15.
pub mod addr {
    use std::net::Ipv4Addr;

    /// The server's service address, on a dummy interface in S.
    pub const SERVICE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    /// S's end of the link to A (A's gateway).
    pub const S_A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
    pub const A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
    /// S's end of the link to B (B's gateway).
    pub const S_B: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
    pub const B: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
    /// The two-host layout ([`super::TwoHosts`]): A and B on one /24.
    pub const PAIR_A: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 1);
    pub const PAIR_B: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 2);
}

/// Interface names of the layouts.
pub mod dev {
    /// In S: the dummy interface holding [`super::addr::SERVICE`].
    pub const SERVICE: &str = "svc0";
    /// In S: the veth to A, and A's end of it.
    pub const S_TO_A: &str = "s-a";
    pub const A_TO_S: &str = "a-s";
    /// In S: the veth to B, and B's end of it.
    pub const S_TO_B: &str = "s-b";
    pub const B_TO_S: &str = "b-s";
    /// The two-host layout's one veth: A's end and B's end.
    pub const A_TO_B: &str = "a-b";
    pub const B_TO_A: &str = "b-a";
}

/// A server namespace S and two client namespaces A and B:
///
/// ```text
///   A  a-s 198.18.1.2/24 ── s-a 198.18.1.1/24 ┐
///                                              S  svc0 198.18.0.1/32 (dummy)
///   B  b-s 198.18.2.2/24 ── s-b 198.18.2.1/24 ┘
/// ```
///
/// A's and B's default routes go through S. IP forwarding is off in S, so A and B both reach
/// 198.18.0.1 but not each other; [`Topology::set_forwarding`] turns it on (then S routes
/// between them like a plain router, no NAT).
pub struct Topology {
    pub s: Namespace,
    pub a: Namespace,
    pub b: Namespace,
}

impl Topology {
    pub fn new() -> Self {
        let topology = Topology {
            s: Namespace::new("s"),
            a: Namespace::new("a"),
            b: Namespace::new("b"),
        };
        let Topology { s, a, b } = &topology;
        s.add_dummy(dev::SERVICE);
        s.add_addr(dev::SERVICE, &format!("{}/32", addr::SERVICE));
        veth(s, dev::S_TO_A, a, dev::A_TO_S);
        s.add_addr(dev::S_TO_A, &format!("{}/24", addr::S_A));
        a.add_addr(dev::A_TO_S, &format!("{}/24", addr::A));
        a.add_route("default", addr::S_A, dev::A_TO_S);
        veth(s, dev::S_TO_B, b, dev::B_TO_S);
        s.add_addr(dev::S_TO_B, &format!("{}/24", addr::S_B));
        b.add_addr(dev::B_TO_S, &format!("{}/24", addr::B));
        b.add_route("default", addr::S_B, dev::B_TO_S);
        topology
    }

    /// IP forwarding in S: on, A and B reach each other through S; off (the default), only S.
    pub fn set_forwarding(&self, on: bool) {
        self.s.set_forwarding(on);
    }

    /// Adds a direct link between A and B, beside their links to S: A `a-b` 198.18.3.1/24,
    /// B `b-a` 198.18.3.2/24 (as in [`TwoHosts`]). With forwarding off in S, it is the only
    /// path between A and B (for media), while both still reach S (for signaling):
    ///
    /// ```text
    ///   A ── S ── B      signaling: 198.18.1.2 / 198.18.2.2 → 198.18.0.1
    ///   └─ a-b ─ b-a ┘   media:     198.18.3.1 ↔ 198.18.3.2
    /// ```
    pub fn add_direct_link(&self) {
        veth(&self.a, dev::A_TO_B, &self.b, dev::B_TO_A);
        self.a
            .add_addr(dev::A_TO_B, &format!("{}/24", addr::PAIR_A));
        self.b
            .add_addr(dev::B_TO_A, &format!("{}/24", addr::PAIR_B));
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}

/// Two namespaces joined directly by one veth: A `a-b` 198.18.3.1/24, B `b-a` 198.18.3.2/24.
pub struct TwoHosts {
    pub a: Namespace,
    pub b: Namespace,
}

impl TwoHosts {
    pub fn new() -> Self {
        let hosts = TwoHosts {
            a: Namespace::new("a"),
            b: Namespace::new("b"),
        };
        veth(&hosts.a, dev::A_TO_B, &hosts.b, dev::B_TO_A);
        hosts
            .a
            .add_addr(dev::A_TO_B, &format!("{}/24", addr::PAIR_A));
        hosts
            .b
            .add_addr(dev::B_TO_A, &format!("{}/24", addr::PAIR_B));
        hosts
    }
}

impl Default for TwoHosts {
    fn default() -> Self {
        Self::new()
    }
}
