//! Noom's load generator: replays the load shapes of `../shared/bench/LOADSHAPE.md` (S1 idle
//! connections, S2 relay latency at a fixed rate, S3 relay throughput, S4 join storm) against
//! our signaling server and against the tutorial's socket.io relay, over real websockets on
//! loopback, and reports the same figures for both.
//!
//! Layout:
//! - [`wire`]: the two relays' wire formats behind one client type.
//! - [`worker`]: a worker process holding thousands of clients on one thread.
//! - [`proto`]: the coordinator ↔ worker line protocol (JSON over stdin/stdout).
//! - [`coord`]: the coordinator: splits a shape over workers, measures the server from /proc.
//! - [`servers`]: starting and stopping the relays under test.
//! - [`report`]: min / median / max tables, ours vs the baseline.
//! - [`sys`], [`hist`]: clocks, /proc, rlimits, sockets; a mergeable latency histogram.
//!
//! Every loop is bounded in count and time, every child process is killed by PID when its
//! guard drops, and all traffic stays on 127.0.0.0/8.

pub mod coord;
pub mod hist;
pub mod proto;
pub mod report;
pub mod servers;
pub mod sys;
pub mod wire;
pub mod worker;
