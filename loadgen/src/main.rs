//! `loadgen all`: the whole benchmark of ../shared/bench/LOADSHAPE.md, Noom vs the socket.io
//! baseline, in one run. `loadgen worker` is the worker process the coordinator starts.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use loadgen::coord::{self, IdleParams, Settings, StormParams, TrafficParams};
use loadgen::report::{num, Table};
use loadgen::servers::{self, SioVersions, Target};
use loadgen::sys;
use loadgen::wire::Dialect;

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Replays the load shapes of ../shared/bench/LOADSHAPE.md against Noom's server and the \
             tutorial's socket.io relay, on loopback, and prints both sets of figures with ratios."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every selected shape against both relays, `--runs` times, and print the tables.
    All(Box<AllArgs>),
    /// Internal: a worker process driven over stdin/stdout by `all`.
    #[command(hide = true)]
    Worker {
        /// Exit after this many seconds whatever happens.
        #[arg(long, default_value_t = 3600)]
        max_life_secs: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Shape {
    S1,
    S2,
    S3,
    S4,
}

#[derive(clap::Args, Clone, Debug)]
struct AllArgs {
    /// Repetitions of the whole set (figures are min / median / max over runs).
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Shapes to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![Shape::S1, Shape::S2, Shape::S3, Shape::S4])]
    shapes: Vec<Shape>,

    /// S1: connection counts.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1_000u32, 5_000, 10_000, 19_000])]
    s1_conns: Vec<u32>,
    /// S1: wait after the last join before measuring RSS, seconds.
    #[arg(long, default_value_t = 5.0)]
    s1_settle_secs: f64,
    /// S1: idle window during which RSS must not grow, seconds.
    #[arg(long, default_value_t = 10.0)]
    s1_idle_secs: f64,
    /// S1: connection + join handshakes in flight at once (over all workers).
    #[arg(long, default_value_t = 200)]
    s1_inflight: usize,
    /// S1: most connections per worker process (a process may open 20,000 files here).
    #[arg(long, default_value_t = 5_000)]
    conns_per_worker: u32,

    /// S2: aggregate signal rates, per second.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1_000u32, 20_000])]
    s2_rates: Vec<u32>,
    /// S2: measured interval, seconds (after the warm-up).
    #[arg(long, default_value_t = 20.0)]
    s2_secs: f64,
    /// S2: signal frame size, bytes.
    #[arg(long, default_value_t = 1024)]
    s2_bytes: usize,

    /// S3: measured interval, seconds (after the warm-up).
    #[arg(long, default_value_t = 15.0)]
    s3_secs: f64,
    /// S3: signal frame size, bytes.
    #[arg(long, default_value_t = 512)]
    s3_bytes: usize,
    /// S3: signals outstanding per client.
    #[arg(long, default_value_t = 32)]
    s3_window: u32,

    /// S2 and S3: rooms of 2.
    #[arg(long, default_value_t = 100)]
    rooms: u32,
    /// S2 and S3: warm-up before the measured interval, seconds.
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,

    /// S4: clients (pairs fill rooms).
    #[arg(long, default_value_t = 2_000)]
    s4_clients: u32,
    /// S4: connection + join handshakes in flight at once.
    #[arg(long, default_value_t = 200)]
    s4_inflight: usize,

    /// S2–S4: generator worker processes.
    #[arg(long, default_value_t = 2)]
    traffic_workers: u32,
    /// Spread client connections over this many loopback source addresses (127.0.0.1, .2, ...).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=250))]
    sources: u8,
    /// Give up on a shape's setup after this many seconds.
    #[arg(long, default_value_t = 120)]
    setup_timeout_secs: u64,

    /// Our server binary [default: `server` next to this executable, i.e. target/release/server].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Extra argument for our server (repeat). Overrides loadgen's generous limit values.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Do not raise the server's limit flags (see GENEROUS_LIMITS in loadgen/src/servers.rs).
    #[arg(long)]
    no_auto_limits: bool,
    /// The socket.io relay to copy and run [default: ../shared/bench/sio-relay from the
    /// workspace root].
    #[arg(long)]
    sio_dir: Option<PathBuf>,
    /// Measure only our server.
    #[arg(long)]
    no_baseline: bool,
    /// Where npm installs the baseline and the servers' logs go [default: target/loadgen].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Also write the markdown tables to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Worker { max_life_secs } => loadgen::worker::main(Duration::from_secs(max_life_secs)),
        Cmd::All(args) => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(err) => {
                    eprintln!("error: {err}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run_all(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// How to start a fresh relay for each measurement.
struct Launch {
    server_bin: PathBuf,
    server_args: Vec<String>,
    sio_dir: Option<PathBuf>,
    logs: PathBuf,
}

impl Launch {
    fn start(&self, dialect: Dialect, label: &str) -> Result<Target, String> {
        let log = self.logs.join(format!("{}-{label}.log", dialect.label()));
        let target = match dialect {
            Dialect::Noom => servers::start_noom(&self.server_bin, &self.server_args, &log),
            Dialect::SocketIo => match &self.sio_dir {
                Some(dir) => servers::start_sio(dir, &log),
                None => return Err("no baseline".into()),
            },
        }
        .map_err(|e| e.to_string())?;
        // Let the runtime finish starting before the "before" memory reading.
        std::thread::sleep(Duration::from_millis(300));
        Ok(target)
    }
}

async fn run_all(args: AllArgs) -> Result<(), String> {
    let limit =
        sys::raise_nofile_limit().map_err(|e| format!("cannot raise RLIMIT_NOFILE: {e}"))?;
    let max_conns = args.s1_conns.iter().copied().max().unwrap_or(0);
    if args.shapes.contains(&Shape::S1) && u64::from(max_conns) + 100 > limit {
        eprintln!(
            "warning: the open-files limit is {limit}; a server holding {max_conns} connections needs more"
        );
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let root = workspace_root();
    let server_bin = match &args.server_bin {
        Some(bin) => bin.clone(),
        None => exe.with_file_name("server"),
    };
    if !server_bin.is_file() {
        return Err(format!(
            "no server binary at {}: build it with `cargo build --release -p server`, or pass --server-bin",
            server_bin.display()
        ));
    }
    let work = args
        .work_dir
        .clone()
        .unwrap_or_else(|| root.join("target").join("loadgen"));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    // One benchmark at a time on this machine: two would measure each other.
    let _lock = lock_exclusive(&work.join(".lock"), Duration::from_secs(900))?;
    // Measure one binary for the whole run, even if someone rebuilds the original meanwhile.
    let copy = work.join("server-under-test");
    let _ = std::fs::remove_file(&copy);
    std::fs::copy(&server_bin, &copy)
        .map_err(|e| format!("cannot copy {}: {e}", server_bin.display()))?;
    let server_bin = copy;
    let mut server_args = Vec::new();
    if !args.no_auto_limits {
        let help = servers::server_help(&server_bin).map_err(|e| e.to_string())?;
        let (auto, warnings) = servers::limit_args(&servers::help_flags(&help), &args.server_args);
        for warning in warnings {
            eprintln!("warning: {warning}");
        }
        server_args.extend(auto);
    }
    server_args.extend(args.server_args.iter().cloned());
    let (sio_dir, versions) = if args.no_baseline {
        (None, SioVersions::default())
    } else {
        let source = args
            .sio_dir
            .clone()
            .unwrap_or_else(|| root.join("..").join("shared/bench/sio-relay"));
        let (dir, versions) = servers::prepare_sio(&source, &work).map_err(|e| e.to_string())?;
        (Some(dir), versions)
    };
    let launch = Launch {
        server_bin,
        server_args,
        sio_dir,
        logs: work.join("logs"),
    };

    let mut settings = Settings::new(exe);
    settings.sources = (1..=args.sources)
        .map(|i| Ipv4Addr::new(127, 0, 0, i))
        .collect();
    settings.conns_per_worker = args.conns_per_worker;
    settings.traffic_workers = args.traffic_workers;
    settings.setup_timeout = Duration::from_secs(args.setup_timeout_secs);

    print_machine(&launch, &versions, &args);
    let dialects: Vec<Dialect> = if args.no_baseline {
        vec![Dialect::Noom]
    } else {
        vec![Dialect::Noom, Dialect::SocketIo]
    };
    let mut table = Table::default();
    let started = std::time::Instant::now();
    for run in 1..=args.runs {
        // Alternate which relay goes first, so slow drift on a shared machine hits both alike.
        let order: Vec<Dialect> = if run % 2 == 1 {
            dialects.clone()
        } else {
            dialects.iter().rev().copied().collect()
        };
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        eprintln!(
            "== run {run}/{}: load average {}",
            args.runs,
            load.join(" ")
        );
        table.note(format!(
            "run {run} started at load average {}",
            load.join(" ")
        ));
        for shape in &args.shapes {
            match shape {
                Shape::S1 => {
                    for &conns in &args.s1_conns {
                        for &dialect in &order {
                            s1(&launch, &settings, &args, &mut table, run, dialect, conns).await;
                        }
                    }
                }
                Shape::S2 => {
                    for &rate in &args.s2_rates {
                        for &dialect in &order {
                            s2(&launch, &settings, &args, &mut table, run, dialect, rate).await;
                        }
                    }
                }
                Shape::S3 => {
                    for &dialect in &order {
                        s3(&launch, &settings, &args, &mut table, run, dialect).await;
                    }
                }
                Shape::S4 => {
                    for &dialect in &order {
                        s4(&launch, &settings, &args, &mut table, run, dialect).await;
                    }
                }
            }
        }
        eprintln!(
            "== run {run}/{} done after {:.0} s",
            args.runs,
            started.elapsed().as_secs_f64()
        );
    }
    let markdown = table.markdown();
    println!("\n{markdown}");
    if let Some(out) = &args.out {
        std::fs::write(out, &markdown).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(())
}

/// Takes an exclusive lock on `path` (flock), waiting up to `wait` for another run to finish.
fn lock_exclusive(path: &Path, wait: Duration) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        // SAFETY: flock on a valid fd; the lock is released when the file is closed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        if started.elapsed() >= wait {
            return Err(format!(
                "another loadgen run held {} for {wait:?}; not measuring alongside it",
                path.display()
            ));
        }
        if !said {
            eprintln!("loadgen: another benchmark is running; waiting for it to finish");
            said = true;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The commit the workspace is at, marked `+dirty` if server/ or shared/ have local changes.
fn source_version(root: &Path) -> String {
    let root = root.display().to_string();
    let commit = servers::command_output("git", &["-C", &root, "rev-parse", "--short", "HEAD"]);
    let dirty = servers::command_output(
        "git",
        &[
            "-C",
            &root,
            "status",
            "--porcelain",
            "--",
            "server",
            "shared",
        ],
    );
    if dirty.is_empty() || dirty == "?" {
        commit
    } else {
        format!("{commit}+dirty")
    }
}

fn print_machine(launch: &Launch, versions: &SioVersions, args: &AllArgs) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    println!("machine: nproc {}, CPU {cpu}", sys::nproc());
    println!(
        "load average: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "versions: {}, node {}, socket.io {}, express {}",
        servers::command_output("rustc", &["--version"]),
        versions.node,
        versions.socket_io,
        versions.express
    );
    println!(
        "server: {} (a copy of the build of workspace commit {}) --addr 127.0.0.1:0 --ice-server none {}",
        launch.server_bin.display(),
        source_version(&workspace_root()),
        launch.server_args.join(" ")
    );
    println!(
        "runs {}, shapes {:?}, S1 {:?}, S2 {:?}/s over {} rooms for {} s, S3 {} s, warm-up {} s, S4 {} clients",
        args.runs, args.shapes, args.s1_conns, args.s2_rates, args.rooms, args.s2_secs, args.s3_secs,
        args.warmup_secs, args.s4_clients
    );
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn failed(table: &mut Table, what: &str, run: u32, dialect: Dialect, err: &str) {
    eprintln!("   {what} {dialect} run {run}: FAILED: {err}");
    table.note(format!("{what} {dialect} run {run} failed: {err}"));
}

fn errors_note(
    table: &mut Table,
    what: &str,
    run: u32,
    dialect: Dialect,
    errors: u64,
    samples: &[String],
) {
    if errors > 0 {
        table.note(format!(
            "{what} {dialect} run {run}: {errors} errors, e.g. {samples:?}"
        ));
    }
}

async fn s1(
    launch: &Launch,
    settings: &Settings,
    args: &AllArgs,
    table: &mut Table,
    run: u32,
    dialect: Dialect,
    conns: u32,
) {
    let what = format!("S1 C={conns}");
    let target = match launch.start(dialect, &format!("s1-{conns}-run{run}")) {
        Ok(t) => t,
        Err(err) => return failed(table, &what, run, dialect, &err),
    };
    let mut settings = settings.clone();
    settings.inflight = args.s1_inflight;
    let params = IdleParams {
        connections: conns,
        settle: secs(args.s1_settle_secs),
        idle: secs(args.s1_idle_secs),
    };
    match coord::idle(&settings, &target, &params).await {
        Ok(f) => {
            eprintln!(
                "   {what} {dialect} run {run}: established in {:.2} s ({} workers, {} accept-queue overflows), RSS {} → {} KiB = {:.2} KiB/conn, idle {} → {} KiB (max {}), dropped {}, errors {}",
                f.establish_s, f.workers, f.listen_overflows, f.rss_before_kib, f.rss_after_kib, f.kib_per_conn,
                f.idle_start_kib, f.idle_end_kib, f.idle_max_kib, f.dropped, f.errors
            );
            table.add(&what, "time to establish all (s)", dialect, f.establish_s);
            table.add(
                &what,
                "RSS before (MiB)",
                dialect,
                f.rss_before_kib as f64 / 1024.0,
            );
            table.add(
                &what,
                "RSS after (MiB)",
                dialect,
                f.rss_after_kib as f64 / 1024.0,
            );
            table.add(&what, "KiB per connection", dialect, f.kib_per_conn);
            table.add(
                &what,
                "RSS growth over 10 s idle (KiB)",
                dialect,
                f.idle_growth_kib() as f64,
            );
            table.add(
                &what,
                "dropped + errors",
                dialect,
                (f.dropped + f.errors) as f64,
            );
            table.add(
                &what,
                "accept-queue overflows (SYN retried)",
                dialect,
                f.listen_overflows as f64,
            );
            errors_note(table, &what, run, dialect, f.errors, &f.error_samples);
        }
        Err(err) => failed(table, &what, run, dialect, &err),
    }
}

/// The CPU rows every rate and throughput shape reports: server, generator, everything else.
fn cpu_rows(table: &mut Table, what: &str, dialect: Dialect, cpu: &coord::CpuFigures) {
    table.add(what, "server CPU (% of a core)", dialect, cpu.server_pct);
    table.add(
        what,
        "server kernel time (% of its CPU)",
        dialect,
        cpu.server_kernel_pct,
    );
    table.add(
        what,
        "generator CPU (% of a core, all workers)",
        dialect,
        cpu.generator_pct,
    );
    table.add(
        what,
        "generator busiest thread (%)",
        dialect,
        cpu.generator_busiest_thread_pct,
    );
    table.add(
        what,
        "machine CPU, other programs (% of a core)",
        dialect,
        cpu.other_pct(),
    );
}

fn cpu_notes(table: &mut Table, what: &str, run: u32, dialect: Dialect, cpu: &coord::CpuFigures) {
    if cpu.generator_bound() {
        table.note(format!(
            "{what} {dialect} run {run}: GENERATOR-BOUND (busiest generator thread {:.0} % of a core)",
            cpu.generator_busiest_thread_pct
        ));
    }
    if cpu.machine_bound() {
        table.note(format!(
            "{what} {dialect} run {run}: MACHINE-BOUND (all {} cores busy: server {:.0} %, generator {:.0} %, other {:.0} %)",
            cpu.nproc, cpu.server_pct, cpu.generator_pct, cpu.other_pct()
        ));
    }
}

async fn s2(
    launch: &Launch,
    settings: &Settings,
    args: &AllArgs,
    table: &mut Table,
    run: u32,
    dialect: Dialect,
    rate: u32,
) {
    let what = format!("S2 {rate}/s");
    let target = match launch.start(dialect, &format!("s2-{rate}-run{run}")) {
        Ok(t) => t,
        Err(err) => return failed(table, &what, run, dialect, &err),
    };
    let params = TrafficParams {
        rooms: args.rooms,
        signal_bytes: args.s2_bytes,
        warmup: secs(args.warmup_secs),
        measure: secs(args.s2_secs),
        drain: Duration::from_secs(5),
        rate_per_sec: f64::from(rate),
        window: 0,
    };
    match coord::latency(settings, &target, &params).await {
        Ok(f) => {
            eprintln!(
                "   {what} {dialect} run {run}: p50 {} µs, p99 {} µs, max {} µs, lost {} of {}, server CPU {:.1} %, generator {:.1} % (busiest thread {:.1} %), machine {:.0} %, errors {}",
                num(f.p50_us), num(f.p99_us), num(f.max_us), f.lost, f.sent, f.cpu.server_pct,
                f.cpu.generator_pct, f.cpu.generator_busiest_thread_pct, f.cpu.machine_pct, f.errors
            );
            table.add(&what, "p50 (µs)", dialect, f.p50_us);
            table.add(&what, "p99 (µs)", dialect, f.p99_us);
            table.add(&what, "max (µs)", dialect, f.max_us);
            table.add(&what, "lost", dialect, f.lost as f64);
            table.add(&what, "errors", dialect, f.errors as f64);
            cpu_rows(table, &what, dialect, &f.cpu);
            cpu_notes(table, &what, run, dialect, &f.cpu);
            errors_note(table, &what, run, dialect, f.errors, &f.error_samples);
        }
        Err(err) => failed(table, &what, run, dialect, &err),
    }
}

async fn s3(
    launch: &Launch,
    settings: &Settings,
    args: &AllArgs,
    table: &mut Table,
    run: u32,
    dialect: Dialect,
) {
    let what = "S3".to_string();
    let target = match launch.start(dialect, &format!("s3-run{run}")) {
        Ok(t) => t,
        Err(err) => return failed(table, &what, run, dialect, &err),
    };
    let params = TrafficParams {
        rooms: args.rooms,
        signal_bytes: args.s3_bytes,
        warmup: secs(args.warmup_secs),
        measure: secs(args.s3_secs),
        drain: Duration::from_secs(5),
        rate_per_sec: 0.0,
        window: args.s3_window,
    };
    match coord::throughput(settings, &target, &params).await {
        Ok(f) => {
            eprintln!(
                "   {what} {dialect} run {run}: {:.0} relayed/s, {:.3} server CPU s per 100k, server CPU {:.1} %, generator {:.1} % (busiest thread {:.1} %), machine {:.0} %, unacked {}, errors {}",
                f.relayed_per_sec, f.cpu_s_per_100k, f.cpu.server_pct, f.cpu.generator_pct,
                f.cpu.generator_busiest_thread_pct, f.cpu.machine_pct, f.unacked, f.errors
            );
            table.add(
                &what,
                "relayed signals/s (incl. acks)",
                dialect,
                f.relayed_per_sec,
            );
            table.add(
                &what,
                "server CPU s per 100k relayed",
                dialect,
                f.cpu_s_per_100k,
            );
            cpu_rows(table, &what, dialect, &f.cpu);
            table.add(&what, "errors", dialect, f.errors as f64);
            cpu_notes(table, &what, run, dialect, &f.cpu);
            errors_note(table, &what, run, dialect, f.errors, &f.error_samples);
        }
        Err(err) => failed(table, &what, run, dialect, &err),
    }
}

async fn s4(
    launch: &Launch,
    settings: &Settings,
    args: &AllArgs,
    table: &mut Table,
    run: u32,
    dialect: Dialect,
) {
    let what = format!("S4 {} clients", args.s4_clients);
    let target = match launch.start(dialect, &format!("s4-run{run}")) {
        Ok(t) => t,
        Err(err) => return failed(table, &what, run, dialect, &err),
    };
    let params = StormParams {
        clients: args.s4_clients,
        inflight: args.s4_inflight,
    };
    match coord::join_storm(settings, &target, &params).await {
        Ok(f) => {
            eprintln!(
                "   {what} {dialect} run {run}: {} joins in {:.0} ms = {:.0} joins/s, all {} rooms welcomed after {:.0} ms, errors {}, accept-queue overflows {}",
                f.joins, f.all_joined_ms, f.joins_per_sec, f.rooms_welcomed, f.all_welcomed_ms, f.errors,
                f.listen_overflows
            );
            table.add(&what, "joins/s", dialect, f.joins_per_sec);
            table.add(
                &what,
                "time until every room welcomed (ms)",
                dialect,
                f.all_welcomed_ms,
            );
            table.add(&what, "errors", dialect, f.errors as f64);
            table.add(
                &what,
                "accept-queue overflows (SYN retried)",
                dialect,
                f.listen_overflows as f64,
            );
            errors_note(table, &what, run, dialect, f.errors, &f.error_samples);
        }
        Err(err) => failed(table, &what, run, dialect, &err),
    }
}
