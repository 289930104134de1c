//! The `Subscribe` fan-out run (`raft_client bench-fanout`) and the failover probe
//! (`raft_client bench-probe`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use hdrhistogram::Histogram;

use super::{connect, find_leader, new_histogram, BenchError, HIST_MAX_US, MAX_VALUE_SIZE};
use crate::pb;
use crate::pb::chat_service_client::ChatServiceClient;

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
