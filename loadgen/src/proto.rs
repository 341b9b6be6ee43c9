//! What the coordinator and its worker processes say to each other: one JSON object per line,
//! commands on the worker's stdin, reports on its stdout.
//!
//! Every shape runs the same conversation: `Start(job)` → `Ready` (connections set up) →
//! `Go` (timed phase) → `Result` → `Close` → `Closed`. A worker exits when its stdin closes.

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::hist::SparseHistogram;
use crate::wire::Dialect;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShapeKind {
    /// S1: idle connections.
    Idle,
    /// S2: one-way latency at a fixed rate.
    Latency,
    /// S3: throughput with a bounded window and acks.
    Throughput,
    /// S4: join storm.
    JoinStorm,
}

/// One worker's share of a shape: rooms `first_room .. first_room + rooms`, two clients each.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub shape: ShapeKind,
    pub dialect: Dialect,
    pub addr: SocketAddr,
    /// Prefix of room names, so names never repeat on one server.
    pub room_prefix: String,
    pub first_room: u32,
    pub rooms: u32,
    /// Loopback source addresses to spread connections over.
    pub sources: Vec<Ipv4Addr>,
    /// Connection + join handshakes this worker keeps in flight at most.
    pub inflight: usize,
    /// tungstenite read buffer per client.
    pub read_buffer: usize,
    /// Give up on setup (connect + join of every client) after this long.
    pub setup_timeout_ms: u64,
    /// S2: total rooms over all workers and the aggregate rate over all of them, so every
    /// worker can place its rooms' sends on one evenly spaced global schedule.
    pub total_rooms: u32,
    pub rate_per_sec: f64,
    /// S2/S3: text frame size of a signal, bytes.
    pub signal_bytes: usize,
    /// S3: signals a client may have outstanding (sent, not yet acked).
    pub window: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    Start(Job),
    /// Start the timed phase at `t0_ns` (CLOCK_MONOTONIC): warm-up until `t0 + warmup`, then
    /// the measured interval until `t0 + warmup + measure`.
    Go {
        t0_ns: u64,
        warmup_ns: u64,
        measure_ns: u64,
        /// After the traffic stops, wait at most this long for what is still in flight.
        drain_ns: u64,
    },
    Close,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Report {
    Ready {
        /// CLOCK_MONOTONIC when the last client of this worker finished setting up.
        done_ns: u64,
    },
    Result(WorkerResult),
    Closed,
    /// The worker could not do its job; the coordinator stops the shape.
    Failed(String),
}

/// Everything a worker measured in the timed phase. Counters that do not apply to a shape
/// stay 0.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    /// Client-side errors: failed connects or joins, error replies, unexpected closes.
    pub errors: u64,
    /// The first few error texts, for the report.
    pub error_samples: Vec<String>,
    /// This worker's process CPU (all threads) over the measured interval, ns.
    pub cpu_ns: u64,
    /// CPU of the thread that runs the clients over the measured interval, ns: near the
    /// interval's length means that thread was saturated.
    pub runtime_thread_cpu_ns: u64,
    /// Length of the measured interval as this worker saw it, ns.
    pub interval_ns: u64,
    /// S2: signals sent / received in the whole run (warm-up included) and in the measured
    /// interval, and one-way latencies of the measured ones.
    pub sent: u64,
    pub received: u64,
    pub sent_measured: u64,
    pub received_measured: u64,
    pub latency: SparseHistogram,
    /// S3: messages (signals and acks) received during the measured interval; signals still
    /// unacknowledged when the drain time ran out.
    pub relayed_measured: u64,
    pub unacked: u64,
    /// S1: clients whose connection ended during the idle window.
    pub dropped: u64,
    /// S4: joins acknowledged, and when the last one was; rooms whose first member heard that
    /// the second joined, and when the last one did.
    pub joins: u64,
    pub last_join_ns: u64,
    pub rooms_welcomed: u64,
    pub last_welcome_ns: u64,
}

impl WorkerResult {
    pub fn error(&mut self, text: impl Into<String>) {
        self.errors += 1;
        if self.error_samples.len() < 5 {
            self.error_samples.push(text.into());
        }
    }
}
