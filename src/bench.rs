//! Load generators behind `raft_client bench`, `bench-fanout` and `bench-probe`, and the
//! system-agnostic closed loop the etcd driver (`etcd_bench`) shares, so both sides of
//! `bin/bench_vs_etcd` are measured by the same code and the same histogram.
//!
//! Latencies go into HDR histograms in microseconds (1 µs to 60 s, 3 significant digits), so
//! p99.9 and max are exact to 0.1 % and merging per-worker histograms is lossless.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::pb;
use crate::pb::chat_service_client::ChatServiceClient;
use crate::pb::cluster_client::ClusterClient;

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

fn http_addr(a: &str) -> String {
    if a.contains("://") {
        a.to_string()
    } else {
        format!("http://{a}")
    }
}

/// Splits a comma-separated address list, dropping blanks.
pub fn split_addrs(addrs: &str) -> Vec<String> {
    addrs
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

/// Opens one HTTP/2 connection (a tonic `Channel` connected eagerly, so connection set-up is
/// not inside the measured window).
pub async fn connect(addr: &str) -> Result<Channel, BenchError> {
    let url = http_addr(addr);
    let err = |e: String| BenchError::Connect {
        addr: addr.to_string(),
        reason: e,
    };
    Endpoint::from_shared(url)
        .map_err(|e| err(e.to_string()))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| err(e.to_string()))
}

/// Asks each node for its view of the leader and returns the leader's client address.
pub async fn find_leader(addrs: &[String]) -> Result<String, BenchError> {
    let mut last = String::from("no address given");
    for a in addrs {
        let ch = match connect(a).await {
            Ok(ch) => ch,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let mut req = tonic::Request::new(pb::StatusRequest {});
        req.set_timeout(Duration::from_secs(2));
        match ClusterClient::new(ch).status(req).await {
            Ok(r) => {
                let s = r.into_inner();
                if s.leader_id != 0 && !s.leader_addr.is_empty() {
                    return Ok(s.leader_addr);
                }
                last = format!("{a} knows no leader");
            }
            Err(st) => last = format!("{a}: {}", st.message()),
        }
    }
    Err(BenchError::NoLeader(last))
}

/// The text of every bench message: `value_size` bytes of filler.
fn filler(value_size: usize) -> String {
    "x".repeat(value_size)
}

/// Sends still waiting for their answer on one `SendStream` call, by tag.
type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<(), String>>>>>;

/// One open `SendStream` call shared by several workers: they queue requests on `tx` and a
/// reader task hands each answer to the worker whose tag it carries.
struct SendStreamConn {
    tx: mpsc::Sender<pb::SendStreamRequest>,
    waiters: Waiters,
    next_tag: AtomicU64,
}

impl SendStreamConn {
    /// Opens the call on `channel` and starts its reader. When the call ends (the node went
    /// away), every waiting send fails and so do later ones: the closed loop counts them.
    async fn open(channel: Channel, in_flight: usize) -> Result<Self, BenchError> {
        let (tx, rx) = mpsc::channel(in_flight.max(1));
        let mut answers = ChatServiceClient::new(channel)
            .send_stream(ReceiverStream::new(rx))
            .await
            .map_err(|st| BenchError::Setup(format!("SendStream: {}", st.message())))?
            .into_inner();
        let waiters: Waiters = Arc::default();
        let w = Arc::clone(&waiters);
        tokio::spawn(async move {
            let end = loop {
                match answers.message().await {
                    Ok(Some(r)) => {
                        let outcome = match r.error {
                            None => Ok(()),
                            Some(e) => Err(e.message),
                        };
                        let waiter = w.lock().ok().and_then(|mut m| m.remove(&r.tag));
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(outcome);
                        }
                    }
                    Ok(None) => break "SendStream ended".to_string(),
                    Err(st) => break format!("SendStream failed: {}", st.message()),
                }
            };
            if let Ok(mut m) = w.lock() {
                for (_, waiter) in m.drain() {
                    let _ = waiter.send(Err(end.clone()));
                }
            }
        });
        Ok(SendStreamConn {
            tx,
            waiters,
            next_tag: AtomicU64::new(0),
        })
    }

    /// One send, answered when it commits or fails.
    async fn send(&self, send: pb::SendMessageRequest) -> Result<(), String> {
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let (done, answer) = oneshot::channel();
        self.waiters
            .lock()
            .map_err(|_| "waiter table poisoned".to_string())?
            .insert(tag, done);
        let req = pb::SendStreamRequest {
            tag,
            send: Some(send),
        };
        if self.tx.send(req).await.is_err() {
            if let Ok(mut m) = self.waiters.lock() {
                m.remove(&tag);
            }
            return Err("SendStream is closed".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Err("SendStream reader ended".into()))
    }
}

/// `raft_client bench`: the closed loop of sends (`SendMessage` calls, or `SendStream` with
/// `Api::Stream`) against a RustyRaft cluster.
pub async fn run_rustyraft(
    addrs: &[String],
    target: Target,
    api: Api,
    cfg: &LoadConfig,
) -> Result<Report, BenchError> {
    cfg.validate()?;
    if addrs.is_empty() {
        return Err(BenchError::Invalid("--addr lists no address".into()));
    }
    let targets = match target {
        Target::Leader => vec![find_leader(addrs).await?],
        Target::All => addrs.to_vec(),
    };
    let mut channels = Vec::with_capacity(cfg.connections);
    for i in 0..cfg.connections {
        channels.push(connect(&targets[i % targets.len()]).await?);
    }
    let rooms: Arc<Vec<String>> = Arc::new((0..cfg.rooms).map(|r| format!("bench-{r}")).collect());
    let text = Arc::new(filler(cfg.value_size));
    if api == Api::Stream {
        let mut conns = Vec::with_capacity(channels.len());
        for ch in channels {
            conns.push(SendStreamConn::open(ch, cfg.concurrency).await?);
        }
        let conns = Arc::new(conns);
        let report = closed_loop("rustyraft-stream", cfg, move |w, _n| {
            let conns = Arc::clone(&conns);
            let req = pb::SendMessageRequest {
                room: rooms[w % rooms.len()].clone(),
                author: "bench".into(),
                text: text.as_str().to_owned(),
                client_request_id: String::new(),
            };
            async move { conns[w % conns.len()].send(req).await }
        })
        .await;
        return Ok(report);
    }
    let channels = Arc::new(channels);
    let report = closed_loop("rustyraft-unary", cfg, move |w, _n| {
        let mut c = ChatServiceClient::new(channels[w % channels.len()].clone());
        let req = pb::SendMessageRequest {
            room: rooms[w % rooms.len()].clone(),
            author: "bench".into(),
            text: text.as_str().to_owned(),
            client_request_id: String::new(),
        };
        async move {
            c.send_message(req)
                .await
                .map(|_| ())
                .map_err(|st| st.message().to_string())
        }
    })
    .await;
    Ok(report)
}

/// Shape of a fan-out run: `subscribers` live followers of one fresh room while one sender
/// sends `rate` messages per second (open loop, so a slow commit does not lower the rate).
#[derive(Clone, Debug, PartialEq)]
pub struct FanoutConfig {
    /// Live subscribers of the room.
    pub subscribers: usize,
    /// HTTP/2 connections they share, spread over every listed node.
    pub connections: usize,
    /// Messages per second sent.
    pub rate: u32,
    /// Measured time, after the warm-up.
    pub duration: Duration,
    /// Time sent but not measured.
    pub warmup: Duration,
    /// Bytes of each message text (at least 20: the send time is written in the first 20).
    pub value_size: usize,
}

/// Most in-flight sends of the fan-out sender; past it the sender waits (bounded memory).
const FANOUT_MAX_IN_FLIGHT: usize = 1024;
/// Digits of the send timestamp at the start of each fan-out message.
const STAMP_DIGITS: usize = 20;

impl FanoutConfig {
    /// Rejects shapes that cannot be measured (no subscriber, zero rate, values too short to
    /// carry the send timestamp).
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.subscribers == 0 || self.subscribers > 100_000 {
            return Err(BenchError::Invalid(format!(
                "--subscribers must be 1..=100000, got {}",
                self.subscribers
            )));
        }
        if self.connections == 0 || self.connections > self.subscribers {
            return Err(BenchError::Invalid(format!(
                "--connections must be 1..=subscribers ({}), got {}",
                self.subscribers, self.connections
            )));
        }
        if self.rate == 0 || self.rate > 100_000 {
            return Err(BenchError::Invalid(format!(
                "--rate must be 1..=100000, got {}",
                self.rate
            )));
        }
        if self.duration.is_zero() {
            return Err(BenchError::Invalid("--duration must be positive".into()));
        }
        if self.value_size < STAMP_DIGITS || self.value_size > MAX_VALUE_SIZE {
            return Err(BenchError::Invalid(format!(
                "--value-size must be {STAMP_DIGITS}..={MAX_VALUE_SIZE}, got {}",
                self.value_size
            )));
        }
        Ok(())
    }
}

/// Writes the send time (ns since the run's base instant) into a message text of `size` bytes.
pub fn stamp_text(ns: u64, size: usize) -> String {
    let mut s = format!("{ns:0width$}", width = STAMP_DIGITS);
    if s.len() < size {
        s.push_str(&"x".repeat(size - s.len()));
    }
    s
}

/// Reads back the send time written by [`stamp_text`]; `None` for any other text.
pub fn parse_stamp(text: &str) -> Option<u64> {
    text.get(..STAMP_DIGITS)?.parse().ok()
}

/// Result of a fan-out run.
#[derive(Clone, Debug)]
pub struct FanoutReport {
    /// Subscribers.
    pub subscribers: usize,
    /// Target send rate, msg/s.
    pub rate: u32,
    /// Messages sent and committed inside the measured window.
    pub sent: u64,
    /// Deliveries of those messages counted over every subscriber (ideal: sent x subscribers).
    pub delivered: u64,
    /// Sends that failed.
    pub send_errors: u64,
    /// Send-to-receive latency of each delivery, µs.
    pub hist: Histogram<u64>,
}

impl FanoutReport {
    /// One human line.
    pub fn text(&self) -> String {
        let q = |q: f64| {
            if self.hist.is_empty() {
                0.0
            } else {
                self.hist.value_at_quantile(q) as f64 / 1000.0
            }
        };
        let expected = self.sent.saturating_mul(self.subscribers as u64);
        format!(
            "fanout subs={} rate={}/s: delivery p50 {:.2} ms  p99 {:.2} ms  p999 {:.2} ms  max {:.2} ms  ({} sent, {}/{} delivered, {} send errors)",
            self.subscribers,
            self.rate,
            q(0.5),
            q(0.99),
            q(0.999),
            if self.hist.is_empty() { 0.0 } else { self.hist.max() as f64 / 1000.0 },
            self.sent,
            self.delivered,
            expected,
            self.send_errors
        )
    }
}

/// `raft_client bench-fanout`: subscribers spread over every node, one open-loop sender to the
/// leader, latency measured from just before the send to the arrival at each subscriber.
pub async fn run_fanout(addrs: &[String], cfg: &FanoutConfig) -> Result<FanoutReport, BenchError> {
    cfg.validate()?;
    if addrs.is_empty() {
        return Err(BenchError::Invalid("--addr lists no address".into()));
    }
    let room = format!("fanout-{}", uuid::Uuid::new_v4().simple());
    let leader = find_leader(addrs).await?;
    let send_ch = connect(&leader).await?;
    ChatServiceClient::new(send_ch.clone())
        .create_room(pb::CreateRoomRequest { room: room.clone() })
        .await
        .map_err(|st| BenchError::Setup(format!("create room: {}", st.message())))?;

    let mut channels = Vec::with_capacity(cfg.connections);
    for i in 0..cfg.connections {
        channels.push(connect(&addrs[i % addrs.len()]).await?);
    }
    let base = Instant::now();
    let warmup_ns = u64::try_from(cfg.warmup.as_nanos()).unwrap_or(u64::MAX);
    // One histogram per connection group: a histogram per subscriber would cost ~100 kB each.
    // std Mutex: held only to record one value, never across an await.
    let hists: Arc<Vec<Mutex<Histogram<u64>>>> = Arc::new(
        (0..cfg.connections)
            .map(|_| Mutex::new(new_histogram()))
            .collect(),
    );
    let delivered = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    // Highest seq the sender will send; 0 until the sender is done.
    let last_seq = Arc::new(AtomicU64::new(0));
    let drain_deadline = base + cfg.warmup + cfg.duration + Duration::from_secs(15);

    let mut subs = tokio::task::JoinSet::new();
    for s in 0..cfg.subscribers {
        let ch = channels[s % channels.len()].clone();
        let (hists, delivered, ready, failed, last_seq, room) = (
            Arc::clone(&hists),
            Arc::clone(&delivered),
            Arc::clone(&ready),
            Arc::clone(&failed),
            Arc::clone(&last_seq),
            room.clone(),
        );
        let group = s % cfg.connections;
        subs.spawn(async move {
            let mut c = ChatServiceClient::new(ch);
            let stream = c
                .subscribe(pb::SubscribeRequest { room, from_seq: 1 })
                .await;
            let mut stream = match stream {
                Ok(s) => s.into_inner(),
                Err(st) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return Err(st.message().to_string());
                }
            };
            ready.fetch_add(1, Ordering::Relaxed);
            loop {
                let next = tokio::time::timeout_at(drain_deadline, stream.message()).await;
                let m = match next {
                    Ok(Ok(Some(m))) => m,
                    Ok(Ok(None)) | Err(_) => return Ok(()),
                    Ok(Err(st)) => return Err(st.message().to_string()),
                };
                let now = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
                if let Some(sent) = parse_stamp(&m.text) {
                    if sent >= warmup_ns {
                        delivered.fetch_add(1, Ordering::Relaxed);
                        let us = (now.saturating_sub(sent) / 1000).clamp(1, HIST_MAX_US);
                        if let Ok(mut h) = hists[group].lock() {
                            h.saturating_record(us);
                        }
                    }
                }
                let last = last_seq.load(Ordering::Acquire);
                if last != 0 && m.seq >= last {
                    return Ok(());
                }
            }
        });
    }
    // Wait until every subscription is open (or failed), at most 120 s.
    let open_deadline = Instant::now() + Duration::from_secs(120);
    while ready.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < cfg.subscribers {
        if Instant::now() >= open_deadline {
            return Err(BenchError::Setup(format!(
                "only {} of {} subscriptions opened",
                ready.load(Ordering::Relaxed),
                cfg.subscribers
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if ready.load(Ordering::Relaxed) < cfg.subscribers {
        return Err(BenchError::Setup(format!(
            "only {} of {} subscriptions opened",
            ready.load(Ordering::Relaxed),
            cfg.subscribers
        )));
    }

    // Open-loop sender.
    let start = Instant::now();
    let send_end = start + cfg.warmup + cfg.duration;
    let sem = Arc::new(tokio::sync::Semaphore::new(FANOUT_MAX_IN_FLIGHT));
    let sent = Arc::new(AtomicU64::new(0));
    let send_errors = Arc::new(AtomicU64::new(0));
    let max_seq = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(cfg.rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut senders = tokio::task::JoinSet::new();
    loop {
        tick.tick().await;
        if Instant::now() >= send_end {
            break;
        }
        let Ok(permit) = Arc::clone(&sem).acquire_owned().await else {
            break;
        };
        let ns = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut c = ChatServiceClient::new(send_ch.clone());
        let req = pb::SendMessageRequest {
            room: room.clone(),
            author: "fanout".into(),
            text: stamp_text(ns, cfg.value_size),
            client_request_id: String::new(),
        };
        let (sent, send_errors, max_seq) = (
            Arc::clone(&sent),
            Arc::clone(&send_errors),
            Arc::clone(&max_seq),
        );
        senders.spawn(async move {
            let _permit = permit;
            match c.send_message(req).await {
                Ok(r) => {
                    if ns >= warmup_ns {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(m) = r.into_inner().message {
                        max_seq.fetch_max(m.seq, Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while senders.join_next().await.is_some() {}
    last_seq.store(max_seq.load(Ordering::Relaxed).max(1), Ordering::Release);
    while subs.join_next().await.is_some() {}
    let mut hist = new_histogram();
    for h in hists.iter() {
        if let Ok(h) = h.lock() {
            let _ = hist.add(&*h);
        }
    }
    Ok(FanoutReport {
        subscribers: cfg.subscribers,
        rate: cfg.rate,
        sent: sent.load(Ordering::Relaxed),
        delivered: delivered.load(Ordering::Relaxed),
        send_errors: send_errors.load(Ordering::Relaxed),
        hist,
    })
}

/// Nanoseconds since the Unix epoch, the clock `bench-probe --since-ns` is compared with (the
/// script stamps the kill with `date +%s%N`).
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `raft_client bench-probe`: sends one message over and over (same request id, so at most one
/// copy is ever stored), trying each address in turn with a short per-try timeout, until one
/// send succeeds. Returns the time from `since_unix_ns` (the kill) to that success.
pub async fn probe_until_ok(
    addrs: &[String],
    since_unix_ns: u64,
    try_timeout: Duration,
    give_up: Duration,
) -> Result<Duration, BenchError> {
    if addrs.is_empty() {
        return Err(BenchError::Invalid("--addr lists no address".into()));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let deadline = Instant::now() + give_up;
    let mut i = 0usize;
    loop {
        let a = &addrs[i % addrs.len()];
        i += 1;
        let last;
        if let Ok(Ok(ch)) = tokio::time::timeout(try_timeout, connect(a)).await {
            let mut req = tonic::Request::new(pb::SendMessageRequest {
                room: "failover-probe".into(),
                author: "probe".into(),
                text: "probe".into(),
                client_request_id: id.clone(),
            });
            req.set_timeout(try_timeout);
            match ChatServiceClient::new(ch).send_message(req).await {
                Ok(_) => {
                    let now = unix_ns();
                    return Ok(Duration::from_nanos(now.saturating_sub(since_unix_ns)));
                }
                Err(st) => last = format!("{a}: {}", st.message()),
            }
        } else {
            last = format!("{a}: cannot connect");
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Setup(format!("no send succeeded: {last}")));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LoadConfig {
        LoadConfig {
            concurrency: 16,
            connections: 4,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            value_size: 100,
            rooms: 1,
        }
    }

    #[test]
    fn default_shape_is_valid() {
        assert!(cfg().validate().is_ok());
    }

    #[test]
    fn rejects_bad_shapes() {
        let bad = [
            LoadConfig {
                concurrency: 0,
                ..cfg()
            },
            LoadConfig {
                connections: 0,
                ..cfg()
            },
            LoadConfig {
                connections: 17,
                ..cfg()
            },
            LoadConfig {
                duration: Duration::ZERO,
                ..cfg()
            },
            LoadConfig {
                value_size: 0,
                ..cfg()
            },
            LoadConfig {
                value_size: MAX_VALUE_SIZE + 1,
                ..cfg()
            },
            LoadConfig { rooms: 0, ..cfg() },
            LoadConfig {
                concurrency: MAX_CONCURRENCY + 1,
                connections: 1,
                ..cfg()
            },
        ];
        for b in bad {
            assert!(matches!(b.validate(), Err(BenchError::Invalid(_))), "{b:?}");
        }
    }

    #[test]
    fn parses_seconds() {
        assert_eq!(parse_secs("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("NaN").is_err());
        assert!(parse_secs("ten").is_err());
    }

    #[test]
    fn histogram_bounds_are_accepted() {
        let mut h = new_histogram();
        h.saturating_record(micros(Duration::from_secs(3600)));
        assert_eq!(h.max(), h.highest_equivalent(HIST_MAX_US));
        assert_eq!(micros(Duration::ZERO), 1);
    }

    fn report_with(values_us: &[u64], secs: u64) -> Report {
        let mut hist = new_histogram();
        for v in values_us {
            hist.record(*v).unwrap();
        }
        Report {
            system: "rustyraft".into(),
            concurrency: 64,
            ops: values_us.len() as u64,
            errors: 2,
            elapsed: Duration::from_secs(secs),
            hist,
        }
    }

    #[test]
    fn report_formats_rate_and_quantiles() {
        // 1000 ops over 2 s: 500 ops/s; latencies 1..=1000 ms.
        let vals: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let r = report_with(&vals, 2);
        assert_eq!(r.ops_per_sec(), 500.0);
        assert!((r.p50_ms() - 500.0).abs() < 1.0, "{}", r.p50_ms());
        assert!((r.p99_ms() - 990.0).abs() < 1.0, "{}", r.p99_ms());
        assert!((r.max_ms() - 1000.0).abs() < 1.0, "{}", r.max_ms());
        let t = r.text();
        assert!(t.starts_with("rustyraft c=64: 500 ops/s  p50 500."), "{t}");
        assert!(t.contains("(1000 ok, 2 errors in 2.0 s)"), "{t}");
        let j = r.json();
        assert_eq!(j["ops_per_sec"], 500.0);
        assert_eq!(j["errors"], 2);
        assert_eq!(j["concurrency"], 64);
    }

    #[test]
    fn empty_report_is_zero_not_a_panic() {
        let r = report_with(&[], 0);
        assert_eq!(r.ops_per_sec(), 0.0);
        assert_eq!(r.p99_ms(), 0.0);
        assert_eq!(r.max_ms(), 0.0);
    }

    #[test]
    fn stamp_round_trips_and_pads() {
        let t = stamp_text(123_456_789, 100);
        assert_eq!(t.len(), 100);
        assert_eq!(parse_stamp(&t), Some(123_456_789));
        assert_eq!(parse_stamp("hello"), None);
        assert_eq!(parse_stamp("x0000000000000000001"), None);
    }

    #[test]
    fn fanout_rejects_bad_shapes() {
        let ok = FanoutConfig {
            subscribers: 100,
            connections: 10,
            rate: 1000,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            value_size: 100,
        };
        assert!(ok.validate().is_ok());
        for b in [
            FanoutConfig {
                subscribers: 0,
                ..ok.clone()
            },
            FanoutConfig {
                connections: 101,
                ..ok.clone()
            },
            FanoutConfig {
                rate: 0,
                ..ok.clone()
            },
            FanoutConfig {
                value_size: 19,
                ..ok.clone()
            },
            FanoutConfig {
                duration: Duration::ZERO,
                ..ok.clone()
            },
        ] {
            assert!(matches!(b.validate(), Err(BenchError::Invalid(_))), "{b:?}");
        }
    }

    // Paused clock: every op takes exactly 1 ms of virtual time, so the counts are exact.
    #[tokio::test(start_paused = true)]
    async fn closed_loop_counts_ok_and_errors() {
        let c = LoadConfig {
            concurrency: 2,
            connections: 1,
            duration: Duration::from_millis(50),
            warmup: Duration::ZERO,
            value_size: 1,
            rooms: 1,
        };
        // Worker 0 always succeeds, worker 1 always fails.
        let r = closed_loop("t", &c, |w, _| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if w == 0 {
                Ok(())
            } else {
                Err("no".into())
            }
        })
        .await;
        // Worker 0: ops start at 0, 1, ..., 49 ms. Worker 1: 1 ms op + 5 ms pause, so starts
        // at 0, 6, ..., 48 ms.
        assert_eq!(r.ops, 50);
        assert_eq!(r.errors, 9);
        assert_eq!(r.hist.len(), r.ops);
        assert_eq!(r.hist.max(), r.hist.highest_equivalent(1000));
    }
}
