//! The coordinator: splits a shape over worker processes (this same executable, re-run as
//! `loadgen worker`), drives them through Start → Ready → Go → Result → Close, and measures the
//! server process from /proc while they work.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::hist::Histogram;
use crate::proto::{Command, Job, Report, ShapeKind, WorkerResult};
use crate::servers::Target;
use crate::sys::{self, mono_ns, sleep_until_ns};

pub type Error = String;

/// How the load is generated, whatever the shape.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The executable to run as `EXE worker` (normally this one).
    pub worker_exe: PathBuf,
    /// Loopback source addresses to spread clients over.
    pub sources: Vec<Ipv4Addr>,
    /// S1: most connections one worker process holds.
    pub conns_per_worker: u32,
    /// S2–S4: worker processes.
    pub traffic_workers: u32,
    /// S1: connection + join handshakes in flight at once, over all workers.
    pub inflight: usize,
    /// Give up on setting a shape up after this long.
    pub setup_timeout: Duration,
    /// Prefix of every room name (tests run several shapes on one server).
    pub room_prefix: String,
}

impl Settings {
    pub fn new(worker_exe: PathBuf) -> Self {
        Self {
            worker_exe,
            sources: vec![Ipv4Addr::LOCALHOST],
            conns_per_worker: 5_000,
            traffic_workers: 2,
            inflight: 200,
            setup_timeout: Duration::from_secs(120),
            room_prefix: "lg".into(),
        }
    }
}

/// One worker process and its pipes. Killed by PID when dropped (tokio's kill_on_drop), and by
/// the kernel if this process dies first (PR_SET_PDEATHSIG).
struct Worker {
    child: Child,
    stdin: ChildStdin,
    reports: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    fn spawn(exe: &PathBuf) -> Result<Self, Error> {
        let mut command = std::process::Command::new(exe);
        command
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: the closure only calls prctl, which is async-signal-safe.
        unsafe {
            command.pre_exec(sys::die_with_parent);
        }
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start a worker ({}): {e}", exe.display()))?;
        let stdin = child.stdin.take().ok_or("worker without stdin")?;
        let stdout = child.stdout.take().ok_or("worker without stdout")?;
        Ok(Self {
            child,
            stdin,
            reports: BufReader::new(stdout).lines(),
        })
    }

    async fn send(&mut self, command: &Command) -> Result<(), Error> {
        let mut line = serde_json::to_string(command).map_err(|e| e.to_string())?;
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("worker {:?} gone: {e}", self.child.id()))?;
        self.stdin.flush().await.map_err(|e| e.to_string())
    }

    async fn recv(&mut self, deadline_ns: u64) -> Result<Report, Error> {
        let wait = Duration::from_nanos(deadline_ns.saturating_sub(mono_ns()));
        match tokio::time::timeout(wait, self.reports.next_line()).await {
            Ok(Ok(Some(line))) => serde_json::from_str(&line)
                .map_err(|e| format!("unreadable worker report {line:?}: {e}")),
            Ok(Ok(None)) => Err("a worker exited early (see its messages above)".into()),
            Ok(Err(e)) => Err(format!("reading a worker: {e}")),
            Err(_) => Err(format!("a worker did not answer within {wait:?}")),
        }
    }
}

/// The workers of one shape.
struct Crew {
    workers: Vec<Worker>,
}

impl Crew {
    /// Starts one worker per job and hands each its job. Returns when the jobs were sent.
    async fn start(settings: &Settings, jobs: Vec<Job>) -> Result<Self, Error> {
        let mut workers = Vec::with_capacity(jobs.len());
        for _ in &jobs {
            workers.push(Worker::spawn(&settings.worker_exe)?);
        }
        for (worker, job) in workers.iter_mut().zip(jobs) {
            worker.send(&Command::Start(job)).await?;
        }
        Ok(Self { workers })
    }

    /// Waits until every worker has set up; returns when the last one finished.
    async fn ready(&mut self, deadline_ns: u64) -> Result<u64, Error> {
        let mut last = 0;
        for worker in &mut self.workers {
            match worker.recv(deadline_ns).await? {
                Report::Ready { done_ns } => last = last.max(done_ns),
                Report::Failed(why) => return Err(why),
                other => return Err(format!("unexpected worker report {other:?}")),
            }
        }
        Ok(last)
    }

    async fn go(
        &mut self,
        t0_ns: u64,
        warmup: Duration,
        measure: Duration,
        drain: Duration,
    ) -> Result<(), Error> {
        let command = Command::Go {
            t0_ns,
            warmup_ns: warmup.as_nanos() as u64,
            measure_ns: measure.as_nanos() as u64,
            drain_ns: drain.as_nanos() as u64,
        };
        for worker in &mut self.workers {
            worker.send(&command).await?;
        }
        Ok(())
    }

    async fn results(&mut self, deadline_ns: u64) -> Result<Vec<WorkerResult>, Error> {
        let mut results = Vec::new();
        for worker in &mut self.workers {
            match worker.recv(deadline_ns).await? {
                Report::Result(result) => results.push(result),
                Report::Failed(why) => return Err(why),
                other => return Err(format!("unexpected worker report {other:?}")),
            }
        }
        Ok(results)
    }

    /// Tells every worker to close its connections and waits (bounded) until they have.
    async fn close(mut self) {
        for worker in &mut self.workers {
            let _ = worker.send(&Command::Close).await;
        }
        let deadline = mono_ns() + 20_000_000_000;
        for worker in &mut self.workers {
            let _ = worker.recv(deadline).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), worker.child.wait()).await;
        }
    }
}

fn base_job(settings: &Settings, shape: ShapeKind, target: &Target, tag: &str) -> Job {
    Job {
        shape,
        dialect: target.dialect,
        addr: target.addr,
        room_prefix: format!("{}-{tag}-", settings.room_prefix),
        first_room: 0,
        rooms: 0,
        sources: settings.sources.clone(),
        inflight: settings.inflight,
        read_buffer: 4096,
        setup_timeout_ms: settings.setup_timeout.as_millis() as u64,
        total_rooms: 0,
        rate_per_sec: 0.0,
        signal_bytes: 0,
        window: 0,
    }
}

/// Splits `rooms` into `parts` nearly equal jobs.
fn split(base: &Job, rooms: u32, parts: u32) -> Vec<Job> {
    let parts = parts.clamp(1, rooms.max(1));
    let mut jobs = Vec::new();
    let mut first = 0;
    for i in 0..parts {
        let n = rooms / parts + u32::from(i < rooms % parts);
        let mut job = base.clone();
        job.first_room = first;
        job.rooms = n;
        job.total_rooms = rooms;
        job.inflight = (base.inflight / parts as usize).max(1);
        jobs.push(job);
        first += n;
    }
    jobs
}

fn collect_errors(results: &[WorkerResult]) -> (u64, Vec<String>) {
    let errors = results.iter().map(|r| r.errors).sum();
    let samples = results
        .iter()
        .flat_map(|r| r.error_samples.iter().cloned())
        .take(5)
        .collect();
    (errors, samples)
}

/// S1 figures for one target and one connection count.
#[derive(Clone, Debug, Default)]
pub struct IdleFigures {
    pub connections: u32,
    pub workers: u32,
    pub establish_s: f64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub kib_per_conn: f64,
    /// RSS at the start and end of the idle window, and its largest sample.
    pub idle_start_kib: u64,
    pub idle_end_kib: u64,
    pub idle_max_kib: u64,
    pub dropped: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Connections the kernel dropped from a full accept queue while establishing (each costs
    /// its client a SYN retransmission, 1 s or more).
    pub listen_overflows: u64,
}

impl IdleFigures {
    /// Growth over the idle window (end − start), KiB.
    pub fn idle_growth_kib(&self) -> i64 {
        self.idle_end_kib as i64 - self.idle_start_kib as i64
    }
}

pub struct IdleParams {
    pub connections: u32,
    /// Wait after the last join before measuring RSS (LOADSHAPE: 5 s).
    pub settle: Duration,
    /// Idle window during which RSS must not grow (LOADSHAPE: 10 s).
    pub idle: Duration,
}

/// S1: `connections` clients in rooms of 2, established, then idle.
pub async fn idle(
    settings: &Settings,
    target: &Target,
    p: &IdleParams,
) -> Result<IdleFigures, Error> {
    let rooms = p.connections.div_ceil(2);
    let per_worker_rooms = (settings.conns_per_worker / 2).max(1);
    let workers = rooms.div_ceil(per_worker_rooms).max(1);
    let base = base_job(
        settings,
        ShapeKind::Idle,
        target,
        &format!("s1-{}", p.connections),
    );
    let jobs = split(&base, rooms, workers);
    let rss_before_kib = sys::rss_kib(target.pid).map_err(|e| e.to_string())?;
    let overflows_before = sys::listen_overflows().unwrap_or(0);
    let start_ns = mono_ns();
    let mut crew = Crew::start(settings, jobs).await?;
    let setup_deadline = start_ns + settings.setup_timeout.as_nanos() as u64 + 10_000_000_000;
    let established_ns = crew.ready(setup_deadline).await?;
    let listen_overflows = sys::listen_overflows()
        .unwrap_or(0)
        .saturating_sub(overflows_before);
    tokio::time::sleep(p.settle).await;
    let rss_after_kib = sys::rss_kib(target.pid).map_err(|e| e.to_string())?;
    let t0 = mono_ns();
    crew.go(t0, Duration::ZERO, p.idle, Duration::ZERO).await?;
    let mut samples = vec![rss_after_kib];
    let seconds = p.idle.as_secs_f64().ceil() as u64;
    for i in 1..=seconds {
        sleep_until_ns(t0 + (p.idle.as_nanos() as u64 * i / seconds.max(1))).await;
        samples.push(sys::rss_kib(target.pid).map_err(|e| e.to_string())?);
    }
    let results = crew
        .results(t0 + p.idle.as_nanos() as u64 + 30_000_000_000)
        .await?;
    crew.close().await;
    let (errors, error_samples) = collect_errors(&results);
    let connections = rooms * 2;
    Ok(IdleFigures {
        connections,
        workers,
        establish_s: (established_ns.saturating_sub(start_ns)) as f64 / 1e9,
        rss_before_kib,
        rss_after_kib,
        kib_per_conn: (rss_after_kib as f64 - rss_before_kib as f64) / f64::from(connections),
        idle_start_kib: rss_after_kib,
        idle_end_kib: *samples.last().unwrap_or(&rss_after_kib),
        idle_max_kib: samples.iter().copied().max().unwrap_or(rss_after_kib),
        dropped: results.iter().map(|r| r.dropped).sum(),
        errors,
        error_samples,
        listen_overflows,
    })
}

/// CPU of the server, the generator and the whole machine over a measured interval.
#[derive(Clone, Debug, Default)]
pub struct CpuFigures {
    pub interval_s: f64,
    /// Server utime + stime over the interval, seconds.
    pub server_cpu_s: f64,
    /// The same as % of one core.
    pub server_pct: f64,
    /// How much of the server's CPU was kernel time (stime), %.
    pub server_kernel_pct: f64,
    /// All worker processes together, % of one core.
    pub generator_pct: f64,
    /// The busiest worker's client thread, % of one core: near 100 it was saturated.
    pub generator_busiest_thread_pct: f64,
    /// Whole machine, % of one core (up to nproc × 100), including other programs.
    pub machine_pct: f64,
    pub nproc: usize,
}

impl CpuFigures {
    /// The generator could not go faster: a client thread was (nearly) always busy, or the
    /// machine had no idle CPU left.
    pub fn generator_bound(&self) -> bool {
        self.generator_busiest_thread_pct >= 90.0
    }

    pub fn machine_bound(&self) -> bool {
        self.machine_pct >= 0.95 * 100.0 * self.nproc as f64
    }

    /// Machine CPU used by neither the server nor the generator (other programs), % of one core.
    pub fn other_pct(&self) -> f64 {
        (self.machine_pct - self.server_pct - self.generator_pct).max(0.0)
    }
}

/// What [`measure_server`] saw over the interval.
struct ServerSample {
    cpu_s: f64,
    system_s: f64,
    wall_s: f64,
    machine_pct: f64,
}

/// Samples server CPU and machine jiffies at `from_ns` and `to_ns`.
async fn measure_server(pid: u32, from_ns: u64, to_ns: u64) -> Result<ServerSample, Error> {
    sleep_until_ns(from_ns).await;
    let ((u0, s0), (b0, t0), w0) = (
        sys::proc_cpu_split_ns(pid).map_err(|e| e.to_string())?,
        sys::machine_jiffies().map_err(|e| e.to_string())?,
        mono_ns(),
    );
    sleep_until_ns(to_ns).await;
    let ((u1, s1), (b1, t1), w1) = (
        sys::proc_cpu_split_ns(pid).map_err(|e| e.to_string())?,
        sys::machine_jiffies().map_err(|e| e.to_string())?,
        mono_ns(),
    );
    let machine_pct = if t1 > t0 {
        (b1 - b0) as f64 / (t1 - t0) as f64 * 100.0 * sys::nproc() as f64
    } else {
        0.0
    };
    Ok(ServerSample {
        cpu_s: ((u1 + s1) - (u0 + s0)) as f64 / 1e9,
        system_s: (s1 - s0) as f64 / 1e9,
        wall_s: (w1 - w0) as f64 / 1e9,
        machine_pct,
    })
}

fn cpu_figures(server: &ServerSample, results: &[WorkerResult]) -> CpuFigures {
    let (server_cpu_s, wall_s, machine_pct) = (server.cpu_s, server.wall_s, server.machine_pct);
    let generator_ns: u64 = results.iter().map(|r| r.cpu_ns).sum();
    let busiest = results
        .iter()
        .filter(|r| r.interval_ns > 0)
        .map(|r| r.runtime_thread_cpu_ns as f64 / r.interval_ns as f64 * 100.0)
        .fold(0.0, f64::max);
    CpuFigures {
        interval_s: wall_s,
        server_cpu_s,
        server_kernel_pct: if server_cpu_s > 0.0 {
            server.system_s / server_cpu_s * 100.0
        } else {
            0.0
        },
        server_pct: server_cpu_s / wall_s.max(1e-9) * 100.0,
        generator_pct: generator_ns as f64 / 1e9 / wall_s.max(1e-9) * 100.0,
        generator_busiest_thread_pct: busiest,
        machine_pct,
        nproc: sys::nproc(),
    }
}

pub struct TrafficParams {
    pub rooms: u32,
    pub signal_bytes: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// After the traffic stops, how long to wait for what is still in flight.
    pub drain: Duration,
    /// S2: aggregate signals per second.
    pub rate_per_sec: f64,
    /// S3: outstanding signals per client.
    pub window: u32,
}

#[derive(Clone, Debug, Default)]
pub struct LatencyFigures {
    pub rate_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Signals sent in the whole run (warm-up included) and never received.
    pub lost: u64,
    pub sent: u64,
    pub measured: u64,
    pub cpu: CpuFigures,
    pub errors: u64,
    pub error_samples: Vec<String>,
}

/// Runs S2 or S3's setup and timed phase; returns the workers' results and the CPU figures.
async fn traffic(
    settings: &Settings,
    target: &Target,
    shape: ShapeKind,
    tag: &str,
    p: &TrafficParams,
) -> Result<(Vec<WorkerResult>, CpuFigures), Error> {
    let mut base = base_job(settings, shape, target, tag);
    base.read_buffer = 16 * 1024;
    base.rate_per_sec = p.rate_per_sec;
    base.signal_bytes = p.signal_bytes;
    base.window = p.window;
    let jobs = split(&base, p.rooms, settings.traffic_workers);
    let start_ns = mono_ns();
    let mut crew = Crew::start(settings, jobs).await?;
    crew.ready(start_ns + settings.setup_timeout.as_nanos() as u64 + 10_000_000_000)
        .await?;
    // A common start a little ahead, so every worker has received Go by then.
    let t0 = mono_ns() + 300_000_000;
    crew.go(t0, p.warmup, p.measure, p.drain).await?;
    let from = t0 + p.warmup.as_nanos() as u64;
    let to = from + p.measure.as_nanos() as u64;
    let server = measure_server(target.pid, from, to).await?;
    let results = crew
        .results(to + p.drain.as_nanos() as u64 + 30_000_000_000)
        .await?;
    crew.close().await;
    let cpu = cpu_figures(&server, &results);
    Ok((results, cpu))
}

/// S2: one-way latency at a fixed aggregate rate.
pub async fn latency(
    settings: &Settings,
    target: &Target,
    p: &TrafficParams,
) -> Result<LatencyFigures, Error> {
    let tag = format!("s2-{}", p.rate_per_sec as u64);
    let (results, cpu) = traffic(settings, target, ShapeKind::Latency, &tag, p).await?;
    let mut histogram = Histogram::default();
    for r in &results {
        histogram.merge(&r.latency);
    }
    let sent: u64 = results.iter().map(|r| r.sent).sum();
    let received: u64 = results.iter().map(|r| r.received).sum();
    let (errors, error_samples) = collect_errors(&results);
    Ok(LatencyFigures {
        rate_per_sec: p.rate_per_sec,
        p50_us: histogram.quantile_us(0.50),
        p99_us: histogram.quantile_us(0.99),
        max_us: histogram.max_us(),
        lost: sent.saturating_sub(received),
        sent,
        measured: histogram.count(),
        cpu,
        errors,
        error_samples,
    })
}

#[derive(Clone, Debug, Default)]
pub struct ThroughputFigures {
    /// Relayed messages per second, signals and acks, both directions.
    pub relayed_per_sec: f64,
    pub relayed: u64,
    /// Server CPU seconds per 100,000 relayed messages.
    pub cpu_s_per_100k: f64,
    pub cpu: CpuFigures,
    pub unacked: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
}

/// S3: throughput with a bounded window.
pub async fn throughput(
    settings: &Settings,
    target: &Target,
    p: &TrafficParams,
) -> Result<ThroughputFigures, Error> {
    let (results, cpu) = traffic(settings, target, ShapeKind::Throughput, "s3", p).await?;
    let relayed: u64 = results.iter().map(|r| r.relayed_measured).sum();
    let (errors, error_samples) = collect_errors(&results);
    Ok(ThroughputFigures {
        relayed_per_sec: relayed as f64 / cpu.interval_s.max(1e-9),
        relayed,
        cpu_s_per_100k: if relayed > 0 {
            cpu.server_cpu_s / relayed as f64 * 100_000.0
        } else {
            f64::NAN
        },
        unacked: results.iter().map(|r| r.unacked).sum(),
        cpu,
        errors,
        error_samples,
    })
}

#[derive(Clone, Debug, Default)]
pub struct StormFigures {
    pub clients: u32,
    pub joins: u64,
    pub joins_per_sec: f64,
    /// From the start until the last join was acknowledged.
    pub all_joined_ms: f64,
    /// From the start until every room's first member heard that the second joined.
    pub all_welcomed_ms: f64,
    pub rooms_welcomed: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Connections dropped from a full accept queue during the storm (see [`IdleFigures`]).
    pub listen_overflows: u64,
}

pub struct StormParams {
    pub clients: u32,
    pub inflight: usize,
}

/// S4: join storm.
pub async fn join_storm(
    settings: &Settings,
    target: &Target,
    p: &StormParams,
) -> Result<StormFigures, Error> {
    let mut base = base_job(settings, ShapeKind::JoinStorm, target, "s4");
    base.inflight = p.inflight;
    let rooms = p.clients.div_ceil(2);
    let jobs = split(&base, rooms, settings.traffic_workers);
    let mut crew = Crew::start(settings, jobs).await?;
    crew.ready(mono_ns() + 30_000_000_000).await?;
    let overflows_before = sys::listen_overflows().unwrap_or(0);
    let t0 = mono_ns() + 200_000_000;
    crew.go(t0, Duration::ZERO, Duration::ZERO, Duration::ZERO)
        .await?;
    let results = crew
        .results(t0 + settings.setup_timeout.as_nanos() as u64 + 30_000_000_000)
        .await?;
    let listen_overflows = sys::listen_overflows()
        .unwrap_or(0)
        .saturating_sub(overflows_before);
    crew.close().await;
    let joins: u64 = results.iter().map(|r| r.joins).sum();
    let last_join = results.iter().map(|r| r.last_join_ns).max().unwrap_or(t0);
    let last_welcome = results
        .iter()
        .map(|r| r.last_welcome_ns)
        .max()
        .unwrap_or(t0);
    let (errors, error_samples) = collect_errors(&results);
    let joined_s = last_join.saturating_sub(t0) as f64 / 1e9;
    Ok(StormFigures {
        clients: rooms * 2,
        joins,
        joins_per_sec: joins as f64 / joined_s.max(1e-9),
        all_joined_ms: joined_s * 1e3,
        all_welcomed_ms: last_welcome.saturating_sub(t0) as f64 / 1e6,
        rooms_welcomed: results.iter().map(|r| r.rooms_welcomed).sum(),
        errors,
        error_samples,
        listen_overflows,
    })
}
