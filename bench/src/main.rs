//! `bench`: Noom beside the tutorial app it replaces, measured the same way in one run, and the
//! size budget of Noom's web app. Printed figures, not tests: `scripts/bench.sh` builds
//! everything and runs `bench run` in a network namespace with only loopback;
//! `scripts/test.sh` runs `bench budget`.
//!
//! A crate of its own rather than a `loadgen` subcommand: loadgen drives raw websockets at
//! scale and needs no browser, this drives headless Chromium (chromiumoxide) and reads the
//! server's bundle code; keeping them apart keeps each one's dependencies and purpose small.

mod browser;
mod budget;
mod measure;
mod procs;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use measure::{App, Load, Ready};
use stats::{bytes, ratio, thousands, Summary};

/// What can stop a measurement.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Cdp {
        what: String,
        #[source]
        source: chromiumoxide::error::CdpError,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { after: Duration, what: String },
    #[error("{0}")]
    Setup(String),
}

impl Error {
    fn cdp(what: &str, source: chromiumoxide::error::CdpError) -> Self {
        Error::Cdp {
            what: what.to_string(),
            source,
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Noom beside the tutorial app (cold-load bytes, time to interactive, call setup), and Noom's bundle size budget."
)]
enum Cli {
    /// Packs the built web app as the server does and fails if a page (the first page at `/`,
    /// the whole app at a room) weighs more than its budget (bench/src/budget.rs), counting
    /// bytes after brotli. Prints every file.
    Budget {
        /// The built web app (`trunk build --release` writes `dist`).
        #[arg(long, default_value = "dist")]
        dist: PathBuf,
    },
    /// Measures both apps in headless Chromium, side by side, and prints the figures with the
    /// ratio Noom ÷ tutorial. Run it through scripts/bench.sh (builds, prepares the tutorial,
    /// and runs this in a network namespace with only loopback).
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The tutorial app, copied and `npm ci`-ed (scripts/bench.sh prepares it).
    #[arg(long)]
    tutorial: PathBuf,
    /// Noom's server binary, with the web app built in [default: `server` beside this binary].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Calls per app (each with two fresh browsers).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=200))]
    calls: u32,
    /// Cold loads per app (each in a fresh browser).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    loads: u32,
    /// The commit measured, for the report.
    #[arg(long, default_value = "?")]
    commit: String,
    /// Also trace every call: both pages' WebRTC and signaling steps (peer connection created,
    /// offer/answer/descriptions settled, candidates, ICE and connection states, tracks,
    /// websocket message types, the remote video's srcObject/playing/first frame), stamped in
    /// the pages. Prints the first calls' timelines in full and each step's median time since
    /// B's click over all calls. A diagnostic: the wrappers cost a little, so measure the
    /// figures to publish without it.
    #[arg(long, env = "NOOM_BENCH_TRACE")]
    trace: bool,
    /// The whole run stops after this many minutes, whatever it is doing.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=240))]
    deadline_mins: u64,
}

fn main() -> ExitCode {
    match Cli::parse() {
        Cli::Budget { dist } => budget_command(&dist),
        Cli::Run(args) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("bench: cannot start the async runtime: {err}");
                    return ExitCode::from(2);
                }
            };
            runtime.block_on(run_command(args))
        }
    }
}

fn budget_command(dist: &std::path::Path) -> ExitCode {
    let bundle = match budget::pack(dist) {
        Ok(bundle) => bundle,
        Err(err) => {
            eprintln!("bench budget: {err}");
            return ExitCode::from(2);
        }
    };
    let rows = budget::rows(&bundle);
    println!(
        "Web app bundle {} as served (brotli quality {}, gzip level {}):",
        dist.display(),
        server::bundle::pack::BROTLI_QUALITY,
        server::bundle::pack::GZIP_LEVEL
    );
    print!("{}", budget::table(&rows));
    let mut failed = false;
    for spec in budget::PAGES {
        let weight = match budget::weigh(&bundle, &rows, spec) {
            Ok(weight) => weight,
            Err(err) => {
                eprintln!("bench budget: {err}");
                failed = true;
                continue;
            }
        };
        let files: Vec<&str> = weight.files.iter().map(|r| r.path.as_str()).collect();
        println!("{} ({}):", spec.label, files.join(" + "));
        match budget::check(&weight) {
            Ok(total) => println!(
                "  within its budget: {} of {} ({} left)",
                bytes(total),
                bytes(spec.budget),
                bytes(spec.budget - total)
            ),
            Err(err) => {
                eprintln!("bench budget: {err}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Refuses to run where Chromium could send traffic off this machine (as the browser tests do).
fn require_loopback_only_network() -> Result<(), Error> {
    let table = std::fs::read_to_string("/proc/net/dev").map_err(|source| Error::Io {
        what: "reading /proc/net/dev".into(),
        source,
    })?;
    let others: Vec<&str> = table
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(str::trim)
        .filter(|name| *name != "lo")
        .collect();
    if others.is_empty() {
        Ok(())
    } else {
        Err(Error::Setup(format!(
            "the benchmark runs only in a network namespace with nothing but `lo` (found {others:?}): \
             use scripts/bench.sh"
        )))
    }
}

#[derive(Default)]
struct Results {
    loads: [Vec<Load>; 2],
    /// Noom's room link (the whole app), cold.
    room_loads: Vec<Load>,
    calls: [Vec<f64>; 2],
    traces: [Vec<measure::Trace>; 2],
    failures: Vec<String>,
}

fn slot(app: App) -> usize {
    match app {
        App::Noom => 0,
        App::Tutorial => 1,
    }
}

/// Alternates which app goes first, so that drift in the machine's load hits both alike.
fn order(i: u32) -> [App; 2] {
    if i % 2 == 0 {
        [App::Noom, App::Tutorial]
    } else {
        [App::Tutorial, App::Noom]
    }
}

async fn run_command(args: RunArgs) -> ExitCode {
    let started = Instant::now();
    if let Err(err) = require_loopback_only_network() {
        eprintln!("bench: {err}");
        return ExitCode::from(2);
    }
    let server_bin = args
        .server_bin
        .clone()
        .unwrap_or_else(procs::default_server_bin);
    let servers = procs::start_noom(&server_bin)
        .and_then(|noom| procs::start_tutorial(&args.tutorial).map(|tutorial| (noom, tutorial)));
    let (noom, tutorial) = match servers {
        Ok(servers) => servers,
        Err(err) => {
            eprintln!("bench: {err}");
            return ExitCode::from(2);
        }
    };
    let urls = [format!("{}/", noom.url), format!("{}/", tutorial.url)];
    eprintln!(
        "bench: Noom at {}, tutorial at {}; {} cold loads and {} calls each",
        urls[0], urls[1], args.loads, args.calls
    );

    let mut results = Results::default();
    let deadline = Duration::from_secs(args.deadline_mins * 60);
    let stopped = {
        let work = measure_all(&args, &urls, &mut results);
        tokio::select! {
            () = work => None,
            () = tokio::time::sleep(deadline) => Some(format!("stopped at the {}-minute deadline", args.deadline_mins)),
            _ = tokio::signal::ctrl_c() => Some("interrupted".to_string()),
        }
    };
    // Servers are killed (by PID) here; browsers were closed after each measurement, or killed
    // as their futures dropped.
    drop(noom);
    drop(tutorial);

    print_report(&args, &results, started.elapsed());
    if let Some(reason) = &stopped {
        eprintln!("bench: {reason}; the figures above are partial");
    }
    if stopped.is_some() || !results.failures.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// One cold load of `url` within [`measure::LOAD_LIMIT`]; a failure is recorded as `what`.
async fn load_once(
    url: &str,
    ready: Ready,
    what: &str,
    failures: &mut Vec<String>,
) -> Option<Load> {
    match tokio::time::timeout(measure::LOAD_LIMIT, measure::cold_load(url, ready)).await {
        Ok(Ok(load)) => Some(load),
        Ok(Err(err)) => {
            failures.push(format!("{what}: {err}"));
            None
        }
        Err(_) => {
            failures.push(format!("{what}: over {:?}", measure::LOAD_LIMIT));
            None
        }
    }
}

async fn measure_all(args: &RunArgs, urls: &[String; 2], results: &mut Results) {
    // One load of each, not counted: the servers' first requests (node loading modules, a
    // first template render) are not what a cold browser cache costs.
    for app in order(0) {
        let what = format!("warm-up load of {}", app.name());
        load_once(
            &urls[slot(app)],
            Ready::WelcomeForm,
            &what,
            &mut results.failures,
        )
        .await;
    }
    for i in 0..args.loads {
        for app in order(i) {
            let what = format!("cold load {} of {}", i + 1, app.name());
            let url = &urls[slot(app)];
            if let Some(load) =
                load_once(url, Ready::WelcomeForm, &what, &mut results.failures).await
            {
                eprintln!(
                    "bench: cold load {}/{} {}: {:.0} ms to interactive",
                    i + 1,
                    args.loads,
                    app.name(),
                    load.tti_ms
                );
                results.loads[slot(app)].push(load);
            }
        }
    }
    // A room link opened cold: what a person who was sent the link loads (Noom only).
    let room_link = format!("{}r/bench-link", urls[slot(App::Noom)]);
    for i in 0..args.loads {
        let what = format!("room link load {} of Noom", i + 1);
        if let Some(load) = load_once(&room_link, Ready::Lobby, &what, &mut results.failures).await
        {
            eprintln!(
                "bench: room link load {}/{} Noom: {:.0} ms to the lobby",
                i + 1,
                args.loads,
                load.tti_ms
            );
            results.room_loads.push(load);
        }
    }
    let run = std::process::id();
    for i in 0..args.calls {
        for app in order(i) {
            let room = format!("bench {run} {} {}", app.name(), i + 1);
            let url = &urls[slot(app)];
            let call = measure::call(app, url, &room, args.trace);
            match tokio::time::timeout(measure::CALL_LIMIT, call).await {
                Ok(Ok(measure::Call { ms, trace })) => {
                    eprintln!(
                        "bench: call {}/{} {}: {ms:.0} ms",
                        i + 1,
                        args.calls,
                        app.name()
                    );
                    results.calls[slot(app)].push(ms);
                    if let Some(trace) = trace {
                        results.traces[slot(app)].push(trace);
                    }
                }
                Ok(Err(err)) => {
                    results
                        .failures
                        .push(format!("call {} of {}: {err}", i + 1, app.name()))
                }
                Err(_) => results.failures.push(format!(
                    "call {} of {}: over {:?}",
                    i + 1,
                    app.name(),
                    measure::CALL_LIMIT
                )),
            }
        }
    }
}

/// `http://127.0.0.1:1234/socket.io/?EIO=4&…` as `/socket.io/?EIO=4&…`, at most `max` chars.
fn short_url(url: &str, max: usize) -> String {
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or(url);
    if path.chars().count() > max {
        let cut: String = path.chars().take(max - 1).collect();
        format!("{cut}…")
    } else {
        path.to_string()
    }
}

fn total_bytes(load: &Load) -> f64 {
    load.requests.iter().filter_map(|r| r.bytes).sum()
}

/// Prints the requests of the first load and the totals; returns the median total.
fn print_loads(name: &str, loads: &[Load]) -> Option<f64> {
    let Some(first) = loads.first() else {
        println!("  {name}: no successful load");
        return None;
    };
    println!("  {name}");
    println!(
        "    {:<48} {:<10} {:>7} {:>8} {:>10}",
        "request", "type", "status", "encoding", "bytes"
    );
    for r in &first.requests {
        let size = match (&r.failed, r.bytes) {
            (Some(err), _) => format!("FAILED {err}"),
            (None, Some(b)) => thousands(b as u64),
            (None, None) => "unfinished".to_string(),
        };
        let url = match &r.redirected_to {
            Some(to) => format!("{} → {}", short_url(&r.url, 22), short_url(to, 22)),
            None => short_url(&r.url, 48),
        };
        let statuses: Vec<String> = r.statuses.iter().map(i64::to_string).collect();
        println!(
            "    {:<48} {:<10} {:>7} {:>8} {:>10}",
            url,
            r.kind,
            if statuses.is_empty() {
                "-".to_string()
            } else {
                statuses.join("→")
            },
            r.encoding.as_deref().unwrap_or("-"),
            size
        );
    }
    let per_load: Vec<f64> = loads.iter().map(total_bytes).collect();
    let summary = Summary::of(&per_load);
    let failed = first.requests.iter().filter(|r| r.failed.is_some()).count();
    print!(
        "    total: {} requests ({failed} failed), {}",
        first.requests.len(),
        bytes(total_bytes(first) as u64)
    );
    if let Some(s) = summary.filter(|s| s.min != s.max) {
        print!(
            " (over {} loads: {}–{})",
            s.count,
            thousands(s.min as u64),
            thousands(s.max as u64)
        );
    }
    println!();
    summary.map(|s| s.median)
}

fn print_report(args: &RunArgs, results: &Results, took: Duration) {
    println!();
    println!(
        "Noom beside the tutorial app, one run: commit {}, {} cores, {}, headless with fake devices, \
         loopback only; took {:.0} s",
        args.commit,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        browser::chromium_version(),
        took.as_secs_f64()
    );

    println!();
    println!(
        "Cold load: a fresh profile opens /; every request until the welcome form is interactive \
         and the network is quiet for 1 s; bytes as received, headers included \
         (CDP Network.loadingFinished.encodedDataLength)"
    );
    let mut totals = [None, None];
    for app in [App::Noom, App::Tutorial] {
        totals[slot(app)] = print_loads(app.name(), &results.loads[slot(app)]);
    }
    if let [Some(noom), Some(tutorial)] = totals {
        println!(
            "  total bytes (median of loads): Noom {} ÷ tutorial {} = {}",
            bytes(noom as u64),
            bytes(tutorial as u64),
            ratio(noom, tutorial)
        );
    }

    println!();
    println!(
        "Noom's room link opened cold (the whole app, up to the lobby's name field; the tutorial \
         has no such page: its one page is the figure above)"
    );
    print_loads("Noom, /r/<room>", &results.room_loads);
    let lobby: Vec<f64> = results.room_loads.iter().map(|l| l.tti_ms).collect();
    if let Some(s) = Summary::of(&lobby) {
        println!(
            "    to the lobby: {:.0} ms median ({:.0}–{:.0}, {} loads)",
            s.median, s.min, s.max, s.count
        );
    }

    println!();
    println!(
        "Time to interactive welcome form: ms from navigation start, {} cold loads each",
        args.loads
    );
    let tti = |app: App| {
        let values: Vec<f64> = results.loads[slot(app)].iter().map(|l| l.tti_ms).collect();
        Summary::of(&values)
    };
    print_summaries("ms", tti(App::Noom), tti(App::Tutorial));

    println!();
    println!(
        "Call setup: the second person's join click → both remote videos' first frame \
         (requestVideoFrameCallback), ms, {} calls each, two fresh browsers per call",
        args.calls
    );
    let calls = |app: App| Summary::of(&results.calls[slot(app)]);
    print_summaries("ms", calls(App::Noom), calls(App::Tutorial));

    if args.trace {
        print_traces(results);
    }

    if !results.failures.is_empty() {
        println!();
        println!("Failed measurements ({}):", results.failures.len());
        for failure in &results.failures {
            println!("  {failure}");
        }
    }
}

/// How the trace names a main-thread stall.
const STALL: &str = "main thread busy";

/// Timelines printed in full, per app.
const TRACES_IN_FULL: usize = 3;

/// `--trace`: the first calls' steps in full, then each step's median over all calls (its first
/// occurrence in each call), in order.
fn print_traces(results: &Results) {
    for app in [App::Noom, App::Tutorial] {
        let traces = &results.traces[slot(app)];
        let calls = &results.calls[slot(app)];
        for (i, (trace, ms)) in traces.iter().zip(calls).take(TRACES_IN_FULL).enumerate() {
            println!();
            println!(
                "Trace of {} call {} ({ms:.0} ms): ms since B's join click, A = already in the room, B = joining",
                app.name(),
                i + 1
            );
            for (at, who, what) in &trace.steps {
                println!("  {at:>8.1}  {who}  {what}");
            }
        }
        println!();
        println!(
            "Median trace of {} over {} calls: each step's first occurrence, ms since B's join click",
            app.name(),
            traces.len()
        );
        for (median, who, what, seen) in median_steps(traces) {
            println!(
                "  {median:>8.1}  {who}  {what:<48} ({seen} of {} calls)",
                traces.len()
            );
        }
    }
}

/// Each (page, step)'s median time over the calls where it occurred, by median.
fn median_steps(traces: &[measure::Trace]) -> Vec<(f64, char, String, usize)> {
    let mut seen: std::collections::BTreeMap<(char, String), Vec<f64>> = Default::default();
    for trace in traces {
        let mut first: std::collections::BTreeMap<(char, &str), f64> = Default::default();
        // Stalls are per call (their names carry their length): in the full timelines only.
        for (at, who, what) in trace.steps.iter().filter(|s| !s.2.starts_with(STALL)) {
            first.entry((*who, what.as_str())).or_insert(*at);
        }
        for ((who, what), at) in first {
            seen.entry((who, what.to_string())).or_default().push(at);
        }
    }
    let mut rows: Vec<(f64, char, String, usize)> = seen
        .into_iter()
        .filter_map(|((who, what), times)| {
            Summary::of(&times).map(|s| (s.median, who, what, s.count))
        })
        .collect();
    rows.sort_by(|x, y| x.0.total_cmp(&y.0));
    rows
}

fn print_summaries(unit: &str, noom: Option<Summary>, tutorial: Option<Summary>) {
    println!(
        "  {:<16} {:>8} {:>8} {:>8} {:>4}",
        "", "min", "median", "max", "n"
    );
    for (name, s) in [("Noom", noom), ("tutorial", tutorial)] {
        match s {
            Some(s) => println!(
                "  {:<16} {:>8.0} {:>8.0} {:>8.0} {:>4}  {unit}",
                name, s.min, s.median, s.max, s.count
            ),
            None => println!("  {name:<16} no successful measurement"),
        }
    }
    if let (Some(n), Some(t)) = (noom, tutorial) {
        println!(
            "  {:<16} {:>8} {:>8} {:>8}",
            "Noom ÷ tutorial",
            ratio(n.min, t.min),
            ratio(n.median, t.median),
            ratio(n.max, t.max)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shortened_to_their_path() {
        assert_eq!(short_url("http://127.0.0.1:80/a.js", 48), "/a.js");
        assert_eq!(short_url("http://h/abcdefgh", 5), "/abc…");
        assert_eq!(order(0), [App::Noom, App::Tutorial]);
        assert_eq!(order(1), [App::Tutorial, App::Noom]);
    }

    #[test]
    fn median_steps_take_each_steps_first_occurrence() {
        let trace = |steps: &[(f64, char, &str)]| measure::Trace {
            steps: steps
                .iter()
                .map(|(at, who, what)| (*at, *who, what.to_string()))
                .collect(),
        };
        let traces = [
            trace(&[(0.0, 'B', "click"), (10.0, 'A', "x"), (30.0, 'A', "x")]),
            trace(&[(0.0, 'B', "click"), (20.0, 'A', "x")]),
            trace(&[
                (0.0, 'B', "click"),
                (40.0, 'A', "x"),
                (45.0, 'A', "main thread busy 9 ms"),
                (50.0, 'B', "y"),
            ]),
        ];
        assert_eq!(
            median_steps(&traces),
            [
                (0.0, 'B', "click".to_string(), 3),
                (20.0, 'A', "x".to_string(), 3),
                (50.0, 'B', "y".to_string(), 1),
            ]
        );
    }

    #[test]
    fn flags_parse() {
        let cli =
            Cli::try_parse_from(["bench", "run", "--tutorial", "/t", "--calls", "12"]).unwrap();
        let Cli::Run(args) = cli else {
            panic!("not run")
        };
        assert_eq!((args.calls, args.loads), (12, 5));
        assert!(!args.trace);
        assert!(Cli::try_parse_from(["bench", "run", "--tutorial", "/t", "--calls", "0"]).is_err());
    }
}
