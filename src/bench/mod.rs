//! Load generators behind `raft_client bench`, `bench-fanout` and `bench-probe`, and the
//! system-agnostic closed loop the etcd driver (`etcd_bench`) shares, so both sides of
//! `bin/bench_vs_etcd` are measured by the same code and the same histogram.
//!
//! Latencies go into HDR histograms in microseconds (1 µs to 60 s, 3 significant digits), so
//! p99.9 and max are exact to 0.1 % and merging per-worker histograms is lossless.
//!
//! - this file: the load shape ([`LoadConfig`]), the closed loop and its [`Report`];
//! - `sends`: RustyRaft's side of the closed loop, over unary `SendMessage` or `SendStream`;
//! - `fanout`: the `Subscribe` fan-out run and the failover probe.

mod fanout;
mod sends;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

pub use self::fanout::{
    parse_stamp, probe_until_ok, run_fanout, stamp_text, unix_ns, FanoutConfig, FanoutReport,
};
pub use self::sends::{connect, find_leader, run_rustyraft, split_addrs};

/// Largest value size accepted: the node's default `--max-message-bytes`.
pub const MAX_VALUE_SIZE: usize = 64 * 1024;
/// Most concurrent workers; beyond this the client, not the server, is what gets measured.
pub const MAX_CONCURRENCY: usize = 10_000;
/// Highest latency the histograms hold; slower operations are clamped to it.
const HIST_MAX_US: u64 = 60_000_000;
/// After an error a worker pauses this long, so a dead cluster is not hammered in a hot loop.
const ERROR_PAUSE: Duration = Duration::from_millis(5);

/// Errors of the load generators.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An option is out of range; the message names it.
    #[error("invalid option: {0}")]
    Invalid(String),
    /// No node could name a leader (for `--target leader`).
    #[error("no leader found: {0}")]
    NoLeader(String),
    /// A connection could not be opened.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A setup call failed (room creation, subscription).
    #[error("setup failed: {0}")]
    Setup(String),
}

/// Where the closed loop sends: only to the leader, or spread over every listed node (the
/// followers forward to the leader, which costs one more hop).
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Only the current leader (found through `Status`).
    Leader,
    /// Every address given, connections round-robin.
    All,
}

/// How `raft_client bench` sends: one unary `SendMessage` call per send, or pipelined on one
/// long-lived `SendStream` call per connection (each worker still has one send in flight).
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Api {
    /// `SendMessage`: a new HTTP/2 stream (headers, data, trailers each way) per send.
    Unary,
    /// `SendStream`: one data frame each way per send, on a call that stays open.
    Stream,
}

/// Shape of a closed-loop run; the same for RustyRaft and etcd so the runs are comparable.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadConfig {
    /// Workers, each with one request in flight at a time.
    pub concurrency: usize,
    /// HTTP/2 connections the workers share (worker `w` uses connection `w % connections`).
    pub connections: usize,
    /// Measured time, after the warm-up.
    pub duration: Duration,
    /// Time run but not measured, to fill caches, connections and batches first.
    pub warmup: Duration,
    /// Bytes of each message text (or etcd value).
    pub value_size: usize,
    /// Rooms (or etcd key prefixes) the workers spread over (worker `w` uses `w % rooms`).
    pub rooms: usize,
}

impl LoadConfig {
    /// Rejects shapes that would measure nonsense (zero workers, more connections than
    /// workers, values the server refuses) before any connection is opened.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return Err(BenchError::Invalid(format!(
                "--concurrency must be 1..={MAX_CONCURRENCY}, got {}",
                self.concurrency
            )));
        }
        if self.connections == 0 || self.connections > self.concurrency {
            return Err(BenchError::Invalid(format!(
                "--connections must be 1..=concurrency ({}), got {}",
                self.concurrency, self.connections
            )));
        }
        if self.duration.is_zero() {
            return Err(BenchError::Invalid("--duration must be positive".into()));
        }
        if self.value_size == 0 || self.value_size > MAX_VALUE_SIZE {
            return Err(BenchError::Invalid(format!(
                "--value-size must be 1..={MAX_VALUE_SIZE}, got {}",
                self.value_size
            )));
        }
        if self.rooms == 0 {
            return Err(BenchError::Invalid("--rooms must be at least 1".into()));
        }
        Ok(())
    }
}

/// Parses a duration in seconds with an optional fraction (`10`, `0.5`), the unit the bench
/// options use; rejects negatives, NaN and absurd values.
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || !(0.0..=86_400.0).contains(&v) {
        return Err(format!("{s:?} is not in 0..=86400 seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// A fresh latency histogram (µs, 1 µs to 60 s, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (the unit tests build one); no input
    // can make this fail.
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("constant histogram bounds are valid")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, HIST_MAX_US)
}

/// Result of one closed-loop run: what the tables and the ratio line are made of.
#[derive(Clone, Debug)]
pub struct Report {
    /// Which system was measured (`rustyraft`, `etcd`).
    pub system: String,
    /// Workers.
    pub concurrency: usize,
    /// Successful operations started inside the measured window.
    pub ops: u64,
    /// Failed operations started inside the measured window.
    pub errors: u64,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Latency of the successful operations, µs.
    pub hist: Histogram<u64>,
}

impl Report {
    /// Successful operations per second over the measured window.
    pub fn ops_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.ops as f64 / s
        } else {
            0.0
        }
    }

    fn q_ms(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    /// Median latency, ms.
    pub fn p50_ms(&self) -> f64 {
        self.q_ms(0.5)
    }
    /// 99th percentile latency, ms.
    pub fn p99_ms(&self) -> f64 {
        self.q_ms(0.99)
    }
    /// 99.9th percentile latency, ms.
    pub fn p999_ms(&self) -> f64 {
        self.q_ms(0.999)
    }
    /// Largest latency, ms.
    pub fn max_ms(&self) -> f64 {
        if self.hist.is_empty() {
            0.0
        } else {
            self.hist.max() as f64 / 1000.0
        }
    }

    /// One human line: `rustyraft c=64: 6912 ops/s p50 8.50 ms p99 21.00 ms ...`.
    pub fn text(&self) -> String {
        format!(
            "{} c={}: {:.0} ops/s  p50 {:.2} ms  p99 {:.2} ms  p999 {:.2} ms  max {:.2} ms  ({} ok, {} errors in {:.1} s)",
            self.system,
            self.concurrency,
            self.ops_per_sec(),
            self.p50_ms(),
            self.p99_ms(),
            self.p999_ms(),
            self.max_ms(),
            self.ops,
            self.errors,
            self.elapsed.as_secs_f64()
        )
    }

    /// One JSON object, what `bin/bench_vs_etcd` parses.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "system": self.system,
            "concurrency": self.concurrency,
            "ops": self.ops,
            "errors": self.errors,
            "secs": self.elapsed.as_secs_f64(),
            "ops_per_sec": self.ops_per_sec(),
            "p50_ms": self.p50_ms(),
            "p99_ms": self.p99_ms(),
            "p999_ms": self.p999_ms(),
            "max_ms": self.max_ms(),
        })
    }
}

/// Runs `cfg.concurrency` workers, each calling `op(worker, n)` back to back (closed loop) for
/// warm-up plus duration, and records the latency of every operation started in the measured
/// window. `op` returns `Err(reason)` on failure; failures are counted, not timed.
pub async fn closed_loop<F, Fut>(system: &str, cfg: &LoadConfig, op: F) -> Report
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let measure_from = start + cfg.warmup;
    let end = measure_from + cfg.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..cfg.concurrency {
        let op = Arc::clone(&op);
        tasks.spawn(async move {
            let mut hist = new_histogram();
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut n = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let res = op(w, n).await;
                n += 1;
                let measured = t0 >= measure_from;
                match res {
                    Ok(()) => {
                        if measured {
                            ok += 1;
                            hist.saturating_record(micros(t0.elapsed()));
                        }
                    }
                    Err(_) => {
                        if measured {
                            errors += 1;
                        }
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
            }
            (hist, ok, errors)
        });
    }
    let mut report = Report {
        system: system.to_string(),
        concurrency: cfg.concurrency,
        ops: 0,
        errors: 0,
        elapsed: cfg.duration,
        hist: new_histogram(),
    };
    while let Some(res) = tasks.join_next().await {
        if let Ok((h, ok, errors)) = res {
            // Same bounds on both sides, so adding cannot fail.
            let _ = report.hist.add(&h);
            report.ops += ok;
            report.errors += errors;
        }
    }
    report
}
