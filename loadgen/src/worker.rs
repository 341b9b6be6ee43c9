//! A worker process: holds up to a few thousand clients on one thread (a current-thread tokio
//! runtime) and plays one worker's share of a shape, as told by the coordinator over stdin.
//!
//! Rooms of two are kept inside one worker, and one task drives both members of a room, so a
//! room's signals never cross processes. Timestamps are CLOCK_MONOTONIC all the same, which is
//! system-wide, so figures from several workers and the coordinator line up.

use std::collections::HashSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::hist::Histogram;
use crate::proto::{Command, Job, Report, ShapeKind, WorkerResult};
use crate::sys::{self, mono_ns, sleep_until_ns};
use crate::wire::{Client, Dialect, Event};

/// Runs a worker until the coordinator says Close or its stdin ends. `max_life` bounds the
/// whole process in time whatever happens.
pub fn main(max_life: Duration) -> std::process::ExitCode {
    if let Err(err) = sys::raise_nofile_limit() {
        eprintln!("loadgen worker: cannot raise the open-files limit: {err}");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("loadgen worker: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        tokio::select! {
            code = run() => code,
            () = tokio::time::sleep(max_life) => {
                eprintln!("loadgen worker: lived {max_life:?}, exiting");
                std::process::ExitCode::FAILURE
            }
        }
    })
}

fn report(report: &Report) {
    let mut out = std::io::stdout().lock();
    let line = serde_json::to_string(report).unwrap_or_default();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Where the shape is: the room tasks watch this.
#[derive(Clone, Debug, PartialEq)]
enum Phase {
    Setup,
    Go(Timing),
    Close,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Timing {
    t0_ns: u64,
    measure_start_ns: u64,
    end_ns: u64,
    drain_ns: u64,
}

/// What a room (or, in the join storm, a client) task tells the worker's main task.
enum Note {
    Ready,
    SetupFailed(String),
    Done(WorkerResult),
    Closed,
    // Join storm:
    Joined { at_ns: u64 },
    Welcomed { room: u32, at_ns: u64 },
    Error(String),
}

async fn run() -> std::process::ExitCode {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let Some(Command::Start(job)) = next_command(&mut lines).await else {
        return std::process::ExitCode::FAILURE;
    };
    let job = Arc::new(job);
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let (note_tx, mut notes) = mpsc::unbounded_channel();
    let histogram = Arc::new(Mutex::new(Histogram::default()));
    let storm = job.shape == ShapeKind::JoinStorm;
    let tasks = if storm { 0 } else { job.rooms as usize };
    // S2: one tick channel per room, fed by the pacer thread once the timed phase starts.
    let mut tick_senders = Vec::new();
    if !storm {
        let sem = Arc::new(Semaphore::new(job.inflight.max(1)));
        for i in 0..job.rooms {
            let ticks = if job.shape == ShapeKind::Latency {
                let (tx, rx) = mpsc::unbounded_channel();
                tick_senders.push(tx);
                Some(rx)
            } else {
                None
            };
            tokio::spawn(room_task(
                Arc::clone(&job),
                job.first_room + i,
                Arc::clone(&sem),
                phase_rx.clone(),
                note_tx.clone(),
                Arc::clone(&histogram),
                ticks,
            ));
        }
        // Setup: every room reports once.
        let mut failures = Vec::new();
        for _ in 0..tasks {
            match notes.recv().await {
                Some(Note::Ready) => {}
                Some(Note::SetupFailed(err)) => failures.push(err),
                _ => break,
            }
        }
        if !failures.is_empty() {
            report(&Report::Failed(format!(
                "{} of {} rooms failed to set up; first: {}",
                failures.len(),
                tasks,
                failures[0]
            )));
            let _ = phase_tx.send(Phase::Close);
            // Let the healthy rooms close their sockets politely; bounded.
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while notes.recv().await.is_some() {}
            })
            .await;
            return std::process::ExitCode::FAILURE;
        }
    }
    report(&Report::Ready { done_ns: mono_ns() });

    let Some(Command::Go {
        t0_ns,
        warmup_ns,
        measure_ns,
        drain_ns,
    }) = next_command(&mut lines).await
    else {
        let _ = phase_tx.send(Phase::Close);
        return std::process::ExitCode::SUCCESS;
    };
    let timing = Timing {
        t0_ns,
        measure_start_ns: t0_ns + warmup_ns,
        end_ns: t0_ns + warmup_ns + measure_ns,
        drain_ns,
    };
    // CPU of this process and of this (the runtime's) thread over the measured interval.
    let cpu = tokio::spawn(async move {
        sleep_until_ns(timing.measure_start_ns).await;
        let (p0, t0, w0) = (sys::process_cpu_ns(), sys::thread_cpu_ns(), mono_ns());
        sleep_until_ns(timing.end_ns).await;
        let (p1, t1, w1) = (sys::process_cpu_ns(), sys::thread_cpu_ns(), mono_ns());
        (p1 - p0, t1 - t0, w1 - w0)
    });

    let mut result = if storm {
        join_storm(&job, timing, phase_rx.clone(), note_tx.clone(), &mut notes).await
    } else {
        if job.shape == ShapeKind::Latency {
            start_pacer(&job, timing, std::mem::take(&mut tick_senders));
        }
        let _ = phase_tx.send(Phase::Go(timing));
        let mut total = WorkerResult::default();
        for _ in 0..tasks {
            match notes.recv().await {
                Some(Note::Done(part)) => merge(&mut total, part),
                Some(_) => {}
                None => break,
            }
        }
        total
    };
    if let Ok((process, thread, wall)) = cpu.await {
        result.cpu_ns = process;
        result.runtime_thread_cpu_ns = thread;
        result.interval_ns = wall;
    }
    if let Ok(histogram) = histogram.lock() {
        result.latency = histogram.to_sparse();
    }
    report(&Report::Result(result));

    // Hold every connection open until told to close (or the coordinator is gone).
    let _ = next_command(&mut lines).await;
    let _ = phase_tx.send(Phase::Close);
    drop(note_tx);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while notes.recv().await.is_some() {}
    })
    .await;
    report(&Report::Closed);
    std::process::ExitCode::SUCCESS
}

/// The next command, or None once the coordinator is gone (stdin closed) or talks nonsense.
async fn next_command(lines: &mut Lines<BufReader<Stdin>>) -> Option<Command> {
    let line = lines.next_line().await.ok()??;
    match serde_json::from_str::<Command>(&line) {
        Ok(command) => Some(command),
        Err(err) => {
            eprintln!("loadgen worker: bad command {line:?}: {err}");
            None
        }
    }
}

fn merge(total: &mut WorkerResult, part: WorkerResult) {
    total.errors += part.errors;
    for sample in part.error_samples {
        if total.error_samples.len() < 5 {
            total.error_samples.push(sample);
        }
    }
    total.sent += part.sent;
    total.received += part.received;
    total.sent_measured += part.sent_measured;
    total.received_measured += part.received_measured;
    total.relayed_measured += part.relayed_measured;
    total.unacked += part.unacked;
    total.dropped += part.dropped;
}

fn source_for(job: &Job, index: u32) -> Ipv4Addr {
    if job.sources.is_empty() {
        Ipv4Addr::LOCALHOST
    } else {
        job.sources[index as usize % job.sources.len()]
    }
}

fn room_name(job: &Job, index: u32) -> String {
    format!("{}{index}", job.room_prefix)
}

/// The two members of a room: `a` joined first, `b` second; both know each other's id.
struct Room {
    a: Client,
    b: Client,
}

async fn setup_room(job: &Job, index: u32, sem: &Semaphore) -> std::io::Result<Room> {
    let timeout = Duration::from_millis(job.setup_timeout_ms);
    let source = source_for(job, index);
    let open = || async {
        let _permit = sem
            .acquire()
            .await
            .map_err(|_| std::io::Error::other("closed"))?;
        let mut client = Client::connect(
            job.dialect,
            job.addr,
            source,
            room_name(job, index),
            job.read_buffer,
        )
        .await?;
        let peers = client.join(timeout).await?;
        Ok::<_, std::io::Error>((client, peers))
    };
    let (mut a, _) = open().await?;
    let (b, peers) = open().await?;
    if job.dialect == Dialect::Noom && peers.is_empty() {
        return Err(std::io::Error::other(
            "the second member of a room was told the room was empty",
        ));
    }
    if !a.peer_seen {
        a.wait_peer(timeout).await?;
    }
    Ok(Room { a, b })
}

async fn room_task(
    job: Arc<Job>,
    index: u32,
    sem: Arc<Semaphore>,
    mut phase: watch::Receiver<Phase>,
    notes: mpsc::UnboundedSender<Note>,
    histogram: Arc<Mutex<Histogram>>,
    ticks: Option<mpsc::UnboundedReceiver<u64>>,
) {
    let setup = tokio::time::timeout(
        Duration::from_millis(job.setup_timeout_ms),
        setup_room(&job, index, &sem),
    )
    .await;
    let mut room = match setup {
        Ok(Ok(room)) => room,
        Ok(Err(err)) => {
            let _ = notes.send(Note::SetupFailed(format!("room {index}: {err}")));
            return;
        }
        Err(_) => {
            let _ = notes.send(Note::SetupFailed(format!(
                "room {index}: setup took longer than {} ms",
                job.setup_timeout_ms
            )));
            return;
        }
    };
    drop(sem);
    let _ = notes.send(Note::Ready);

    let mut result = WorkerResult::default();
    // Wait for Go, answering pings meanwhile. A room whose connection fails now still waits for
    // Go, so that its failure is reported with the phase's results (one Done per room), not
    // mistaken for a setup report.
    let mut alive = true;
    let timing = loop {
        let current = phase.borrow_and_update().clone();
        match current {
            Phase::Go(timing) => break Some(timing),
            Phase::Close => break None,
            Phase::Setup => {}
        }
        if !alive {
            if phase.changed().await.is_err() {
                break None;
            }
        } else if let Err(err) = serve_until_changed(&mut room, &mut phase).await {
            result.error(format!("room {index} before the timed phase: {err}"));
            alive = false;
        }
    };
    if let Some(timing) = timing {
        if alive {
            let phase_result = match job.shape {
                ShapeKind::Idle => idle(&mut room, timing).await,
                ShapeKind::Latency => match ticks {
                    Some(ticks) => latency(&job, &mut room, timing, ticks, &histogram).await,
                    None => WorkerResult::default(),
                },
                ShapeKind::Throughput => throughput(&job, &mut room, timing).await,
                ShapeKind::JoinStorm => WorkerResult::default(),
            };
            alive = phase_result.errors == 0 && phase_result.dropped == 0;
            merge(&mut result, phase_result);
        } else {
            result.dropped += 1;
        }
        let _ = notes.send(Note::Done(result));
        // Keep the connections open (and answered) until Close.
        while alive && *phase.borrow_and_update() != Phase::Close {
            if serve_until_changed(&mut room, &mut phase).await.is_err() {
                break;
            }
        }
    }
    tokio::join!(room.a.close(), room.b.close());
    let _ = notes.send(Note::Closed);
}

/// A received frame, reduced to what the room loops care about.
enum Incoming {
    Text(String),
    /// A control frame or anything else that needs no action.
    Nothing,
    Ended(String),
}

fn incoming(frame: Option<Result<Message, tungstenite::Error>>) -> Incoming {
    match frame {
        Some(Ok(Message::Text(text))) => Incoming::Text(text.as_str().to_owned()),
        Some(Ok(Message::Close(frame))) => {
            Incoming::Ended(format!("closed by the server: {frame:?}"))
        }
        Some(Ok(_)) => Incoming::Nothing,
        Some(Err(err)) => Incoming::Ended(format!("receive: {err}")),
        None => Incoming::Ended("connection closed".into()),
    }
}

/// Handles a frame that needs no action in the current phase: answers pings, flags failures.
async fn passive(client: &mut Client, frame: Incoming) -> Result<(), String> {
    match frame {
        Incoming::Nothing => Ok(()),
        Incoming::Ended(why) => Err(why),
        Incoming::Text(text) => match client.on_text(&text).await {
            Ok(Some(Event::Failure(why))) => Err(why),
            Ok(_) => client.flush().await.map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        },
    }
}

/// Serves both clients (pings, keep-alive) until the phase changes.
async fn serve_until_changed(
    room: &mut Room,
    phase: &mut watch::Receiver<Phase>,
) -> Result<(), String> {
    loop {
        tokio::select! {
            changed = phase.changed() => {
                return changed.map_err(|_| "worker ended".to_string());
            }
            frame = room.a.ws.next() => passive(&mut room.a, incoming(frame)).await?,
            frame = room.b.ws.next() => passive(&mut room.b, incoming(frame)).await?,
        }
    }
}

/// S1: stay idle (answering keep-alive) until the end of the window; count dropped connections.
async fn idle(room: &mut Room, timing: Timing) -> WorkerResult {
    let mut result = WorkerResult::default();
    let end = sleep_until_ns(timing.end_ns);
    tokio::pin!(end);
    loop {
        let outcome = tokio::select! {
            () = &mut end => return result,
            frame = room.a.ws.next() => passive(&mut room.a, incoming(frame)).await,
            frame = room.b.ws.next() => passive(&mut room.b, incoming(frame)).await,
        };
        if let Err(why) = outcome {
            result.dropped += 1;
            result.error(format!("during the idle window: {why}"));
            return result;
        }
    }
}

/// Builds a signal payload: `KIND SEQ T_NS ` padded with `x` so that the frame is `frame_bytes`.
fn payload(kind: char, seq: u64, t_ns: u64, overhead: usize, frame_bytes: usize) -> String {
    let mut text = format!("{kind} {seq} {t_ns} ");
    let want = frame_bytes.saturating_sub(overhead);
    if text.len() < want {
        text.extend(std::iter::repeat_n('x', want - text.len()));
    }
    text
}

/// Reads `KIND T_NS` back out of a payload.
fn parse_payload(payload: &str) -> Option<(char, u64)> {
    let mut parts = payload.splitn(4, ' ');
    let kind = parts.next()?.chars().next()?;
    let _seq = parts.next()?;
    let t_ns = parts.next()?.parse().ok()?;
    Some((kind, t_ns))
}

/// Starts the S2 pacer: it walks one evenly spaced global schedule (signal j at t0 + j / rate,
/// for room j mod total_rooms) and, for this worker's rooms, wakes the room's task at each of its
/// times. It sleeps on a timerfd (microsecond precision, which tokio's millisecond timer would
/// not give) on the runtime's own thread: no extra thread competing for the two cores.
fn start_pacer(job: &Job, timing: Timing, senders: Vec<mpsc::UnboundedSender<u64>>) {
    let first = job.first_room as u64;
    let rooms = senders.len() as u64;
    let total = job.total_rooms.max(1) as u64;
    let period_ns = 1e9 / job.rate_per_sec.max(0.001);
    tokio::spawn(async move {
        let timer = match sys::MonoTimer::new() {
            Ok(timer) => timer,
            Err(err) => {
                eprintln!("loadgen worker: no timerfd ({err}); S2 sends nothing");
                return;
            }
        };
        let mut k: u64 = 0;
        'schedule: loop {
            for r in first..first + rooms {
                let j = k * total + r;
                let at = timing.t0_ns + (j as f64 * period_ns) as u64;
                if at >= timing.end_ns {
                    break 'schedule;
                }
                if let Err(err) = timer.sleep_until_ns(at).await {
                    eprintln!("loadgen worker: timerfd failed ({err}); S2 schedule cut short");
                    break 'schedule;
                }
                if senders[(r - first) as usize].send(at).is_err() {
                    break 'schedule;
                }
            }
            k += 1;
        }
        // Dropping the senders tells each room its schedule is over.
    });
}

/// S2: `a` sends `b` a signal at each pacer tick, stamped with its send time; `b` records the
/// one-way latency of those sent in the measured interval.
async fn latency(
    job: &Job,
    room: &mut Room,
    timing: Timing,
    mut ticks: mpsc::UnboundedReceiver<u64>,
    histogram: &Mutex<Histogram>,
) -> WorkerResult {
    let mut result = WorkerResult::default();
    let overhead = room.a.signal_overhead();
    let mut seq = 0u64;
    let mut schedule_done = false;
    let mut drain_deadline = u64::MAX;
    let mut local = Vec::with_capacity(1024);
    loop {
        if schedule_done && (result.received >= result.sent || mono_ns() >= drain_deadline) {
            break;
        }
        tokio::select! {
            biased;
            frame = room.b.ws.next() => {
                let now = mono_ns();
                match incoming(frame) {
                    Incoming::Text(text) => match room.b.on_text(&text).await {
                        Ok(Some(Event::Signal(p))) => {
                            result.received += 1;
                            if let Some(('M', sent_at)) = parse_payload(&p) {
                                result.received_measured += 1;
                                local.push(now.saturating_sub(sent_at));
                            }
                        }
                        Ok(Some(Event::Failure(why))) => { result.error(why); break; }
                        Ok(_) => { let _ = room.b.flush().await; }
                        Err(err) => { result.error(err.to_string()); break; }
                    },
                    Incoming::Nothing => {}
                    Incoming::Ended(why) => { result.error(why); break; }
                }
            }
            frame = room.a.ws.next() => {
                if let Err(why) = passive(&mut room.a, incoming(frame)).await {
                    result.error(why);
                    break;
                }
            }
            tick = ticks.recv(), if !schedule_done => match tick {
                Some(_scheduled) => {
                    let now = mono_ns();
                    let kind = if now < timing.measure_start_ns { 'W' } else if now < timing.end_ns { 'M' } else { 'L' };
                    seq += 1;
                    let frame = room.a.encode_signal(payload(kind, seq, now, overhead, job.signal_bytes));
                    if let Err(err) = room.a.send_text(frame).await {
                        result.error(err.to_string());
                        break;
                    }
                    result.sent += 1;
                    if kind == 'M' {
                        result.sent_measured += 1;
                    }
                }
                None => {
                    schedule_done = true;
                    drain_deadline = mono_ns() + timing.drain_ns;
                }
            },
            () = sleep_until_ns(drain_deadline), if schedule_done => {}
        }
        if local.len() >= 1024 {
            flush_latencies(histogram, &mut local);
        }
    }
    flush_latencies(histogram, &mut local);
    result
}

fn flush_latencies(histogram: &Mutex<Histogram>, local: &mut Vec<u64>) {
    let mut h = histogram.lock().unwrap_or_else(|p| p.into_inner());
    for ns in local.drain(..) {
        h.record_ns(ns);
    }
}

/// One client's S3 state.
#[derive(Default)]
struct Flow {
    outstanding: u32,
    seq: u64,
    dirty: bool,
}

/// S3: both members keep up to `window` signals in flight to each other; each signal is
/// answered by a small ack through the relay. Writes are batched per wake-up (many frames, one
/// flush) and reads drain what is already buffered, so the generator spends few syscalls.
async fn throughput(job: &Job, room: &mut Room, timing: Timing) -> WorkerResult {
    let mut result = WorkerResult::default();
    let overhead_a = room.a.signal_overhead();
    let overhead_b = room.b.signal_overhead();
    let mut fa = Flow::default();
    let mut fb = Flow::default();
    sleep_until_ns(timing.t0_ns).await;
    let mut running = true;
    let mut drain_deadline = u64::MAX;
    loop {
        if running {
            if mono_ns() >= timing.end_ns {
                running = false;
                drain_deadline = mono_ns() + timing.drain_ns;
            } else {
                for (client, flow, overhead) in [
                    (&mut room.a, &mut fa, overhead_a),
                    (&mut room.b, &mut fb, overhead_b),
                ] {
                    while flow.outstanding < job.window {
                        flow.seq += 1;
                        let frame = client.encode_signal(payload(
                            'S',
                            flow.seq,
                            0,
                            overhead,
                            job.signal_bytes,
                        ));
                        if let Err(err) = client.feed_text(frame).await {
                            result.error(err.to_string());
                            return result;
                        }
                        flow.outstanding += 1;
                        flow.dirty = true;
                    }
                }
            }
        }
        for (client, flow) in [(&mut room.a, &mut fa), (&mut room.b, &mut fb)] {
            if flow.dirty {
                flow.dirty = false;
                if let Err(err) = client.flush().await {
                    result.error(err.to_string());
                    return result;
                }
            }
        }
        if !running && ((fa.outstanding == 0 && fb.outstanding == 0) || mono_ns() >= drain_deadline)
        {
            break;
        }
        let first = tokio::select! {
            frame = room.a.ws.next() => Some((true, frame)),
            frame = room.b.ws.next() => Some((false, frame)),
            () = sleep_until_ns(timing.end_ns), if running => None,
            () = sleep_until_ns(drain_deadline), if !running => None,
        };
        let Some((from_a, frame)) = first else {
            continue;
        };
        let mut next = Some((from_a, frame));
        let mut handled = 0;
        // The frame that woke us, then up to 63 more that are already buffered.
        while let Some((from_a, frame)) = next.take() {
            handled += 1;
            let (client, flow) = if from_a {
                (&mut room.a, &mut fa)
            } else {
                (&mut room.b, &mut fb)
            };
            let text = match incoming(frame) {
                Incoming::Text(text) => text,
                Incoming::Nothing => String::new(),
                Incoming::Ended(why) => {
                    result.error(why);
                    return result;
                }
            };
            if !text.is_empty() {
                match client.on_text(&text).await {
                    Ok(Some(Event::Signal(p))) => {
                        let now = mono_ns();
                        if now >= timing.measure_start_ns && now < timing.end_ns {
                            result.relayed_measured += 1;
                        }
                        if p.starts_with('S') {
                            let seq = p.split(' ').nth(1).unwrap_or("0").to_owned();
                            let ack = client.encode_signal(format!("A {seq}"));
                            if let Err(err) = client.feed_text(ack).await {
                                result.error(err.to_string());
                                return result;
                            }
                            flow.dirty = true;
                        } else {
                            flow.outstanding = flow.outstanding.saturating_sub(1);
                        }
                    }
                    Ok(Some(Event::Failure(why))) => {
                        result.error(why);
                        return result;
                    }
                    Ok(_) => flow.dirty = true,
                    Err(err) => {
                        result.error(err.to_string());
                        return result;
                    }
                }
            }
            if handled < 64 {
                next = match room.a.ws.next().now_or_never() {
                    Some(frame) => Some((true, frame)),
                    None => room.b.ws.next().now_or_never().map(|frame| (false, frame)),
                };
            }
        }
    }
    result.unacked = u64::from(fa.outstanding + fb.outstanding);
    if result.unacked > 0 {
        result.error(format!("{} signals never acknowledged", result.unacked));
    }
    result
}

/// S4: `2 × rooms` clients connect and join as fast as `inflight` handshakes allow. Counts joins,
/// rooms whose first member heard about the second, and errors.
async fn join_storm(
    job: &Arc<Job>,
    timing: Timing,
    phase: watch::Receiver<Phase>,
    notes_tx: mpsc::UnboundedSender<Note>,
    notes: &mut mpsc::UnboundedReceiver<Note>,
) -> WorkerResult {
    let mut result = WorkerResult::default();
    sleep_until_ns(timing.t0_ns).await;
    let sem = Arc::new(Semaphore::new(job.inflight.max(1)));
    let clients = job.rooms * 2;
    for i in 0..clients {
        let room = job.first_room + i / 2;
        tokio::spawn(storm_client(
            Arc::clone(job),
            room,
            Arc::clone(&sem),
            phase.clone(),
            notes_tx.clone(),
        ));
    }
    let deadline = timing.t0_ns + job.setup_timeout_ms * 1_000_000;
    let mut welcomed = HashSet::new();
    let mut settled = 0;
    while settled < clients || (welcomed.len() as u32) < job.rooms {
        let note = tokio::select! {
            note = notes.recv() => note,
            () = sleep_until_ns(deadline) => break,
        };
        match note {
            Some(Note::Joined { at_ns }) => {
                settled += 1;
                result.joins += 1;
                result.last_join_ns = result.last_join_ns.max(at_ns);
            }
            Some(Note::Welcomed { room, at_ns }) => {
                if welcomed.insert(room) {
                    result.rooms_welcomed += 1;
                    result.last_welcome_ns = result.last_welcome_ns.max(at_ns);
                }
            }
            Some(Note::Error(err)) => {
                settled += 1;
                result.error(err);
            }
            Some(_) => {}
            None => break,
        }
        if settled >= clients && result.errors > 0 {
            // A failed client leaves its room unwelcomed for good: do not wait for it.
            break;
        }
    }
    let missing = u64::from(job.rooms) - result.rooms_welcomed;
    if missing > 0 && result.errors == 0 {
        result.error(format!(
            "{missing} rooms never heard that their second member joined"
        ));
    }
    result
}

async fn storm_client(
    job: Arc<Job>,
    room: u32,
    sem: Arc<Semaphore>,
    mut phase: watch::Receiver<Phase>,
    notes: mpsc::UnboundedSender<Note>,
) {
    let timeout = Duration::from_millis(job.setup_timeout_ms);
    let handshake = async {
        let _permit = sem
            .acquire()
            .await
            .map_err(|_| std::io::Error::other("closed"))?;
        let mut client = Client::connect(
            job.dialect,
            job.addr,
            source_for(&job, room),
            room_name(&job, room),
            job.read_buffer,
        )
        .await?;
        client.join(timeout).await?;
        Ok::<_, std::io::Error>(client)
    };
    let mut client = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(client)) => client,
        Ok(Err(err)) => {
            let _ = notes.send(Note::Error(format!("room {room}: {err}")));
            return;
        }
        Err(_) => {
            let _ = notes.send(Note::Error(format!("room {room}: handshake timed out")));
            return;
        }
    };
    let _ = notes.send(Note::Joined { at_ns: mono_ns() });
    // Hold the connection until Close, reporting a welcome if one comes.
    loop {
        if *phase.borrow_and_update() == Phase::Close {
            break;
        }
        tokio::select! {
            changed = phase.changed() => if changed.is_err() { break },
            frame = client.ws.next() => match incoming(frame) {
                Incoming::Text(text) => match client.on_text(&text).await {
                    Ok(Some(Event::PeerJoined { .. })) => {
                        let _ = notes.send(Note::Welcomed { room, at_ns: mono_ns() });
                    }
                    Ok(Some(Event::Failure(why))) => {
                        let _ = notes.send(Note::Error(format!("room {room}: {why}")));
                        break;
                    }
                    Ok(_) => { let _ = client.flush().await; }
                    Err(err) => {
                        let _ = notes.send(Note::Error(format!("room {room}: {err}")));
                        break;
                    }
                },
                Incoming::Nothing => {}
                Incoming::Ended(why) => {
                    let _ = notes.send(Note::Error(format!("room {room}: {why}")));
                    break;
                }
            },
        }
    }
    client.close().await;
    let _ = notes.send(Note::Closed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip_and_size() {
        let p = payload('M', 7, 123_456_789, 60, 1024);
        assert_eq!(p.len(), 1024 - 60);
        assert_eq!(parse_payload(&p), Some(('M', 123_456_789)));
        // Too small a frame size never truncates the header.
        assert_eq!(parse_payload(&payload('W', 1, 5, 60, 10)), Some(('W', 5)));
    }
}
